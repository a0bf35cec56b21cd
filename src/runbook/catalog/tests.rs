use super::*;
use crate::diagnose::CheckId;

#[test]
fn builtin_runbook_loads() {
    let catalog = Catalog::builtin();
    let ids: Vec<&str> = catalog.steps.iter().map(|s| s.id.as_str()).collect();
    // Every step once, and nothing else.
    let mut sorted: Vec<StepId> = catalog.steps.iter().map(|s| s.id).collect();
    sorted.sort_by_key(|s| s.as_str());
    let mut all: Vec<StepId> = StepId::all().collect();
    all.sort_by_key(|s| s.as_str());
    assert_eq!(sorted, all);
    assert_eq!(
        ids,
        [
            "vm-status",
            "start",
            "vm-agent",
            "reset-rdp-config",
            "public-ip",
            "nsg",
            "open-rdp-port",
            "request-jit",
            "boot-diagnostics",
            "resource-health",
            "reset-password",
            "restart",
            "redeploy",
            "network-path",
            "remove-route",
            "guest-rdp",
            "guest-service",
            "guest-listener",
            "guest-firewall",
            "guest-nla",
            "guest-certificate",
            "guest-licensing",
            "guest-disk",
            "enable-rdp",
            "start-termservice",
            "reset-rdp-port",
            "enable-firewall-rdp",
            "renew-rdp-certificate",
            "remove-rdsh-role",
            "free-disk-space",
        ]
    );
    assert_eq!(
        catalog.ladder,
        [
            ActionId::Start,
            ActionId::RequestJit,
            ActionId::OpenRdpPort,
            ActionId::RemoveRoute,
            ActionId::EnableRdp,
            ActionId::StartTermservice,
            ActionId::ResetRdpPort,
            ActionId::EnableFirewallRdp,
            ActionId::RenewRdpCertificate,
            ActionId::FreeDiskSpace,
            ActionId::RemoveRdshRole,
            ActionId::ResetRdpConfig,
            ActionId::ResetPassword,
            ActionId::Restart,
            ActionId::Redeploy
        ]
    );
    assert_eq!(catalog.commands.guest, Permission::Operate);
    let errors: Vec<&str> = catalog.errors.iter().map(|e| e.id.as_str()).collect();
    // The five of the seed first, then the rest of Microsoft's RDP error articles.
    assert_eq!(
        errors[..5],
        [
            "no-license-server",
            "cannot-find-computer",
            "lsa-cannot-be-contacted",
            "credentials-did-not-work",
            "cannot-connect-to-remote-computer",
        ]
    );
    assert!(errors.len() >= 30, "{} errors", errors.len());
    // Runbook numbers only grow along the file: the file is in the runbook's order.
    let numbers: Vec<u8> = catalog
        .steps
        .iter()
        .filter_map(|s| s.runbook_step)
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] <= w[1]), "{numbers:?}");
    let permission = |id: ActionId| catalog.step(id).and_then(|s| s.permission);
    assert_eq!(
        permission(ActionId::ResetRdpConfig),
        Some(Permission::Operate)
    );
    assert_eq!(permission(ActionId::Redeploy), Some(Permission::Admin));
    assert_eq!(
        catalog
            .step(ActionId::ResetPassword)
            .map(|s| s.requires.clone()),
        Some(vec![
            Precondition::Running,
            Precondition::AgentReady,
            Precondition::Windows
        ])
    );
}

#[test]
fn confirm_text_fills_placeholders() {
    let catalog = Catalog::builtin();
    let restart = catalog
        .step(ActionId::Restart)
        .and_then(|s| s.confirm_text(&[("vm", "web-01")]));
    assert_eq!(
        restart.as_deref(),
        Some("Restart web-01? Everyone signed in is disconnected and unsaved work is lost.")
    );
    assert_eq!(
        catalog.step(CheckId::Nsg).and_then(|s| s.confirm_text(&[])),
        None
    );
}

fn check_explain(text: &str, expect: &[&str]) {
    let catalog = Catalog::builtin();
    let got: Vec<&str> = catalog
        .explain(text)
        .iter()
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(got, expect, "explain({text:?})");
}

