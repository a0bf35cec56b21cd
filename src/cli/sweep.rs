//! `rdp-doctor sweep`: every Windows VM of a resource group or subscription, one summary.

use super::{fix::caller, render::Style, terminal_door, CliError, Done};
use crate::domain::{is_subscription_id, validate_group};
use crate::runbook::sweep::{SweepEvent, SweepOptions, SweepReport};
use crate::runbook::{CheckOptions, Verdict};
use std::io::{IsTerminal, Write};
use tokio_util::sync::CancellationToken;

/// Exit code of a sweep stopped with Ctrl-C (the shell's 128 + SIGINT).
pub const CANCELLED: u8 = 130;

#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// The resource group to sweep; without it, the whole subscription.
    #[arg(long, short = 'g', value_name = "RG")]
    resource_group: Option<String>,
    /// The subscription; default: the one of AZURE_SUBSCRIPTION_ID (or the config).
    #[arg(long, value_name = "ID")]
    subscription: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Test TCP 3389 from this IPv4 address instead of "anyone on the Internet".
    #[arg(long, value_name = "IP")]
    from: Option<String>,
    /// VMs checked at the same time (ARM's request budget is paced either way).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// Against the built-in simulator's demo world.
    #[arg(long)]
    simulate: bool,
}

pub async fn run(args: SweepArgs) -> Result<Done, CliError> {
    let from = super::parse_from(args.from.as_deref())?;
    if let Some(rg) = &args.resource_group {
        validate_group(rg).map_err(CliError::usage)?;
    }
    if let Some(sub) = &args.subscription {
        if !is_subscription_id(sub) {
            return Err(CliError::usage(format!(
                "--subscription {sub:?} is not a subscription id (a GUID such as 11111111-2222-3333-4444-555555555555)"
            )));
        }
    }
    let wanted: Vec<String> = args.subscription.iter().cloned().collect();
    let (door, _simulator) = terminal_door(args.simulate, &wanted, false).await?;
    let caller = caller();
    let scope = door
        .sweep_scope(
            &caller,
            args.resource_group.as_deref(),
            args.subscription.as_deref(),
        )
        .await?;
    let options = SweepOptions {
        concurrency: usize::from(args.concurrency),
        check: CheckOptions { from },
        // Ctrl-C cancels it; nothing on another replica can.
        handle: None,
    };

    let cancel = CancellationToken::new();
    let on_ctrl_c = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        })
    };
    // A progress bar with an ETA on a terminal; nothing on stderr for --json or a pipe.
    let live = !args.json && std::io::stderr().is_terminal();
    let bar = live.then(progress_bar);
    let progress = |event: SweepEvent| {
        let Some(bar) = &bar else { return };
        match event {
            SweepEvent::Listed { total, skipped } => {
                eprintln!("checking {total} Windows VMs in {scope} ({skipped} others skipped)");
                bar.set_length(total as u64);
                bar.reset();
                // Drawn from here on, below that line.
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                if total == 0 {
                    bar.finish_and_clear();
                }
            }
            SweepEvent::Checked { done, total, .. } => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                if done == total {
                    bar.finish();
                }
            }
        }
    };
    let result = door
        .sweep(&caller, &scope, &options, &cancel, &progress)
        .await;
    on_ctrl_c.abort();
    if let Some(bar) = &bar {
        // Cancelled, refused or failed: the bar stays as it stopped, above what follows.
        if !bar.is_finished() {
            bar.abandon();
        }
    }
    let report = result?;

    if args.json {
        super::print_json(&mut std::io::stdout().lock(), &report, "the sweep")?;
    } else {
        let _ = write!(
            anstream::stdout().lock(),
            "{}",
            table(&report, &Style::stdout())
        );
    }
    if report.cancelled {
        Ok(Done::Cancelled)
    } else if report.count(Verdict::Problems) > 0 {
        Ok(Done::Problems)
    } else if report.count(Verdict::Unknown) > 0 {
        Err(CliError::Incomplete)
    } else {
        Ok(Done::Clean)
    }
}

/// The sweep's progress: how many VMs are checked, the time so far and what is left (hidden until
/// the scope is listed, then drawn on stderr).
fn progress_bar() -> indicatif::ProgressBar {
    let style = indicatif::ProgressStyle::with_template(
        "  [{bar:30}] {pos}/{len} checked, {elapsed} so far, about {eta} left",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    indicatif::ProgressBar::hidden().with_style(style)
}

/// The summary for a terminal: counts, then one line per VM, worst first.
pub fn table(report: &SweepReport, style: &Style) -> String {
    let mut out = String::new();
    let seconds = report.stats.elapsed_ms as f64 / 1000.0;
    let checked = report.vms.len();
    let head = if report.cancelled {
        format!(
            "Sweep of {}: cancelled after {checked} of {} Windows VMs ({seconds:.1} s)",
            report.scope, report.total
        )
    } else {
        format!(
            "Sweep of {}: {checked} Windows VMs checked in {seconds:.1} s",
            report.scope
        )
    };
    out.push_str(&style.bold(&head));
    out.push('\n');
    out.push_str(&format!(
        "  {} with problems · {} could not be checked fully · {} ok",
        report.count(Verdict::Problems),
        report.count(Verdict::Unknown),
        report.count(Verdict::Ok),
    ));
    let jit = report.count(Verdict::ClosedByJit);
    if jit > 0 {
        out.push_str(&format!(" · {jit} closed by JIT, as designed"));
    }
    if !report.skipped.is_empty() {
        out.push_str(&format!(
            " · {} non-Windows VMs skipped",
            report.skipped.len()
        ));
    }
    out.push_str("\n\n");
    if report.vms.is_empty() {
        out.push_str("No Windows VM checked.\n");
        return out;
    }
    let width = report
        .vms
        .iter()
        .map(|r| r.vm.name.chars().count())
        .max()
        .unwrap_or(2)
        .max(2);
    out.push_str(&style.dim(&format!(
        "{:<width$}  {:<8}  DECIDING FINDING",
        "VM", "VERDICT"
    )));
    out.push('\n');
    for row in &report.vms {
        let finding = match &row.deciding {
            Some(f) => format!(
                "{} {}: {}",
                style.status(f.status),
                f.step.as_str(),
                f.summary
            ),
            None => "all checks pass".to_string(),
        };
        out.push_str(&format!(
            "{:<width$}  {:<8}  {finding}\n",
            row.vm.name,
            row.verdict.as_str()
        ));
    }
    if let Some(worst) = report.vms.iter().find(|r| r.verdict != Verdict::Ok) {
        out.push_str(&format!(
            "\nDetails and the fix: rdp-doctor check {}/{} --subscription {}\n",
            worst.vm.resource_group, worst.vm.name, worst.vm.subscription_id
        ));
    }
    out.push_str(&style.dim(&format!(
        "ARM: {} requests ({} for the lists), {} throttled, {} paced for {:.1} s\n",
        report.stats.arm_requests,
        report.stats.list_requests,
        report.stats.throttled,
        report.stats.paced,
        report.stats.paced_ms as f64 / 1000.0
    )));
    out
}
