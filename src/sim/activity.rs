//! Azure Monitor's Activity Log: the writes the simulator has served (the caller is the
//! principal the token was issued to) and the events a world file gives (`[[activity]]`),
//! listed by `GET /subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values`
//! (`ActivityLogs_List`, azure-rest-api-specs
//! `specification/monitor/resource-manager/Microsoft.Insights/stable/2015-04-01/activityLogs_API.json`,
//! example `GetActivityLogsFiltered.json`).
//!
//! What Azure does, with its sources:
//! - The answer is `{"value": [EventData], "nextLink"?}`; each `EventData` has `caller` ("the
//!   email address of the user who has performed the operation, the UPN claim or SPN claim
//!   based on availability": a service principal's is its application id), `eventTimestamp`,
//!   `operationName {value, localizedValue}`, `resourceId`, `status`, `subStatus` (the HTTP
//!   status's name: `Created` for 201, `OK` for 200, `Accepted` for 202), `authorization
//!   {action, scope}`, `correlationId` shared by the events of one operation (a `BeginRequest`
//!   `Started` event, then the `EndRequest` one), `eventName`, `category`, `level`.
//! - Every write (PUT, POST, DELETE) is logged, reads are not (Microsoft Learn, "Azure Monitor
//!   activity log": "write operations (PUT, POST, DELETE)").
//! - `$filter` is required and "very restricted": `eventTimestamp ge '…' and eventTimestamp le
//!   '…'`, optionally `and` one of `resourceGroupName eq`, `resourceUri eq`, `resourceProvider
//!   eq`, `correlationId eq` (the spec's `$filter` description: "No other syntax is allowed").
//!   Without a filter, or with another, Azure answers 400 `BadRequest` "$filter searching
//!   parameters invalid" (Azure/azure-rest-api-specs#2467: the filter is not optional and needs
//!   at least a start time; MicrosoftDocs/feedback#319 quotes the error), and a start more than
//!   90 days back is refused too (events are kept 90 days; Azure/azure-cli#4885).
//! - Reading it needs `Microsoft.Insights/eventtypes/values/read` (Microsoft Learn, "Roles,
//!   permissions, and security in Azure Monitor"; Reader's `*/read` grants it), checked on the
//!   scope the filter names: the resource, the resource group, else the subscription.
//! - Events come newest first, a page at a time, the rest behind `nextLink` (`$skipToken`).

use super::rbac::Caller;
use super::resource::{check_scope, Answer, Ctx};
use super::world::World;
use super::{random_uuid, Reply};
use serde_json::{json, Value};
use std::sync::Mutex;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The action that reads the Activity Log.
pub(crate) const READ_ACTIVITY: &str = "Microsoft.Insights/eventtypes/values/read";

/// How long Azure keeps Activity Log events.
const RETENTION: time::Duration = time::Duration::days(90);

/// Events per page (Azure's pages hold up to a few hundred; a world may make them smaller to
/// show paging).
pub(crate) const DEFAULT_PAGE_SIZE: usize = 200;

/// One Activity Log event.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub at: OffsetDateTime,
    pub caller: String,
    pub operation: String,
    pub resource_id: String,
    pub status: String,
    pub sub_status: String,
    pub correlation_id: String,
    pub begin: bool,
    pub method: &'static str,
    /// The long-running operation the write started, whose end is logged when it ends.
    pub operation_id: Option<String>,
}

/// The log: the world's events, then every write as it is served.
#[derive(Default)]
pub(crate) struct Log {
    events: Mutex<Vec<Event>>,
}

impl Log {
    /// The world's `[[activity]]` events, `minutes_ago` before `now`.
    pub(crate) fn from_world(world: &World, now: OffsetDateTime) -> Log {
        let events = world
            .activity
            .iter()
            .map(|a| Event {
                at: now - time::Duration::minutes(i64::try_from(a.minutes_ago).unwrap_or(0)),
                caller: a.caller.clone(),
                operation: a.operation.clone(),
                resource_id: a.resource.clone(),
                status: a.status.clone(),
                sub_status: a.sub_status.clone(),
                correlation_id: random_uuid(),
                begin: false,
                method: method_of(&a.operation),
                operation_id: None,
            })
            .collect();
        Log {
            events: Mutex::new(events),
        }
    }

