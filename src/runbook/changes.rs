//! "Recent changes": which Activity Log writes concern a VM (the VM and what its Remote Desktop
//! depends on: its NICs, their NSGs and public IPs, the subnet, the subnet's NSG and route
//! table), read per resource group and filtered here, and which of them explains a failing
//! check.
//!
//! Azure's `$filter` takes one resource group or one resource per request; the resources of a
//! VM usually sit in one or two groups, so a request per group, with the resources picked out
//! here, costs fewer requests than one per resource.

use crate::azure::{Arm, ArmError, ResourceId, VmRef};
use crate::diagnose::{CheckId, Finding, Status};
use crate::domain::{changes_of, ActivityEvent, Change, Changes};
use std::time::Duration;
use time::OffsetDateTime;

/// The action reading the Activity Log needs.
pub const READ_ACTIVITY: &str = "Microsoft.Insights/eventtypes/values/read";

/// How far back a report looks unless the configuration says otherwise (`[changes]
/// window_hours`).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How many of the newest changes a report shows (the one explaining a failure always).
pub const SHOWN_IN_REPORT: usize = 3;

/// The resources whose changes matter to a VM's Remote Desktop.
#[derive(Debug, Clone, Default)]
pub struct Related {
    ids: Vec<String>,
}

impl Related {
    pub fn new(vm: &VmRef) -> Related {
        Related {
            ids: vec![vm.id.clone()],
        }
    }

    pub fn add(&mut self, id: Option<&str>) {
        let Some(id) = id
            .map(|i| i.trim_end_matches('/'))
            .filter(|i| !i.is_empty())
        else {
            return;
        };
        if !self.ids.iter().any(|k| k.eq_ignore_ascii_case(id)) {
            self.ids.push(id.to_owned());
        }
    }

    /// A NIC and what hangs on it: its NSG, its subnet and its public IP.
    pub fn add_nic(&mut self, nic: &crate::diagnose::NicFacts) {
        self.add(Some(&nic.nic_id));
        self.add(nic.nsg_id.as_deref());
        self.add(nic.subnet_id.as_deref());
        self.add(nic.public_ip.as_ref().map(|p| p.id.as_str()));
    }

    /// A change to one of them, or to something inside one (a rule of an NSG, an extension of
    /// the VM, a route of a table).
    pub fn concerns(&self, resource_id: &str) -> bool {
        let resource = resource_id.trim_end_matches('/').to_ascii_lowercase();
        self.ids.iter().any(|id| {
            let id = id.to_ascii_lowercase();
            resource == id || resource.starts_with(&format!("{id}/"))
        })
    }

    /// The resource groups (subscription, group) they are in, lowercase, first seen first.
    pub fn groups(&self) -> Vec<(String, String)> {
        let mut groups: Vec<(String, String)> = Vec::new();
        for id in &self.ids {
            if let Ok(id) = ResourceId::parse(id) {
                let group = (
                    id.subscription_id.to_ascii_lowercase(),
                    id.resource_group.to_ascii_lowercase(),
                );
                if !groups.contains(&group) {
                    groups.push(group);
                }
            }
        }
        groups
    }
}

/// The window's bounds, ending now.
pub fn bounds(window: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    let back = time::Duration::try_from(window).unwrap_or(time::Duration::days(90));
    (now - back, now)
}

/// The Activity Log of each of `groups`, read side by side.
pub async fn read_groups(
    arm: &Arm,
    groups: &[(String, String)],
    (from, to): (OffsetDateTime, OffsetDateTime),
) -> Result<Vec<ActivityEvent>, ArmError> {
    let reads = groups
        .iter()
        .map(|(sub, rg)| arm.activity_in_group(sub, rg, from, to));
    let mut events = Vec::new();
    for read in futures::future::join_all(reads).await {
        events.extend(read?);
    }
    Ok(events)
}

