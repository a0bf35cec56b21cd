//! A fake Discord for integration tests: the REST API under `/api/v10` and a gateway websocket,
//! both on loopback, holding a small stateful world (one guild, one channel, the bot's messages).
//!
//! The real serenity/poise stack talks to it through `HttpBuilder::proxy(url)`. Every request is
//! recorded; tests consume them in order with the `next_*` helpers, and every JSON body is checked
//! against the request schema of its route in the published OpenAPI spec
//! (`tests/fixtures/discord-openapi.json`).
//!
//! **Invariant:** this module knows Discord, not rdp-doctor: nothing here depends on the bot crate.
//!
//! What serenity 0.12.5 / poise 0.7.1 turned out to need, and how the fake answers:
//! - `Client::start` calls `GET /gateway` (not `/gateway/bot`) and falls back to the real
//!   `wss://gateway.discord.gg` if that fails, so `/gateway` answers whatever the token. The
//!   websocket is on its own port ([`FakeDiscord::gateway_url`]); serenity appends `?v=10`.
//! - Gateway: Hello (op 10) first; IDENTIFY (op 2, token sent as "Bot …", `compress: true` but
//!   plain text frames are accepted) gets READY with `v, user, guilds, session_id,
//!   resume_gateway_url, shard, application{id, flags}`; no GUILD_CREATE is needed. A wrong token
//!   closes with 4004, which makes `Client::start` return an error. Heartbeats get op 11. After a
//!   drop serenity reconnects to the same URL and sends RESUME (op 6) without waiting for Hello;
//!   the fake replays the dispatches after `seq`, then RESUMED.
//! - poise fetches `GET /oauth2/applications/@me` (owners) and `register_in_guild` PUTs the
//!   guild's commands; the answer must be full `Command` objects (`id`, `application_id`,
//!   `version`, …).
//! - Interactions need `attachment_size_limit`, `entitlements`, `locale`, `version`, `token`,
//!   `channel_id`; a message (for components) needs `interaction_metadata.user` if present.
//! - serenity sends new attachment ids as integers; Discord accepts them, the spec says string,
//!   so integer `id`/`*_id` values are validated as strings.
//! - Callbacks: 204 with no body. Webhook edits and follow-ups: the message object.
//!
//! Timing, for the benchmark and for tests about Discord's deadlines: an [`Interaction`]'s
//! `sent_at` is when its frame was queued, [`FakeDiscord::frame_written_at`] when it went out on
//! the websocket, and a [`Recorded`] request's `at` when its request arrived.
#![allow(dead_code)]

use anyhow::{anyhow, bail, Context as _};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State as AxumState};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The only bot token the fake accepts.
pub const TOKEN: &str = "fake-bot-token";
pub const APP_ID: u64 = 1_180_000_000_000_000_001;
pub const GUILD_ID: u64 = 1_180_000_000_000_000_002;
pub const CHANNEL_ID: u64 = 1_180_000_000_000_000_003;
/// Distinct from `APP_ID` on purpose, so mixing the two up fails here.
pub const BOT_USER_ID: u64 = 1_180_000_000_000_000_004;
/// Owner of the application, as `GET /oauth2/applications/@me` reports it.
pub const OWNER_ID: u64 = 1_180_000_000_000_000_005;
/// VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | READ_MESSAGE_HISTORY |
/// USE_APPLICATION_COMMANDS: what an ordinary member has in the channel.
pub const MEMBER_PERMISSIONS: u64 = 2_147_601_408;
/// What the bot itself may do in the channel (`app_permissions`).
pub const APP_PERMISSIONS: u64 = 2_147_601_408 | (1 << 13);

/// Spec templates of the routes the fake serves with a request body.
pub mod routes {
    pub const CALLBACK: &str = "/interactions/{interaction_id}/{interaction_token}/callback";
    pub const FOLLOWUP: &str = "/webhooks/{webhook_id}/{webhook_token}";
    pub const ORIGINAL: &str = "/webhooks/{webhook_id}/{webhook_token}/messages/@original";
    pub const WEBHOOK_MESSAGE: &str =
        "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}";
    pub const CHANNEL_MESSAGES: &str = "/channels/{channel_id}/messages";
    pub const CHANNEL_MESSAGE: &str = "/channels/{channel_id}/messages/{message_id}";
    pub const GUILD_COMMANDS: &str = "/applications/{application_id}/guilds/{guild_id}/commands";
    pub const GLOBAL_COMMANDS: &str = "/applications/{application_id}/commands";
}

/// A guild member issuing commands.
#[derive(Clone, Debug)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub roles: Vec<u64>,
}

impl User {
    pub fn new(id: u64, name: &str, roles: &[u64]) -> User {
        User {
            id,
            name: name.to_string(),
            roles: roles.to_vec(),
        }
    }
}

/// An interaction the fake dispatched.
#[derive(Clone, Debug)]
pub struct Interaction {
    pub id: u64,
    pub token: String,
    pub sent_at: Instant,
}

/// One request the bot made.
#[derive(Clone)]
pub struct Recorded {
    pub method: String,
    /// As received, without the query string: `/api/v10/...`.
    pub path: String,
    /// The spec's path template (see [`routes`]), or "" for routes the fake does not know.
    pub route: &'static str,
    /// The JSON body, or the `payload_json` part of a multipart body.
    pub json: Option<Value>,
    /// `(filename, content type, bytes)` of every uploaded file, in part order.
    pub files: Vec<(String, String, Vec<u8>)>,
    pub at: Instant,
    pub status: u16,
}

impl Recorded {
    /// The body, or `null`.
    pub fn body(&self) -> &Value {
        self.json.as_ref().unwrap_or(&Value::Null)
    }

    /// `content` of the message this request carries (in `data` for a callback).
    pub fn content(&self) -> Option<&str> {
        let body = self.body();
        body.get("content")
            .or_else(|| body.pointer("/data/content"))
            .and_then(Value::as_str)
    }

    /// `flags` of the message this request carries (in `data` for a callback), 0 when absent.
    pub fn flags(&self) -> u64 {
        let body = self.body();
        body.get("flags")
            .or_else(|| body.pointer("/data/flags"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    fn summary(&self) -> String {
        let mut body = self.json.as_ref().map(Value::to_string).unwrap_or_default();
        if body.len() > 300 {
            let mut cut = 300;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            body.push('…');
        }
        format!("{} {} -> {} {}", self.method, self.path, self.status, body)
    }
}

impl std::fmt::Debug for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files: Vec<String> = self
            .files
            .iter()
            .map(|(name, ct, bytes)| format!("{name} ({ct}, {} bytes)", bytes.len()))
            .collect();
        f.debug_struct("Recorded")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("status", &self.status)
            .field("json", &self.json)
            .field("files", &files)
            .finish()
    }
}

/// Options for [`FakeDiscord::start_with`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Sent in Hello; serenity heartbeats at this period.
    pub heartbeat_interval: Duration,
    /// An initial response (callback) arriving later than this after dispatch gets 404 Unknown
    /// interaction, as Discord's 3-second rule.
    pub initial_response_deadline: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            heartbeat_interval: Duration::from_millis(41_250),
            initial_response_deadline: Duration::from_secs(3),
        }
    }
}

