//! Operations from a terminal: `rdp-doctor operations` lists the running ones (each holds its
//! VM), `rdp-doctor resume` follows them to the end, `rdp-doctor unlock VM --reason TEXT` frees
//! a VM whose operation Azure no longer knows.

use super::fix::{cli_actor, print_outcome, resolve};
use super::{exit, usage_error};
use crate::runbook::operate::{format_time, OperateError, Operator};

pub async fn list(operator: &Operator) -> u8 {
    let running = match operator.running().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::AZURE;
        }
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

pub async fn resume(operator: &Operator) -> u8 {
    let worst = std::sync::atomic::AtomicU8::new(exit::OK);
    let result = operator
        .resume(&|op, outcome| {
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
        Err(e) => {
            eprintln!("error: {e}");
            exit::AZURE
        }
    }
}

pub async fn unlock(operator: &Operator, vm_text: &str, reason: &str) -> u8 {
    let summary = match resolve(operator, vm_text).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    match operator.unlock(&cli_actor(), &summary.vm, reason).await {
        Ok(op) => {
            println!(
                "Unlocked {}: the {} by {} (running since {}) is recorded as ended without Azure's answer. Check the VM before the next fix: rdp-doctor check {}",
                summary.vm.name,
                op.action,
                op.requester_name,
                format_time(op.started_ms),
                summary.vm.name
            );
            exit::OK
        }
        Err(e @ (OperateError::Store(_) | OperateError::Arm(_))) => {
            eprintln!("error: {e}");
            exit::AZURE
        }
        Err(e) => usage_error(e),
    }
}
