//! The runbook's fixes: what each would do to *this* VM (computed from live facts just before
//! it is offered), whether its preconditions hold, and running it to the end.
//!
//! One file per fix. A fix never runs from here without the caller having a confirmation; this
//! module only plans and executes.

mod aftermath;
mod guest;
mod open_rdp_port;
mod power;
mod remove_route;
mod request_jit;
mod reset_password;
mod reset_rdp_config;

pub use aftermath::{what_azure_did, Learned};
pub use guest::{
    check as guest_check, judge as judge_guest, read_output as read_script_output, script_lines,
    ScriptReport,
};
pub use open_rdp_port::{parse_source, RdpSource, SourceError};
pub use reset_password::{check_password, PasswordProblem};

use crate::azure::{Arm, ArmError, OperationHandle, VmRef};
use crate::diagnose::{nsg, ActionId, NicFacts, VmFacts};
use crate::runbook::operate::Confirmed;
use secrecy::SecretString;

/// A fix with its parameters, as a person asked for it.
pub enum FixRequest {
    ResetRdpConfig,
    ResetPassword {
        username: String,
        password: SecretString,
    },
    Start,
    Restart,
    Redeploy,
    /// `port`: the listener's port (3389, or the custom port a guest check found).
    OpenRdpPort {
        source: RdpSource,
        port: u16,
    },
    /// One of the guest fixes ([`ActionId::GUEST`]): a script through Run Command.
    Guest(ActionId),
    RemoveRoute,
    /// Ask just-in-time access to open 3389 for `source` for `hours` (the default when `None`).
    RequestJit {
        source: std::net::Ipv4Addr,
        hours: Option<u32>,
    },
}

impl FixRequest {
    pub fn action(&self) -> ActionId {
        match self {
            FixRequest::ResetRdpConfig => ActionId::ResetRdpConfig,
            FixRequest::ResetPassword { .. } => ActionId::ResetPassword,
            FixRequest::Start => ActionId::Start,
            FixRequest::Restart => ActionId::Restart,
            FixRequest::Redeploy => ActionId::Redeploy,
            FixRequest::OpenRdpPort { .. } => ActionId::OpenRdpPort,
            FixRequest::Guest(fix) => *fix,
            FixRequest::RemoveRoute => ActionId::RemoveRoute,
            FixRequest::RequestJit { .. } => ActionId::RequestJit,
        }
    }

    /// Parameters safe to store and show (never the password).
    pub fn public_params(&self) -> serde_json::Value {
        match self {
            FixRequest::ResetPassword { username, .. } => {
                serde_json::json!({ "username": username })
            }
            FixRequest::OpenRdpPort { source, port } => {
                serde_json::json!({ "source": source.prefix(), "port": port })
            }
            FixRequest::RequestJit { source, hours } => {
                serde_json::json!({ "source": source.to_string(), "hours": hours })
            }
            _ => serde_json::json!({}),
        }
    }
}

/// Live facts a plan is computed from.
pub struct Facts {
    pub vm: VmRef,
    pub state: VmFacts,
    pub nic: Option<NicFacts>,
}

/// What a fix will do to this VM, ready to be confirmed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub action: ActionId,
    pub vm: VmRef,
    /// One line of what happens, e.g. "Restart web-01".
    pub headline: String,
    /// Consequences computed from the VM's real configuration.
    pub consequences: Vec<String>,
    /// Loud warnings (e.g. RDP open to the whole Internet).
    pub warnings: Vec<String>,
    pub(crate) step: Step,
}

impl Plan {
    /// What the prompt showed, in a form to compare with the plan made again at confirm time:
    /// the headline, every consequence and warning, and what would be sent (the NSG, the rule's
    /// name, priority and source; the power action; the extension).
    pub fn fingerprint(&self) -> String {
        let mut lines = vec![self.headline.clone()];
        lines.extend(self.consequences.iter().cloned());
        lines.extend(self.warnings.iter().map(|w| format!("warning: {w}")));
        lines.push(format!("step: {:?}", self.step));
        lines.join("\n")
    }

    /// The id of a resource other than the VM that the fix changes (the NSG a rule goes into).
    pub fn other_resource(&self) -> Option<&str> {
        match &self.step {
            Step::Rule { nsg_id, .. } => Some(nsg_id),
            Step::Route { table_id, .. } => Some(table_id),
            Step::Jit { policy_id, .. } => Some(policy_id),
            Step::Power(_) | Step::VmAccess { .. } | Step::GuestScript { .. } => None,
        }
    }

    /// Whether the fix runs a script inside the guest (through Run Command).
    pub fn is_guest(&self) -> bool {
        matches!(self.step, Step::GuestScript { .. })
    }
}

/// What `execute` will send.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Power(crate::azure::PowerAction),
    VmAccess {
        location: String,
        extension: String,
    },
    Rule {
        nsg_id: String,
        rule: crate::azure::NewRdpRule,
    },
    /// The fix's script (`guest::script_lines`) through Run Command.
    GuestScript {
        fix: ActionId,
    },
    /// Delete one route of a route table.
    Route {
        table_id: String,
        route: String,
    },
    /// Initiate a just-in-time request (the end time is taken when it is sent).
    Jit {
        policy_id: String,
        port: u16,
        source: String,
        hours: u32,
    },
}

