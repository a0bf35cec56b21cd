use super::super::FirewallRule;
use super::*;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-11-30 09:00 UTC);

/// The contract's healthy example; each test changes what it is about.
fn healthy() -> GuestFacts {
    super::super::healthy_example()
}

fn rule(name: &str, enabled: bool, action: &str, port: &str, profiles: &str) -> FirewallRule {
    FirewallRule {
        name: name.into(),
        enabled,
        action: action.into(),
        protocol: Some("TCP".into()),
        local_port: Some(port.into()),
        profiles: Some(profiles.into()),
    }
}

fn one(facts: &GuestFacts, step: CheckId) -> Finding {
    findings(facts, NOW)
        .into_iter()
        .find(|f| f.step == step)
        .expect("every guest check has a finding")
}

#[test]
fn a_healthy_guest_passes_every_check_in_order() {
    let all = findings(&healthy(), NOW);
    assert_eq!(
        all.iter().map(|f| f.step).collect::<Vec<_>>(),
        CheckId::GUEST.to_vec()
    );
    for f in &all {
        assert_eq!(f.status, Status::Pass, "{}: {}", f.step, f.summary);
        assert_eq!(f.suggests, None);
        assert!(!f.evidence.is_null(), "{} has evidence", f.step);
        assert!(!f.details.is_empty(), "{} says what it read", f.step);
    }
}

#[test]
fn every_unreadable_part_is_an_error_that_says_so() {
    let nothing = GuestFacts {
        v: 1,
        rdp: None,
        term_service: None,
        listener: None,
        firewall: None,
        nla: None,
        certificate: None,
        licensing: None,
        system_drive: None,
        pending_reboot: None,
        checked_at: None,
    };
    for f in findings(&nothing, NOW) {
        assert_eq!(f.status, Status::Error, "{}", f.step);
        assert!(
            f.summary.contains("could not read"),
            "{}: {}",
            f.step,
            f.summary
        );
        assert_eq!(f.suggests, None);
    }
    // Inner nulls too.
    let mut facts = healthy();
    facts.rdp = Some(RdpSetting {
        deny: None,
        policy_deny: None,
    });
    facts.term_service = Some(ServiceState {
        status: None,
        start_type: Some("Automatic".into()),
    });
    facts.listener = Some(Listener {
        port: None,
        listening: Some(true),
        process: None,
    });
    facts.certificate = Some(Certificate {
        thumbprint: None,
        subject: None,
        not_after: None,
    });
    for step in [
        CheckId::GuestRdp,
        CheckId::GuestService,
        CheckId::GuestListener,
        CheckId::GuestCertificate,
    ] {
        assert_eq!(one(&facts, step).status, Status::Error, "{step}");
    }
}

#[test]
fn remote_desktop_disabled_locally_or_by_policy() {
    let mut facts = healthy();
    facts.rdp = Some(RdpSetting {
        deny: Some(1),
        policy_deny: None,
    });
    let f = one(&facts, CheckId::GuestRdp);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(f.suggests, Some(ActionId::EnableRdp));
    assert!(
        f.summary.contains("fDenyTSConnections = 1"),
        "{}",
        f.summary
    );
    assert!(f.details[0].contains(r"Control\Terminal Server\fDenyTSConnections = 1"));

    // The policy wins over a local 0, and the finding says it is a policy.
    facts.rdp = Some(RdpSetting {
        deny: Some(0),
        policy_deny: Some(1),
    });
    let f = one(&facts, CheckId::GuestRdp);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(f.suggests, Some(ActionId::EnableRdp));
    assert!(f.summary.contains("group policy"), "{}", f.summary);
    assert!(
        f.summary.contains("wins over the local value 0"),
        "{}",
        f.summary
    );
    assert!(f.details[0].contains(r"Policies\Microsoft\Windows NT\Terminal Services"));
    assert_eq!(f.evidence["policyDeny"], 1);

    // A policy allowing it wins over a local 1.
    facts.rdp = Some(RdpSetting {
        deny: Some(1),
        policy_deny: Some(0),
    });
    let f = one(&facts, CheckId::GuestRdp);
    assert_eq!(f.status, Status::Pass);
    assert!(f.summary.contains("group policy"));
}

