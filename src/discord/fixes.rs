//! The runbook's fixes in the war room: `/rdp restart vm` and friends, the fix button under a
//! report, the confirmation prompt with Confirm / Cancel, the password modal, `/rdp audit`, and
//! resuming operations after a restart. Everything that decides lives in `runbook::operate`;
//! this file turns clicks into its calls and its answers into messages.
//!
//! Component ids (`ids::ComponentId`) are restart-safe: `rdp:fix:<action>:<vm key>` (the VM is
//! found again in the VM directory), `rdp:confirm:<id>` / `rdp:cancel:<id>` (the confirmation
//! lives in the database), `rdp:pw:<vm key>` (the password modal).

use super::ids::{ComponentId, ConfirmationKey, Key};
use super::render::{self, clip};
use super::steps::{
    acknowledge, autocomplete_vm, command_caller, command_interaction, door_notice, find, parse_vm,
    refuse, user_error_title, Audience, FixKind, Kind,
};
use super::surface::{Surface, View};
use super::transport::{Ack, Cmd};
use super::{AppContext, Bot, Context, Error};
use crate::diagnose::ActionId;
use crate::domain::VmSummary;
use crate::runbook::door::{Caller, Door, DoorError};
use crate::runbook::fix::{self, FixRequest};
use crate::runbook::operate::{format_time, OperateError, Outcome, Progress, Prompt};
use crate::runbook::CheckOptions;
use serenity::all::{
    ButtonStyle, ChannelId, ComponentInteraction, CreateActionRow, CreateAllowedMentions,
    CreateButton, CreateEmbed, CreateInputText, CreateInteractionResponse,
    CreateInteractionResponseFollowup, CreateInteractionResponseMessage, CreateMessage,
    CreateModal, EditMessage, Http, InputTextStyle, MessageFlags, MessageId, ModalInteraction,
};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// A short, stable key for a VM id (fits in a component id; the same after a restart).
pub fn vm_key(id: &str) -> Key {
    // FNV-1a: stable across processes, unlike std's randomly seeded hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.to_ascii_lowercase().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Key(hash)
}

/// Slash commands pass the fence (guild, channel, a policy at all) before anything else.
pub async fn channel_check(ctx: Context<'_>) -> Result<bool, Error> {
    let Some(interaction) = command_interaction(&ctx) else {
        return Ok(false);
    };
    match ctx.data().door.admit(&command_caller(interaction)) {
        Ok(()) => Ok(true),
        // Autocomplete takes only choices: none. Poise has no reply for a refused autocomplete.
        Err(_)
            if matches!(ctx, poise::Context::Application(app)
                if app.interaction_type == poise::CommandInteractionType::Autocomplete) =>
        {
            let none = CreateInteractionResponse::Autocomplete(
                serenity::all::CreateAutocompleteResponse::new(),
            );
            interaction.create_response(ctx.http(), none).await?;
            Ok(false)
        }
        Err(e) => {
            ctx.send(super::steps::private(render::notice(
                "Not here",
                &e.to_string(),
            )))
            .await?;
            Ok(false)
        }
    }
}

fn button(action: ActionId, vm: &VmSummary, label: &str) -> CreateButton {
    let style = match action {
        ActionId::Redeploy | ActionId::OpenRdpPort | ActionId::ResetPassword => ButtonStyle::Danger,
        ActionId::Start | ActionId::Restart | ActionId::ResetRdpConfig => ButtonStyle::Primary,
        ActionId::RemoveRoute => ButtonStyle::Danger,
        ActionId::RequestJit => ButtonStyle::Primary,
        a if a.is_guest() => ButtonStyle::Primary,
        _ => ButtonStyle::Danger,
    };
    let id = ComponentId::Fix {
        action,
        vm: vm_key(&vm.vm.id),
    };
    CreateButton::new(id.to_string())
        .label(clip(label, 80))
        .style(style)
}

