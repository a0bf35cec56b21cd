//! The fixes from a terminal: `rdp-doctor restart web-01`, `rdp-doctor confirm ID`, …
//! The person is the operating-system account running rdp-doctor (`cli:<user>`), never a
//! variable such as `$USER` that anyone can set; the prompt is the confirmation.

use super::{CliError, Done};
use crate::policy::{Actor, Place};
use crate::runbook::door::{Caller, Door, DoorError};
use crate::runbook::fix::{FixRequest, Plan};
use crate::runbook::operate::{format_time, Outcome, Progress, Prompt};
use std::io::{IsTerminal, Write};

/// The operating-system account this process runs as, from its real uid (the password
/// database's name for it, or `uid<N>` when it has none).
pub fn os_user() -> String {
    #[cfg(unix)]
    {
        // SAFETY: getuid cannot fail. getpwuid_r writes only into `entry` and `buf`, whose
        // sizes we pass; the name it points to lives in `buf`, which outlives the read below.
        let uid = unsafe { libc::getuid() };
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc == 0 && !found.is_null() && !entry.pw_name.is_null() {
            let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
            let name = name.to_string_lossy().trim().to_string();
            if !name.is_empty() {
                return name;
            }
        }
        format!("uid{uid}")
    }
    #[cfg(not(unix))]
    {
        std::env::var("USERNAME").unwrap_or_else(|_| "unknown".to_string())
    }
}

/// The person at the terminal, as the policy knows them.
pub fn caller() -> Caller {
    Caller {
        actor: Actor::terminal(&os_user()),
        place: Place::Terminal,
    }
}

pub fn print_plan(prompt: &Prompt) {
    for note in &prompt.notes {
        println!("{note}");
    }
    let plan: &Plan = &prompt.plan;
    println!("{}", plan.headline);
    println!(
        "  VM {} in resource group {}, subscription {}",
        plan.vm.name, plan.vm.resource_group, plan.vm.subscription_id
    );
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

/// `rdp-doctor fix VM ACTION`: the request an action id names. The guest fixes and
/// `open-rdp-port` (which needs `--source`); the others have commands of their own.
pub fn request_by_id(
    action: &str,
    source: Option<&str>,
    port: u16,
) -> Result<FixRequest, CliError> {
    use crate::diagnose::ActionId;
    let id = action.trim();
    let Some(action) = ActionId::parse(id) else {
        return Err(CliError::usage(format!(
            "unknown fix `{id}`; fixes are {}",
            ActionId::ALL.map(ActionId::as_str).join(", ")
        )));
    };
    if source.is_some() && action != ActionId::OpenRdpPort {
        return Err(CliError::usage(format!(
            "--source is for open-rdp-port, not `{action}`"
        )));
    }
    match action {
        guest @ (ActionId::EnableRdp
        | ActionId::StartTermservice
        | ActionId::ResetRdpPort
        | ActionId::EnableFirewallRdp
        | ActionId::RenewRdpCertificate
        | ActionId::RemoveRdshRole
        | ActionId::FreeDiskSpace) => Ok(FixRequest::Guest(guest)),
        ActionId::OpenRdpPort => {
            let Some(source) = source else {
                return Err(CliError::usage(
                    "open-rdp-port needs --source: an IPv4 address, a CIDR, a service tag, or `anywhere`",
                ));
            };
            crate::runbook::fix::parse_source(source)
                .map(|source| FixRequest::OpenRdpPort { source, port })
                .map_err(CliError::usage)
        }
        ActionId::Start => Ok(FixRequest::Start),
        ActionId::Restart => Ok(FixRequest::Restart),
        ActionId::Redeploy => Ok(FixRequest::Redeploy),
        ActionId::ResetRdpConfig => Ok(FixRequest::ResetRdpConfig),
        ActionId::RemoveRoute => Ok(FixRequest::RemoveRoute),
        ActionId::RequestJit => Err(CliError::usage(
            "request-jit has its own command: `rdp-doctor request-jit VM --from IP [--hours N]`",
        )),
        ActionId::ResetPassword => Err(CliError::usage(
            "reset-password has its own command: `rdp-doctor reset-password VM --user NAME`",
        )),
    }
}

/// Print what a fix did; a fix that failed or still runs is the error returned.
pub fn print_outcome(outcome: &Outcome) -> Result<Done, CliError> {
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
            if let Some(settling) = &outcome.still_settling {
                println!("{settling}");
            }
            if let Some(after) = &outcome.after {
                println!("Checked again: verdict {}.", after.verdict.as_str());
            }
            if outcome.changes.is_empty() {
                println!("No check changed status.");
            }
            for change in &outcome.changes {
                println!("  {change}");
            }
            Ok(Done::Clean)
        }
        Err(e) if outcome.still_running => Err(CliError::failed(format!(
            "{} of {} is still running: {e}. The VM stays locked; `rdp-doctor resume` follows it to the end.",
            outcome.action.as_str(),
            outcome.vm.name
        ))),
        Err(e) => Err(CliError::failed(format!(
            "{} of {} failed: {e}",
            outcome.action.as_str(),
            outcome.vm.name
        ))),
    }
}

