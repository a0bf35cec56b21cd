//! `POST /alerts/azure-monitor?token=…` on `serve`'s listener: Azure Monitor's alerts (an
//! action group's webhook, common alert schema) into the war room.
//!
//! The token (`RDP_DOCTOR_ALERT_TOKEN`) is compared in constant time; without one configured
//! the route answers 404 (alerts are off), a wrong or missing one 401. A body that is not the
//! common alert schema gets 400. Nothing of the request's URL (the token is in it) or body is
//! logged. Otherwise the answer comes at once (202, or 200 when no target is checked) with
//! what becomes of each target, and the work goes on in the background: for each VM target in
//! an `[[alerts.route]]` scope, the check through the door as the alerts actor, and its report
//! posted in the route's channel under a line naming the rule, severity and fired time, with
//! the bot's token (no interaction). The store keeps which message an alert is (see
//! `store::alerts`): a refire edits it, `Resolved` edits it again with a fresh check, and two
//! replicas receiving the same notification post once. A route's targets are gathered for
//! `[alerts] gather_secs` first; more than `storm_threshold` VMs become one sweep-style summary.

use super::serve::Served;
use super::{render, sweep};
use crate::domain::alert::{Alert, Condition};
use crate::domain::VmRef;
use crate::runbook::alerts::{AlertRoute, AlertSettings, Routed};
use crate::runbook::door::{Caller, DoorError};
use crate::runbook::sweep::{SweepReport, SweepRow, SweepStats};
use crate::runbook::{CheckOptions, Report};
use crate::store::{AlertClaim, AlertRow};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use serenity::all::{
    ChannelId, CreateAllowedMentions, CreateAttachment, CreateMessage, EditAttachments,
    EditMessage, MessageId,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A storm's VMs checked at the same time.
const STORM_CONCURRENCY: usize = 8;

/// What `serve` knows of alerts: the token, the routes, and the targets being gathered.
pub struct Alerts {
    token: Option<SecretString>,
    settings: AlertSettings,
    /// Per route, the VM targets received within the current gathering window.
    gathering: Mutex<HashMap<String, Vec<Pending>>>,
}

impl Alerts {
    pub fn new(token: Option<SecretString>, settings: AlertSettings) -> Alerts {
        Alerts {
            token: token.filter(|t| !t.expose_secret().trim().is_empty()),
            settings,
            gathering: Mutex::new(HashMap::new()),
        }
    }
}

/// One VM of one alert, to be posted.
#[derive(Clone)]
struct Pending {
    alert: Alert,
    vm: VmRef,
    route: AlertRoute,
}

/// Equal lengths and bytes, in a time that depends only on the expected secret's length.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(diff) == 0
}

/// The `token` query parameter, decoded.
fn token_of(uri: &Uri) -> Option<String> {
    let query = uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
}

