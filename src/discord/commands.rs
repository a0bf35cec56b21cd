//! The `/rdp` slash commands. Each stays thin: turn options into a runbook request, acknowledge
//! within Discord's 3 seconds (before any Azure call), run, render.
//!
//! Every command takes poise's `ApplicationContext` and answers in one order:
//!
//! 1. parse and validate the options that need no I/O; a mistake is answered at once, privately,
//!    as the first response (`refuse`);
//! 2. `acknowledge` (poise's `ctx.defer()` or `ctx.defer_ephemeral()`) before the first Azure
//!    request, well inside Discord's 3 seconds; it returns the `Surface` the answer lives on;
//! 3. authorise through the door and work: every door call checks the person's permission
//!    itself, and a refusal goes privately to the person (`Surface::whisper`, poise's `ctx.send`).
//!
//! A command that makes no Azure request (`help`, `explain`, `audit`, `reset-password`'s form)
//! skips step 2 and answers with `ctx.send` as its first response. The fence (guild, channel, a
//! policy at all) runs before any of this, in poise's `command_check`.

use super::ids::{ComponentId, Key};
use super::render;
use super::surface::{Surface, View};
use super::{caller, AppContext, Bot, Context, Error};
use crate::diagnose::{CheckId, Status};
use crate::domain::{VmQuery, VmSummary};
use crate::runbook::door::{Caller, DoorError};
use crate::runbook::fix::{FixRequest, RdpSource};
use crate::runbook::{CheckOptions, Event};
use poise::CreateReply;
use serenity::all::{
    CommandInteraction, ComponentInteraction, ComponentInteractionDataKind, CreateActionRow,
    CreateAllowedMentions, CreateAutocompleteResponse, CreateEmbed, CreateInteractionResponse,
    CreateInteractionResponseFollowup, CreateInteractionResponseMessage, CreateSelectMenu,
    CreateSelectMenuKind, CreateSelectMenuOption, Http,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// What to run once the VM is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Check,
    Health,
    Console,
    /// A fix whose prompt needs nothing but the VM and what the command said.
    Fix(FixKind),
    /// `reset-password`: the form opens once the VM is known.
    ResetPassword,
}

/// The fixes a command or a button asks for without a form. `reset-password` has none: its
/// form is the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixKind {
    Start,
    Restart,
    Redeploy,
    ResetRdpConfig,
    /// `open-rdp` from a source.
    OpenRdp(RdpSource),
}

impl FixKind {
    pub fn request(self) -> FixRequest {
        match self {
            FixKind::Start => FixRequest::Start,
            FixKind::Restart => FixRequest::Restart,
            FixKind::Redeploy => FixRequest::Redeploy,
            FixKind::ResetRdpConfig => FixRequest::ResetRdpConfig,
            FixKind::OpenRdp(source) => FixRequest::OpenRdpPort { source },
        }
    }
}

impl Kind {
    fn verb(&self) -> &'static str {
        match self {
            Kind::Check => "Checking",
            Kind::Health => "Reading Resource Health of",
            Kind::Console => "Fetching the console of",
            Kind::Fix(_) | Kind::ResetPassword => "Preparing the fix for",
        }
    }
}

/// An ambiguous name waiting for the person to pick one of the candidates.
#[derive(Clone)]
pub struct PendingPick {
    pub kind: Kind,
    pub options: CheckOptions,
    pub candidates: Vec<VmSummary>,
    /// The identity of the person who asked (`discord:<id>`): nobody else may pick.
    pub requester: String,
    pub created: Instant,
}

/// Runs Microsoft's Remote Desktop troubleshooting runbook against an Azure VM.
#[poise::command(
    slash_command,
    subcommands(
        "check",
        "health",
        "console",
        "explain",
        "help",
        "super::sweep::sweep",
        "super::fixes::start",
        "super::fixes::restart",
        "super::fixes::redeploy",
        "super::fixes::reset_config",
        "super::fixes::reset_password",
        "super::fixes::open_rdp",
        "super::fixes::audit",
        "super::fixes::permissions"
    ),
    subcommand_required
)]
pub async fn rdp(_ctx: Context<'_>) -> Result<(), Error> {
    Ok(())
}

/// The person and place of a slash command.
pub(super) fn command_caller(interaction: &CommandInteraction) -> Caller {
    caller(
        &interaction.user,
        interaction.member.as_deref(),
        interaction.guild_id,
        interaction.channel_id,
    )
}

/// Only VMs the person may read, and nothing outside the served guilds and channels.
pub(super) async fn autocomplete_vm(ctx: Context<'_>, partial: &str) -> CreateAutocompleteResponse {
    let Some(interaction) = command_interaction(&ctx) else {
        return CreateAutocompleteResponse::new();
    };
    let choices = ctx
        .data()
        .door
        .suggest(&command_caller(interaction), partial, 25)
        .into_iter()
        .map(|(label, value)| serenity::all::AutocompleteChoice::new(label, value))
        .collect();
    CreateAutocompleteResponse::new().set_choices(choices)
}