    /// A write the simulator answered with `status`: its `Started` event and its end; a write
    /// that started the `long_running` operation is `Accepted` until the operation ends, then
    /// `Succeeded` or `Failed` too, as Azure logs them.
    pub(crate) fn record_write(
        &self,
        method: &str,
        path: &str,
        status: u16,
        caller: &str,
        long_running: Option<String>,
    ) {
        let Some((operation, resource_id)) = operation_of(method, path) else {
            return;
        };
        let now = OffsetDateTime::now_utc();
        let correlation_id = random_uuid();
        let method = method_of(&operation);
        let (end_status, sub_status) = match status {
            200 => ("Succeeded", "OK"),
            201 => ("Succeeded", "Created"),
            202 => ("Accepted", "Accepted"),
            204 => ("Succeeded", "NoContent"),
            400 => ("Failed", "BadRequest"),
            404 => ("Failed", "NotFound"),
            409 => ("Failed", "Conflict"),
            _ if status < 300 => ("Succeeded", ""),
            _ => ("Failed", ""),
        };
        let end_status = match (&long_running, end_status) {
            (Some(_), "Succeeded") => "Accepted",
            (_, other) => other,
        };
        let event = |begin: bool, status: &str, sub_status: &str| Event {
            at: now,
            caller: caller.to_owned(),
            operation: operation.clone(),
            resource_id: resource_id.clone(),
            status: status.to_owned(),
            sub_status: sub_status.to_owned(),
            correlation_id: correlation_id.clone(),
            begin,
            method,
            operation_id: if begin { None } else { long_running.clone() },
        };
        let mut events = super::lock(&self.events);
        events.push(event(true, "Started", ""));
        events.push(event(false, end_status, sub_status));
    }

    /// The events `filter` keeps, with the ends of the operations that have ended since.
    /// Only those are copied: a fleet's checks each log their own POSTs (effective rules and
    /// routes), and every page of every Activity Log read would otherwise copy them all.
    fn matching(
        &self,
        operations: &super::lro::Registry,
        filter: &Filter,
        sub: &str,
    ) -> Vec<Event> {
        let events = super::lock(&self.events);
        let mut kept = Vec::new();
        for e in events.iter().filter(|e| filter.keeps_scope(e, sub)) {
            if filter.keeps_time(e.at) {
                kept.push(e.clone());
            }
            let ended = e
                .operation_id
                .as_deref()
                .and_then(|id| operations.ended(id))
                .filter(|(at, _)| filter.keeps_time(*at));
            if let Some((at, failed)) = ended {
                kept.push(Event {
                    at,
                    status: if failed { "Failed" } else { "Succeeded" }.to_owned(),
                    sub_status: String::new(),
                    operation_id: None,
                    ..e.clone()
                });
            }
        }
        kept
    }
}

/// The HTTP method an operation name stands for.
fn method_of(operation: &str) -> &'static str {
    let lower = operation.to_ascii_lowercase();
    if lower.ends_with("/delete") {
        "DELETE"
    } else if lower.ends_with("/action") {
        "POST"
    } else {
        "PUT"
    }
}

/// The operation name and resource id of a write to `path`: `{namespace}/{types}/write` (PUT),
/// `/delete` (DELETE) or `/{action}/action` (POST to a resource's action).
pub(crate) fn operation_of(method: &str, path: &str) -> Option<(String, String)> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let at = segs
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("providers"))?;
    let namespace = *segs.get(at + 1)?;
    let rest = &segs[at + 2..];
    if rest.is_empty() {
        return None;
    }
    let types = |pairs: &[&str]| -> String {
        pairs
            .iter()
            .step_by(2)
            .copied()
            .collect::<Vec<_>>()
            .join("/")
    };
    let is_post = method.eq_ignore_ascii_case("POST");
    if rest.len() % 2 == 1 && is_post {
        let action = rest[rest.len() - 1];
        let resource = format!("/{}", segs[..segs.len() - 1].join("/"));
        let operation = format!(
            "{namespace}/{}/{action}/action",
            types(&rest[..rest.len() - 1])
        );
        return Some((operation, resource));
    }
    if rest.len() % 2 == 1 {
        return None;
    }
    let verb = if method.eq_ignore_ascii_case("DELETE") {
        "delete"
    } else if method.eq_ignore_ascii_case("PUT") || method.eq_ignore_ascii_case("PATCH") {
        "write"
    } else {
        return None;
    };
    Some((
        format!("{namespace}/{}/{verb}", types(rest)),
        format!("/{}", segs.join("/")),
    ))
}