/// `POST /alerts/azure-monitor`.
pub(super) async fn receive(State(served): State<Arc<Served>>, uri: Uri, body: Bytes) -> Response {
    let alerts = &served.alerts;
    let Some(expected) = &alerts.token else {
        return (
            StatusCode::NOT_FOUND,
            "alerts are off: set RDP_DOCTOR_ALERT_TOKEN\n",
        )
            .into_response();
    };
    let given = token_of(&uri).unwrap_or_default();
    if !same_secret(given.as_bytes(), expected.expose_secret().as_bytes()) {
        tracing::warn!("refused an alert without the right token");
        return (StatusCode::UNAUTHORIZED, "wrong or missing token\n").into_response();
    }
    let alert = match Alert::parse(&body) {
        Ok(alert) => alert,
        Err(e) => {
            tracing::warn!(error = %e, "refused an alert that is not the common alert schema");
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    let door = &served.bot.door;
    let mut checking = Vec::new();
    let mut ignored = Vec::new();
    for routed in alerts.settings.route(&alert.targets) {
        match routed {
            Routed::Vm { vm, route } => match door.may_check_alerted(&route.caller(), &vm) {
                Ok(()) => {
                    checking.push(json!({"vm": vm.name, "resource_group": vm.resource_group, "channel": route.channel}));
                    gather(
                        served.clone(),
                        Pending {
                            alert: alert.clone(),
                            vm,
                            route: route.clone(),
                        },
                    );
                }
                Err(e) => ignored.push(json!({"target": vm.id, "reason": e.to_string()})),
            },
            Routed::Ignored { target, reason } => {
                ignored.push(json!({"target": target, "reason": reason}));
            }
        }
    }
    tracing::info!(
        rule = %alert.rule,
        condition = ?alert.condition,
        checking = checking.len(),
        ignored = ignored.len(),
        "Azure Monitor alert received"
    );
    let status = if checking.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let answer = json!({"checking": checking, "ignored": ignored});
    (status, axum::Json(answer)).into_response()
}

/// Add a VM target to its channel's gathering; the first one of a window posts the lot when the
/// window ends.
fn gather(served: Arc<Served>, pending: Pending) {
    // Per route: two routes to one channel are two summaries, each naming its scope.
    let route = &pending.route;
    let channel = format!(
        "{}|{}|{}",
        route.channel,
        route.subscription_id,
        route.resource_group.as_deref().unwrap_or("")
    );
    let first = {
        let Ok(mut gathering) = served.alerts.gathering.lock() else {
            return;
        };
        let list = gathering.entry(channel.clone()).or_default();
        list.push(pending);
        list.len() == 1
    };
    if !first {
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(served.alerts.settings.gather).await;
        let batch = served
            .alerts
            .gathering
            .lock()
            .ok()
            .and_then(|mut g| g.remove(&channel))
            .unwrap_or_default();
        if batch.len() > served.alerts.settings.storm_threshold {
            storm(&served, batch).await;
        } else {
            let posts: Vec<_> = batch
                .into_iter()
                .map(|p| tokio::spawn(post_one(served.clone(), p)))
                .collect();
            for post in posts {
                let _ = post.await;
            }
        }
    });
}

/// Take the alert in the store, or learn that it is another replica's or already posted.
async fn claim(served: &Served, pending: &Pending, caller: &Caller) -> Option<AlertRow> {
    let wanted = match serde_json::to_string(&pending.alert) {
        Ok(w) => w,
        Err(e) => {
            super::internal_error(&e, "alert to JSON");
            return None;
        }
    };
    let claimed = served
        .bot
        .door
        .claim_alert(
            caller,
            &pending.alert.id,
            &pending.vm,
            &wanted,
            served.alerts.settings.duplicate_window,
        )
        .await;
    match claimed {
        Ok(AlertClaim::Mine(row)) => Some(row),
        Ok(AlertClaim::Busy) => {
            tracing::info!(rule = %pending.alert.rule, vm = %pending.vm.name, "another replica is posting this alert; it will post this notification too");
            None
        }
        Ok(AlertClaim::Duplicate) => {
            tracing::info!(rule = %pending.alert.rule, vm = %pending.vm.name, "this alert notification was posted already");
            None
        }
        Err(e) => {
            super::internal_error(&e, "claiming an alert");
            None
        }
    }
}

/// Renew the hold on an alert's row while `work` runs.
async fn holding<T>(served: &Served, key: &str, work: impl std::future::Future<Output = T>) -> T {
    let door = served.bot.door.clone();
    let key = key.to_string();
    let every = door.lease() / 3;
    let renewal = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if !matches!(door.renew_alert(&key).await, Ok(true)) {
                tracing::warn!("lost the hold on an alert while posting it");
                return;
            }
        }
    });
    let out = work.await;
    renewal.abort();
    out
}

