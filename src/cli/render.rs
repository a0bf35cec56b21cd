//! Text for a terminal: the live progress lines and the final report. Whether there is colour
//! is anstream's decision for the stream: never with `NO_COLOR` or `CLICOLOR=0`, always with
//! `CLICOLOR_FORCE=1` (`NO_COLOR` wins over it), otherwise on a terminal that supports it. What
//! is printed goes through anstream's streams, which turn the escapes into console calls on a
//! Windows console without ANSI support.

use crate::diagnose::{ActionId, CheckId, Finding, Status};
use crate::domain::Changes;
use crate::runbook::catalog::{Catalog, ClientError};
use crate::runbook::{Event, Report, Verdict};
use anstream::{stream::RawStream, AutoStream, ColorChoice};
use anstyle::{AnsiColor, Color};
use std::sync::Mutex;

const BOLD: anstyle::Style = anstyle::Style::new().bold();
const DIM: anstyle::Style = anstyle::Style::new().dimmed();

const fn fg(colour: AnsiColor) -> anstyle::Style {
    anstyle::Style::new().fg_color(Some(Color::Ansi(colour)))
}

#[derive(Debug, Clone, Copy)]
pub struct Style {
    colour: bool,
}

impl Style {
    pub fn stdout() -> Style {
        Style::for_stream(&std::io::stdout())
    }

    pub fn stderr() -> Style {
        Style::for_stream(&std::io::stderr())
    }

    fn for_stream(stream: &impl RawStream) -> Style {
        Style {
            colour: AutoStream::choice(stream) != ColorChoice::Never,
        }
    }

    fn paint(&self, look: anstyle::Style, text: &str) -> String {
        if self.colour {
            format!("{look}{text}{look:#}")
        } else {
            text.to_string()
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint(BOLD, text)
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint(DIM, text)
    }

    pub fn status(&self, status: Status) -> String {
        let (look, label) = match status {
            Status::Pass => (fg(AnsiColor::Green), "PASS"),
            Status::Warn => (fg(AnsiColor::Yellow), "WARN"),
            Status::Fail => (fg(AnsiColor::Red).bold(), "FAIL"),
            Status::Skip => (DIM, "SKIP"),
            Status::Error => (fg(AnsiColor::Magenta), "ERR "),
        };
        self.paint(look, label)
    }
}

/// Progress lines on stderr while the checks run (only on a terminal).
pub struct Progress {
    enabled: bool,
    style: Style,
    lock: Mutex<()>,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            style: Style::stderr(),
            lock: Mutex::new(()),
        }
    }

    pub fn event(&self, event: &Event) {
        if !self.enabled {
            return;
        }
        let _guard = self.lock.lock();
        match event {
            Event::Resolved(vm) => anstream::eprintln!(
                "{}",
                self.style.dim(&format!(
                    "checking {} in {} (subscription {})",
                    vm.name, vm.resource_group, vm.subscription_id
                ))
            ),
            Event::StepStarted(_) | Event::ArmChecked(_) | Event::GuestStarted => {}
            Event::StepFinished(finding) => anstream::eprintln!(
                "  {} {}",
                self.style.status(finding.status),
                self.style.dim(finding.step.as_str())
            ),
        }
    }

    pub fn finish(&self) {
        if self.enabled {
            anstream::eprintln!();
        }
    }
}

/// Serial-log lines shown when the guest looks healthy (`--json` has all that was kept).
const QUIET_SERIAL_LINES: usize = 5;

pub fn report(
    report: &Report,
    catalog: &Catalog,
    style: &Style,
    screenshot_file: Option<&std::path::Path>,
) -> String {
    let mut out = String::new();
    let vm = &report.vm;
    out.push_str(&format!(
        "{}  {}\n",
        style.bold(&vm.name),
        style.dim(&format!(
            "resource group {}, subscription {}",
            vm.resource_group, vm.subscription_id
        ))
    ));
    out.push_str(&format!(
        "Verdict: {}\n\n",
        verdict_text(report.verdict, style)
    ));
    for finding in &report.findings {
        push_finding(&mut out, finding, catalog, style);
    }
    if let Some(changes) = &report.changes {
        out.push('\n');
        out.push_str(&changes_section(
            changes,
            &report.vm.name,
            Some(crate::runbook::changes::SHOWN_IN_REPORT),
            style,
        ));
    }
    if !report.serial_tail.is_empty() {
        // The serial log matters when the guest itself is suspect; otherwise it is background.
        let guest_suspect = report.findings.iter().any(|f| {
            matches!(
                f.step,
                CheckId::VmStatus | CheckId::VmAgent | CheckId::ResourceHealth
            ) && matches!(f.status, Status::Fail | Status::Warn | Status::Error)
        });
        let shown = if !guest_suspect {
            QUIET_SERIAL_LINES.min(report.serial_tail.len())
        } else {
            report.serial_tail.len()
        };
        out.push_str(&format!(
            "\n{}\n",
            style.bold(&format!("Serial log (last {shown} lines):"))
        ));
        for line in &report.serial_tail[report.serial_tail.len() - shown..] {
            out.push_str(&format!("  | {line}\n"));
        }
    }
    if report.screenshot_png.is_some() {
        match screenshot_file {
            Some(path) => out.push_str(&format!(
                "\nConsole screenshot written to {}\n",
                path.display()
            )),
            None => out.push_str(&style.dim(
                "\nA console screenshot is available: add --screenshot-out FILE.png to save it.\n",
            )),
        }
    }
    out.push('\n');
    next_step(&mut out, report, catalog, style);
    out.push_str(&style.dim(&format!(
        "{} ARM requests, {:.2} s\n",
        report.stats.arm_requests,
        report.stats.elapsed_ms as f64 / 1000.0
    )));
    out
}