/// What a `$filter` asks for.
#[derive(Debug, Default, PartialEq)]
struct Filter {
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
    resource_group: Option<String>,
    resource_uri: Option<String>,
    resource_provider: Option<String>,
    correlation_id: Option<String>,
}

fn invalid_filter() -> Reply {
    Reply::arm_error(400, "BadRequest", "$filter searching parameters invalid")
}

/// Parses `field op 'value'` clauses joined by `and`, Azure's only syntax.
fn parse_filter(text: &str) -> Result<Filter, Reply> {
    let mut filter = Filter::default();
    let lower = text.to_ascii_lowercase();
    let mut clauses = Vec::new();
    let mut start = 0;
    for (at, _) in lower.match_indices(" and ") {
        // Only between clauses, never inside a quoted value.
        if text[start..at].matches('\'').count() % 2 == 0 {
            clauses.push(&text[start..at]);
            start = at + 5;
        }
    }
    clauses.push(&text[start..]);
    for clause in clauses {
        let clause = clause.trim();
        let mut parts = clause.splitn(3, char::is_whitespace);
        let (Some(field), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid_filter());
        };
        let value = value
            .trim()
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .ok_or_else(invalid_filter)?
            .to_owned();
        let time = || OffsetDateTime::parse(&value, &Rfc3339).map_err(|_| invalid_filter());
        match (
            field.to_ascii_lowercase().as_str(),
            op.to_ascii_lowercase().as_str(),
        ) {
            ("eventtimestamp", "ge") => filter.from = Some(time()?),
            ("eventtimestamp", "le") => filter.to = Some(time()?),
            ("resourcegroupname", "eq") => filter.resource_group = Some(value),
            ("resourceuri", "eq") => filter.resource_uri = Some(value),
            ("resourceprovider", "eq") => filter.resource_provider = Some(value),
            ("correlationid", "eq") => filter.correlation_id = Some(value),
            _ => return Err(invalid_filter()),
        }
    }
    let narrowing = [
        &filter.resource_group,
        &filter.resource_uri,
        &filter.resource_provider,
        &filter.correlation_id,
    ]
    .iter()
    .filter(|f| f.is_some())
    .count();
    if filter.from.is_none() || narrowing > 1 {
        return Err(invalid_filter());
    }
    Ok(filter)
}

impl Filter {
    /// Everything but the time: the subscription, and the one narrowing clause.
    fn keeps_scope(&self, event: &Event, sub: &str) -> bool {
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        crate::domain::ResourceId::subscription_and_group(&event.resource_id).is_some_and(
            |(s, rg)| {
                same(s, sub)
                    && self
                        .resource_group
                        .as_deref()
                        .is_none_or(|want| same(rg, want))
            },
        ) && self
            .resource_uri
            .as_deref()
            .is_none_or(|uri| same(uri.trim_end_matches('/'), &event.resource_id))
            && self.resource_provider.as_deref().is_none_or(|p| {
                event
                    .operation
                    .split('/')
                    .next()
                    .is_some_and(|ns| same(ns, p))
            })
            && self
                .correlation_id
                .as_deref()
                .is_none_or(|c| same(c, &event.correlation_id))
    }

    fn keeps_time(&self, at: OffsetDateTime) -> bool {
        self.from.is_none_or(|from| at >= from) && self.to.is_none_or(|to| at <= to)
    }

    /// The scope Azure authorises the read on.
    fn scope(&self, sub: &str) -> String {
        match (&self.resource_uri, &self.resource_group) {
            (Some(uri), _) => uri.clone(),
            (None, Some(rg)) => format!("/subscriptions/{sub}/resourceGroups/{rg}"),
            (None, None) => format!("/subscriptions/{sub}"),
        }
    }
}