/// Resource groups (subscription, group), lowercase.
pub type Groups = Vec<(String, String)>;

/// What reading some groups' Activity Log gave.
pub type Read = Result<Vec<ActivityEvent>, ArmError>;

/// A check's "Recent changes": the groups already `early` read (with what they gave), the
/// groups of `related` not among them read now, all filtered to `related` and marked against
/// `findings`.
pub async fn finish(
    arm: &Arm,
    related: &Related,
    early: impl IntoIterator<Item = (Groups, Read)>,
    findings: &[Finding],
    window: Duration,
    bounds: (OffsetDateTime, OffsetDateTime),
) -> Changes {
    let mut asked: Groups = Vec::new();
    let mut read: Read = Ok(Vec::new());
    let mut take = |more: Read| match (&mut read, more) {
        (Ok(all), Ok(events)) => all.extend(events),
        (Ok(_), Err(e)) => read = Err(e),
        (Err(_), _) => {}
    };
    for (groups, events) in early {
        asked.extend(groups);
        take(events);
    }
    let rest: Groups = related
        .groups()
        .into_iter()
        .filter(|g| !asked.contains(g))
        .collect();
    if !rest.is_empty() {
        take(read_groups(arm, &rest, bounds).await);
    }
    assemble(read, related, findings, window)
}

/// The section from what was read: the changes to `related`, newest first, the one that
/// explains a failing finding marked; or, when Azure refused, why there is none.
pub fn assemble(
    read: Result<Vec<ActivityEvent>, ArmError>,
    related: &Related,
    findings: &[Finding],
    window: Duration,
) -> Changes {
    match read {
        Ok(events) => {
            let mine: Vec<ActivityEvent> = events
                .into_iter()
                .filter(|e| related.concerns(&e.resource_id))
                .collect();
            let mut changes = changes_of(&mine);
            mark(&mut changes, findings);
            Changes::Listed { window, changes }
        }
        Err(e) => Changes::Skipped {
            reason: skipped_reason(&e),
        },
    }
}

/// "00000000-… lacks Microsoft.Insights/eventtypes/values/read over /subscriptions/…" for
/// Azure's 403, else what went wrong.
fn skipped_reason(error: &ArmError) -> String {
    if crate::azure::is_authorization_failed(error) {
        if let ArmError::Forbidden { message, .. } = error {
            let client = message
                .split_once("The client '")
                .and_then(|(_, rest)| rest.split_once('\''))
                .map(|(client, _)| client.to_owned())
                .unwrap_or_else(|| "rdp-doctor's identity".to_owned());
            let scope = crate::azure::refused_action(error)
                .map(|(_, scope)| format!(" over {scope}"))
                .unwrap_or_default();
            return format!(
                "{client} lacks {READ_ACTIVITY}{scope} (Reader or Monitoring Reader grants it)"
            );
        }
    }
    format!("the Activity Log could not be read: {error}")
}

/// Marks, for each failing finding, the newest change that explains it: a write to the NSG
/// rule (or NSG) the `nsg` finding names, to the route table of a failing `network-path`, a
/// deallocate or power-off of the VM for `vm-status`, a change to the NIC or a public IP for
/// `public-ip`, an update of the VM for `boot-diagnostics`. A change explains one check at most.
pub fn mark(changes: &mut [Change], findings: &[Finding]) {
    for finding in findings.iter().filter(|f| f.status == Status::Fail) {
        let Some(i) = changes
            .iter()
            .position(|c| c.explains.is_none() && explains(finding, c))
            .or_else(|| {
                // Else a weaker match: anything done to the NSG the `nsg` finding names.
                changes
                    .iter()
                    .position(|c| c.explains.is_none() && explains_loosely(finding, c))
            })
        else {
            continue;
        };
        changes[i].explains = Some(finding.step);
    }
}