pub struct FakeDiscord {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

struct Inner {
    state: Mutex<World>,
    changed: Notify,
    rest_url: String,
    gateway_url: String,
    options: Options,
}

/// What the fake knows; everything behind one lock.
struct World {
    next_id: u64,
    requests: Vec<(Recorded, bool)>,
    violations: Vec<String>,
    commands: Vec<Value>,
    commands_registered: bool,
    gateway: Gateway,
    /// By interaction token.
    interactions: HashMap<String, Pending>,
    messages: HashMap<u64, Value>,
    attachments: HashMap<u64, (String, Vec<u8>)>,
    callback_delay: Duration,
    conn_tasks: Vec<JoinHandle<()>>,
    /// Where the next interactions come from.
    origin: Origin,
}

/// Where an interaction comes from: a guild channel, or a direct message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Guild { guild: u64, channel: u64 },
    DirectMessage { channel: u64 },
}

impl Origin {
    /// The fake's own guild and channel.
    pub const HOME: Origin = Origin::Guild {
        guild: GUILD_ID,
        channel: CHANNEL_ID,
    };

    fn channel(self) -> u64 {
        match self {
            Origin::Guild { channel, .. } | Origin::DirectMessage { channel } => channel,
        }
    }
}

#[derive(Default)]
struct Gateway {
    session_id: Option<String>,
    seq: u64,
    /// Dispatches of the current session, for replay on RESUME.
    log: Vec<(u64, String)>,
    /// Every dispatch ever sent, across sessions, as sent.
    history: Vec<Value>,
    /// When each dispatch of the current session (by `seq`) was first written to a websocket.
    written: HashMap<u64, Instant>,
    /// The identified connection dispatches go to.
    conn: Option<(u64, mpsc::UnboundedSender<Outgoing>)>,
    next_conn: u64,
    identifies: usize,
    resumes: usize,
    ready_sent: bool,
}

enum Outgoing {
    Text(String),
    /// An op-0 frame and its `seq`, so the writer can note when it went out.
    Dispatch(u64, String),
    Close(u16, &'static str),
    /// Drop the TCP connection without a close frame.
    Abort,
}

struct Pending {
    id: u64,
    /// Interaction type: 2 command, 3 component, 4 autocomplete, 5 modal submit.
    kind: u8,
    channel_id: u64,
    dispatched: Instant,
    /// `seq` of the INTERACTION_CREATE frame.
    seq: u64,
    acknowledged: bool,
    /// Message `@original` refers to, once there is one.
    original: Option<u64>,
    /// For components: the message the component is on.
    source_message: Option<u64>,
    /// The invoking user, as in the payload.
    user: Value,
    /// The modal this interaction was answered with (callback type 9).
    modal: Option<Value>,
    expired: bool,
}

impl World {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

impl FakeDiscord {
    pub async fn start() -> FakeDiscord {
        FakeDiscord::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> FakeDiscord {
        let rest = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake Discord REST listener");
        let gateway = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake Discord gateway listener");
        let rest_url = format!("http://{}", rest.local_addr().expect("REST address"));
        let gateway_url = format!(
            "ws://{}/gateway",
            gateway.local_addr().expect("gateway address")
        );
        let inner = Arc::new(Inner {
            state: Mutex::new(World {
                next_id: 1_190_000_000_000_000_000,
                origin: Origin::HOME,
                requests: Vec::new(),
                violations: Vec::new(),
                commands: Vec::new(),
                commands_registered: false,
                gateway: Gateway::default(),
                interactions: HashMap::new(),
                messages: HashMap::new(),
                attachments: HashMap::new(),
                callback_delay: Duration::ZERO,
                conn_tasks: Vec::new(),
            }),
            changed: Notify::new(),
            rest_url,
            gateway_url,
            options,
        });
        let router = axum::Router::new()
            .fallback(rest_handler)
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(inner.clone());
        let rest_task = tokio::spawn(async move {
            let _ = axum::serve(rest, router).await;
        });
        let gw_inner = inner.clone();
        let gateway_task = tokio::spawn(async move {
            while let Ok((stream, _)) = gateway.accept().await {
                let conn = tokio::spawn(gateway_connection(gw_inner.clone(), stream));
                gw_inner.lock().conn_tasks.push(conn);
            }
        });
        FakeDiscord {
            inner,
            tasks: vec![rest_task, gateway_task],
        }
    }

    /// `DISCORD_API_URL`: what `HttpBuilder::proxy` needs.
    pub fn url(&self) -> String {
        self.inner.rest_url.clone()
    }

    /// The websocket URL `GET /gateway` hands out (a different port from [`Self::url`]).
    pub fn gateway_url(&self) -> String {
        self.inner.gateway_url.clone()
    }

    /// IDENTIFY received, READY sent, and commands registered.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_for("READY and command registration", timeout, |w| {
            w.gateway.ready_sent && w.commands_registered
        })
        .await
    }

    /// IDENTIFY received and READY sent (no command registration needed).
    pub async fn wait_connected(&self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_for("READY", timeout, |w| w.gateway.ready_sent)
            .await
    }