/// `ActivityLogs_List`.
pub(crate) fn list(ctx: &mut Ctx<'_>, sub: &str) -> Answer {
    check_scope(ctx.world, sub, None)?;
    let filter = parse_filter(ctx.query.get("$filter").ok_or_else(invalid_filter)?)?;
    let now = OffsetDateTime::now_utc();
    if filter.from.is_some_and(|from| from < now - RETENTION) {
        return Err(invalid_filter());
    }
    let caller = Caller::of(ctx.world, ctx.client_id);
    let scope = filter.scope(sub);
    if !caller.allows(READ_ACTIVITY, &scope) {
        return Err(caller.refusal(READ_ACTIVITY, &scope));
    }
    let mut events = ctx.activity.matching(ctx.lro, &filter, sub);
    // Newest first; a write's `Started` event before its end when they share a time.
    events.sort_by(|a, b| b.at.cmp(&a.at).then(a.begin.cmp(&b.begin).reverse()));
    let skip = match ctx.query.get("$skipToken") {
        None => 0,
        Some(token) => token.parse::<usize>().map_err(|_| invalid_filter())?,
    };
    let size = ctx.world.activity_page_size.max(1);
    let end = skip.saturating_add(size).min(events.len());
    let page: Vec<Value> = events
        .get(skip.min(end)..end)
        .unwrap_or_default()
        .iter()
        .map(|e| event_json(e, sub))
        .collect();
    let mut body = json!({ "value": page });
    if end < events.len() {
        let encode =
            |v: &str| -> String { url::form_urlencoded::byte_serialize(v.as_bytes()).collect() };
        body["nextLink"] = json!(format!(
            "{}{}?api-version={}&$filter={}&$skipToken={end}",
            ctx.base,
            ctx.path,
            encode(ctx.query.get("api-version").unwrap_or("2015-04-01")),
            encode(ctx.query.get("$filter").unwrap_or_default()),
        ));
    }
    Ok(Reply::json(200, &body))
}

/// What the portal shows for the operations the simulator serves.
fn localized(operation: &str) -> String {
    let known: &[(&str, &str)] = &[
        (
            "Microsoft.Network/networkSecurityGroups/securityRules/write",
            "Create or Update Security Rule",
        ),
        (
            "Microsoft.Network/networkSecurityGroups/securityRules/delete",
            "Delete Security Rule",
        ),
        (
            "Microsoft.Network/networkSecurityGroups/write",
            "Create or Update Network Security Group",
        ),
        (
            "Microsoft.Compute/virtualMachines/write",
            "Create or Update Virtual Machine",
        ),
        (
            "Microsoft.Compute/virtualMachines/start/action",
            "Start Virtual Machine",
        ),
        (
            "Microsoft.Compute/virtualMachines/restart/action",
            "Restart Virtual Machine",
        ),
        (
            "Microsoft.Compute/virtualMachines/deallocate/action",
            "Deallocate Virtual Machine",
        ),
        (
            "Microsoft.Compute/virtualMachines/powerOff/action",
            "Power Off Virtual Machine",
        ),
        (
            "Microsoft.Compute/virtualMachines/redeploy/action",
            "Redeploy Virtual Machine",
        ),
        (
            "Microsoft.Compute/virtualMachines/runCommand/action",
            "Run Command on Virtual Machine",
        ),
        (
            "Microsoft.Compute/virtualMachines/extensions/write",
            "Create or Update Virtual Machine Extension",
        ),
        (
            "Microsoft.Network/routeTables/routes/write",
            "Create or Update Route",
        ),
        (
            "Microsoft.Network/routeTables/routes/delete",
            "Delete Route",
        ),
    ];
    known
        .iter()
        .find(|(op, _)| op.eq_ignore_ascii_case(operation))
        .map_or_else(|| operation.to_owned(), |(_, text)| (*text).to_owned())
}