#[test]
fn termservice_stopped_disabled_or_running() {
    let mut facts = healthy();
    facts.term_service = Some(ServiceState {
        status: Some("Stopped".into()),
        start_type: Some("Disabled".into()),
    });
    let f = one(&facts, CheckId::GuestService);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(f.suggests, Some(ActionId::StartTermservice));
    assert!(
        f.summary.contains("Stopped (start type Disabled)"),
        "{}",
        f.summary
    );

    facts.term_service = Some(ServiceState {
        status: Some("Stopped".into()),
        start_type: Some("Manual".into()),
    });
    assert_eq!(one(&facts, CheckId::GuestService).status, Status::Fail);

    facts.term_service = Some(ServiceState {
        status: Some("Running".into()),
        start_type: Some("Disabled".into()),
    });
    let f = one(&facts, CheckId::GuestService);
    assert_eq!(f.status, Status::Warn);
    assert!(f.summary.contains("next reboot"));
    assert_eq!(f.suggests, None);

    facts.term_service = Some(ServiceState {
        status: Some("Running".into()),
        start_type: Some("Manual".into()),
    });
    assert_eq!(one(&facts, CheckId::GuestService).status, Status::Pass);
}

#[test]
fn listener_on_another_port_or_not_listening() {
    let mut facts = healthy();
    facts.listener = Some(Listener {
        port: Some(3390),
        listening: Some(true),
        process: Some("svchost".into()),
    });
    let f = one(&facts, CheckId::GuestListener);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(f.suggests, Some(ActionId::ResetRdpPort));
    assert!(f.summary.contains("port 3390, not 3389"), "{}", f.summary);
    assert!(f.details.iter().any(|d| d.contains("PortNumber = 3390")));
    assert!(
        f.details
            .iter()
            .any(|d| d.contains("open the NSG for TCP 3390")),
        "names the alternative: {:?}",
        f.details
    );
    assert_eq!(listener_port(&facts), Some(3390));

    // Nothing listening, TermService stopped: starting it is the fix.
    facts.listener = Some(Listener {
        port: Some(3389),
        listening: Some(false),
        process: None,
    });
    facts.term_service = Some(ServiceState {
        status: Some("Stopped".into()),
        start_type: Some("Manual".into()),
    });
    let f = one(&facts, CheckId::GuestListener);
    assert_eq!(f.status, Status::Fail);
    assert!(f.summary.contains("Nothing listens"));
    assert_eq!(f.suggests, Some(ActionId::StartTermservice));

    // Nothing listening while TermService runs: a failure with no guest fix to offer.
    facts.term_service = healthy().term_service;
    let f = one(&facts, CheckId::GuestListener);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(f.suggests, None);

    facts.listener = Some(Listener {
        port: Some(3389),
        listening: None,
        process: None,
    });
    assert_eq!(one(&facts, CheckId::GuestListener).status, Status::Error);
}

#[test]
fn firewall_rules_profiles_and_ports() {
    let mut facts = healthy();
    let fw = facts.firewall.as_mut().unwrap();
    fw.rules[0].enabled = false;
    let f = one(&facts, CheckId::GuestFirewall);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(f.suggests, Some(ActionId::EnableFirewallRdp));
    assert!(f.summary.contains("TCP 3389"), "{}", f.summary);
    assert!(f
        .details
        .iter()
        .any(|d| d.contains("RemoteDesktop-UserMode-In-TCP (disabled")));

    // An allow rule only in a profile that is off does not count.
    let mut facts = healthy();
    let fw = facts.firewall.as_mut().unwrap();
    fw.rules[0].profiles = Some("Domain".into());
    fw.profiles[0].enabled = false;
    assert_eq!(one(&facts, CheckId::GuestFirewall).status, Status::Fail);
    // ... but one in an enabled profile of its list does.
    facts.firewall.as_mut().unwrap().rules[0].profiles = Some("Domain, Public".into());
    assert_eq!(one(&facts, CheckId::GuestFirewall).status, Status::Pass);

    // A block rule wins over the allow rule.
    let mut facts = healthy();
    facts.firewall.as_mut().unwrap().rules.push(rule(
        "Block RDP",
        true,
        "Block",
        "3380-3400",
        "Public",
    ));
    let f = one(&facts, CheckId::GuestFirewall);
    assert_eq!(f.status, Status::Fail);
    assert!(f.summary.contains("\"Block RDP\" blocks"), "{}", f.summary);
    assert_eq!(f.suggests, None);

    // Every profile off: passes, saying the firewall is off.
    let mut facts = healthy();
    let fw = facts.firewall.as_mut().unwrap();
    fw.rules.clear();
    for p in &mut fw.profiles {
        p.enabled = false;
    }
    let f = one(&facts, CheckId::GuestFirewall);
    assert_eq!(f.status, Status::Pass);
    assert!(f.summary.contains("off in every profile"));
    assert!(f.summary.contains("warning"));

    // The listener's port is the one judged: a 3389 rule does not open 3390.
    let mut facts = healthy();
    facts.listener.as_mut().unwrap().port = Some(3390);
    let f = one(&facts, CheckId::GuestFirewall);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(f.evidence["port"], 3390);
    assert_eq!(
        f.suggests, None,
        "the Remote Desktop rules open 3389, not 3390"
    );
    facts.firewall.as_mut().unwrap().rules.push(rule(
        "RDP 3390",
        true,
        "Allow",
        "3389,3390",
        "Any",
    ));
    assert_eq!(one(&facts, CheckId::GuestFirewall).status, Status::Pass);
}