/// The fix button under a report: the runbook's next action, if any. Beside moving the RDP
/// listener back to 3389 (`reset-rdp-port`), opening the NSG for the port it is on is offered
/// too.
pub fn report_buttons(bot: &Bot, vm: &VmSummary, next: Option<ActionId>) -> Vec<CreateActionRow> {
    let Some(action) = next else {
        return Vec::new();
    };
    let title = |action: ActionId| {
        bot.door
            .catalog()
            .step(action)
            .map(|s| s.title.clone())
            .unwrap_or_else(|| action.as_str().to_string())
    };
    let mut buttons = vec![button(action, vm, &title(action))];
    if action == ActionId::ResetRdpPort {
        buttons.push(button(
            ActionId::OpenRdpPort,
            vm,
            "Or open the NSG for the listener's port",
        ));
    }
    vec![CreateActionRow::Buttons(buttons)]
}

fn prompt_embed(prompt: &Prompt) -> CreateEmbed {
    let vm = &prompt.plan.vm;
    let mut text = format!(
        "VM **{}** · resource group `{}` · subscription `{}`\n\n",
        vm.name, vm.resource_group, vm.subscription_id
    );
    for note in &prompt.notes {
        text.push_str(&format!("{note}\n\n"));
    }
    for line in &prompt.plan.consequences {
        text.push_str(&format!("• {line}\n"));
    }
    for warning in &prompt.plan.warnings {
        text.push_str(&format!("\n⚠️ **{warning}**\n"));
    }
    text.push_str(&format!(
        "\nRequested by {}. Expires {}.{}",
        prompt.requester,
        format_time(prompt.expires_ms),
        if prompt.two_person {
            " **Needs a second person**: someone other than the requester must confirm."
        } else {
            ""
        }
    ));
    CreateEmbed::new()
        .title(clip(
            &format!("Confirm: {}?", prompt.plan.headline),
            render::MAX_TITLE,
        ))
        .description(clip(&text, render::MAX_DESCRIPTION))
        .colour(serenity::all::Colour(0xE6_7E_22))
}

fn prompt_buttons(prompt: &Prompt) -> Result<Vec<CreateActionRow>, UnknownConfirmation> {
    // The store makes confirmation ids; one a button cannot carry is rdp-doctor's bug.
    let id: ConfirmationKey = prompt
        .confirmation_id
        .parse()
        .map_err(|_| UnknownConfirmation)?;
    Ok(vec![CreateActionRow::Buttons(vec![
        CreateButton::new(ComponentId::Confirm(id).to_string())
            .label("Confirm")
            .style(ButtonStyle::Danger),
        CreateButton::new(ComponentId::Cancel(id).to_string())
            .label("Cancel")
            .style(ButtonStyle::Secondary),
    ])])
}

/// A confirmation id from the store that is not 32 lowercase hex digits.
#[derive(Debug, thiserror::Error)]
#[error("the store made a confirmation id a button cannot carry")]
struct UnknownConfirmation;

fn outcome_embed(outcome: &Outcome) -> CreateEmbed {
    let (title, colour) = match &outcome.result {
        Ok(()) => (
            format!(
                "✅ {} of {} succeeded",
                outcome.action.as_str(),
                outcome.vm.name
            ),
            serenity::all::Colour(0x2E_CC_71),
        ),
        Err(_) if outcome.still_running => (
            format!(
                "⏳ {} of {} is still running",
                outcome.action.as_str(),
                outcome.vm.name
            ),
            serenity::all::Colour(0xF1_C4_0F),
        ),
        Err(_) => (
            format!(
                "❌ {} of {} failed",
                outcome.action.as_str(),
                outcome.vm.name
            ),
            serenity::all::Colour(0xE7_4C_3C),
        ),
    };
    let mut text = format!("Confirmed by {}.\n", outcome.confirmed_by);
    if let Err(e) = &outcome.result {
        text.push_str(&format!("\n{e}\n"));
    }
    for note in &outcome.notes {
        text.push_str(&format!("\n{note}\n"));
    }
    if let Some(settling) = &outcome.still_settling {
        text.push_str(&format!("\n⏳ {settling}\n"));
    }
    if let Some(after) = &outcome.after {
        text.push_str(&format!(
            "\nChecked again: verdict **{}**.\n",
            after.verdict.as_str()
        ));
    }
    if outcome.result.is_ok() {
        if outcome.changes.is_empty() {
            text.push_str("No check changed status.\n");
        }
        for change in &outcome.changes {
            text.push_str(&format!("• {change}\n"));
        }
        text.push_str("\nAfter each step, try to connect again.");
    }
    CreateEmbed::new()
        .title(clip(&title, render::MAX_TITLE))
        .description(clip(&text, render::MAX_DESCRIPTION))
        .colour(colour)
}

