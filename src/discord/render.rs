//! What the war room sees: embeds for progress, the final report, health, console and explain,
//! kept inside Discord's limits (6000 characters of embeds per message, 1024 per field,
//! 4096 per description, 256 per title, 25 fields).

use crate::diagnose::{CheckId, Finding, Status};
use crate::domain::{Changes, VmRef};
use crate::runbook::catalog::{Catalog, ClientError};
use crate::runbook::{Report, Verdict};
use serenity::all::{Colour, CreateEmbed, CreateEmbedFooter};
use std::collections::BTreeMap;

pub const MAX_EMBED_TOTAL: usize = 6000;
pub const MAX_FIELD_VALUE: usize = 1024;
pub const MAX_FIELD_NAME: usize = 256;
pub const MAX_DESCRIPTION: usize = 4096;
pub const MAX_TITLE: usize = 256;
pub const MAX_FIELDS: usize = 25;

pub(super) const GREEN: Colour = Colour(0x2E_CC_71);
pub(super) const RED: Colour = Colour(0xE7_4C_3C);
pub(super) const ORANGE: Colour = Colour(0xE6_7E_22);
pub(super) const GREY: Colour = Colour(0x95_A5_A6);
pub(super) const BLUE: Colour = Colour(0x34_98_DB);

/// Cut `text` to at most `max` characters, ending with an ellipsis when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub fn mark(status: Option<Status>) -> &'static str {
    match status {
        None => "⏳",
        Some(Status::Pass) => "✅",
        Some(Status::Warn) => "⚠️",
        Some(Status::Fail) => "❌",
        Some(Status::Skip) => "⏭️",
        Some(Status::Error) => "❗",
    }
}

fn vm_line(vm: &VmRef) -> String {
    format!(
        "Resource group **{}** · subscription `{}`",
        vm.resource_group, vm.subscription_id
    )
}

/// The checklist shown while the checks run.
pub fn progress(catalog: &Catalog, vm: &VmRef, done: &BTreeMap<CheckId, Status>) -> CreateEmbed {
    let mut lines = vec![vm_line(vm), String::new()];
    for step in CheckId::ARM {
        lines.push(format!(
            "{} {}",
            mark(done.get(&step).copied()),
            catalog.check_title(step)
        ));
    }
    CreateEmbed::new()
        .title(clip(&format!("Checking {}…", vm.name), MAX_TITLE))
        .description(clip(&lines.join("\n"), MAX_DESCRIPTION))
        .colour(BLUE)
}

/// Shown before the VM is known (while its name is being looked up).
pub fn looking_up(name: &str) -> CreateEmbed {
    CreateEmbed::new()
        .title(clip(&format!("Looking for {name}…"), MAX_TITLE))
        .colour(BLUE)
}

fn finding_value(finding: &Finding) -> String {
    finding_text(&finding.summary, &finding.details)
}

fn finding_text(summary: &str, details: &[String]) -> String {
    let mut value = summary.to_string();
    for detail in details {
        value.push('\n');
        value.push_str(detail);
    }
    clip(&value, MAX_FIELD_VALUE)
}

/// Everything one final report message holds.
pub struct ReportMessage {
    pub embeds: Vec<CreateEmbed>,
    /// `(file name, PNG)` to attach; the first embed shows it.
    pub screenshot: Option<(String, Vec<u8>)>,
}

/// The final report: verdict in title and colour, one field per finding with its evidence, the
/// next step with its documentation link, the screenshot, and the serial-log tail.
pub fn report(catalog: &Catalog, report: &Report) -> ReportMessage {
    report_with_note(catalog, report, None)
}

/// The line under the ARM report while Run Command looks inside the VM.
pub const GUEST_RUNNING: &str = "🔎 **Looking inside Windows**: Run Command is running a read-only script in the VM; it takes up to a minute. The guest findings will appear in this message.";