    /// Wait until a RESUME has been answered `n` times in total.
    pub async fn wait_resumed(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        self.wait_for("RESUME", timeout, move |w| w.gateway.resumes >= n)
            .await
    }

    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&World) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.inner.lock()) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; requests so far:\n{}",
                    self.request_summary()
                );
            }
        }
    }

    /// The last registered command set, as Discord returned it (with ids).
    pub fn registered_commands(&self) -> Vec<Value> {
        self.inner.lock().commands.clone()
    }

    /// Dispatch INTERACTION_CREATE for a chat-input command. `path` names the subcommand group
    /// and/or subcommand; `options` are the leaf options, e.g.
    /// `json!([{"name":"vm","type":3,"value":"web-01"}])`.
    pub async fn slash(
        &self,
        user: &User,
        command: &str,
        path: &[&str],
        options: Value,
    ) -> Interaction {
        self.command_interaction(user, command, path, options, 2)
    }

    /// Same as [`Self::slash`] but APPLICATION_COMMAND_AUTOCOMPLETE, with `focused: true` on the
    /// leaf option named `focused`.
    pub async fn autocomplete(
        &self,
        user: &User,
        command: &str,
        path: &[&str],
        mut options: Value,
        focused: &str,
    ) -> Interaction {
        let mut found = false;
        if let Some(list) = options.as_array_mut() {
            for option in list {
                if option.get("name").and_then(Value::as_str) == Some(focused) {
                    option["focused"] = Value::Bool(true);
                    found = true;
                }
            }
        }
        assert!(found, "no option named {focused} in {options}");
        self.command_interaction(user, command, path, options, 4)
    }

    /// `n` identical [`Self::slash`] interactions queued on the gateway back to back, under one
    /// lock, without waiting for any answer (a load test's burst).
    pub fn slash_burst(
        &self,
        user: &User,
        command: &str,
        path: &[&str],
        options: Value,
        n: usize,
    ) -> Vec<Interaction> {
        let mut world = self.inner.lock();
        (0..n)
            .map(|_| command_interaction(&mut world, user, command, path, options.clone(), 2))
            .collect()
    }

    /// Compile the request schema of every route the fake validates, now, instead of on each
    /// route's first request (compiling one takes tens of milliseconds).
    pub fn precompile_schemas() -> anyhow::Result<()> {
        for (method, route) in [
            (Method::POST, routes::CALLBACK),
            (Method::POST, routes::FOLLOWUP),
            (Method::PATCH, routes::ORIGINAL),
            (Method::PATCH, routes::WEBHOOK_MESSAGE),
            (Method::POST, routes::CHANNEL_MESSAGES),
            (Method::PATCH, routes::CHANNEL_MESSAGE),
            (Method::PUT, routes::GUILD_COMMANDS),
            (Method::PUT, routes::GLOBAL_COMMANDS),
        ] {
            validator(&method, route)?;
        }
        Ok(())
    }

    /// When the INTERACTION_CREATE frame of `i` was written to the bot's websocket (its
    /// [`Interaction::sent_at`] is when it was queued), if it was in this gateway session.
    pub fn frame_written_at(&self, i: &Interaction) -> Option<Instant> {
        let world = self.inner.lock();
        let seq = world.interactions.get(&i.token)?.seq;
        world.gateway.written.get(&seq).copied()
    }

    fn command_interaction(
        &self,
        user: &User,
        command: &str,
        path: &[&str],
        options: Value,
        kind: u8,
    ) -> Interaction {
        command_interaction(&mut self.inner.lock(), user, command, path, options, kind)
    }

    /// A MESSAGE_COMPONENT interaction (button, or select menu when `values` is not empty) on a
    /// message the bot sent.
    pub async fn component(
        &self,
        user: &User,
        message_id: u64,
        custom_id: &str,
        values: &[&str],
    ) -> Interaction {
        let mut world = self.inner.lock();
        let message = world
            .messages
            .get(&message_id)
            .cloned()
            .unwrap_or_else(|| panic!("the bot sent no message {message_id}"));
        let component_type = find_component(&message, custom_id)
            .and_then(|c| c.get("type").and_then(Value::as_u64))
            .unwrap_or(if values.is_empty() { 2 } else { 3 });
        let mut data = json!({ "custom_id": custom_id, "component_type": component_type });
        if component_type != 2 {
            data["values"] = json!(values);
        }
        let id = world.new_id();
        let token = interaction_token(id);
        let payload = interaction_payload(id, &token, 3, user, data, Some(message), world.origin);
        register_and_dispatch(&mut world, id, token, 3, Some(message_id), payload)
    }

    /// A MODAL_SUBMIT interaction for the modal `opened_by` was answered with (callback type 9),
    /// with `fields` as `(text input custom_id, value)`. Panics if there was no modal or it has no
    /// such input.
    pub async fn modal_submit(
        &self,
        user: &User,
        opened_by: &Interaction,
        fields: &[(&str, &str)],
    ) -> Interaction {
        let mut world = self.inner.lock();
        let (modal, source) = match world.interactions.get(&opened_by.token) {
            Some(p) => (p.modal.clone(), p.source_message),
            None => (None, None),
        };
        let modal = modal.unwrap_or_else(|| {
            panic!("interaction {} was not answered with a modal", opened_by.id)
        });
        let rows: Vec<Value> = fields
            .iter()
            .map(|(custom_id, value)| {
                assert!(
                    find_component(&modal, custom_id).is_some(),
                    "the modal has no input {custom_id}: {modal}"
                );
                json!({
                    "type": 1,
                    "components": [{ "type": 4, "custom_id": custom_id, "value": value }],
                })
            })
            .collect();
        let data = json!({ "custom_id": modal["custom_id"], "components": rows });
        let message = source.and_then(|id| world.messages.get(&id).cloned());
        let id = world.new_id();
        let token = interaction_token(id);
        let payload = interaction_payload(id, &token, 5, user, data, message, world.origin);
        register_and_dispatch(&mut world, id, token, 5, source, payload)
    }

    /// Interactions from now on come from `origin` (another guild, another channel, a direct
    /// message); [`Origin::HOME`] restores the fake's own channel.
    pub fn set_origin(&self, origin: Origin) {
        self.inner.lock().origin = origin;
    }

    /// Dispatch any gateway event (op 0) to the bot.
    pub async fn dispatch(&self, event: &str, data: Value) {
        dispatch(&mut self.inner.lock(), event, data);
    }

    /// Every gateway dispatch (op 0 frames: `t`, `s`, `d`) sent so far, across sessions.
    pub fn dispatched(&self) -> Vec<Value> {
        self.inner.lock().gateway.history.clone()
    }

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

    /// The original response message as it stands now, after all edits.
    pub fn original(&self, i: &Interaction) -> Option<Value> {
        let world = self.inner.lock();
        let id = world.interactions.get(&i.token)?.original?;
        world.messages.get(&id).cloned()
    }

    /// The id of the newest message the bot created that still exists.
    pub fn last_message_id(&self) -> Option<u64> {
        self.inner.lock().messages.keys().max().copied()
    }

    /// A message the bot created (and that was not deleted), as it stands now.
    pub fn message(&self, id: u64) -> Option<Value> {
        self.inner.lock().messages.get(&id).cloned()
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

    /// Close the current gateway connection abruptly (no close frame). The bot should
    /// reconnect and RESUME; dispatches sent meanwhile are replayed.
    pub async fn drop_gateway(&self) {
        if let Some((_, tx)) = self.inner.lock().gateway.conn.take() {
            let _ = tx.send(Outgoing::Abort);
        }
    }

    /// Close the current gateway connection with a close frame carrying `code`.
    pub async fn close_gateway(&self, code: u16) {
        if let Some((_, tx)) = self.inner.lock().gateway.conn.take() {
            let _ = tx.send(Outgoing::Close(code, "closed by the test"));
        }
    }

    pub fn identifies(&self) -> usize {
        self.inner.lock().gateway.identifies
    }

    pub fn resumes(&self) -> usize {
        self.inner.lock().gateway.resumes
    }

    /// Hold every interaction callback response this long (the request is recorded and takes
    /// effect on arrival). The 3-second rule still counts from dispatch to arrival.
    pub fn set_callback_delay(&self, delay: Duration) {
        self.inner.lock().callback_delay = delay;
    }

    /// From now on the interaction's token is dead: its callback answers 404 Unknown interaction
    /// and its webhook routes 401 Invalid Webhook Token, as after 15 minutes.
    pub fn expire_token(&self, i: &Interaction) {
        if let Some(p) = self.inner.lock().interactions.get_mut(&i.token) {
            p.expired = true;
        }
    }

    fn request_summary(&self) -> String {
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

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Ok(mut world) = self.inner.state.lock() {
            for task in world.conn_tasks.drain(..) {
                task.abort();
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, World> {
        // A panicking test thread must not hide the state from the teardown checks.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn interaction_token(id: u64) -> String {
    format!("aW50ZXJhY3Rpb24.{id:x}.fake-interaction-token")
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

/// INTERACTION_CREATE for a chat-input command, dispatched on the gateway.
fn command_interaction(
    world: &mut World,
    user: &User,
    command: &str,
    path: &[&str],
    options: Value,
    kind: u8,
) -> Interaction {
    let registered = world
        .commands
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(command))
        .cloned()
        .unwrap_or_else(|| {
            let names: Vec<&str> = world
                .commands
                .iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect();
            panic!("command /{command} is not registered (registered: {names:?})")
        });
    let mut data = json!({
        "id": registered["id"],
        "name": command,
        "type": 1,
        "options": nest_options(path, options),
    });
    // Only guild commands carry the guild id in the interaction data.
    if !registered["guild_id"].is_null() {
        data["guild_id"] = registered["guild_id"].clone();
    }
    let id = world.new_id();
    let token = interaction_token(id);
    let payload = interaction_payload(id, &token, kind, user, data, None, world.origin);
    register_and_dispatch(world, id, token, kind, None, payload)
}

fn register_and_dispatch(
    world: &mut World,
    id: u64,
    token: String,
    kind: u8,
    source_message: Option<u64>,
    payload: Value,
) -> Interaction {
    let sent_at = Instant::now();
    // `dispatch` below gives the frame the next sequence number.
    let seq = world.gateway.seq + 1;
    world.interactions.insert(
        token.clone(),
        Pending {
            id,
            kind,
            channel_id: world.origin.channel(),
            dispatched: sent_at,
            seq,
            acknowledged: false,
            original: None,
            source_message,
            user: if payload["member"].is_null() {
                payload["user"].clone()
            } else {
                payload["member"]["user"].clone()
            },
            modal: None,
            expired: false,
        },
    );
    dispatch(world, "INTERACTION_CREATE", payload);
    Interaction { id, token, sent_at }
}

/// Wrap leaf options in the subcommand (group) options named by `path`.
fn nest_options(path: &[&str], options: Value) -> Value {
    let mut inner = options;
    for (depth, name) in path.iter().enumerate().rev() {
        // With two names the first is a group (2); the last is always a subcommand (1).
        let kind = if depth + 1 == path.len() { 1 } else { 2 };
        inner = json!([{ "name": name, "type": kind, "options": inner }]);
    }
    inner
}

fn find_component<'a>(message: &'a Value, custom_id: &str) -> Option<&'a Value> {
    fn walk<'a>(v: &'a Value, custom_id: &str) -> Option<&'a Value> {
        if v.get("custom_id").and_then(Value::as_str) == Some(custom_id) {
            return Some(v);
        }
        v.get("components")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find_map(|c| walk(c, custom_id)))
    }
    walk(message, custom_id)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "2026-01-01T00:00:00Z".to_string())
}

