//! `/rdp sweep`: every Windows VM of a resource group (or a subscription) in one message that
//! shows progress with a Cancel button, then the summary, worst first, with a menu that runs the
//! full check of any VM.
//!
//! Components: `rdp:sweep:stop:<nonce>` (Cancel, only for the person who started it),
//! `rdp:sweep:vm:<nonce>` (the details menu of the 25 worst VMs; its values index the sweep's
//! rows, kept in memory for an hour) and `rdp:sweep:ask:<nonce>` (a button opening a form,
//! `rdp:sweep:name:<nonce>`, for any other VM of the sweep by name).
//!
//! Every replica answers them: the nonce is the sweep's handle in the database
//! (`runbook/door/swept.rs`). A Cancel that reaches a replica not running the sweep is asked
//! through the door and carried out by the one that runs it; a menu choice or form that
//! reaches one without the rows in memory reads them from the database.

use super::commands::run_check;
use super::ids::{ComponentId, Key};
use super::render::{self, clip, mark, GREEN, GREY, ORANGE, RED};
use super::steps::{acknowledge, command_caller, door_notice, parse_from, refuse, Audience};
use super::surface::{Surface, View};
use super::transport::{Ack, Cmd};
use super::{rand_u64, AppContext, Bot, Error};
use crate::domain::{is_subscription_id, validate_group, VmRef, VmSummary};
use crate::runbook::door::{Caller, SweepCancel};
use crate::runbook::sweep::{self, SweepEvent, SweepOptions, SweepReport};
use crate::runbook::{CheckOptions, Verdict};
use serenity::all::{
    ButtonStyle, ComponentInteraction, CreateActionRow, CreateAllowedMentions, CreateButton,
    CreateEmbed, CreateEmbedFooter, CreateInputText, CreateInteractionResponse,
    CreateInteractionResponseMessage, CreateModal, CreateSelectMenu, CreateSelectMenuKind,
    CreateSelectMenuOption, Http, InputTextStyle, ModalInteraction,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Progress is edited in at most this often (Discord rate-limits message edits).
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// The details menu works this long after the sweep.
const ROWS_LIFETIME: Duration = crate::runbook::door::SWEEP_ROWS_KEPT;
/// Characters of the summary table in the embed before "…and N more" (of 4096, leaving room
/// for the counts and the closing lines).
const TABLE_BUDGET: usize = 3300;

/// A sweep running or recently finished.
pub struct SweepState {
    /// The identity of who started it: only they may cancel it.
    requester: String,
    /// The sweep's `from`: a VM's full report tests 3389 from the same address.
    options: CheckOptions,
    cancel: CancellationToken,
    /// The rows' VMs, worst first, once finished (the details menu indexes them).
    vms: Vec<VmRef>,
    started: Instant,
    finished: Option<Instant>,
}

impl Bot {
    fn remember_sweep(
        &self,
        requester: String,
        options: CheckOptions,
        cancel: CancellationToken,
    ) -> Key {
        let nonce = Key(rand_u64());
        if let Ok(mut sweeps) = self.sweeps.lock() {
            // Finished ones are kept an hour for their menus; one that never finished (its
            // task died) goes after a day.
            sweeps.retain(|_, s| match s.finished {
                Some(at) => at.elapsed() < ROWS_LIFETIME,
                None => s.started.elapsed() < 24 * ROWS_LIFETIME,
            });
            sweeps.insert(
                nonce,
                SweepState {
                    requester,
                    options,
                    cancel,
                    vms: Vec::new(),
                    started: Instant::now(),
                    finished: None,
                },
            );
        }
        nonce
    }

    fn finish_sweep(&self, nonce: Key, vms: Vec<VmRef>) {
        if let Ok(mut sweeps) = self.sweeps.lock() {
            if let Some(state) = sweeps.get_mut(&nonce) {
                state.vms = vms;
                state.finished = Some(Instant::now());
            }
        }
    }
}

/// Check every Windows VM of a resource group, or of a subscription, and summarise
#[poise::command(slash_command)]
pub async fn sweep(
    ctx: AppContext<'_>,
    #[description = "Resource group to sweep (leave empty for the whole subscription)"]
    #[rename = "resource-group"]
    #[max_length = 90]
    resource_group: Option<String>,
    #[description = "Subscription id (needed when several are configured)"]
    #[max_length = 64]
    subscription: Option<String>,
    #[description = "Test TCP 3389 from this IPv4 address (yours) instead of the whole Internet"]
    from: Option<String>,
) -> Result<(), Error> {
    sweep_in(ctx.into(), resource_group, subscription, from.as_deref()).await
}

pub(super) async fn sweep_in(
    cmd: Cmd<'_>,
    resource_group: Option<String>,
    subscription: Option<String>,
    from: Option<&str>,
) -> Result<(), Error> {
    // The order of `steps`' note: validate, acknowledge, then the door.
    let bot = cmd.bot;
    let resource_group = resource_group
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty());
    if let Some(rg) = &resource_group {
        if let Err(e) = validate_group(rg) {
            return refuse(cmd, render::notice("Cannot sweep that", &e.to_string())).await;
        }
    }
    let from = match parse_from(from) {
        Ok(from) => from,
        Err(notice) => return refuse(cmd, *notice).await,
    };
    let subscription = match subscription
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    {
        Some(s) if !is_subscription_id(&s) => {
            return refuse(
                cmd,
                render::notice(
                    "That is not a subscription id",
                    "`subscription` is a subscription's id, a GUID such as 11111111-2222-3333-4444-555555555555.",
                ),
            )
            .await
        }
        other => other,
    };
    let surface = acknowledge(cmd, Audience::Channel).await?;
    let what = resource_group
        .as_deref()
        .map(|rg| format!("resource group {rg}"))
        .unwrap_or_else(|| "the subscription".to_string());
    surface
        .show(View::embed(
            CreateEmbed::new()
                .title(clip(&format!("Sweep of {what}"), render::MAX_TITLE))
                .description("Listing the VMs…")
                .colour(render::BLUE),
        ))
        .await;
    let caller = command_caller(cmd.interaction);
    let scope = match bot
        .door
        .sweep_scope(&caller, resource_group.as_deref(), subscription.as_deref())
        .await
    {
        Ok(scope) => scope,
        Err(e) if e.is_user_error() => {
            surface.retract().await;
            surface
                .whisper(door_notice("Cannot sweep that", &e), Vec::new())
                .await;
            return Ok(());
        }
        Err(e) => {
            surface
                .show(View::embed(door_notice("Azure error", &e)))
                .await;
            return Ok(());
        }
    };

    let cancel = CancellationToken::new();
    let nonce = bot.remember_sweep(
        caller.actor.id.clone(),
        CheckOptions { from },
        cancel.clone(),
    );
    let stop_row = CreateActionRow::Buttons(vec![CreateButton::new(
        ComponentId::SweepStop { nonce }.to_string(),
    )
    .label("Cancel sweep")
    .style(ButtonStyle::Secondary)]);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<SweepEvent>();
    let title = format!("Sweep of {scope}");
    let progress = async {
        let mut total = None;
        let (mut done, mut problems) = (0usize, 0usize);
        let mut last_shown: Option<Instant> = None;
        while let Some(event) = rx.recv().await {
            match event {
                SweepEvent::Listed { total: t, .. } => total = Some(t),
                SweepEvent::Checked { done: d, row, .. } => {
                    done = d;
                    if row.verdict == Verdict::Problems {
                        problems += 1;
                    }
                }
            }
            if last_shown.is_some_and(|at| at.elapsed() < PROGRESS_EVERY) {
                continue;
            }
            last_shown = Some(Instant::now());
            let text = match total {
                Some(t) => format!(
                    "Checked **{done} of {t}** Windows VMs · {problems} with problems so far"
                ),
                None => "Listing the VMs…".to_string(),
            };
            surface
                .show(View {
                    embeds: vec![CreateEmbed::new()
                        .title(clip(&title, render::MAX_TITLE))
                        .description(text)
                        .colour(render::BLUE)],
                    components: vec![stop_row.clone()],
                    ..View::default()
                })
                .await;
        }
    };
    let run = async {
        let sink = tx;
        let options = SweepOptions {
            check: CheckOptions { from },
            handle: Some(nonce.to_string()),
            ..SweepOptions::default()
        };
        bot.door
            .sweep(&caller, &scope, &options, &cancel, &move |event| {
                let _ = sink.send(event);
            })
            .await
    };
    let (result, ()) = tokio::join!(run, progress);
    match result {
        Ok(report) => {
            let vms: Vec<VmRef> = report.vms.iter().map(|r| r.vm.clone()).collect();
            // For the menu on every replica; this one's memory serves it here regardless.
            if let Err(e) = bot
                .door
                .keep_sweep_rows(&caller, &nonce.to_string(), &vms, &CheckOptions { from })
                .await
            {
                tracing::warn!(error = %e, "could not keep a sweep's rows for other replicas' menus");
            }
            bot.finish_sweep(nonce, vms);
            let (embed, table) = summary(&report);
            surface
                .show(View {
                    embeds: vec![embed],
                    attachment: table,
                    components: details_menu(nonce, &report),
                    ..View::default()
                })
                .await;
        }
        Err(e) if e.is_user_error() => {
            // Another sweep of the scope, a cap, a limit: the person's to act on, privately.
            bot.finish_sweep(nonce, Vec::new());
            surface.retract().await;
            surface
                .whisper(door_notice("Cannot sweep that", &e), Vec::new())
                .await;
        }
        Err(e) => {
            bot.finish_sweep(nonce, Vec::new());
            surface
                .show(View::embed(door_notice("Azure error", &e)))
                .await;
        }
    }
    Ok(())
}

