//! The REST API: the router under `/api/v10`, the record of every request, and the `next_*`
//! helpers that consume it.

use super::commands::commands;
use super::gateway::bot_user;
use super::interactions::callback;
use super::messages::{channel_address, messages, webhook_address};
use super::multipart::{parse_body, Upload};
use super::schema::validate;
use super::{routes, FakeDiscord, Inner, Interaction, Recorded, World, APP_ID, OWNER_ID, TOKEN};
use anyhow::bail;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl FakeDiscord {
    /// Wait for the next recorded request matching `filter` that no earlier `next_*` consumed.
    pub async fn next_request(
        &self,
        what: &str,
        filter: impl Fn(&Recorded) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut world = self.inner.lock();
                if let Some((recorded, consumed)) = world
                    .requests
                    .iter_mut()
                    .find(|(r, consumed)| !*consumed && filter(r))
                {
                    *consumed = true;
                    return Ok(recorded.clone());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; requests so far:\n{}",
                    self.request_summary()
                );
            }
        }
    }

    /// The initial response: `POST /interactions/{id}/{token}/callback`.
    pub async fn callback(&self, i: &Interaction, timeout: Duration) -> anyhow::Result<Recorded> {
        let path = format!("/api/v10/interactions/{}/{}/callback", i.id, i.token);
        self.next_request(
            &format!("the callback of interaction {}", i.id),
            move |r| r.method == "POST" && r.path == path,
            timeout,
        )
        .await
    }

    /// The next `PATCH .../messages/@original` for this interaction's token.
    pub async fn next_edit(&self, i: &Interaction, timeout: Duration) -> anyhow::Result<Recorded> {
        let token = i.token.clone();
        self.next_request(
            &format!("an edit of the original response of interaction {}", i.id),
            move |r| {
                r.method == "PATCH" && r.route == routes::ORIGINAL && webhook_token(r) == token
            },
            timeout,
        )
        .await
    }

    /// The edits of this interaction's original response, skipped until one whose title `wanted`
    /// accepts ("Checking…" and prompts on the way are passed over).
    pub async fn edit_titled(
        &self,
        i: &Interaction,
        timeout: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let edit = self.next_edit(i, left).await?;
            if wanted(&edit.title()) {
                return Ok(edit);
            }
        }
    }

    /// The next follow-up (`POST /webhooks/{app}/{token}`) for this interaction.
    pub async fn next_followup(
        &self,
        i: &Interaction,
        timeout: Duration,
    ) -> anyhow::Result<Recorded> {
        let token = i.token.clone();
        self.next_request(
            &format!("a follow-up of interaction {}", i.id),
            move |r| r.method == "POST" && r.route == routes::FOLLOWUP && webhook_token(r) == token,
            timeout,
        )
        .await
    }

    /// The next `POST /channels/{id}/messages`.
    pub async fn next_channel_message(&self, timeout: Duration) -> anyhow::Result<Recorded> {
        self.next_request(
            "a channel message",
            |r| r.method == "POST" && r.route == routes::CHANNEL_MESSAGES,
            timeout,
        )
        .await
    }

    /// Every request, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner
            .lock()
            .requests
            .iter()
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Message-producing requests (callbacks, webhook and channel message writes) that no
    /// `next_*` call consumed.
    pub fn unconsumed(&self) -> Vec<Recorded> {
        self.inner
            .lock()
            .requests
            .iter()
            .filter(|(r, consumed)| !consumed && produces_message(r))
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Every schema violation and unknown route seen; empty when all was valid.
    pub fn schema_violations(&self) -> Vec<String> {
        self.inner.lock().violations.clone()
    }

    pub(super) fn request_summary(&self) -> String {
        let world = self.inner.lock();
        if world.requests.is_empty() {
            return "  (none)".to_string();
        }
        world
            .requests
            .iter()
            .map(|(r, consumed)| {
                format!(
                    "  {}{}",
                    if *consumed { "(consumed) " } else { "" },
                    r.summary()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn webhook_token(r: &Recorded) -> &str {
    r.path
        .strip_prefix("/api/v10/webhooks/")
        .and_then(|rest| rest.split('/').nth(1))
        .unwrap_or("")
}

fn produces_message(r: &Recorded) -> bool {
    r.method != "GET"
        && matches!(
            r.route,
            routes::CALLBACK
                | routes::FOLLOWUP
                | routes::ORIGINAL
                | routes::WEBHOOK_MESSAGE
                | routes::CHANNEL_MESSAGES
                | routes::CHANNEL_MESSAGE
        )
}

pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: Option<Value>,
}

impl Reply {
    pub(super) fn ok(body: Value) -> Reply {
        Reply {
            status: 200,
            body: Some(body),
        }
    }
    pub(super) fn no_content() -> Reply {
        Reply {
            status: 204,
            body: None,
        }
    }
    pub(super) fn error(status: u16, code: u64, message: &str) -> Reply {
        Reply {
            status,
            body: Some(json!({ "message": message, "code": code })),
        }
    }
}

pub(super) async fn rest_handler(
    AxumState(inner): AxumState<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = Instant::now();
    let path = uri.path().to_string();

    if let Some(response) = serve_attachment(&inner, &method, &path) {
        return response;
    }

    let mut violations = Vec::new();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (json, uploads) = parse_body(&content_type, &body, &mut violations).await;

    let segments: Vec<&str> = path
        .strip_prefix("/api/v10/")
        .map(|p| p.split('/').collect())
        .unwrap_or_default();
    let (route, needs_auth) = route_of(&method, &segments);

    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // `GET /gateway` answers whatever the token: a 401 there would send serenity to the real
    // gateway.discord.gg as its fallback.
    let authorised = match auth {
        _ if route == "/gateway" => true,
        Some(a) => a == format!("Bot {TOKEN}"),
        None => !needs_auth,
    };

    // Off the runtime's threads and outside the lock: the first request of a route compiles its
    // schema (tens of milliseconds), and a stalled runtime would hold up every other request,
    // whose `at` would then measure this fake rather than the bot.
    if authorised && !route.is_empty() {
        if let Some(body) = &json {
            let (method, body) = (method.clone(), body.clone());
            let checked =
                tokio::task::spawn_blocking(move || validate(&method, route, &body)).await;
            violations.extend(
                checked.unwrap_or_else(|e| vec![format!("schema validation panicked: {e}")]),
            );
        }
    }

    let (reply, delay) = {
        let mut world = inner.lock();
        let reply = if !authorised {
            Reply::error(401, 0, "401: Unauthorized")
        } else if route.is_empty() {
            violations.push(format!("unknown route: {method} {path}"));
            Reply::error(404, 0, "404: Not Found")
        } else {
            handle_route(
                &inner,
                &mut world,
                &method,
                &segments,
                json.as_ref(),
                &uploads,
                arrived,
                &mut violations,
            )
        };
        world.violations.extend(violations);
        let message_id = message_of(&world, route, &segments, &reply);
        world.requests.push((
            Recorded {
                method: method.to_string(),
                path: path.clone(),
                route,
                json,
                files: uploads
                    .into_iter()
                    .map(|u| (u.filename, u.content_type, u.bytes))
                    .collect(),
                at: arrived,
                status: reply.status,
                message_id,
            },
            false,
        ));
        let delay = if route == routes::CALLBACK {
            world.callback_delay
        } else {
            Duration::ZERO
        };
        (reply, delay)
    };
    inner.changed.notify_waiters();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match reply.body {
        Some(body) => (status, axum::Json(body)).into_response(),
        None => status.into_response(),
    }
}

/// The message a successful request created or changed (see [`Recorded::message_id`]).
fn message_of(world: &World, route: &str, segments: &[&str], reply: &Reply) -> Option<u64> {
    if reply.status >= 300 {
        return None;
    }
    if route == routes::CALLBACK {
        let token = segments.get(2)?;
        return world.interactions.get(*token)?.original;
    }
    if !matches!(
        route,
        routes::FOLLOWUP
            | routes::ORIGINAL
            | routes::WEBHOOK_MESSAGE
            | routes::CHANNEL_MESSAGES
            | routes::CHANNEL_MESSAGE
    ) {
        return None;
    }
    let id = reply.body.as_ref()?.get("id")?;
    id.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| id.as_u64())
}

fn serve_attachment(inner: &Inner, method: &Method, path: &str) -> Option<Response> {
    let rest = path.strip_prefix("/attachments/")?;
    if method != Method::GET {
        return None;
    }
    let id: u64 = rest.split('/').nth(1)?.parse().ok()?;
    let world = inner.lock();
    let (content_type, bytes) = world.attachments.get(&id)?;
    Some(
        (
            [(header::CONTENT_TYPE, content_type.clone())],
            bytes.clone(),
        )
            .into_response(),
    )
}

/// The spec template of a route the fake serves, and whether it needs the bot token.
fn route_of(method: &Method, segments: &[&str]) -> (&'static str, bool) {
    let m = method.as_str();
    match (m, segments) {
        ("GET", ["gateway"]) => ("/gateway", false),
        ("GET", ["gateway", "bot"]) => ("/gateway/bot", true),
        ("GET", ["oauth2", "applications", "@me"]) => ("/oauth2/applications/@me", true),
        ("GET", ["applications", "@me"]) => ("/applications/@me", true),
        ("GET", ["users", "@me"]) => ("/users/@me", true),
        ("GET" | "PUT", ["applications", _, "commands"]) => (routes::GLOBAL_COMMANDS, true),
        ("GET" | "PUT", ["applications", _, "guilds", _, "commands"]) => {
            (routes::GUILD_COMMANDS, true)
        }
        ("POST", ["interactions", _, _, "callback"]) => (routes::CALLBACK, false),
        ("POST", ["webhooks", _, _]) => (routes::FOLLOWUP, false),
        ("GET" | "PATCH" | "DELETE", ["webhooks", _, _, "messages", "@original"]) => {
            (routes::ORIGINAL, false)
        }
        ("GET" | "PATCH" | "DELETE", ["webhooks", _, _, "messages", _]) => {
            (routes::WEBHOOK_MESSAGE, false)
        }
        ("POST", ["channels", _, "messages"]) => (routes::CHANNEL_MESSAGES, true),
        ("GET" | "PATCH" | "DELETE", ["channels", _, "messages", _]) => {
            (routes::CHANNEL_MESSAGE, true)
        }
        ("POST", ["channels", _, "typing"]) => ("/channels/{channel_id}/typing", true),
        _ => ("", true),
    }
}

#[allow(clippy::too_many_arguments)]
fn handle_route(
    inner: &Inner,
    world: &mut World,
    method: &Method,
    segments: &[&str],
    json: Option<&Value>,
    uploads: &[Upload],
    arrived: Instant,
    violations: &mut Vec<String>,
) -> Reply {
    let empty = Value::Null;
    let body = json.unwrap_or(&empty);
    match (method.as_str(), segments) {
        ("GET", ["gateway"]) => Reply::ok(json!({ "url": inner.gateway_url })),
        ("GET", ["gateway", "bot"]) => Reply::ok(json!({
            "url": inner.gateway_url,
            "shards": 1,
            "session_start_limit": {
                "total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1
            },
        })),
        ("GET", ["oauth2", "applications", "@me"] | ["applications", "@me"]) => Reply::ok(json!({
            "id": APP_ID.to_string(),
            "name": "rdp-doctor",
            "icon": null,
            "description": "",
            "bot_public": false,
            "bot_require_code_grant": false,
            "owner": {
                "id": OWNER_ID.to_string(), "username": "owner", "discriminator": "0",
                "global_name": "Owner", "avatar": null, "public_flags": 0,
            },
            "verify_key": "0".repeat(64),
            "team": null,
            "flags": 0,
            "bot": bot_user(),
        })),
        ("GET", ["users", "@me"]) => Reply::ok(bot_user()),
        (_, ["applications", app, "commands"]) => commands(world, method, app, None, body),
        (_, ["applications", app, "guilds", guild, "commands"]) => {
            commands(world, method, app, Some(guild), body)
        }
        ("POST", ["interactions", id, token, "callback"]) => {
            let deadline = inner.options.initial_response_deadline;
            callback(
                world, id, token, body, uploads, arrived, deadline, violations,
            )
        }
        (_, ["webhooks", app, token, rest @ ..]) => {
            match webhook_address(world, app, token, rest) {
                Ok(to) => messages(world, method, to, body, uploads, violations),
                Err(refused) => refused,
            }
        }
        (_, ["channels", channel, "messages", rest @ ..]) => match channel_address(channel, rest) {
            Ok(to) => messages(world, method, to, body, uploads, violations),
            Err(refused) => refused,
        },
        ("POST", ["channels", _, "typing"]) => Reply::no_content(),
        _ => Reply::error(404, 0, "404: Not Found"),
    }
}