#[test]
fn explain_matches_pasted_messages() {
    let cases: &[(&str, &[&str])] = &[
            (
                "The remote session was disconnected because there are no Remote Desktop License Servers available to provide a license.",
                &["no-license-server"],
            ),
            (
                "\"The remote session was disconnected because there are no Remote Desktop\nLicense Servers available to provide a license. Please contact the server administrator.\"",
                &["no-license-server"],
            ),
            (
                "no remote desktop license server available",
                &["no-license-server"],
            ),
            (
                "Remote Desktop can't find the computer \"web-01\".",
                &["cannot-find-computer"],
            ),
            (
                "Remote Desktop can’t find the computer “web-01”.",
                &["cannot-find-computer"],
            ),
            (
                "getting this when I click connect: Remote Desktop cannot find the computer 'web-01.contoso.com'. This might mean...",
                &["cannot-find-computer"],
            ),
            (
                "remote desktop cant find the computer",
                &["cannot-find-computer"],
            ),
            (
                "An authentication error has occurred.\r\nThe Local Security Authority cannot be contacted\r\n\r\nRemote computer: 10.0.0.4",
                &["lsa-cannot-be-contacted"],
            ),
            (
                "the local security authority can’t be contacted",
                &["lsa-cannot-be-contacted"],
            ),
            (
                "Windows Security error: Your credentials did not work.",
                &["credentials-did-not-work"],
            ),
            (
                "Windows Security\nYour credentials didn’t work\nThe credentials that were used to connect to 20.1.2.3 did not work.",
                &["credentials-did-not-work"],
            ),
            (
                "YOUR CREDENTIALS DID NOT WORK",
                &["credentials-did-not-work"],
            ),
            (
                "This computer can't connect to the remote computer.",
                &["cannot-connect-to-remote-computer"],
            ),
            (
                "Remote Desktop Connection: This computer can’t connect to the remote computer.\nTry connecting again.",
                &["cannot-connect-to-remote-computer"],
            ),
            (
                "this computer cannot  connect to the\nremote computer",
                &["cannot-connect-to-remote-computer"],
            ),
            // Two messages in one paste: the longer match first.
            (
                "first: Your credentials did not work. then: Remote Desktop can't find the computer \"x\"",
                &["cannot-find-computer", "credentials-did-not-work"],
            ),
            ("", &[]),
            ("The VM is slow and the disk is full.", &[]),
            // CredSSP's "authentication error" is a different problem from the LSA one.
            (
                "An authentication error has occurred. The function requested is not supported.",
                &["credssp-encryption-oracle"],
            ),
            ("Remote Desktop can find the computer", &[]),
        ];
    for (text, expect) in cases {
        check_explain(text, expect);
    }
}

// A small but complete pair of files; the invalid cases below each change one thing.
const RDP: &str = r#"ladder = ["start", "redeploy"]

[texts]
no_public_ip = "a"
agent_not_ready = "b"
linux = "c"
classic = "d"
enable_boot_diagnostics = "e"
register_resource_health = "f"
reconnect = "g"

[[step]]
id = "vm-status"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "vm-agent"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "public-ip"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "nsg"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "resource-health"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "boot-diagnostics"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "reset-rdp-config"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "Reset {vm}?"
permission = "operate"
requires = ["running", "agent-ready"]

[[step]]
id = "open-rdp-port"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "admin"

[[step]]
id = "reset-password"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "admin"

[[step]]
id = "start"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "operate"

[[step]]
id = "restart"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "operate"

[[step]]
id = "redeploy"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "admin"

[[step]]
id = "network-path"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "guest-rdp"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "guest-service"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "guest-listener"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "guest-firewall"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "guest-nla"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "guest-certificate"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "guest-licensing"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "guest-disk"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "remove-route"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "operate"

[[step]]
id = "request-jit"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "operate"

[[step]]
id = "enable-rdp"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "operate"

[[step]]
id = "start-termservice"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "operate"

[[step]]
id = "reset-rdp-port"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "operate"

[[step]]
id = "enable-firewall-rdp"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "operate"

[[step]]
id = "renew-rdp-certificate"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "operate"