/// One VM of one alert: claim it, check, post or edit, release; again while newer
/// notifications came meanwhile.
async fn post_one(served: Arc<Served>, pending: Pending) {
    let served = &*served;
    let caller = pending.route.caller();
    let Some(mut row) = claim(served, &pending, &caller).await else {
        return;
    };
    let channel = match pending.route.channel.parse::<u64>() {
        Ok(c) => ChannelId::new(c),
        Err(_) => return,
    };
    loop {
        let alert: Alert = match serde_json::from_str(&row.wanted) {
            Ok(a) => a,
            Err(e) => {
                super::internal_error(&e, "an alert's stored notification");
                return;
            }
        };
        let message = holding(served, &row.key, async {
            let checked = served
                .bot
                .door
                .check_alerted(&caller, &pending.vm, &CheckOptions::default(), &|_| {})
                .await;
            message_for(served, &alert, &pending.vm, checked)
        })
        .await;
        let existing = row
            .message_id
            .as_deref()
            .and_then(|m| m.parse::<u64>().ok())
            .map(MessageId::new);
        match post_or_edit(served, channel, existing, &message).await {
            Ok(id) => {
                if existing != Some(id) {
                    if let Err(e) = served
                        .bot
                        .door
                        .alert_posted(&row.key, &id.to_string())
                        .await
                    {
                        super::internal_error(&e, "recording an alert's message");
                    }
                }
            }
            Err(e) => {
                // Let go unposted: the next notification (Azure retries a failed webhook) posts it.
                tracing::error!(error = %e, rule = %alert.rule, "could not post an alert's report");
                if let Err(e) = served.bot.door.abandon_alert(&row.key).await {
                    super::internal_error(&e, "abandoning an alert");
                }
                return;
            }
        }
        match served.bot.door.release_alert(&row.key, &row.wanted).await {
            Ok(None) => return,
            Ok(Some(newer)) => row = newer,
            Err(e) => {
                super::internal_error(&e, "releasing an alert");
                return;
            }
        }
    }
}

/// A message: content, embeds, buttons, the screenshot.
struct Message {
    content: String,
    embeds: Vec<serenity::all::CreateEmbed>,
    components: Vec<serenity::all::CreateActionRow>,
    attachment: Option<(String, Vec<u8>)>,
}

/// The line above the report: the rule, severity and times, and what fired.
pub fn header(alert: &Alert) -> String {
    let mut line = match (alert.condition, alert.resolved_text()) {
        (Condition::Resolved, Some(resolved)) => format!(
            "✅ **Resolved: Azure Monitor alert {}** ({}, fired {}, resolved {resolved}). Checked again:",
            alert.rule,
            alert.severity,
            alert.fired_text()
        ),
        _ => format!(
            "🚨 **Azure Monitor alert {}** ({}, fired {})",
            alert.rule,
            alert.severity,
            alert.fired_text()
        ),
    };
    if let Some(context) = &alert.context {
        line.push('\n');
        line.push_str(context);
    }
    render::clip(&line, 1900)
}

fn message_for(
    served: &Served,
    alert: &Alert,
    vm: &VmRef,
    checked: Result<Report, DoorError>,
) -> Message {
    let catalog = served.bot.door.catalog();
    match checked {
        Ok(report) => {
            let summary = crate::domain::VmSummary::unlisted(report.vm.clone());
            let components =
                super::fixes::report_buttons(&served.bot, &summary, report.next_action);
            let rendered = render::report(catalog, &report);
            Message {
                content: header(alert),
                embeds: rendered.embeds,
                components,
                attachment: rendered.screenshot,
            }
        }
        Err(e) => {
            let text = if e.is_internal() {
                super::internal_error_text(&super::internal_error(&e, "alert check"))
            } else {
                e.to_string()
            };
            Message {
                content: header(alert),
                embeds: vec![render::notice(
                    &format!("Could not check {}", vm.name),
                    &text,
                )],
                components: Vec::new(),
                attachment: None,
            }
        }
    }
}

async fn post_or_edit(
    served: &Served,
    channel: ChannelId,
    existing: Option<MessageId>,
    message: &Message,
) -> serenity::Result<MessageId> {
    let http = &*served.http;
    if let Some(id) = existing {
        let mut edit = EditMessage::new()
            .content(message.content.clone())
            .embeds(message.embeds.clone())
            .components(message.components.clone())
            .allowed_mentions(CreateAllowedMentions::new());
        let mut attachments = EditAttachments::new();
        if let Some((name, bytes)) = &message.attachment {
            attachments = attachments.add(CreateAttachment::bytes(bytes.clone(), name.clone()));
        }
        edit = edit.attachments(attachments);
        match channel.edit_message(http, id, edit).await {
            Ok(m) => return Ok(m.id),
            // Deleted by someone: post it again.
            Err(serenity::Error::Http(e)) if e.status_code().map(|s| s.as_u16()) == Some(404) => {}
            Err(e) => return Err(e),
        }
    }
    let mut create = CreateMessage::new()
        .content(message.content.clone())
        .embeds(message.embeds.clone())
        .components(message.components.clone())
        .allowed_mentions(CreateAllowedMentions::new());
    if let Some((name, bytes)) = &message.attachment {
        create = create.add_file(CreateAttachment::bytes(bytes.clone(), name.clone()));
    }
    channel.send_message(http, create).await.map(|m| m.id)
}

