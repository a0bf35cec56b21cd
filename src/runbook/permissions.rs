//! The Azure actions the runbook needs, and which of them rdp-doctor's principal holds in each
//! resource group it can see, asked with harmless reads (`rdp-doctor permissions`).

use crate::azure::{Arm, ArmError};
use futures::StreamExt;

/// What an action is for: the checks every command runs, or the fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Checks,
    Fixes,
}

/// One action the runbook needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needed {
    pub action: &'static str,
    pub used_for: Use,
    /// Why, in the runbook's words.
    pub why: &'static str,
    /// The least built-in role that grants it (Microsoft Learn, "Azure built-in roles").
    pub role: &'static str,
}

const fn need(
    action: &'static str,
    used_for: Use,
    why: &'static str,
    role: &'static str,
) -> Needed {
    Needed {
        action,
        used_for,
        why,
        role,
    }
}

/// Every action rdp-doctor asks ARM for. The README's custom roles list the same.
pub const NEEDED: &[Needed] = &[
    need(
        "Microsoft.Compute/virtualMachines/read",
        Use::Checks,
        "read the VM and its power state",
        "Reader",
    ),
    need(
        "Microsoft.Network/networkInterfaces/read",
        Use::Checks,
        "read the NIC",
        "Reader",
    ),
    need(
        "Microsoft.Network/publicIPAddresses/read",
        Use::Checks,
        "read the public IP",
        "Reader",
    ),
    need(
        "Microsoft.Network/networkSecurityGroups/read",
        Use::Checks,
        "read the NSGs",
        "Reader",
    ),
    need(
        "Microsoft.ResourceHealth/availabilityStatuses/read",
        Use::Checks,
        "read Resource Health",
        "Reader",
    ),
    need(
        "Microsoft.Resources/subscriptions/resourceGroups/read",
        Use::Checks,
        "find a bare VM name without the subscription's VM list",
        "Reader",
    ),
    need(
        "Microsoft.Network/networkInterfaces/effectiveNetworkSecurityGroups/action",
        Use::Checks,
        "evaluate the effective rules for TCP 3389",
        "Virtual Machine Contributor",
    ),
    need(
        "Microsoft.Compute/virtualMachines/retrieveBootDiagnosticsData/action",
        Use::Checks,
        "read the screenshot and serial log",
        "Virtual Machine Contributor",
    ),
    need(
        "Microsoft.Network/locations/operationResults/read",
        Use::Checks,
        "follow the effective-rules operation",
        "Reader",
    ),
    need(
        "Microsoft.Network/networkInterfaces/effectiveRouteTable/action",
        Use::Checks,
        "read the routes the reply takes (network-path)",
        "Virtual Machine Contributor",
    ),
    need(
        "Microsoft.Network/virtualNetworks/subnets/read",
        Use::Checks,
        "find the subnet's route table",
        "Reader",
    ),
    need(
        "Microsoft.Network/routeTables/read",
        Use::Checks,
        "name the route that sends the reply away",
        "Reader",
    ),
    need(
        "Microsoft.Network/networkWatchers/read",
        Use::Checks,
        "find the region's Network Watcher (check --from)",
        "Reader",
    ),
    need(
        "Microsoft.Network/networkWatchers/ipFlowVerify/action",
        Use::Checks,
        "Azure's verdict on RDP from an address (check --from)",
        "Network Contributor",
    ),
    need(
        "Microsoft.Network/networkWatchers/nextHop/action",
        Use::Checks,
        "where the reply to an address goes (check --from)",
        "Network Contributor",
    ),
    need(
        "Microsoft.Network/virtualNetworks/listNetworkManagerEffectiveSecurityAdminRules/action",
        Use::Checks,
        "read Virtual Network Manager's security admin rules, weighed before the NSGs",
        "Network Contributor",
    ),
    need(
        "Microsoft.Security/locations/jitNetworkAccessPolicies/read",
        Use::Checks,
        "read the just-in-time access policy of a VM whose NSG has Defender's JIT rules",
        "Reader",
    ),
    need(
        "Microsoft.Network/bastionHosts/read",
        Use::Checks,
        "find the Azure Bastion host that reaches a VM without a public IP",
        "Reader",
    ),
    need(
        "Microsoft.Network/virtualNetworks/read",
        Use::Checks,
        "read the peerings of a VM's virtual network for a Bastion host in a peered one",
        "Reader",
    ),
    need(
        "Microsoft.Insights/eventtypes/values/read",
        Use::Checks,
        "read the Activity Log: who changed the VM, its NSGs and routes (Recent changes)",
        "Reader",
    ),
    need(
        "Microsoft.Compute/virtualMachines/start/action",
        Use::Fixes,
        "start",
        "Virtual Machine Contributor",
    ),
    need(
        "Microsoft.Compute/virtualMachines/restart/action",
        Use::Fixes,
        "restart",
        "Virtual Machine Contributor",
    ),
    need(
        "Microsoft.Compute/virtualMachines/redeploy/action",
        Use::Fixes,
        "redeploy",
        "Virtual Machine Contributor",
    ),
    need(
        "Microsoft.Compute/virtualMachines/extensions/read",
        Use::Fixes,
        "find the VMAccess extension",
        "Reader",
    ),
    need(
        "Microsoft.Compute/virtualMachines/extensions/write",
        Use::Fixes,
        "reset-config and reset-password (VMAccess)",
        "Virtual Machine Contributor",
    ),
    need(
        "Microsoft.Compute/virtualMachines/runCommand/action",
        Use::Fixes,
        "look inside the VM (check --guest) and the guest fixes (Run Command)",
        "Virtual Machine Contributor",
    ),
    need(
        "Microsoft.Network/networkSecurityGroups/securityRules/read",
        Use::Fixes,
        "read the rule open-rdp-port writes",
        "Reader",
    ),
    need(
        "Microsoft.Network/networkSecurityGroups/securityRules/write",
        Use::Fixes,
        "open-rdp-port",
        "Network Contributor",
    ),
    need(
        "Microsoft.Network/routeTables/routes/read",
        Use::Fixes,
        "read the route remove-route deletes",
        "Reader",
    ),
    need(
        "Microsoft.Network/routeTables/routes/delete",
        Use::Fixes,
        "remove-route",
        "Network Contributor",
    ),
    need(
        "Microsoft.Security/locations/jitNetworkAccessPolicies/initiate/action",
        Use::Fixes,
        "request-jit",
        "Security Admin",
    ),
    need(
        "Microsoft.Compute/locations/operations/read",
        Use::Fixes,
        "follow a VM fix to its end",
        "Reader",
    ),
    need(
        "Microsoft.Network/locations/operations/read",
        Use::Fixes,
        "follow open-rdp-port to its end",
        "Reader",
    ),
];

