//! The steps every `/rdp` command shares, in one order (the commands live in `commands`, `fixes`,
//! `sweep` and `watch`, which all use this module for them):
//!
//! 1. parse and validate the options that need no I/O; a mistake is answered at once, privately,
//!    as the first response (`refuse`);
//! 2. `acknowledge` (`Cmd::defer`: poise's `ctx.defer()` or `ctx.defer_ephemeral()` with the
//!    gateway, the HTTP response with the interactions endpoint) before the first Azure request,
//!    well inside Discord's 3 seconds; it returns the `Surface` the answer lives on;
//! 3. authorise through the door and work: every door call checks the person's permission
//!    itself, and a refusal goes privately to the person (`show_error`, `Surface::whisper`,
//!    `Cmd::send`);
//!    an ambiguous name is asked about with the "which VM?" menu (`find`, `pick_menu`).
//!
//! A command that makes no Azure request (`help`, `explain`, `audit`, `reset-password`'s form)
//! skips step 2 and answers with `Cmd::send` as its first response. The fence (guild, channel, a
//! policy at all) runs before any of this, in poise's `command_check` (with the interactions
//! endpoint, in `serve::run_command`).

use super::ids::{ComponentId, Key};
use super::render;
use super::surface::{Surface, View};
use super::transport::Cmd;
use super::{caller, Bot, Context, Error};
use crate::domain::{VmQuery, VmSummary};
use crate::runbook::door::{Caller, DoorError};
use crate::runbook::fix::{FixRequest, RdpSource};
use crate::runbook::CheckOptions;
use poise::CreateReply;
use serenity::all::{
    CommandInteraction, CreateActionRow, CreateAllowedMentions, CreateAutocompleteResponse,
    CreateEmbed, CreateSelectMenu, CreateSelectMenuKind, CreateSelectMenuOption,
};
use std::time::Instant;

/// What to run once the VM is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Check,
    /// The checks, then the guest checks through Run Command.
    Guest,
    Health,
    Console,
    /// A fix whose prompt needs nothing but the VM and what the command said.
    Fix(FixKind),
    /// `reset-password`: the form opens once the VM is known.
    ResetPassword,
    /// Who changed what on the VM (the Activity Log).
    Changes,
}

/// The fixes a command or a button asks for without a form. `reset-password` has none: its
/// form is the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixKind {
    Start,
    Restart,
    Redeploy,
    ResetRdpConfig,
    /// `open-rdp` from a source, for the RDP listener's port.
    OpenRdp(RdpSource, u16),
    /// One of the guest fixes (a script through Run Command).
    Guest(crate::diagnose::ActionId),
    /// `remove-route` (from the button under a report).
    RemoveRoute,
    /// `request-jit` for an address, for some hours (the default when `None`).
    RequestJit(std::net::Ipv4Addr, Option<u32>),
}

impl FixKind {
    pub fn request(self) -> FixRequest {
        match self {
            FixKind::Start => FixRequest::Start,
            FixKind::Restart => FixRequest::Restart,
            FixKind::Redeploy => FixRequest::Redeploy,
            FixKind::ResetRdpConfig => FixRequest::ResetRdpConfig,
            FixKind::OpenRdp(source, port) => FixRequest::OpenRdpPort { source, port },
            FixKind::Guest(fix) => FixRequest::Guest(fix),
            FixKind::RemoveRoute => FixRequest::RemoveRoute,
            FixKind::RequestJit(source, hours) => FixRequest::RequestJit { source, hours },
        }
    }
}

