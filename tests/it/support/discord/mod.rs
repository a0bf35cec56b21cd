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
//!
//! Layout: this file holds the public API's types, the fake's state and starting it;
//! `gateway` (the websocket), `interactions` (dispatching interactions, their callbacks),
//! `rest` (the router and the record of requests), `commands` (application commands),
//! `messages` (webhook and channel messages, attachments), `multipart` (request bodies),
//! `schema` (validation against the OpenAPI spec).
#![allow(dead_code)]

mod commands;
mod gateway;
mod interactions;
mod messages;
mod multipart;
mod rest;
mod schema;
/// Discord's side of the HTTP interactions endpoint: signed POSTs, responses to the callback route.
pub mod signed;

use anyhow::bail;
use axum::extract::DefaultBodyLimit;
use gateway::gateway_connection;
use rest::rest_handler;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

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
    /// The message this request created or changed, when it did: the one an interaction
    /// callback made `@original` (or, for a component, the message it updated), or the one a
    /// webhook or channel request answered with.
    pub message_id: Option<u64>,
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

    /// The title of the first embed this request carries, `""` when none.
    pub fn title(&self) -> String {
        self.body()["embeds"][0]["title"]
            .as_str()
            .unwrap_or("")
            .to_string()
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
    /// Websocket connections open now.
    open: usize,
    /// While set, IDENTIFY and RESUME wait here unanswered (`stall_sessions`).
    stalled: Option<Vec<Stalled>>,
}

/// An IDENTIFY (op 2) or RESUME (op 6) waiting for an answer, and the connection it came on.
struct Stalled {
    conn_id: u64,
    tx: mpsc::UnboundedSender<Outgoing>,
    op: u64,
    d: Value,
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

/// The war room's policy: role 5001 operates, role 5002 administers; both only in the fake's
/// channel (a `[policy]` table's body).
pub const ROOM_POLICY: &str = r#"
channels = ["1180000000000000003"]
[[grant]]
discord_role_id = 5001
level = "operate"
scope = "*"
[[grant]]
discord_role_id = 5002
level = "admin"
scope = "*"
"#;

/// A bot's config file: `azure` (the lines of its `[azure]` table, and any table after it), then
/// [`ROOM_POLICY`].
pub fn room_config(azure: &str) -> String {
    format!(
        "[azure]\n{azure}\n[policy]{}",
        ROOM_POLICY.replace("\n[[grant]]", "\n[[policy.grant]]")
    )
}

/// Every component of a message, rows flattened.
pub fn components(message: &Value) -> Vec<Value> {
    message["components"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The custom ids of a message's buttons and menus.
pub fn custom_ids(message: &Value) -> Vec<String> {
    components(message)
        .iter()
        .filter_map(|c| c["custom_id"].as_str().map(str::to_string))
        .collect()
}

impl FakeDiscord {
    pub async fn start() -> FakeDiscord {
        FakeDiscord::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> FakeDiscord {
        let rest = rdp_doctor::net::listen("127.0.0.1:0")
            .await
            .expect("bind fake Discord REST listener");
        let gateway = rdp_doctor::net::listen("127.0.0.1:0")
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

    /// `rdp-doctor bot` as a process against this fake and `sim`: nothing of the test's own
    /// environment, the config file `config`, the database `database` (a sqlx URL). The caller
    /// adds the credential (`AZURE_CLIENT_SECRET` or another) and where output goes.
    pub fn bot_command(
        &self,
        sim: &rdp_doctor::sim::Simulator,
        config: &std::path::Path,
        database: &str,
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_rdp-doctor"));
        command
            .arg("bot")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DISCORD_TOKEN", TOKEN)
            .env("DISCORD_API_URL", self.url())
            .env("DISCORD_GUILD_ID", GUILD_ID.to_string())
            .env("AZURE_RESOURCE_MANAGER_URL", sim.url())
            .env("AZURE_AUTHORITY_HOST", sim.url())
            .env("AZURE_TENANT_ID", super::TENANT)
            .env("AZURE_CLIENT_ID", super::CLIENT)
            .env(
                "AZURE_SUBSCRIPTION_ID",
                rdp_doctor::sim::DEFAULT_SUBSCRIPTION,
            )
            .env("RDP_DOCTOR_CONFIG", config)
            .env("RDP_DOCTOR_DATABASE_URL", database)
            .kill_on_drop(true);
        command
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

    /// Wait until IDENTIFY has been answered `n` times in total.
    pub async fn wait_identified(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        self.wait_for("IDENTIFY", timeout, move |w| w.gateway.identifies >= n)
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

    /// Interactions from now on come from `origin` (another guild, another channel, a direct
    /// message); [`Origin::HOME`] restores the fake's own channel.
    pub fn set_origin(&self, origin: Origin) {
        self.inner.lock().origin = origin;
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

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "2026-01-01T00:00:00Z".to_string())
}
