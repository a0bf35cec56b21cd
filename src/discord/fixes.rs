//! The runbook's fixes in the war room: `/rdp restart vm` and friends, the fix button under a
//! report, the confirmation prompt with Confirm / Cancel, the password modal, `/rdp audit`, and
//! resuming operations after a restart. Everything that decides lives in `runbook::operate`;
//! this file turns clicks into its calls and its answers into messages.
//!
//! Component ids are restart-safe: `rdp:fix:<action>:<vm key>` (the VM is found again in the VM
//! directory), `rdp:confirm:<id>` / `rdp:cancel:<id>` (the confirmation lives in the database),
//! `rdp:pw:<vm key>` (the password modal).

use super::commands::{autocomplete_vm, command_interaction, reply_ephemeral};
use super::render::{self, clip};
use super::surface::{Surface, View};
use super::{Bot, Context, Error};
use crate::azure::{VmQuery, VmSummary};
use crate::diagnose::ActionId;
use crate::policy::{Actor, ActorSource};
use crate::runbook::fix::{self, FixRequest};
use crate::runbook::operate::{format_time, OperateError, Outcome, Progress, Prompt};
use serenity::all::{
    ButtonStyle, ChannelId, ComponentInteraction, CreateActionRow, CreateAllowedMentions,
    CreateButton, CreateEmbed, CreateInputText, CreateInteractionResponse,
    CreateInteractionResponseFollowup, CreateInteractionResponseMessage, CreateMessage,
    CreateModal, Http, InputTextStyle, Member, ModalInteraction, User,
};
use std::sync::Arc;
use std::time::Instant;

pub const PREFIX: &str = "rdp:";
const FIX: &str = "rdp:fix:";
const CONFIRM: &str = "rdp:confirm:";
const CANCEL: &str = "rdp:cancel:";
const PASSWORD: &str = "rdp:pw:";

