//! The `/rdp` slash commands that read (`check`, `health`, `console`, `explain`, `help`), the
//! "which VM?" menu's answer, and running a resolved request. Each stays thin: turn options into
//! a runbook request, acknowledge within Discord's 3 seconds (before any Azure call), run, render,
//! in the order of `steps`.

use super::fixes::vm_key;
use super::ids::{ComponentId, Key};
use super::render;
use super::steps::{
    acknowledge, autocomplete_vm, command_caller, door_notice, find, parse_from, parse_vm, private,
    public, refuse, show_error, user_error_title, Audience, Kind,
};
use super::surface::{Surface, View};
use super::transport::{Ack, Cmd};
use super::{AppContext, Bot, Error};
use crate::diagnose::{CheckId, Status};
use crate::domain::VmSummary;
use crate::runbook::door::Caller;
use crate::runbook::{CheckOptions, Event};
use serenity::all::{
    ComponentInteraction, CreateAllowedMentions, CreateInteractionResponse,
    CreateInteractionResponseFollowup, CreateInteractionResponseMessage, Http,
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

/// Who changed what on a VM, its NICs, NSGs, subnet and route table (the Activity Log)
#[poise::command(slash_command)]
pub async fn changes(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    start(ctx.into(), Kind::Changes, &vm, CheckOptions::default()).await
}

/// Look inside Windows with Run Command: Remote Desktop, TermService, listener, firewall, certificate…
#[poise::command(slash_command)]
pub async fn guest(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    guest_in(ctx.into(), &vm).await
}

/// `/rdp guest`: a person below the `guest` level is refused privately as the first response,
/// before anything is asked of Azure (the door authorises the VM itself again).
pub(super) async fn guest_in(cmd: Cmd<'_>, vm: &str) -> Result<(), Error> {
    if let Err(notice) = parse_vm(vm) {
        return refuse(cmd, *notice).await;
    }
    let caller = command_caller(cmd.interaction);
    if let Err(e) = cmd.bot.door.may_look_inside_any(&caller) {
        return refuse(cmd, door_notice(user_error_title(&e), &e)).await;
    }
    start(cmd, Kind::Guest, vm, CheckOptions::default()).await
}

/// The "Look inside the VM" button under a report (`rdp:guest:<vm key>`): refused privately,
/// before any Azure request, to a person below the `guest` level; otherwise the VM's checks and
/// guest checks in a new message.
pub async fn guest_button(
    http: Arc<Http>,
    ack: &Ack,
    bot: &Bot,
    caller: &Caller,
    component: &ComponentInteraction,
    key: Key,
) -> Result<(), Error> {
    // Raw calls: a click comes outside any command invocation; poise cannot answer it.
    if let Err(e) = bot.door.may_look_inside_any(caller) {
        ack.respond(private_reply(door_notice(user_error_title(&e), &e)))
            .await?;
        return Ok(());
    }
    let summary = match bot.door.vm_by(caller, |v| vm_key(&v.vm.id) == key).await {
        Ok(Some(summary)) => summary,
        Ok(None) => {
            ack.respond(private_reply(render::notice(
                "Cannot do that",
                "This button no longer matches a VM you may read. Run `/rdp guest` instead.",
            )))
            .await?;
            return Ok(());
        }
        Err(e) => {
            ack.respond(private_reply(door_notice(user_error_title(&e), &e)))
                .await?;
            return Ok(());
        }
    };
    if let Err(e) = bot.door.may_look_inside(caller, &summary.vm) {
        ack.respond(private_reply(door_notice(user_error_title(&e), &e)))
            .await?;
        return Ok(());
    }
    // A new public message for the guest checks; the report stays as it was.
    let surface =
        Surface::new_message(http.clone(), ack, &component.token, component.channel_id).await?;
    run_check(
        bot,
        &surface,
        caller,
        summary,
        &CheckOptions::default(),
        true,
    )
    .await;
    Ok(())
}

/// A private first response to a button.
fn private_reply(embed: serenity::all::CreateEmbed) -> CreateInteractionResponse {
    CreateInteractionResponse::Message(
        CreateInteractionResponseMessage::new()
            .embed(embed)
            .ephemeral(true)
            .allowed_mentions(CreateAllowedMentions::new()),
    )
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
    let index = super::chosen_index(component);
    let pending = match bot.take_pick(nonce, caller).await {
        Ok(pending) => pending,
        Err(e) => {
            let update = CreateInteractionResponseMessage::new()
                .embed(door_notice("Cannot pick that", &e))
                .components(Vec::new());
            ack.respond(CreateInteractionResponse::UpdateMessage(update))
                .await?;
            return Ok(());
        }
    };
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
        Kind::Check => run_check(bot, surface, caller, summary, options, false).await,
        Kind::Guest => run_check(bot, surface, caller, summary, options, true).await,
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
        Kind::Changes => {
            let window = bot.door.changes_window();
            match bot.door.changes(caller, &summary.vm, window).await {
                Ok(changes) => {
                    surface
                        .show(View::embed(render::changes(&summary.vm, &changes)))
                        .await
                }
                Err(e) => show_error(surface, &e).await,
            }
        }
    }
}

