//! "What changed": writes to a VM and the resources its Remote Desktop depends on, from Azure
//! Monitor's Activity Log, as the reports show them ("14:01 alice@contoso.com created security
//! rule deny-rdp in nsg-snet-app").
//!
//! Plain data and pure functions: `azure` reads the events, `runbook::changes` picks the ones
//! that concern a VM and marks the one that explains a failing check.

use crate::diagnose::CheckId;
use serde::{Serialize, Serializer};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One Activity Log event (`EventData`), as far as rdp-doctor reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityEvent {
    pub at: OffsetDateTime,
    /// A UPN, or a service principal's application id.
    pub caller: String,
    /// e.g. `Microsoft.Network/networkSecurityGroups/securityRules/write`.
    pub operation: String,
    pub resource_id: String,
    /// `Started`, `Accepted`, `Succeeded`, `Failed`...
    pub status: String,
    /// The HTTP status's name: `Created`, `OK`, `Accepted`...
    pub sub_status: String,
    /// Shared by the events of one operation.
    pub correlation_id: String,
}

/// One change to a VM or a resource it depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// When Azure logged it.
    #[serde(serialize_with = "rfc3339")]
    pub at: OffsetDateTime,
    /// Who: the Activity Log's `caller` (a UPN, or a service principal's application id).
    pub who: String,
    /// What, in a few words: "created security rule deny-rdp in nsg-snet-app".
    pub summary: String,
    /// Azure's operation name.
    pub operation: String,
    pub resource_id: String,
    /// How it ended: `Succeeded`, `Failed`, `Accepted` (still running when logged)...
    pub status: String,
    /// The failing check this change explains, if any.
    pub explains: Option<CheckId>,
}

fn rfc3339<S: Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.format(&Rfc3339).unwrap_or_default())
}

impl Change {
    /// "14:01 alice@contoso.com created security rule deny-rdp in nsg-snet-app" (UTC).
    pub fn line(&self) -> String {
        format!(
            "{:02}:{:02} {} {}",
            self.at.hour(),
            self.at.minute(),
            self.who,
            self.summary
        )
    }

    /// [`Change::line`] with the day when it is not `today`'s (UTC): "Nov 29 14:01 …".
    pub fn line_from(&self, today: OffsetDateTime) -> String {
        if self.at.date() == today.date() {
            self.line()
        } else {
            format!(
                "{} {:02} {}",
                short_month(self.at.month()),
                self.at.day(),
                self.line()
            )
        }
    }
}

fn short_month(month: time::Month) -> &'static str {
    use time::Month::*;
    match month {
        January => "Jan",
        February => "Feb",
        March => "Mar",
        April => "Apr",
        May => "May",
        June => "Jun",
        July => "Jul",
        August => "Aug",
        September => "Sep",
        October => "Oct",
        November => "Nov",
        December => "Dec",
    }
}

/// A report's "Recent changes": the changes of the window, newest first, or why there are none
/// to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Changes {
    Listed {
        /// How far back the Activity Log was read.
        #[serde(rename = "window_minutes", serialize_with = "minutes")]
        window: Duration,
        changes: Vec<Change>,
    },
    Skipped {
        reason: String,
    },
}

fn minutes<S: Serializer>(window: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(window.as_secs() / 60)
}

impl Changes {
    /// The listed changes (none when skipped).
    pub fn list(&self) -> &[Change] {
        match self {
            Changes::Listed { changes, .. } => changes,
            Changes::Skipped { .. } => &[],
        }
    }

    /// The change that explains `check`, if one does.
    pub fn explaining(&self, check: CheckId) -> Option<&Change> {
        self.list().iter().find(|c| c.explains == Some(check))
    }

    /// What a report shows: the `newest` most recent changes, and every marked one.
    pub fn shown(&self, newest: usize) -> Vec<&Change> {
        self.list()
            .iter()
            .enumerate()
            .filter(|(i, c)| *i < newest || c.explains.is_some())
            .map(|(_, c)| c)
            .collect()
    }

    /// "the last 24 hours", "the last 90 minutes".
    pub fn window_text(window: Duration) -> String {
        let minutes = window.as_secs() / 60;
        match minutes {
            60 => "the last hour".to_owned(),
            m if m % 60 == 0 => format!("the last {} hours", m / 60),
            1 => "the last minute".to_owned(),
            m => format!("the last {m} minutes"),
        }
    }
}

/// The POST actions that only read or compute (ARM returns data, nothing changes), lower-case.
/// Azure logs their POSTs in the Activity Log as it does writes, so "Recent changes" leaves them
/// out, and `azure::retry` may send them again as it does reads. Not `runCommand`: even a
/// read-only script runs in the guest, and Azure refuses a second one while the first runs.
pub const READING_ACTIONS: [&str; 7] = [
    "effectivenetworksecuritygroups",
    "listnetworkmanagereffectivesecurityadminrules",
    "retrievebootdiagnosticsdata",
    "effectiveroutetable",
    "ipflowverify",
    "nexthop",
    "listkeys",
];