/// What the principal may do in one resource group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPermissions {
    pub resource_group: String,
    /// The needed actions it lacks there, or why they could not be read.
    pub missing: Result<Vec<Needed>, ArmError>,
}

/// What the principal may do in one subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionPermissions {
    pub subscription_id: String,
    /// `None` if it may list the subscription's VMs; else the action and scope Azure refused
    /// (bare names are then looked for in the groups below).
    pub list_refused: Option<(String, String)>,
    /// The resource groups ARM lists for the principal.
    pub groups: Result<Vec<GroupPermissions>, ArmError>,
}

impl SubscriptionPermissions {
    /// Nothing missing anywhere, and nothing that could not be read.
    pub fn complete(&self) -> bool {
        self.list_refused.is_none()
            && self.groups.as_ref().is_ok_and(|g| {
                g.iter()
                    .all(|g| g.missing.as_ref().is_ok_and(Vec::is_empty))
            })
    }
}

/// Ask ARM, for each subscription, whether the principal may list its VMs (one page) and its
/// permissions in each resource group it can see (a few at a time). Nothing is written.
pub async fn probe(arm: &Arm, subscriptions: &[String]) -> Vec<SubscriptionPermissions> {
    let mut out = Vec::new();
    for sub in subscriptions {
        let (list, groups) = tokio::join!(arm.may_list_vms(sub), arm.list_resource_groups(sub));
        let list_refused = match list {
            Ok(refused) => refused,
            Err(e) => Some((
                "Microsoft.Compute/virtualMachines/read".to_string(),
                e.to_string(),
            )),
        };
        let groups = match groups {
            Ok(groups) => Ok(futures::stream::iter(groups)
                .map(|rg| async move {
                    let missing = arm.permissions_in_group(sub, &rg).await.map(|grants| {
                        NEEDED
                            .iter()
                            .filter(|n| !grants.allows(n.action))
                            .copied()
                            .collect()
                    });
                    GroupPermissions {
                        resource_group: rg,
                        missing,
                    }
                })
                .buffered(4)
                .collect()
                .await),
            Err(e) => Err(e),
        };
        out.push(SubscriptionPermissions {
            subscription_id: sub.clone(),
            list_refused,
            groups,
        });
    }
    out
}

/// The report as printed: one block per subscription, one line per resource group.
pub fn report_text(subscriptions: &[SubscriptionPermissions]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's custom roles grant exactly what the runbook needs.
    #[test]
    fn the_readmes_custom_roles_match_what_the_runbook_needs() {
        let readme = include_str!("../../README.md");
        let role = |name: &str| -> Vec<String> {
            let block = readme
                .split("```json")
                .skip(1)
                .filter_map(|b| b.split("```").next())
                .find(|b| b.contains(&format!("\"Name\": \"{name}\"")))
                .unwrap_or_else(|| panic!("no {name} role in the README"));
            let json: serde_json::Value = serde_json::from_str(block).expect("valid JSON");
            let mut actions: Vec<String> = json["Actions"]
                .as_array()
                .expect("Actions")
                .iter()
                .map(|a| a.as_str().expect("string").to_string())
                .collect();
            actions.sort();
            actions
        };
        let needed = |uses: &[Use]| -> Vec<String> {
            let mut actions: Vec<String> = NEEDED
                .iter()
                .filter(|n| uses.contains(&n.used_for))
                .map(|n| n.action.to_string())
                .collect();
            actions.sort();
            actions
        };
        assert_eq!(role("rdp-doctor checks"), needed(&[Use::Checks]));
        assert_eq!(role("rdp-doctor fixes"), needed(&[Use::Checks, Use::Fixes]));
    }
}
