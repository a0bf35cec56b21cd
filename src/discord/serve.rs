//! `rdp-doctor serve`: Discord's HTTP interactions endpoint, the second transport of the one
//! front end (see `transport`).
//!
//! `POST /interactions` takes what Discord signs: the request is refused with 401 unless
//! `X-Signature-Ed25519` (hex) is a valid Ed25519 signature of `X-Signature-Timestamp` followed
//! by the raw body under `DISCORD_PUBLIC_KEY` (Discord, "Receiving and Responding", security and
//! authorization: it probes the endpoint with bad signatures and drops one that accepts them).
//! A PING is answered PONG; anything else is handed to the same handlers the gateway uses, and
//! their first response (a deferral before any Azure request, a message, a form) becomes the
//! HTTP response. Bodies over 1 MiB get 413, a body that is not JSON 415.
//!
//! `GET /healthz` answers 200 while the process serves; `GET /readyz` answers 200 when the
//! commands are registered, the database answers and an ARM token can be had (and, for the
//! gateway, when it is connected), else 503 naming each failing part on its own line; `GET /metrics` is `crate::metrics` in OpenMetrics text.
//! The gateway (`super::run`) serves the same three on `RDP_DOCTOR_METRICS_LISTEN`
//! ([`health_router`]).
//!
//! `POST /alerts/azure-monitor?token=…` takes Azure Monitor's alerts (`super::alerts`).
//!
//! Nothing here logs a request body, a signature, an interaction token (a token is a
//! credential for 15 minutes) or a request's URL (the alerts' token is in it).

use super::steps::{command_caller, private, suggestions};
use super::transport::{Ack, AcksFirst, Cmd};
use super::{commands, fixes, render, sweep, Bot, BotError, Error};
use crate::runbook::door::Door;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use ed25519_dalek::{Signature, VerifyingKey};
use futures::FutureExt;
use serenity::all::{
    CommandInteraction, CreateAutocompleteResponse, CreateInteractionResponse, GuildId, Http,
    Interaction, InteractionType, ResolvedOption, ResolvedValue,
};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::Instrument;

/// Discord's interaction payloads are a few kilobytes; anything near this is not one.
pub const MAX_BODY: usize = 1024 * 1024;

/// Discord waits 3 seconds for the first response; the handlers answer well inside that.
const FIRST_RESPONSE_WITHIN: Duration = Duration::from_millis(2_900);

/// How far a request's signed timestamp may be from this machine's clock: Discord sends at once,
/// so more is a replay of a captured request (or a clock badly off; run NTP).
const TIMESTAMP_WINDOW: Duration = Duration::from_secs(5 * 60);

/// A readiness probe gives up on a part after this long: the answer, naming what failed, comes
/// before the kubelet gives up on the probe (`timeoutSeconds: 3` in deploy/kubernetes/).
const PROBE_WITHIN: Duration = Duration::from_secs(2);

/// A scrape reads the database's gauges for at most this long (then leaves them out).
const GAUGES_WITHIN: Duration = Duration::from_secs(2);

/// The application's public key from the Developer Portal (`DISCORD_PUBLIC_KEY`, 64 hex digits).
#[derive(Clone, Debug)]
pub struct PublicKey(VerifyingKey);

#[derive(Debug, thiserror::Error)]
#[error("DISCORD_PUBLIC_KEY must be the application's public key, 64 hexadecimal digits, as the Developer Portal shows it")]
pub struct BadPublicKey;

impl std::str::FromStr for PublicKey {
    type Err = BadPublicKey;

    fn from_str(text: &str) -> Result<PublicKey, BadPublicKey> {
        let bytes: [u8; 32] = hex(text.trim())
            .and_then(|b| b.try_into().ok())
            .ok_or(BadPublicKey)?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| BadPublicKey)
    }
}

impl PublicKey {
    /// Whether `signature` (hex) signs `timestamp` followed by `body`. Strict verification: a
    /// malleable or small-order signature is refused too.
    pub fn verifies(&self, signature: &str, timestamp: &str, body: &[u8]) -> bool {
        let Some(signature) = hex(signature).and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
            return false;
        };
        let signature = Signature::from_bytes(&signature);
        let mut message = Vec::with_capacity(timestamp.len() + body.len());
        message.extend_from_slice(timestamp.as_bytes());
        message.extend_from_slice(body);
        self.0.verify_strict(&message, &signature).is_ok()
    }
}

