//! `parse_read` and `parse_fix` against what Run Command may hand back: valid facts among other
//! output, every truncation of a valid line, arbitrary bytes, fields of the wrong type.

use super::*;
use proptest::prelude::*;

fn healthy() -> GuestFacts {
    healthy_example()
}

fn line(facts: &GuestFacts) -> String {
    format!(
        "{READ_OUTPUT_PREFIX} {}",
        serde_json::to_string(facts).expect("serialises")
    )
}

fn text() -> impl Strategy<Value = String> {
    "[ -~é€]{0,12}"
}

fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    proptest::option::of(s).boxed()
}

prop_compose! {
    fn any_rule()(name in text(), enabled in any::<bool>(), action in text(), protocol in opt(text()),
                  local_port in opt(text()), profiles in opt(text())) -> FirewallRule {
        FirewallRule { name, enabled, action, protocol, local_port, profiles }
    }
}

prop_compose! {
    fn any_facts()(
        rdp in opt((opt(any::<u32>()), opt(any::<u32>()))),
        service in opt((opt(text()), opt(text()))),
        listener in opt((opt(any::<u16>()), opt(any::<bool>()), opt(text()))),
        firewall in opt((proptest::collection::vec((text(), any::<bool>()), 0..4), proptest::collection::vec(any_rule(), 0..4))),
        nla in opt((opt(any::<u32>()), opt(any::<u32>()))),
        certificate in opt((opt(text()), opt(text()), opt(text()))),
        licensing in opt((any::<bool>(), opt(any::<u32>()), proptest::collection::vec(text(), 0..3), opt(any::<i64>()))),
        drive in opt((text(), any::<u64>(), any::<u64>())),
        reboot in opt((any::<bool>(), proptest::collection::vec(text(), 0..3))),
        checked_at in opt(text()),
    ) -> GuestFacts {
        GuestFacts {
            v: 1,
            rdp: rdp.map(|(deny, policy_deny)| RdpSetting { deny, policy_deny }),
            term_service: service.map(|(status, start_type)| ServiceState { status, start_type }),
            listener: listener.map(|(port, listening, process)| Listener { port, listening, process }),
            firewall: firewall.map(|(profiles, rules)| Firewall {
                profiles: profiles.into_iter().map(|(name, enabled)| FirewallProfile { name, enabled }).collect(),
                rules,
            }),
            nla: nla.map(|(user_authentication, security_layer)| Nla { user_authentication, security_layer }),
            certificate: certificate.map(|(thumbprint, subject, not_after)| Certificate { thumbprint, subject, not_after }),
            licensing: licensing.map(|(rdsh_installed, mode, license_servers, grace_days_left)| Licensing {
                rdsh_installed, mode, license_servers, grace_days_left,
            }),
            system_drive: drive.map(|(drive, free_bytes, size_bytes)| Drive { drive, free_bytes, size_bytes }),
            pending_reboot: reboot.map(|(pending, reasons)| PendingReboot { pending, reasons }),
            checked_at,
        }
    }
}