[[step]]
id = "remove-rdsh-role"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "operate"

[[step]]
id = "free-disk-space"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "operate"
"#;

const ERRORS: &str = r#"[[error]]
id = "one"
pattern = 'one\s+error'
message = "m"
cause = "c"
fix = "f"
doc = "https://example.com/"

[[error]]
id = "two"
pattern = "two"
message = "m"
cause = "c"
fix = "f"
doc = "https://example.com/"
steps = ["nsg"]
"#;

/// Replaces `from` (which must occur) by `to` in the rdp file if `from` starts with `rdp:`,
/// else in the errors file, loads both, and compares the error's Display with `expect`;
/// returns the mismatch so that one run shows every failing case.
fn check_invalid(from: &str, to: &str, expect: &str) -> Option<String> {
    let (mut rdp, mut errors) = (RDP.to_string(), ERRORS.to_string());
    let (target, from) = match from.strip_prefix("rdp:") {
        Some(from) => (&mut rdp, from),
        None => (&mut errors, from.strip_prefix("errors:").unwrap_or(from)),
    };
    assert!(target.contains(from), "fixture has no {from:?}");
    *target = target.replacen(from, to, 1);
    match Catalog::from_strs(
        &rdp,
        "commands/rdp.toml",
        &errors,
        "commands/rdp-errors.toml",
    ) {
        Ok(_) => Some(format!("{from:?} -> {to:?} loaded")),
        Err(e) if e.to_string() == expect => None,
        Err(e) => Some(format!(
            "{from:?} -> {to:?}\n  got:    {e}\n  expect: {expect}"
        )),
    }
}

#[test]
fn fixture_loads() {
    let catalog = Catalog::from_strs(RDP, "rdp.toml", ERRORS, "rdp-errors.toml");
    assert!(catalog.is_ok(), "{:?}", catalog.err());
}