/// One VM of a storm, checked.
async fn storm_row(served: Arc<Served>, caller: Caller, vm: VmRef) -> SweepRow {
    let checked = served
        .bot
        .door
        .check_alerted(&caller, &vm, &CheckOptions::default(), &|_| {})
        .await;
    match checked {
        Ok(report) => SweepRow::from_report(report),
        Err(e) => SweepRow::unchecked(vm, e.to_string()),
    }
}

/// More VMs than the storm threshold on one route: each claimed (a second delivery does not
/// count twice), checked, and one sweep-style summary posted for them all.
async fn storm(served: &Arc<Served>, batch: Vec<Pending>) {
    let Some(route) = batch.first().map(|p| p.route.clone()) else {
        return;
    };
    let caller = route.caller();
    let started = std::time::Instant::now();
    let before = served.bot.door.arm_requests();
    let mut claimed = Vec::new();
    for pending in batch {
        if let Some(row) = claim(served, &pending, &caller).await {
            claimed.push((pending, row));
        }
    }
    if claimed.is_empty() {
        return;
    }
    let mut rules: Vec<String> = claimed.iter().map(|(p, _)| p.alert.rule.clone()).collect();
    rules.sort();
    rules.dedup();
    let mut vms: Vec<VmRef> = claimed.iter().map(|(p, _)| p.vm.clone()).collect();
    // The first alone: a VM list it may read is the others' too.
    let first = vms.remove(0);
    let mut rows = vec![storm_row(served.clone(), caller.clone(), first).await];
    let rest: Vec<SweepRow> = futures::stream::iter(vms)
        .map(|vm| storm_row(served.clone(), caller.clone(), vm))
        .buffer_unordered(STORM_CONCURRENCY)
        .collect()
        .await;
    rows.extend(rest);
    rows.sort_by(|a, b| {
        (a.rank(), a.vm.name.to_lowercase()).cmp(&(b.rank(), b.vm.name.to_lowercase()))
    });
    let total = rows.len();
    let report = SweepReport {
        scope: format!("{} (alert storm)", route.scope_text()),
        vms: rows,
        total,
        skipped: Vec::new(),
        cancelled: false,
        stats: SweepStats {
            arm_requests: served.bot.door.arm_requests().saturating_sub(before),
            elapsed_ms: started.elapsed().as_millis() as u64,
            ..SweepStats::default()
        },
    };
    let (embed, table) = sweep::summary_with(
        &report,
        "\n`/rdp check VM` for a VM's full report and the fix.",
    );
    let content = render::clip(
        &format!(
            "🌩️ **Alert storm**: {total} VMs alerted within {} s ({}), one summary instead of {total} messages.",
            served.alerts.settings.gather.as_secs(),
            rules.join(", ")
        ),
        1900,
    );
    let message = Message {
        content,
        embeds: vec![embed],
        components: Vec::new(),
        attachment: table,
    };
    let Ok(channel) = route.channel.parse::<u64>().map(ChannelId::new) else {
        return;
    };
    if let Err(e) = post_or_edit(served, channel, None, &message).await {
        tracing::error!(error = %e, "could not post an alert storm's summary");
        for (_, row) in claimed {
            if let Err(e) = served.bot.door.abandon_alert(&row.key).await {
                super::internal_error(&e, "abandoning an alert");
            }
        }
        return;
    }
    for (_, row) in claimed {
        if let Err(e) = served.bot.door.release_alert(&row.key, &row.wanted).await {
            super::internal_error(&e, "releasing an alert");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_secret_compares_equal() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"s3cret!", b"s3cret"));
        assert!(!same_secret(b"S3cret", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }

    #[test]
    fn the_token_is_read_from_the_query_decoded() {
        let uri: Uri = "/alerts/azure-monitor?a=1&token=a%2Bb%20c".parse().unwrap();
        assert_eq!(token_of(&uri).as_deref(), Some("a+b c"));
        let uri: Uri = "/alerts/azure-monitor".parse().unwrap();
        assert_eq!(token_of(&uri), None);
    }
}