impl Kind {
    /// What to run, in words another replica reads back with [`Kind::from_words`] (a "which
    /// VM?" menu's pick is kept in the database in these words): `check`, `fix restart`,
    /// `fix open-rdp 198.51.100.7 3389`, `fix guest enable-rdp`, `fix request-jit 10.0.0.1 3`.
    pub(super) fn words(&self) -> String {
        match self {
            Kind::Check => "check".into(),
            Kind::Guest => "guest".into(),
            Kind::Health => "health".into(),
            Kind::Console => "console".into(),
            Kind::Changes => "changes".into(),
            Kind::ResetPassword => "reset-password".into(),
            Kind::Fix(fix) => match fix {
                FixKind::Start => "fix start".into(),
                FixKind::Restart => "fix restart".into(),
                FixKind::Redeploy => "fix redeploy".into(),
                FixKind::ResetRdpConfig => "fix reset-rdp-config".into(),
                FixKind::RemoveRoute => "fix remove-route".into(),
                FixKind::OpenRdp(source, port) => {
                    let source = match source {
                        RdpSource::Anywhere => "anywhere".to_string(),
                        other => other.prefix(),
                    };
                    format!("fix open-rdp {source} {port}")
                }
                FixKind::Guest(action) => format!("fix guest {action}"),
                FixKind::RequestJit(source, hours) => match hours {
                    Some(hours) => format!("fix request-jit {source} {hours}"),
                    None => format!("fix request-jit {source} -"),
                },
            },
        }
    }

    /// [`Kind::words`] read back; `None` for anything else (never a guess).
    pub(super) fn from_words(words: &str) -> Option<Kind> {
        let parts: Vec<&str> = words.split(' ').collect();
        Some(match parts.as_slice() {
            ["check"] => Kind::Check,
            ["guest"] => Kind::Guest,
            ["health"] => Kind::Health,
            ["console"] => Kind::Console,
            ["changes"] => Kind::Changes,
            ["reset-password"] => Kind::ResetPassword,
            ["fix", "start"] => Kind::Fix(FixKind::Start),
            ["fix", "restart"] => Kind::Fix(FixKind::Restart),
            ["fix", "redeploy"] => Kind::Fix(FixKind::Redeploy),
            ["fix", "reset-rdp-config"] => Kind::Fix(FixKind::ResetRdpConfig),
            ["fix", "remove-route"] => Kind::Fix(FixKind::RemoveRoute),
            ["fix", "open-rdp", source, port] => Kind::Fix(FixKind::OpenRdp(
                crate::runbook::fix::parse_source(source).ok()?,
                port.parse().ok()?,
            )),
            ["fix", "guest", action] => {
                let action: crate::diagnose::ActionId = action.parse().ok()?;
                action
                    .is_guest()
                    .then_some(Kind::Fix(FixKind::Guest(action)))?
            }
            ["fix", "request-jit", source, hours] => Kind::Fix(FixKind::RequestJit(
                source.parse().ok()?,
                match *hours {
                    "-" => None,
                    hours => Some(hours.parse().ok()?),
                },
            )),
            _ => return None,
        })
    }

