//! Text for a terminal: the live progress lines and the final report. Colour only on a TTY and
//! never with `NO_COLOR`.

use crate::diagnose::{CheckId, Status};
use crate::runbook::catalog::{Catalog, ClientError};
use crate::runbook::{Event, Report, Verdict};
use std::io::IsTerminal;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy)]
pub struct Style {
    colour: bool,
}

impl Style {
    pub fn stdout() -> Style {
        Style {
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    pub fn stderr() -> Style {
        Style {
            colour: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    pub fn status(&self, status: Status) -> String {
        let (code, label) = match status {
            Status::Pass => ("32", "PASS"),
            Status::Warn => ("33", "WARN"),
            Status::Fail => ("31;1", "FAIL"),
            Status::Skip => ("2", "SKIP"),
            Status::Error => ("35", "ERR "),
        };
        self.paint(code, label)
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
            Event::Resolved(vm) => eprintln!(
                "{}",
                self.style.dim(&format!(
                    "checking {} in {} (subscription {})",
                    vm.name, vm.resource_group, vm.subscription_id
                ))
            ),
            Event::StepStarted(_) => {}
            Event::StepFinished(finding) => eprintln!(
                "  {} {}",
                self.style.status(finding.status),
                self.style.dim(finding.step.as_str())
            ),
        }
    }

    pub fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}

fn title(catalog: &Catalog, step: CheckId) -> String {
    catalog
        .step(step)
        .map(|s| s.title.clone())
        .unwrap_or_else(|| step.as_str().to_string())
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
    let verdict = match report.verdict {
        Verdict::Ok => style.paint("32;1", "OK: nothing found that blocks Remote Desktop"),
        Verdict::Problems => style.paint("31;1", "PROBLEMS FOUND"),
        Verdict::Unknown => style.paint("35;1", "UNKNOWN: some checks could not run"),
    };
    out.push_str(&format!("Verdict: {verdict}\n\n"));
    for finding in &report.findings {
        out.push_str(&format!(
            "  {}  {}\n        {}\n",
            style.status(finding.status),
            style.bold(&title(catalog, finding.step)),
            finding.summary
        ));
        for detail in &finding.details {
            out.push_str(&format!("        {}\n", style.dim(detail)));
        }
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
            out.push_str(&format!("  {}\n", catalog.texts.reconnect));
        }
        None => {
            // No fix applies: point at the first failing check's own advice.
            if let Some(step) = report
                .findings
                .iter()
                .find(|f| f.status == Status::Fail)
                .and_then(|f| catalog.step(f.step))
            {
                out.push_str(&format!(
                    "{} {}\n  {}\n",
                    style.bold("Next step:"),
                    step.next_step,
                    style.dim(&step.doc)
                ));
            }
        }
    }
    out.push_str(&style.dim(&format!(
        "{} ARM requests, {:.2} s\n",
        report.stats.arm_requests,
        report.stats.elapsed_ms as f64 / 1000.0
    )));
    out
}

pub fn explain(error: &ClientError, style: &Style) -> String {
    format!(
        "{}\n  {} {}\n  {} {}\n  {}\n\n",
        style.bold(&error.message),
        style.bold("Cause:"),
        error.cause,
        style.bold("Fix:"),
        error.fix,
        style.dim(&error.doc)
    )
}
