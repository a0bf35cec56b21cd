//! Action Run Command (`POST virtualMachines/{vm}/runCommand`, `RunPowerShellScript`): a script
//! run inside the guest by its VM agent, followed to its end by hand (`lro.rs`: the SDK's own
//! polling breaks on it) and read back from the `RunCommandResult`.
//!
//! A Run Command is a POST that Azure acts on, so the retry policy treats it as a write: never
//! sent again after an answer that does not prove Azure did nothing. Azure runs one at a time per
//! VM (409 `Conflict` otherwise), only on a running VM (409 `OperationNotAllowed`) whose agent is
//! Ready (else the operation fails `VMAgentStatusCommunicationError`), and returns the last
//! 4,096 bytes of each output.

use super::lro::Pending;
use super::write::OperationHandle;
use super::{Arm, ArmError, VmRef};
use azure_mgmt_compute::package_2024_07_01::models as compute;

/// What a script printed, as Run Command returns it (the last 4,096 bytes of each stream).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunCommandOutput {
    pub stdout: String,
    pub stderr: String,
}

/// The command id of a PowerShell script on Windows.
const POWERSHELL: &str = "RunPowerShellScript";

impl Arm {
    /// POST a Run Command with `script` (one line per element) and return where to follow it.
    pub(crate) async fn send_run_command(
        &self,
        vm: &VmRef,
        script: &[String],
        what: &str,
    ) -> Result<(u16, bytes::Bytes, Pending), ArmError> {
        let mut input = compute::RunCommandInput::new(POWERSHELL.to_owned());
        input.script = script.to_vec();
        let response = self
            .compute
            .virtual_machines_client()
            .run_command(&vm.resource_group, &vm.name, input, &vm.subscription_id)
            .send()
            .await
            .map_err(|e| self.map_err(e, what))?
            .into_raw_response();
        let (status, headers, body) = response.deconstruct();
        let pending = Pending::from_headers(&headers);
        let body = body.collect().await.map_err(|e| self.map_err(e, what))?;
        Ok((u16::from(status), body, pending))
    }

    /// Runs a read-only `script` in the VM with Run Command and returns what it printed, once
    /// Azure says it finished. Gives up after `ArmSettings::run_command_timeout` with
    /// [`ArmError::Timeout`] (the script may still be running in the guest then).
    pub async fn run_command(
        &self,
        vm: &VmRef,
        script: &[String],
    ) -> Result<RunCommandOutput, ArmError> {
        let what = format!("running a script in {} (Run Command)", vm.name);
        let (status, body, pending) = self.send_run_command(vm, script, &what).await?;
        let result = self
            .follow_within(
                status,
                body,
                pending,
                &what,
                self.settings.run_command_timeout,
                // A script takes Azure tens of seconds: never poll it faster than the poll
                // interval, even when an answer says `Retry-After: 0`.
                self.settings.poll_interval,
            )
            .await?;
        parse_result(&result, &what)
    }

    /// Follows a Run Command started with `Arm::run_guest_fix` (perhaps by another process) to
    /// its end and returns what it printed; bounded like [`Arm::run_command`].
    pub async fn run_command_result(
        &self,
        handle: &OperationHandle,
    ) -> Result<RunCommandOutput, ArmError> {
        let what = "following a Run Command";
        let followed = self
            .follow_within(
                if handle.done { 200 } else { 202 },
                bytes::Bytes::new(),
                handle.pending(),
                what,
                self.settings.run_command_timeout,
                // A script takes Azure tens of seconds: never poll it faster than the poll
                // interval, even when an answer says `Retry-After: 0`.
                self.settings.poll_interval,
            )
            .await;
        // A guest fix has ended: Activity Log reads begun before serve no one after.
        self.pacer.activity.changed();
        parse_result(&followed?, what)
    }
}

/// The `RunCommandResult`: the `ComponentStatus/StdOut/…` and `ComponentStatus/StdErr/…`
/// statuses' messages.
fn parse_result(body: &[u8], what: &str) -> Result<RunCommandOutput, ArmError> {
    let malformed = |detail: String| ArmError::Malformed {
        what: format!("{what}: its result"),
        detail,
    };
    if body.is_empty() {
        return Err(malformed("Azure returned no RunCommandResult".to_owned()));
    }
    let result: compute::RunCommandResult =
        serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    let mut output = RunCommandOutput::default();
    let mut seen = false;
    for status in result.value {
        let code = status.code.unwrap_or_default();
        let message = status.message.unwrap_or_default();
        if code.starts_with("ComponentStatus/StdOut/") {
            output.stdout = message;
            seen = true;
        } else if code.starts_with("ComponentStatus/StdErr/") {
            output.stderr = message;
            seen = true;
        }
    }
    if !seen {
        return Err(malformed(
            "the result has neither a StdOut nor a StdErr status".to_owned(),
        ));
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example_result_reads() {
        // VirtualMachineRunCommand.json (compute 2024-07-01), with its outputs.
        let body = br#"{"value":[{"code":"ComponentStatus/StdOut/succeeded","level":"Info","displayStatus":"Provisioning succeeded","message":"This is a sample script with parameters value1 value2"},{"code":"ComponentStatus/StdErr/succeeded","level":"Info","displayStatus":"Provisioning succeeded","message":""}]}"#;
        let output = parse_result(body, "x").unwrap();
        assert_eq!(
            output.stdout,
            "This is a sample script with parameters value1 value2"
        );
        assert_eq!(output.stderr, "");
        assert!(matches!(
            parse_result(b"", "x"),
            Err(ArmError::Malformed { .. })
        ));
        assert!(matches!(
            parse_result(br#"{"value":[]}"#, "x"),
            Err(ArmError::Malformed { .. })
        ));
    }
}
