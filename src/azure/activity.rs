//! Azure Monitor's Activity Log (`ActivityLogs_List`, monitor spec 2015-04-01): the writes to a
//! resource group in a time window, read with the same authenticated, paced and retried
//! pipeline as every other ARM request (the management crates have no Insights client), every
//! page followed through `nextLink`.
//!
//! Reads of one resource group are shared ([`Flights`]). Azure logs every POST, the reading
//! ones too, so each check adds its own effective-rules and effective-routes requests to its
//! group's log ("write operations (PUT, POST, DELETE)", Microsoft Learn, "Azure Monitor
//! activity log"), and each read pages through all of them: a thousand checks of one group at
//! once would each read dozens of pages of the others' POSTs. A read that began at most
//! [`SHARE`] ago serves the checks that ask for the same group and window length after it, unless
//! this connection has sent anything but a read since it began (a fix, then its check, must see
//! the fix). The Activity Log itself shows an event seconds to minutes after it happens, so
//! sharing by [`SHARE`] hides nothing it would have shown.

use super::{Arm, ArmError};
use crate::domain::ActivityEvent;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// How long a read of a group's Activity Log serves the checks that ask after it began.
pub(crate) const SHARE: Duration = Duration::from_secs(2);

/// What one read gave: the events, or why there are none.
type Outcome = Result<Arc<Vec<ActivityEvent>>, ArmError>;

/// The reads of one connection (one identity) that later checks may share, and when it last
/// sent a request that may change something.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    /// By (subscription, resource group, window length in seconds), lowercase.
    reads: Mutex<HashMap<(String, String, i64), Flight>>,
    changed: Mutex<Option<Instant>>,
}

#[derive(Debug, Clone)]
struct Flight {
    began: Instant,
    outcome: Arc<tokio::sync::OnceCell<Outcome>>,
}

