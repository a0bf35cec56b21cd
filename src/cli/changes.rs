//! `rdp-doctor changes VM`: every write of the window to the VM and what its Remote Desktop
//! depends on, newest first, from the Activity Log (the reports show the newest few).

use super::error::{CliError, Done};
use super::{fix, print_json, render, terminal_door};
use crate::domain::{Changes, VmQuery};
use std::io::Write;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ChangesArgs {
    /// The VM: NAME, RESOURCE-GROUP/NAME, or a full resource id.
    vm: String,
    /// How many hours back (default: `[changes] window_hours`, 24); at most 2160 (90 days).
    #[arg(long, value_name = "HOURS", value_parser = clap::value_parser!(u64).range(1..=2160))]
    hours: Option<u64>,
    /// Print one JSON object `{"vm", "changes"}` instead of the list.
    #[arg(long)]
    json: bool,
    /// Subscription(s) to search; overrides AZURE_SUBSCRIPTION_ID.
    #[arg(long, value_name = "ID")]
    subscription: Vec<String>,
    /// Against the built-in simulator's demo world.
    #[arg(long)]
    simulate: bool,
}

#[derive(serde::Serialize)]
struct Listed<'a> {
    vm: &'a crate::domain::VmRef,
    changes: &'a Changes,
}

pub async fn run(args: ChangesArgs) -> Result<Done, CliError> {
    VmQuery::parse(&args.vm).map_err(CliError::usage)?;
    let (door, _simulator) = terminal_door(args.simulate, &args.subscription, false).await?;
    let caller = fix::caller();
    let level = door.catalog().commands.check;
    let summary = door.resolve(&caller, &args.vm, level).await?;
    let window = args
        .hours
        .map(|h| Duration::from_secs(h * 3600))
        .unwrap_or_else(|| door.changes_window());
    let changes = door.changes(&caller, &summary.vm, window).await?;
    let style = render::Style::stdout();
    if args.json {
        print_json(
            &mut std::io::stdout().lock(),
            &Listed {
                vm: &summary.vm,
                changes: &changes,
            },
            "the changes",
        )?;
    } else {
        let _ = write!(
            anstream::stdout().lock(),
            "{}  {}\n{}",
            style.bold(&summary.vm.name),
            style.dim(&format!(
                "resource group {}, subscription {}",
                summary.vm.resource_group, summary.vm.subscription_id
            )),
            render::changes_section(&changes, &summary.vm.name, None, &style)
        );
    }
    match changes {
        Changes::Listed { .. } => Ok(Done::Clean),
        Changes::Skipped { reason } => Err(CliError::failed(format!(
            "the Activity Log was not read: {reason}"
        ))),
    }
}