fn error_embed(e: &DoorError) -> CreateEmbed {
    let title = match e {
        DoorError::Operate(OperateError::Denied(_)) => "Not allowed",
        DoorError::Operate(OperateError::Refused(_)) => "Not offered",
        DoorError::Operate(OperateError::Locked { .. }) => "The VM is busy",
        DoorError::Operate(OperateError::Arm(_)) | DoorError::Azure(_) => "Azure error",
        other if other.is_user_error() => user_error_title(other),
        _ => "Cannot do that",
    };
    door_notice(title, e)
}

/// Request a fix and show its prompt (Confirm / Cancel) on `surface`, or tell the person
/// privately why not.
pub(super) async fn ask(
    bot: &Bot,
    surface: &Surface<'_>,
    caller: &Caller,
    summary: &VmSummary,
    request: FixRequest,
) {
    match bot.door.request_fix(caller, summary, request).await {
        Ok(prompt) => match prompt_view(&prompt) {
            Ok(view) => surface.show(view).await,
            Err(e) => {
                let reference = super::internal_error(&e, "fix prompt");
                surface.show(View::embed(internal_notice(&reference))).await;
            }
        },
        Err(e) => {
            surface.retract().await;
            surface.whisper(error_embed(&e), Vec::new()).await;
        }
    }
}

/// The VM a component's key names, if the person may read it.
async fn vm_by_key(bot: &Bot, caller: &Caller, key: Key) -> Result<Option<VmSummary>, DoorError> {
    bot.door.vm_by(caller, |v| vm_key(&v.vm.id) == key).await
}

fn prompt_view(prompt: &Prompt) -> Result<View, UnknownConfirmation> {
    Ok(View {
        embeds: vec![prompt_embed(prompt)],
        components: prompt_buttons(prompt)?,
        ..View::default()
    })
}

/// Ask for a fix from a slash command: privately refused, a "which VM?" menu, or a public
/// prompt with buttons. The order of `commands`' note: validate, acknowledge, then the door.
pub(super) async fn request_from_command(
    cmd: Cmd<'_>,
    vm: &str,
    fix: FixKind,
) -> Result<(), Error> {
    if let Err(notice) = parse_vm(vm) {
        return refuse(cmd, *notice).await;
    }
    let bot = cmd.bot;
    let surface = acknowledge(cmd, Audience::Channel).await?;
    let caller = command_caller(cmd.interaction);
    let options = CheckOptions::default();
    let kind = Kind::Fix(fix.clone());
    let Some(summary) = find(bot, &surface, &caller, &kind, vm, &options).await else {
        return Ok(());
    };
    ask(bot, &surface, &caller, &summary, fix.request()).await;
    Ok(())
}

/// Start a stopped or deallocated VM (asks for confirmation)
#[poise::command(slash_command)]
pub async fn start(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    request_from_command(ctx.into(), &vm, FixKind::Start).await
}

/// Restart a VM (asks for confirmation)
#[poise::command(slash_command)]
pub async fn restart(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    request_from_command(ctx.into(), &vm, FixKind::Restart).await
}

/// Redeploy a VM to a new host (asks for confirmation by a second person)
#[poise::command(slash_command)]
pub async fn redeploy(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    request_from_command(ctx.into(), &vm, FixKind::Redeploy).await
}

/// Reset the Remote Desktop configuration with VMAccess (asks for confirmation)
#[poise::command(slash_command, rename = "reset-config")]
pub async fn reset_config(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    request_from_command(ctx.into(), &vm, FixKind::ResetRdpConfig).await
}

/// Allow inbound RDP (TCP 3389 or the listener's port) from a source in the blocking NSG (confirmed)
#[poise::command(slash_command, rename = "open-rdp")]
pub async fn open_rdp(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
    #[description = "Who may connect: IPv4 address, CIDR, service tag, or `anywhere`"]
    source: String,
    #[description = "The port the VM's RDP listener is on, if not 3389"]
    #[min = 1]
    #[max = 65535]
    port: Option<i64>,
) -> Result<(), Error> {
    open_rdp_in(ctx.into(), &vm, &source, port).await
}