    pub(super) fn verb(&self) -> &'static str {
        match self {
            Kind::Check => "Checking",
            Kind::Guest => "Looking inside",
            Kind::Health => "Reading Resource Health of",
            Kind::Console => "Fetching the console of",
            Kind::Fix(_) | Kind::ResetPassword => "Preparing the fix for",
            Kind::Changes => "Reading the Activity Log of",
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
    /// Kept in the database too (`Bot::offer_pick`): then taking it there is what makes it
    /// this replica's to run, whichever replica the choice reached.
    pub kept: bool,
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
    match command_interaction(&ctx) {
        Some(interaction) => suggestions(ctx.data(), interaction, partial),
        None => CreateAutocompleteResponse::new(),
    }
}

/// At most 25 VMs the person may read whose names fit what they typed (either transport).
pub(super) fn suggestions(
    bot: &Bot,
    interaction: &CommandInteraction,
    partial: &str,
) -> CreateAutocompleteResponse {
    let choices = bot
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
pub(super) async fn refuse(cmd: Cmd<'_>, embed: CreateEmbed) -> Result<(), Error> {
    cmd.send(private(embed)).await
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
pub(super) async fn acknowledge(cmd: Cmd<'_>, audience: Audience) -> Result<Surface<'_>, Error> {
    let private = audience == Audience::Requester;
    cmd.defer(private).await?;
    Ok(Surface::command(cmd, private))
}

/// A VM option that cannot name a VM: what to tell the person (step 1, no I/O).
pub(super) fn parse_vm(vm: &str) -> Result<(), Box<CreateEmbed>> {
    VmQuery::parse(vm)
        .map(|_| ())
        .map_err(|e| Box::new(render::notice("Cannot look that up", &e.to_string())))
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
    let levels = bot.door.catalog().commands;
    let needed = match kind {
        Kind::Guest => levels.guest,
        _ => levels.check,
    };
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
            let nonce = bot
                .offer_pick(
                    caller,
                    PendingPick {
                        kind: kind.clone(),
                        options: options.clone(),
                        candidates: candidates.clone(),
                        requester: caller.actor.id.clone(),
                        created: Instant::now(),
                        kept: false,
                    },
                )
                .await;
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

/// A refusal privately (the public "thinking…" retracted), anything else in the message.
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

/// The one way the bot words a failure that came through the door: the person's mistake and
/// Azure's answer in words under `title`; rdp-doctor's own failure (its database) as "internal
/// error, reference X", the details logged under the same X; its database not answering as
/// that, with the assurance that nothing was done.
pub(super) fn door_notice(title: &str, e: &DoorError) -> CreateEmbed {
    if e.is_database_unreachable() {
        let reference = super::internal_error(e, "door");
        render::notice(
            "rdp-doctor's database is unreachable",
            &format!(
                "rdp-doctor cannot reach its database right now, so it did nothing for this: \
                 nothing was sent to Azure and nothing was recorded. Try again in a minute. If it \
                 goes on, whoever runs rdp-doctor will find the details in its log under \
                 reference {reference}."
            ),
        )
    } else if e.is_internal() {
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
        DoorError::WatchLength(_) => "Cannot watch that long",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::ActionId;

    #[test]
    fn every_kind_reads_back_from_its_words_and_nothing_else_does() {
        let kinds = [
            Kind::Check,
            Kind::Guest,
            Kind::Health,
            Kind::Console,
            Kind::Changes,
            Kind::ResetPassword,
            Kind::Fix(FixKind::Start),
            Kind::Fix(FixKind::Restart),
            Kind::Fix(FixKind::Redeploy),
            Kind::Fix(FixKind::ResetRdpConfig),
            Kind::Fix(FixKind::RemoveRoute),
            Kind::Fix(FixKind::OpenRdp(
                RdpSource::Address("198.51.100.7".parse().unwrap()),
                3389,
            )),
            Kind::Fix(FixKind::OpenRdp(
                RdpSource::Cidr("203.0.113.0/24".parse().unwrap()),
                3390,
            )),
            Kind::Fix(FixKind::OpenRdp(RdpSource::Tag("AzureCloud".into()), 3389)),
            Kind::Fix(FixKind::OpenRdp(RdpSource::Anywhere, 3389)),
            Kind::Fix(FixKind::Guest(ActionId::EnableRdp)),
            Kind::Fix(FixKind::RequestJit("10.0.0.1".parse().unwrap(), Some(3))),
            Kind::Fix(FixKind::RequestJit("10.0.0.1".parse().unwrap(), None)),
        ];
        for kind in kinds {
            assert_eq!(
                Kind::from_words(&kind.words()),
                Some(kind.clone()),
                "{}",
                kind.words()
            );
        }
        assert_eq!(
            Kind::Fix(FixKind::OpenRdp(RdpSource::Anywhere, 3389)).words(),
            "fix open-rdp anywhere 3389"
        );
        for words in [
            "",
            "check web-01",
            "fix",
            "fix delete-vm",
            "fix guest restart",
            "fix open-rdp * 3389",
            "fix open-rdp 198.51.100.7 port",
            "fix request-jit somewhere 3",
            "CHECK",
        ] {
            assert_eq!(Kind::from_words(words), None, "{words:?}");
        }
    }
}