/// Lower- or upper-case hex digits, an even number of them.
fn hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// How `serve` reaches Discord and where it listens (ARCHITECTURE.md's external contract).
pub struct ServeSettings {
    /// `DISCORD_TOKEN`: registers the commands and posts a channel message once an interaction
    /// token is spent.
    pub token: secrecy::SecretString,
    /// `DISCORD_API_URL`
    pub api_url: Option<String>,
    /// `DISCORD_GUILD_ID`
    pub guild_id: Option<u64>,
    /// `DISCORD_APPLICATION_ID`; `None`: asked of Discord with the token.
    pub application_id: Option<u64>,
    /// `DISCORD_PUBLIC_KEY`
    pub public_key: PublicKey,
    /// How often the autocomplete VM list is refreshed.
    pub directory_refresh: Duration,
    /// `RDP_DOCTOR_ALERT_TOKEN`: `POST /alerts/azure-monitor` needs it (`None`: alerts are off).
    pub alert_token: Option<secrecy::SecretString>,
    /// `[alerts]` of the config file: routes and storms.
    pub alerts: crate::runbook::alerts::AlertSettings,
}

pub(super) struct Served {
    pub(super) bot: Bot,
    pub(super) http: Arc<Http>,
    key: PublicKey,
    health: Arc<Health>,
    /// Requests not answered yet: handlers' work waits for them (`transport::AcksFirst`).
    acks_first: Arc<AcksFirst>,
    /// Azure Monitor's alerts (`super::alerts`).
    pub(super) alerts: super::alerts::Alerts,
    /// Where handlers go on after their first response ([`Work`]).
    work: tokio::runtime::Handle,
}

/// The runtime of the work an interaction starts (a check's ARM requests, a fix, the follow-ups
/// and edits) and of the background loops, beside the runtime that accepts requests and answers
/// them. Its threads run at a lower scheduling priority ([`WORK_NICE`] on Linux), so when both
/// want the CPU, the kernel runs the endpoint's threads first: in a burst of interactions every
/// request is read and deferred before the first ones' checks take the cores, as Discord drops
/// an interaction not answered within 3 s and a check started some milliseconds later loses
/// nothing. Idle, nothing changes: a priority only orders threads that all want the CPU.
struct Work(Option<tokio::runtime::Runtime>);

/// How much lower the work runtime's threads are scheduled than the process's own (Linux nice
/// values: at +10 a thread gets about a tenth of the CPU of one at +0 when both are busy).
const WORK_NICE: i32 = 10;

impl Work {
    fn start() -> std::io::Result<Work> {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("rdp-doctor-work")
            .on_thread_start(lower_this_threads_priority)
            .enable_all()
            .build()
            .map(|runtime| Work(Some(runtime)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("the runtime until dropped").handle()
    }
}

impl Drop for Work {
    /// Without waiting for its tasks (a runtime may not block in another's task); the process
    /// is ending, or a test's server with it.
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The calling thread's nice value [`WORK_NICE`] above the process's (at most 19). Linux keeps a
/// nice value per thread, and `setpriority(PRIO_PROCESS, 0, …)` sets the calling thread's
/// (setpriority(2), "Bugs": NPTL threads do not share it). Raising one's own nice value needs
/// no privilege. Elsewhere, and if it fails, the thread keeps the process's priority.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpriority and setpriority take plain integers and touch no memory of ours.
        let now = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let lowered = (now + WORK_NICE).min(19);
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, lowered) } != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "could not lower a work thread's priority"
            );
        }
    }
}

/// What `/readyz` and `/metrics` read, in either mode.
pub(crate) struct Health {
    door: Door,
    /// Why the commands are not registered (yet), or `None` once they are.
    registration: Mutex<Option<String>>,
    /// Why the gateway is not connected (standby, reconnecting), or `None` when it is (and
    /// always with the endpoint, which has no gateway).
    gateway: Mutex<Option<String>>,
}

impl Health {
    pub(crate) fn new(door: Door, not_yet: &str) -> Arc<Health> {
        Arc::new(Health {
            door,
            registration: Mutex::new(Some(not_yet.to_string())),
            gateway: Mutex::new(None),
        })
    }

    /// `None`: the gateway is connected; else why not (`gateway: …` in `/readyz`).
    pub(crate) fn set_gateway(&self, why_not: Option<String>) {
        if let Ok(mut g) = self.gateway.lock() {
            *g = why_not;
        }
    }

    /// `None`: the commands are registered; else why not.
    pub(crate) fn set_registration(&self, why_not: Option<String>) {
        if let Ok(mut r) = self.registration.lock() {
            *r = why_not;
        }
    }
}