/// Whether `name` (the last segment of a POST's path, any case) is one of [`READING_ACTIONS`].
pub fn is_reading_action(name: &str) -> bool {
    READING_ACTIONS
        .iter()
        .any(|action| action.eq_ignore_ascii_case(name))
}

/// Whether an operation changes something (a write, a delete, or an action that is not a read).
pub fn is_change(operation: &str) -> bool {
    let op = operation.to_ascii_lowercase();
    if op.ends_with("/read") {
        return false;
    }
    !op.strip_suffix("/action")
        .and_then(|rest| rest.rsplit('/').next())
        .is_some_and(is_reading_action)
}

/// The changes among `events`: one per operation (its events share a correlation id; the last
/// word wins: `Succeeded` or `Failed` over `Accepted` over `Started`), reads left out, newest
/// first.
pub fn changes_of(events: &[ActivityEvent]) -> Vec<Change> {
    let rank = |status: &str| match status.to_ascii_lowercase().as_str() {
        "started" => 0,
        "accepted" | "in progress" => 1,
        _ => 2,
    };
    let mut by_operation: Vec<&ActivityEvent> = Vec::new();
    for event in events.iter().filter(|e| is_change(&e.operation)) {
        let same = by_operation.iter_mut().find(|kept| {
            !event.correlation_id.is_empty()
                && kept.correlation_id == event.correlation_id
                && kept.resource_id.eq_ignore_ascii_case(&event.resource_id)
        });
        match same {
            Some(kept) => {
                let better = rank(&event.status) > rank(&kept.status)
                    || (rank(&event.status) == rank(&kept.status) && event.at > kept.at);
                // The sub-status of the request (`Created`) is on its first ending event.
                if better {
                    *kept = event;
                }
            }
            None => by_operation.push(event),
        }
    }
    // The request's own end says whether it created: keep `Created` from any event of it.
    let created = |e: &ActivityEvent| {
        events.iter().any(|o| {
            o.correlation_id == e.correlation_id
                && !e.correlation_id.is_empty()
                && o.sub_status.eq_ignore_ascii_case("Created")
        }) || e.sub_status.eq_ignore_ascii_case("Created")
    };
    let mut changes: Vec<Change> = by_operation
        .into_iter()
        .map(|e| Change {
            at: e.at,
            who: if e.caller.is_empty() {
                "(unknown caller)".to_owned()
            } else {
                e.caller.clone()
            },
            summary: summary(&e.operation, &e.resource_id, &e.status, created(e)),
            operation: e.operation.clone(),
            resource_id: e.resource_id.clone(),
            status: e.status.clone(),
            explains: None,
        })
        .collect();
    changes.sort_by_key(|c| std::cmp::Reverse(c.at));
    changes
}

/// The words for a resource type.
fn noun(resource_type: &str) -> String {
    match resource_type.to_ascii_lowercase().as_str() {
        "virtualmachines" => "VM".into(),
        "extensions" => "extension".into(),
        "networkinterfaces" => "NIC".into(),
        "networksecuritygroups" => "NSG".into(),
        "securityrules" => "security rule".into(),
        "publicipaddresses" => "public IP".into(),
        "virtualnetworks" => "virtual network".into(),
        "subnets" => "subnet".into(),
        "routetables" => "route table".into(),
        "routes" => "route".into(),
        "disks" => "disk".into(),
        _ => resource_type.to_owned(),
    }
}