fn progress(p: Progress) {
    eprintln!("{}", p.text(None));
}

/// Request a fix; confirm it here when allowed (interactively or with `--yes`).
pub async fn request_and_maybe_confirm(
    door: &Door,
    vm_text: &str,
    request: FixRequest,
    yes: bool,
) -> Result<Done, CliError> {
    let caller = caller();
    // Finding the VM needs what seeing it needs; the fix is authorised on it below.
    let needed = door.catalog().commands.check;
    let summary = door.resolve(&caller, vm_text, needed).await?;
    let prompt = door.request_fix(&caller, &summary, request).await?;
    show_and_maybe_confirm(door, &caller, prompt, yes).await
}

async fn show_and_maybe_confirm(
    door: &Door,
    caller: &Caller,
    prompt: Prompt,
    yes: bool,
) -> Result<Done, CliError> {
    print_plan(&prompt);
    if prompt.two_person {
        println!(
            "This fix needs a second person: someone else runs `rdp-doctor confirm {}`.",
            prompt.confirmation_id
        );
        return Ok(Done::Clean);
    }
    let confirmed = yes || ask(&prompt.plan.vm.name);
    if !confirmed {
        println!(
            "Not confirmed. To run it later: rdp-doctor confirm {}",
            prompt.confirmation_id
        );
        return Ok(Done::Clean);
    }
    confirm_as(door, caller, &prompt.confirmation_id).await
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

pub async fn confirm(door: &Door, id: &str) -> Result<Done, CliError> {
    confirm_as(door, &caller(), id).await
}

async fn confirm_as(door: &Door, caller: &Caller, id: &str) -> Result<Done, CliError> {
    match door.confirm(caller, id.trim(), &progress).await {
        Ok(outcome) => print_outcome(&outcome),
        Err(DoorError::Operate(crate::runbook::operate::OperateError::PlanChanged {
            was,
            now,
            fresh,
        })) => {
            println!("A fresh prompt:");
            print_plan(&fresh);
            println!("To run it: rdp-doctor confirm {}", fresh.confirmation_id);
            Err(CliError::usage(format!(
                "what this fix would do has changed since the prompt was shown, so nothing was sent.\n  was: {was}\n  now: {now}"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn cancel(door: &Door, id: &str) -> Result<Done, CliError> {
    door.cancel(&caller(), id.trim()).await?;
    println!("Cancelled.");
    Ok(Done::Clean)
}

pub async fn audit(door: &Door, vm: Option<&str>, limit: u32) -> Result<Done, CliError> {
    let entries = door.audit(&caller(), vm, limit).await?;
    if entries.is_empty() {
        println!("No audit entries.");
    }
    for e in entries {
        println!(
            "{}  {:<16} {:<18} {:<16} {}",
            format_time(e.at_ms),
            e.actor_name,
            e.command,
            e.vm_name.unwrap_or_else(|| "-".into()),
            e.result
        );
    }
    Ok(Done::Clean)
}

/// Why no new password was read; nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("could not read the password from stdin")]
    Stdin,
    #[error("no terminal to ask for the password: use --password-stdin")]
    NoTerminal,
    #[error("could not read the password")]
    Prompt,
    #[error("the two passwords differ; nothing was sent")]
    Differ,
}

/// The new password, typed twice without echo (or one line on stdin for scripts).
pub fn read_password(from_stdin: bool) -> Result<secrecy::SecretString, PasswordError> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|_| PasswordError::Stdin)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string().into());
    }
    if !std::io::stdin().is_terminal() {
        return Err(PasswordError::NoTerminal);
    }
    let first = rpassword::prompt_password("New password: ").map_err(|_| PasswordError::Prompt)?;
    let second = rpassword::prompt_password("Repeat it: ").map_err(|_| PasswordError::Prompt)?;
    if first != second {
        return Err(PasswordError::Differ);
    }
    Ok(first.into())
}
