//! `reset-rdp-config` (runbook step 1): VMAccessAgent with empty settings, "reset configuration
//! only". Enables Remote Desktop and its firewall rule and sets the RDP port back to 3389.

use super::{Facts, Plan, Refusal, Step};
use crate::diagnose::{ActionId, OsType};

/// VMAccess needs a running Windows VM with a Ready guest agent.
pub(super) fn preconditions(facts: &Facts) -> Result<(), Refusal> {
    let name = &facts.vm.name;
    if facts.state.os == OsType::Linux {
        return Err(Refusal {
            reason: format!("{name} runs Linux: VMAccess for Windows does not apply (Linux has VMAccessForLinux and SSH)."),
            instead: None,
        });
    }
    if !facts.state.is_running() {
        return Err(Refusal {
            reason: format!(
                "{name} is {}: VMAccess can only change a running VM.",
                facts.state.power_state.as_deref().unwrap_or("not running")
            ),
            instead: Some(ActionId::Start),
        });
    }
    if !facts.state.agent_ready() {
        return Err(Refusal {
            reason: format!("The guest agent of {name} is not Ready, so VMAccess cannot run. Look at the boot diagnostics screenshot or the Serial Console; a restart often brings the agent back."),
            instead: Some(ActionId::Restart),
        });
    }
    Ok(())
}

pub(super) fn plan(facts: &Facts, extension: String) -> Result<Plan, Refusal> {
    preconditions(facts)?;
    Ok(Plan {
        action: ActionId::ResetRdpConfig,
        vm: facts.vm.clone(),
        headline: format!(
            "Reset the Remote Desktop configuration of {}",
            facts.vm.name
        ),
        consequences: vec![
            "Enables Remote Desktop and the Windows Firewall rule for TCP 3389".to_string(),
            "Sets the RDP port back to 3389 if it was changed".to_string(),
            format!("Runs the VMAccess extension ({extension}); existing sessions stay"),
        ],
        warnings: Vec::new(),
        step: Step::VmAccess {
            location: facts.state.location.clone(),
            extension,
        },
    })
}