impl Flights {
    /// A request that may change something was sent, answered or followed to its end: reads
    /// begun before now serve no one after it.
    pub(crate) fn changed(&self) {
        *self.changed.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// The read to join for `key`, or a new one (the caller's) when none may serve.
    fn join(
        &self,
        key: (String, String, i64),
        now: Instant,
    ) -> Arc<tokio::sync::OnceCell<Outcome>> {
        let changed = *self.changed.lock().unwrap_or_else(PoisonError::into_inner);
        let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        reads.retain(|_, f| now.duration_since(f.began) <= SHARE);
        let serves = |f: &Flight| changed.is_none_or(|c| c < f.began);
        if let Some(flight) = reads.get(&key).filter(|f| serves(f)) {
            return flight.outcome.clone();
        }
        let flight = Flight {
            began: now,
            outcome: Arc::default(),
        };
        reads.insert(key, flight.clone());
        flight.outcome
    }
}

impl Arm {
    /// The Activity Log events of resource group `resource_group` between `from` and `to`, or
    /// those of a read of the same group and window length that began at most [`SHARE`] ago.
    pub async fn activity_in_group(
        &self,
        subscription_id: &str,
        resource_group: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<ActivityEvent>, ArmError> {
        let key = (
            subscription_id.to_ascii_lowercase(),
            resource_group.to_ascii_lowercase(),
            (to - from).whole_seconds(),
        );
        let read = self.pacer.activity.join(key, Instant::now());
        // The first to get here reads; the others wait for its outcome (and should its task
        // be dropped mid-read, the next waiter reads instead).
        let outcome = read
            .get_or_init(|| async {
                self.read_activity(subscription_id, resource_group, from, to)
                    .await
                    .map(Arc::new)
            })
            .await;
        outcome
            .as_ref()
            .map(|events| events.to_vec())
            .map_err(Clone::clone)
    }

    /// One read of the group's log, every page. Azure accepts only a few `$filter` shapes;
    /// this is its "events for a resource group" one.
    async fn read_activity(
        &self,
        subscription_id: &str,
        resource_group: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<ActivityEvent>, ArmError> {
        let what = format!("reading the Activity Log of resource group {resource_group}");
        let stamp = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        let filter = format!(
            "eventTimestamp ge '{}' and eventTimestamp le '{}' and resourceGroupName eq '{resource_group}'",
            stamp(from),
            stamp(to)
        );
        let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
        let values = self
            .get_values(
                &format!(
                    "subscriptions/{subscription_id}/providers/Microsoft.Insights/eventtypes/management/values?api-version=2015-04-01&$filter={encoded}"
                ),
                &what,
            )
            .await?;
        // Only changes are kept: the reading POSTs (most of a busy group's log, the checks'
        // own among them) would only be carried to be dropped by `changes_of`.
        Ok(values
            .iter()
            .filter_map(event)
            .filter(|e| crate::domain::is_change(&e.operation))
            .collect())
    }
}

/// One `EventData`; an event without a time or an operation is not a change anyone can read.
fn event(v: &serde_json::Value) -> Option<ActivityEvent> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    Some(ActivityEvent {
        at: OffsetDateTime::parse(v["eventTimestamp"].as_str()?, &Rfc3339).ok()?,
        caller: text(&v["caller"]),
        operation: v["operationName"]["value"].as_str()?.to_owned(),
        resource_id: text(&v["resourceId"]),
        status: text(&v["status"]["value"]),
        sub_status: text(&v["subStatus"]["value"]),
        correlation_id: text(&v["correlationId"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(group: &str) -> (String, String, i64) {
        ("sub".to_owned(), group.to_owned(), 86_400)
    }

    #[test]
    fn a_read_serves_the_same_group_for_two_seconds_until_a_change() {
        let flights = Flights::default();
        let t0 = Instant::now();
        let first = flights.join(key("rg-web"), t0);
        fn same(
            a: &Arc<tokio::sync::OnceCell<Outcome>>,
            b: &Arc<tokio::sync::OnceCell<Outcome>>,
        ) -> bool {
            Arc::ptr_eq(a, b)
        }
        assert!(same(&first, &flights.join(key("rg-web"), t0 + SHARE)));
        // Another group, another window length: reads of their own.
        assert!(!same(&first, &flights.join(key("rg-net"), t0)));
        let week = ("sub".to_owned(), "rg-web".to_owned(), 7 * 86_400);
        assert!(!same(&first, &flights.join(week, t0)));
        // Past the sharing: a new read, which serves in its turn.
        let later = flights.join(key("rg-web"), t0 + SHARE + Duration::from_millis(1));
        assert!(!same(&first, &later));
        let at = t0 + SHARE + Duration::from_millis(2);
        assert!(same(&later, &flights.join(key("rg-web"), at)));
        // A change sent after a read began: it serves no one after.
        let flights = Flights::default();
        let before = flights.join(key("rg-web"), Instant::now());
        flights.changed();
        let after = flights.join(key("rg-web"), Instant::now());
        assert!(!same(&before, &after));
        assert!(same(&after, &flights.join(key("rg-web"), Instant::now())));
    }

    #[test]
    fn microsofts_example_event_reads() {
        // The event of `GetActivityLogsFiltered.json` (azure-rest-api-specs, monitor 2015-04-01),
        // shortened to the fields read.
        let example = serde_json::json!({
            "caller": "admin@contoso.com",
            "correlationId": "1e121103-0ba6-4300-ac9d-952bb5d0c80f",
            "operationName": {"value": "microsoft.support/supporttickets/write", "localizedValue": "microsoft.support/supporttickets/write"},
            "resourceId": "/subscriptions/089bd33f-d4ec-47fe-8ba5-0753aa5c5b33/resourceGroups/MSSupportGroup/providers/microsoft.support/supporttickets/115012112305841",
            "status": {"value": "Succeeded", "localizedValue": "Succeeded"},
            "subStatus": {"value": "Created", "localizedValue": "Created (HTTP Status Code: 201)"},
            "eventTimestamp": "2015-01-21T22:14:26.9792776Z",
        });
        let e = event(&example).expect("reads");
        assert_eq!(e.caller, "admin@contoso.com");
        assert_eq!(e.sub_status, "Created");
        assert_eq!(e.at.unix_timestamp(), 1_421_878_466);
        assert!(event(&serde_json::json!({"caller": "x"})).is_none());
    }
}
