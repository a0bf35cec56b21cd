//! The guest checks: [`GuestFacts`] (what the read script printed) in, one [`Finding`] per
//! [`CheckId::GUEST`] out, in that order.
//!
//! Each finding carries the facts it judged as evidence, the registry value or command behind it
//! in its details, and the guest fix it calls for in `suggests` (only when it fails: a warning
//! never makes the runbook recommend a change). A part the script could not read (`null`) is an
//! `error` finding that says so; nothing is guessed.

use super::{Certificate, Drive, Firewall, FirewallRule, GuestFacts, Licensing, Listener, Nla};
use super::{PendingReboot, RdpSetting, ServiceState};
use crate::diagnose::{ActionId, CheckId, Finding, Status};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The port Remote Desktop clients connect to unless told otherwise.
pub const RDP_PORT: u16 = 3389;
/// A certificate expiring within this many days is a warning.
pub const CERTIFICATE_WARN_DAYS: i64 = 14;
/// A licensing grace period with this many days or fewer left is a warning.
pub const GRACE_WARN_DAYS: i64 = 7;
const GIB: u64 = 1 << 30;
/// Under 1 GiB or 2 % free, Windows cannot write the profile and session files a sign-in needs.
const DISK_FAIL_BYTES: u64 = GIB;
const DISK_FAIL_PERCENT: u64 = 2;
/// Under 5 GiB or 10 % free is a warning.
const DISK_WARN_BYTES: u64 = 5 * GIB;
const DISK_WARN_PERCENT: u64 = 10;

const TS_KEY: &str = r"HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server";
const TS_POLICY_KEY: &str = r"HKLM\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services";
const RDP_TCP_KEY: &str =
    r"HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp";

/// Every guest finding, one per [`CheckId::GUEST`], in that order. `now` judges the
/// certificate's expiry (the caller passes the guest's `checkedAt` when it has one).
pub fn findings(facts: &GuestFacts, now: OffsetDateTime) -> Vec<Finding> {
    vec![
        rdp(facts.rdp.as_ref()),
        service(facts.term_service.as_ref()),
        listener(facts.listener.as_ref(), facts.term_service.as_ref()),
        firewall(facts.firewall.as_ref(), facts.listener.as_ref()),
        nla(facts.nla.as_ref()),
        certificate(facts.certificate.as_ref(), now),
        licensing(facts.licensing.as_ref()),
        disk(facts.system_drive.as_ref(), facts.pending_reboot.as_ref()),
    ]
}

/// The RDP-Tcp listener's port as the guest reported it (`None` when it could not be read).
pub fn listener_port(facts: &GuestFacts) -> Option<u16> {
    facts.listener.as_ref().and_then(|l| l.port)
}

fn unread(step: CheckId, what: &str) -> Finding {
    Finding::error(
        step,
        format!("The guest script could not read {what}, so this was not checked"),
    )
}

fn rdp(rdp: Option<&RdpSetting>) -> Finding {
    let step = CheckId::GuestRdp;
    let Some(rdp) = rdp else {
        return unread(
            step,
            "whether Remote Desktop is enabled (fDenyTSConnections)",
        );
    };
    let local = format!("{TS_KEY}\\fDenyTSConnections = {}", show(rdp.deny));
    let policy = format!(
        "{TS_POLICY_KEY}\\fDenyTSConnections = {}",
        show(rdp.policy_deny)
    );
    let finding = match (rdp.policy_deny, rdp.deny) {
        (Some(p), local_value) if p != 0 => Finding::new(
            step,
            Status::Fail,
            format!(
                "Remote Desktop is turned off by a group policy (policy fDenyTSConnections = {p}, which wins over the local value{})",
                local_value.map(|v| format!(" {v}")).unwrap_or_default()
            ),
        )
        .detail(policy)
        .detail(local)
        .detail("Enabling Remote Desktop removes the policy value; if a domain policy sets it, it comes back at the next policy refresh unless the GPO changes too.")
        .suggests(ActionId::EnableRdp),
        (Some(_), _) => Finding::new(
            step,
            Status::Pass,
            "Remote Desktop is enabled (by group policy: policy fDenyTSConnections = 0, which wins over the local value)",
        )
        .detail(policy),
        (None, Some(0)) => {
            Finding::new(step, Status::Pass, "Remote Desktop is enabled (fDenyTSConnections = 0)")
                .detail(local)
        }
        (None, Some(v)) => Finding::new(
            step,
            Status::Fail,
            format!("Remote Desktop is turned off in Windows (fDenyTSConnections = {v}): the VM refuses every Remote Desktop connection"),
        )
        .detail(local)
        .suggests(ActionId::EnableRdp),
        (None, None) => {
            return unread(step, "fDenyTSConnections").evidence(rdp);
        }
    };
    finding.evidence(rdp)
}