pub(super) async fn open_rdp_in(
    cmd: Cmd<'_>,
    vm: &str,
    source: &str,
    port: Option<i64>,
) -> Result<(), Error> {
    let port = match port.map(u16::try_from) {
        None => crate::diagnose::nsg::RDP_PORT,
        Some(Ok(port)) if port > 0 => port,
        Some(_) => {
            let text = "`port` must be a TCP port, 1 to 65535.";
            return refuse(cmd, render::notice("Which port?", text)).await;
        }
    };
    match fix::parse_source(source) {
        Ok(source) => request_from_command(cmd, vm, FixKind::OpenRdp(source, port)).await,
        Err(e) => refuse(cmd, render::notice("Which source?", &e.to_string())).await,
    }
}

/// Ask just-in-time access to open TCP 3389 for your address (confirmed)
#[poise::command(slash_command, rename = "request-jit")]
pub async fn request_jit(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
    #[description = "Your public IPv4 address, which the port opens for"] from: String,
    #[description = "For how many hours (within the policy's maximum; 1 if not given)"]
    #[min = 1]
    #[max = 24]
    hours: Option<i64>,
) -> Result<(), Error> {
    request_jit_in(ctx.into(), &vm, &from, hours).await
}

pub(super) async fn request_jit_in(
    cmd: Cmd<'_>,
    vm: &str,
    from: &str,
    hours: Option<i64>,
) -> Result<(), Error> {
    let hours = match hours.map(u32::try_from) {
        None => None,
        Some(Ok(h)) if (1..=24).contains(&h) => Some(h),
        Some(_) => {
            let text = "`hours` must be 1 to 24, within the policy's maximum.";
            return refuse(cmd, render::notice("For how long?", text)).await;
        }
    };
    match from.trim().parse::<std::net::Ipv4Addr>() {
        Ok(source) => request_from_command(cmd, vm, FixKind::RequestJit(source, hours)).await,
        Err(_) => {
            let text = format!(
                "`from` must be your public IPv4 address (e.g. 203.0.113.9), not `{}`.",
                from.trim()
            );
            refuse(cmd, render::notice("From which address?", &text)).await
        }
    }
}

/// Reset a local administrator's password (opens a form; the password is never shown)
#[poise::command(slash_command, rename = "reset-password")]
pub async fn reset_password(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    reset_password_in(ctx.into(), &vm).await
}

pub(super) async fn reset_password_in(cmd: Cmd<'_>, vm: &str) -> Result<(), Error> {
    // A modal must be the first response: validate, find the VM in the VM list, without
    // Azure, and acknowledge with the form itself (no deferral: a deferred interaction cannot
    // open one).
    if let Err(notice) = parse_vm(vm) {
        return refuse(cmd, *notice).await;
    }
    let bot = cmd.bot;
    let caller = command_caller(cmd.interaction);
    let needed = bot.door.catalog().commands.check;
    let summary = match bot.door.resolve_listed(&caller, vm, needed).await {
        Ok(summary) => summary,
        Err(DoorError::Ambiguous { name, candidates }) => {
            // Which one? The form opens once the person has picked.
            let candidates: Vec<VmSummary> = candidates
                .into_iter()
                .take(25)
                .map(VmSummary::unlisted)
                .collect();
            let nonce = bot
                .offer_pick(
                    &caller,
                    super::steps::PendingPick {
                        kind: Kind::ResetPassword,
                        options: CheckOptions::default(),
                        candidates: candidates.clone(),
                        requester: caller.actor.id.clone(),
                        created: Instant::now(),
                        kept: false,
                    },
                )
                .await;
            let message = super::steps::private(render::notice(
                &format!("{} VMs are named {name}", candidates.len()),
                "Pick the one whose password to reset (subscription / resource group):",
            ))
            .components(vec![super::steps::pick_menu(nonce, &candidates)]);
            return cmd.send(message).await;
        }
        Err(DoorError::NotFound { .. }) => {
            return refuse(
                cmd,
                render::notice("Cannot find that VM", &format!("No VM named {vm} that you may read in the VM list (refreshed every minute). Check the name with `/rdp check`.")),
            )
            .await;
        }
        Err(e) => return refuse(cmd, error_embed(&e)).await,
    };
    if let Err(e) = bot
        .door
        .may_fix(&caller, ActionId::ResetPassword, &summary.vm)
    {
        return refuse(cmd, error_embed(&e)).await;
    }
    // Raw: poise's modals wait for the submission inside the command; this form is answered in
    // `on_form` under a restart-safe id (`rdp:pw:<vm key>`).
    let modal = password_modal(&summary);
    cmd.respond(CreateInteractionResponse::Modal(modal)).await
}