fn bot_user() -> Value {
    json!({
        "id": BOT_USER_ID.to_string(),
        "username": "rdp-doctor",
        "discriminator": "0",
        "global_name": null,
        "avatar": null,
        "bot": true,
        "public_flags": 0,
        "flags": 0,
        "mfa_enabled": true,
        "verified": true,
    })
}

fn member_user(user: &User) -> Value {
    json!({
        "id": user.id.to_string(),
        "username": user.name,
        "discriminator": "0",
        "global_name": user.name,
        "avatar": null,
        "public_flags": 0,
    })
}

/// INTERACTION_CREATE data, with every field serenity 0.12's `Interaction` requires.
fn interaction_payload(
    id: u64,
    token: &str,
    kind: u8,
    user: &User,
    data: Value,
    message: Option<Value>,
    origin: Origin,
) -> Value {
    let roles: Vec<String> = user.roles.iter().map(u64::to_string).collect();
    let channel = origin.channel().to_string();
    let mut payload = json!({
        "id": id.to_string(),
        "application_id": APP_ID.to_string(),
        "type": kind,
        "data": data,
        "channel_id": channel,
        "token": token,
        "version": 1,
        "app_permissions": APP_PERMISSIONS.to_string(),
        "locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": 26_214_400,
    });
    match origin {
        Origin::Guild { guild, .. } => {
            let guild = guild.to_string();
            payload["guild_id"] = json!(guild);
            payload["guild"] = json!({ "id": guild, "locale": "en-US", "features": [] });
            payload["channel"] = json!({
                "id": channel,
                "type": 0,
                "name": "ops",
                "guild_id": guild,
                "permissions": MEMBER_PERMISSIONS.to_string(),
            });
            payload["member"] = json!({
                "user": member_user(user),
                "nick": null,
                "avatar": null,
                "roles": roles,
                "joined_at": "2024-01-01T00:00:00.000000+00:00",
                "premium_since": null,
                "deaf": false,
                "mute": false,
                "flags": 0,
                "pending": false,
                "permissions": MEMBER_PERMISSIONS.to_string(),
                "communication_disabled_until": null,
            });
            payload["guild_locale"] = json!("en-US");
            payload["authorizing_integration_owners"] = json!({ "0": guild });
            payload["context"] = json!(0);
        }
        Origin::DirectMessage { .. } => {
            // A DM: the user instead of a member, a DM channel, no guild.
            payload["user"] = member_user(user);
            payload["channel"] = json!({
                "id": channel,
                "type": 1,
                "recipients": [member_user(user)],
            });
            payload["authorizing_integration_owners"] = json!({ "1": user.id.to_string() });
            payload["context"] = json!(1);
        }
    }
    if let Some(message) = message {
        payload["message"] = message;
    }
    payload
}

