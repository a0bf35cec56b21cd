//! Action Run Command: `POST virtualMachines/{vm}/runCommand` (`VirtualMachines_RunCommand`,
//! Azure/azure-rest-api-specs `specification/compute/resource-manager/Microsoft.Compute/ComputeRP/stable/2024-07-01`,
//! example `runCommandExamples/VirtualMachineRunCommand.json`), as Azure does it:
//!
//! - a long-running operation: 202 with `Azure-AsyncOperation` and `Location`; once it has
//!   succeeded the `Location` answers the `RunCommandResult` (`value`: a `ComponentStatus/StdOut/succeeded`
//!   and a `ComponentStatus/StdErr/succeeded` status whose `message` is the output) and the
//!   operation status carries it as `properties.output`;
//! - Microsoft's "Run scripts in your Windows VM by using action Run Commands": one script at a
//!   time per VM (a second answers 409 `Conflict` "Run command extension execution is in
//!   progress. Please wait for completion before invoking a run command.", as Azure/azure-cli#32305
//!   records it), only the last 4,096 bytes of each output are returned, and it needs a running
//!   VM (409 `OperationNotAllowed` "The operation requires the VM to be running (or set to
//!   run).", MicrosoftDocs/azure-docs#32404) with a Ready VM agent (the operation ends `Failed`
//!   with `VMAgentStatusCommunicationError`, the code Compute gives when the agent did not report);
//! - `RunPowerShellScript` on a Linux VM: 409 `Conflict` "Run command OS type 'Windows' does not
//!   match the target OS Linux." (MicrosoftDocs/azure-docs#116419), and the other way round.
//!
//! The simulator cannot run PowerShell. It answers rdp-doctor's own scripts, recognised by their
//! first line, from its model of the guest (`world/guest.rs`): the read script prints
//! `RDP-DOCTOR-GUEST {json}`; a fix script changes the guest when the operation completes and
//! prints `RDP-DOCTOR-FIX {json}`. Any other script gets no output and a line on stderr.

use super::super::lro::{Hook, Outcome};
use super::super::resource::{json_body, lookup_vm, missing, vm_id, Answer, Ctx, Plan};
use super::super::world::{AgentState, Os, PowerState, ServiceStatus, StartType, Vm};
use super::super::{now_rfc3339, rfc3339, stable_uuid, Reply};
use super::{compute_operation_url, effective_agent, on_vm};
use serde_json::{json, Value};
use time::OffsetDateTime;

/// The read script's first line (rdp-doctor's guest contract).
const READ_MARKER: &str = "# rdp-doctor:guest-read:v1";
/// What the read script's result line starts with.
const READ_PREFIX: &str = "RDP-DOCTOR-GUEST";
/// What a fix script's result line starts with.
const FIX_PREFIX: &str = "RDP-DOCTOR-FIX";
/// Run Command returns the last 4,096 bytes of each output ("Run scripts in your Windows VM by
/// using action Run Commands", Restrictions).
const OUTPUT_LIMIT: usize = 4096;
/// What an unknown script gets on stderr.
pub(crate) const ONLY_RDP_DOCTOR: &str =
    "The simulator runs only rdp-doctor's scripts (first line '# rdp-doctor:guest-read:v1' or '# rdp-doctor:guest-fix:<fix>:v1'); this script did not run.";
/// How long a certificate Windows makes for RDP is valid: six months.
const SELF_SIGNED_DAYS: i64 = 182;

/// The fixes rdp-doctor's fix scripts make, by name.
const FIXES: [&str; 7] = [
    "enable-rdp",
    "start-termservice",
    "reset-rdp-port",
    "enable-firewall-rdp",
    "renew-rdp-certificate",
    "remove-rdsh-role",
    "free-disk-space",
];

