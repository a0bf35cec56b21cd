//! Operations from a terminal: `rdp-doctor operations` lists the running ones (each holds its
//! VM), `rdp-doctor resume` follows them to the end, `rdp-doctor unlock VM --reason TEXT` frees
//! a VM whose operation Azure no longer knows. All through the door, as the terminal's person.

use super::fix::{caller, print_outcome};
use super::{exit, fail};
use crate::runbook::door::Door;
use crate::runbook::operate::format_time;

pub async fn list(door: &Door) -> u8 {
    let running = match door.operations(&caller()).await {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if running.is_empty() {
        println!("No operation is running.");
        return exit::OK;
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
    exit::OK
}

pub async fn resume(door: &Door) -> u8 {
    let worst = std::sync::atomic::AtomicU8::new(exit::OK);
    let result = door
        .resume_for(&caller(), &|op, outcome| {
            println!(
                "Operation {} ({} of {}, by {}):",
                op.id, op.action, op.vm_name, op.requester_name
            );
            let code = print_outcome(outcome);
            worst.fetch_max(code, std::sync::atomic::Ordering::Relaxed);
        })
        .await;
    match result {
        Ok(0) => {
            println!("No operation to follow.");
            exit::OK
        }
        Ok(_) => worst.into_inner(),
        Err(e) => fail(&e),
    }
}

pub async fn unlock(door: &Door, vm_text: &str, reason: &str) -> u8 {
    match door.unlock(&caller(), vm_text, reason).await {
        Ok((vm, op)) => {
            println!(
                "Unlocked {}: the {} by {} (running since {}) is recorded as ended without Azure's answer. Check the VM before the next fix: rdp-doctor check {}",
                vm.name,
                op.action,
                op.requester_name,
                format_time(op.started_ms),
                vm.name
            );
            exit::OK
        }
        Err(e) => fail(&e),
    }
}