/// One `EventData`, in the example's shape.
fn event_json(e: &Event, sub: &str) -> Value {
    let id = crate::domain::ResourceId::parse(&e.resource_id).ok();
    let namespace = e.operation.split('/').next().unwrap_or_default();
    let resource_type = e
        .operation
        .rsplit_once('/')
        .map(|(t, _)| t)
        .unwrap_or_default();
    let resource_type = resource_type
        .strip_suffix(&format!(
            "/{}",
            resource_type.rsplit('/').next().unwrap_or_default()
        ))
        .filter(|_| e.operation.ends_with("/action"))
        .unwrap_or(resource_type);
    let timestamp = e.at.format(&Rfc3339).unwrap_or_default();
    let submitted = (e.at + time::Duration::seconds(12))
        .format(&Rfc3339)
        .unwrap_or_default();
    let event_data_id = random_uuid();
    let ticks = (e.at.unix_timestamp_nanos() / 100) + 621_355_968_000_000_000;
    let (name, name_text) = if e.begin {
        ("BeginRequest", "Begin request")
    } else {
        ("EndRequest", "End request")
    };
    let localizable = |v: &str| json!({"value": v, "localizedValue": v});
    json!({
        "authorization": {"action": e.operation, "scope": e.resource_id},
        "caller": e.caller,
        "channels": "Operation",
        "correlationId": e.correlation_id,
        "description": "",
        "eventDataId": event_data_id,
        "eventName": {"value": name, "localizedValue": name_text},
        "category": {"value": "Administrative", "localizedValue": "Administrative"},
        "httpRequest": {"clientRequestId": random_uuid(), "clientIpAddress": "127.0.0.1", "method": e.method},
        "id": format!("{}/events/{event_data_id}/ticks/{ticks}", e.resource_id),
        "level": if e.status == "Failed" { "Error" } else { "Informational" },
        "resourceGroupName": id.as_ref().map(|i| i.resource_group.clone()).unwrap_or_default(),
        "resourceProviderName": localizable(namespace),
        "resourceId": e.resource_id,
        "resourceType": localizable(resource_type),
        "operationId": e.correlation_id,
        "operationName": {"value": e.operation, "localizedValue": localized(&e.operation)},
        "properties": {"statusCode": e.sub_status},
        "status": localizable(&e.status),
        "subStatus": {"value": e.sub_status, "localizedValue": sub_status_text(&e.sub_status)},
        "eventTimestamp": timestamp,
        "submissionTimestamp": submitted,
        "subscriptionId": sub,
    })
}

/// `subStatus.localizedValue` as the spec describes it, e.g. "Created (HTTP Status Code: 201)".
fn sub_status_text(sub_status: &str) -> String {
    let code = match sub_status {
        "OK" => 200,
        "Created" => 201,
        "Accepted" => 202,
        "NoContent" => 204,
        "BadRequest" => 400,
        "NotFound" => 404,
        "Conflict" => 409,
        _ => return sub_status.to_owned(),
    };
    format!("{sub_status} (HTTP Status Code: {code})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_named_as_azure_names_their_operations() {
        let rule = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/nsg/securityRules/deny-rdp";
        assert_eq!(
            operation_of("PUT", rule),
            Some((
                "Microsoft.Network/networkSecurityGroups/securityRules/write".into(),
                rule.into()
            ))
        );
        let vm =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web-01";
        assert_eq!(
            operation_of("POST", &format!("{vm}/deallocate")),
            Some((
                "Microsoft.Compute/virtualMachines/deallocate/action".into(),
                vm.into()
            ))
        );
        assert_eq!(
            operation_of(
                "DELETE",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/routeTables/rt/routes/r"
            )
            .map(|(op, _)| op),
            Some("Microsoft.Network/routeTables/routes/delete".into())
        );
        assert_eq!(operation_of("POST", "/subscriptions/s/providers"), None);
    }

    #[test]
    fn only_azures_filter_syntax_is_accepted() {
        let ok = parse_filter("eventTimestamp ge '2026-01-01T00:00:00Z' and eventTimestamp le '2026-01-02T00:00:00.1234567Z' and resourceUri eq '/subscriptions/s/resourceGroups/rg'").expect("valid");
        assert_eq!(
            ok.resource_uri.as_deref(),
            Some("/subscriptions/s/resourceGroups/rg")
        );
        assert!(ok.to.is_some());
        for bad in [
            "",
            "resourceGroupName eq 'rg'",
            "eventTimestamp ge 2026-01-01",
            "eventTimestamp ge '2026-01-01T00:00:00Z' and caller eq 'alice'",
            "eventTimestamp ge '2026-01-01T00:00:00Z' and resourceGroupName eq 'a' and resourceUri eq 'b'",
        ] {
            let reply = parse_filter(bad).expect_err(bad);
            assert_eq!(reply.status, 400, "{bad}");
        }
    }
}