fn show<T: std::fmt::Display>(value: Option<T>) -> String {
    value
        .map(|v| v.to_string())
        .unwrap_or_else(|| "(not set)".into())
}

fn service(svc: Option<&ServiceState>) -> Finding {
    let step = CheckId::GuestService;
    let Some(svc) = svc else {
        return unread(step, "the Remote Desktop Services service (TermService)");
    };
    let Some(status) = svc.status.as_deref() else {
        return unread(step, "TermService's status").evidence(svc);
    };
    let start = svc.start_type.as_deref().unwrap_or("unknown");
    let running = status.eq_ignore_ascii_case("Running");
    let disabled = start.eq_ignore_ascii_case("Disabled");
    let command = "Get-Service TermService | Select-Object Status, StartType";
    let finding = if !running {
        Finding::new(
            step,
            Status::Fail,
            format!(
                "Remote Desktop Services (TermService) is {status} (start type {start}): nothing answers Remote Desktop"
            ),
        )
        .detail(command)
        .suggests(ActionId::StartTermservice)
    } else if disabled {
        Finding::new(
            step,
            Status::Warn,
            "Remote Desktop Services (TermService) is running but its start type is Disabled: it will not start after the next reboot",
        )
        .detail(command)
        .detail("Fix `start-termservice` sets the start type to Automatic.")
    } else {
        Finding::new(
            step,
            Status::Pass,
            format!("Remote Desktop Services (TermService) is running (start type {start})"),
        )
        .detail(command)
    };
    finding.evidence(svc)
}

fn listener(listener: Option<&Listener>, svc: Option<&ServiceState>) -> Finding {
    let step = CheckId::GuestListener;
    let Some(l) = listener else {
        return unread(step, "the RDP-Tcp listener");
    };
    let Some(port) = l.port else {
        return unread(step, "the RDP-Tcp listener's port (PortNumber)").evidence(l);
    };
    let registry = format!("{RDP_TCP_KEY}\\PortNumber = {port}");
    let service_running = svc
        .and_then(|s| s.status.as_deref())
        .map(|s| s.eq_ignore_ascii_case("Running"));
    let finding = match l.listening {
        Some(false) => {
            let finding = Finding::new(
                step,
                Status::Fail,
                format!("Nothing listens on the RDP port {port}: connections are refused"),
            )
            .detail(registry)
            .detail(format!("Get-NetTCPConnection -State Listen -LocalPort {port}"));
            if service_running == Some(false) {
                finding
                    .detail("TermService is not running, which is why nothing listens.")
                    .suggests(ActionId::StartTermservice)
            } else {
                finding.detail("TermService runs but its listener is not up: restart the VM or look at the System event log (TermService, TermDD).")
            }
        }
        None => Finding::error(
            step,
            format!("The RDP listener's port is {port}, but the guest script could not tell whether anything listens on it"),
        )
        .detail(registry),
        Some(true) if port != RDP_PORT => Finding::new(
            step,
            Status::Fail,
            format!("The RDP listener is on port {port}, not {RDP_PORT}: clients connecting to the default port get no answer"),
        )
        .detail(registry)
        .detail(format!("Move it back to {RDP_PORT} (fix `reset-rdp-port`), or keep {port}: open the NSG for TCP {port} and connect to ADDRESS:{port}."))
        .suggests(ActionId::ResetRdpPort),
        Some(true) => Finding::new(
            step,
            Status::Pass,
            format!(
                "The RDP listener listens on port {port}{}",
                l.process.as_deref().map(|p| format!(" ({p})")).unwrap_or_default()
            ),
        )
        .detail(registry),
    };
    finding.evidence(l)
}

/// Whether a firewall rule's local port (`3389`, `3389-3390`, `3389,3390`, `Any`) covers `port`.
pub fn port_covers(local_port: Option<&str>, port: u16) -> bool {
    let Some(text) = local_port else {
        return true; // no port condition: every port
    };
    text.split(',').map(str::trim).any(|part| {
        if part.eq_ignore_ascii_case("Any") {
            return true;
        }
        match part.split_once('-') {
            Some((lo, hi)) => match (lo.trim().parse::<u16>(), hi.trim().parse::<u16>()) {
                (Ok(lo), Ok(hi)) => (lo..=hi).contains(&port),
                _ => false,
            },
            None => part.parse::<u16>() == Ok(port),
        }
    })
}