/// The findings as shown: the guest checks as one line when none of them could run, all for
/// the same reason (skipped, busy, timed out).
fn shown(report: &Report) -> Vec<(Status, Option<&Finding>, &str, &[String])> {
    let guest: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.step.is_guest())
        .collect();
    let collapse = guest.len() > 1
        && guest
            .iter()
            .all(|f| f.status == guest[0].status && f.summary == guest[0].summary);
    let mut out = Vec::new();
    let mut guest_shown = false;
    for f in &report.findings {
        if collapse && f.step.is_guest() {
            if !guest_shown {
                out.push((f.status, None, f.summary.as_str(), &[][..]));
                guest_shown = true;
            }
        } else {
            out.push((f.status, Some(f), f.summary.as_str(), f.details.as_slice()));
        }
    }
    out
}

/// [`report`] with a line under the VM (e.g. that Run Command is running).
pub fn report_with_note(catalog: &Catalog, report: &Report, note: Option<&str>) -> ReportMessage {
    let vm = &report.vm;
    let (title, colour) = match report.verdict {
        Verdict::Ok => (
            format!("{}: nothing found that blocks Remote Desktop", vm.name),
            if report.findings.iter().any(|f| f.status == Status::Warn) {
                ORANGE
            } else {
                GREEN
            },
        ),
        Verdict::Problems => (format!("{}: problems found", vm.name), RED),
        Verdict::ClosedByJit => (
            format!("{}: closed by just-in-time access, as designed", vm.name),
            ORANGE,
        ),
        Verdict::Unknown => (format!("{}: some checks could not run", vm.name), GREY),
    };
    let mut fields: Vec<(String, String)> = shown(report)
        .into_iter()
        .take(MAX_FIELDS - 2)
        .map(|(status, step, summary, details)| {
            let title = match step {
                Some(finding) => catalog.finding_title(finding),
                None => "Inside Windows (every guest check)".to_string(),
            };
            (
                clip(&format!("{} {title}", mark(Some(status))), MAX_FIELD_NAME),
                finding_text(summary, details),
            )
        })
        .collect();
    let next = match report.next_action.and_then(|a| catalog.step(a)) {
        Some(step) => Some(format!(
            "**{}** (`{}`): {}{}\n[Runbook step]({})\n{}",
            step.title,
            step.id,
            step.next_step,
            report
                .next_action_advice()
                .map(|advice| format!("\n{advice}"))
                .unwrap_or_default(),
            step.doc,
            catalog.texts.reconnect
        )),
        None => match report.findings.iter().find(|f| f.status == Status::Fail) {
            Some(failing) => catalog.step(failing.step).map(|step| {
                format!(
                    "{}\n[Runbook step]({})",
                    failing.next_step.as_deref().unwrap_or(&step.next_step),
                    step.doc
                )
            }),
            None => report.findings.iter().find_map(|f| f.next_step.clone()),
        },
    };
    if let Some(changes) = &report.changes {
        fields.push((
            "🕘 Recent changes".to_string(),
            changes_text(
                changes,
                &vm.name,
                Some(crate::runbook::changes::SHOWN_IN_REPORT),
            ),
        ));
    }
    if let Some(next) = next {
        fields.push(("➡️ Next step".to_string(), clip(&next, MAX_FIELD_VALUE)));
    }
    let screenshot = report.screenshot_png.as_ref().map(|png| {
        (
            format!("console-{}.png", safe_file_name(&vm.name)),
            png.clone(),
        )
    });
    let footer = format!(
        "{} ARM requests · {:.1} s",
        report.stats.arm_requests,
        report.stats.elapsed_ms as f64 / 1000.0
    );
    let description = match note {
        Some(note) => format!("{}\n\n{note}", vm_line(vm)),
        None => vm_line(vm),
    };
    let title = clip(&title, MAX_TITLE);

    // 6000 characters for the whole message: fixed parts first, then the fields share what is
    // left fairly, then the serial log gets the rest.
    let serial_title = "Serial log (last 40 lines)";
    let fixed = title.chars().count()
        + description.chars().count()
        + footer.chars().count()
        + serial_title.len()
        + fields.iter().map(|(n, _)| n.chars().count()).sum::<usize>();
    let mut budget = MAX_EMBED_TOTAL.saturating_sub(fixed);
    let values = share(
        &fields
            .iter()
            .map(|(_, v)| v.chars().count())
            .collect::<Vec<_>>(),
        budget,
    );
    for ((_, value), allowed) in fields.iter_mut().zip(&values) {
        *value = clip(value, *allowed);
        budget = budget.saturating_sub(value.chars().count());
    }
    let serial = serial_block(&report.serial_tail, budget.min(MAX_DESCRIPTION));

    let mut main = CreateEmbed::new()
        .title(title)
        .description(description)
        .colour(colour)
        .footer(CreateEmbedFooter::new(footer));
    for (name, value) in fields {
        main = main.field(name, value, false);
    }
    if let Some((file, _)) = &screenshot {
        main = main.image(format!("attachment://{file}"));
    }
    let mut embeds = vec![main];
    if let Some(serial) = serial {
        embeds.push(
            CreateEmbed::new()
                .title(format!("Serial log (last {} lines)", serial.1))
                .description(serial.0)
                .colour(GREY),
        );
    }
    ReportMessage { embeds, screenshot }
}

