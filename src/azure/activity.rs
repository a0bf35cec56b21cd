//! Azure Monitor's Activity Log (`ActivityLogs_List`, monitor spec 2015-04-01): the writes to a
//! resource group in a time window, read with the same authenticated, paced and retried
//! pipeline as every other ARM request (the management crates have no Insights client), every
//! page followed through `nextLink`.

use super::{Arm, ArmError};
use crate::domain::ActivityEvent;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

impl Arm {
    /// The Activity Log events of resource group `resource_group` between `from` and `to`.
    /// Azure accepts only a few `$filter` shapes; this is its "events for a resource group" one.
    pub async fn activity_in_group(
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
        Ok(values.iter().filter_map(event).collect())
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