#[test]
fn port_ranges_and_lists() {
    assert!(port_covers(Some("3389"), 3389));
    assert!(!port_covers(Some("3390"), 3389));
    assert!(port_covers(Some("3380-3390"), 3389));
    assert!(!port_covers(Some("3390-3400"), 3389));
    assert!(port_covers(Some("80, 3389"), 3389));
    assert!(port_covers(Some("Any"), 3389));
    assert!(port_covers(None, 3389));
    assert!(!port_covers(Some("RPC"), 3389));
    assert!(!port_covers(Some("x-y"), 3389));
}

#[test]
fn nla_and_security_layer() {
    let mut facts = healthy();
    let f = one(&facts, CheckId::GuestNla);
    assert_eq!(f.status, Status::Pass);
    assert_eq!(
        f.summary,
        "Network Level Authentication is required; the security layer is TLS"
    );
    assert!(f.details.iter().any(|d| d.contains("CredSSP")));

    facts.nla = Some(Nla {
        user_authentication: Some(0),
        security_layer: Some(1),
    });
    let f = one(&facts, CheckId::GuestNla);
    assert_eq!(f.status, Status::Warn);
    assert!(f.summary.starts_with("Network Level Authentication is off"));

    facts.nla = Some(Nla {
        user_authentication: Some(1),
        security_layer: Some(0),
    });
    let f = one(&facts, CheckId::GuestNla);
    assert_eq!(f.status, Status::Warn);
    assert!(f.summary.contains("RDP (no TLS)"));
    assert_eq!(f.suggests, None, "NLA has no fix");

    facts.nla = Some(Nla {
        user_authentication: None,
        security_layer: None,
    });
    let f = one(&facts, CheckId::GuestNla);
    assert!(f.summary.starts_with("Whether NLA"), "{}", f.summary);
}

#[test]
fn certificate_expired_expiring_and_valid() {
    let mut facts = healthy();
    let at = |t: &str| Certificate {
        thumbprint: Some("AB12".into()),
        subject: Some("CN=cert-01".into()),
        not_after: Some(t.into()),
    };
    facts.certificate = Some(at("2026-11-30T09:00:00Z"));
    let f = one(&facts, CheckId::GuestCertificate);
    assert_eq!(f.status, Status::Fail, "expiring now is expired");
    assert_eq!(f.suggests, Some(ActionId::RenewRdpCertificate));
    assert!(f.summary.contains("expired on 2026-11-30T09:00:00Z"));

    facts.certificate = Some(at("2026-12-14T08:59:59Z"));
    let f = one(&facts, CheckId::GuestCertificate);
    assert_eq!(f.status, Status::Warn);
    assert!(f.summary.contains("expires in 13 days"), "{}", f.summary);
    assert_eq!(f.suggests, None);

    facts.certificate = Some(at("2026-12-14T09:00:00Z"));
    assert_eq!(one(&facts, CheckId::GuestCertificate).status, Status::Pass);

    facts.certificate = Some(at("next tuesday"));
    let f = one(&facts, CheckId::GuestCertificate);
    assert_eq!(f.status, Status::Error);
    assert!(f.summary.contains("next tuesday"));
}