fn ready_payload(inner: &Inner, session_id: &str) -> Value {
    json!({
        "v": 10,
        "user": bot_user(),
        "user_settings": {},
        "private_channels": [],
        "guilds": [{ "id": GUILD_ID.to_string(), "unavailable": true }],
        "session_id": session_id,
        "resume_gateway_url": inner.gateway_url,
        "shard": [0, 1],
        "application": { "id": APP_ID.to_string(), "flags": 0 },
    })
}

/// Send an op-0 dispatch to the identified connection (or only log it while there is none, to
/// be replayed on RESUME).
fn dispatch(world: &mut World, event: &str, data: Value) {
    let gw = &mut world.gateway;
    gw.seq += 1;
    let frame = json!({ "op": 0, "t": event, "s": gw.seq, "d": data });
    gw.history.push(frame.clone());
    let frame = frame.to_string();
    gw.log.push((gw.seq, frame.clone()));
    if let Some((_, tx)) = &gw.conn {
        let _ = tx.send(Outgoing::Dispatch(gw.seq, frame));
    }
}

async fn gateway_connection(inner: Arc<Inner>, stream: TcpStream) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn_id = {
        let mut world = inner.lock();
        world.gateway.next_conn += 1;
        world.gateway.next_conn
    };
    let hello = json!({
        "op": 10,
        "d": { "heartbeat_interval": inner.options.heartbeat_interval.as_millis() as u64 },
    });
    if sink.send(WsMessage::Text(hello.to_string())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            incoming = source.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    handle_gateway_op(&inner, conn_id, &tx, &text);
                }
                Some(Ok(WsMessage::Binary(_))) => {
                    let _ = tx.send(Outgoing::Close(4002, "Error while decoding payload."));
                }
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            outgoing = rx.recv() => match outgoing {
                Some(Outgoing::Text(text)) => {
                    if sink.send(WsMessage::Text(text)).await.is_err() {
                        break;
                    }
                }
                Some(Outgoing::Dispatch(seq, text)) => {
                    if sink.send(WsMessage::Text(text)).await.is_err() {
                        break;
                    }
                    let written = Instant::now();
                    inner.lock().gateway.written.entry(seq).or_insert(written);
                }
                Some(Outgoing::Close(code, reason)) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = sink.send(WsMessage::Close(Some(frame))).await;
                    break;
                }
                Some(Outgoing::Abort) | None => break,
            },
        }
    }
    let mut world = inner.lock();
    if matches!(&world.gateway.conn, Some((id, _)) if *id == conn_id) {
        world.gateway.conn = None;
    }
}

fn token_ok(d: &Value) -> bool {
    let token = d.get("token").and_then(Value::as_str).unwrap_or("");
    token.strip_prefix("Bot ").unwrap_or(token) == TOKEN
}

fn handle_gateway_op(
    inner: &Inner,
    conn_id: u64,
    tx: &mpsc::UnboundedSender<Outgoing>,
    text: &str,
) {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        let _ = tx.send(Outgoing::Close(4002, "Error while decoding payload."));
        return;
    };
    let d = frame.get("d").cloned().unwrap_or(Value::Null);
    let mut world = inner.lock();
    match frame.get("op").and_then(Value::as_u64) {
        Some(1) => {
            let _ = tx.send(Outgoing::Text(json!({ "op": 11 }).to_string()));
        }
        Some(2) => {
            if !token_ok(&d) {
                let _ = tx.send(Outgoing::Close(4004, "Authentication failed."));
                return;
            }
            let session_id = format!("fake-session-{conn_id}");
            let gw = &mut world.gateway;
            gw.identifies += 1;
            gw.session_id = Some(session_id.clone());
            gw.seq = 0;
            gw.log.clear();
            gw.written.clear();
            gw.conn = Some((conn_id, tx.clone()));
            let ready = ready_payload(inner, &session_id);
            dispatch(&mut world, "READY", ready);
            world.gateway.ready_sent = true;
            inner.changed.notify_waiters();
        }
        Some(6) => {
            if !token_ok(&d) {
                let _ = tx.send(Outgoing::Close(4004, "Authentication failed."));
                return;
            }
            let session = d.get("session_id").and_then(Value::as_str);
            if session.is_none() || session != world.gateway.session_id.as_deref() {
                let _ = tx.send(Outgoing::Text(json!({ "op": 9, "d": false }).to_string()));
                return;
            }
            let seen = d.get("seq").and_then(Value::as_u64).unwrap_or(0);
            let gw = &mut world.gateway;
            gw.resumes += 1;
            gw.conn = Some((conn_id, tx.clone()));
            for (seq, frame) in gw.log.iter().filter(|(s, _)| *s > seen) {
                let _ = tx.send(Outgoing::Dispatch(*seq, frame.clone()));
            }
            dispatch(&mut world, "RESUMED", json!({}));
            inner.changed.notify_waiters();
        }
        // Presence updates, member chunking and the like need no answer here.
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// REST

struct Reply {
    status: u16,
    body: Option<Value>,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply {
            status: 200,
            body: Some(body),
        }
    }
    fn no_content() -> Reply {
        Reply {
            status: 204,
            body: None,
        }
    }
    fn error(status: u16, code: u64, message: &str) -> Reply {
        Reply {
            status,
            body: Some(json!({ "message": message, "code": code })),
        }
    }
}

struct Upload {
    /// `n` of a `files[n]` part.
    index: Option<u64>,
    filename: String,
    content_type: String,
    bytes: Vec<u8>,
}

async fn rest_handler(
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
    let (json, uploads) = parse_body(&content_type, &body, &mut violations);

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
            webhook(world, method, app, token, rest, body, uploads, violations)
        }
        (_, ["channels", channel, "messages", rest @ ..]) => {
            channel_messages(world, method, channel, rest, body, uploads, violations)
        }
        ("POST", ["channels", _, "typing"]) => Reply::no_content(),
        _ => Reply::error(404, 0, "404: Not Found"),
    }
}

fn commands(
    world: &mut World,
    method: &Method,
    app: &str,
    guild: Option<&str>,
    body: &Value,
) -> Reply {
    if app != APP_ID.to_string() {
        return Reply::error(403, 50001, "Missing Access");
    }
    if let Some(guild) = guild {
        if guild != GUILD_ID.to_string() {
            return Reply::error(403, 50001, "Missing Access");
        }
    }
    if method == Method::GET {
        return Reply::ok(Value::Array(world.commands.clone()));
    }
    let Some(list) = body.as_array() else {
        return Reply::error(400, 50035, "Invalid Form Body");
    };
    let mut registered = Vec::new();
    for command in list {
        let name = command.get("name").and_then(Value::as_str).unwrap_or("");
        let existing_id = world
            .commands
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|c| c.get("id").cloned());
        let id = match existing_id {
            Some(id) => id,
            None => Value::String(world.new_id().to_string()),
        };
        let mut c = command.clone();
        c["id"] = id;
        c["application_id"] = Value::String(APP_ID.to_string());
        c["version"] = Value::String(world.new_id().to_string());
        c["guild_id"] = guild.map_or(Value::Null, |g| Value::String(g.to_string()));
        for (key, default) in [
            ("type", json!(1)),
            ("description", json!("")),
            ("options", json!([])),
            ("default_member_permissions", Value::Null),
            ("nsfw", json!(false)),
        ] {
            if c.get(key).is_none() {
                c[key] = default;
            }
        }
        registered.push(c);
    }
    world.commands = registered.clone();
    world.commands_registered = true;
    Reply::ok(Value::Array(registered))
}