/// "Recent changes": the `newest` most recent (all of them with `None`) and every one that
/// explains a failing check, marked; or why there are none to show.
pub fn changes_section(
    changes: &Changes,
    vm: &str,
    newest: Option<usize>,
    style: &Style,
) -> String {
    let list = match changes {
        Changes::Skipped { reason } => {
            return format!(
                "{} {}\n",
                style.bold("Recent changes:"),
                style.dim(&format!("skipped: {reason}"))
            )
        }
        Changes::Listed { window, changes } => {
            if changes.is_empty() {
                return format!(
                    "{} none in {} (Activity Log)\n",
                    style.bold("Recent changes:"),
                    Changes::window_text(*window)
                );
            }
            (window, changes)
        }
    };
    let (window, all) = list;
    let shown = match newest {
        Some(n) => changes.shown(n),
        None => all.iter().collect(),
    };
    let mut out = format!(
        "{}\n",
        style.bold(&format!(
            "Recent changes ({}, newest first, UTC):",
            Changes::window_text(*window)
        ))
    );
    let now = time::OffsetDateTime::now_utc();
    for change in &shown {
        let line = change.line_from(now);
        match change.explains {
            Some(check) => out.push_str(&format!(
                "  {}  {}\n",
                style.paint(fg(AnsiColor::Red).bold(), &line),
                style.bold(&format!("<- explains {check}"))
            )),
            None => out.push_str(&format!("  {line}\n")),
        }
    }
    if shown.len() < all.len() {
        out.push_str(&style.dim(&format!(
            "  {} more: rdp-doctor changes {vm}\n",
            all.len() - shown.len()
        )));
    }
    out
}

fn verdict_text(verdict: Verdict, style: &Style) -> String {
    match verdict {
        Verdict::Ok => style.paint(
            fg(AnsiColor::Green).bold(),
            "OK: nothing found that blocks Remote Desktop",
        ),
        Verdict::Problems => style.paint(fg(AnsiColor::Red).bold(), "PROBLEMS FOUND"),
        Verdict::Unknown => style.paint(
            fg(AnsiColor::Magenta).bold(),
            "UNKNOWN: some checks could not run",
        ),
        Verdict::ClosedByJit => style.paint(
            fg(AnsiColor::Cyan).bold(),
            "CLOSED BY JIT, as designed: request access",
        ),
    }
}

fn push_finding(out: &mut String, finding: &Finding, catalog: &Catalog, style: &Style) {
    out.push_str(&format!(
        "  {}  {}\n        {}\n",
        style.status(finding.status),
        style.bold(&catalog.finding_title(finding)),
        finding.summary
    ));
    for detail in &finding.details {
        out.push_str(&format!("        {}\n", style.dim(detail)));
    }
}

/// The line printed on stderr while Run Command runs.
pub const GUEST_RUNNING: &str =
    "Looking inside Windows with Run Command (a read-only script; it takes up to a minute)...";

/// What `check --guest` prints after the ARM report: the guest findings (one line when none of
/// them could run, all for the same reason), the `nsg` finding again when it was evaluated for
/// the guest's listener port, then the verdict and next step of the whole.
pub fn guest_part(report: &Report, catalog: &Catalog, style: &Style) -> String {
    let mut out = format!("\n{}\n", style.bold("Inside Windows (Run Command)"));
    let guest: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.step.is_guest())
        .collect();
    match guest.as_slice() {
        [first, rest @ ..]
            if !rest.is_empty()
                && rest
                    .iter()
                    .all(|f| f.status == first.status && f.summary == first.summary) =>
        {
            out.push_str(&format!(
                "  {}  {}\n        {}\n",
                style.status(first.status),
                style.bold("Every guest check"),
                first.summary
            ));
        }
        _ => {
            for finding in guest {
                push_finding(&mut out, finding, catalog, style);
            }
        }
    }
    if let Some(nsg) = report
        .finding(CheckId::Nsg)
        .filter(|f| f.evidence.get("port").is_some())
    {
        push_finding(&mut out, nsg, catalog, style);
    }
    out.push_str(&format!(
        "\nVerdict with the guest checks: {}\n\n",
        verdict_text(report.verdict, style)
    ));
    next_step(&mut out, report, catalog, style);
    out.push_str(&style.dim(&format!(
        "{} ARM requests, {:.2} s in all\n",
        report.stats.arm_requests,
        report.stats.elapsed_ms as f64 / 1000.0
    )));
    out
}