/// The checks of a VM on `surface`, and with `guest` the guest checks: the ARM report is shown
/// as soon as it is in, with a line saying Run Command is running, and the guest findings are
/// edited into the same message when it answers.
pub(super) async fn run_check(
    bot: &Bot,
    surface: &Surface<'_>,
    caller: &Caller,
    summary: VmSummary,
    options: &CheckOptions,
    guest: bool,
) {
    let catalog = bot.door.catalog();
    let vm = summary.vm.clone();
    let listed = summary.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    // One edit per batch of finished steps, in order; a slow edit never holds up the checks.
    let progress = async {
        let mut done: BTreeMap<CheckId, Status> = BTreeMap::new();
        let mut arm_report = None;
        surface
            .show(View::embed(render::progress(catalog, &vm, &done)))
            .await;
        while let Some(event) = rx.recv().await {
            let mut changed = apply(&mut done, &mut arm_report, event);
            while let Ok(more) = rx.try_recv() {
                changed |= apply(&mut done, &mut arm_report, more);
            }
            if !changed {
                continue;
            }
            match &arm_report {
                // Once the ARM report is shown, it stays until the guest findings replace it.
                Some(report) => {
                    let message =
                        render::report_with_note(catalog, report, Some(render::GUEST_RUNNING));
                    surface
                        .show(View {
                            content: None,
                            embeds: message.embeds,
                            attachment: message.screenshot,
                            components: report_components(bot, &listed, report.next_action),
                        })
                        .await;
                }
                None => {
                    surface
                        .show(View::embed(render::progress(catalog, &vm, &done)))
                        .await
                }
            }
        }
    };
    let checks = async {
        let sink = tx;
        let events = move |e| {
            let _ = sink.send(e);
        };
        if guest {
            bot.door.guest_vm(caller, summary, options, &events).await
        } else {
            bot.door.check_vm(caller, summary, options, &events).await
        }
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
                    components: report_components(bot, &listed, report.next_action),
                })
                .await;
        }
        Err(e) => show_error(surface, &e).await,
    }
}

/// The buttons under a report: the fix it recommends, and "Look inside the VM".
pub(super) fn report_components(
    bot: &Bot,
    vm: &VmSummary,
    next: Option<crate::diagnose::ActionId>,
) -> Vec<serenity::all::CreateActionRow> {
    let mut rows = super::fixes::report_buttons(bot, vm, next);
    rows.push(serenity::all::CreateActionRow::Buttons(vec![
        serenity::all::CreateButton::new(
            ComponentId::Guest {
                vm: vm_key(&vm.vm.id),
            }
            .to_string(),
        )
        .label("Look inside the VM")
        .style(serenity::all::ButtonStyle::Secondary),
    ]));
    rows
}

/// What an event changes: a finished step (until the ARM report is in), or the ARM report.
fn apply(
    done: &mut BTreeMap<CheckId, Status>,
    arm_report: &mut Option<crate::runbook::Report>,
    event: Event,
) -> bool {
    match event {
        Event::StepFinished(f) if arm_report.is_none() => {
            done.insert(f.step, f.status);
            true
        }
        Event::ArmChecked(report) => {
            *arm_report = Some(*report);
            true
        }
        Event::StepFinished(_)
        | Event::Resolved(_)
        | Event::StepStarted(_)
        | Event::GuestStarted => false,
    }
}