/// `POST virtualMachines/{vm}/runCommand`.
pub(crate) fn run_command(ctx: &mut Ctx<'_>, sub: &str, rg: &str, name: &str) -> Answer {
    let vm = lookup_vm(ctx.world, sub, rg, name)?;
    let body = json_body(ctx)?;
    let command_id = body
        .get("commandId")
        .and_then(Value::as_str)
        .ok_or_else(|| missing("commandId"))?;
    let command_os = match command_id {
        id if id.eq_ignore_ascii_case("RunPowerShellScript") => Os::Windows,
        id if id.eq_ignore_ascii_case("RunShellScript") => Os::Linux,
        other => {
            return Err(Reply::arm_error(
                404,
                "NotFound",
                &format!("The entity was not found in this Azure location. Run command '{other}' is not found."),
            ))
        }
    };
    let script: Vec<String> = body
        .get("script")
        .and_then(Value::as_array)
        .map(|lines| {
            lines
                .iter()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if command_os != vm.os {
        let (wanted, target) = match (command_os, vm.os) {
            (Os::Windows, _) => ("Windows", "Linux"),
            (Os::Linux, _) => ("Linux", "Windows"),
        };
        return Err(Reply::arm_error(
            409,
            "Conflict",
            &format!("Run command OS type '{wanted}' does not match the target OS {target}."),
        ));
    }
    if vm.power_state != PowerState::Running {
        return Err(Reply::arm_error(
            409,
            "OperationNotAllowed",
            "The operation requires the VM to be running (or set to run).",
        ));
    }
    let id = vm_id(vm);
    match ctx.lro.running_on(&id) {
        Some(running) if running == "runCommand" => {
            return Err(Reply::arm_error(
                409,
                "Conflict",
                "Run command extension execution is in progress. Please wait for completion before invoking a run command.",
            ))
        }
        Some(running) => return Err(super::busy("runCommand", vm, &running)),
        None => {}
    }
    let mut plan = if effective_agent(vm).0 != AgentState::Ready {
        Plan::new(Outcome::Failed {
            code: "VMAgentStatusCommunicationError".to_owned(),
            message: format!(
                "VM '{}' has not reported status for VM agent or extensions. Verify that the OS is up and healthy, the VM has a running VM agent, and that it can establish outbound connections to Azure storage.",
                vm.name
            ),
        })
    } else {
        let (stdout, stderr, change) = answer(vm, &script);
        let mut plan = Plan::new(Outcome::Body(result_json(&stdout, &stderr)));
        plan.on_complete = change;
        plan
    };
    plan.takes = Some(ctx.run_command_delay);
    let location = vm.location.clone();
    let op = ctx.accept(sub, "runCommand", Some(id), plan);
    let status = compute_operation_url(ctx.base, sub, &location, &op);
    let monitor = status.replacen("?api-version=", "?monitor=true&api-version=", 1);
    Ok(Reply::empty(202)
        .header("Azure-AsyncOperation", status)
        .header("Location", monitor)
        .header("Retry-After", ctx.retry_after.to_string()))
}

/// `RunCommandResult` as the spec's example shows it.
fn result_json(stdout: &str, stderr: &str) -> Value {
    let status = |stream: &str, message: &str| {
        json!({
            "code": format!("ComponentStatus/{stream}/succeeded"),
            "level": "Info",
            "displayStatus": "Provisioning succeeded",
            "message": last_bytes(message, OUTPUT_LIMIT),
        })
    };
    json!({"value": [status("StdOut", stdout), status("StdErr", stderr)]})
}

/// The last `limit` bytes of `text`, cut at a character boundary.
fn last_bytes(text: &str, limit: usize) -> &str {
    let mut start = text.len().saturating_sub(limit);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// What the script prints (stdout, stderr) and what it changes in the guest when it completes.
fn answer(vm: &Vm, script: &[String]) -> (String, String, Option<Hook>) {
    let first = script
        .first()
        .map(|l| l.trim_start_matches('\u{feff}').trim())
        .unwrap_or_default();
    if first == READ_MARKER {
        let line = format!("{READ_PREFIX} {}\n", read_json(vm));
        return (line, String::new(), None);
    }
    let fix = first
        .strip_prefix("# rdp-doctor:guest-fix:")
        .and_then(|rest| rest.strip_suffix(":v1"))
        .filter(|fix| FIXES.contains(fix));
    match fix {
        Some(fix) => {
            let fix = fix.to_owned();
            let changed = fix_changes(vm, &fix);
            let line = format!("{FIX_PREFIX} {}\n", json!({"fix": fix, "changed": changed}));
            let hook = on_vm(vm, move |vm| apply_fix(vm, &fix));
            (line, String::new(), Some(hook))
        }
        None => (String::new(), format!("{ONLY_RDP_DOCTOR}\n"), None),
    }
}

/// When the RDP certificate expires: the world's, else six months after `now`.
fn certificate_not_after(vm: &Vm) -> String {
    vm.guest.certificate_not_after.clone().unwrap_or_else(|| {
        rfc3339(OffsetDateTime::now_utc() + time::Duration::days(SELF_SIGNED_DAYS))
    })
}

/// The read script's JSON (rdp-doctor's guest contract, `"v": 1`) for the guest as it is.
pub(crate) fn read_json(vm: &Vm) -> Value {
    let g = &vm.guest;
    let not_after = certificate_not_after(vm);
    let thumbprint: String = stable_uuid(&format!("{}|{not_after}", vm.id()))
        .replace('-', "")
        .to_ascii_uppercase()
        .chars()
        .chain(
            stable_uuid(&vm.name)
                .replace('-', "")
                .to_ascii_uppercase()
                .chars(),
        )
        .take(40)
        .collect();
    // The "Remote Desktop" group's inbound rules; no other rule covers the port.
    let rules: Vec<Value> = ["TCP", "UDP"]
        .iter()
        .map(|protocol| {
            json!({"name": format!("RemoteDesktop-UserMode-In-{protocol}"), "enabled": g.firewall_rdp_rule,
                   "action": "Allow", "protocol": protocol, "localPort": "3389", "profiles": "Any"})
        })
        .collect();
    let profiles: Vec<Value> = ["Domain", "Private", "Public"]
        .iter()
        .map(|p| json!({"name": p, "enabled": g.firewall_enabled}))
        .collect();
    let reasons = &g.pending_reboot;
    json!({
        "v": 1,
        "rdp": {"fDenyTSConnections": u32::from(!vm.rdp_enabled), "policyDeny": g.policy_deny},
        "termService": {"status": g.term_service_status.as_str(), "startType": g.term_service_start_type.as_str()},
        "listener": {"port": vm.rdp_port, "listening": g.listening(), "process": if g.listening() { Some("svchost") } else { None }},
        "firewall": {
            "profiles": profiles,
            "rules": rules,
        },
        "nla": {"userAuthentication": g.user_authentication, "securityLayer": g.security_layer},
        "certificate": {"thumbprint": thumbprint, "subject": format!("CN={}", vm.name), "notAfter": not_after},
        "licensing": {
            "rdshInstalled": g.rdsh_installed,
            "mode": g.licensing_mode,
            "licenseServers": g.license_servers,
            "graceDaysLeft": if g.rdsh_installed { Some(g.grace_days_left) } else { None },
        },
        "systemDrive": {"drive": "C:", "freeBytes": g.free_bytes, "sizeBytes": g.size_bytes},
        "pendingReboot": {"pending": !reasons.is_empty(), "reasons": reasons},
        "checkedAt": now_rfc3339(),
    })
}

/// What a fix script reports it changed, in words, for the guest as it is.
fn fix_changes(vm: &Vm, fix: &str) -> Vec<String> {
    let g = &vm.guest;
    let mut changed = Vec::new();
    match fix {
        "enable-rdp" => {
            if !vm.rdp_enabled {
                changed.push("fDenyTSConnections set to 0 (was 1)".to_owned());
            }
            if g.policy_deny.is_some() {
                changed.push(
                    "the Terminal Services policy value fDenyTSConnections removed".to_owned(),
                );
            }
        }
        "start-termservice" => {
            if g.term_service_start_type != StartType::Automatic {
                changed.push(format!(
                    "TermService start type set to Automatic (was {})",
                    g.term_service_start_type.as_str()
                ));
            }
            if g.term_service_status != ServiceStatus::Running {
                changed.push(format!(
                    "TermService started (was {})",
                    g.term_service_status.as_str()
                ));
            }
        }
        "reset-rdp-port" => {
            if vm.rdp_port != 3389 {
                changed.push(format!(
                    "RDP-Tcp PortNumber set to 3389 (was {})",
                    vm.rdp_port
                ));
            }
            changed.push("TermService restarted".to_owned());
        }
        "enable-firewall-rdp" if !g.firewall_rdp_rule => {
            changed.push("firewall rule group \"Remote Desktop\" enabled".to_owned());
        }
        "renew-rdp-certificate" => {
            changed.push("the Remote Desktop certificate removed".to_owned());
            changed.push(
                "TermService restarted; Windows made a new self-signed certificate".to_owned(),
            );
        }
        "remove-rdsh-role" if g.rdsh_installed => {
            changed.push("the RDS-RD-Server feature uninstalled; a restart is pending".to_owned());
        }
        "free-disk-space" => {
            changed.push(format!(
                "{:.1} GiB freed on C: (Windows\\Temp, SoftwareDistribution\\Download, component store cleanup)",
                g.reclaimable_bytes as f64 / f64::from(1u32 << 30)
            ));
        }
        _ => {}
    }
    changed
}

/// What a fix does to the guest (rdp-doctor's guest contract).
fn apply_fix(vm: &mut Vm, fix: &str) {
    let restart = |vm: &mut Vm| {
        if vm.guest.term_service_start_type != StartType::Disabled {
            vm.guest.term_service_status = ServiceStatus::Running;
        }
    };
    match fix {
        "enable-rdp" => {
            vm.rdp_enabled = true;
            vm.guest.policy_deny = None;
        }
        "start-termservice" => {
            vm.guest.term_service_start_type = StartType::Automatic;
            vm.guest.term_service_status = ServiceStatus::Running;
        }
        "reset-rdp-port" => {
            vm.rdp_port = 3389;
            restart(vm);
        }
        "enable-firewall-rdp" => vm.guest.firewall_rdp_rule = true,
        "renew-rdp-certificate" => {
            vm.guest.certificate_not_after = Some(rfc3339(
                OffsetDateTime::now_utc() + time::Duration::days(SELF_SIGNED_DAYS),
            ));
            restart(vm);
        }
        "remove-rdsh-role" if vm.guest.rdsh_installed => {
            vm.guest.rdsh_installed = false;
            vm.guest.licensing_mode = None;
            vm.guest.license_servers.clear();
            let reason = "ComponentBasedServicing";
            if !vm.guest.pending_reboot.iter().any(|r| r == reason) {
                vm.guest.pending_reboot.push(reason.to_owned());
            }
        }
        "free-disk-space" => {
            vm.guest.free_bytes = vm
                .guest
                .free_bytes
                .saturating_add(vm.guest.reclaimable_bytes)
                .min(vm.guest.size_bytes);
            vm.guest.reclaimable_bytes = 0;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::world::World;

    #[test]
    fn outputs_keep_their_last_4096_bytes() {
        let long = format!("{}é{}", "a".repeat(10), "b".repeat(4095));
        let tail = last_bytes(&long, OUTPUT_LIMIT);
        assert_eq!(tail.len(), 4095, "cut after the split character");
        assert!(tail.chars().all(|c| c == 'b'));
        assert_eq!(last_bytes("short", OUTPUT_LIMIT), "short");
    }

    #[test]
    fn scripts_are_recognised_by_their_first_line_only() {
        let world = World::new().vm("web-01");
        let vm = &world.vms[0];
        let (out, err, change) = answer(vm, &["\u{feff}# rdp-doctor:guest-read:v1 ".into()]);
        assert!(out.starts_with("RDP-DOCTOR-GUEST {") && out.contains("\"v\":1"));
        assert!(err.is_empty() && change.is_none());
        let (out, err, _) = answer(vm, &["Get-Service".into(), READ_MARKER.into()]);
        assert!(out.is_empty());
        assert!(err.contains("only rdp-doctor's scripts"));
        let (out, _, change) = answer(vm, &["# rdp-doctor:guest-fix:enable-rdp:v1".into()]);
        assert!(out.starts_with("RDP-DOCTOR-FIX {"));
        assert!(change.is_some());
        let (out, _, _) = answer(vm, &["# rdp-doctor:guest-fix:format-c:v1".into()]);
        assert!(out.is_empty());
    }
}