proptest! {
    #[test]
    fn valid_facts_round_trip_among_other_output(
        facts in any_facts(),
        before in proptest::collection::vec("[ -~]{0,30}", 0..4),
        after in proptest::collection::vec("[ -~]{0,30}", 0..4),
        crlf in any::<bool>(),
        trailing in "[ \t]{0,3}",
    ) {
        let newline = if crlf { "\r\n" } else { "\n" };
        let others = |lines: &[String]| -> String {
            lines.iter().filter(|l| !l.starts_with(READ_OUTPUT_PREFIX)).map(|l| format!("{l}{newline}")).collect()
        };
        let stdout = format!("{}{}{trailing}{newline}{}", others(&before), line(&facts), others(&after));
        prop_assert_eq!(parse_read(&stdout), Ok(facts));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_read(&text);
        let _ = parse_fix(&text);
        let marked = format!("{READ_OUTPUT_PREFIX} {text}");
        prop_assert!(parse_read(&marked).is_err() || serde_json::from_str::<serde_json::Value>(&text).is_ok());
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_as_a_wrong_shape(
        field in prop::sample::select(vec!["rdp", "termService", "listener", "firewall", "nla", "certificate", "licensing", "systemDrive", "pendingReboot", "checkedAt"]),
        wrong in prop::sample::select(vec![serde_json::json!(7), serde_json::json!("x"), serde_json::json!([1]), serde_json::json!(true)]),
    ) {
        let mut value = serde_json::to_value(healthy()).expect("serialises");
        // A string is right for checkedAt only.
        prop_assume!(!(field == "checkedAt" && wrong.is_string()));
        value[field] = wrong;
        let stdout = format!("{READ_OUTPUT_PREFIX} {value}\n");
        let is_wrong_shape = matches!(parse_read(&stdout), Err(GuestOutputError::WrongShape { .. }));
        prop_assert!(is_wrong_shape);
    }
}

#[test]
fn every_truncation_of_a_valid_output_is_an_error_until_the_line_is_whole() {
    let full = line(&healthy());
    for cut in 0..full.len() {
        if !full.is_char_boundary(cut) {
            continue;
        }
        let stdout = format!("Windows PowerShell\r\n{}", &full[..cut]);
        let parsed = parse_read(&stdout);
        assert!(parsed.is_err(), "a cut at {cut} parsed: {parsed:?}");
    }
    assert_eq!(parse_read(&full), Ok(healthy()));
    // Cut inside the JSON: Run Command kept the last 4,096 bytes, or the script stopped.
    assert_eq!(
        parse_read(&full[..full.len() - 10]),
        Err(GuestOutputError::Truncated {
            prefix: READ_OUTPUT_PREFIX
        })
    );
}

#[test]
fn each_failure_names_what_was_wrong() {
    assert_eq!(
        parse_read("hello\r\n"),
        Err(GuestOutputError::Missing {
            prefix: READ_OUTPUT_PREFIX
        })
    );
    let one = line(&healthy());
    assert_eq!(
        parse_read(&format!("{one}\n{one}\n")),
        Err(GuestOutputError::Several {
            prefix: READ_OUTPUT_PREFIX,
            count: 2
        })
    );
    let garbled = parse_read("RDP-DOCTOR-GUEST {\"v\":1,]").unwrap_err();
    assert!(
        matches!(garbled, GuestOutputError::Garbled { .. }),
        "{garbled:?}"
    );
    assert_eq!(
        parse_read("RDP-DOCTOR-GUEST {\"v\":2}")
            .unwrap_err()
            .to_string(),
        "the guest facts are version 2; this rdp-doctor reads version 1"
    );
    assert_eq!(
        parse_read("RDP-DOCTOR-GUEST {\"rdp\":null}").unwrap_err(),
        GuestOutputError::WrongShape {
            prefix: READ_OUTPUT_PREFIX,
            detail: "no version `v`".into()
        }
    );
    let wrong = parse_read("RDP-DOCTOR-GUEST {\"v\":1,\"listener\":{\"port\":\"secret-ish\"}}")
        .unwrap_err()
        .to_string();
    assert!(wrong.contains("expected u16"), "{wrong}");
    assert!(
        !wrong.contains("secret-ish"),
        "the value is not quoted: {wrong}"
    );
    // A BOM before the line and nulls everywhere are fine.
    let facts = parse_read("\u{feff}RDP-DOCTOR-GUEST {\"v\":1,\"rdp\":null}  \r\n").unwrap();
    assert_eq!(facts.rdp, None);
    // The prefix must be a whole word.
    assert!(matches!(
        parse_read("RDP-DOCTOR-GUESTS {\"v\":1}"),
        Err(GuestOutputError::Missing { .. })
    ));
}

#[test]
fn fix_output_reads_and_fails_like_the_read() {
    let out = parse_fix(
        "Stopping...\r\nRDP-DOCTOR-FIX {\"fix\":\"enable-rdp\",\"changed\":[\"fDenyTSConnections set to 0\"]}\r\n",
    )
    .unwrap();
    assert_eq!(out.fix, "enable-rdp");
    assert_eq!(out.changed, vec!["fDenyTSConnections set to 0".to_owned()]);
    assert_eq!(
        parse_fix("RDP-DOCTOR-GUEST {}"),
        Err(GuestOutputError::Missing {
            prefix: FIX_OUTPUT_PREFIX
        })
    );
    assert!(matches!(
        parse_fix("RDP-DOCTOR-FIX {\"fix\":\"enable-rdp\",\"changed\":\"all\"}"),
        Err(GuestOutputError::WrongShape { .. })
    ));
    assert!(matches!(
        parse_fix("RDP-DOCTOR-FIX {\"fix\":\"enable-rdp\",\"chan"),
        Err(GuestOutputError::Truncated { .. })
    ));
}

#[test]
fn the_read_script_is_marked_read_only_and_prints_the_prefix() {
    let lines = read_script();
    assert_eq!(lines[0], READ_SCRIPT_MARKER);
    assert!(READ_SCRIPT.contains("'RDP-DOCTOR-GUEST '"));
    assert!(READ_SCRIPT.contains("ConvertTo-Json -Compress -Depth 5"));
    // Read-only: none of the cmdlets that change a Windows guest.
    for verb in [
        "Set-ItemProperty",
        "New-ItemProperty",
        "Remove-Item",
        "Set-Service",
        "Start-Service",
        "Stop-Service",
        "Restart-Service",
        "Enable-NetFirewallRule",
        "Set-NetFirewall",
        "Uninstall-WindowsFeature",
        "Restart-Computer",
    ] {
        assert!(!READ_SCRIPT.contains(verb), "the read script calls {verb}");
    }
}
