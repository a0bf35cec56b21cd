//! The Discord front end: a poise/serenity bot serving `/rdp` in the war room, over the gateway
//! (`run`) or Discord's HTTP interactions endpoint (`serve`), with the same code (`transport`).
//!
//! **Architecture Invariant:** the only module that names serenity or poise types. Commands turn
//! options into runbook requests and render the runbook's events and reports; no runbook logic
//! lives here.
//!
//! **Architecture Invariant:** every interaction is acknowledged before the first Azure request,
//! and nothing the bot sends can mention anyone (allowed mentions are empty everywhere).

pub mod alerts;
mod commands;
mod fixes;
pub use fixes::{vm_key, RESUMED};
pub mod ids;
pub mod render;
pub mod serve;
mod steps;
mod surface;
mod sweep;
mod transport;
mod watch;

use crate::policy::{Actor, Place};
use crate::runbook::door::{Caller, Door};
use crate::runbook::standby::Standby;
use ids::{ComponentId, Key, UnknownId};
use secrecy::{ExposeSecret, SecretString};
use serenity::all::{
    ApplicationId, ChannelId, ClientBuilder, CommandDataOptionValue, CommandInteraction,
    ComponentInteraction, CreateAllowedMentions, CreateInteractionResponse,
    CreateInteractionResponseMessage, FullEvent, GatewayIntents, GuildId, Http, HttpBuilder,
    Interaction, Member, ModalInteraction, User,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use steps::PendingPick;
use tracing::Instrument;
use transport::Ack;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Context<'a> = poise::Context<'a, Bot, Error>;
/// A slash command's context: every `/rdp` subcommand takes this (they are slash-only).
pub type AppContext<'a> = poise::ApplicationContext<'a, Bot, Error>;

/// How the bot reaches Discord (the environment variables of ARCHITECTURE.md's external contract).
pub struct BotSettings {
    /// `DISCORD_TOKEN`
    pub token: SecretString,
    /// `DISCORD_API_URL`: a fake Discord or a rate-limiting proxy; `None` = discord.com.
    pub api_url: Option<String>,
    /// `DISCORD_GUILD_ID`: register commands in this guild (instant) instead of globally.
    pub guild_id: Option<u64>,
    /// How often the autocomplete VM list is refreshed.
    pub directory_refresh: Duration,
    /// `RDP_DOCTOR_METRICS_LISTEN`, bound: `/healthz`, `/readyz` and `/metrics` are served here.
    pub metrics_listener: Option<tokio::net::TcpListener>,
    /// On PostgreSQL: the gateway lock this bot must hold before it connects (a hot standby
    /// until then); `None` on SQLite (one machine, one bot).
    pub standby: Option<Standby>,
}

/// Shared state of the running bot (poise's user data).
pub struct Bot {
    /// Everything the bot does to Azure goes through here, with the person and the place.
    pub door: Door,
    picks: Arc<Mutex<HashMap<Key, PendingPick>>>,
    /// Sweeps running or recently finished, by the nonce in their components.
    sweeps: Arc<Mutex<HashMap<Key, sweep::SweepState>>>,
}

/// A pick menu is answered within minutes or not at all.
const PICK_LIFETIME: Duration = crate::runbook::door::PICK_KEPT;

impl Bot {
    pub fn new(door: Door) -> Bot {
        Bot {
            door,
            picks: Arc::new(Mutex::new(HashMap::new())),
            sweeps: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The same bot for the next gateway connection (after the gateway lock was lost and taken
    /// again): pending menus and sweeps carry over.
    fn share(&self) -> Bot {
        Bot {
            door: self.door.clone(),
            picks: self.picks.clone(),
            sweeps: self.sweeps.clone(),
        }
    }

    /// Remember `pick` for its menu, here and, with a database, for every replica (the door
    /// keeps it); the menu's nonce.
    async fn offer_pick(&self, caller: &Caller, mut pick: PendingPick) -> Key {
        let nonce = Key(rand_u64());
        let vms: Vec<crate::domain::VmRef> = pick.candidates.iter().map(|c| c.vm.clone()).collect();
        pick.kept = match self
            .door
            .keep_pick(
                caller,
                &nonce.to_string(),
                &pick.kind.words(),
                &pick.options,
                &vms,
            )
            .await
        {
            Ok(kept) => kept,
            Err(e) => {
                tracing::warn!(error = %e, "could not keep a pick for other replicas; this one's memory serves");
                false
            }
        };
        if let Ok(mut picks) = self.picks.lock() {
            picks.retain(|_, p| p.created.elapsed() < PICK_LIFETIME);
            picks.insert(nonce, pick);
        }
        nonce
    }

    /// The pending pick, if it is still fresh and `caller` is the person who asked: from this
    /// process's memory, or kept by any replica. Taken once across replicas: a pick kept in the
    /// database is this replica's only if it takes it there.
    async fn take_pick(
        &self,
        nonce: Key,
        caller: &Caller,
    ) -> Result<Option<PendingPick>, crate::runbook::door::DoorError> {
        let here = self.picks.lock().ok().and_then(|mut picks| {
            let pick = picks.get(&nonce)?;
            if pick.requester != caller.actor.id || pick.created.elapsed() >= PICK_LIFETIME {
                return None;
            }
            picks.remove(&nonce)
        });
        let kept = match &here {
            Some(pick) if !pick.kept => return Ok(here),
            _ => self.door.take_pick(caller, &nonce.to_string()).await?,
        };
        match (here, kept) {
            // Here and still in the database: ours.
            (Some(pick), Some(_)) => Ok(Some(pick)),
            // Here, but another replica took it first.
            (Some(_), None) => Ok(None),
            // Another replica's menu: as kept (the candidates as the door reads them back).
            (None, Some(kept)) => {
                let Some(kind) = steps::Kind::from_words(&kept.kind) else {
                    tracing::warn!(kind = %kept.kind, "a kept pick names nothing this version runs");
                    return Ok(None);
                };
                Ok(Some(PendingPick {
                    kind,
                    options: kept.options,
                    candidates: kept
                        .candidates
                        .into_iter()
                        .map(crate::domain::VmSummary::unlisted)
                        .collect(),
                    requester: caller.actor.id.clone(),
                    created: std::time::Instant::now(),
                    kept: true,
                }))
            }
            (None, None) => Ok(None),
        }
    }
}

/// The person behind an interaction and where it came from, as the door sees them. Their roles
/// are those of the guild the interaction came from (none in a direct message).
pub(crate) fn caller(
    user: &User,
    member: Option<&Member>,
    guild: Option<GuildId>,
    channel: ChannelId,
) -> Caller {
    let role_ids = member
        .map(|m| m.roles.iter().map(|r| r.get().to_string()).collect())
        .unwrap_or_default();
    let name = user.global_name.as_deref().unwrap_or(&user.name);
    Caller {
        actor: Actor::discord(user.id.get(), name, role_ids),
        place: Place::Discord {
            guild: guild.map(|g| g.get().to_string()),
            channel: channel.get().to_string(),
        },
    }
}

/// The index a person chose in one of the bot's string menus (their values are row indexes);
/// `None` for anything else.
pub(crate) fn chosen_index(component: &serenity::all::ComponentInteraction) -> Option<usize> {
    match &component.data.kind {
        serenity::all::ComponentInteractionDataKind::StringSelect { values } => {
            values.first().and_then(|v| v.parse::<usize>().ok())
        }
        _ => None,
    }
}

/// A random id for references and menu nonces, from the operating system's CSPRNG. Should the
/// random source fail, the clock's nanoseconds still keep them apart: a pick menu also checks
/// the person who opened it, a sweep's handle is unique in the database while it runs (a
/// clash refuses the second sweep) and its kept rows are never overwritten, and confirmation
/// ids (the secret ones) have no such fallback.
pub(crate) fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(e) => {
            tracing::error!(error = %e, "the operating system's random source failed");
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error("DISCORD_TOKEN was rejected by Discord (HTTP 401): check the bot token in the Developer Portal")]
    TokenRejected,
    #[error("cannot reach Discord at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the Discord client stopped: {0}")]
    Client(String),
}

fn is_unauthorized(error: &serenity::Error) -> bool {
    matches!(
        error,
        serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(r)) if r.status_code.as_u16() == 401
    )
}

/// A REST client for Discord with the bot token, its token checked with `GET /users/@me` first
/// (a bad token is a configuration error, not a reconnect loop).
async fn connect(token: &SecretString, api_url: Option<&str>) -> Result<Http, BotError> {
    let mut http = HttpBuilder::new(token.expose_secret());
    if let Some(url) = api_url {
        // serenity 0.12.5's rate limiter ignores the proxy; the proxy (or fake) owns rate limits.
        http = http
            .proxy(url.trim_end_matches('/'))
            .ratelimiter_disabled(true);
    }
    let http = http.build();
    let me = match http.get_current_user().await {
        Ok(me) => me,
        Err(e) if is_unauthorized(&e) => return Err(BotError::TokenRejected),
        Err(e) => {
            return Err(BotError::Unreachable {
                url: api_url.unwrap_or("https://discord.com").to_string(),
                detail: e.to_string(),
            })
        }
    };
    tracing::debug!(bot = %me.name, "token accepted");
    Ok(http)
}

/// Tell `http` the application it speaks for (webhook routes and commands name it): `known`
/// (`DISCORD_APPLICATION_ID`), or the token's application as Discord says.
async fn application_id(http: &Http, known: Option<u64>) -> Result<(), BotError> {
    let id = match known {
        Some(id) => ApplicationId::new(id),
        None => {
            http.get_current_application_info()
                .await
                .map_err(|e| BotError::Client(format!("cannot read the application: {e}")))?
                .id
        }
    };
    http.set_application_id(id);
    Ok(())
}

/// Register `/rdp` (bulk overwrite): in `guild` (at once), or globally.
async fn register(http: &Http, guild: Option<GuildId>) -> serenity::Result<()> {
    let commands = [rdp()];
    match guild {
        Some(guild) => poise::builtins::register_in_guild(http, &commands, guild).await,
        None => poise::builtins::register_globally(http, &commands).await,
    }
}

/// `rdp-doctor register`: register the commands as the bot and the endpoint do at start-up.
pub async fn register_commands(
    token: &SecretString,
    api_url: Option<&str>,
    application: Option<u64>,
    guild: Option<u64>,
) -> Result<(), BotError> {
    let http = connect(token, api_url).await?;
    application_id(&http, application).await?;
    register(&http, guild.map(GuildId::new))
        .await
        .map_err(|e| BotError::Client(format!("Discord refused the commands: {e}")))
}

/// Connect, register the commands, serve until SIGTERM or Ctrl-C. With a gateway lock
/// (`settings.standby`), wait for it first, and should it be lost while connected, disconnect
/// and wait for it again (`runbook::standby`).
pub async fn run(mut settings: BotSettings, bot: Bot) -> Result<(), BotError> {
    // The token is checked before anything else, standby or not: a bad one is exit 2 at once.
    let mut http = Some(connect(&settings.token, settings.api_url.as_deref()).await?);
    let health = serve::Health::new(bot.door.clone(), "not registered yet");
    health.set_gateway(Some("not connected yet".into()));
    if let Some(listener) = settings.metrics_listener.take() {
        tokio::spawn(serve::serve_health(listener, health.clone()));
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let stopping = stop.clone();
    tokio::spawn(async move {
        wait_for_shutdown().await;
        tracing::info!("shutting down");
        stopping.cancel();
    });
    let started = Arc::new(std::sync::Once::new());
    let mut standby = settings.standby.take();
    loop {
        if let Some(standby) = standby.as_mut() {
            let waited = async { standby.wait_turn(|why| health.set_gateway(Some(why))).await };
            tokio::select! {
                () = waited => {}
                () = stop.cancelled() => return Ok(()),
            }
        }
        let http = match http.take() {
            Some(http) => http,
            None => connect(&settings.token, settings.api_url.as_deref()).await?,
        };
        health.set_gateway(Some("connecting to Discord".into()));
        let mut client = gateway_client(
            &settings,
            http,
            bot.share(),
            health.clone(),
            started.clone(),
        )
        .await?;
        let shards = client.shard_manager.clone();
        let watch = tokio::spawn(watch_shards(shards.clone(), health.clone()));
        let lost = async {
            match standby.as_mut() {
                Some(standby) => standby.until_lost().await,
                None => std::future::pending().await,
            }
        };
        let start = client.start();
        tokio::pin!(start);
        let ended = tokio::select! {
            ended = &mut start => Ended::ByItself(ended),
            why = lost => Ended::Lost(why),
            () = stop.cancelled() => Ended::Stop,
        };
        if !matches!(ended, Ended::ByItself(_)) {
            shards.shutdown_all().await;
            let _ = start.await;
        }
        watch.abort();
        match ended {
            Ended::ByItself(Ok(())) | Ended::Stop => break,
            Ended::ByItself(Err(e)) if is_unauthorized(&e) => return Err(BotError::TokenRejected),
            Ended::ByItself(Err(e)) => return Err(BotError::Client(e.to_string())),
            Ended::Lost(why) => {
                tracing::error!(error = %why, "lost the gateway lock: disconnected from the gateway; waiting for the lock again");
                health.set_gateway(Some(format!("disconnected: lost the gateway lock ({why})")));
            }
        }
    }
    if let Some(standby) = standby.as_mut() {
        standby.release().await;
    }
    Ok(())
}

/// Why one gateway connection ended.
enum Ended {
    /// serenity's client returned (after a shutdown from elsewhere, or failing).
    ByItself(serenity::Result<()>),
    /// The gateway lock was lost: the gateway was shut down.
    Lost(crate::store::LockError),
    /// SIGTERM or Ctrl-C: the gateway was shut down.
    Stop,
}

/// The serenity client and poise framework of one gateway connection. `started` guards the
/// background work a bot starts once per process, at its first READY.
async fn gateway_client(
    settings: &BotSettings,
    http: Http,
    bot: Bot,
    health: Arc<serve::Health>,
    started: Arc<std::sync::Once>,
) -> Result<serenity::Client, BotError> {
    let guild = settings.guild_id.map(GuildId::new);
    let refresh = settings.directory_refresh;
    let watch = GatewayWatch(health.clone());
    let framework = poise::Framework::builder()
            .options(poise::FrameworkOptions {
                commands: vec![rdp()],
                command_check: Some(|ctx| Box::pin(fixes::channel_check(ctx))),
                on_error: |error| Box::pin(on_error(error)),
                post_command: |ctx| {
                    Box::pin(async move { count(ctx, crate::metrics::Outcome::Ok) })
                },
                event_handler: |framework, event| {
                    Box::pin(on_event(
                        framework.serenity_context,
                        event,
                        framework.user_data,
                    ))
                },
                allowed_mentions: Some(CreateAllowedMentions::new()),
                initialize_owners: false,
                ..Default::default()
            })
            .setup(move |ctx, ready, _framework| {
                Box::pin(async move {
                    register(&ctx.http, guild).await?;
                    health.set_registration(None);
                    started.call_once(|| {
                        bot.door.spawn_directory_refresher(refresh);
                        // Operations a stopped replica (or a previous run) left mid-flight: take
                        // them over once their lease lapses, follow them and post the outcome.
                        fixes::take_over_operations(ctx.http.clone(), bot.door.clone());
                        watch::run_watches(ctx.http.clone(), bot.door.clone());
                        if !bot.door.policy().configured() {
                            tracing::warn!("no [policy] in the config: the bot answers every interaction with a refusal");
                        }
                    });
                    tracing::info!(
                        "rdp-doctor ready as {} ({} subscription(s); commands registered {})",
                        ready.user.name,
                        bot.door.subscriptions().len(),
                        match guild {
                            Some(g) => format!("in guild {g}"),
                            None => "globally".to_string(),
                        }
                    );
                    Ok(bot)
                })
            })
            .build();
    ClientBuilder::new_with_http(http, GatewayIntents::GUILDS)
        .framework(Traced(framework))
        .event_handler(watch)
        .await
        .map_err(|e| BotError::Client(e.to_string()))
}

/// Follows the gateway's connection for `/readyz`: READY and RESUMED mean connected, any other
/// stage serenity reports (`FullEvent::ShardStageUpdate`) means not. An event handler beside
/// poise's framework, because serenity 0.12 hands stage updates to event handlers only, never
/// to a framework (`ShardRunner::run`).
struct GatewayWatch(Arc<serve::Health>);

#[async_trait::async_trait]
impl serenity::all::EventHandler for GatewayWatch {
    async fn ready(&self, _ctx: serenity::all::Context, _ready: serenity::all::Ready) {
        self.0.set_gateway(None);
    }

    async fn resume(&self, _ctx: serenity::all::Context, _resumed: serenity::all::ResumedEvent) {
        self.0.set_gateway(None);
    }

    async fn shard_stage_update(
        &self,
        _ctx: serenity::all::Context,
        event: serenity::all::ShardStageUpdateEvent,
    ) {
        self.0.set_gateway(not_connected(Some(event.new)));
    }
}

/// How often the shard's state is read besides the events: serenity reports no stage change
/// for a connection dropped and resumed in its run loop, nor a shard it restarts, but it keeps
/// the stage (on every change and heartbeat acknowledgement) in the shard manager.
const SHARD_POLL: Duration = Duration::from_secs(1);

async fn watch_shards(shards: Arc<serenity::all::ShardManager>, health: Arc<serve::Health>) {
    let mut seen = None;
    loop {
        tokio::time::sleep(SHARD_POLL).await;
        let stage = shards.runners.lock().await.values().next().map(|r| r.stage);
        // Only a change: between two polls the events are the fresher word.
        if stage != seen {
            health.set_gateway(not_connected(stage));
            seen = stage;
        }
    }
}

/// `/readyz`'s reason for a shard in `stage` (`None`: no shard running), or `None` connected.
fn not_connected(stage: Option<serenity::all::ConnectionStage>) -> Option<String> {
    use serenity::all::ConnectionStage as S;
    let why = match stage {
        Some(S::Connected) => return None,
        None => "disconnected from Discord, restarting the connection",
        Some(S::Resuming) => "disconnected from Discord, resuming the session",
        Some(S::Identifying) => "connecting to Discord (identifying)",
        Some(S::Connecting | S::Handshake) => "disconnected from Discord, reconnecting",
        Some(S::Disconnected) => "disconnected from Discord",
        Some(_) => "not connected to Discord",
    };
    Some(why.to_string())
}

/// poise's framework with one span per interaction around all it does for it: serenity runs
/// each event's dispatch as a task of its own, so the span covers the slash command, button,
/// menu or form and every ARM request made for it (`crate::telemetry`).
struct Traced(poise::Framework<Bot, Error>);

#[async_trait::async_trait]
impl serenity::all::Framework for Traced {
    async fn init(&mut self, client: &serenity::all::Client) {
        self.0.init(client).await;
    }

    async fn dispatch(&self, ctx: serenity::all::Context, event: FullEvent) {
        let span = match &event {
            FullEvent::InteractionCreate { interaction } => interaction_span(interaction),
            _ => tracing::Span::none(),
        };
        self.0.dispatch(ctx, event).instrument(span).await;
    }
}

/// The span of one interaction, over either transport: its id, the person (`discord:<user
/// id>`) and what they asked for: the subcommand (`check`), or a button's, menu's or form's
/// kind (`fix:start`, `confirm`). Never a custom id itself: a confirmation's is a secret.
pub(crate) fn interaction_span(interaction: &Interaction) -> tracing::Span {
    let (id, user, command) = match interaction {
        Interaction::Command(c) => (c.id, &c.user, subcommand(c)),
        Interaction::Autocomplete(c) => (c.id, &c.user, format!("{}:autocomplete", subcommand(c))),
        Interaction::Component(c) => (c.id, &c.user, component_kind(&c.data.custom_id)),
        Interaction::Modal(m) => (m.id, &m.user, component_kind(&m.data.custom_id)),
        _ => return tracing::Span::none(),
    };
    crate::telemetry::interaction_span(id.get(), &format!("discord:{}", user.id.get()), &command)
}

/// `check` of `/rdp check`: the subcommand's name, as registered (Discord sends no other).
fn subcommand(command: &CommandInteraction) -> String {
    command
        .data
        .options
        .first()
        .filter(|o| matches!(o.value, CommandDataOptionValue::SubCommand(_)))
        .map_or_else(|| command.data.name.clone(), |o| o.name.clone())
}

/// A custom id's kind; `unknown` for one rdp-doctor did not write (refused by its handler).
fn component_kind(custom_id: &str) -> String {
    custom_id
        .parse::<ComponentId>()
        .map_or_else(|_| "unknown".to_string(), |id| id.name())
}

/// Runs Microsoft's Remote Desktop troubleshooting runbook against an Azure VM.
#[poise::command(
    slash_command,
    subcommands(
        "commands::check",
        "commands::health",
        "commands::console",
        "commands::guest",
        "commands::explain",
        "commands::help",
        "sweep::sweep",
        "fixes::start",
        "fixes::restart",
        "fixes::redeploy",
        "fixes::reset_config",
        "fixes::reset_password",
        "fixes::open_rdp",
        "fixes::audit",
        "fixes::permissions",
        "fixes::request_jit",
        "commands::changes",
        "watch::watch",
        "watch::unwatch",
        "watch::history"
    ),
    subcommand_required
)]
pub async fn rdp(_ctx: Context<'_>) -> Result<(), Error> {
    Ok(())
}

async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Gateway events: buttons, menus and forms, each answered through the callback route (slash
/// commands and autocomplete are poise's).
async fn on_event(ctx: &serenity::all::Context, event: &FullEvent, bot: &Bot) -> Result<(), Error> {
    // Raw calls: a component or form comes outside any command invocation; poise cannot answer it.
    let http = ctx.http.clone();
    match event {
        FullEvent::InteractionCreate {
            interaction: Interaction::Component(component),
        } => {
            let ack = Ack::callback(http.clone(), component.id, &component.token);
            on_component(http, bot, component, &ack).await;
        }
        FullEvent::InteractionCreate {
            interaction: Interaction::Modal(modal),
        } => {
            let ack = Ack::callback(http.clone(), modal.id, &modal.token);
            on_form(http, bot, modal, &ack).await;
        }
        _ => {}
    }
    Ok(())
}

/// A button or menu, from either transport. It passes the same fence as slash commands before
/// anything else: a component from another guild, a direct message or an unlisted channel is
/// refused privately. Then the custom id is parsed into a [`ComponentId`] and matched
/// exhaustively; an id rdp-doctor did not write is refused privately and never mapped to an
/// action.
async fn on_component(http: Arc<Http>, bot: &Bot, component: &ComponentInteraction, ack: &Ack) {
    let caller = caller(
        &component.user,
        component.member.as_ref(),
        component.guild_id,
        component.channel_id,
    );
    let result = match admitted_id(bot, ack, &caller, &component.data.custom_id).await {
        Ok(Some(id)) => match id {
            ComponentId::Pick { nonce } => {
                commands::picked(http.clone(), ack, bot, &caller, component, nonce).await
            }
            ComponentId::Fix { action, vm } => {
                fixes::fix_button(http.clone(), ack, bot, &caller, component, action, vm).await
            }
            ComponentId::Confirm(confirmation) => {
                fixes::confirm(http.clone(), ack, bot, &caller, component, confirmation).await
            }
            ComponentId::Cancel(confirmation) => {
                fixes::cancel(http.clone(), ack, bot, &caller, component, confirmation).await
            }
            ComponentId::SweepStop { nonce } => sweep::stop(ack, bot, &caller, nonce).await,
            ComponentId::SweepDetails { nonce } => {
                sweep::details(http.clone(), ack, bot, &caller, component, nonce).await
            }
            ComponentId::SweepAsk { nonce } => sweep::ask(ack, nonce).await,
            ComponentId::Guest { vm } => {
                commands::guest_button(http.clone(), ack, bot, &caller, component, vm).await
            }
            // A form's id on a button: not something rdp-doctor sent.
            ComponentId::Password { .. } | ComponentId::SweepName { .. } => {
                refuse_unknown(ack).await
            }
        },
        other => other.map(|_| ()),
    };
    answer_failure(&http, ack, &component.token, "a button or menu", result).await;
}

/// A form, from either transport: the same fence and the same closed set of ids as a button.
async fn on_form(http: Arc<Http>, bot: &Bot, modal: &ModalInteraction, ack: &Ack) {
    let caller = caller(
        &modal.user,
        modal.member.as_ref(),
        modal.guild_id,
        modal.channel_id,
    );
    let result = match admitted_id(bot, ack, &caller, &modal.data.custom_id).await {
        Ok(Some(id)) => match id {
            ComponentId::Password { vm } => {
                fixes::modal(http.clone(), ack, bot, &caller, modal, vm).await
            }
            ComponentId::SweepName { nonce } => {
                sweep::modal(http.clone(), ack, bot, &caller, modal, nonce).await
            }
            // A button's or menu's id on a form: not something rdp-doctor sent.
            ComponentId::Pick { .. }
            | ComponentId::Fix { .. }
            | ComponentId::Confirm(_)
            | ComponentId::Cancel(_)
            | ComponentId::SweepStop { .. }
            | ComponentId::SweepDetails { .. }
            | ComponentId::SweepAsk { .. }
            | ComponentId::Guest { .. } => refuse_unknown(ack).await,
        },
        other => other.map(|_| ()),
    };
    answer_failure(&http, ack, &modal.token, "a form", result).await;
}

/// The fence and the custom id of a button, menu or form: `Some(id)` to act on; `None` once the
/// person has been refused privately (a fenced place, or an id rdp-doctor did not write).
async fn admitted_id(
    bot: &Bot,
    ack: &Ack,
    caller: &Caller,
    custom_id: &str,
) -> Result<Option<ComponentId>, Error> {
    match (bot.door.admit(caller), parse_id(custom_id)) {
        (Err(e), _) => ack.respond(refusal(&e.to_string())).await?,
        (Ok(()), Err(e)) => ack.respond(unknown_id(&e)).await?,
        (Ok(()), Ok(id)) => return Ok(Some(id)),
    }
    Ok(None)
}

/// The private refusal of an id of the wrong kind (a form's on a button, or the reverse).
async fn refuse_unknown(ack: &Ack) -> Result<(), Error> {
    Ok(ack.respond(unknown_id(&UnknownId)).await?)
}

/// A handler's failure: logged under a reference, the reference told to the person.
async fn answer_failure(
    http: &Arc<Http>,
    ack: &Ack,
    token: &str,
    what: &str,
    result: Result<(), Error>,
) {
    if let Err(e) = result {
        let reference = internal_error(&e, what);
        surface::tell_internal_error(http, ack, token, &reference).await;
    }
}

/// The custom id of a click or a form; what is not ours is logged (clipped, escaped) and refused.
fn parse_id(custom_id: &str) -> Result<ComponentId, UnknownId> {
    custom_id.parse().inspect_err(|_| {
        let shown: String = custom_id.chars().take(100).collect();
        tracing::warn!(custom_id = ?shown, "refused an interaction with an unknown custom id");
    })
}

/// The private refusal of an id rdp-doctor did not write: nothing was done.
fn unknown_id(e: &UnknownId) -> CreateInteractionResponse {
    refusal_titled(
        "Cannot do that",
        &format!(
            "{}; nothing was done. Run the command again for fresh buttons.",
            capitalised(&e.to_string())
        ),
    )
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// A new reference for an internal error, logged with the error: the person sees only the
/// reference, the operator finds the details by it.
pub(crate) fn internal_error(error: &dyn std::fmt::Display, what: &str) -> String {
    let reference = format!("{:08x}", rand_u64() as u32);
    tracing::error!(%reference, what, error = %error, "internal error");
    reference
}

/// What a person reads about an internal error.
pub(crate) fn internal_error_text(reference: &str) -> String {
    format!("Internal error, reference {reference}. The details are in the bot's log under that reference.")
}

/// A private "no" with the reason, as an interaction's first response.
fn refusal(text: &str) -> CreateInteractionResponse {
    refusal_titled("Not here", text)
}

fn refusal_titled(title: &str, text: &str) -> CreateInteractionResponse {
    CreateInteractionResponse::Message(
        CreateInteractionResponseMessage::new()
            .ephemeral(true)
            .embed(render::notice(title, text))
            .allowed_mentions(CreateAllowedMentions::new()),
    )
}

/// A slash command (not an autocomplete) ended with `outcome`, in `crate::metrics`.
fn count(ctx: Context<'_>, outcome: crate::metrics::Outcome) {
    if let poise::Context::Application(app) = ctx {
        if app.interaction_type == poise::CommandInteractionType::Autocomplete {
            return;
        }
    }
    if let Some(command) = crate::metrics::Command::of(&ctx.command().name) {
        crate::metrics::command(command, outcome);
    }
}

/// One place for failures of slash commands: what the person got wrong privately in words;
/// anything else privately as "internal error, reference X", the log line under the same X.
async fn on_error(error: poise::FrameworkError<'_, Bot, Error>) {
    use crate::metrics::Outcome;
    use poise::FrameworkError as E;
    match &error {
        E::Command { ctx, .. }
        | E::CommandPanic { ctx, .. }
        | E::CommandCheckFailed {
            error: Some(_),
            ctx,
            ..
        } => count(*ctx, Outcome::Error),
        E::CommandStructureMismatch { ctx, .. } => {
            count(poise::Context::Application(*ctx), Outcome::Error)
        }
        E::ArgumentParse { ctx, .. }
        | E::CommandCheckFailed {
            error: None, ctx, ..
        } => count(*ctx, Outcome::Refused),
        _ => {}
    }
    let (ctx, title, text) = match error {
        E::Command { error, ctx, .. } => {
            let reference = internal_error(&error, &ctx.command().qualified_name);
            (ctx, "Internal error", internal_error_text(&reference))
        }
        E::CommandPanic { payload, ctx, .. } => {
            let payload = payload.unwrap_or_else(|| "a panic without a message".into());
            let reference = internal_error(&payload, &ctx.command().qualified_name);
            (ctx, "Internal error", internal_error_text(&reference))
        }
        E::CommandCheckFailed {
            error: Some(error),
            ctx,
            ..
        } => {
            let reference = internal_error(&error, &ctx.command().qualified_name);
            (ctx, "Internal error", internal_error_text(&reference))
        }
        E::CommandStructureMismatch {
            description, ctx, ..
        } => {
            let reference = internal_error(&description, &ctx.command().qualified_name);
            (
                poise::Context::Application(ctx),
                "Internal error",
                internal_error_text(&reference),
            )
        }
        // The person's input; not echoed (it is theirs, and the option names say enough).
        E::ArgumentParse { error, ctx, .. } => (
            ctx,
            "Cannot read that option",
            format!("{error}. `/rdp help` lists the commands and their options."),
        ),
        other => {
            if let Err(e) = poise::builtins::on_error(other).await {
                tracing::error!(error = %e, "could not report an error");
            }
            return;
        }
    };
    let reply = poise::CreateReply::default()
        .ephemeral(true)
        .embed(render::notice(title, &text))
        .allowed_mentions(CreateAllowedMentions::new());
    if let Err(e) = ctx.send(reply).await {
        tracing::warn!(error = %e, "could not answer a failed command");
    }
}