/// The password form as the answer to a component (the fix button, a "which VM?" pick), once
/// the person may reset passwords on that VM.
pub(super) async fn open_password_form(
    ack: &Ack,
    bot: &Bot,
    caller: &Caller,
    summary: &VmSummary,
) -> Result<(), Error> {
    // Raw calls: a click or menu choice comes outside any command invocation; poise cannot answer it.
    let response = match bot
        .door
        .may_fix(caller, ActionId::ResetPassword, &summary.vm)
    {
        Ok(()) => CreateInteractionResponse::Modal(password_modal(summary)),
        Err(e) => CreateInteractionResponse::Message(
            CreateInteractionResponseMessage::new()
                .ephemeral(true)
                .embed(error_embed(&e))
                .allowed_mentions(CreateAllowedMentions::new()),
        ),
    };
    ack.respond(response).await?;
    Ok(())
}

fn password_modal(summary: &VmSummary) -> CreateModal {
    CreateModal::new(
        ComponentId::Password {
            vm: vm_key(&summary.vm.id),
        }
        .to_string(),
        clip(&format!("Reset a password on {}", summary.vm.name), 45),
    )
    .components(vec![
        CreateActionRow::InputText(
            CreateInputText::new(InputTextStyle::Short, "Local user name", "user")
                .placeholder("azureadmin")
                .min_length(1)
                .max_length(20),
        ),
        CreateActionRow::InputText(
            CreateInputText::new(
                InputTextStyle::Short,
                "New password (12-123 characters)",
                "password",
            )
            .min_length(12)
            .max_length(123),
        ),
        CreateActionRow::InputText(
            CreateInputText::new(InputTextStyle::Short, "Repeat the new password", "repeat")
                .min_length(12)
                .max_length(123),
        ),
    ])
}

/// The value of a form's text input.
pub(super) fn modal_value(modal: &ModalInteraction, id: &str) -> Option<String> {
    modal
        .data
        .components
        .iter()
        .flat_map(|row| row.components.iter())
        .find_map(|c| match c {
            serenity::all::ActionRowComponent::InputText(t) if t.custom_id == id => t.value.clone(),
            _ => None,
        })
}

/// The password form was sent: check it, then show the confirmation prompt (no password in it).
pub async fn modal(
    http: Arc<Http>,
    ack: &Ack,
    bot: &Bot,
    caller: &Caller,
    modal: &ModalInteraction,
    key: Key,
) -> Result<(), Error> {
    // Raw calls: a form submission comes outside any command invocation; poise cannot answer it.
    tracing::debug!(custom_id = %modal.data.custom_id, "modal submitted");
    let ephemeral = |embed: CreateEmbed| {
        CreateInteractionResponse::Message(
            CreateInteractionResponseMessage::new()
                .ephemeral(true)
                .embed(embed)
                .allowed_mentions(CreateAllowedMentions::new()),
        )
    };
    let user = modal_value(modal, "user").unwrap_or_default();
    let password: secrecy::SecretString = modal_value(modal, "password").unwrap_or_default().into();
    let repeat = modal_value(modal, "repeat").unwrap_or_default();
    if secrecy::ExposeSecret::expose_secret(&password) != repeat.as_str() {
        ack.respond(ephemeral(render::notice(
            "Passwords differ",
            "The two passwords are not the same; nothing was sent.",
        )))
        .await?;
        return Ok(());
    }
    drop(repeat);
    let summary = match vm_by_key(bot, caller, key).await {
        Ok(Some(summary)) => summary,
        Ok(None) => {
            ack.respond(ephemeral(render::notice(
                "VM gone",
                "That VM is no longer in the VM list you may read.",
            )))
            .await?;
            return Ok(());
        }
        Err(e) => {
            ack.respond(ephemeral(error_embed(&e))).await?;
            return Ok(());
        }
    };
    let surface = Surface::new_message(http.clone(), ack, &modal.token, modal.channel_id).await?;
    let request = FixRequest::ResetPassword {
        username: user.trim().to_string(),
        password,
    };
    ask(bot, &surface, caller, &summary, request).await;
    Ok(())
}