pub(super) fn command_interaction<'a>(ctx: &Context<'a>) -> Option<&'a CommandInteraction> {
    match ctx {
        poise::Context::Application(app) => Some(app.interaction),
        poise::Context::Prefix(_) => None,
    }
}

/// Check why Remote Desktop to a VM fails: power, agent, public IP, NSG, health, boot diagnostics
#[poise::command(slash_command)]
pub async fn check(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
    #[description = "Test TCP 3389 from this IPv4 address (yours) instead of the whole Internet"]
    from: Option<String>,
) -> Result<(), Error> {
    let from = match parse_from(from.as_deref()) {
        Ok(from) => from,
        Err(notice) => return refuse(ctx, *notice).await,
    };
    start(ctx, Kind::Check, &vm, CheckOptions { from }).await
}

/// The `from` option: empty, or an IPv4 address; otherwise what to tell the person.
pub(super) fn parse_from(
    from: Option<&str>,
) -> Result<Option<std::net::Ipv4Addr>, Box<CreateEmbed>> {
    match from.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            Box::new(render::notice(
                "That is not an IPv4 address",
                &format!("`from` must be an IPv4 address such as 203.0.113.7, not {text:?}."),
            ))
        }),
    }
}

/// Azure Resource Health of a VM
#[poise::command(slash_command)]
pub async fn health(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    start(ctx, Kind::Health, &vm, CheckOptions::default()).await
}

/// Boot diagnostics of a VM: console screenshot and serial log tail
#[poise::command(slash_command)]
pub async fn console(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    start(ctx, Kind::Console, &vm, CheckOptions::default()).await
}

/// Explain a Remote Desktop client error message: cause and fix
#[poise::command(slash_command)]
pub async fn explain(
    ctx: AppContext<'_>,
    #[description = "The error text the Remote Desktop client shows"]
    #[max_length = 1000]
    error: String,
) -> Result<(), Error> {
    // No Azure request: the answer is the first response.
    let matches = ctx.data().door.catalog().explain(&error);
    ctx.send(public(render::explain(&matches, &error))).await?;
    Ok(())
}

/// What rdp-doctor can do
#[poise::command(slash_command)]
pub async fn help(ctx: AppContext<'_>) -> Result<(), Error> {
    ctx.send(private(render::help())).await?;
    Ok(())
}

/// A message everyone in the channel sees, mentioning nobody (poise's framework default is set
/// too, but each reply says so itself).
pub(super) fn public(embed: CreateEmbed) -> CreateReply {
    CreateReply::default()
        .embed(embed)
        .allowed_mentions(CreateAllowedMentions::new())
}

/// A message only the person who asked sees.
pub(super) fn private(embed: CreateEmbed) -> CreateReply {
    public(embed).ephemeral(true)
}

/// Step 1 of every command (see the module's note): a mistake in the options, answered at once
/// and privately as the first response. Nothing was acknowledged, nothing asked of Azure.
pub(super) async fn refuse(ctx: AppContext<'_>, embed: CreateEmbed) -> Result<(), Error> {
    ctx.send(private(embed)).await?;
    Ok(())
}

/// Who sees a deferred command's answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Audience {
    /// The channel ("rdp-doctor is thinking…", then the answer).
    Channel,
    /// The person who asked.
    Requester,
}

/// Step 2 of every command that asks Azure (see the module's note): acknowledge with poise's
/// deferral, before the first Azure request; the answer is then edited into the deferred
/// response.
pub(super) async fn acknowledge(
    ctx: AppContext<'_>,
    audience: Audience,
) -> Result<Surface<'_>, Error> {
    match audience {
        Audience::Channel => ctx.defer().await?,
        Audience::Requester => ctx.defer_ephemeral().await?,
    }
    Ok(Surface::command(ctx, audience == Audience::Requester))
}

/// A VM option that cannot name a VM: what to tell the person (step 1, no I/O).
pub(super) fn parse_vm(vm: &str) -> Result<(), Box<CreateEmbed>> {
    VmQuery::parse(vm)
        .map(|_| ())
        .map_err(|e| Box::new(render::notice("Cannot look that up", &e.to_string())))
}