/// Check the token, register the commands (retried in the background until Discord takes
/// them), then serve `listener` until SIGTERM or Ctrl-C.
pub async fn serve(
    listener: tokio::net::TcpListener,
    settings: ServeSettings,
    bot: Bot,
) -> Result<(), BotError> {
    let http = Arc::new(super::connect(&settings.token, settings.api_url.as_deref()).await?);
    super::application_id(&http, settings.application_id).await?;
    let guild = settings.guild_id.map(GuildId::new);
    let work = Work::start()
        .map_err(|e| BotError::Client(format!("cannot start the work runtime: {e}")))?;
    {
        // The background loops are work too: their tasks go to the work runtime.
        let _on_work = work.handle().enter();
        bot.door
            .spawn_directory_refresher(settings.directory_refresh);
        // Operations a stopped replica (or a previous run) left mid-flight: take them over once
        // their lease lapses, follow them and post the outcome.
        fixes::take_over_operations(http.clone(), bot.door.clone());
        super::watch::run_watches(http.clone(), bot.door.clone());
    }
    if !bot.door.policy().configured() {
        tracing::warn!(
            "no [policy] in the config: the endpoint answers every interaction with a refusal"
        );
    }
    let health = Health::new(bot.door.clone(), "not registered yet");
    let served = Arc::new(Served {
        bot,
        http: http.clone(),
        key: settings.public_key,
        health,
        acks_first: Arc::default(),
        alerts: super::alerts::Alerts::new(settings.alert_token, settings.alerts),
        work: work.handle().clone(),
    });
    tokio::spawn(register_until_done(served.clone(), guild));
    let addr = listener
        .local_addr()
        .map_err(|e| BotError::Client(e.to_string()))?;
    tracing::info!(
        "rdp-doctor serving Discord interactions on http://{addr}/interactions ({} subscription(s))",
        served.bot.door.subscriptions().len()
    );
    axum::serve(without_nagle(listener), router(served))
        .with_graceful_shutdown(async {
            super::wait_for_shutdown().await;
            tracing::info!("shutting down");
        })
        .await
        .map_err(|e| BotError::Client(e.to_string()))
}

async fn register_until_done(served: Arc<Served>, guild: Option<GuildId>) {
    let mut wait = Duration::from_secs(2);
    loop {
        match super::register(&served.http, guild).await {
            Ok(()) => {
                served.health.set_registration(None);
                tracing::info!(
                    "commands registered {}",
                    match guild {
                        Some(g) => format!("in guild {g}"),
                        None => "globally".to_string(),
                    }
                );
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not register the commands; trying again in {}s", wait.as_secs());
                served
                    .health
                    .set_registration(Some(format!("not registered: {e}")));
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(60));
    }
}

fn router(served: Arc<Served>) -> Router {
    let health = served.health.clone();
    Router::new()
        .route("/interactions", post(interactions))
        .route("/alerts/azure-monitor", post(super::alerts::receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(served)
        .merge(health_router(health))
}

/// `/healthz`, `/readyz` and `/metrics`: on `serve`'s listener, and on the gateway's
/// `RDP_DOCTOR_METRICS_LISTEN`.
pub(crate) fn health_router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

/// `listener` with `TCP_NODELAY` on each connection it accepts: each answer is one small write,
/// which Nagle's algorithm would only hold back.
fn without_nagle(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Addr = std::net::SocketAddr> {
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
    })
}

/// Serve [`health_router`] on `listener` until SIGTERM or Ctrl-C (gateway mode).
pub(crate) async fn serve_health(listener: tokio::net::TcpListener, health: Arc<Health>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("rdp-doctor serving /healthz, /readyz and /metrics on http://{addr}");
    }
    let served = axum::serve(without_nagle(listener), health_router(health))
        .with_graceful_shutdown(super::wait_for_shutdown())
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the metrics listener stopped");
    }
}

async fn metrics(State(health): State<Arc<Health>>) -> Response {
    let gauges = health.door.gauges(GAUGES_WITHIN).await;
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(gauges),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "alive\n"
}

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    let mut failing: Vec<(&str, String)> = Vec::new();
    let gateway = match health.gateway.lock() {
        Ok(g) => g.clone(),
        Err(_) => Some("unknown".into()),
    };
    if let Some(why) = gateway {
        failing.push(("gateway", why));
    }
    let registration = match health.registration.lock() {
        Ok(r) => r.clone(),
        Err(_) => Some("unknown".into()),
    };
    if let Some(why) = registration {
        failing.push(("commands", why));
    }
    failing.extend(health.door.readiness(PROBE_WITHIN).await);
    if failing.is_empty() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let text: String = failing
        .iter()
        .map(|(part, why)| format!("{part}: {why}\n"))
        .collect();
    (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
}