/// Whether a rule's protocol lets TCP through (`TCP`, `Any` or none given).
fn tcp(rule: &FirewallRule) -> bool {
    rule.protocol
        .as_deref()
        .is_none_or(|p| p.eq_ignore_ascii_case("TCP") || p.eq_ignore_ascii_case("Any") || p == "6")
}

/// The enabled profiles among `rule`'s (`Any`, or a comma-separated list).
fn in_enabled_profile(rule: &FirewallRule, enabled: &[&str]) -> bool {
    match rule.profiles.as_deref() {
        None => !enabled.is_empty(),
        Some(p) if p.trim().eq_ignore_ascii_case("Any") => !enabled.is_empty(),
        Some(p) => p
            .split(',')
            .map(str::trim)
            .any(|name| enabled.iter().any(|e| e.eq_ignore_ascii_case(name))),
    }
}

fn firewall(fw: Option<&Firewall>, listener: Option<&Listener>) -> Finding {
    let step = CheckId::GuestFirewall;
    let Some(fw) = fw else {
        return unread(step, "the Windows Firewall");
    };
    let port = listener.and_then(|l| l.port).unwrap_or(RDP_PORT);
    let port_known = listener.and_then(|l| l.port).is_some();
    let enabled: Vec<&str> = fw
        .profiles
        .iter()
        .filter(|p| p.enabled)
        .map(|p| p.name.as_str())
        .collect();
    let evidence = json!({"port": port, "profiles": fw.profiles, "rules": fw.rules});
    if fw.profiles.is_empty() {
        return Finding::error(
            step,
            "The guest script could not read the firewall's profiles",
        )
        .evidence(evidence);
    }
    let profiles_line = format!(
        "Get-NetFirewallProfile: {}",
        fw.profiles
            .iter()
            .map(|p| format!("{} {}", p.name, if p.enabled { "on" } else { "off" }))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if enabled.is_empty() {
        return Finding::new(
            step,
            Status::Pass,
            format!("Windows Firewall is off in every profile, so it does not block port {port}; warning: nothing inside the VM filters inbound traffic, only the NSG"),
        )
        .detail(profiles_line)
        .evidence(evidence);
    }
    let applies = |r: &&FirewallRule| {
        r.enabled
            && tcp(r)
            && port_covers(r.local_port.as_deref(), port)
            && in_enabled_profile(r, &enabled)
    };
    let rule_line = |r: &FirewallRule| {
        format!(
            "{} ({}, {}, {} {}, profiles {})",
            r.name,
            if r.enabled { "enabled" } else { "disabled" },
            r.action,
            r.protocol.as_deref().unwrap_or("any protocol"),
            r.local_port.as_deref().unwrap_or("any port"),
            r.profiles.as_deref().unwrap_or("Any"),
        )
    };
    let port_text = if port_known {
        format!("the listener port {port}")
    } else {
        format!("port {port} (the listener port could not be read)")
    };
    let mut finding = if let Some(block) = fw
        .rules
        .iter()
        .filter(applies)
        .find(|r| r.action.eq_ignore_ascii_case("Block"))
    {
        // In Windows Firewall a block rule wins over any allow rule.
        Finding::new(
                step,
                Status::Fail,
                format!("Windows Firewall rule \"{}\" blocks {port_text} (a block rule wins over every allow rule)", block.name),
            )
            .detail(format!("Disable or remove it: Disable-NetFirewallRule -Name \"{}\"", block.name))
    } else if let Some(allow) = fw
        .rules
        .iter()
        .filter(applies)
        .find(|r| r.action.eq_ignore_ascii_case("Allow"))
    {
        Finding::new(
            step,
            Status::Pass,
            format!(
                "Windows Firewall allows {port_text}: rule \"{}\"",
                allow.name
            ),
        )
    } else {
        let finding = Finding::new(
                step,
                Status::Fail,
                format!(
                    "No enabled inbound Windows Firewall rule allows TCP {port} in an enabled profile ({}): the firewall drops Remote Desktop",
                    enabled.join(", ")
                ),
            );
        if port == RDP_PORT {
            finding.suggests(ActionId::EnableFirewallRdp)
        } else {
            finding.detail(format!("The \"Remote Desktop\" rules open {RDP_PORT}; with the listener on {port}, move it back first (fix `reset-rdp-port`) or add a rule for TCP {port}."))
        }
    };
    finding = finding.detail(profiles_line);
    for r in &fw.rules {
        finding = finding.detail(format!("Rule: {}", rule_line(r)));
    }
    finding.evidence(evidence)
}

fn nla(nla: Option<&Nla>) -> Finding {
    let step = CheckId::GuestNla;
    let Some(n) = nla else {
        return unread(
            step,
            "Network Level Authentication (UserAuthentication, SecurityLayer)",
        );
    };
    let mut warn = false;
    let mut parts = Vec::new();
    let mut details = vec![format!(
        "{RDP_TCP_KEY}\\UserAuthentication = {}, SecurityLayer = {}",
        show(n.user_authentication),
        show(n.security_layer)
    )];
    match n.user_authentication {
        Some(0) => {
            warn = true;
            parts.push("Network Level Authentication is off".to_string());
            details.push("Without NLA anyone who reaches the port gets a Windows sign-in screen before authenticating.".into());
        }
        Some(_) => {
            parts.push("Network Level Authentication is required".to_string());
            details.push("Clients must support NLA (CredSSP) and the account must be able to sign in over the network first; an account whose password must change, or a CredSSP patch mismatch, fails before the session starts.".into());
        }
        None => parts.push("whether NLA is required could not be read".to_string()),
    }
    match n.security_layer {
        Some(0) => {
            warn = true;
            parts.push("the security layer is RDP (no TLS)".to_string());
            details.push("With the RDP security layer clients cannot verify the server's identity and warn about it; NLA needs TLS or Negotiate.".into());
        }
        Some(1) => parts.push("the security layer is Negotiate".to_string()),
        Some(2) => parts.push("the security layer is TLS".to_string()),
        Some(other) => parts.push(format!("the security layer is {other} (unknown)")),
        None => parts.push("the security layer could not be read".to_string()),
    }
    let status = if warn { Status::Warn } else { Status::Pass };
    let mut summary = parts.join("; ");
    if let Some(first) = summary.get(..1) {
        summary = first.to_uppercase() + &summary[1..];
    }
    let mut finding = Finding::new(step, status, summary).evidence(n);
    finding.details = details;
    finding
}

fn certificate(cert: Option<&Certificate>, now: OffsetDateTime) -> Finding {
    let step = CheckId::GuestCertificate;
    let Some(c) = cert else {
        return unread(step, "the RDP certificate");
    };
    let Some(not_after) = c.not_after.as_deref() else {
        return unread(step, "the RDP certificate's expiry").evidence(c);
    };
    let Ok(expiry) = OffsetDateTime::parse(not_after, &Rfc3339) else {
        return Finding::error(
            step,
            format!(
                "The RDP certificate's expiry \"{not_after}\" is not a date rdp-doctor can read"
            ),
        )
        .evidence(c);
    };
    let name = c.subject.as_deref().unwrap_or("(no subject)");
    let thumb = format!(
        "Certificate {} in Cert:\\LocalMachine\\Remote Desktop, valid until {not_after}",
        c.thumbprint.as_deref().unwrap_or("(no thumbprint)")
    );
    let days = (expiry - now).whole_days();
    let finding = if expiry <= now {
        Finding::new(
            step,
            Status::Fail,
            format!("The RDP certificate ({name}) expired on {not_after}: clients fail the TLS handshake (\"An internal error has occurred\")"),
        )
        .detail(thumb)
        .suggests(ActionId::RenewRdpCertificate)
    } else if days < CERTIFICATE_WARN_DAYS {
        Finding::new(
            step,
            Status::Warn,
            format!("The RDP certificate ({name}) expires in {days} days, on {not_after}"),
        )
        .detail(thumb)
    } else {
        Finding::new(
            step,
            Status::Pass,
            format!("The RDP certificate ({name}) is valid until {not_after}"),
        )
        .detail(thumb)
    };
    finding.evidence(c)
}

fn licensing(lic: Option<&Licensing>) -> Finding {
    let step = CheckId::GuestLicensing;
    let Some(l) = lic else {
        return unread(step, "Remote Desktop licensing");
    };
    let command = "Get-WindowsFeature RDS-RD-Server; (Get-WmiObject -Namespace root/cimv2/TerminalServices Win32_TerminalServiceSetting).GetGracePeriodDays()";
    if !l.rdsh_installed {
        return Finding::new(
            step,
            Status::Pass,
            "The RD Session Host role is not installed: the two administrative sessions need no license",
        )
        .detail(command)
        .evidence(l);
    }
    let mode = match l.mode {
        Some(2) => "per device",
        Some(4) => "per user",
        Some(_) => "unknown mode",
        None => "not configured",
    };
    if l.mode.is_some() && !l.license_servers.is_empty() {
        return Finding::new(
            step,
            Status::Pass,
            format!(
                "RD Session Host is licensed {mode} from {}",
                l.license_servers.join(", ")
            ),
        )
        .detail(command)
        .evidence(l);
    }
    let what = if l.license_servers.is_empty() {
        format!("no license server and licensing mode {mode}")
    } else {
        format!("licensing mode {mode}")
    };
    let finding = match l.grace_days_left {
        None => Finding::error(
            step,
            format!("The RD Session Host role is installed with {what}, but the guest script could not read the grace period"),
        ),
        Some(days) if days <= 0 => Finding::new(
            step,
            Status::Fail,
            format!("The RD Session Host role is installed with {what} and its licensing grace period is over: clients see \"The remote session was disconnected because there are no Remote Desktop License Servers available to provide a license\""),
        )
        .detail("If the VM is not meant to be a session host, remove the role (fix `remove-rdsh-role`, a reboot follows); otherwise point it at a license server and set the licensing mode.")
        .suggests(ActionId::RemoveRdshRole),
        Some(days) if days <= GRACE_WARN_DAYS => Finding::new(
            step,
            Status::Warn,
            format!("The RD Session Host role is installed with {what}: its licensing grace period ends in {days} days, then clients are refused (\"no Remote Desktop License Servers available\")"),
        ),
        Some(days) => Finding::new(
            step,
            Status::Pass,
            format!("The RD Session Host role is installed with {what}; {days} days of the licensing grace period are left"),
        ),
    };
    finding.detail(command).evidence(l)
}

fn disk(drive: Option<&Drive>, reboot: Option<&PendingReboot>) -> Finding {
    let step = CheckId::GuestDisk;
    let evidence = json!({"systemDrive": drive, "pendingReboot": reboot});
    let (mut finding, mut extra) = match drive {
        None => (unread(step, "the system drive's free space"), Vec::new()),
        Some(d) if d.size_bytes == 0 => (
            Finding::error(
                step,
                format!(
                    "The guest script reported drive {} with a size of 0",
                    d.drive
                ),
            ),
            Vec::new(),
        ),
        Some(d) => {
            let free = gib(d.free_bytes);
            let percent = d.free_bytes as f64 * 100.0 / d.size_bytes as f64;
            let line = format!(
                "Drive {} {free} free of {} ({percent:.1} %)",
                d.drive,
                gib(d.size_bytes)
            );
            let under = |bytes: u64, pct: u64| {
                d.free_bytes < bytes
                    || u128::from(d.free_bytes) * 100 < u128::from(d.size_bytes) * u128::from(pct)
            };
            let finding = if under(DISK_FAIL_BYTES, DISK_FAIL_PERCENT) {
                Finding::new(
                    step,
                    Status::Fail,
                    format!("The system drive {} is full ({free} free, {percent:.1} %): Windows cannot create the session's profile and temporary files", d.drive),
                )
                .suggests(ActionId::FreeDiskSpace)
            } else if under(DISK_WARN_BYTES, DISK_WARN_PERCENT) {
                Finding::new(
                    step,
                    Status::Warn,
                    format!(
                        "The system drive {} is low on space ({free} free, {percent:.1} %)",
                        d.drive
                    ),
                )
            } else {
                Finding::new(
                    step,
                    Status::Pass,
                    format!(
                        "The system drive {} has {free} free ({percent:.1} %)",
                        d.drive
                    ),
                )
            };
            (finding, vec![line])
        }
    };
    match reboot {
        Some(r) if r.pending => {
            let reasons = if r.reasons.is_empty() {
                "no reason given".to_string()
            } else {
                r.reasons.join(", ")
            };
            if finding.status == Status::Pass {
                finding.status = Status::Warn;
            }
            finding.summary = format!("{}; a reboot is pending ({reasons})", finding.summary);
            extra.push(
                "A pending reboot can leave services half-updated until the VM restarts.".into(),
            );
        }
        Some(_) => {}
        None => extra.push("The guest script could not tell whether a reboot is pending.".into()),
    }
    finding.details.extend(extra);
    finding.evidence(evidence)
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB as f64)
}

#[cfg(test)]
mod tests;
