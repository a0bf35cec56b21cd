//! The fixes from a terminal: `rdp-doctor restart web-01`, `rdp-doctor confirm ID`, …
//! The person is `$USER` (the policy's `cli_user`); the prompt is the confirmation.

use super::{exit, usage_error};
use crate::azure::VmQuery;
use crate::policy::{Actor, ActorSource};
use crate::runbook::fix::{FixRequest, Plan};
use crate::runbook::operate::{format_time, OperateError, Operator, Outcome, Progress, Prompt};
use std::io::{IsTerminal, Write};

/// The person at the terminal, as the policy knows them.
pub fn cli_actor() -> Actor {
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    Actor {
        id: name.clone(),
        name: name.clone(),
        role_ids: Vec::new(),
        role_names: Vec::new(),
        source: ActorSource::Cli,
    }
}

pub fn print_plan(prompt: &Prompt) {
    for note in &prompt.notes {
        println!("{note}");
    }
    let plan: &Plan = &prompt.plan;
    println!("{}", plan.headline);
    for line in &plan.consequences {
        println!("  - {line}");
    }
    for warning in &plan.warnings {
        println!("  ! WARNING: {warning}");
    }
    println!(
        "Confirmation {} (expires {}{})",
        prompt.confirmation_id,
        format_time(prompt.expires_ms),
        if prompt.two_person {
            "; needs a second person"
        } else {
            ""
        }
    );
}

fn operate_exit(e: &OperateError) -> u8 {
    match e {
        OperateError::Arm(_) | OperateError::Store(_) => exit::AZURE,
        OperateError::Locked { .. } => exit::AZURE,
        _ => exit::USAGE,
    }
}

pub fn print_outcome(outcome: &Outcome) -> u8 {
    for note in &outcome.notes {
        eprintln!("note: {note}");
    }
    match &outcome.result {
        Ok(()) => {
            println!(
                "{} of {} succeeded (confirmed by {}).",
                outcome.action.as_str(),
                outcome.vm.name,
                outcome.confirmed_by
            );
            if let Some(after) = &outcome.after {
                println!("Checked again: verdict {}.", after.verdict.as_str());
            }
            if outcome.changes.is_empty() {
                println!("No check changed status.");
            }
            for change in &outcome.changes {
                println!("  {change}");
            }
            exit::OK
        }
        Err(e) if outcome.still_running => {
            eprintln!(
                "{} of {} is still running: {e}. The VM stays locked; `rdp-doctor resume` follows it to the end.",
                outcome.action.as_str(),
                outcome.vm.name
            );
            exit::AZURE
        }
        Err(e) => {
            eprintln!(
                "error: {} of {} failed: {e}",
                outcome.action.as_str(),
                outcome.vm.name
            );
            exit::AZURE
        }
    }
}

fn progress(p: Progress) {
    match p {
        Progress::Sent { action, vm } => eprintln!("{} of {vm} sent to Azure…", action.as_str()),
        Progress::Waiting => eprintln!("waiting for Azure to finish…"),
        Progress::Rechecking => eprintln!("done; running the checks again…"),
        Progress::Unanswered { action, vm } => eprintln!(
            "Azure may have accepted the {} of {vm}; checking…",
            action.as_str()
        ),
        Progress::Learned(text) => eprintln!("{text}"),
    }
}

/// Request a fix; confirm it here when allowed (interactively or with `--yes`).
pub async fn request_and_maybe_confirm(
    operator: &Operator,
    vm_text: &str,
    request: FixRequest,
    yes: bool,
) -> u8 {
    let summary = match resolve(operator, vm_text).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let actor = cli_actor();
    let prompt = match operator.request(&actor, None, &summary.vm, request).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return operate_exit(&e);
        }
    };
    print_plan(&prompt);
    if prompt.two_person {
        println!(
            "This fix needs a second person: someone else runs `rdp-doctor confirm {}`.",
            prompt.confirmation_id
        );
        return exit::OK;
    }
    let confirmed = yes || ask(&summary.vm.name);
    if !confirmed {
        println!(
            "Not confirmed. To run it later: rdp-doctor confirm {}",
            prompt.confirmation_id
        );
        return exit::OK;
    }
    confirm(operator, &prompt.confirmation_id).await
}

/// The VM a person named, or the exit code after saying why not.
pub async fn resolve(operator: &Operator, vm_text: &str) -> Result<crate::azure::VmSummary, u8> {
    let query = VmQuery::parse(vm_text).map_err(usage_error)?;
    match operator.arm.resolve(&query, &operator.subscriptions).await {
        Ok(s) => Ok(s),
        Err(crate::azure::ResolveError::Arm(e)) => {
            eprintln!("error: {e}");
            Err(exit::AZURE)
        }
        Err(e) => Err(usage_error(e)),
    }
}

/// Ask on the terminal: the person types the VM's name.
fn ask(vm: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    print!("Type the VM name ({vm}) to confirm: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        return false;
    }
    line.trim().eq_ignore_ascii_case(vm)
}

pub async fn confirm(operator: &Operator, id: &str) -> u8 {
    let actor = cli_actor();
    match operator.confirm(&actor, id.trim(), &progress).await {
        Ok(outcome) => print_outcome(&outcome),
        Err(e) => {
            eprintln!("error: {e}");
            operate_exit(&e)
        }
    }
}

pub async fn cancel(operator: &Operator, id: &str) -> u8 {
    match operator.cancel(&cli_actor(), id.trim()).await {
        Ok(()) => {
            println!("Cancelled.");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            operate_exit(&e)
        }
    }
}

pub async fn audit(operator: &Operator, vm: Option<&str>, limit: u32) -> u8 {
    match operator.store.recent_audit(vm, limit).await {
        Ok(entries) => {
            if entries.is_empty() {
                println!("No audit entries.");
            }
            for e in entries {
                println!(
                    "{}  {:<12} {:<18} {:<16} {}",
                    format_time(e.at_ms),
                    e.actor_name,
                    e.command,
                    e.vm_name.unwrap_or_else(|| "-".into()),
                    e.result
                );
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::AZURE
        }
    }
}

/// The new password, typed twice without echo (or one line on stdin for scripts).
pub fn read_password(from_stdin: bool) -> Result<secrecy::SecretString, String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|_| "could not read the password from stdin".to_string())?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string().into());
    }
    if !std::io::stdin().is_terminal() {
        return Err("no terminal to ask for the password: use --password-stdin".into());
    }
    let first = rpassword::prompt_password("New password: ")
        .map_err(|_| "could not read the password".to_string())?;
    let second = rpassword::prompt_password("Repeat it: ")
        .map_err(|_| "could not read the password".to_string())?;
    if first != second {
        return Err("the two passwords differ; nothing was sent".into());
    }
    Ok(first.into())
}