/// The summary embed, and the whole table as a text file when the embed cannot hold it.
pub fn summary(report: &SweepReport) -> (CreateEmbed, Option<(String, Vec<u8>)>) {
    summary_with(report, "\nPick a VM below for its full report and the fix.")
}

/// [`summary`] with `hint` after the table when a VM has problems (an alert storm's summary
/// has no menu under it).
pub fn summary_with(report: &SweepReport, hint: &str) -> (CreateEmbed, Option<(String, Vec<u8>)>) {
    let problems = report.count(Verdict::Problems);
    let unknown = report.count(Verdict::Unknown);
    let ok = report.count(Verdict::Ok);
    let checked = report.vms.len();
    let title = if report.cancelled {
        format!(
            "Sweep of {}: cancelled after {checked} of {} VMs",
            report.scope, report.total
        )
    } else if problems > 0 {
        format!(
            "Sweep of {}: {problems} of {checked} VMs with problems",
            report.scope
        )
    } else if checked == 0 {
        format!("Sweep of {}: no Windows VM to check", report.scope)
    } else if unknown > 0 {
        format!(
            "Sweep of {}: {unknown} of {checked} VMs could not be checked fully",
            report.scope
        )
    } else {
        format!(
            "Sweep of {}: nothing blocks Remote Desktop on {checked} VMs",
            report.scope
        )
    };
    let colour = if problems > 0 {
        RED
    } else if unknown > 0 || checked == 0 {
        GREY
    } else if report.vms.iter().any(|r| {
        r.deciding
            .as_ref()
            .is_some_and(|f| f.status == crate::diagnose::Status::Warn)
    }) {
        ORANGE
    } else {
        GREEN
    };
    let mut description = format!(
        "❌ {problems} with problems · ❗ {unknown} could not be checked fully · ✅ {ok} ok"
    );
    let jit = report.count(Verdict::ClosedByJit);
    if jit > 0 {
        description.push_str(&format!(" · 🔒 {jit} closed by JIT, as designed"));
    }
    if !report.skipped.is_empty() {
        description.push_str(&format!(" · {} non-Windows skipped", report.skipped.len()));
    }
    description.push_str("\n\n");
    let lines: Vec<String> = report.vms.iter().map(table_line).collect();
    let mut shown = 0;
    let mut table = String::new();
    for line in &lines {
        if table.len() + line.len() + 1 > TABLE_BUDGET {
            break;
        }
        table.push_str(line);
        table.push('\n');
        shown += 1;
    }
    if !table.is_empty() {
        description.push_str(&table);
    }
    let mut attachment = None;
    if shown < lines.len() {
        let rest = lines.len() - shown;
        let rest_problems = report.vms[shown..]
            .iter()
            .filter(|r| r.verdict != Verdict::Ok)
            .count();
        description.push_str(&format!(
            "…and {rest} more ({rest_problems} not ok): the whole table is attached.\n"
        ));
        let mut file = String::new();
        for row in &report.vms {
            let deciding = row
                .deciding
                .as_ref()
                .map(|f| format!("{} {}: {}", f.status.as_str(), f.step.as_str(), f.summary))
                .unwrap_or_else(|| "all checks pass".into());
            file.push_str(&format!(
                "{}\t{}\t{}\t{}\n",
                row.vm.resource_group,
                row.vm.name,
                row.verdict.as_str(),
                deciding
            ));
        }
        attachment = Some(("sweep.tsv".to_string(), file.into_bytes()));
    }
    if report.vms.iter().any(|r| r.verdict != Verdict::Ok) {
        description.push_str(hint);
    }
    let stats = &report.stats;
    let footer = format!(
        "{} ARM requests · {:.1} s · {} throttled · {} paced",
        stats.arm_requests,
        stats.elapsed_ms as f64 / 1000.0,
        stats.throttled,
        stats.paced
    );
    let embed = CreateEmbed::new()
        .title(clip(&title, render::MAX_TITLE))
        .description(clip(&description, render::MAX_DESCRIPTION))
        .colour(colour)
        .footer(CreateEmbedFooter::new(footer));
    (embed, attachment)
}