#[allow(clippy::too_many_arguments)]
fn callback(
    world: &mut World,
    id: &str,
    token: &str,
    body: &Value,
    uploads: &[Upload],
    arrived: Instant,
    deadline: Duration,
    violations: &mut Vec<String>,
) -> Reply {
    let unknown = || Reply::error(404, 10062, "Unknown interaction");
    let Some(pending) = world.interactions.get(token) else {
        return unknown();
    };
    if pending.id.to_string() != id
        || pending.expired
        || arrived.duration_since(pending.dispatched) > deadline
    {
        return unknown();
    }
    if pending.acknowledged {
        return Reply::error(400, 40060, "Interaction has already been acknowledged.");
    }
    let (kind, source, channel_id) = (pending.kind, pending.source_message, pending.channel_id);
    let mut metadata = json!({
        "id": id,
        "type": kind,
        "user": pending.user,
        "authorizing_integration_owners": { "0": GUILD_ID.to_string() },
    });
    if let Some(source) = source {
        metadata["interacted_message_id"] = json!(source.to_string());
    }
    if kind == 5 {
        // serenity requires the metadata of the interaction that opened the modal.
        metadata["triggering_interaction_metadata"] = json!({
            "id": id,
            "type": 2,
            "user": pending.user,
            "authorizing_integration_owners": { "0": GUILD_ID.to_string() },
        });
    }
    let response_type = body.get("type").and_then(Value::as_u64).unwrap_or(0);
    let data = body.get("data").cloned().unwrap_or_else(|| json!({}));
    let allowed = match response_type {
        4 | 5 => matches!(kind, 2 | 3 | 5),
        // A modal must be the first response, and never answers a modal submit.
        9 => kind == 2 || kind == 3,
        6 | 7 => kind == 3 || (kind == 5 && source.is_some()),
        8 => kind == 4,
        _ => false,
    };
    if !allowed {
        return Reply {
            status: 400,
            body: Some(json!({
                "message": "Invalid Form Body",
                "code": 50035,
                "errors": { "type": { "_errors": [{
                    "code": "INTERACTION_RESPONSE_TYPE_INVALID",
                    "message": format!("Response type {response_type} is not valid for interaction type {kind}")
                }] } }
            })),
        };
    }
    let original = match response_type {
        4 => {
            let mut message = new_message(world, channel_id, &data, uploads, 20, violations);
            message["interaction_metadata"] = metadata;
            Some(store_message(world, message))
        }
        5 => {
            let ephemeral = data.get("flags").and_then(Value::as_u64).unwrap_or(0) & 64;
            let mut message = new_message(world, channel_id, &json!({}), &[], 20, violations);
            message["flags"] = json!(ephemeral | 128);
            message["interaction_metadata"] = metadata;
            Some(store_message(world, message))
        }
        6 => source,
        7 => {
            if let Some(source) = source {
                edit_message(world, source, &data, uploads, violations);
            }
            source
        }
        _ => None,
    };
    if let Some(pending) = world.interactions.get_mut(token) {
        if response_type == 9 {
            pending.modal = Some(data);
        }
        pending.acknowledged = true;
        if original.is_some() {
            pending.original = original;
        }
    }
    Reply::no_content()
}

#[allow(clippy::too_many_arguments)]
fn webhook(
    world: &mut World,
    method: &Method,
    app: &str,
    token: &str,
    rest: &[&str],
    body: &Value,
    uploads: &[Upload],
    violations: &mut Vec<String>,
) -> Reply {
    if app != APP_ID.to_string() {
        return Reply::error(404, 10015, "Unknown Webhook");
    }
    let Some(pending) = world.interactions.get(token) else {
        return Reply::error(401, 50027, "Invalid Webhook Token");
    };
    if pending.expired {
        return Reply::error(401, 50027, "Invalid Webhook Token");
    }
    if !pending.acknowledged {
        return Reply::error(404, 10015, "Unknown Webhook");
    }
    let (original, channel_id) = (pending.original, pending.channel_id);
    let message_id = match rest {
        [] => None,
        ["messages", "@original"] => match original {
            Some(id) => Some(id),
            None => return Reply::error(404, 10008, "Unknown Message"),
        },
        ["messages", id] => match id.parse::<u64>() {
            Ok(id) => Some(id),
            Err(_) => return Reply::error(404, 10008, "Unknown Message"),
        },
        _ => return Reply::error(404, 0, "404: Not Found"),
    };
    match (method.as_str(), message_id) {
        ("POST", None) => {
            let message = new_message(world, channel_id, body, uploads, 0, violations);
            let id = store_message(world, message);
            Reply::ok(world.messages[&id].clone())
        }
        ("GET", Some(id)) => match world.messages.get(&id) {
            Some(m) => Reply::ok(m.clone()),
            None => Reply::error(404, 10008, "Unknown Message"),
        },
        ("PATCH", Some(id)) => match edit_message(world, id, body, uploads, violations) {
            Some(m) => Reply::ok(m),
            None => Reply::error(404, 10008, "Unknown Message"),
        },
        ("DELETE", Some(id)) => match world.messages.remove(&id) {
            Some(_) => Reply::no_content(),
            None => Reply::error(404, 10008, "Unknown Message"),
        },
        _ => Reply::error(405, 0, "405: Method Not Allowed"),
    }
}

fn channel_messages(
    world: &mut World,
    method: &Method,
    channel: &str,
    rest: &[&str],
    body: &Value,
    uploads: &[Upload],
    violations: &mut Vec<String>,
) -> Reply {
    if channel != CHANNEL_ID.to_string() {
        return Reply::error(404, 10003, "Unknown Channel");
    }
    let message_id = match rest {
        [] => None,
        [id] => match id.parse::<u64>() {
            Ok(id) => Some(id),
            Err(_) => return Reply::error(404, 10008, "Unknown Message"),
        },
        _ => return Reply::error(404, 0, "404: Not Found"),
    };
    match (method.as_str(), message_id) {
        ("POST", None) => {
            let mut message = new_message(world, CHANNEL_ID, body, uploads, 0, violations);
            message["webhook_id"] = Value::Null;
            message["guild_id"] = Value::String(GUILD_ID.to_string());
            let id = store_message(world, message);
            Reply::ok(world.messages[&id].clone())
        }
        ("GET", Some(id)) => match world.messages.get(&id) {
            Some(m) => Reply::ok(m.clone()),
            None => Reply::error(404, 10008, "Unknown Message"),
        },
        ("PATCH", Some(id)) => match edit_message(world, id, body, uploads, violations) {
            Some(m) => Reply::ok(m),
            None => Reply::error(404, 10008, "Unknown Message"),
        },
        ("DELETE", Some(id)) => match world.messages.remove(&id) {
            Some(_) => Reply::no_content(),
            None => Reply::error(404, 10008, "Unknown Message"),
        },
        _ => Reply::error(405, 0, "405: Method Not Allowed"),
    }
}