/// The type/name pairs of an id below its provider namespace, lowercase.
fn pairs(resource_id: &str) -> Vec<(String, String)> {
    let segs: Vec<String> = resource_id
        .trim_matches('/')
        .split('/')
        .map(str::to_ascii_lowercase)
        .collect();
    let after = segs
        .iter()
        .rposition(|s| s == "providers")
        .map_or(segs.len(), |i| i + 2);
    segs.get(after..)
        .unwrap_or_default()
        .chunks(2)
        .filter_map(|c| Some((c[0].clone(), c.get(1)?.clone())))
        .collect()
}

fn names(change: &Change, kind: &str, name: &str) -> bool {
    pairs(&change.resource_id)
        .iter()
        .any(|(t, n)| t == kind && n.eq_ignore_ascii_case(name))
}

fn succeeded_or_running(change: &Change) -> bool {
    !change.status.eq_ignore_ascii_case("failed")
}

fn explains(finding: &Finding, change: &Change) -> bool {
    if !succeeded_or_running(change) {
        return false;
    }
    let op = change.operation.to_ascii_lowercase();
    let ev = &finding.evidence;
    match finding.step {
        CheckId::Nsg => {
            let (Some(nsg), Some(rule)) = (ev["nsg"].as_str(), ev["rule"].as_str()) else {
                return false;
            };
            names(change, "networksecuritygroups", nsg) && names(change, "securityrules", rule)
        }
        CheckId::NetworkPath => {
            let route = &ev["route"];
            let table = route["route_table"].as_str().or_else(|| {
                route["route_table_id"]
                    .as_str()
                    .map(ResourceId::last_segment)
            });
            table.is_some_and(|t| names(change, "routetables", t))
        }
        CheckId::VmStatus => {
            pairs(&change.resource_id).len() == 1
                && (op.ends_with("/deallocate/action") || op.ends_with("/poweroff/action"))
        }
        CheckId::PublicIp => {
            op.starts_with("microsoft.network/networkinterfaces/")
                || op.starts_with("microsoft.network/publicipaddresses/")
        }
        CheckId::BootDiagnostics => op == "microsoft.compute/virtualmachines/write",
        _ => false,
    }
}

fn explains_loosely(finding: &Finding, change: &Change) -> bool {
    finding.step == CheckId::Nsg
        && succeeded_or_running(change)
        && finding.evidence["nsg"]
            .as_str()
            .is_some_and(|nsg| names(change, "networksecuritygroups", nsg))
}

/// The resources a VM's changes are looked for on, read without a check: the VM (its NICs),
/// each NIC (its NSG, public IP and subnet), the subnet (its NSG and route table).
pub async fn related_of(arm: &Arm, vm: &VmRef) -> Result<Related, ArmError> {
    let mut related = Related::new(vm);
    let facts = arm.vm_facts(vm).await?;
    let nics = futures::future::join_all(facts.nic_ids.iter().map(|id| arm.nic_facts(id))).await;
    let mut subnets: Vec<String> = Vec::new();
    for (id, nic) in facts.nic_ids.iter().zip(nics) {
        related.add(Some(id));
        let nic = nic?;
        related.add_nic(&nic);
        if let Some(subnet) = nic.subnet_id {
            if !subnets.contains(&subnet) {
                subnets.push(subnet);
            }
        }
    }
    let links = futures::future::join_all(subnets.iter().map(|s| arm.subnet_links(s))).await;
    for link in links {
        let link = link?;
        related.add(link.nsg_id.as_deref());
        related.add(link.route_table_id.as_deref());
    }
    Ok(related)
}