fn internal_notice(reference: &str) -> CreateEmbed {
    render::notice("Internal error", &super::internal_error_text(reference))
}

fn private(embed: CreateEmbed) -> CreateInteractionResponse {
    CreateInteractionResponse::Message(
        CreateInteractionResponseMessage::new()
            .ephemeral(true)
            .embed(embed)
            .allowed_mentions(CreateAllowedMentions::new()),
    )
}

fn whisper(embed: CreateEmbed) -> CreateInteractionResponseFollowup {
    CreateInteractionResponseFollowup::new()
        .ephemeral(true)
        .embed(embed)
        .allowed_mentions(CreateAllowedMentions::new())
}

/// The fix button under a report (`rdp:fix:<action>:<vm key>`): the prompt, the password form,
/// or what to type for `open-rdp`.
pub async fn fix_button(
    http: Arc<Http>,
    ack: &Ack,
    bot: &Bot,
    caller: &Caller,
    component: &ComponentInteraction,
    action: ActionId,
    key: Key,
) -> Result<(), Error> {
    // Raw calls: a click comes outside any command invocation; poise cannot answer it.
    let summary = match vm_by_key(bot, caller, key).await {
        Ok(Some(summary)) => summary,
        Ok(None) => {
            ack.respond(private(render::notice(
                "Cannot do that",
                "This button no longer matches a VM you may read. Run `/rdp check` again.",
            )))
            .await?;
            return Ok(());
        }
        Err(e) => {
            ack.respond(private(error_embed(&e))).await?;
            return Ok(());
        }
    };
    let fix = match action {
        ActionId::ResetPassword => {
            return open_password_form(ack, bot, caller, &summary).await;
        }
        ActionId::RequestJit => {
            let text = format!("Use `/rdp request-jit vm:{}/{} from:YOUR.IP.ADDRESS` (and `hours:` within the policy's maximum): just-in-time access opens TCP 3389 for that address only.", summary.vm.resource_group, summary.vm.name);
            ack.respond(private(render::notice("From which address?", &text)))
                .await?;
            return Ok(());
        }
        ActionId::OpenRdpPort => {
            let text = format!("Use `/rdp open-rdp vm:{}/{} source:YOUR.IP.ADDRESS` (or a CIDR, a service tag, or `anywhere`). If the guest check found the RDP listener on another port, add `port:` with that port to open it instead of 3389.", summary.vm.resource_group, summary.vm.name);
            ack.respond(private(render::notice("Who should connect?", &text)))
                .await?;
            return Ok(());
        }
        ActionId::Start => FixKind::Start,
        ActionId::Restart => FixKind::Restart,
        ActionId::Redeploy => FixKind::Redeploy,
        ActionId::ResetRdpConfig => FixKind::ResetRdpConfig,
        ActionId::RemoveRoute => FixKind::RemoveRoute,
        guest if guest.is_guest() => FixKind::Guest(guest),
        other => {
            let text = format!("`{other}` cannot be run from a button yet.");
            ack.respond(private(render::notice("Not available", &text)))
                .await?;
            return Ok(());
        }
    };
    // A new public message for the prompt; the report stays as it was.
    let surface =
        Surface::new_message(http.clone(), ack, &component.token, component.channel_id).await?;
    ask(bot, &surface, caller, &summary, fix.request()).await;
    Ok(())
}

