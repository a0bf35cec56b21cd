//! Reading the guest: rdp-doctor's read script through Run Command, parsed into
//! [`GuestFacts`], with each way it can fail told apart ([`GuestError`]) so a person learns
//! whether to wait, start the VM, look at the agent, or report a bug.

use crate::azure::{Arm, ArmError, VmRef};
use crate::diagnose::guest::{parse_read, read_script, GuestFacts, GuestOutputError};
use std::time::Duration;

/// Why the guest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// Azure did not say the script finished within the time allowed (it may still run).
    #[error("the guest read did not finish within {}s (Run Command may still be running in the VM)", after.as_secs())]
    TimedOut { after: Duration },
    /// Another Run Command is running on the VM: Azure runs one at a time.
    #[error("another Run Command is running on the VM; Azure runs one at a time, try again when it has finished ({message})")]
    Busy { message: String },
    /// The VM is not running, as Azure said.
    #[error("Run Command needs a running VM: {message}")]
    VmNotRunning { message: String },
    /// The VM agent is not Ready, as Azure said: Run Command goes through it.
    #[error("Run Command needs the VM agent to be Ready: {message}")]
    AgentNotReady { message: String },
    /// Any other failure of Azure's (access, throttling, the network…).
    #[error(transparent)]
    Azure(ArmError),
    /// The script ran but its output could not be read.
    #[error("the guest read ran, but its output could not be read: {0}")]
    Unreadable(GuestOutputError),
}

impl From<ArmError> for GuestError {
    fn from(error: ArmError) -> GuestError {
        match error {
            ArmError::Timeout { after, .. } => GuestError::TimedOut { after },
            ArmError::Conflict { code, message }
                if code.eq_ignore_ascii_case("Conflict")
                    && message.contains("Run command extension execution is in progress") =>
            {
                GuestError::Busy { message }
            }
            ArmError::Conflict { code, message }
                if code.eq_ignore_ascii_case("OperationNotAllowed") =>
            {
                GuestError::VmNotRunning { message }
            }
            ArmError::OperationFailed { code, message, .. }
                if code.eq_ignore_ascii_case("VMAgentStatusCommunicationError") =>
            {
                GuestError::AgentNotReady { message }
            }
            other => GuestError::Azure(other),
        }
    }
}

/// Runs the read script in `vm` and parses what it printed; gives up after `timeout` (or the
/// ARM settings' `run_command_timeout`, whichever is shorter).
pub async fn read(arm: &Arm, vm: &VmRef, timeout: Duration) -> Result<GuestFacts, GuestError> {
    let output = tokio::time::timeout(timeout, arm.run_command(vm, &read_script()))
        .await
        .map_err(|_| GuestError::TimedOut { after: timeout })??;
    parse_read(&output.stdout).map_err(GuestError::Unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_failures_are_told_apart() {
        let conflict = |code: &str, message: &str| ArmError::Conflict {
            code: code.into(),
            message: message.into(),
        };
        assert!(matches!(
            GuestError::from(conflict("Conflict", "Run command extension execution is in progress. Please wait for completion before invoking a run command.")),
            GuestError::Busy { .. }
        ));
        assert!(matches!(
            GuestError::from(conflict(
                "OperationNotAllowed",
                "The operation requires the VM to be running (or set to run)."
            )),
            GuestError::VmNotRunning { .. }
        ));
        assert!(matches!(
            GuestError::from(conflict(
                "Conflict",
                "Run command OS type 'Windows' does not match the target OS Linux."
            )),
            GuestError::Azure(_)
        ));
        assert!(matches!(
            GuestError::from(ArmError::OperationFailed {
                status: "failed".into(),
                code: "VMAgentStatusCommunicationError".into(),
                message: "VM 'x' has not reported status for VM agent or extensions.".into(),
            }),
            GuestError::AgentNotReady { .. }
        ));
        assert!(matches!(
            GuestError::from(ArmError::Timeout {
                what: "x".into(),
                after: Duration::from_secs(5)
            }),
            GuestError::TimedOut { .. }
        ));
    }
}
