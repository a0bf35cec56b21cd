//! `rdp-doctor permissions`: which of the Azure actions the runbook needs rdp-doctor's identity
//! holds, per subscription and resource group, and the built-in role that grants what is
//! missing.

use super::{exit, fail, fix::caller};
use crate::runbook::door::Door;
use crate::runbook::permissions::{SubscriptionPermissions, Use};

pub async fn run(door: &Door) -> u8 {
    match door.permissions(&caller()).await {
        Ok(subscriptions) => {
            print!("{}", text(&subscriptions));
            if subscriptions.iter().all(SubscriptionPermissions::complete) {
                exit::OK
            } else {
                exit::PROBLEMS
            }
        }
        Err(e) => fail(&e),
    }
}

/// The report as printed: one block per subscription, one line per resource group.
pub fn text(subscriptions: &[SubscriptionPermissions]) -> String {
    let mut out = String::new();
    for sub in subscriptions {
        out.push_str(&format!("Subscription {}\n", sub.subscription_id));
        match &sub.list_refused {
            None => out.push_str("  list its VMs: yes\n"),
            Some((action, scope)) => out.push_str(&format!(
                "  list its VMs: no ({action} refused over {scope}); bare VM names are looked for in the resource groups below, RESOURCE-GROUP/NAME always works (grant Reader on the subscription to list it)\n"
            )),
        }
        let groups = match &sub.groups {
            Ok(groups) => groups,
            Err(e) => {
                out.push_str(&format!("  resource groups: could not list them: {e}\n"));
                continue;
            }
        };
        if groups.is_empty() {
            out.push_str("  resource groups: none it may read (assign it a role on the VMs' resource groups)\n");
        }
        for group in groups {
            match &group.missing {
                Err(e) => out.push_str(&format!(
                    "  {}: could not read its permissions: {e}\n",
                    group.resource_group
                )),
                Ok(missing) if missing.is_empty() => out.push_str(&format!(
                    "  {}: every action the runbook needs\n",
                    group.resource_group
                )),
                Ok(missing) => {
                    out.push_str(&format!("  {}: missing\n", group.resource_group));
                    for used_for in [Use::Checks, Use::Fixes] {
                        for need in missing.iter().filter(|n| n.used_for == used_for) {
                            out.push_str(&format!(
                                "    {:<6} {} ({}): granted by {}\n",
                                match used_for {
                                    Use::Checks => "check",
                                    Use::Fixes => "fix",
                                },
                                need.action,
                                need.why,
                                need.role
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}
