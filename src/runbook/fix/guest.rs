//! The guest fixes: one PowerShell script each (`commands/guest/fix-<fix>.ps1`, compiled in),
//! sent once through Run Command (`RunPowerShellScript`, as SYSTEM) to a running Windows VM whose
//! guest agent is Ready. The plan says what the script changes, what it costs (sessions
//! disconnected by a TermService restart, a restart needed after removing a role, files gone for
//! good) and, for the reversible ones, the exact command that undoes it.
//!
//! Azure answers a Run Command with an operation; once it succeeded its result holds the script's
//! stdout and stderr, which [`read_output`] turns into what changed (the script's
//! `RDP-DOCTOR-FIX` line) and anything the script complained about. Run Command leaves no trace
//! ARM can read cheaply, so a lost answer is never judged from ARM: the re-check reads the guest.
//!
//! This module must not send anything itself: `super::execute` does, with the operator's
//! `Confirmed`.

use super::{Facts, Plan, Refusal, Step};
use crate::diagnose::guest::{findings, parse_fix, GuestFacts, FIX_OUTPUT_PREFIX};
use crate::diagnose::{ActionId, CheckId, OsType, Status};

/// The scripts, by fix. Each starts with its contract marker (a unit test checks).
const SCRIPTS: [(ActionId, &str); 7] = [
    (
        ActionId::EnableRdp,
        include_str!("../../../commands/guest/fix-enable-rdp.ps1"),
    ),
    (
        ActionId::StartTermservice,
        include_str!("../../../commands/guest/fix-start-termservice.ps1"),
    ),
    (
        ActionId::ResetRdpPort,
        include_str!("../../../commands/guest/fix-reset-rdp-port.ps1"),
    ),
    (
        ActionId::EnableFirewallRdp,
        include_str!("../../../commands/guest/fix-enable-firewall-rdp.ps1"),
    ),
    (
        ActionId::RenewRdpCertificate,
        include_str!("../../../commands/guest/fix-renew-rdp-certificate.ps1"),
    ),
    (
        ActionId::RemoveRdshRole,
        include_str!("../../../commands/guest/fix-remove-rdsh-role.ps1"),
    ),
    (
        ActionId::FreeDiskSpace,
        include_str!("../../../commands/guest/fix-free-disk-space.ps1"),
    ),
];