/// Validate, acknowledge, find the VM (among those the person may read), run.
async fn start(
    ctx: AppContext<'_>,
    kind: Kind,
    vm: &str,
    options: CheckOptions,
) -> Result<(), Error> {
    if let Err(notice) = parse_vm(vm) {
        return refuse(ctx, *notice).await;
    }
    let surface = acknowledge(ctx, Audience::Channel).await?;
    surface.show(View::embed(render::looking_up(vm))).await;
    let caller = command_caller(ctx.interaction);
    if let Some(summary) = find(ctx.data(), &surface, &caller, &kind, vm, &options).await {
        run(ctx.data(), &surface, &caller, kind, summary, &options).await;
    }
    Ok(())
}

/// Resolve `vm` for `caller`; on ambiguity show the private "which VM?" menu, on anything else
/// the reason. `None`: the person has been answered.
pub(super) async fn find(
    bot: &Bot,
    surface: &Surface<'_>,
    caller: &Caller,
    kind: &Kind,
    vm: &str,
    options: &CheckOptions,
) -> Option<VmSummary> {
    let needed = bot.door.catalog().commands.check;
    match bot.door.resolve(caller, vm, needed).await {
        Ok(summary) => Some(summary),
        Err(DoorError::Ambiguous { name, candidates }) => {
            // Ask privately which one; the public "thinking…" goes away. The menu holds at most
            // 25 options; the candidates are already sorted by subscription and group.
            let candidates: Vec<VmSummary> = candidates
                .into_iter()
                .take(25)
                .map(VmSummary::unlisted)
                .collect();
            surface.retract().await;
            let nonce = bot.remember_pick(PendingPick {
                kind: kind.clone(),
                options: options.clone(),
                candidates: candidates.clone(),
                requester: caller.actor.id.clone(),
                created: Instant::now(),
            });
            let menu = pick_menu(nonce, &candidates);
            surface
                .whisper(
                    render::notice(
                        &format!("{} VMs are named {name}", candidates.len()),
                        "Pick the one you mean (subscription / resource group):",
                    ),
                    vec![menu],
                )
                .await;
            None
        }
        Err(e) if e.is_user_error() => {
            surface.retract().await;
            surface
                .whisper(door_notice(user_error_title(&e), &e), Vec::new())
                .await;
            None
        }
        Err(e) => {
            surface
                .show(View::embed(door_notice("Azure error", &e)))
                .await;
            None
        }
    }
}

/// The one way the bot words a failure that came through the door: the person's mistake and
/// Azure's answer in words under `title`; rdp-doctor's own failure (its database) as "internal
/// error, reference X", the details logged under the same X.
pub(super) fn door_notice(title: &str, e: &DoorError) -> CreateEmbed {
    if e.is_internal() {
        let reference = super::internal_error(e, "door");
        render::notice("Internal error", &super::internal_error_text(&reference))
    } else {
        render::notice(title, &e.to_string())
    }
}

/// The title of a private refusal.
pub(super) fn user_error_title(e: &DoorError) -> &'static str {
    match e {
        DoorError::Fenced(_) => "Not here",
        DoorError::Denied(_) => "Not allowed",
        DoorError::NotFound { .. } => "Cannot find that VM",
        DoorError::Unserved { .. } => "Not a subscription rdp-doctor serves",
        _ => "Cannot do that",
    }
}

pub(super) fn pick_menu(nonce: Key, candidates: &[VmSummary]) -> CreateActionRow {
    let options = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            CreateSelectMenuOption::new(
                render::clip(&format!("{}/{}", c.vm.resource_group, c.vm.name), 100),
                i.to_string(),
            )
            .description(render::clip(
                &format!("subscription {}", c.vm.subscription_id),
                100,
            ))
        })
        .collect();
    CreateActionRow::SelectMenu(
        CreateSelectMenu::new(
            ComponentId::Pick { nonce }.to_string(),
            CreateSelectMenuKind::String { options },
        )
        .placeholder("Which VM?"),
    )
}