/// A prompt's Cancel button (`rdp:cancel:<id>`).
pub async fn cancel(
    http: Arc<Http>,
    ack: &Ack,
    bot: &Bot,
    caller: &Caller,
    component: &ComponentInteraction,
    confirmation: ConfirmationKey,
) -> Result<(), Error> {
    // Raw calls: a click comes outside any command invocation; poise cannot answer it.
    ack.respond(CreateInteractionResponse::Acknowledge).await?;
    match bot.door.cancel(caller, &confirmation.to_string()).await {
        Ok(()) => {
            let surface = Surface::original(
                http.clone(),
                &component.token,
                component.channel_id,
                Instant::now(),
            );
            surface
                .show(View::embed(render::notice(
                    "Cancelled",
                    &format!("Cancelled by {}.", caller.actor.name),
                )))
                .await;
        }
        Err(e) => {
            component
                .create_followup(&*http, whisper(error_embed(&e)))
                .await?;
        }
    }
    Ok(())
}

/// A prompt's Confirm button (`rdp:confirm:<id>`): the operator runs the fix; the prompt
/// message becomes its progress and its outcome.
pub async fn confirm(
    http: Arc<Http>,
    ack: &Ack,
    bot: &Bot,
    caller: &Caller,
    component: &ComponentInteraction,
    confirmation: ConfirmationKey,
) -> Result<(), Error> {
    // Raw calls: a click comes outside any command invocation; poise cannot answer it.
    // Acknowledge at once; the prompt message becomes the progress and the outcome.
    ack.respond(CreateInteractionResponse::Acknowledge).await?;
    let surface = Arc::new(Surface::original(
        http.clone(),
        &component.token,
        component.channel_id,
        Instant::now(),
    ));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let shown = surface.clone();
    let who = caller.actor.name.clone();
    let progress_task = tokio::spawn(
        async move {
            while let Some(p) = rx.recv().await {
                let text = p.text(Some(&who));
                shown
                    .show(View::embed(render::notice("In progress", &text)))
                    .await;
            }
        }
        .in_current_span(),
    );
    // The prompt's message, which shows the progress: stored with the operation so that a
    // replica taking it over can edit it too. An ephemeral one cannot be reached without the
    // interaction's token (which is never stored), so it is left out.
    let shown_in = component
        .message
        .flags
        .is_none_or(|f| !f.contains(MessageFlags::EPHEMERAL))
        .then(|| component.message.id.to_string());
    let result = bot
        .door
        .confirm_shown(
            caller,
            &confirmation.to_string(),
            shown_in.as_deref(),
            &move |p| {
                let _ = tx.send(p);
            },
        )
        .await;
    let _ = progress_task.await;
    match result {
        Ok(outcome) => surface.show(View::embed(outcome_embed(&outcome))).await,
        Err(DoorError::Operate(OperateError::PlanChanged { was, now, fresh })) => {
            // The old prompt says why; the fresh one follows in the channel.
            surface
                .show(View::embed(render::notice(
                    "Nothing was sent: the fix changed",
                    &format!("What this fix would do has changed since the prompt was shown.\n**Was:** {was}\n**Now:** {now}\nA fresh prompt follows."),
                )))
                .await;
            let follow = CreateInteractionResponseFollowup::new()
                .embed(prompt_embed(&fresh))
                .components(prompt_buttons(&fresh)?)
                .allowed_mentions(CreateAllowedMentions::new());
            component.create_followup(&*http, follow).await?;
        }
        Err(e) => {
            component
                .create_followup(&*http, whisper(error_embed(&e)))
                .await?;
        }
    }
    Ok(())
}

/// Recent audit entries (who did what to which VM, when, with what result)
#[poise::command(slash_command)]
pub async fn audit(
    ctx: AppContext<'_>,
    #[description = "Only this VM (name or resource id)"]
    #[autocomplete = "autocomplete_vm"]
    vm: Option<String>,
) -> Result<(), Error> {
    audit_in(ctx.into(), vm.as_deref()).await
}

pub(super) async fn audit_in(cmd: Cmd<'_>, vm: Option<&str>) -> Result<(), Error> {
    // The audit log is rdp-doctor's database, not Azure: no deferral, the answer is the first
    // response. A VM is validated first, as every command's is.
    if let Some(Err(notice)) = vm.map(parse_vm) {
        return refuse(cmd, *notice).await;
    }
    let vm_name = vm.map(|v| v.rsplit('/').next().unwrap_or(v).to_string());
    let entries = match cmd
        .bot
        .door
        .audit(&command_caller(cmd.interaction), vm_name.as_deref(), 20)
        .await
    {
        Ok(entries) => entries,
        Err(e) => return refuse(cmd, error_embed(&e)).await,
    };
    let mut text = String::new();
    for e in &entries {
        text.push_str(&format!(
            "`{}` **{}** {} {} — {}\n",
            format_time(e.at_ms),
            e.actor_name,
            e.command,
            e.vm_name.as_deref().unwrap_or("-"),
            e.result
        ));
    }
    if entries.is_empty() {
        text.push_str("No audit entries about VMs you may read.");
    }
    cmd.send(super::steps::private(render::notice(
        "Audit log (newest first)",
        &text,
    )))
    .await
}