/// The script of a guest fix, as Run Command's `script` takes it: one string per line.
pub fn script_lines(fix: ActionId) -> Vec<String> {
    SCRIPTS
        .iter()
        .find(|(a, _)| *a == fix)
        .map(|(_, text)| text.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Run Command needs a running Windows VM whose guest agent is Ready.
pub(super) fn preconditions(facts: &Facts, fix: ActionId) -> Result<(), Refusal> {
    let name = &facts.vm.name;
    if facts.state.os == OsType::Linux {
        return Err(Refusal {
            reason: format!(
                "{name} runs Linux: `{fix}` is a PowerShell script for Windows and does not apply."
            ),
            instead: None,
        });
    }
    if !facts.state.is_running() {
        return Err(Refusal {
            reason: format!(
                "{name} is {}: Run Command can only reach a running VM. Start it, check it again, then ask for `{fix}` if it is still needed.",
                facts.state.power_state.as_deref().unwrap_or("not running")
            ),
            instead: Some(ActionId::Start),
        });
    }
    if !facts.state.agent_ready() {
        return Err(Refusal {
            reason: format!(
                "The guest agent of {name} is not Ready, so Run Command cannot reach Windows. Look at the boot diagnostics screenshot or the Serial Console; a restart often brings the agent back."
            ),
            instead: Some(ActionId::Restart),
        });
    }
    Ok(())
}

/// Sessions on the VM are cut by a TermService restart.
fn disconnects(name: &str) -> String {
    format!("TermService restarts: every Remote Desktop session on {name} is disconnected (signed-in users can reconnect to their sessions)")
}

fn runs_as_system(name: &str) -> String {
    format!("Runs a PowerShell script as SYSTEM inside {name} through Run Command; {name} takes no other change until it ends")
}

pub(super) fn plan(facts: &Facts, fix: ActionId) -> Result<Plan, Refusal> {
    preconditions(facts, fix)?;
    let name = facts.vm.name.as_str();
    let (headline, consequences): (String, Vec<String>) = match fix {
        ActionId::EnableRdp => (
            format!("Enable Remote Desktop inside {name}"),
            vec![
                r"Sets fDenyTSConnections to 0 in HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server and removes the policy value HKLM\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services\fDenyTSConnections".to_string(),
                "A domain group policy that turns Remote Desktop off sets the policy value again at its next refresh: change the GPO too".to_string(),
                "Signed-in sessions and running services are left alone".to_string(),
                runs_as_system(name),
                r"To undo: `Set-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Terminal Server' -Name fDenyTSConnections -Value 1`".to_string(),
            ],
        ),
        ActionId::StartTermservice => (
            format!("Start Remote Desktop Services (TermService) on {name}"),
            vec![
                "Sets TermService's start type to Automatic and starts it (with the services it depends on), so the RDP listener listens again".to_string(),
                runs_as_system(name),
                "To undo (with the start type the outcome reports it had): `Set-Service -Name TermService -StartupType Disabled; Stop-Service -Name TermService -Force`".to_string(),
            ],
        ),
        ActionId::ResetRdpPort => (
            format!("Move the RDP listener of {name} back to port 3389"),
            vec![
                r"Sets PortNumber to 3389 in HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp".to_string(),
                disconnects(name),
                "Clients connect on 3389 again: saved .rdp files and NSG or firewall rules made for the custom port no longer apply".to_string(),
                runs_as_system(name),
                r"To undo (with the port the outcome reports it had): `Set-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp' -Name PortNumber -Value PORT; Restart-Service -Name TermService -Force`".to_string(),
            ],
        ),
        ActionId::EnableFirewallRdp => (
            format!("Enable the Windows Firewall's Remote Desktop rules on {name}"),
            vec![
                "Enables the inbound rules of the \"Remote Desktop\" rule group (TCP 3389 among them) in the profiles each rule names".to_string(),
                "Firewall profiles that are off stay off; other rules are left alone".to_string(),
                runs_as_system(name),
                "To undo: `Disable-NetFirewallRule -Group '@FirewallAPI.dll,-28752'`".to_string(),
            ],
        ),
        ActionId::RenewRdpCertificate => (
            format!("Renew the RDP certificate of {name}"),
            vec![
                "Removes the expired self-signed certificate from the \"Remote Desktop\" certificate store; Windows creates a new self-signed one, valid 6 months".to_string(),
                disconnects(name),
                "Clients that trusted the old certificate ask once to trust the new one".to_string(),
                "An expired certificate issued by a CA is not touched: the script stops and says so".to_string(),
                "The expired certificate is deleted for good (it could not be used again anyway)".to_string(),
                runs_as_system(name),
            ],
        ),
        ActionId::RemoveRdshRole => (
            format!("Remove the Remote Desktop Session Host role from {name}"),
            vec![
                "Uninstalls the RDS-RD-Server feature: the licensing grace period no longer applies and two administrative sessions work without licenses".to_string(),
                "More than two simultaneous sessions stop working; applications published through RD Session Host stop".to_string(),
                format!("A restart of {name} is needed to finish the removal: the script does not restart it (`rdp-doctor restart {name}` when convenient)"),
                runs_as_system(name),
                format!("To undo: `Install-WindowsFeature -Name RDS-RD-Server`, then restart {name}"),
            ],
        ),
        ActionId::FreeDiskSpace => (
            format!("Free space on the system drive of {name}"),
            vec![
                r"Deletes everything in C:\Windows\Temp and C:\Windows\SoftwareDistribution\Download (Windows Update is stopped meanwhile); files in use stay".to_string(),
                "Runs `Dism /Online /Cleanup-Image /StartComponentCleanup`: superseded components go, and updates already installed can no longer be uninstalled".to_string(),
                "Deleted files are gone for good: there is no undo".to_string(),
                "The cleanup can take several minutes".to_string(),
                runs_as_system(name),
            ],
        ),
        other => {
            return Err(Refusal {
                reason: format!("`{other}` is not a guest fix."),
                instead: None,
            })
        }
    };
    Ok(Plan {
        action: fix,
        vm: facts.vm.clone(),
        headline,
        consequences,
        warnings: Vec::new(),
        step: Step::GuestScript { fix },
    })
}

/// What a fix script's run said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptReport {
    /// The script's `RDP-DOCTOR-FIX` line: what changed, in words (empty: nothing needed to).
    /// `None` when it printed none, which a script that finished never does.
    pub changed: Option<Vec<String>>,
    /// What the script wrote to stderr, trimmed, if anything.
    pub stderr: Option<String>,
}

impl ScriptReport {
    /// The script stopped before it finished: no result line.
    pub fn failed(&self) -> bool {
        self.changed.is_none()
    }

    /// Lines for the outcome's notes: stderr, and the missing result line.
    pub fn notes(&self, fix: ActionId) -> Vec<String> {
        let mut notes = Vec::new();
        if self.changed.is_none() {
            notes.push(format!(
                "the `{fix}` script printed no {FIX_OUTPUT_PREFIX} line, so it did not finish"
            ));
        }
        if let Some(stderr) = &self.stderr {
            notes.push(format!("the `{fix}` script wrote to stderr: {stderr}"));
        }
        notes
    }
}

/// Most of stderr a person is shown (Run Command keeps the last 4 KiB anyway).
const STDERR_SHOWN: usize = 1000;

/// Read a fix script's stdout and stderr: its `RDP-DOCTOR-FIX` line, which must be `fix`'s.
pub fn read_output(fix: ActionId, stdout: &str, stderr: &str) -> ScriptReport {
    let changed = parse_fix(stdout)
        .ok()
        .filter(|out| out.fix == fix.as_str())
        .map(|out| out.changed);
    let stderr = stderr.trim();
    let stderr = (!stderr.is_empty()).then(|| {
        let mut shown: String = stderr.chars().take(STDERR_SHOWN).collect();
        if shown.len() < stderr.len() {
            shown.push('…');
        }
        shown
    });
    ScriptReport { changed, stderr }
}

/// The re-check of what `fix` changes, from the guest read after it: the status of its guest
/// check (`diagnose::guest::findings`, judged at the guest's own clock) and that finding's
/// summary. `None` when the findings have none for it.
pub fn judge(fix: ActionId, facts: &GuestFacts) -> Option<(Status, String)> {
    let now = facts
        .checked_at
        .as_deref()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    let check = check(fix);
    findings(facts, now)
        .into_iter()
        .find(|f| f.step == check)
        .map(|f| (f.status, f.summary))
}

/// The guest check whose failure `fix` repairs.
pub fn check(fix: ActionId) -> CheckId {
    match fix {
        ActionId::EnableRdp => CheckId::GuestRdp,
        ActionId::StartTermservice => CheckId::GuestService,
        ActionId::ResetRdpPort => CheckId::GuestListener,
        ActionId::EnableFirewallRdp => CheckId::GuestFirewall,
        ActionId::RenewRdpCertificate => CheckId::GuestCertificate,
        ActionId::RemoveRdshRole => CheckId::GuestLicensing,
        _ => CheckId::GuestDisk,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::guest::fix_script_marker;

    /// The marker each script must start with.
    fn marker(fix: ActionId) -> String {
        fix_script_marker(fix.as_str())
    }
    use crate::azure::VmRef;
    use crate::diagnose::{AgentFacts, VmFacts};

    fn facts(os: OsType, power: &str, ready: bool) -> Facts {
        let mut state = VmFacts::sample(Some(power));
        state.os = os;
        state.agent = if ready {
            AgentFacts::Ready {
                version: Some("2.7".into()),
                message: None,
            }
        } else {
            AgentFacts::Missing
        };
        Facts {
            vm: VmRef {
                name: "web-01".into(),
                resource_group: "rg".into(),
                subscription_id: "s".into(),
                id: "/id".into(),
            },
            state,
            nic: None,
        }
    }

    #[test]
    fn every_guest_fix_has_a_script_that_starts_with_its_marker_and_prints_its_line() {
        for fix in ActionId::GUEST {
            let lines = script_lines(fix);
            assert_eq!(lines.first(), Some(&marker(fix)), "{fix}");
            let text = lines.join("\n");
            assert!(
                text.contains(&format!(
                    "'RDP-DOCTOR-FIX ' + (ConvertTo-Json -Compress -InputObject @{{ fix = '{fix}'"
                )),
                "{fix} prints its result line"
            );
            assert!(text.contains("exit 1"), "{fix} fails loudly");
            assert!(text.contains("[Console]::Error.WriteLine"), "{fix}");
            assert!(
                text.is_ascii(),
                "{fix}: Windows PowerShell 5.1 reads scripts as ANSI"
            );
        }
    }

    #[test]
    fn preconditions_refuse_with_what_to_do_instead() {
        for fix in ActionId::GUEST {
            let linux = plan(&facts(OsType::Linux, "running", true), fix).unwrap_err();
            assert!(linux.reason.contains("Linux"), "{linux:?}");
            let stopped = plan(&facts(OsType::Windows, "deallocated", true), fix).unwrap_err();
            assert_eq!(stopped.instead, Some(ActionId::Start));
            let agent = plan(&facts(OsType::Windows, "running", false), fix).unwrap_err();
            assert_eq!(agent.instead, Some(ActionId::Restart));
            assert!(agent.reason.contains("not Ready"), "{agent:?}");
            let ok = plan(&facts(OsType::Windows, "running", true), fix).unwrap();
            assert_eq!(ok.action, fix);
        }
    }

    #[test]
    fn plans_say_what_it_costs_and_how_to_undo_it() {
        let text = |fix| {
            plan(&facts(OsType::Windows, "running", true), fix)
                .unwrap()
                .consequences
                .join("\n")
        };
        assert!(text(ActionId::ResetRdpPort).contains("is disconnected"));
        assert!(text(ActionId::RenewRdpCertificate).contains("is disconnected"));
        assert!(!text(ActionId::EnableRdp).contains("is disconnected"));
        assert!(text(ActionId::RemoveRdshRole).contains("restart of web-01 is needed"));
        assert!(text(ActionId::FreeDiskSpace).contains("gone for good"));
        for fix in [
            ActionId::EnableRdp,
            ActionId::StartTermservice,
            ActionId::ResetRdpPort,
            ActionId::EnableFirewallRdp,
            ActionId::RemoveRdshRole,
        ] {
            assert!(
                text(fix).contains("To undo: `") || text(fix).contains("To undo ("),
                "{fix}"
            );
        }
    }

    #[test]
    fn script_output_is_read_and_complaints_are_kept() {
        let out = read_output(
            ActionId::EnableRdp,
            "noise\nRDP-DOCTOR-FIX {\"fix\":\"enable-rdp\",\"changed\":[\"fDenyTSConnections set to 0 (was 1)\"]}\n",
            "",
        );
        assert_eq!(
            out.changed,
            Some(vec!["fDenyTSConnections set to 0 (was 1)".to_string()])
        );
        assert!(out.notes(ActionId::EnableRdp).is_empty());
        let other = read_output(
            ActionId::EnableRdp,
            "RDP-DOCTOR-FIX {\"fix\":\"free-disk-space\",\"changed\":[]}",
            "enable-rdp did not take: access denied\n",
        );
        assert!(other.failed());
        let notes = other.notes(ActionId::EnableRdp).join("\n");
        assert!(notes.contains("printed no RDP-DOCTOR-FIX line"), "{notes}");
        assert!(notes.contains("access denied"), "{notes}");
        assert!(read_output(ActionId::EnableRdp, "RDP-DOCTOR-FIX {not json", "").failed());
    }
}