/// A message object as Discord returns it, with every field serenity's `Message` requires.
fn new_message(
    world: &mut World,
    channel_id: u64,
    body: &Value,
    uploads: &[Upload],
    kind: u8,
    violations: &mut Vec<String>,
) -> Value {
    let id = world.new_id();
    let attachments = resolve_attachments(world, channel_id, &[], body, uploads, violations);
    json!({
        "id": id.to_string(),
        "channel_id": channel_id.to_string(),
        "author": bot_user(),
        "content": body.get("content").and_then(Value::as_str).unwrap_or(""),
        "timestamp": now_rfc3339(),
        "edited_timestamp": null,
        "tts": body.get("tts").and_then(Value::as_bool).unwrap_or(false),
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": attachments,
        "embeds": body.get("embeds").cloned().filter(|e| !e.is_null()).unwrap_or_else(|| json!([])),
        "components": body.get("components").cloned().filter(|c| !c.is_null()).unwrap_or_else(|| json!([])),
        "pinned": false,
        "type": kind,
        "flags": body.get("flags").and_then(Value::as_u64).unwrap_or(0),
        "webhook_id": APP_ID.to_string(),
        "application_id": APP_ID.to_string(),
    })
}

fn store_message(world: &mut World, message: Value) -> u64 {
    let id = message["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    world.messages.insert(id, message);
    id
}

/// Apply a PATCH (or an UPDATE_MESSAGE callback) to a stored message; the result, if it exists.
fn edit_message(
    world: &mut World,
    id: u64,
    body: &Value,
    uploads: &[Upload],
    violations: &mut Vec<String>,
) -> Option<Value> {
    let message = world.messages.get(&id)?.clone();
    let channel_id = message["channel_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CHANNEL_ID);
    let existing = message["attachments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let attachments = resolve_attachments(world, channel_id, &existing, body, uploads, violations);
    let mut message = message;
    let flags = message["flags"].as_u64().unwrap_or(0);
    if flags & 128 != 0 {
        // Completing a deferred response: the "thinking" state ends, ephemerality stays.
        message["flags"] = json!(flags & !128);
    } else {
        message["edited_timestamp"] = json!(now_rfc3339());
    }
    for key in ["content", "embeds", "components"] {
        if let Some(value) = body.get(key) {
            message[key] = match (key, value) {
                ("content", Value::Null) => json!(""),
                (_, Value::Null) => json!([]),
                _ => value.clone(),
            };
        }
    }
    message["attachments"] = Value::Array(attachments);
    world.messages.insert(id, message.clone());
    Some(message)
}

/// The attachment list after a create/edit: `attachments` in the body names the ones to keep (by
/// id) and the new ones (by the `n` of their `files[n]` part); uploads it does not name are added.
fn resolve_attachments(
    world: &mut World,
    channel_id: u64,
    existing: &[Value],
    body: &Value,
    uploads: &[Upload],
    violations: &mut Vec<String>,
) -> Vec<Value> {
    let mut used = vec![false; uploads.len()];
    let mut result = Vec::new();
    match body.get("attachments").and_then(Value::as_array) {
        Some(listed) => {
            for entry in listed {
                let index = entry.get("id").and_then(|v| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                });
                let old = existing.iter().find(|a| {
                    a.get("id")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse().ok())
                        == index
                });
                if let Some(old) = old {
                    result.push(old.clone());
                    continue;
                }
                let upload = uploads
                    .iter()
                    .position(|u| u.index.is_some() && u.index == index);
                match upload {
                    Some(n) => {
                        used[n] = true;
                        let description = entry.get("description").cloned();
                        result.push(new_attachment(world, channel_id, &uploads[n], description));
                    }
                    None => violations.push(format!(
                        "attachment {entry} is neither an existing attachment nor a files[n] part"
                    )),
                }
            }
        }
        None => result.extend(existing.iter().cloned()),
    }
    for (n, upload) in uploads.iter().enumerate() {
        if !used[n] {
            result.push(new_attachment(world, channel_id, upload, None));
        }
    }
    result
}

fn new_attachment(
    world: &mut World,
    channel_id: u64,
    upload: &Upload,
    description: Option<Value>,
) -> Value {
    let id = world.new_id();
    let url = format!(
        "/attachments/{channel_id}/{id}/{}",
        upload.filename.replace('/', "_")
    );
    world
        .attachments
        .insert(id, (upload.content_type.clone(), upload.bytes.clone()));
    let mut attachment = json!({
        "id": id.to_string(),
        "filename": upload.filename,
        "size": upload.bytes.len(),
        "url": url,
        "proxy_url": url,
        "content_type": upload.content_type,
    });
    if let Some(description) = description.filter(|d| !d.is_null()) {
        attachment["description"] = description;
    }
    // PNG: width and height are the first fields of IHDR.
    if upload.bytes.len() >= 24 && upload.bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        let be = |at: usize| {
            u32::from_be_bytes([
                upload.bytes[at],
                upload.bytes[at + 1],
                upload.bytes[at + 2],
                upload.bytes[at + 3],
            ])
        };
        attachment["width"] = json!(be(16));
        attachment["height"] = json!(be(20));
    }
    attachment
}

// ---------------------------------------------------------------------------------------------
// Bodies