/// Which Azure actions rdp-doctor's identity holds, and the role that grants what is missing (admins)
#[poise::command(slash_command)]
pub async fn permissions(ctx: AppContext<'_>) -> Result<(), Error> {
    permissions_in(ctx.into()).await
}

pub(super) async fn permissions_in(cmd: Cmd<'_>) -> Result<(), Error> {
    // No options; probing takes a few ARM reads: acknowledge first, privately.
    let surface = acknowledge(cmd, Audience::Requester).await?;
    let embed = match cmd
        .bot
        .door
        .permissions(&command_caller(cmd.interaction))
        .await
    {
        Ok(subscriptions) => {
            let complete = subscriptions
                .iter()
                .all(crate::runbook::permissions::SubscriptionPermissions::complete);
            let text = crate::runbook::permissions::report_text(&subscriptions);
            render::notice(
                if complete {
                    "rdp-doctor's identity holds every action the runbook needs"
                } else {
                    "rdp-doctor's identity is missing actions the runbook needs"
                },
                &format!(
                    "```text\n{}\n```",
                    clip(&text, render::MAX_DESCRIPTION - 20)
                ),
            )
        }
        Err(e) => error_embed(&e),
    };
    surface.show(View::embed(embed)).await;
    Ok(())
}

/// The line above the outcome of an operation taken over: the same for a lone bot restarted and
/// for a replica taking over a dead one's, which the taker cannot tell apart (a new process has a
/// new replica id either way).
pub const RESUMED: &str = "Followed to its end after the rdp-doctor that started it stopped (a restart, or a replica gone); nothing was sent to Azure twice:";

/// For the process's whole life: take over every operation whose owner stopped renewing its
/// lease (a replica that died, this bot before a restart), follow it to its end and post the
/// outcome in its channel. Only the replica that records an outcome posts it, so it is posted
/// once however many replicas watch. The message that showed the operation's progress, when it
/// was stored, is edited to the outcome as well (buttons gone), so that it no longer says "in
/// progress"; the channel message is what tells the room.
pub fn take_over_operations(http: Arc<Http>, door: Door) {
    let handle = tokio::runtime::Handle::current();
    let post = move |op: &crate::store::Operation, outcome: &crate::runbook::operate::Outcome| {
        let Some(channel) = op
            .channel
            .as_deref()
            .and_then(|c| c.parse::<u64>().ok())
            .filter(|&c| c != 0)
        else {
            return;
        };
        let shown_in = op.message.as_deref().and_then(|m| m.parse::<u64>().ok());
        let embed = outcome_embed(outcome);
        let http = http.clone();
        handle.spawn(async move {
            if let Some(shown_in) = shown_in.filter(|&m| m != 0) {
                let edit = EditMessage::new()
                    .content("")
                    .embed(embed.clone())
                    .components(Vec::new())
                    .allowed_mentions(CreateAllowedMentions::new());
                let edited = ChannelId::new(channel)
                    .edit_message(&*http, MessageId::new(shown_in), edit)
                    .await;
                if let Err(e) = edited {
                    // Deleted since, or not the bot's to edit: the channel message still tells.
                    tracing::warn!(error = %e, "could not edit the message that showed the progress");
                }
            }
            let message = CreateMessage::new()
                .content(RESUMED)
                .embed(embed)
                .allowed_mentions(CreateAllowedMentions::new());
            if let Err(e) = ChannelId::new(channel).send_message(&*http, message).await {
                tracing::warn!(error = %e, "could not post a resumed outcome");
            }
        });
    };
    if let Err(e) = door.spawn_takeovers(Arc::new(post)) {
        tracing::error!(error = %e, "cannot take over operations");
    }
}