/// `changes VM`: every change of the window to the VM and what it depends on, newest first.
pub async fn list(arm: &Arm, vm: &VmRef, window: Duration) -> Result<Changes, ArmError> {
    let related = related_of(arm, vm).await?;
    let read = read_groups(arm, &related.groups(), bounds(window)).await;
    Ok(assemble(read, &related, &[], window))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(op: &str, id: &str) -> Change {
        Change {
            at: OffsetDateTime::UNIX_EPOCH,
            who: "alice@contoso.com".into(),
            summary: String::new(),
            operation: op.into(),
            resource_id: id.into(),
            status: "Succeeded".into(),
            explains: None,
        }
    }

    const RG: &str = "/subscriptions/s/resourceGroups/rg-web/providers";

    #[test]
    fn the_rule_the_nsg_finding_names_explains_it() {
        let finding = Finding::new(CheckId::Nsg, Status::Fail, "denied").evidence(
            serde_json::json!({"allowed": false, "rule": "deny-rdp-internet", "nsg": "nsg-snet-app"}),
        );
        let rule_write = "Microsoft.Network/networkSecurityGroups/securityRules/write";
        let mut changes = vec![
            change(
                rule_write,
                &format!("{RG}/Microsoft.Network/networkSecurityGroups/nsg-rdp/securityRules/deny-rdp-internet"),
            ),
            change(
                rule_write,
                &format!("{RG}/Microsoft.Network/networkSecurityGroups/nsg-snet-app/securityRules/allow-lb-probes"),
            ),
            change(
                rule_write,
                &format!("{RG}/Microsoft.Network/networkSecurityGroups/NSG-SNET-APP/securityRules/deny-rdp-internet"),
            ),
        ];
        mark(&mut changes, std::slice::from_ref(&finding));
        let marked: Vec<bool> = changes.iter().map(|c| c.explains.is_some()).collect();
        assert_eq!(marked, [false, false, true]);
        // Without the rule's own change, a change to that NSG is the best explanation.
        let mut loose = changes[..2].to_vec();
        mark(&mut loose, &[finding]);
        assert_eq!(loose[1].explains, Some(CheckId::Nsg));
        assert_eq!(loose[0].explains, None);
    }

    #[test]
    fn a_deallocate_explains_vm_status_and_passing_checks_take_nothing() {
        let vm = format!("{RG}/Microsoft.Compute/virtualMachines/app-02");
        let mut changes = vec![
            change(
                "Microsoft.Compute/virtualMachines/extensions/write",
                &format!("{vm}/extensions/x"),
            ),
            change("Microsoft.Compute/virtualMachines/deallocate/action", &vm),
        ];
        let pass = Finding::new(CheckId::VmStatus, Status::Pass, "running");
        mark(&mut changes, std::slice::from_ref(&pass));
        assert!(changes.iter().all(|c| c.explains.is_none()));
        let fail = Finding::new(CheckId::VmStatus, Status::Fail, "deallocated");
        mark(&mut changes, &[fail]);
        assert_eq!(changes[1].explains, Some(CheckId::VmStatus));
        assert_eq!(changes[0].explains, None);
    }

    #[test]
    fn related_resources_and_their_children_count_and_their_groups_are_asked_once() {
        let vm = VmRef::from_stored(
            &format!("{RG}/Microsoft.Compute/virtualMachines/web-02"),
            "web-02",
        );
        let mut related = Related::new(&vm);
        related.add(Some("/subscriptions/s/resourceGroups/rg-shared-net/providers/Microsoft.Network/networkSecurityGroups/nsg-rdp"));
        related.add(Some(&format!(
            "{RG}/Microsoft.Network/networkInterfaces/web-02-nic"
        )));
        assert!(related.concerns("/subscriptions/s/resourceGroups/RG-SHARED-NET/providers/Microsoft.Network/networkSecurityGroups/nsg-rdp/securityRules/allow-rdp"));
        assert!(!related.concerns("/subscriptions/s/resourceGroups/rg-shared-net/providers/Microsoft.Network/networkSecurityGroups/nsg-rdp-2"));
        assert_eq!(
            related.groups(),
            [
                ("s".to_owned(), "rg-web".to_owned()),
                ("s".to_owned(), "rg-shared-net".to_owned())
            ]
        );
    }
}