fn table_line(row: &sweep::SweepRow) -> String {
    let finding = match &row.deciding {
        Some(f) => format!("{} {}", mark(Some(f.status)), clip(&f.summary, 120)),
        None => "✅ all checks pass".to_string(),
    };
    format!("**{}** · {finding}", clip(&row.vm.name, 64))
}

/// "Details of…": the 25 worst VMs (Discord's limit for one menu), and a button that asks for
/// any other by name.
fn details_menu(nonce: Key, report: &SweepReport) -> Vec<CreateActionRow> {
    if report.vms.is_empty() {
        return Vec::new();
    }
    let ask = (report.vms.len() > 25).then(|| {
        CreateActionRow::Buttons(vec![CreateButton::new(
            ComponentId::SweepAsk { nonce }.to_string(),
        )
        .label("Another VM…")
        .style(ButtonStyle::Secondary)])
    });
    let options = report
        .vms
        .iter()
        .take(25)
        .enumerate()
        .map(|(i, row)| {
            let status = Some(
                row.deciding
                    .as_ref()
                    .map_or(crate::diagnose::Status::Pass, |f| f.status),
            );
            CreateSelectMenuOption::new(
                clip(&format!("{} {}", mark(status), row.vm.name), 100),
                i.to_string(),
            )
            .description(clip(
                &row.deciding
                    .as_ref()
                    .map(|f| f.summary.clone())
                    .unwrap_or_else(|| "all checks pass".into()),
                100,
            ))
        })
        .collect();
    let menu = CreateActionRow::SelectMenu(
        CreateSelectMenu::new(
            ComponentId::SweepDetails { nonce }.to_string(),
            CreateSelectMenuKind::String { options },
        )
        .placeholder("Full report of a VM…"),
    );
    std::iter::once(menu).chain(ask).collect()
}