/// A choice in the "which VM?" menu: only its requester's, and authorised again by whatever
/// runs next.
pub async fn picked(
    http: Arc<Http>,
    bot: &Bot,
    caller: &Caller,
    component: &ComponentInteraction,
    nonce: Key,
) -> Result<(), Error> {
    // Raw calls: a menu choice comes outside any command invocation; poise cannot answer it.
    let index = match &component.data.kind {
        ComponentInteractionDataKind::StringSelect { values } => {
            values.first().and_then(|v| v.parse::<usize>().ok())
        }
        _ => None,
    };
    let pending = bot.take_pick(nonce, &caller.actor.id);
    let chosen = pending
        .as_ref()
        .and_then(|p| index.and_then(|i| p.candidates.get(i).cloned().map(|c| (p.clone(), c))));
    let Some((pending, summary)) = chosen else {
        let update = CreateInteractionResponseMessage::new()
            .embed(render::notice(
                "This menu has expired",
                "Run the command again to pick a VM.",
            ))
            .components(Vec::new());
        component
            .create_response(&*http, CreateInteractionResponse::UpdateMessage(update))
            .await?;
        return Ok(());
    };
    if pending.kind == Kind::ResetPassword {
        // The form is the answer to the pick itself (a modal must be a first response).
        return super::fixes::open_password_form(&http, bot, caller, component, &summary).await;
    }
    let update = CreateInteractionResponseMessage::new()
        .embed(render::notice(
            &format!(
                "{} {}/{}",
                pending.kind.verb(),
                summary.vm.resource_group,
                summary.vm.name
            ),
            "The answer follows in the channel.",
        ))
        .components(Vec::new());
    component
        .create_response(&*http, CreateInteractionResponse::UpdateMessage(update))
        .await?;
    let created = Instant::now();
    let follow_up = CreateInteractionResponseFollowup::new()
        .embed(render::looking_up(&summary.vm.name))
        .allowed_mentions(CreateAllowedMentions::new());
    let message = component.create_followup(&*http, follow_up).await?;
    let surface = Surface::follow_up(
        http.clone(),
        &component.token,
        message.id,
        component.channel_id,
        created,
    );
    run(
        bot,
        &surface,
        caller,
        pending.kind,
        summary,
        &pending.options,
    )
    .await;
    Ok(())
}

/// Run a resolved request and render it on `surface`.
async fn run(
    bot: &Bot,
    surface: &Surface<'_>,
    caller: &Caller,
    kind: Kind,
    summary: VmSummary,
    options: &CheckOptions,
) {
    let catalog = bot.door.catalog();
    match kind {
        Kind::Check => run_check(bot, surface, caller, summary, options).await,
        Kind::Health => {
            surface
                .show(View::embed(render::progress(
                    catalog,
                    &summary.vm,
                    &BTreeMap::new(),
                )))
                .await;
            match bot.door.health(caller, &summary.vm).await {
                Ok(finding) => {
                    surface
                        .show(View::embed(render::health(catalog, &summary.vm, &finding)))
                        .await
                }
                Err(e) => show_error(surface, &e).await,
            }
        }
        Kind::Console => match bot.door.console(caller, &summary).await {
            Ok(console) => {
                let message = render::console(catalog, &summary.vm, &console);
                surface
                    .show(View {
                        content: None,
                        embeds: message.embeds,
                        attachment: message.screenshot,
                        components: Vec::new(),
                    })
                    .await;
            }
            Err(e) => show_error(surface, &e).await,
        },
        Kind::Fix(fix) => super::fixes::ask(bot, surface, caller, &summary, fix.request()).await,
        // Answered with the form in `picked`.
        Kind::ResetPassword => surface.retract().await,
    }
}

/// A refusal privately, anything else in the message.
pub(super) async fn show_error(surface: &Surface<'_>, e: &DoorError) {
    if e.is_user_error() {
        surface.retract().await;
        surface
            .whisper(door_notice(user_error_title(e), e), Vec::new())
            .await;
    } else {
        surface
            .show(View::embed(door_notice("Azure error", e)))
            .await;
    }
}

pub(super) async fn run_check(
    bot: &Bot,
    surface: &Surface<'_>,
    caller: &Caller,
    summary: VmSummary,
    options: &CheckOptions,
) {
    let catalog = bot.door.catalog();
    let vm = summary.vm.clone();
    let listed = summary.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    // One edit per batch of finished steps, in order; a slow edit never holds up the checks.
    let progress = async {
        let mut done: BTreeMap<CheckId, Status> = BTreeMap::new();
        surface
            .show(View::embed(render::progress(catalog, &vm, &done)))
            .await;
        while let Some(event) = rx.recv().await {
            let mut changed = apply(&mut done, event);
            while let Ok(more) = rx.try_recv() {
                changed |= apply(&mut done, more);
            }
            if changed {
                surface
                    .show(View::embed(render::progress(catalog, &vm, &done)))
                    .await;
            }
        }
    };
    let checks = async {
        let sink = tx;
        bot.door
            .check_vm(caller, summary, options, &move |e| {
                let _ = sink.send(e);
            })
            .await
    };
    let (result, ()) = tokio::join!(checks, progress);
    match result {
        Ok(report) => {
            let message = render::report(catalog, &report);
            surface
                .show(View {
                    content: None,
                    embeds: message.embeds,
                    attachment: message.screenshot,
                    components: super::fixes::report_buttons(bot, &listed, report.next_action),
                })
                .await;
        }
        Err(e) => show_error(surface, &e).await,
    }
}

fn apply(done: &mut BTreeMap<CheckId, Status>, event: Event) -> bool {
    match event {
        Event::StepFinished(f) => {
            done.insert(f.step, f.status);
            true
        }
        Event::Resolved(_) | Event::StepStarted(_) => false,
    }
}