#[test]
fn licensing_grace_period() {
    let mut facts = healthy();
    let rdsh = |grace: Option<i64>, mode: Option<u32>, servers: &[&str]| Licensing {
        rdsh_installed: true,
        mode,
        license_servers: servers.iter().map(|s| s.to_string()).collect(),
        grace_days_left: grace,
    };
    facts.licensing = Some(rdsh(Some(0), None, &[]));
    let f = one(&facts, CheckId::GuestLicensing);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(f.suggests, Some(ActionId::RemoveRdshRole));
    assert!(
        f.summary
            .contains("no Remote Desktop License Servers available"),
        "{}",
        f.summary
    );
    assert!(f.summary.contains("not configured"));

    facts.licensing = Some(rdsh(Some(GRACE_WARN_DAYS), None, &[]));
    let f = one(&facts, CheckId::GuestLicensing);
    assert_eq!(f.status, Status::Warn);
    assert!(f.summary.contains("ends in 7 days"));
    assert_eq!(f.suggests, None);

    facts.licensing = Some(rdsh(Some(GRACE_WARN_DAYS + 1), None, &[]));
    assert_eq!(one(&facts, CheckId::GuestLicensing).status, Status::Pass);

    facts.licensing = Some(rdsh(Some(0), Some(4), &["lic.contoso.com"]));
    let f = one(&facts, CheckId::GuestLicensing);
    assert_eq!(
        f.status,
        Status::Pass,
        "licensed: the grace period no longer matters"
    );
    assert!(f.summary.contains("per user from lic.contoso.com"));

    facts.licensing = Some(rdsh(None, None, &[]));
    assert_eq!(one(&facts, CheckId::GuestLicensing).status, Status::Error);
}

#[test]
fn system_drive_boundaries() {
    let mut facts = healthy();
    let drive = |free: u64, size: u64| Drive {
        drive: "C:".into(),
        free_bytes: free,
        size_bytes: size,
    };
    let size = 127 * GIB;
    // Just under 1 GiB: full.
    facts.system_drive = Some(drive(GIB - 1, size));
    let f = one(&facts, CheckId::GuestDisk);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(f.suggests, Some(ActionId::FreeDiskSpace));
    assert!(f.summary.contains("is full"));
    // Over 1 GiB but under 2 % of a large drive: full too.
    facts.system_drive = Some(drive(19 * GIB, 1024 * GIB));
    assert_eq!(one(&facts, CheckId::GuestDisk).status, Status::Fail);
    // Exactly 2 % and over 1 GiB: low, not full.
    facts.system_drive = Some(drive(2 * GIB, 100 * GIB));
    assert_eq!(one(&facts, CheckId::GuestDisk).status, Status::Warn);
    // Just under 5 GiB: low.
    facts.system_drive = Some(drive(5 * GIB - 1, 30 * GIB));
    let f = one(&facts, CheckId::GuestDisk);
    assert_eq!(f.status, Status::Warn);
    assert_eq!(f.suggests, None);
    // 5 GiB but under 10 %: low.
    facts.system_drive = Some(drive(6 * GIB, 100 * GIB));
    assert_eq!(one(&facts, CheckId::GuestDisk).status, Status::Warn);
    // 5 GiB and 10 %: fine.
    facts.system_drive = Some(drive(10 * GIB, 100 * GIB));
    assert_eq!(one(&facts, CheckId::GuestDisk).status, Status::Pass);

    facts.system_drive = Some(drive(0, 0));
    assert_eq!(one(&facts, CheckId::GuestDisk).status, Status::Error);
}

#[test]
fn a_pending_reboot_is_a_warning_with_its_reasons() {
    let mut facts = healthy();
    facts.pending_reboot = Some(PendingReboot {
        pending: true,
        reasons: vec!["WindowsUpdate".into(), "PendingFileRenameOperations".into()],
    });
    let f = one(&facts, CheckId::GuestDisk);
    assert_eq!(f.status, Status::Warn);
    assert!(
        f.summary
            .ends_with("a reboot is pending (WindowsUpdate, PendingFileRenameOperations)"),
        "{}",
        f.summary
    );
    assert_eq!(f.evidence["pendingReboot"]["pending"], true);

    // A full drive stays a failure.
    facts.system_drive.as_mut().unwrap().free_bytes = 0;
    assert_eq!(one(&facts, CheckId::GuestDisk).status, Status::Fail);
}