/// The "Another VM…" button: the form that asks for the VM's name.
pub async fn ask(ack: &Ack, nonce: Key) -> Result<(), Error> {
    // Raw calls: a click comes outside any command invocation; poise cannot answer it.
    let modal = CreateModal::new(
        ComponentId::SweepName { nonce }.to_string(),
        "Full report of a swept VM",
    )
    .components(vec![CreateActionRow::InputText(
        CreateInputText::new(InputTextStyle::Short, "VM name", "vm")
            .min_length(1)
            .max_length(64),
    )]);
    ack.respond(CreateInteractionResponse::Modal(modal)).await?;
    Ok(())
}

/// The "Another VM…" form: the VM by name among the sweep's rows.
pub async fn modal(
    http: Arc<Http>,
    ack: &Ack,
    bot: &Bot,
    caller: &Caller,
    modal: &ModalInteraction,
    nonce: Key,
) -> Result<(), Error> {
    // Raw calls: a form submission comes outside any command invocation; poise cannot answer it.
    let name = super::fixes::modal_value(modal, "vm").unwrap_or_default();
    let name = name.trim();
    let found = match rows(bot, caller, nonce).await {
        Ok(rows) => rows.map(|(vms, options)| {
            let named = vms
                .into_iter()
                .filter(|v| v.name.eq_ignore_ascii_case(name))
                .collect::<Vec<VmRef>>();
            (named, options)
        }),
        Err(e) => return whisper_door(ack, "Cannot show that", &e).await,
    };
    let answer = |title: &str, text: &str| {
        CreateInteractionResponse::Message(
            CreateInteractionResponseMessage::new()
                .ephemeral(true)
                .embed(render::notice(title, text))
                .allowed_mentions(CreateAllowedMentions::new()),
        )
    };
    let (found, options) = match found {
        Some((vms, options)) => (Some(vms), options),
        None => (None, CheckOptions::default()),
    };
    let vm = match found.as_deref() {
        None => {
            let expired = answer(
                "This sweep has expired",
                "Run `/rdp check` with the VM's name instead.",
            );
            ack.respond(expired).await?;
            return Ok(());
        }
        Some([one]) => one.clone(),
        Some([]) => {
            let missing = answer(
                "Not in this sweep",
                &format!("No VM named {name:?} was checked by this sweep."),
            );
            ack.respond(missing).await?;
            return Ok(());
        }
        Some(many) => {
            let groups: Vec<String> = many
                .iter()
                .map(|v| format!("`{}/{}`", v.resource_group, v.name))
                .collect();
            let several = answer(
                "Several VMs have that name",
                &format!("Use `/rdp check` with one of {}.", groups.join(", ")),
            );
            ack.respond(several).await?;
            return Ok(());
        }
    };
    let surface = Surface::new_message(http.clone(), ack, &modal.token, modal.channel_id).await?;
    report_of(bot, &surface, caller, vm, &options).await
}