/// A short, stable key for a VM id (fits in a component id; the same after a restart).
pub fn vm_key(id: &str) -> String {
    // FNV-1a: stable across processes, unlike std's randomly seeded hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.to_ascii_lowercase().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The person behind an interaction, as the policy sees them. Role names need the guild's
/// roles from the cache; without them only role-id grants match.
pub fn actor(
    ctx_cache: Option<&serenity::all::Cache>,
    user: &User,
    member: Option<&Member>,
) -> Actor {
    let role_ids: Vec<String> = member
        .map(|m| m.roles.iter().map(|r| r.get().to_string()).collect())
        .unwrap_or_default();
    let role_names = match (ctx_cache, member) {
        (Some(cache), Some(m)) => cache
            .guild(m.guild_id)
            .map(|g| {
                m.roles
                    .iter()
                    .filter_map(|r| g.roles.get(r).map(|role| role.name.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Actor {
        id: user.id.get().to_string(),
        name: user
            .global_name
            .clone()
            .unwrap_or_else(|| user.name.clone()),
        role_ids,
        role_names,
        source: ActorSource::Discord,
    }
}

/// Commands answer only in the policy's channels (when a policy exists).
pub async fn channel_check(ctx: Context<'_>) -> Result<bool, Error> {
    let bot = ctx.data();
    if bot.operator.policy.has_channels()
        && !bot
            .operator
            .policy
            .channel_allowed(&ctx.channel_id().get().to_string())
    {
        if let Some(interaction) = command_interaction(&ctx) {
            reply_ephemeral(
                ctx.http(),
                interaction,
                render::notice(
                    "Not in this channel",
                    "rdp-doctor only answers in the channels its policy names.",
                ),
            )
            .await?;
        }
        return Ok(false);
    }
    Ok(true)
}

fn button(action: ActionId, vm: &VmSummary, label: &str) -> CreateButton {
    let style = match action {
        ActionId::Redeploy | ActionId::OpenRdpPort | ActionId::ResetPassword => ButtonStyle::Danger,
        _ => ButtonStyle::Primary,
    };
    CreateButton::new(format!("{FIX}{}:{}", action.as_str(), vm_key(&vm.vm.id)))
        .label(clip(label, 80))
        .style(style)
}

/// The fix button under a report: the runbook's next action, if any.
pub fn report_buttons(bot: &Bot, vm: &VmSummary, next: Option<ActionId>) -> Vec<CreateActionRow> {
    let Some(action) = next else {
        return Vec::new();
    };
    let title = bot
        .catalog
        .step(action.as_str())
        .map(|s| s.title.clone())
        .unwrap_or_else(|| action.as_str().to_string());
    vec![CreateActionRow::Buttons(vec![button(action, vm, &title)])]
}

fn prompt_embed(prompt: &Prompt) -> CreateEmbed {
    let mut text = String::new();
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

fn prompt_buttons(prompt: &Prompt) -> Vec<CreateActionRow> {
    vec![CreateActionRow::Buttons(vec![
        CreateButton::new(format!("{CONFIRM}{}", prompt.confirmation_id))
            .label("Confirm")
            .style(ButtonStyle::Danger),
        CreateButton::new(format!("{CANCEL}{}", prompt.confirmation_id))
            .label("Cancel")
            .style(ButtonStyle::Secondary),
    ])]
}

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

fn error_embed(e: &OperateError) -> CreateEmbed {
    let title = match e {
        OperateError::Denied(_) => "Not allowed",
        OperateError::Refused(_) => "Not offered",
        OperateError::Locked { .. } => "The VM is busy",
        OperateError::Arm(_) => "Azure error",
        _ => "Cannot do that",
    };
    render::notice(title, &e.to_string())
}

/// Find the VM a command names (or say why not, privately).
async fn find_vm(bot: &Bot, text: &str) -> Result<VmSummary, String> {
    let query = VmQuery::parse(text).map_err(|e| e.to_string())?;
    bot.directory
        .resolve(&bot.arm, &query, &bot.subscriptions)
        .await
        .map_err(|e| e.to_string())
}

async fn vm_by_key(bot: &Bot, key: &str) -> Option<VmSummary> {
    if let Some(vm) = bot.directory.find(|v| vm_key(&v.vm.id) == key) {
        return Some(vm);
    }
    // After a restart the directory may not be loaded yet.
    let _ = bot.directory.refresh(&bot.arm, &bot.subscriptions).await;
    bot.directory.find(|v| vm_key(&v.vm.id) == key)
}

/// Request a fix and show its prompt (Confirm / Cancel) on `surface`, or tell the person
/// privately why not.
async fn ask(
    bot: &Bot,
    surface: &Surface,
    actor: &Actor,
    channel: &str,
    summary: &VmSummary,
    request: FixRequest,
) {
    match bot
        .operator
        .request(actor, Some(channel), &summary.vm, request)
        .await
    {
        Ok(prompt) => {
            surface
                .show(View {
                    embeds: vec![prompt_embed(&prompt)],
                    components: prompt_buttons(&prompt),
                    ..View::default()
                })
                .await
        }
        Err(e) => {
            surface.retract().await;
            surface.whisper(error_embed(&e), Vec::new()).await;
        }
    }
}

/// Ask for a fix from a slash command: privately refused, or a public prompt with buttons.
async fn request_from_command(
    ctx: Context<'_>,
    vm: &str,
    request: FixRequest,
) -> Result<(), Error> {
    let Some(interaction) = command_interaction(&ctx) else {
        return Ok(());
    };
    let bot = ctx.data();
    interaction.defer(ctx.http()).await?;
    let http = ctx.serenity_context().http.clone();
    let surface = Surface::original(
        http.clone(),
        &interaction.token,
        interaction.channel_id,
        Instant::now(),
    );
    let summary = match find_vm(bot, vm).await {
        Ok(s) => s,
        Err(e) => {
            surface.retract().await;
            surface
                .whisper(render::notice("Cannot find that VM", &e), Vec::new())
                .await;
            return Ok(());
        }
    };
    let actor = actor(
        Some(&ctx.serenity_context().cache),
        &interaction.user,
        interaction.member.as_deref(),
    );
    let channel = interaction.channel_id.get().to_string();
    ask(bot, &surface, &actor, &channel, &summary, request).await;
    Ok(())
}

/// Start a stopped or deallocated VM (asks for confirmation)
#[poise::command(slash_command)]
pub async fn start(
    ctx: Context<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    request_from_command(ctx, &vm, FixRequest::Start).await
}

/// Restart a VM (asks for confirmation)
#[poise::command(slash_command)]
pub async fn restart(
    ctx: Context<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    request_from_command(ctx, &vm, FixRequest::Restart).await
}

/// Redeploy a VM to a new host (asks for confirmation by a second person)
#[poise::command(slash_command)]
pub async fn redeploy(
    ctx: Context<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    request_from_command(ctx, &vm, FixRequest::Redeploy).await
}

/// Reset the Remote Desktop configuration with VMAccess (asks for confirmation)
#[poise::command(slash_command, rename = "reset-config")]
pub async fn reset_config(
    ctx: Context<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    request_from_command(ctx, &vm, FixRequest::ResetRdpConfig).await
}

/// Allow inbound TCP 3389 from a source in the NSG that blocks it (asks for confirmation)
#[poise::command(slash_command, rename = "open-rdp")]
pub async fn open_rdp(
    ctx: Context<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
    #[description = "Who may connect: IPv4 address, CIDR, service tag, or `anywhere`"]
    source: String,
) -> Result<(), Error> {
    let Some(interaction) = command_interaction(&ctx) else {
        return Ok(());
    };
    match fix::parse_source(&source) {
        Ok(source) => request_from_command(ctx, &vm, FixRequest::OpenRdpPort { source }).await,
        Err(e) => {
            reply_ephemeral(ctx.http(), interaction, render::notice("Which source?", &e)).await
        }
    }
}

/// Reset a local administrator's password (opens a form; the password is never shown)
#[poise::command(slash_command, rename = "reset-password")]
pub async fn reset_password(
    ctx: Context<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    let Some(interaction) = command_interaction(&ctx) else {
        return Ok(());
    };
    // A modal must be the first response: find the VM from the directory, without Azure.
    let query = match VmQuery::parse(&vm) {
        Ok(q) => q,
        Err(e) => {
            return reply_ephemeral(
                ctx.http(),
                interaction,
                render::notice("Cannot look that up", &e.to_string()),
            )
            .await
        }
    };
    let bot = ctx.data();
    let (name, group) = match &query {
        VmQuery::Name(n) => (n.clone(), None),
        VmQuery::InGroup {
            resource_group,
            name,
        } => (name.clone(), Some(resource_group.clone())),
        VmQuery::Id(id) => (id.name.clone(), Some(id.resource_group.clone())),
    };
    let found = bot.directory.find(|v| {
        v.vm.name.eq_ignore_ascii_case(&name)
            && group
                .as_deref()
                .is_none_or(|g| v.vm.resource_group.eq_ignore_ascii_case(g))
    });
    let Some(summary) = found else {
        return reply_ephemeral(
            ctx.http(),
            interaction,
            render::notice("Cannot find that VM", &format!("No VM named {vm} in the VM list (refreshed every minute). Check the name with `/rdp check`.")),
        )
        .await;
    };
    let modal = password_modal(&summary);
    interaction
        .create_response(ctx.http(), CreateInteractionResponse::Modal(modal))
        .await?;
    Ok(())
}

fn password_modal(summary: &VmSummary) -> CreateModal {
    CreateModal::new(
        format!("{PASSWORD}{}", vm_key(&summary.vm.id)),
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
pub async fn modal(http: Arc<Http>, bot: &Bot, modal: &ModalInteraction) -> Result<(), Error> {
    tracing::debug!(custom_id = %modal.data.custom_id, "modal submitted");
    let Some(key) = modal.data.custom_id.strip_prefix(PASSWORD) else {
        return Ok(());
    };
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
        modal
            .create_response(
                &*http,
                ephemeral(render::notice(
                    "Passwords differ",
                    "The two passwords are not the same; nothing was sent.",
                )),
            )
            .await?;
        return Ok(());
    }
    drop(repeat);
    let Some(summary) = vm_by_key(bot, key).await else {
        modal
            .create_response(
                &*http,
                ephemeral(render::notice(
                    "VM gone",
                    "That VM is no longer in the VM list.",
                )),
            )
            .await?;
        return Ok(());
    };
    let surface =
        Surface::new_message(http.clone(), modal.id, &modal.token, modal.channel_id).await?;
    let actor = actor(None, &modal.user, modal.member.as_ref());
    let channel = modal.channel_id.get().to_string();
    let request = FixRequest::ResetPassword {
        username: user.trim().to_string(),
        password,
    };
    ask(bot, &surface, &actor, &channel, &summary, request).await;
    Ok(())
}

/// A button: a fix under a report, or Confirm / Cancel on a prompt.
pub async fn component(
    http: Arc<Http>,
    bot: &Bot,
    component: &ComponentInteraction,
) -> Result<(), Error> {
    let id = component.data.custom_id.clone();
    let actor = actor(None, &component.user, component.member.as_ref());
    let channel = component.channel_id.get().to_string();
    let whisper = |embed: CreateEmbed| {
        CreateInteractionResponseFollowup::new()
            .ephemeral(true)
            .embed(embed)
            .allowed_mentions(CreateAllowedMentions::new())
    };
    if let Some(rest) = id.strip_prefix(FIX) {
        let (action, key) = rest.split_once(':').unwrap_or((rest, ""));
        let action = ActionId::parse(action);
        let summary = vm_by_key(bot, key).await;
        let (Some(action), Some(summary)) = (action, summary) else {
            component
                .create_response(&*http, CreateInteractionResponse::Acknowledge)
                .await?;
            component
                .create_followup(
                    &*http,
                    whisper(render::notice(
                        "Cannot do that",
                        "This button no longer matches a VM. Run `/rdp check` again.",
                    )),
                )
                .await?;
            return Ok(());
        };
        if action == ActionId::ResetPassword {
            component
                .create_response(
                    &*http,
                    CreateInteractionResponse::Modal(password_modal(&summary)),
                )
                .await?;
            return Ok(());
        }
        if action == ActionId::OpenRdpPort {
            component
                .create_response(&*http, CreateInteractionResponse::Acknowledge)
                .await?;
            component
                .create_followup(&*http, whisper(render::notice("Who should connect?", &format!("Use `/rdp open-rdp vm:{} source:YOUR.IP.ADDRESS` (or a CIDR, a service tag, or `anywhere`).", summary.vm.name))))
                .await?;
            return Ok(());
        }
        let request = match action {
            ActionId::Start => FixRequest::Start,
            ActionId::Restart => FixRequest::Restart,
            ActionId::Redeploy => FixRequest::Redeploy,
            _ => FixRequest::ResetRdpConfig,
        };
        // A new public message for the prompt; the report stays as it was.
        let surface = Surface::new_message(
            http.clone(),
            component.id,
            &component.token,
            component.channel_id,
        )
        .await?;
        ask(bot, &surface, &actor, &channel, &summary, request).await;
        return Ok(());
    }
    if let Some(confirmation) = id.strip_prefix(CANCEL) {
        component
            .create_response(&*http, CreateInteractionResponse::Acknowledge)
            .await?;
        match bot.operator.cancel(&actor, confirmation).await {
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
                        &format!("Cancelled by {}.", actor.name),
                    )))
                    .await;
            }
            Err(e) => {
                component
                    .create_followup(&*http, whisper(error_embed(&e)))
                    .await?;
            }
        }
        return Ok(());
    }
    if let Some(confirmation) = id.strip_prefix(CONFIRM) {
        // Acknowledge at once; the prompt message becomes the progress and the outcome.
        component
            .create_response(&*http, CreateInteractionResponse::Acknowledge)
            .await?;
        let surface = Arc::new(Surface::original(
            http.clone(),
            &component.token,
            component.channel_id,
            Instant::now(),
        ));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
        let shown = surface.clone();
        let who = actor.name.clone();
        let progress_task = tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let text = match p {
                    Progress::Sent { action, vm } => format!(
                        "{} of {vm} confirmed by {who}; sent to Azure.",
                        action.as_str()
                    ),
                    Progress::Waiting => "Waiting for Azure to finish…".to_string(),
                    Progress::Rechecking => "Done. Running the checks again…".to_string(),
                    Progress::Unanswered { action, vm } => format!(
                        "Azure may have accepted the {} of {vm}; checking…",
                        action.as_str()
                    ),
                    Progress::Learned(text) => text,
                };
                shown
                    .show(View::embed(render::notice("In progress", &text)))
                    .await;
            }
        });
        let result = bot
            .operator
            .confirm(&actor, confirmation, &move |p| {
                let _ = tx.send(p);
            })
            .await;
        let _ = progress_task.await;
        match result {
            Ok(outcome) => surface.show(View::embed(outcome_embed(&outcome))).await,
            Err(e) => {
                component
                    .create_followup(&*http, whisper(error_embed(&e)))
                    .await?;
            }
        }
        return Ok(());
    }
    Ok(())
}

/// Recent audit entries (who did what to which VM, when, with what result)
#[poise::command(slash_command)]
pub async fn audit(
    ctx: Context<'_>,
    #[description = "Only this VM (name or resource id)"]
    #[autocomplete = "autocomplete_vm"]
    vm: Option<String>,
) -> Result<(), Error> {
    let Some(interaction) = command_interaction(&ctx) else {
        return Ok(());
    };
    let vm_name = vm
        .as_deref()
        .map(|v| v.rsplit('/').next().unwrap_or(v).to_string());
    let entries = ctx
        .data()
        .operator
        .store
        .recent_audit(vm_name.as_deref(), 20)
        .await?;
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
        text.push_str("No audit entries.");
    }
    reply_ephemeral(
        ctx.http(),
        interaction,
        render::notice("Audit log (newest first)", &text),
    )
    .await
}

/// After a restart: follow every operation that was running and post its outcome.
pub fn resume(http: Arc<Http>, operator: crate::runbook::operate::Operator) {
    tokio::spawn(async move {
        let handle = tokio::runtime::Handle::current();
        let result = operator
            .resume(&move |op, outcome| {
                let Some(channel) = op.channel.as_deref().and_then(|c| c.parse::<u64>().ok())
                else {
                    return;
                };
                let embed = outcome_embed(outcome);
                let http = http.clone();
                handle.spawn(async move {
                    let message = CreateMessage::new()
                        .content("Resumed after a restart of rdp-doctor:")
                        .embed(embed)
                        .allowed_mentions(CreateAllowedMentions::new());
                    if let Err(e) = ChannelId::new(channel).send_message(&*http, message).await {
                        tracing::warn!(error = %e, "could not post a resumed outcome");
                    }
                });
            })
            .await;
        match result {
            Ok(0) => {}
            Ok(n) => tracing::info!("resumed {n} operation(s) interrupted by a restart"),
            Err(e) => tracing::error!(error = %e, "could not resume operations"),
        }
    });
}