/// Why a fix is not offered, and what to do instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}{}", instead.map(|a| format!(" Try `{}` instead.", a.as_str())).unwrap_or_default())]
pub struct Refusal {
    pub reason: String,
    pub instead: Option<ActionId>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Arm(#[from] ArmError),
}

/// Read what the plan needs (one VM read, the NIC; the NSGs and extensions only when needed).
pub async fn facts(arm: &Arm, vm: &VmRef) -> Result<Facts, ArmError> {
    let state = arm.vm_facts(vm).await?;
    let nic = match state.nic_ids.first() {
        Some(id) => Some(arm.nic_facts(id).await?),
        None => None,
    };
    Ok(Facts {
        vm: vm.clone(),
        state,
        nic,
    })
}

/// Plan a fix against live facts: preconditions first, then the consequences.
pub async fn plan(arm: &Arm, facts: &Facts, request: &FixRequest) -> Result<Plan, PlanError> {
    match request {
        FixRequest::Start | FixRequest::Restart | FixRequest::Redeploy => {
            Ok(power::plan(facts, request.action())?)
        }
        FixRequest::ResetRdpConfig => {
            let extension = vmaccess_name(arm, facts).await?;
            Ok(reset_rdp_config::plan(facts, extension)?)
        }
        FixRequest::ResetPassword { username, password } => {
            reset_password::validate(username, password)?;
            let extension = vmaccess_name(arm, facts).await?;
            Ok(reset_password::plan(facts, extension, username)?)
        }
        FixRequest::OpenRdpPort { source, port } => {
            open_rdp_port::plan(arm, facts, source, *port).await
        }
        FixRequest::Guest(fix) => Ok(guest::plan(facts, *fix)?),
        FixRequest::RemoveRoute => remove_route::plan(arm, facts).await,
        FixRequest::RequestJit { source, hours } => {
            request_jit::plan(arm, facts, *source, *hours).await
        }
    }
}

/// The VM's existing VMAccess extension name (Azure allows one per VM), else the portal's.
async fn vmaccess_name(arm: &Arm, facts: &Facts) -> Result<String, PlanError> {
    // Preconditions before any further call: VMAccess needs a running VM and a Ready agent.
    reset_rdp_config::preconditions(facts)?;
    let existing = arm.extensions(&facts.vm).await?;
    Ok(existing
        .into_iter()
        .find(|e| e.is_vmaccess())
        .map(|e| e.name)
        .unwrap_or_else(|| "enablevmaccess".to_string()))
}

/// Send the fix's write. The handle can be stored and followed with [`Arm::wait`]. `tag` is
/// the VMAccess `forceUpdateTag` (see [`crate::azure::new_update_tag`]), which
/// [`what_azure_did`] looks for if the answer is lost.
pub async fn execute(
    arm: &Arm,
    confirmed: &Confirmed,
    plan: &Plan,
    request: &FixRequest,
    tag: &str,
) -> Result<OperationHandle, ArmError> {
    match (&plan.step, request) {
        (Step::Power(action), _) => arm.power(confirmed, &plan.vm, *action).await,
        (
            Step::VmAccess {
                location,
                extension,
            },
            FixRequest::ResetPassword { username, password },
        ) => {
            let access = crate::azure::VmAccess::ResetPassword {
                username: username.clone(),
                password: password.clone(),
            };
            arm.vmaccess(confirmed, &plan.vm, location, extension, tag, &access)
                .await
        }
        (
            Step::VmAccess {
                location,
                extension,
            },
            _,
        ) => {
            let access = crate::azure::VmAccess::ResetConfig;
            arm.vmaccess(confirmed, &plan.vm, location, extension, tag, &access)
                .await
        }
        (Step::Rule { nsg_id, rule }, _) => arm.put_rdp_rule(confirmed, nsg_id, rule).await,
        (Step::GuestScript { fix }, _) => {
            arm.run_guest_fix(confirmed, &plan.vm, &script_lines(*fix))
                .await
        }
        (Step::Route { table_id, route }, _) => arm.delete_route(confirmed, table_id, route).await,
        (
            Step::Jit {
                policy_id,
                port,
                source,
                hours,
            },
            _,
        ) => {
            let end = time::OffsetDateTime::now_utc() + time::Duration::hours(i64::from(*hours));
            let request = crate::azure::JitInitiate {
                vm: plan.vm.clone(),
                policy_id: policy_id.clone(),
                port: *port,
                source: source.clone(),
                end_utc: end
                    .replace_nanosecond(0)
                    .unwrap_or(end)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                justification: "Remote Desktop troubleshooting (rdp-doctor request-jit)".to_owned(),
            };
            arm.initiate_jit(confirmed, &request).await
        }
    }
}

/// The runbook's own probe of the RDP port (`port`: 3389, or the listener's custom port) for a
/// VM, used by `open-rdp-port`.
pub(crate) fn rdp_probe(facts: &Facts, source: nsg::TrafficSource, port: u16) -> nsg::Probe {
    nsg::Probe {
        source,
        destination: facts
            .nic
            .as_ref()
            .and_then(|n| n.private_ip.as_deref())
            .and_then(|ip| ip.parse().ok()),
        port,
    }
}