/// A swept VM's full report in `surface` (a new public message: "thinking…", then the report).
async fn report_of(
    bot: &Bot,
    surface: &Surface<'_>,
    caller: &Caller,
    vm: VmRef,
    options: &CheckOptions,
) -> Result<(), Error> {
    run_check(
        bot,
        surface,
        caller,
        VmSummary::unlisted(vm),
        options,
        false,
    )
    .await;
    Ok(())
}

async fn whisper(ack: &Ack, title: &str, text: &str) -> Result<(), Error> {
    whisper_embed(ack, render::notice(title, text)).await
}

/// A door failure answered privately, in the one dialect of `steps::door_notice`.
async fn whisper_door(
    ack: &Ack,
    title: &str,
    e: &crate::runbook::door::DoorError,
) -> Result<(), Error> {
    whisper_embed(ack, door_notice(title, e)).await
}

/// `embed` as the private first response.
async fn whisper_embed(ack: &Ack, embed: CreateEmbed) -> Result<(), Error> {
    let message = CreateInteractionResponseMessage::new()
        .ephemeral(true)
        .embed(embed)
        .allowed_mentions(CreateAllowedMentions::new());
    ack.respond(CreateInteractionResponse::Message(message))
        .await?;
    Ok(())
}

/// A sweep's Cancel button: only for the person who started it.
pub async fn stop(ack: &Ack, bot: &Bot, caller: &Caller, nonce: Key) -> Result<(), Error> {
    // Raw calls: a click comes outside any command invocation; poise cannot answer it.
    let state = bot.sweeps.lock().ok().and_then(|s| {
        s.get(&nonce)
            .map(|s| (s.requester.clone(), s.cancel.clone(), s.finished))
    });
    match state {
        Some((requester, cancel, None)) if requester == caller.actor.id => {
            cancel.cancel();
            // The sweep's own loop shows the cancelled summary in this message.
            ack.respond(CreateInteractionResponse::Acknowledge).await?;
            Ok(())
        }
        Some((requester, _, None)) => whisper(ack, "Not your sweep", &not_yours(&requester)).await,
        Some(_) => whisper(ack, "Already over", "This sweep has finished.").await,
        // Not in this process: another replica of a fleet may run it. Asked through the door;
        // the replica running it stops it and shows the cancelled summary in this message.
        None => match bot.door.cancel_sweep(caller, &nonce.to_string()).await {
            Ok(SweepCancel::Asked) => {
                ack.respond(CreateInteractionResponse::Acknowledge).await?;
                Ok(())
            }
            Ok(SweepCancel::NotYours { requester }) => {
                whisper(ack, "Not your sweep", &not_yours(&requester)).await
            }
            Ok(SweepCancel::NotRunning) => {
                whisper(ack, "Already over", "This sweep has finished.").await
            }
            Err(e) => whisper_door(ack, "Cannot cancel that", &e).await,
        },
    }
}