fn next_step(out: &mut String, report: &Report, catalog: &Catalog, style: &Style) {
    match report.next_action.and_then(|a| catalog.step(a)) {
        Some(step) => {
            out.push_str(&format!(
                "{} {} ({})\n  {}\n  {}\n",
                style.bold("Next step:"),
                step.title,
                step.id,
                step.next_step,
                style.dim(&step.doc)
            ));
            let action = report.next_action;
            // The finding's own advice for this fix (through Azure Bastion: the source to admit).
            if let Some(advice) = report.next_action_advice() {
                out.push_str(&format!("  {advice}\n"));
            }
            if let Some(guest) = action.filter(|a| a.is_guest()) {
                out.push_str(&format!(
                    "  Run it: rdp-doctor fix {} {guest}\n",
                    report.vm.name
                ));
            }
            if action == Some(ActionId::RequestJit) {
                out.push_str(&format!(
                    "  Run it: rdp-doctor request-jit {} --from YOUR.IP.ADDRESS [--hours N]\n",
                    report.vm.name
                ));
            }
            if action == Some(ActionId::ResetRdpPort) {
                // The other way out: leave the listener where it is and open the NSG for it.
                out.push_str(&format!(
                    "  Or open the NSG for the port it listens on: rdp-doctor fix {} open-rdp-port --source YOUR.IP.ADDRESS --port {}\n",
                    report.vm.name,
                    listener_port(report).map_or("PORT".to_string(), |p| p.to_string())
                ));
            }
            out.push_str(&format!("  {}\n", catalog.texts.reconnect));
        }
        None => {
            // No fix applies: point at the first failing check's own advice (the finding's
            // when it has its own), else at a passing finding's (how to reach the VM).
            let failing = report.findings.iter().find(|f| f.status == Status::Fail);
            if let Some((finding, step)) =
                failing.and_then(|f| catalog.step(f.step).map(|step| (f, step)))
            {
                out.push_str(&format!(
                    "{} {}\n  {}\n",
                    style.bold("Next step:"),
                    finding.next_step.as_deref().unwrap_or(&step.next_step),
                    style.dim(&step.doc)
                ));
            } else if let Some(next) = report.findings.iter().find_map(|f| f.next_step.as_ref()) {
                if failing.is_none() {
                    out.push_str(&format!("{} {}\n", style.bold("Next step:"), next));
                }
            }
        }
    }
}

/// The RDP listener's port as the guest check reported it (its evidence's `port`), if it did.
fn listener_port(report: &Report) -> Option<u64> {
    report
        .findings
        .iter()
        .find(|f| f.step == CheckId::GuestListener)
        .and_then(|f| f.evidence.get("port"))
        .and_then(serde_json::Value::as_u64)
}

pub fn explain(error: &ClientError, style: &Style) -> String {
    let mut out = format!(
        "{}\n  {} {}\n  {} {}\n",
        style.bold(&error.message),
        style.bold("Cause:"),
        error.cause,
        style.bold("Fix:"),
        error.fix,
    );
    let checks = error.checks();
    if !checks.is_empty() {
        let names: Vec<&str> = checks.iter().map(|c| c.as_str()).collect();
        out.push_str(&format!(
            "  {} {} (run `{}`)\n",
            style.bold("Checks:"),
            names.join(", "),
            check_command(&checks)
        ));
    }
    let fixes = error.fixes();
    if !fixes.is_empty() {
        let names: Vec<&str> = fixes.iter().map(|a| a.as_str()).collect();
        out.push_str(&format!(
            "  {} {}\n",
            style.bold("Fixes:"),
            names.join(", ")
        ));
    }
    out.push_str(&format!("  {}\n\n", style.dim(&error.doc)));
    out
}

/// The `check` command that runs `checks`: `--guest` for checks inside the VM, `--from` for the
/// network path from the person's address.
fn check_command(checks: &[CheckId]) -> String {
    let mut command = String::from("rdp-doctor check VM");
    if checks.iter().any(|c| c.is_guest()) {
        command.push_str(" --guest");
    }
    if checks.contains(&CheckId::NetworkPath) {
        command.push_str(" --from YOUR_IP");
    }
    command
}

/// `explain` when nothing matched: how to paste better, and the closest entries.
pub fn explain_nothing(closest: &[&ClientError], style: &Style) -> String {
    let mut out = format!(
        "{}\nPaste the message as the dialog shows it (a sentence of it is enough), or its error code such as 0x204.\nRun `rdp-doctor check VM` to run the runbook's checks instead.\n",
        style.bold("No known Remote Desktop client error matches that text.")
    );
    if !closest.is_empty() {
        out.push_str("\nThe closest known messages:\n");
        for error in closest {
            out.push_str(&format!(
                "  - {} {}\n",
                error.message,
                style.dim(&format!("({})", error.id))
            ));
        }
    }
    out
}