#[test]
fn invalid_files_name_file_line_and_field() {
    let cases = [
            // Parse errors: toml + serde.
            (
                "rdp:next_step = \"n\"\n\n[[step]]\nid = \"vm-agent\"",
                "next_step = \"n\"\ncolour = \"red\"\n\n[[step]]\nid = \"vm-agent\"",
                "commands/rdp.toml:18:1: field `colour`: unknown field `colour`, expected one of `id`, `kind`, `title`, `runbook_step`, `doc`, `next_step`, `confirm`, `permission`, `requires`",
            ),
            (
                "rdp:permission = \"operate\"\nrequires",
                "permission = \"root\"\nrequires",
                "commands/rdp.toml:61:14: field `permission`: unknown variant `root`, expected one of `read`, `operate`, `admin`",
            ),
            (
                "rdp:kind = \"check\"\ntitle = \"t\"\ndoc",
                "kind = \"check\"\ntitle = \"t\"\nrunbook_step = \"two\"\ndoc",
                "commands/rdp.toml:16:16: field `runbook_step`: invalid type: string \"two\", expected u8",
            ),
            (
                "rdp:[\"running\", \"agent-ready\"]",
                "[\n  \"running\",\n  \"agent-reedy\",\n]",
                "commands/rdp.toml:64:3: field `requires`: unknown variant `agent-reedy`, expected one of `running`, `agent-ready`, `windows`, `deallocated-or-stopped`",
            ),
            (
                "rdp:reconnect = \"g\"\n",
                "",
                "commands/rdp.toml:3:1: field `reconnect`: missing field `reconnect`",
            ),
            (
                "rdp:id = \"nsg\"\nkind = \"check\"",
                "id = \"nsg\"\nkind \"check\"",
                "commands/rdp.toml:35:6: expected `.`, `=`",
            ),
            (
                "errors:fix = \"f\"",
                "fix = 3",
                "commands/rdp-errors.toml:6:7: field `fix`: invalid type: integer `3`, expected a string",
            ),
            // Validation errors.
            (
                "errors:pattern = \"two\"",
                "pattern = \"two(\"",
                "commands/rdp-errors.toml:11:11: field `pattern`: error `two`: unclosed group",
            ),
            (
                "errors:pattern = \"two\"",
                "pattern = \"(two)?\"",
                "commands/rdp-errors.toml:11:11: field `pattern`: error `two`: pattern matches empty text, so it would match anything",
            ),
            (
                "errors:id = \"two\"",
                "id = \"one\"",
                "commands/rdp-errors.toml:10:6: field `id`: error `one` is defined twice",
            ),
            (
                "errors:steps = [\"nsg\"]",
                "steps = [\"nsgg\"]",
                "commands/rdp-errors.toml:16:9: field `steps`: unknown step `nsgg`; checks are vm-status, vm-agent, public-ip, nsg, resource-health, boot-diagnostics, network-path, guest-rdp, guest-service, guest-listener, guest-firewall, guest-nla, guest-certificate, guest-licensing, guest-disk; actions are reset-rdp-config, open-rdp-port, reset-password, start, restart, redeploy, remove-route, request-jit, enable-rdp, start-termservice, reset-rdp-port, enable-firewall-rdp, renew-rdp-certificate, remove-rdsh-role, free-disk-space",
            ),
            (
                "errors:doc = \"https://example.com/\"",
                "doc = \"http://example.com/\"",
                "commands/rdp-errors.toml:7:7: field `doc`: error `one`: doc must be an https:// URL, got `http://example.com/`",
            ),
            (
                "rdp:id = \"redeploy\"",
                "id = \"reboot\"",
                "commands/rdp.toml:101:6: field `id`: unknown step `reboot`; checks are vm-status, vm-agent, public-ip, nsg, resource-health, boot-diagnostics, network-path, guest-rdp, guest-service, guest-listener, guest-firewall, guest-nla, guest-certificate, guest-licensing, guest-disk; actions are reset-rdp-config, open-rdp-port, reset-password, start, restart, redeploy, remove-route, request-jit, enable-rdp, start-termservice, reset-rdp-port, enable-firewall-rdp, renew-rdp-certificate, remove-rdsh-role, free-disk-space",
            ),
            (
                "rdp:id = \"restart\"",
                "id = \"start\"",
                "commands/rdp.toml:92:6: field `id`: step `start` is defined twice (first at line 83)",
            ),
            (
                "rdp:confirm = \"c\"\npermission = \"admin\"\n",
                "",
                "commands/rdp.toml:65:6: field `confirm`: action `open-rdp-port` needs a confirmation text",
            ),
            (
                "rdp:permission = \"operate\"\n\n[[step]]\nid = \"restart\"",
                "\n[[step]]\nid = \"restart\"",
                "commands/rdp.toml:83:6: field `permission`: action `start` needs a permission: \"read\", \"operate\" or \"admin\"",
            ),
            (
                "rdp:Reset {vm}?",
                "Reset {vmname}?",
                "commands/rdp.toml:60:11: field `confirm`: action `reset-rdp-config`: unknown placeholder `{vmname}`; use {vm}, {resource_group}, {username}",
            ),
            (
                "rdp:id = \"nsg\"\nkind = \"check\"",
                "id = \"nsg\"\nkind = \"action\"",
                "commands/rdp.toml:35:8: field `kind`: `nsg` is a check: write kind = \"check\"",
            ),
            (
                "rdp:id = \"nsg\"\nkind = \"check\"",
                "id = \"nsg\"\nkind = \"check\"\npermission = \"read\"",
                "commands/rdp.toml:36:14: field `permission`: `nsg` is a check; only actions have `permission`",
            ),
            (
                "rdp:[[step]]\nid = \"boot-diagnostics\"\nkind = \"check\"\ntitle = \"t\"\ndoc = \"https://example.com/\"\nnext_step = \"n\"\n",
                "",
                "commands/rdp.toml: field `step`: missing check `boot-diagnostics`: add a [[step]] with id = \"boot-diagnostics\"",
            ),
            (
                "rdp:ladder = [\"start\", \"redeploy\"]",
                "ladder = [\"start\", \"nsg\"]",
                "commands/rdp.toml:1:10: field `ladder`: unknown action `nsg`; actions are reset-rdp-config, open-rdp-port, reset-password, start, restart, redeploy, remove-route, request-jit, enable-rdp, start-termservice, reset-rdp-port, enable-firewall-rdp, renew-rdp-certificate, remove-rdsh-role, free-disk-space",
            ),
            // A value that parses but is wrong: the line and column of that value.
            (
                "rdp:ladder = [\"start\", \"redeploy\"]",
                "ladder = [\"start\", \"redeploy\", \"start\"]",
                "commands/rdp.toml:1:32: field `ladder`: `start` is listed twice",
            ),
            (
                "rdp:linux = \"c\"",
                "linux = \" \"",
                "commands/rdp.toml:6:9: field `linux`: text is empty",
            ),
            (
                "rdp:doc = \"https://example.com/\"",
                "doc = \"learn.microsoft.com\"",
                "commands/rdp.toml:16:7: field `doc`: `vm-status`: doc must be an https:// URL, got `learn.microsoft.com`",
            ),
        ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(from, to, expect)| check_invalid(from, to, expect))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn load_dir_reads_files_and_falls_back_to_builtins() {
    let dir = std::env::temp_dir().join(format!("rdp-doctor-catalog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");

    // Nothing in the directory: the built-in runbook.
    let catalog = Catalog::load_dir(&dir).map_err(|e| e.to_string());
    assert_eq!(catalog.map(|c| c.steps.len()), Ok(30));

    // A broken errors file is reported under its real path; rdp.toml still falls back.
    let errors_path = dir.join("rdp-errors.toml");
    std::fs::write(&errors_path, "[[error]]\nid = 1\n").expect("write errors file");
    let err = Catalog::load_dir(&dir)
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert_eq!(
        err,
        Err(format!(
            "{}:2:6: field `id`: invalid type: integer `1`, expected a string",
            errors_path.display()
        ))
    );
    std::fs::remove_dir_all(&dir).expect("remove temp dir");

    // A missing directory is an error, not a silent fallback.
    let err = Catalog::load_dir(&dir)
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert!(
        err.as_ref()
            .is_err_and(|e| e.starts_with(&format!("{}: cannot read: ", dir.display()))),
        "{err:?}"
    );
}

/// A distinctive part of each entry's message, as someone would paste it.
const FRAGMENTS: &[(&str, &str)] = &[
    (
        "no-license-server",
        "no Remote Desktop License Servers available",
    ),
    (
        "cannot-find-computer",
        "Remote Desktop can't find the computer",
    ),
    (
        "lsa-cannot-be-contacted",
        "Local Security Authority cannot be contacted",
    ),
    ("credentials-did-not-work", "Your credentials did not work"),
    (
        "cannot-connect-to-remote-computer",
        "This computer can't connect to the remote computer",
    ),
    (
        "credssp-encryption-oracle",
        "due to CredSSP encryption oracle remediation",
    ),
    ("internal-error", "An internal error has occurred"),
    ("nla-not-supported", "which your computer does not support"),
    (
        "nla-domain-controller",
        "domain controller cannot be contacted to perform NLA",
    ),
    ("protocol-error", "Because of a protocol error"),
    (
        "not-authorized-remote-login",
        "not authorized for remote login",
    ),
    (
        "need-right-to-sign-in",
        "the right to sign in through Remote Desktop Services",
    ),
    (
        "local-policy-logon-interactively",
        "does not permit you to logon interactively",
    ),
    ("logon-attempt-failed", "The logon attempt failed"),
    (
        "certificate-not-trusted",
        "not from a trusted certifying authority",
    ),
    (
        "identity-cannot-be-verified",
        "identity of the remote computer cannot be verified",
    ),
    (
        "certificate-name-mismatch",
        "Name in the certificate from the remote computer",
    ),
    (
        "certificate-expired",
        "authentication certificate received from the remote computer is expired",
    ),
    ("not-the-computer-specified", "is not the one you specified"),
    (
        "no-client-access-licenses",
        "no Remote Desktop client access licenses available",
    ),
    (
        "licensing-mode-not-configured",
        "Remote Desktop licensing mode is not configured",
    ),
    (
        "licensing-protocol-error",
        "an error in the licensing protocol",
    ),
    (
        "cannot-connect-for-one-of-these-reasons",
        "for one of these reasons",
    ),
    (
        "could-not-connect-0x204",
        "We couldn't connect to the remote PC",
    ),
    ("connection-timed-out", "The connection timed out"),
    ("socket-closed", "socket closed"),
    ("security-error", "Because of a security error"),
    ("services-busy", "Remote Desktop Services is currently busy"),
    (
        "maximum-connections",
        "exceeded the maximum number of allowed connections",
    ),
    ("account-restriction", "because of an account restriction"),
    ("connect-failed-0x3000046", "Error code: 0x3000046"),
];

/// The message as it arrives from a chat client: under the dialog's title, wrapped every five
/// words (Windows and Unix line ends), curly quotes and apostrophes, a stray double space, and
/// the client's "Extended error code" line under it.
fn as_pasted(message: &str) -> String {
    let mut open = true;
    let curly: String = message
        .chars()
        .map(|c| match c {
            '\'' => '\u{2019}',
            '"' => {
                open = !open;
                if open {
                    '\u{201D}'
                } else {
                    '\u{201C}'
                }
            }
            c => c,
        })
        .collect();
    let wrapped: Vec<String> = curly
        .split(' ')
        .collect::<Vec<_>>()
        .chunks(5)
        .enumerate()
        .map(|(i, line)| {
            let line = line.join(" ");
            if i % 2 == 0 {
                line.replacen(' ', "  ", 1)
            } else {
                line
            }
        })
        .collect();
    format!(
        "Remote Desktop Connection\r\n\r\n{}\n\nExtended error code: 0x0",
        wrapped.join("\r\n")
    )
}

fn first(catalog: &Catalog, text: &str) -> Option<String> {
    catalog.explain(text).first().map(|e| e.id.clone())
}

#[test]
fn every_error_is_found_by_its_message_a_fragment_the_paste_and_its_codes() {
    let catalog = Catalog::builtin();
    let mut failures = Vec::new();
    let fragment_ids: Vec<&str> = FRAGMENTS.iter().map(|(id, _)| *id).collect();
    let ids: Vec<&str> = catalog.errors.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(fragment_ids, ids, "one fragment per entry, in file order");
    for (error, (_, fragment)) in catalog.errors.iter().zip(FRAGMENTS) {
        let id = Some(error.id.clone());
        let mut texts = vec![
            ("message", error.message.clone()),
            ("fragment", fragment.to_string()),
            ("fragment, upper case", fragment.to_uppercase()),
            ("pasted", as_pasted(&error.message)),
            ("pasted fragment", as_pasted(fragment)),
        ];
        for code in &error.codes {
            texts.push(("code", code.clone()));
            texts.push(("code, upper case", code.to_uppercase().replace("0X", "0x")));
            texts.push((
                "error code line",
                format!("Error code: {code}\nExtended error code: 0x0"),
            ));
            texts.push((
                "code with zeros",
                format!("error 0x{:0>8}", code.trim_start_matches("0x")),
            ));
        }
        for (how, text) in texts {
            let got = first(&catalog, &text);
            if got != id {
                failures.push(format!("{} by {how}: {text:?} -> {got:?}", error.id));
            }
        }
        assert!(
            error.doc.starts_with("https://learn.microsoft.com/"),
            "{}: {}",
            error.id,
            error.doc
        );
        assert!(
            !error.steps.is_empty(),
            "{} names no check or fix",
            error.id
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn steps_of_the_guest_errors_name_the_guest_checks_and_fixes() {
    let catalog = Catalog::builtin();
    let steps = |id: &str| -> Vec<&str> {
        catalog
            .errors
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.steps.iter().map(|s| s.as_str()).collect())
            .unwrap_or_default()
    };
    for (id, expect) in [
        (
            "no-license-server",
            &["guest-licensing", "remove-rdsh-role"][..],
        ),
        (
            "licensing-mode-not-configured",
            &["guest-licensing", "remove-rdsh-role"],
        ),
        (
            "internal-error",
            &[
                "guest-certificate",
                "guest-service",
                "renew-rdp-certificate",
            ],
        ),
        (
            "could-not-connect-0x204",
            &[
                "nsg",
                "network-path",
                "guest-listener",
                "guest-firewall",
                "guest-service",
            ],
        ),
        (
            "certificate-expired",
            &["guest-certificate", "renew-rdp-certificate"],
        ),
    ] {
        let got = steps(id);
        for step in expect {
            assert!(got.contains(step), "{id} lacks {step}: {got:?}");
        }
    }
    // Checks come before fixes in every entry, so a report reads "look, then fix".
    for error in &catalog.errors {
        let first_action = error
            .steps
            .iter()
            .position(|s| matches!(s, StepId::Action(_)));
        let last_check = error
            .steps
            .iter()
            .rposition(|s| matches!(s, StepId::Check(_)));
        if let (Some(action), Some(check)) = (first_action, last_check) {
            assert!(check < action, "{}: {:?}", error.id, error.steps);
        }
    }
}

#[test]
fn ranking_prefers_exact_codes_then_the_longest_match() {
    // The exact code outranks a longer text match of another entry.
    check_explain(
        "An internal error has occurred. Error code: 0x204",
        &["could-not-connect-0x204", "internal-error"],
    );
    // Longest text first; position in the paste only breaks ties.
    check_explain(
        "The logon attempt failed. Remote Desktop Services is currently busy.",
        &["services-busy", "logon-attempt-failed"],
    );
    // A fragment common to several messages: all of them, in file order.
    check_explain(
        "the remote session was disconnected because there are no Remote Desktop",
        &["no-license-server", "no-client-access-licenses"],
    );
    // The dialog's own "no code" lines and an unknown code name nothing.
    check_explain("Error code: 0x0\nExtended error code: 0x0", &[]);
    check_explain("error 0x3000047", &[]);
    // A code the issue names, which Microsoft's articles give no cause of its own.
    check_explain("error 0x3000046", &["connect-failed-0x3000046"]);
    check_explain("code 3000046", &["connect-failed-0x3000046"]);
    // Codes in every spelling people paste.
    for text in [
        "0x204",
        "0X204",
        "0x00000204",
        "Error code: 0x204",
        "error code 204",
        "code: 204",
        "`0x204`",
    ] {
        check_explain(text, &["could-not-connect-0x204"]);
    }
    // A code-looking word that is not a code.
    check_explain("error has occurred", &[]);
    // Three words are not a fragment: too common to name one message.
    check_explain("the remote computer", &[]);
    // The title alone is not an error.
    check_explain("Remote Desktop Connection", &[]);
}

#[test]
fn codes_in_reads_every_spelling() {
    assert_eq!(
        codes_in("Error code: 0x204 Extended error code: 0x0"),
        ["0x204", "0x0"]
    );
    assert_eq!(codes_in("0X00000112F"), ["0x112f"]);
    assert_eq!(codes_in("code 3000046"), ["0x3000046"]);
    assert_eq!(codes_in("error: 0x904, error 904"), ["0x904"]);
    assert!(codes_in("an internal error has occurred").is_empty());
    assert!(codes_in("0xZZ and 0x").is_empty());
}

#[test]
fn normalize_straightens_and_collapses() {
    assert_eq!(
        normalize("  Remote Desktop can\u{2019}t\r\n find\u{00A0}\u{00A0}the `computer` \u{201C}x\u{201D}\u{200B} "),
        "Remote Desktop can't find the 'computer' \"x\""
    );
    assert_eq!(
        words("Can't  CONNECT,\nto: the PC!"),
        "cant connect to the pc"
    );
    assert_eq!(words(""), "");
}

#[test]
fn closest_lists_the_most_alike_messages() {
    let catalog = Catalog::builtin();
    let ids = |text: &str| -> Vec<String> {
        catalog
            .closest(text, 3)
            .iter()
            .map(|e| e.id.clone())
            .collect()
    };
    // Misremembered wording: nothing matches, the intended entry is the closest.
    let text = "an internal erorr occured";
    assert!(catalog.explain(text).is_empty());
    assert_eq!(
        ids(text).first().map(String::as_str),
        Some("internal-error")
    );
    let text = "the certficate is not from a trusted authority";
    assert!(catalog.explain(text).is_empty());
    assert_eq!(
        ids(text).first().map(String::as_str),
        Some("certificate-not-trusted")
    );
    assert_eq!(catalog.closest("", 3).len(), 3);
    assert_eq!(catalog.closest("anything", 0).len(), 0);
}

#[test]
fn codes_are_validated_with_their_position() {
    let cases = [
        (
            "errors:steps = [\"nsg\"]",
            "code = [\"204\"]\nsteps = [\"nsg\"]",
            "commands/rdp-errors.toml:16:8: field `code`: error `two`: code `204` is not hexadecimal like \"0x204\"",
        ),
        (
            "errors:steps = [\"nsg\"]",
            "code = [\"0x2g4\"]\nsteps = [\"nsg\"]",
            "commands/rdp-errors.toml:16:8: field `code`: error `two`: code `0x2g4` is not hexadecimal like \"0x204\"",
        ),
        (
            "errors:steps = [\"nsg\"]",
            "code = [\"0x000\"]\nsteps = [\"nsg\"]",
            "commands/rdp-errors.toml:16:8: field `code`: error `two`: code `0x000` is zero, which the client shows when there is no code",
        ),
        (
            "errors:steps = [\"nsg\"]",
            "code = \"0x204\"\nsteps = [\"nsg\"]",
            "commands/rdp-errors.toml:16:8: field `code`: invalid type: string \"0x204\", expected a sequence",
        ),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(from, to, expect)| check_invalid(from, to, expect))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // A valid code in any case and with leading zeros loads in canonical form.
    let errors = ERRORS.replacen(
        "steps = [\"nsg\"]",
        "code = [\"0X0204\"]\nsteps = [\"nsg\"]",
        1,
    );
    let catalog = Catalog::from_strs(RDP, "rdp.toml", &errors, "rdp-errors.toml").expect("loads");
    assert_eq!(catalog.errors[1].codes, ["0x204"]);
}

/// One catalog for the property tests: compiling it for every case would be most of their time.
fn builtin() -> &'static Catalog {
    static CATALOG: std::sync::LazyLock<Catalog> = std::sync::LazyLock::new(Catalog::builtin);
    &CATALOG
}

proptest::proptest! {
    #[test]
    fn explain_never_panics(text in proptest::prelude::any::<String>()) {
        let catalog = builtin();
        let matches = catalog.explain(&text);
        // Each entry at most once.
        let mut ids: Vec<&str> = matches.iter().map(|e| e.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        proptest::prop_assert_eq!(ids.len(), matches.len());
        proptest::prop_assert!(catalog.closest(&text, 3).len() == 3);
    }

    #[test]
    fn explain_never_panics_on_paste_like_text(
        parts in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::string::string_regex("[a-zA-Z ]{0,12}").expect("regex"),
                proptest::string::string_regex("0[xX][0-9a-fA-F]{0,20}").expect("regex"),
                proptest::string::string_regex("(error|code|Error code:) ?[0-9a-f]{0,12}").expect("regex"),
                proptest::prop_oneof![
                    proptest::strategy::Just("\u{2019}".to_string()),
                    proptest::strategy::Just("\r\n".to_string()),
                    proptest::strategy::Just("\u{200B}".to_string()),
                    proptest::strategy::Just("`".to_string()),
                    proptest::strategy::Just("Remote Desktop Connection".to_string()),
                    proptest::strategy::Just("An internal error has occurred.".to_string()),
                ],
            ],
            0..40,
        )
    ) {
        let catalog = builtin();
        let text = parts.concat();
        let _ = catalog.explain(&text);
        let _ = catalog.closest(&text, 5);
        let _ = codes_in(&normalize(&text));
    }
}

#[test]
fn explain_handles_a_huge_paste_quickly() {
    let catalog = Catalog::builtin();
    let mut text = "x ".repeat(200_000);
    text.push_str("An internal error has occurred.");
    // Past the cut: not read, but no time spent either.
    assert!(catalog.explain(&text).is_empty());
    let text = format!("An internal error has occurred. {}", "é".repeat(100_000));
    assert_eq!(first(&catalog, &text).as_deref(), Some("internal-error"));
}