/// "created security rule deny-rdp in nsg-snet-app", "deallocated VM app-02".
fn summary(operation: &str, resource_id: &str, status: &str, created: bool) -> String {
    let segs: Vec<&str> = resource_id
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let after = segs
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("providers"))
        .map_or(segs.len(), |i| i + 2);
    // type/name pairs below the namespace
    let pairs: Vec<(&str, &str)> = segs
        .get(after..)
        .unwrap_or_default()
        .chunks(2)
        .filter_map(|c| Some((c[0], *c.get(1)?)))
        .collect();
    let what = match pairs.as_slice() {
        [] => resource_id.to_owned(),
        [(t, n)] => format!("{} {n}", noun(t)),
        [.., (pt, pn), (t, n)] if pt.eq_ignore_ascii_case("virtualmachines") => {
            format!("{} {n} of VM {pn}", noun(t))
        }
        [.., (_, pn), (t, n)] => format!("{} {n} in {pn}", noun(t)),
    };
    let op = operation.to_ascii_lowercase();
    let verb = if op.ends_with("/write") {
        if created { "created" } else { "updated" }.to_owned()
    } else if op.ends_with("/delete") {
        "deleted".to_owned()
    } else if let Some(action) = op
        .strip_suffix("/action")
        .and_then(|o| o.rsplit('/').next())
    {
        match action {
            "start" => "started".to_owned(),
            "restart" => "restarted".to_owned(),
            "deallocate" => "deallocated".to_owned(),
            "poweroff" => "powered off".to_owned(),
            "redeploy" => "redeployed".to_owned(),
            "runcommand" => "ran a command on".to_owned(),
            other => format!("ran {other} on"),
        }
    } else {
        operation.to_owned()
    };
    let text = format!("{verb} {what}");
    match status.to_ascii_lowercase().as_str() {
        "failed" => format!("tried: {text} (failed)"),
        "started" | "accepted" => format!("{text} (started)"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        minutes: i64,
        op: &str,
        id: &str,
        status: &str,
        sub: &str,
        corr: &str,
    ) -> ActivityEvent {
        ActivityEvent {
            at: OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(minutes),
            caller: "alice@contoso.com".into(),
            operation: op.into(),
            resource_id: id.into(),
            status: status.into(),
            sub_status: sub.into(),
            correlation_id: corr.into(),
        }
    }

    const RULE: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/nsg-snet-app/securityRules/deny-rdp";
    const VM: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/app-02";

    /// The operation names Azure logs for the POSTs a check sends (the Activity Log's
    /// `operationName.value`, as the resource providers' operations lists name them) are no
    /// changes; the fixes' POSTs and any write are.
    #[test]
    fn a_checks_reading_posts_are_no_changes_and_a_fixs_are() {
        for read in [
            "Microsoft.Network/networkInterfaces/effectiveNetworkSecurityGroups/action",
            "Microsoft.Network/networkInterfaces/effectiveRouteTable/action",
            "Microsoft.Network/virtualNetworks/listNetworkManagerEffectiveSecurityAdminRules/action",
            "Microsoft.Compute/virtualMachines/retrieveBootDiagnosticsData/action",
            "Microsoft.Network/networkWatchers/ipFlowVerify/action",
            "Microsoft.Network/networkWatchers/nextHop/action",
            "Microsoft.Storage/storageAccounts/listKeys/action",
            "Microsoft.Compute/virtualMachines/read",
        ] {
            assert!(!is_change(read), "{read}");
        }
        for change in [
            "Microsoft.Compute/virtualMachines/redeploy/action",
            "Microsoft.Compute/virtualMachines/start/action",
            "Microsoft.Compute/virtualMachines/runCommand/action",
            "Microsoft.Network/networkSecurityGroups/securityRules/write",
            "Microsoft.Compute/virtualMachines/extensions/delete",
            "Microsoft.Network/nextHopper/action",
        ] {
            assert!(is_change(change), "{change}");
        }
    }

    #[test]
    fn one_change_per_operation_in_words_newest_first() {
        let w = "Microsoft.Network/networkSecurityGroups/securityRules/write";
        let d = "Microsoft.Compute/virtualMachines/deallocate/action";
        let events = [
            event(1, w, RULE, "Started", "", "a"),
            event(1, w, RULE, "Succeeded", "Created", "a"),
            event(5, d, VM, "Started", "", "b"),
            event(5, d, VM, "Accepted", "Accepted", "b"),
            event(6, d, VM, "Succeeded", "", "b"),
            event(
                7,
                "Microsoft.Network/networkInterfaces/effectiveNetworkSecurityGroups/action",
                VM,
                "Succeeded",
                "OK",
                "c",
            ),
        ];
        let changes = changes_of(&events);
        let lines: Vec<String> = changes.iter().map(Change::line).collect();
        assert_eq!(
            lines,
            [
                "00:06 alice@contoso.com deallocated VM app-02",
                "00:01 alice@contoso.com created security rule deny-rdp in nsg-snet-app",
            ]
        );
        let updated = changes_of(&[event(2, w, RULE, "Succeeded", "OK", "x")]);
        assert_eq!(
            updated[0].summary,
            "updated security rule deny-rdp in nsg-snet-app"
        );
        let failed = changes_of(&[event(2, w, RULE, "Failed", "Conflict", "x")]);
        assert_eq!(
            failed[0].summary,
            "tried: updated security rule deny-rdp in nsg-snet-app (failed)"
        );
    }

    #[test]
    fn a_report_shows_the_newest_and_every_marked_change() {
        let mut list = changes_of(
            &(0..8)
                .map(|i| {
                    event(
                        i,
                        "Microsoft.Compute/virtualMachines/write",
                        VM,
                        "Succeeded",
                        "OK",
                        &i.to_string(),
                    )
                })
                .collect::<Vec<_>>(),
        );
        list[6].explains = Some(CheckId::VmStatus);
        let changes = Changes::Listed {
            window: Duration::from_secs(86_400),
            changes: list,
        };
        let shown: Vec<i64> = changes
            .shown(3)
            .iter()
            .map(|c| (c.at - OffsetDateTime::UNIX_EPOCH).whole_minutes())
            .collect();
        assert_eq!(shown, [7, 6, 5, 1]);
        assert_eq!(
            Changes::window_text(Duration::from_secs(86_400)),
            "the last 24 hours"
        );
        let json = serde_json::to_value(&changes).expect("json");
        assert_eq!(json["status"], "listed");
        assert_eq!(json["window_minutes"], 1440);
        assert_eq!(json["changes"][6]["explains"], "vm-status");
        assert_eq!(json["changes"][0]["explains"], serde_json::Value::Null);
        assert_eq!(json["changes"][0]["at"], "1970-01-01T00:07:00Z");
    }
}
