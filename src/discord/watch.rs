//! `/rdp watch`, `/rdp unwatch` and `/rdp history`, and posting what watches have to say in
//! their channels. The watches themselves run behind the door (`runbook::door::watch`); this
//! module turns options into door calls and the door's answers into messages.

use super::render::{self, clip, GREEN, GREY, ORANGE, RED};
use super::steps::{
    acknowledge, autocomplete_vm, command_caller, door_notice, parse_vm, private, refuse,
    show_error, user_error_title, Audience,
};
use super::surface::View;
use super::transport::Cmd;
use super::{AppContext, Error};
use crate::runbook::door::{Door, DoorError, WatchNews};
use crate::runbook::operate::format_time;
use crate::runbook::watch::timeline_lines;
use crate::runbook::Verdict;
use serenity::all::{
    ChannelId, CreateAllowedMentions, CreateEmbed, CreateEmbedFooter, CreateMessage, Http,
};
use std::sync::Arc;

/// How many entries `/rdp history` shows.
const HISTORY_SHOWN: u32 = 25;

/// Re-check a VM every few minutes and post here when its verdict or a finding changes
#[poise::command(slash_command)]
pub async fn watch(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id (none: list this channel's watches)"]
    #[autocomplete = "autocomplete_vm"]
    vm: Option<String>,
    #[description = "How long to watch, in minutes (60 unless the config says otherwise)"]
    #[min = 1]
    #[max = 1440]
    minutes: Option<u32>,
) -> Result<(), Error> {
    watch_in(ctx.into(), vm.as_deref(), minutes.map(i64::from)).await
}

pub(super) async fn watch_in(
    cmd: Cmd<'_>,
    vm: Option<&str>,
    minutes: Option<i64>,
) -> Result<(), Error> {
    let Some(vm) = vm else {
        return list_in(cmd).await;
    };
    if let Err(notice) = parse_vm(vm) {
        return refuse(cmd, *notice).await;
    }
    let settings = cmd.bot.door.watch_settings();
    let minutes = minutes.map(|m| u64::try_from(m).unwrap_or(0));
    if let Err(why) = settings.length(minutes) {
        return refuse(
            cmd,
            render::notice("Cannot watch that long", &why.to_string()),
        )
        .await;
    }
    // Finding the VM may ask Azure: acknowledge first, in the channel the watch will post in.
    let surface = acknowledge(cmd, Audience::Channel).await?;
    let caller = command_caller(cmd.interaction);
    let embed = match cmd.bot.door.watch(&caller, vm, minutes).await {
        Ok(started) => render::notice(
            &format!(
                "{} {}",
                if started.extended {
                    "Still watching"
                } else {
                    "Watching"
                },
                started.vm.name
            ),
            &format!(
                "I check {} every {} until {} and post here when its verdict or a finding \
                 changes. `/rdp unwatch {}` stops it.",
                started.vm.name,
                every(started.every),
                format_time(started.until_ms),
                started.vm.name
            ),
        )
        .colour(render::BLUE),
        Err(e) => {
            show_error(&surface, &e).await;
            return Ok(());
        }
    };
    surface.show(View::embed(embed)).await;
    Ok(())
}

/// `/rdp watch` without a VM: this channel's watches, privately (the database, not Azure: the
/// answer is the first response).
async fn list_in(cmd: Cmd<'_>) -> Result<(), Error> {
    let caller = command_caller(cmd.interaction);
    let watches = match cmd.bot.door.watches(&caller).await {
        Ok(watches) => watches,
        Err(e) => return refuse(cmd, error_embed(&e)).await,
    };
    let text = if watches.is_empty() {
        "No VM you may read is watched in this channel. `/rdp watch VM` starts a watch.".to_string()
    } else {
        watches
            .iter()
            .map(|w| {
                format!(
                    "**{}** for {} until {}",
                    w.vm_name,
                    w.actor_name,
                    format_time(w.expires_ms)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    cmd.send(private(render::notice("Watches in this channel", &text)))
        .await
}

/// Stop watching a VM in this channel
#[poise::command(slash_command)]
pub async fn unwatch(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    unwatch_in(ctx.into(), &vm).await
}

pub(super) async fn unwatch_in(cmd: Cmd<'_>, vm: &str) -> Result<(), Error> {
    if let Err(notice) = parse_vm(vm) {
        return refuse(cmd, *notice).await;
    }
    let surface = acknowledge(cmd, Audience::Channel).await?;
    let caller = command_caller(cmd.interaction);
    let embed = match cmd.bot.door.unwatch(&caller, vm).await {
        Ok((vm, Some(w))) => render::notice(
            &format!("Stopped watching {}", vm.name),
            &format!(
                "{} started this watch; nothing more will be posted about it.",
                w.actor_name
            ),
        ),
        Ok((vm, None)) => render::notice(
            &format!("{} is not watched here", vm.name),
            "There was no watch of it in this channel; nothing changed.",
        ),
        Err(e) => {
            show_error(&surface, &e).await;
            return Ok(());
        }
    };
    surface.show(View::embed(embed)).await;
    Ok(())
}

/// A VM's timeline: checks and what changed between them, fixes and their outcomes
#[poise::command(slash_command)]
pub async fn history(
    ctx: AppContext<'_>,
    #[description = "VM: name, resource-group/name or resource id"]
    #[autocomplete = "autocomplete_vm"]
    vm: String,
) -> Result<(), Error> {
    history_in(ctx.into(), &vm).await
}

pub(super) async fn history_in(cmd: Cmd<'_>, vm: &str) -> Result<(), Error> {
    if let Err(notice) = parse_vm(vm) {
        return refuse(cmd, *notice).await;
    }
    let surface = acknowledge(cmd, Audience::Channel).await?;
    let caller = command_caller(cmd.interaction);
    let embed = match cmd.bot.door.history(&caller, vm, HISTORY_SHOWN).await {
        Ok(timeline) => {
            let mut lines = timeline_lines(&timeline);
            if lines.is_empty() {
                lines.push("Nothing recorded yet: no check, watch or fix of this VM.".to_string());
            }
            lines.extend(timeline.missing.iter().map(|m| format!("({m})")));
            render::notice(
                &format!("History of {} (newest first)", timeline.vm.name),
                &format!(
                    "```text\n{}\n```",
                    clip(&lines.join("\n"), render::MAX_DESCRIPTION - 20)
                ),
            )
        }
        Err(e) => {
            show_error(&surface, &e).await;
            return Ok(());
        }
    };
    surface.show(View::embed(embed)).await;
    Ok(())
}

/// A failure before anything was acknowledged (listing this channel's watches): privately, as
/// the first response, in the words of `steps::door_notice`.
fn error_embed(e: &DoorError) -> CreateEmbed {
    let title = match e {
        DoorError::Azure(_) => "Azure error",
        other if other.is_user_error() => user_error_title(other),
        _ => "Cannot do that",
    };
    door_notice(title, e)
}

/// "2 minutes", "90 seconds", "200 ms".
fn every(interval: std::time::Duration) -> String {
    let secs = interval.as_secs();
    if secs == 0 {
        return format!("{} ms", interval.as_millis());
    }
    match secs {
        60 => "minute".to_string(),
        s if s % 60 == 0 => format!("{} minutes", s / 60),
        1 => "second".to_string(),
        s => format!("{s} seconds"),
    }
}

/// What a watch has to say, as its channel sees it.
pub(super) fn news_embed(news: &WatchNews) -> CreateEmbed {
    match news {
        WatchNews::Changed {
            vm,
            verdict,
            lines,
            now,
            changed_in_azure,
            started_by,
            until_ms,
            ..
        } => {
            let mut text: Vec<String> = lines.iter().map(|l| format!("• {l}")).collect();
            if !now.is_empty() {
                text.push(String::new());
                text.push("Now:".to_string());
                text.extend(now.iter().map(|n| format!("• {n}")));
            }
            if !changed_in_azure.is_empty() {
                text.push(String::new());
                text.push("Changed in Azure (Activity Log):".to_string());
                text.extend(changed_in_azure.iter().map(|c| format!("• {c}")));
            }
            let colour = match verdict {
                Verdict::Ok => GREEN,
                Verdict::Problems => RED,
                Verdict::Unknown | Verdict::ClosedByJit => ORANGE,
            };
            render::notice(&format!("{} changed: {verdict}", vm.name), &text.join("\n"))
                .colour(colour)
                .footer(CreateEmbedFooter::new(clip(
                    &format!(
                        "Watching for {started_by} until {} · /rdp unwatch {} stops it",
                        format_time(*until_ms),
                        vm.name
                    ),
                    2048,
                )))
        }
        WatchNews::Ended { vm, why, .. } => {
            render::notice(&format!("Stopped watching {}", vm.name), why).colour(GREY)
        }
    }
}

/// For the process's whole life: run the watches that are due (this replica's, new ones, and a
/// dead replica's once its lease lapsed) and post what they have to say in their channels.
/// Only the replica that owns a watch posts for it.
pub fn run_watches(http: Arc<Http>, door: Door) {
    let handle = tokio::runtime::Handle::current();
    let post = move |news: WatchNews| {
        let Some(channel) = news.channel().parse::<u64>().ok().filter(|c| *c != 0) else {
            return;
        };
        let embed = news_embed(&news);
        let http = http.clone();
        handle.spawn(async move {
            let message = CreateMessage::new()
                .embed(embed)
                .allowed_mentions(CreateAllowedMentions::new());
            if let Err(e) = ChannelId::new(channel).send_message(&*http, message).await {
                tracing::warn!(error = %e, "could not post a watch's news");
            }
        });
    };
    if let Err(e) = door.spawn_watches(Arc::new(post)) {
        tracing::error!(error = %e, "cannot run watches");
    }
}
