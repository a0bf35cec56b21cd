//! `/rdp guest` and the "Look inside the VM" button as the war room sees them: the ARM report
//! first with a line saying Run Command is running, then the guest findings edited into the
//! same message; a reader refused privately before any Azure request.

use super::*;
use support::discord::ROOM_POLICY;

fn slow_run_command() -> SimOptions {
    // Long enough that the ARM report is shown on its own before the guest findings.
    SimOptions {
        run_command_delay: Duration::from_secs(1),
        ..SimOptions::fast()
    }
}

/// The room's policy, and role 5003 that may only read.
fn with_reader() -> String {
    format!("{ROOM_POLICY}[[grant]]\ndiscord_role_id = 5003\nlevel = \"read\"\nscope = \"*\"\n")
}

fn reader() -> User {
    User {
        id: 4020,
        name: "rita".into(),
        roles: vec![5003],
    }
}

fn firewall_off() -> World {
    World::new()
        .vm("fw-01")
        .guest(|g| g.firewall_rdp_rule = false)
}

#[tokio::test]
async fn guest_posts_the_arm_report_then_edits_in_the_guest_findings() {
    within(async {
        let room = Room::with_options(firewall_off(), slow_run_command()).await;
        let guest = room.run("/rdp guest fw-01").await;
        let arm = guest.edit_saying("Looking inside Windows").await;
        let (shown, serial) = arm.text.split_once("# Serial log").expect("the serial log");
        insta::assert_snapshot!(shown, @r#"
# fw-01: nothing found that blocks Remote Desktop
Resource group **rg-web** · subscription `11111111-1111-1111-1111-111111111111`

🔎 **Looking inside Windows**: Run Command is running a read-only script in the VM; it takes up to a minute. The guest findings will appear in this message.
## ✅ VM is running and provisioned
VM is running (provisioning succeeded)
## ✅ VM guest agent is Ready
Guest agent is Ready (version 2.7.41491.949)
GuestAgent is running and accepting new configurations.
## ✅ VM has a public IP (or a private path)
Public IP 20.1.2.3 (static, Standard SKU, fw-01-ip)
## ✅ Network security group allows TCP 3389
TCP 3389 from the Internet is allowed by rule allow-rdp (priority 1000) in NSG fw-01-nsg
## ✅ Resource Health is Available
Resource Health: Available
## ✅ Boot diagnostics: console screenshot and serial log
Console screenshot captured; serial log has 40 recent lines
## ✅ The reply finds its way back to you
Replies to the Internet go to the Internet (system route 0.0.0.0/0)
## 🕘 Recent changes
None in the last 24 hours (Activity Log)
[image attachment://console-fw-01.png]
-- 10 ARM requests · <elapsed>
"#);
        assert!(
            serial.ends_with("[Look inside the VM]\n[attachment console-fw-01.png]\n"),
            "{serial}"
        );
        let done = guest
            .edit_saying("Windows Firewall allows the RDP port")
            .await;
        let shown = done
            .text
            .split_once("# Serial log")
            .map_or(done.text.as_str(), |(report, _)| report);
        // What changes from run to run: the certificate Windows made, and how many times Run
        // Command's operation was polled.
        let shown = regex::Regex::new(r"Certificate [0-9A-F]{40}")
            .unwrap()
            .replace_all(shown, "Certificate <thumbprint>");
        let shown = regex::Regex::new(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
            .unwrap()
            .replace_all(&shown, "<six months on>");
        let shown = regex::Regex::new(r"-- \d+ ARM requests")
            .unwrap()
            .replace_all(&shown, "-- <n> ARM requests");
        insta::assert_snapshot!(shown, @r#"
# fw-01: problems found
Resource group **rg-web** · subscription `11111111-1111-1111-1111-111111111111`
## ✅ VM is running and provisioned
VM is running (provisioning succeeded)
## ✅ VM guest agent is Ready
Guest agent is Ready (version 2.7.41491.949)
GuestAgent is running and accepting new configurations.
## ✅ VM has a public IP (or a private path)
Public IP 20.1.2.3 (static, Standard SKU, fw-01-ip)
## ✅ Network security group allows TCP 3389
TCP 3389 from the Internet is allowed by rule allow-rdp (priority 1000) in NSG fw-01-nsg
## ✅ Resource Health is Available
Resource Health: Available
## ✅ Boot diagnostics: console screenshot and serial log
Console screenshot captured; serial log has 40 recent lines
## ✅ The reply finds its way back to you
Replies to the Internet go to the Internet (system route 0.0.0.0/0)
## ✅ Remote Desktop is enabled in Windows
Remote Desktop is enabled (fDenyTSConnections = 0)
HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server\fDenyTSConnections = 0
## ✅ Remote Desktop Services (TermService) is running
Remote Desktop Services (TermService) is running (start type Automatic)
Get-Service TermService | Select-Object Status, StartType
## ✅ The RDP listener listens on its port
The RDP listener listens on port 3389 (svchost)
HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp\PortNumber = 3389
## ❌ Windows Firewall allows the RDP port
No enabled inbound Windows Firewall rule allows TCP 3389 in an enabled profile (Domain, Private, Public): the firewall drops Remote Desktop
Get-NetFirewallProfile: Domain on, Private on, Public on
Rule: RemoteDesktop-UserMode-In-TCP (disabled, Allow, TCP 3389, profiles Any)
Rule: RemoteDesktop-UserMode-In-UDP (disabled, Allow, UDP 3389, profiles Any)
## ✅ Network Level Authentication and the security layer
Network Level Authentication is required; the security layer is TLS
HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp\UserAuthentication = 1, SecurityLayer = 2
Clients must support NLA (CredSSP) and the account must be able to sign in over the network first; an account whose password must change, or a CredSSP patch mismatch, fails before the session starts.
## ✅ The RDP certificate is valid
The RDP certificate (CN=fw-01) is valid until <six months on>
Certificate <thumbprint> in Cert:\LocalMachine\Remote Desktop, valid until <six months on>
## ✅ Remote Desktop licensing
The RD Session Host role is not installed: the two administrative sessions need no license
Get-WindowsFeature RDS-RD-Server; (Get-WmiObject -Namespace root/cimv2/TerminalServices Win32_TerminalServiceSetting).GetGracePeriodDays()
## ✅ System drive has free space; no reboot pending
The system drive C: has 50.0 GiB free (39.4 %)
Drive C: 50.0 GiB free of 127.0 GiB (39.4 %)
## 🕘 Recent changes
None in the last 24 hours (Activity Log)
## ➡️ Next step
**Enable the Windows Firewall rules for Remote Desktop** (`enable-firewall-rdp`): Runs a script through Run Command that enables the inbound "Remote Desktop" rule group. Undo: disable the group again.
[Runbook step](https://learn.microsoft.com/en-us/troubleshoot/azure/virtual-machines/windows/guest-os-firewall-blocking-inbound-traffic)
After each step, try to connect again.
[image attachment://console-fw-01.png]
-- <n> ARM requests · <elapsed>
"#);
        assert!(
            done.text.contains("[Look inside the VM]"),
            "the button stays under the report:\n{}",
            done.text
        );
        assert_eq!(arm.message_id, done.message_id, "the same message, edited");
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn the_look_inside_button_runs_the_guest_checks_in_a_new_message() {
    within(async {
        let room = Room::with_options(firewall_off(), slow_run_command()).await;
        let report = room.run("/rdp check fw-01").await.final_edit().await;
        assert!(report.text.contains("[Look inside the VM]"), "{}", report.text);
        assert_eq!(support::requests_to(&room.sim, "POST", "/runCommand"), 0);
        let click = room.click(&report, "Look inside the VM").await;
        let arm = click.edit_saying("Looking inside Windows").await;
        assert!(arm.text.starts_with("# fw-01: nothing found that blocks Remote Desktop"), "{}", arm.text);
        let done = click.edit_saying("Windows Firewall allows the RDP port").await;
        assert!(done.text.starts_with("# fw-01: problems found"), "{}", done.text);
        assert!(
            done.text.contains("❌ Windows Firewall allows the RDP port\nNo enabled inbound Windows Firewall rule allows TCP 3389"),
            "{}",
            done.text
        );
        assert_eq!(support::requests_to(&room.sim, "POST", "/runCommand"), 1);
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn a_reader_is_refused_privately_before_any_azure_request() {
    within(async {
        let room = Room::build(firewall_off(), SimOptions::fast(), Some(&with_reader())).await;
        let report = room.run("/rdp check fw-01").await.final_edit().await;
        let before = room.sim.stats().requests;
        let rita = room.as_user(&reader());
        let slash = rita.run("/rdp guest fw-01").await.refused().await;
        insta::assert_snapshot!(slash.text, @r#"
(only you can see this)
# Not allowed
Permission denied: you need the `operate` permission on any VM rdp-doctor serves (you have none)
"#);
        let click = rita
            .click(&report, "Look inside the VM")
            .await
            .refused()
            .await;
        assert!(click.text.contains("Permission denied"), "{}", click.text);
        assert!(click.private());
        assert_eq!(room.sim.stats().requests, before, "no Azure request");
        room.assert_clean();
    })
    .await
}
