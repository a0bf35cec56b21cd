//! After a write whose answer was lost (timeout, dropped connection, 5xx): read what Azure has
//! now (the VM's power and provisioning state, the extension and the `forceUpdateTag` of our
//! PUT, the rule, the route a delete removes) to learn whether it acted, instead of sending the write a second time.

use super::{Plan, Step};
use crate::azure::{Arm, ArmError, PowerAction};

/// What a read of the VM says about a write whose answer was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    /// Azure acted and has finished.
    Done(String),
    /// Azure acted and is still at work.
    InProgress(String),
    /// Azure acted and the change failed.
    Failed(String),
    /// Azure did not act: nothing changed.
    NotDone(String),
    /// The VM is in its usual state, which by itself does not tell (a restart ends where it
    /// began). After an `InProgress` it means the work is over.
    Settled(String),
    /// Nothing read tells.
    CannotTell(String),
}

impl Learned {
    /// One line for a person, e.g. "it did: the VM is restarting (PowerState/starting)".
    pub fn text(&self) -> String {
        match self {
            Learned::Done(e) | Learned::InProgress(e) => format!("it did: {e}"),
            Learned::Failed(e) => format!("it did, and it failed: {e}"),
            Learned::NotDone(e) => format!("it did not: {e}"),
            Learned::Settled(e) | Learned::CannotTell(e) => format!("cannot tell: {e}"),
        }
    }
}

/// Read what Azure did with the write of `plan`. `tag` is the `forceUpdateTag` a VMAccess PUT
/// carried.
pub async fn what_azure_did(arm: &Arm, plan: &Plan, tag: &str) -> Result<Learned, ArmError> {
    match &plan.step {
        Step::Power(action) => {
            let facts = arm.vm_facts(&plan.vm).await?;
            Ok(power(
                *action,
                facts.power_state.as_deref(),
                facts.provisioning_state.as_deref(),
            ))
        }
        Step::VmAccess { extension, .. } => {
            let state = arm.extension_state(&plan.vm, extension).await?;
            Ok(match state {
                None => Learned::NotDone(format!("{} has no extension {extension}", plan.vm.name)),
                Some(s) if s.force_update_tag.as_deref() != Some(tag) => Learned::NotDone(format!(
                    "extension {extension} still shows an earlier run, not this one"
                )),
                Some(s) => provisioning(
                    s.provisioning_state.as_deref(),
                    &format!("extension {extension}"),
                ),
            })
        }
        // Run Command leaves no trace ARM can read cheaply (its result lives with the operation
        // whose answer was lost): the re-check reads the guest instead.
        Step::GuestScript { fix } => Ok(Learned::CannotTell(format!(
            "Run Command leaves no trace Azure Resource Manager can show, so whether the `{fix}` script ran on {} is read from inside the guest next",
            plan.vm.name
        ))),
        Step::Route { table_id, route } => {
            let table = table_id.rsplit('/').next().unwrap_or(table_id);
            Ok(match arm.route_state(table_id, route).await? {
                None => Learned::Done(format!("route {route} is gone from route table {table}")),
                Some(state) if state.eq_ignore_ascii_case("deleting") => Learned::InProgress(
                    format!("route {route} of route table {table} is being deleted"),
                ),
                Some(_) => Learned::NotDone(format!("route table {table} still has route {route}")),
            })
        }
        Step::Jit {
            port, source, ..
        } => Ok(match arm.jit_policy(&plan.vm).await? {
            Some(policy)
                if policy
                    .requests
                    .iter()
                    .any(|r| r.port == *port && r.source == *source) =>
            {
                Learned::Done(format!(
                    "the just-in-time policy lists a request for TCP {port} from {source}"
                ))
            }
            _ => Learned::NotDone(format!(
                "the just-in-time policy lists no request for TCP {port} from {source}"
            )),
        }),
        Step::Rule { nsg_id, rule } => {
            let nsg = nsg_id.rsplit('/').next().unwrap_or(nsg_id);
            let state = arm.rule_state(nsg_id, &rule.name).await?;
            Ok(match state {
                None => Learned::NotDone(format!("NSG {nsg} has no rule {}", rule.name)),
                Some(r)
                    if r.priority == rule.priority
                        && r.allows_inbound
                        && r.port.as_deref() == Some(rule.port.to_string().as_str())
                        && r.source.as_deref() == Some(rule.source.as_str()) =>
                {
                    provisioning(
                        r.provisioning_state.as_deref(),
                        &format!("rule {} (priority {}) in NSG {nsg}", rule.name, r.priority),
                    )
                }
                Some(r) => Learned::CannotTell(format!(
                    "NSG {nsg} has a rule {} with other settings (priority {})",
                    rule.name, r.priority
                )),
            })
        }
    }
}

fn provisioning(state: Option<&str>, what: &str) -> Learned {
    match state.map(str::to_ascii_lowercase).as_deref() {
        Some("succeeded") => Learned::Done(format!("{what} is in place (provisioning succeeded)")),
        Some("failed") => Learned::Failed(format!("{what}: provisioning failed")),
        Some(other) => Learned::InProgress(format!("{what} is {other}")),
        None => Learned::CannotTell(format!("{what} reports no provisioning state")),
    }
}

/// A power action judged from the VM's instance view.
fn power(action: PowerAction, power: Option<&str>, provisioning: Option<&str>) -> Learned {
    let shown = format!(
        "PowerState/{}, ProvisioningState/{}",
        power.unwrap_or("unknown"),
        provisioning.unwrap_or("unknown")
    );
    let provisioning = provisioning.unwrap_or("").to_ascii_lowercase();
    if provisioning.starts_with("failed") {
        return Learned::Failed(format!("the VM's provisioning failed ({shown})"));
    }
    let busy = matches!(provisioning.as_str(), "updating" | "creating")
        || matches!(power, Some("starting" | "stopping" | "deallocating"));
    let settled = provisioning == "succeeded";
    let doing = match action {
        PowerAction::Start => "starting",
        PowerAction::Restart => "restarting",
        PowerAction::Redeploy => "being redeployed",
    };
    match (action, power) {
        _ if busy => Learned::InProgress(format!("the VM is {doing} ({shown})")),
        (PowerAction::Start, Some("running")) if settled => {
            Learned::Done(format!("the VM is running ({shown})"))
        }
        (PowerAction::Start, Some(state @ ("stopped" | "deallocated"))) if settled => {
            Learned::NotDone(format!("the VM is still {state} ({shown})"))
        }
        (_, Some("running")) if settled => Learned::Settled(format!(
            "the VM is running and settled, which looks the same before and after ({shown})"
        )),
        _ => Learned::CannotTell(shown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_states_tell_what_happened() {
        use PowerAction::*;
        let cases = [
            (Start, Some("running"), Some("succeeded"), "Done"),
            (Start, Some("deallocated"), Some("succeeded"), "NotDone"),
            (Start, Some("starting"), Some("updating"), "InProgress"),
            (Restart, Some("starting"), Some("updating"), "InProgress"),
            (Restart, Some("running"), Some("succeeded"), "Settled"),
            (
                Redeploy,
                Some("running"),
                Some("failed/AllocationFailed"),
                "Failed",
            ),
            (Restart, None, None, "CannotTell"),
        ];
        for (action, p, q, want) in cases {
            let got = power(action, p, q);
            assert!(
                format!("{got:?}").starts_with(want),
                "{action:?} {p:?} {q:?}: {got:?}"
            );
        }
    }
}
