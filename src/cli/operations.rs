//! Operations from a terminal: `rdp-doctor operations` lists the running ones (each holds its
//! VM), `rdp-doctor resume` follows them to the end, `rdp-doctor unlock VM --reason TEXT` frees
//! a VM whose operation Azure no longer knows. All through the door, as the terminal's person.

use super::fix::{caller, print_outcome};
use super::{CliError, Done};
use crate::runbook::door::Door;
use crate::runbook::operate::format_time;

pub async fn list(door: &Door) -> Result<Done, CliError> {
    let running = door.operations(&caller()).await?;
    if running.is_empty() {
        println!("No operation is running.");
        return Ok(Done::Clean);
    }
    println!(
        "{:<6} {:<18} {:<16} {:<20} {:<24} Azure's URL",
        "ID", "ACTION", "VM", "SINCE", "BY"
    );
    for op in running {
        println!(
            "{:<6} {:<18} {:<16} {:<20} {:<24} {}",
            op.id,
            op.action,
            op.vm_name,
            format_time(op.started_ms),
            op.requester_name,
            if op.azure_url.is_some() {
                "stored (resumable)"
            } else {
                "none yet"
            }
        );
    }
    println!("`rdp-doctor resume` follows them to the end.");
    Ok(Done::Clean)
}

/// Follow every running operation; the ones that failed or still run are the error, one a
/// line, naming their operation.
pub async fn resume(door: &Door) -> Result<Done, CliError> {
    let failed = std::sync::Mutex::new(Vec::new());
    let followed = door
        .resume_for(&caller(), &|op, outcome| {
            println!(
                "Operation {} ({} of {}, by {}):",
                op.id, op.action, op.vm_name, op.requester_name
            );
            if let Err(e) = print_outcome(outcome) {
                let e = CliError::failed(format!("operation {}: {e}", op.id));
                failed.lock().unwrap_or_else(|p| p.into_inner()).push(e);
            }
        })
        .await?;
    let failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
    if followed == 0 {
        println!("No operation to follow.");
    }
    if failed.is_empty() {
        Ok(Done::Clean)
    } else {
        Err(CliError::Several(failed))
    }
}

pub async fn unlock(door: &Door, vm_text: &str, reason: &str) -> Result<Done, CliError> {
    let (vm, op) = door.unlock(&caller(), vm_text, reason).await?;
    println!(
        "Unlocked {}: the {} by {} (running since {}) is recorded as ended without Azure's answer. Check the VM before the next fix: rdp-doctor check {}",
        vm.name,
        op.action,
        op.requester_name,
        format_time(op.started_ms),
        vm.name
    );
    Ok(Done::Clean)
}
