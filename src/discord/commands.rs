//! The `/rdp` slash commands that read (`check`, `health`, `console`, `explain`, `help`), the
//! "which VM?" menu's answer, and running a resolved request. Each stays thin: turn options into
//! a runbook request, acknowledge within Discord's 3 seconds (before any Azure call), run, render,
//! in the order of `steps`.

use super::ids::Key;
use super::render;
use super::steps::{
    acknowledge, autocomplete_vm, command_caller, door_notice, find, parse_from, parse_vm, private,
    public, refuse, user_error_title, Audience, Kind,
};
use super::surface::{Surface, View};
use super::transport::{Ack, Cmd};
use super::{AppContext, Bot, Error};
use crate::diagnose::{CheckId, Status};
use crate::domain::VmSummary;
use crate::runbook::door::{Caller, DoorError};
use crate::runbook::{CheckOptions, Event};
use serenity::all::{
    ComponentInteraction, ComponentInteractionDataKind, CreateAllowedMentions,
    CreateInteractionResponse, CreateInteractionResponseFollowup, CreateInteractionResponseMessage,
    Http,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

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
    check_in(ctx.into(), &vm, from.as_deref()).await
}

pub(super) async fn check_in(cmd: Cmd<'_>, vm: &str, from: Option<&str>) -> Result<(), Error> {
    let from = match parse_from(from) {
        Ok(from) => from,
        Err(notice) => return refuse(cmd, *notice).await,
    };
    start(cmd, Kind::Check, vm, CheckOptions { from }).await
}

/// Azure Resource Health of a VM
#[poise::command(slash_command)]
pub async fn health(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    start(ctx.into(), Kind::Health, &vm, CheckOptions::default()).await
}

/// Boot diagnostics of a VM: console screenshot and serial log tail
#[poise::command(slash_command)]
pub async fn console(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    start(ctx.into(), Kind::Console, &vm, CheckOptions::default()).await
}

/// Explain a Remote Desktop client error message: cause and fix
#[poise::command(slash_command)]
pub async fn explain(
    ctx: AppContext<'_>,
    #[description = "The error text the Remote Desktop client shows"]
    #[max_length = 1000]
    error: String,
) -> Result<(), Error> {
    explain_in(ctx.into(), &error).await
}

pub(super) async fn explain_in(cmd: Cmd<'_>, error: &str) -> Result<(), Error> {
    // No Azure request: the answer is the first response.
    let catalog = cmd.bot.door.catalog();
    let matches = catalog.explain(error);
    let closest = if matches.is_empty() {
        catalog.closest(error, 3)
    } else {
        Vec::new()
    };
    cmd.send(public(render::explain(&matches, &closest, error)))
        .await
}

/// What rdp-doctor can do
#[poise::command(slash_command)]
pub async fn help(ctx: AppContext<'_>) -> Result<(), Error> {
    help_in(ctx.into()).await
}

pub(super) async fn help_in(cmd: Cmd<'_>) -> Result<(), Error> {
    cmd.send(private(render::help())).await
}

/// Validate, acknowledge, find the VM (among those the person may read), run.
pub(super) async fn start(
    cmd: Cmd<'_>,
    kind: Kind,
    vm: &str,
    options: CheckOptions,
) -> Result<(), Error> {
    if let Err(notice) = parse_vm(vm) {
        return refuse(cmd, *notice).await;
    }
    let surface = acknowledge(cmd, Audience::Channel).await?;
    surface.show(View::embed(render::looking_up(vm))).await;
    let caller = command_caller(cmd.interaction);
    if let Some(summary) = find(cmd.bot, &surface, &caller, &kind, vm, &options).await {
        run(cmd.bot, &surface, &caller, kind, summary, &options).await;
    }
    Ok(())
}

/// A choice in the "which VM?" menu: only its requester's, and authorised again by whatever
/// runs next.
pub async fn picked(
    http: Arc<Http>,
    ack: &Ack,
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
        ack.respond(CreateInteractionResponse::UpdateMessage(update))
            .await?;
        return Ok(());
    };
    if pending.kind == Kind::ResetPassword {
        // The form is the answer to the pick itself (a modal must be a first response).
        return super::fixes::open_password_form(ack, bot, caller, &summary).await;
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
    ack.respond(CreateInteractionResponse::UpdateMessage(update))
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