/// "Recent changes" as one field's value: the `newest` most recent (every one with `None`,
/// within the field's 1024 characters) and every one that explains a failing check, in bold
/// and marked; or why there are none.
pub fn changes_text(changes: &Changes, vm: &str, newest: Option<usize>) -> String {
    let (window, all) = match changes {
        Changes::Skipped { reason } => return clip(&format!("Skipped: {reason}"), MAX_FIELD_VALUE),
        Changes::Listed { window, changes } => (window, changes),
    };
    if all.is_empty() {
        return format!("None in {} (Activity Log)", Changes::window_text(*window));
    }
    let shown = match newest {
        Some(n) => changes.shown(n),
        None => all.iter().collect(),
    };
    let now = time::OffsetDateTime::now_utc();
    let mut lines = Vec::new();
    let mut used = 0;
    let mut left_out = all.len() - shown.len();
    for (i, change) in shown.iter().enumerate() {
        // Discord shows each reader the time in their own zone (with the date unless today).
        // Backticks and asterisks in a name must not open code or bold.
        let style = if change.at.date() == now.date() {
            't'
        } else {
            'f'
        };
        let text = format!(
            "<t:{}:{style}> {} {}",
            change.at.unix_timestamp(),
            change.who,
            change.summary
        )
        .replace(['`', '*'], "'");
        let line = match change.explains {
            Some(check) => format!("**{text}** ← explains `{check}`"),
            None => text,
        };
        // Keep room for the last line ("N more: …").
        if used + line.chars().count() + 1 > MAX_FIELD_VALUE - 80 {
            left_out += shown.len() - i;
            break;
        }
        used += line.chars().count() + 1;
        lines.push(line);
    }
    let mut text = format!(
        "{}, newest first:\n{}",
        capitalise(&Changes::window_text(*window)),
        lines.join("\n")
    );
    match (left_out, newest) {
        (0, _) => {}
        (n, Some(_)) => text.push_str(&format!("\n{n} more: `/rdp changes {vm}`")),
        (n, None) => text.push_str(&format!(
            "\n{n} older not shown here: `rdp-doctor changes {vm}` lists them all"
        )),
    }
    clip(&text, MAX_FIELD_VALUE)
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `/rdp changes`: every change of the window to the VM and what it depends on.
pub fn changes(vm: &VmRef, changes: &Changes) -> CreateEmbed {
    CreateEmbed::new()
        .title(clip(&format!("{}: recent changes", vm.name), MAX_TITLE))
        .description(vm_line(vm))
        .colour(BLUE)
        .field(
            "🕘 Activity Log",
            changes_text(changes, &vm.name, None),
            false,
        )
}

/// Split `budget` characters among values of the given lengths: nobody gets more than they need,
/// the rest is shared equally.
fn share(lengths: &[usize], budget: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut out = vec![0; lengths.len()];
    let mut left = budget;
    for (k, &i) in order.iter().enumerate() {
        let fair = left / (lengths.len() - k);
        out[i] = lengths[i].min(fair);
        left -= out[i];
    }
    out
}

/// The serial-log tail as a code block of at most `budget` characters, dropping the oldest
/// lines first. `None` when there is nothing (or no room) to show.
fn serial_block(lines: &[String], budget: usize) -> Option<(String, usize)> {
    if lines.is_empty() {
        return None;
    }
    let fence = "```text\n\n```".len();
    let mut kept: Vec<String> = Vec::new();
    let mut size = fence;
    for line in lines.iter().rev() {
        // Backticks would end the code block early.
        let line = clip(&line.replace("```", "'''"), 200);
        let cost = line.chars().count() + 1;
        if size + cost > budget {
            break;
        }
        size += cost;
        kept.push(line);
    }
    if kept.is_empty() {
        return None;
    }
    kept.reverse();
    let count = kept.len();
    Some((format!("```text\n{}\n```", kept.join("\n")), count))
}

fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `/rdp health`.
pub fn health(catalog: &Catalog, vm: &VmRef, finding: &Finding) -> CreateEmbed {
    let colour = match finding.status {
        Status::Pass => GREEN,
        Status::Fail => RED,
        Status::Warn => ORANGE,
        _ => GREY,
    };
    CreateEmbed::new()
        .title(clip(
            &format!(
                "{} {}: {}",
                mark(Some(finding.status)),
                vm.name,
                catalog.finding_title(finding)
            ),
            MAX_TITLE,
        ))
        .description(clip(
            &format!("{}\n\n{}", vm_line(vm), finding_value(finding)),
            MAX_DESCRIPTION,
        ))
        .colour(colour)
}

/// `/rdp console`: the screenshot and the serial tail.
pub fn console(catalog: &Catalog, vm: &VmRef, console: &crate::runbook::Console) -> ReportMessage {
    let screenshot = console.screenshot_png.as_ref().map(|png| {
        (
            format!("console-{}.png", safe_file_name(&vm.name)),
            png.clone(),
        )
    });
    let mut main = health(catalog, vm, &console.finding);
    if let Some((file, _)) = &screenshot {
        main = main.image(format!("attachment://{file}"));
    }
    let mut embeds = vec![main];
    if let Some((block, count)) = serial_block(&console.serial_tail, MAX_DESCRIPTION) {
        embeds.push(
            CreateEmbed::new()
                .title(format!("Serial log (last {count} lines)"))
                .description(block)
                .colour(GREY),
        );
    }
    ReportMessage { embeds, screenshot }
}

/// `/rdp explain`: the best match in full (cause, fix, the checks and fixes it names), the others
/// by name; nothing matched says how to paste better and lists the closest messages. Each
/// field fits Discord's limits, and all of them together stay under the embed's total.
pub fn explain(matches: &[&ClientError], closest: &[&ClientError], text: &str) -> CreateEmbed {
    let Some(best) = matches.first() else {
        let mut description = format!(
            "> {}\n\nPaste the message as the dialog shows it (a sentence of it is enough), or its error code such as `0x204`. `/rdp check` runs the runbook's checks on a VM instead.",
            clip(&text.split_whitespace().collect::<Vec<_>>().join(" "), 300)
        );
        if !closest.is_empty() {
            description.push_str("\n\n**The closest known messages**");
            for error in closest {
                description.push_str(&format!("\n• {}", clip(&error.message, 200)));
            }
        }
        return CreateEmbed::new()
            .title("No known Remote Desktop client error matches")
            .description(clip(&description, MAX_DESCRIPTION))
            .colour(GREY);
    };
    let mut embed = CreateEmbed::new()
        .title(clip(&best.message, MAX_TITLE))
        .colour(BLUE)
        .field("Cause", clip(&best.cause, MAX_FIELD_VALUE), false)
        .field(
            "Fix",
            clip(
                &format!("{}\n[Microsoft's article]({})", best.fix, best.doc),
                MAX_FIELD_VALUE,
            ),
            false,
        );
    let mut steps = Vec::new();
    let checks = best.checks();
    if !checks.is_empty() {
        let names: Vec<String> = checks.iter().map(|c| format!("`{c}`")).collect();
        let guest = checks.iter().any(|c| c.is_guest());
        let mut how = vec!["`/rdp check vm`"];
        if checks.contains(&CheckId::NetworkPath) {
            how = vec!["`/rdp check vm from:your-ip`"];
        }
        if guest {
            how.push("`/rdp guest vm`");
        }
        steps.push(format!(
            "Checks: {} (run {})",
            names.join(", "),
            how.join(" and ")
        ));
    }
    let fixes = best.fixes();
    if !fixes.is_empty() {
        let names: Vec<String> = fixes.iter().map(|a| format!("`{a}`")).collect();
        steps.push(format!("Fixes: {}", names.join(", ")));
    }
    if !steps.is_empty() {
        embed = embed.field(
            "Checks and fixes",
            clip(&steps.join("\n"), MAX_FIELD_VALUE),
            false,
        );
    }
    if matches.len() > 1 {
        let others: Vec<String> = matches[1..]
            .iter()
            .take(5)
            .map(|e| format!("• {}", clip(&e.message, 150)))
            .collect();
        embed = embed.field(
            "The text also matches",
            clip(&others.join("\n"), MAX_FIELD_VALUE),
            false,
        );
    }
    embed
}

/// `/rdp help`.
pub fn help() -> CreateEmbed {
    CreateEmbed::new()
        .title("rdp-doctor: Remote Desktop troubleshooting for Azure VMs")
        .description(
            "Runs Microsoft's \"Troubleshoot Remote Desktop connections to an Azure VM\" runbook.\n\n\
             `/rdp check vm [from]`: power state, guest agent, public IP, NSG rules for TCP 3389, Resource Health, boot diagnostics; the verdict and the next step. `from` tests 3389 from your own IPv4 address.\n\
             `/rdp health vm`: Azure Resource Health only.\n\
             `/rdp console vm`: boot diagnostics screenshot and serial log.\n\
             `/rdp sweep [resource-group] [subscription]`: every Windows VM of a resource group (or the subscription) at once; one summary, worst first, with a menu for any VM's full report.\n\
             `/rdp explain error`: what a Remote Desktop client error means and how to fix it.\n\
             `/rdp changes vm`: who changed what on the VM and what its Remote Desktop depends on (NICs, NSGs, subnet, route table), from the Activity Log.\n\
             `/rdp watch vm [minutes]`: check a VM again every few minutes and post here when its verdict or a finding changes; `/rdp unwatch vm` stops it, `/rdp watch` alone lists this channel's watches.\n\
             `/rdp history vm`: the VM's checks (with what changed between them), watches and fixes, newest first.\n\n\
             A VM is `name`, `resource-group/name` or a full resource id.",
        )
        .colour(BLUE)
}

/// A plain message for errors and notices.
pub fn notice(title: &str, text: &str) -> CreateEmbed {
    CreateEmbed::new()
        .title(clip(title, MAX_TITLE))
        .description(clip(text, MAX_DESCRIPTION))
        .colour(GREY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embed_chars(embed: &CreateEmbed) -> (usize, usize) {
        // (characters that count towards the 6000 limit, longest field value)
        let v = serde_json::to_value(embed).unwrap();
        let text = |k: &str| v[k].as_str().map(|s| s.chars().count()).unwrap_or(0);
        let mut total = text("title") + text("description");
        total += v["footer"]["text"]
            .as_str()
            .map(|s| s.chars().count())
            .unwrap_or(0);
        let mut longest = 0;
        for f in v["fields"].as_array().into_iter().flatten() {
            let value = f["value"].as_str().unwrap().chars().count();
            total += f["name"].as_str().unwrap().chars().count() + value;
            longest = longest.max(value);
        }
        (total, longest)
    }

    #[test]
    fn a_worst_case_report_stays_inside_discord_limits() {
        use crate::diagnose::{CheckId, Finding, OsType, Status};
        use crate::domain::VmRef;
        use crate::runbook::{Report, Stats, Verdict};
        let long = "x".repeat(3000);
        let findings = CheckId::ALL
            .into_iter()
            .map(|step| {
                Finding::new(step, Status::Fail, long.clone())
                    .detail(long.clone())
                    .detail(long.clone())
            })
            .collect();
        let report = Report {
            vm: VmRef {
                name: "v".repeat(64),
                resource_group: "r".repeat(90),
                subscription_id: "s".into(),
                id: "id".into(),
            },
            verdict: Verdict::Problems,
            findings,
            next_action: Some(crate::diagnose::ActionId::Redeploy),
            stats: Stats::default(),
            os: OsType::Windows,
            screenshot_png: Some(vec![1, 2, 3]),
            serial_tail: (0..40).map(|_| "y".repeat(500)).collect(),
            changes: Some(crate::domain::Changes::Listed {
                window: std::time::Duration::from_secs(86_400),
                changes: (0..100)
                    .map(|i| crate::domain::Change {
                        at: time::OffsetDateTime::UNIX_EPOCH,
                        who: "w".repeat(200),
                        summary: "s".repeat(300),
                        operation: "o".into(),
                        resource_id: "r".into(),
                        status: "Succeeded".into(),
                        explains: (i % 10 == 0).then_some(CheckId::Nsg),
                    })
                    .collect(),
            }),
        };
        let message = report_message(&report);
        let mut total = 0;
        for embed in &message.embeds {
            let (chars, longest) = embed_chars(embed);
            assert!(longest <= MAX_FIELD_VALUE);
            total += chars;
        }
        assert!(total <= MAX_EMBED_TOTAL, "{total} characters");
        assert!(message.screenshot.is_some());
    }

    fn report_message(report: &crate::runbook::Report) -> ReportMessage {
        super::report(&Catalog::builtin(), report)
    }

    #[test]
    fn sharing_gives_small_values_all_they_need() {
        assert_eq!(share(&[10, 1000, 1000], 610), vec![10, 300, 300]);
        assert_eq!(share(&[10, 20], 100), vec![10, 20]);
        assert_eq!(share(&[], 100), Vec::<usize>::new());
    }

    #[test]
    fn clip_counts_characters_not_bytes() {
        assert_eq!(clip("héllo", 5), "héllo");
        assert_eq!(clip("héllo world", 5), "héll…");
        assert_eq!(clip("", 3), "");
    }

    #[test]
    fn serial_block_keeps_the_newest_lines_within_budget() {
        let lines: Vec<String> = (0..100).map(|i| format!("line {i:03}")).collect();
        let (block, count) = serial_block(&lines, 200).unwrap();
        assert!(block.chars().count() <= 200, "{}", block.len());
        assert!(block.contains("line 099"));
        assert!(!block.contains("line 000"));
        assert_eq!(block.lines().count(), count + 2);
        assert!(serial_block(&[], 100).is_none());
        assert!(serial_block(&lines, 5).is_none());
        let sneaky = vec!["```".to_string()];
        assert!(!serial_block(&sneaky, 100).unwrap().0.contains("``````"));
    }
}