/// "Only <who>, who started this sweep, can cancel it": a Discord identity as a mention (sent
/// without pinging), anything else as the name.
fn not_yours(requester: &str) -> String {
    let who = match requester.strip_prefix("discord:") {
        Some(id) => format!("<@{id}>"),
        None => requester.to_string(),
    };
    format!("Only {who}, who started this sweep, can cancel it.")
}

/// A finished sweep's rows and check options: from this process's memory, or those any
/// replica kept in the database. `None`: expired (or never finished).
async fn rows(
    bot: &Bot,
    caller: &Caller,
    nonce: Key,
) -> Result<Option<(Vec<VmRef>, CheckOptions)>, crate::runbook::door::DoorError> {
    let here = bot.sweeps.lock().ok().and_then(|s| {
        let state = s.get(&nonce)?;
        state.finished?;
        Some((state.vms.clone(), state.options.clone()))
    });
    match here {
        Some(rows) => Ok(Some(rows)),
        None => bot.door.sweep_rows(caller, &nonce.to_string()).await,
    }
}

/// The details menu: the chosen row's full report in a new message.
pub async fn details(
    http: Arc<Http>,
    ack: &Ack,
    bot: &Bot,
    caller: &Caller,
    component: &ComponentInteraction,
    nonce: Key,
) -> Result<(), Error> {
    // Raw calls: a menu choice comes outside any command invocation; poise cannot answer it.
    let index = super::chosen_index(component);
    let rows = match rows(bot, caller, nonce).await {
        Ok(rows) => rows,
        Err(e) => return whisper_door(ack, "Cannot show that", &e).await,
    };
    let vm = rows.and_then(|(vms, options)| Some((vms.get(index?).cloned()?, options)));
    let Some((vm, options)) = vm else {
        return whisper(
            ack,
            "This menu has expired",
            "Run `/rdp check` with the VM's name instead.",
        )
        .await;
    };
    // A new public message under the summary: "thinking…", then the report.
    let surface =
        Surface::new_message(http.clone(), ack, &component.token, component.channel_id).await?;
    report_of(bot, &surface, caller, vm, &options).await
}