/// Whether `timestamp` (unix seconds, as Discord sends it) is within [`TIMESTAMP_WINDOW`] of now,
/// either way.
fn is_recent(timestamp: &str) -> bool {
    let Ok(at) = timestamp.trim().parse::<u64>() else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    now.abs_diff(at) <= TIMESTAMP_WINDOW.as_secs()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

async fn interactions(
    State(served): State<Arc<Served>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = Instant::now();
    // Counted until this function returns with the answer.
    let _unanswered = served.acks_first.received();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = match (
        header("x-signature-ed25519"),
        header("x-signature-timestamp"),
    ) {
        (Some(signature), Some(timestamp)) => served.key.verifies(signature, timestamp, &body),
        _ => false,
    };
    if !signed {
        tracing::warn!("refused an interaction request without a valid signature");
        return (StatusCode::UNAUTHORIZED, "invalid request signature\n").into_response();
    }
    // The signature covers the timestamp: one far from now is a captured request replayed (or
    // a clock far off), refused as a bad signature is.
    if !header("x-signature-timestamp").is_some_and(is_recent) {
        tracing::warn!("refused a signed interaction request with a timestamp outside the window");
        return (
            StatusCode::UNAUTHORIZED,
            "request timestamp outside the window\n",
        )
            .into_response();
    }
    if !is_json(&headers) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "interactions are application/json\n",
        )
            .into_response();
    }
    let interaction = match parse_interaction(&body) {
        Ok(interaction) => interaction,
        Err(e) => {
            // Where, never what: the body holds the interaction's token.
            tracing::warn!(
                category = ?e.classify(),
                line = e.line(),
                column = e.column(),
                "refused an interaction that does not parse"
            );
            return (StatusCode::BAD_REQUEST, "not an interaction\n").into_response();
        }
    };
    if let Interaction::Ping(_) = interaction {
        return answer(&CreateInteractionResponse::Pong, None);
    }
    // The interaction's span (`crate::telemetry`) around its handler, a task of its own, and
    // around the wait for its first response.
    let span = super::interaction_span(&interaction);
    let (ack, first) = Ack::endpoint(served.acks_first.clone());
    let work = served.work.clone();
    // Boxed at once: the handler's future holds the state of every command it may run (about
    // 20 KB), and each wrapper on its way to a task would copy it again; this request's own
    // future, which axum boxes too, would hold it inline.
    let handler: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> =
        Box::pin(handle(served, interaction, ack).instrument(span.clone()));
    let first = until_first_response(handler, first, FIRST_RESPONSE_WITHIN, work)
        .instrument(span.clone())
        .await;
    let _entered = span.enter();
    match first {
        Ok(Ok(first)) => {
            // Autocomplete's choices are an answer, not an acknowledgement (and poise answers
            // them unseen on the gateway).
            if !matches!(first.response, CreateInteractionResponse::Autocomplete(_)) {
                crate::metrics::acknowledged(
                    crate::metrics::Transport::Endpoint,
                    received.elapsed(),
                );
            }
            answer(&first.response, Some(first.written))
        }
        Ok(Err(_)) => {
            tracing::error!("an interaction was handled without a first response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(_) => {
            tracing::error!(
                "no first response within {} ms",
                FIRST_RESPONSE_WITHIN.as_millis()
            );
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Run `handler` in the calling task until `first` has its value (the handler's first
/// response), the handler ends, or `within` passes: a deferral does not wait for another task
/// to be scheduled (nor wake another worker) on its way out. What is left of the handler then
/// goes on in a task of its own on `work`; so it does when the caller is dropped before (hyper
/// drops a request's future when its connection closes), so a confirmation taken is never left
/// half done. A panic ends the handler alone (`first` then has no value).
async fn until_first_response<T>(
    handler: impl Future<Output = ()> + Send + 'static,
    mut first: oneshot::Receiver<T>,
    within: Duration,
    work: tokio::runtime::Handle,
) -> Result<Result<T, oneshot::error::RecvError>, tokio::time::error::Elapsed> {
    let handler = std::panic::AssertUnwindSafe(handler)
        .catch_unwind()
        .map(|ended| {
            if ended.is_err() {
                tracing::error!("an interaction's handler panicked");
            }
        });
    let mut running = GoesOn(Some(Box::pin(handler)), work);
    tokio::time::timeout(
        within,
        std::future::poll_fn(|cx| {
            if let Some(handler) = running.0.as_mut() {
                if handler.as_mut().poll(cx).is_ready() {
                    running.0 = None;
                }
            }
            // Polled after the handler: a first response it has just given is taken at once.
            std::pin::Pin::new(&mut first).poll(cx)
        }),
    )
    .await
}

/// A handler not finished yet: dropped, it goes on in a task of its own on the runtime named.
struct GoesOn<F: Future<Output = ()> + Send + 'static>(
    Option<std::pin::Pin<Box<F>>>,
    tokio::runtime::Handle,
);

impl<F: Future<Output = ()> + Send + 'static> Drop for GoesOn<F> {
    fn drop(&mut self) {
        if let Some(handler) = self.0.take() {
            self.1.spawn(handler);
        }
    }
}

/// An interaction from its JSON body, read once. serenity's own `Deserialize` for
/// [`Interaction`] builds a JSON map of the whole body, then reads the map again into the kind's
/// struct; here the `type` is read first (nothing else kept) and the body then straight into
/// that kind's struct, which serenity's impls do the same way (its fix-ups of `member` and
/// `user` included). The CPU this saves is per request, before the deferral.
fn parse_interaction(body: &[u8]) -> serde_json::Result<Interaction> {
    #[derive(serde::Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: InteractionType,
    }
    let Kind { kind } = serde_json::from_slice(body)?;
    Ok(match kind {
        InteractionType::Ping => Interaction::Ping(serde_json::from_slice(body)?),
        InteractionType::Command => Interaction::Command(serde_json::from_slice(body)?),
        InteractionType::Autocomplete => Interaction::Autocomplete(serde_json::from_slice(body)?),
        InteractionType::Component => Interaction::Component(serde_json::from_slice(body)?),
        InteractionType::Modal => Interaction::Modal(serde_json::from_slice(body)?),
        _ => return Err(serde::de::Error::custom("Unknown interaction type")),
    })
}

/// A first response as Discord documents it (`{"type": 1}` for PONG, no `"data": null` for the
/// types without data). `written` is told once the body has gone out (or the connection with it).
fn answer(response: &CreateInteractionResponse, written: Option<oneshot::Sender<()>>) -> Response {
    let mut body = serde_json::to_value(response).unwrap_or_default();
    if let Some(object) = body.as_object_mut() {
        if object.get("data").is_some_and(serde_json::Value::is_null) {
            object.remove("data");
        }
    }
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let Some(written) = written else {
        return ([(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    };
    // One frame of known length (a `Content-Length`, not chunks), and the signal goes with the
    // body: sent when the server, having taken the JSON, drops it.
    (
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::new(Told {
            bytes: Some(bytes),
            _written: Written(Some(written)),
        }),
    )
        .into_response()
}

/// A response body of one frame that tells [`Written`] when it is dropped.
struct Told {
    bytes: Option<Bytes>,
    _written: Written,
}

impl http_body::Body for Told {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.bytes.take().map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.bytes.as_ref().map_or(0, |b| b.len() as u64))
    }
}

struct Written(Option<oneshot::Sender<()>>);

impl Drop for Written {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// An interaction, through the same handlers as the gateway's.
async fn handle(served: Arc<Served>, interaction: Interaction, ack: Ack) {
    let http = served.http.clone();
    let bot = &served.bot;
    match interaction {
        Interaction::Command(command) => {
            run_command(Cmd::endpoint(bot, &command, &http, &ack)).await;
        }
        Interaction::Autocomplete(command) => {
            // As poise's command check: fenced off, no choices.
            let choices = match bot.door.admit(&command_caller(&command)) {
                Ok(()) => {
                    let partial = command.data.autocomplete().map(|o| o.value).unwrap_or("");
                    suggestions(bot, &command, partial)
                }
                Err(_) => CreateAutocompleteResponse::new(),
            };
            if let Err(e) = ack
                .respond(CreateInteractionResponse::Autocomplete(choices))
                .await
            {
                tracing::warn!(error = %e, "could not answer an autocomplete");
            }
        }
        Interaction::Component(component) => super::on_component(http, bot, &component, &ack).await,
        Interaction::Modal(modal) => super::on_form(http, bot, &modal, &ack).await,
        // Ping is answered by the caller; nothing else is sent to an application.
        _ => tracing::warn!("ignored an interaction of a kind rdp-doctor does not serve"),
    }
}

/// The options of a subcommand, by name.
struct Options<'a>(Vec<ResolvedOption<'a>>);

impl<'a> Options<'a> {
    fn text(&self, name: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|o| o.name == name)
            .and_then(|o| match o.value {
                ResolvedValue::String(s) => Some(s),
                _ => None,
            })
    }

    fn integer(&self, name: &str) -> Option<i64> {
        self.0
            .iter()
            .find(|o| o.name == name)
            .and_then(|o| match o.value {
                ResolvedValue::Integer(n) => Some(n),
                _ => None,
            })
    }

    fn owned(&self, name: &str) -> Option<String> {
        self.text(name).map(str::to_string)
    }

    fn required(&self, name: &'static str) -> Result<&'a str, MissingOption> {
        self.text(name).ok_or(MissingOption(name))
    }
}

/// A required option Discord did not send (it enforces them; a hand-made request may not).
#[derive(Debug, thiserror::Error)]
#[error("The option `{0}` is missing")]
struct MissingOption(&'static str);

/// A slash command that came over HTTP: the fence (poise's `command_check` with the gateway),
/// its options as poise reads them, the same command bodies, and the same errors as `on_error`.
async fn run_command(cmd: Cmd<'_>) {
    use crate::metrics::Outcome;
    let (name, options) = subcommand(cmd.interaction);
    let count = |outcome| {
        if let Some(command) = crate::metrics::Command::of(&name) {
            crate::metrics::command(command, outcome);
        }
    };
    if let Err(e) = cmd.bot.door.admit(&command_caller(cmd.interaction)) {
        count(Outcome::Refused);
        let refusal = private(render::notice("Not here", &e.to_string()));
        if let Err(e) = cmd.send(refusal).await {
            tracing::warn!(error = %e, "could not refuse a command");
        }
        return;
    }
    // A panic is answered as an error, as poise's `handle_panics` does on the gateway.
    let routed = std::panic::AssertUnwindSafe(route(cmd, &name, &options))
        .catch_unwind()
        .await
        .unwrap_or_else(|payload| {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            Ok(Err(text.into()))
        });
    let result = match routed {
        Ok(result) => {
            count(if result.is_ok() {
                Outcome::Ok
            } else {
                Outcome::Error
            });
            result
        }
        // The person's input; not echoed, as `on_error` does for poise's argument errors.
        Err(missing) => {
            count(Outcome::Refused);
            let text = format!("{missing}. `/rdp help` lists the commands and their options.");
            cmd.send(private(render::notice("Cannot read that option", &text)))
                .await
        }
    };
    if let Err(e) = result {
        let reference = super::internal_error(&e, &format!("rdp {name}"));
        let notice = render::notice("Internal error", &super::internal_error_text(&reference));
        if let Err(e) = cmd.send(private(notice)).await {
            tracing::warn!(error = %e, "could not answer a failed command");
        }
    }
}

/// `/rdp <subcommand>` and its options.
fn subcommand(interaction: &CommandInteraction) -> (String, Options<'_>) {
    let mut options = interaction.data.options();
    match options.pop() {
        Some(ResolvedOption {
            name,
            value: ResolvedValue::SubCommand(inner),
            ..
        }) if interaction.data.name == "rdp" => (name.to_string(), Options(inner)),
        _ => (interaction.data.name.clone(), Options(Vec::new())),
    }
}

/// The subcommands of `super::rdp`, each to the body its poise command calls. `Err`: an option
/// is missing.
async fn route(
    cmd: Cmd<'_>,
    name: &str,
    o: &Options<'_>,
) -> Result<Result<(), Error>, MissingOption> {
    use super::steps::{FixKind, Kind};
    use crate::runbook::CheckOptions;
    Ok(match name {
        "check" => commands::check_in(cmd, o.required("vm")?, o.text("from")).await,
        "health" => {
            commands::start(
                cmd,
                Kind::Health,
                o.required("vm")?,
                CheckOptions::default(),
            )
            .await
        }
        "console" => {
            commands::start(
                cmd,
                Kind::Console,
                o.required("vm")?,
                CheckOptions::default(),
            )
            .await
        }
        "guest" => commands::guest_in(cmd, o.required("vm")?).await,
        "explain" => commands::explain_in(cmd, o.required("error")?).await,
        "help" => commands::help_in(cmd).await,
        "sweep" => {
            sweep::sweep_in(
                cmd,
                o.owned("resource-group"),
                o.owned("subscription"),
                o.text("from"),
            )
            .await
        }
        "start" => fixes::request_from_command(cmd, o.required("vm")?, FixKind::Start).await,
        "restart" => fixes::request_from_command(cmd, o.required("vm")?, FixKind::Restart).await,
        "redeploy" => fixes::request_from_command(cmd, o.required("vm")?, FixKind::Redeploy).await,
        "reset-config" => {
            fixes::request_from_command(cmd, o.required("vm")?, FixKind::ResetRdpConfig).await
        }
        "open-rdp" => {
            let port = o.integer("port");
            fixes::open_rdp_in(cmd, o.required("vm")?, o.required("source")?, port).await
        }
        "reset-password" => fixes::reset_password_in(cmd, o.required("vm")?).await,
        "request-jit" => {
            let hours = o.integer("hours");
            fixes::request_jit_in(cmd, o.required("vm")?, o.required("from")?, hours).await
        }
        "audit" => fixes::audit_in(cmd, o.text("vm")).await,
        "permissions" => fixes::permissions_in(cmd).await,
        "changes" => {
            commands::start(
                cmd,
                Kind::Changes,
                o.required("vm")?,
                CheckOptions::default(),
            )
            .await
        }
        "watch" => super::watch::watch_in(cmd, o.text("vm"), o.integer("minutes")).await,
        "unwatch" => super::watch::unwatch_in(cmd, o.required("vm")?).await,
        "history" => super::watch::history_in(cmd, o.required("vm")?).await,
        other => Err(format!("no subcommand /rdp {other}").into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_its_metrics_label_and_nothing_else_does() {
        let names: Vec<String> = super::super::rdp()
            .subcommands
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        assert_eq!(names.len(), crate::metrics::Command::ALL.len(), "{names:?}");
        for name in &names {
            let command = crate::metrics::Command::of(name);
            assert_eq!(command.map(|c| c.name()), Some(name.as_str()));
        }
    }

    #[test]
    fn hex_takes_pairs_of_digits_only() {
        assert_eq!(hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(hex("00FF"), Some(vec![0, 255]));
        assert_eq!(hex("0"), None);
        assert_eq!(hex("zz"), None);
        assert_eq!(hex("é0"), None);
        assert_eq!(hex(""), Some(vec![]));
    }

    #[test]
    fn a_public_key_is_64_hex_digits() {
        // RFC 8032, section 7.1, test 1.
        let key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
        assert!(key.parse::<PublicKey>().is_ok());
        assert!(key[..62].parse::<PublicKey>().is_err());
        assert!(format!("{key}00").parse::<PublicKey>().is_err());
        assert!("not a key".parse::<PublicKey>().is_err());
    }

    /// The runtime the test runs on, as the handlers' work runtime.
    fn here() -> tokio::runtime::Handle {
        tokio::runtime::Handle::current()
    }

    /// The nice value of the calling thread.
    #[cfg(target_os = "linux")]
    fn nice() -> i32 {
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    /// After its first response, a handler goes on on the work runtime, whose threads are
    /// scheduled below the endpoint's; the endpoint's own thread keeps its priority.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_handler_goes_on_on_the_work_runtime_at_a_lower_priority() {
        let work = Work::start().expect("the work runtime");
        let (first_tx, first) = oneshot::channel();
        let (went_on_tx, went_on) = oneshot::channel();
        let handler = async move {
            let _ = first_tx.send(());
            tokio::task::yield_now().await;
            let thread = std::thread::current();
            let _ = went_on_tx.send((thread.name().map(str::to_owned), nice()));
        };
        let endpoint = nice();
        let answered = until_first_response(
            handler,
            first,
            Duration::from_secs(3),
            work.handle().clone(),
        )
        .await;
        assert!(answered.unwrap().is_ok());
        let (thread, work_nice) = tokio::time::timeout(Duration::from_secs(1), went_on)
            .await
            .expect("the handler went on")
            .unwrap();
        assert_eq!(thread.as_deref(), Some("rdp-doctor-work"));
        assert_eq!(work_nice, (endpoint + WORK_NICE).min(19));
        assert_eq!(nice(), endpoint, "the endpoint's thread kept its priority");
    }

    /// A handler that gives its first response after `before`, then ends; with the receivers
    /// of its first response and of its end.
    fn handler_after(
        before: Duration,
    ) -> (
        impl Future<Output = ()> + Send + 'static,
        oneshot::Receiver<()>,
        oneshot::Receiver<()>,
    ) {
        let (first_tx, first) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let handler = async move {
            tokio::time::sleep(before).await;
            let _ = first_tx.send(());
            let _ = done_tx.send(());
        };
        (handler, first, done)
    }

    /// Within a second, `done` is told: the handler went on to its end.
    async fn goes_on_to_its_end(done: oneshot::Receiver<()>, after: &str) {
        tokio::time::timeout(Duration::from_secs(1), done)
            .await
            .unwrap_or_else(|_| panic!("the handler did not go on {after}"))
            .unwrap();
    }

    /// The handler gives its first response, then works on: the response comes back at once,
    /// and the work goes on after, in a task of its own.
    #[tokio::test]
    async fn a_handler_answers_first_and_works_on_in_a_task_of_its_own() {
        let (first_tx, first) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let handler = async move {
            let _ = first_tx.send("deferred");
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = done_tx.send(());
        };
        let answered = until_first_response(handler, first, Duration::from_secs(3), here()).await;
        assert_eq!(answered.unwrap().unwrap(), "deferred");
        goes_on_to_its_end(done, "after its first response").await;
    }

    /// The request's future is dropped (its connection closed) while the handler is on its way
    /// to the first response: the handler goes on to its end all the same.
    #[tokio::test]
    async fn a_handler_goes_on_when_its_request_is_dropped_before_the_first_response() {
        let (handler, first, done) = handler_after(Duration::from_millis(50));
        let request = tokio::spawn(until_first_response(
            handler,
            first,
            Duration::from_secs(3),
            here(),
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
        goes_on_to_its_end(done, "after its request was dropped").await;
    }

    /// A handler that outlasts the wait goes on; one that panics ends alone, without a first
    /// response.
    #[tokio::test]
    async fn a_slow_handler_goes_on_and_a_panicking_one_ends_alone() {
        let (handler, first, done) = handler_after(Duration::from_millis(100));
        let waited = until_first_response(handler, first, Duration::from_millis(20), here()).await;
        assert!(waited.is_err(), "no first response within 20 ms");
        goes_on_to_its_end(done, "after the wait for its first response").await;

        let (first_tx, first) = oneshot::channel::<()>();
        let handler = async move {
            let _keep = first_tx;
            panic!("a bug in a handler");
        };
        let answered = until_first_response(handler, first, Duration::from_secs(3), here()).await;
        assert!(matches!(answered, Ok(Err(_))), "{answered:?}");
    }

    /// A deferral goes out as one body of known length (a `Content-Length`, no chunks), and
    /// the handler is told it has gone once the server has taken the body, not before.
    #[tokio::test]
    async fn a_first_response_has_its_length_and_tells_when_it_is_taken() {
        let (written, mut told) = oneshot::channel();
        let response = answer(
            &CreateInteractionResponse::Defer(Default::default()),
            Some(written),
        );
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        let body = response.into_body();
        let length = http_body::Body::size_hint(&body).exact();
        assert!(told.try_recv().is_err(), "told before the body was taken");
        let bytes = axum::body::to_bytes(body, MAX_BODY).await.unwrap();
        assert_eq!(length, Some(bytes.len() as u64));
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["type"], 5, "{json}");
        assert!(told.try_recv().is_ok(), "not told once the body was taken");
    }

    #[test]
    fn rfc_8032_test_vector_verifies_and_nothing_else_does() {
        // RFC 8032, section 7.1, test 2: a one-byte message (0x72); here split into a
        // "timestamp" and an empty body, as the message Discord signs is their concatenation.
        let key: PublicKey = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
            .parse()
            .unwrap();
        let signature = "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
                         085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00";
        assert!(key.verifies(signature, "r", b""));
        assert!(key.verifies(signature, "", b"r"));
        assert!(!key.verifies(signature, "r", b"r"));
        assert!(!key.verifies(signature, "s", b""));
        assert!(!key.verifies(&signature[..126], "r", b""));
        assert!(!key.verifies("zz", "r", b""));
    }

    /// What serenity's own `Interaction` deserialiser makes of `body`, against ours.
    fn parsed_alike(body: &serde_json::Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        let theirs: Interaction = serde_json::from_slice(&bytes).unwrap();
        let ours = parse_interaction(&bytes).unwrap();
        assert_eq!(
            std::mem::discriminant(&ours),
            std::mem::discriminant(&theirs)
        );
        assert_eq!(
            serde_json::to_value(&ours).unwrap(),
            serde_json::to_value(&theirs).unwrap()
        );
    }

    #[test]
    fn an_interaction_reads_as_serenity_reads_it() {
        use serde_json::json;
        let user = json!({"id": "4001", "username": "alice", "discriminator": "0",
                          "global_name": null, "avatar": null, "public_flags": 0});
        let base = json!({"id": "1300000000000000001", "application_id": "1180000000000000001",
                          "token": "t", "version": 1, "channel_id": "1200000000000000001",
                          "app_permissions": "0", "locale": "en-US", "entitlements": [],
                          "attachment_size_limit": 26214400});
        let with = |kind: u8, extra: serde_json::Value| {
            let mut body = base.clone();
            body["type"] = json!(kind);
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            body
        };
        let check = json!({"id": "1100000000000000001", "name": "rdp", "type": 1, "options": [
            {"name": "check", "type": 1, "options": [{"name": "vm", "type": 3, "value": "web-01"}]}
        ]});
        let member = json!({"user": user, "nick": null, "roles": ["1500"], "deaf": false,
                            "mute": false, "flags": 0, "pending": false, "permissions": "0",
                            "joined_at": "2024-01-01T00:00:00.000000+00:00"});
        parsed_alike(&with(1, json!({})));
        // In a guild: a member, whose user serenity copies to `user` and whose guild it sets.
        let guild = json!({"guild_id": "1400000000000000001", "member": member, "data": check});
        parsed_alike(&with(2, guild.clone()));
        let ours = parse_interaction(&serde_json::to_vec(&with(2, guild)).unwrap()).unwrap();
        let Interaction::Command(command) = ours else {
            panic!("not a command: {ours:?}");
        };
        assert_eq!(command.user.name, "alice");
        assert_eq!(command.member.unwrap().guild_id.get(), 1400000000000000001);
        // In a DM: the user itself.
        parsed_alike(&with(2, json!({"user": user, "data": check})));
        let mut partial = check.clone();
        partial["options"][0]["options"][0] =
            json!({"name": "vm", "type": 3, "value": "we", "focused": true});
        parsed_alike(&with(4, json!({"user": user, "data": partial})));
        let form = json!({"custom_id": "rdp:form", "components": [{"type": 1, "components": [
            {"type": 4, "custom_id": "password", "value": "x"}]}]});
        parsed_alike(&with(5, json!({"user": user, "data": form})));

        // Refused as serenity refuses them: an unknown or missing type, a kind's missing field.
        for body in [
            with(9, json!({})),
            base.clone(),
            with(2, json!({"user": user})),
        ] {
            let bytes = serde_json::to_vec(&body).unwrap();
            assert!(serde_json::from_slice::<Interaction>(&bytes).is_err());
            assert!(parse_interaction(&bytes).is_err(), "{body}");
        }
        assert!(parse_interaction(b"{\"type\": 2").is_err());
    }
}