fn parse_body(
    content_type: &str,
    body: &[u8],
    violations: &mut Vec<String>,
) -> (Option<Value>, Vec<Upload>) {
    if body.is_empty() {
        return (None, Vec::new());
    }
    if content_type.starts_with("multipart/form-data") {
        let Some(boundary) = content_type.split(';').find_map(|p| {
            p.trim()
                .strip_prefix("boundary=")
                .map(|b| b.trim_matches('"').to_string())
        }) else {
            violations.push("multipart body without a boundary".to_string());
            return (None, Vec::new());
        };
        let mut json = None;
        let mut uploads = Vec::new();
        for part in multipart_parts(body, &boundary) {
            if part.name == "payload_json" {
                match serde_json::from_slice(&part.bytes) {
                    Ok(v) => json = Some(v),
                    Err(e) => violations.push(format!("payload_json is not JSON: {e}")),
                }
            } else if let Some(n) = part
                .name
                .strip_prefix("files[")
                .and_then(|s| s.strip_suffix(']'))
            {
                uploads.push(Upload {
                    index: n.parse().ok(),
                    filename: part.filename.unwrap_or_default(),
                    content_type: part.content_type,
                    bytes: part.bytes,
                });
            } else {
                violations.push(format!("unexpected multipart part {:?}", part.name));
            }
        }
        return (json, uploads);
    }
    match serde_json::from_slice(body) {
        Ok(v) => (Some(v), Vec::new()),
        Err(e) => {
            violations.push(format!("body ({content_type}) is not JSON: {e}"));
            (None, Vec::new())
        }
    }
}

struct Part {
    name: String,
    filename: Option<String>,
    content_type: String,
    bytes: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn multipart_parts(body: &[u8], boundary: &str) -> Vec<Part> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let Some(start) = find(body, delimiter.as_bytes()) else {
        return parts;
    };
    let mut rest = &body[start + delimiter.len()..];
    let next_delimiter = format!("\r\n--{boundary}");
    while !rest.starts_with(b"--") {
        let Some(header_end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let headers = String::from_utf8_lossy(&rest[..header_end]).to_string();
        let content = &rest[header_end + 4..];
        let Some(end) = find(content, next_delimiter.as_bytes()) else {
            break;
        };
        let mut part = Part {
            name: String::new(),
            filename: None,
            content_type: "text/plain".to_string(),
            bytes: content[..end].to_vec(),
        };
        for line in headers.lines() {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-disposition:") {
                for param in line.split(';').skip(1) {
                    let param = param.trim();
                    if let Some(v) = param.strip_prefix("name=") {
                        part.name = v.trim_matches('"').to_string();
                    } else if let Some(v) = param.strip_prefix("filename=") {
                        part.filename = Some(v.trim_matches('"').to_string());
                    }
                }
            } else if lower.starts_with("content-type:") {
                part.content_type = line["content-type:".len()..].trim().to_string();
            }
        }
        parts.push(part);
        rest = &content[end + next_delimiter.len()..];
    }
    parts
}

// ---------------------------------------------------------------------------------------------
// Schema validation

fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/discord-openapi.json"
        );
        let text = std::fs::read_to_string(path).expect("read the Discord OpenAPI spec");
        serde_json::from_str(&text).expect("parse the Discord OpenAPI spec")
    })
}

/// A route's request schema, and its `anyOf` branches compiled alone so that a failure can name
/// the closest branch instead of "not valid under any of the schemas".
struct RouteSchema {
    whole: jsonschema::JSONSchema,
    branches: Vec<(String, jsonschema::JSONSchema)>,
}

type Validator = Option<Arc<RouteSchema>>;

fn compile(schema: &Value, key: &str) -> anyhow::Result<jsonschema::JSONSchema> {
    // Refs are "#/components/schemas/...": compile a document that carries them.
    let document = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": spec()["components"],
        "allOf": [schema],
    });
    jsonschema::JSONSchema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .compile(&document)
        .map_err(|e| anyhow!("compiling the schema of {key}: {e}"))
}

/// The request-body validator of `method template`, compiled once per test binary. Requests
/// that need it while it compiles wait for that compilation rather than each starting their own.
fn validator(method: &Method, template: &str) -> anyhow::Result<Validator> {
    type Cell = Arc<OnceLock<Result<Validator, String>>>;
    static CACHE: OnceLock<Mutex<HashMap<String, Cell>>> = OnceLock::new();
    let key = format!("{method} {template}");
    let cell: Cell = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.clone())
        .or_default()
        .clone();
    cell.get_or_init(|| compile_route(method, template, &key).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn compile_route(method: &Method, template: &str, key: &str) -> anyhow::Result<Validator> {
    let operation = spec()
        .pointer(&format!(
            "/paths/{}/{}",
            template.replace('~', "~0").replace('/', "~1"),
            method.as_str().to_ascii_lowercase()
        ))
        .with_context(|| format!("{key} is not in the OpenAPI spec"))?;
    let content = operation.pointer("/requestBody/content");
    let schema = content
        .and_then(|c| c.get("application/json"))
        .or_else(|| content.and_then(|c| c.get("multipart/form-data")))
        .and_then(|c| c.get("schema"));
    let compiled = match schema {
        None => None,
        Some(schema) => {
            let whole = compile(schema, key)?;
            let mut branches = Vec::new();
            let alternatives = schema
                .get("anyOf")
                .or_else(|| schema.get("oneOf"))
                .and_then(Value::as_array);
            for branch in alternatives.into_iter().flatten() {
                let name = branch
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.rsplit('/').next())
                    .unwrap_or("(inline)")
                    .to_string();
                branches.push((name, compile(branch, key)?));
            }
            Some(Arc::new(RouteSchema { whole, branches }))
        }
    };
    Ok(compiled)
}

fn error_lines(schema: &jsonschema::JSONSchema, body: &Value) -> Vec<String> {
    match schema.validate(body) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .map(|e| {
                let at = e.instance_path.to_string();
                let at = if at.is_empty() { "/".to_string() } else { at };
                format!("{e} (at {at})")
            })
            .collect(),
    }
}

fn validate(method: &Method, template: &'static str, body: &Value) -> Vec<String> {
    let schema = match validator(method, template) {
        Ok(Some(v)) => v,
        Ok(None) => return vec![format!("{method} {template} takes no request body")],
        Err(e) => return vec![format!("{e:#}")],
    };
    let mut body = body.clone();
    stringify_integer_ids(&mut body);
    let errors = error_lines(&schema.whole, &body);
    if errors.is_empty() {
        return errors;
    }
    let closest = schema
        .branches
        .iter()
        .map(|(name, branch)| (name, error_lines(branch, &body)))
        .min_by_key(|(_, errors)| errors.len());
    match closest {
        Some((name, branch_errors)) if !branch_errors.is_empty() => branch_errors
            .into_iter()
            .map(|e| format!("{method} {template}: matches no alternative; closest {name}: {e}"))
            .collect(),
        _ => errors
            .into_iter()
            .map(|e| format!("{method} {template}: {e}"))
            .collect(),
    }
}

/// Discord accepts integer snowflakes where the spec says string (serenity sends the ids of new
/// attachments as integers), so `id`/`*_id` integers are checked as strings.
fn stringify_integer_ids(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if (key == "id" || key.ends_with("_id")) && v.is_u64() {
                    *v = Value::String(v.to_string());
                } else {
                    stringify_integer_ids(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(stringify_integer_ids),
        _ => {}
    }
}
