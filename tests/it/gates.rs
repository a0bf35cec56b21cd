//! The gates enterprises put in front of 3389 (issue 15): Azure Virtual Network Manager's
//! security admin rules weighed before the NSGs, through the real SDK against the simulator's
//! `listNetworkManagerEffectiveSecurityAdminRules`; the demo world's `avnm-01` as the binary.

use crate::support;

use rdp_doctor::runbook::sweep::{self, SweepOptions};
use rdp_doctor::runbook::Verdict;
use rdp_doctor::sim::World;
use support::{finding, requests_to, within, Harness};
use tokio_util::sync::CancellationToken;

const ADMIN_RULES: &str = "/listNetworkManagerEffectiveSecurityAdminRules";

#[tokio::test]
async fn avnm_01_is_denied_by_an_admin_rule_that_beats_the_nsgs_allow_and_no_nsg_change_is_offered()
{
    within(async {
        let h = Harness::start(rdp_doctor::sim::demo_world()).await;
        let report = h.check("avnm-01").await.expect("report");
        assert_eq!(report.verdict, Verdict::Problems);
        let nsg = finding(&report, "nsg");
        assert_eq!(nsg.status.as_str(), "fail");
        assert_eq!(
            nsg.summary,
            "TCP 3389 from the Internet is denied by security admin rule deny-rdp-inbound (priority 10) in rule collection management-ports of configuration corp-security of Virtual Network Manager avnm-corp"
        );
        let admin = &nsg.evidence["admin_rule"];
        assert_eq!(admin["network_manager"], "avnm-corp");
        assert_eq!(admin["configuration"], "corp-security");
        assert_eq!(admin["rule_collection"], "management-ports");
        assert_eq!(admin["access"], "Deny");
        assert_eq!(nsg.evidence["allowed"], false);
        assert!(
            nsg.details
                .iter()
                .any(|d| d == "The NSGs alone would allow it (rule allow-rdp in NSG nsg-rdp)."),
            "{:?}",
            nsg.details
        );
        // The fix is the network team's: no NSG change is suggested or recommended.
        assert_eq!(nsg.suggests, None);
        assert_eq!(report.next_action, None);
        assert!(nsg
            .next_step
            .as_deref()
            .is_some_and(|n| n.contains("network team") && n.contains("avnm-corp")));
        assert_eq!(requests_to(&h.sim, "POST", ADMIN_RULES), 1);
        // A VM on a virtual network no network manager covers: the list is empty, the NSGs decide.
        let web = h.check("web-01").await.expect("report");
        assert_eq!(finding(&web, "nsg").status.as_str(), "pass");
        assert!(finding(&web, "nsg").evidence.get("admin_rule").is_none());
        assert!(h.arm_writes().is_empty(), "{:?}", h.arm_writes());
    })
    .await
}

#[tokio::test]
async fn always_allow_beats_an_nsg_deny_and_allow_hands_the_decision_to_the_nsgs() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .nsg_denies_rdp()
            .admin_rule("always-rdp", "AlwaysAllow", "*", "3389")
            .vm("web-02")
            .in_vnet("vnet-two")
            .nsg_denies_rdp()
            .admin_rule("allow-rdp", "Allow", "*", "3389");
        let h = Harness::start(world).await;
        let always = h.check("web-01").await.expect("report");
        let nsg = finding(&always, "nsg");
        assert_eq!(nsg.status.as_str(), "pass", "{}", nsg.summary);
        assert!(nsg.summary.contains("always-rdp"), "{}", nsg.summary);
        assert!(nsg
            .summary
            .ends_with("(AlwaysAllow), whatever the NSGs say"));
        assert!(
            nsg.details
                .iter()
                .any(|d| d.contains("would deny it (deny-rdp-internet)")),
            "{:?}",
            nsg.details
        );
        assert_eq!(always.next_action, None);

        let allow = h.check("web-02").await.expect("report");
        let nsg = finding(&allow, "nsg");
        assert_eq!(nsg.status.as_str(), "fail", "{}", nsg.summary);
        assert!(nsg.summary.contains("deny-rdp-internet"), "{}", nsg.summary);
        assert!(nsg.evidence.get("admin_rule").is_none());
        assert!(
            nsg.details
                .iter()
                .any(|d| d.contains("allow-rdp") && d.contains("leaves the decision to the NSGs")),
            "{:?}",
            nsg.details
        );
        // An NSG decided it: the NSG fix is the right one.
        assert_eq!(allow.next_action.map(|a| a.as_str()), Some("open-rdp-port"));
    })
    .await
}

#[tokio::test]
async fn admin_rules_go_by_priority_and_a_deny_beats_the_nsgs_allow() {
    within(async {
        let mut world = World::new()
            .vm("web-01")
            .admin_rule("deny-all-rdp", "Deny", "*", "3389")
            .admin_rule("office-always", "AlwaysAllow", "203.0.113.0/24", "3389");
        // The office's AlwaysAllow comes first (priority 50 before the deny's 100).
        world.admin_rules[1].priority = 50;
        let h = Harness::start(world).await;
        let internet = h.check("web-01").await.expect("report");
        let nsg = finding(&internet, "nsg");
        assert_eq!(nsg.status.as_str(), "fail", "{}", nsg.summary);
        assert_eq!(nsg.evidence["admin_rule"]["name"], "deny-all-rdp");
        let office = h
            .check_with(
                "web-01",
                rdp_doctor::runbook::CheckOptions {
                    from: Some("203.0.113.9".parse().expect("address")),
                },
            )
            .await
            .expect("report");
        let nsg = finding(&office, "nsg");
        assert_eq!(nsg.status.as_str(), "pass", "{}", nsg.summary);
        assert_eq!(nsg.evidence["admin_rule"]["name"], "office-always");
        // Network Watcher agrees on both.
        assert_eq!(
            finding(&office, "network-path").evidence["ip_flow_verify"]["agree"],
            true
        );
    })
    .await
}

#[tokio::test]
async fn a_sweep_reads_each_virtual_networks_admin_rules_once() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .admin_rule("deny-rdp", "Deny", "*", "3389")
            .vm("web-02")
            .vm("web-03");
        let h = Harness::start(world).await;
        let report = sweep_rg_web(&h).await;
        assert_eq!(report.count(Verdict::Problems), 3);
        for row in &report.vms {
            let deciding = row.deciding.as_ref().expect("a deciding finding");
            assert!(
                deciding.summary.contains("deny-rdp"),
                "{}",
                deciding.summary
            );
            assert_eq!(row.next_action, None);
        }
        assert_eq!(requests_to(&h.sim, "POST", ADMIN_RULES), 1);
    })
    .await
}

/// A sweep of the world's resource group `rg-web` with the default options.
pub(crate) async fn sweep_rg_web(h: &Harness) -> sweep::SweepReport {
    let scope = rdp_doctor::azure::SweepScope {
        subscription_id: rdp_doctor::sim::DEFAULT_SUBSCRIPTION.to_string(),
        resource_group: Some("rg-web".to_string()),
    };
    sweep::sweep(
        &h.arm,
        &h.catalog,
        &scope,
        &SweepOptions::default(),
        &CancellationToken::new(),
        &|_| {},
    )
    .await
    .expect("sweep")
}

pub(crate) fn cli_check(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rdp-doctor"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .output()
        .expect("the binary runs")
}

/// `rdp-doctor check VM --simulate` as a person runs it: its report, once it has exited with
/// `exit` (0 nothing found, 1 problems).
pub(crate) async fn simulated_check(vm: &'static str, exit: i32) -> String {
    let out = tokio::task::spawn_blocking(move || cli_check(&["check", vm, "--simulate"]))
        .await
        .expect("joined");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(exit),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The report's verdict, the gate's finding (the `nsg` and `public-ip` lines and their details)
/// and its next step, as a person reads them.
pub(crate) fn gate_part(text: &str) -> String {
    let mut shown = Vec::new();
    let mut keep = false;
    for line in text.lines() {
        if line.starts_with("Verdict:") {
            shown.push(line.to_owned());
            continue;
        }
        let finding_title = ["PASS", "WARN", "FAIL", "SKIP", "ERROR"]
            .iter()
            .any(|s| line.trim_start().starts_with(s) && line.starts_with("  "));
        if finding_title {
            keep = line.contains("Network security group") || line.contains("public IP");
        }
        if line.starts_with("Next step:") {
            keep = true;
        }
        if line.contains("ARM requests,") || line.starts_with("Serial log") {
            keep = false;
        }
        if keep {
            shown.push(line.to_owned());
        }
    }
    shown.join("\n")
}

#[tokio::test]
async fn check_avnm_01_simulate_names_the_admin_rule_and_the_network_team() {
    within(async {
        let text = simulated_check("avnm-01", 1).await;
        insta::assert_snapshot!(gate_part(&text), @r"
        Verdict: PROBLEMS FOUND
          PASS  VM has a public IP (or a private path)
                Public IP 20.1.2.90 (static, Standard SKU, avnm-01-ip)
          FAIL  Network security group allows TCP 3389
                TCP 3389 from the Internet is denied by security admin rule deny-rdp-inbound (priority 10) in rule collection management-ports of configuration corp-security of Virtual Network Manager avnm-corp
                Security admin rules are evaluated before network security groups: no NSG rule can open this port; the fix belongs to the network team.
                The NSGs alone would allow it (rule allow-rdp in NSG nsg-rdp).
        Next step: Security admin rule deny-rdp-inbound of Virtual Network Manager avnm-corp (configuration corp-security, rule collection management-ports) denies TCP 3389 before any NSG is consulted: no NSG change can open it. Ask the network team that manages avnm-corp to change the rule or exempt this virtual network; rdp-doctor offers no fix for it.
          https://learn.microsoft.com/en-us/troubleshoot/azure/virtual-machines/windows/troubleshoot-rdp-nsg-problem
        ");
        assert!(!text.contains("open-rdp-port"), "{text}");
    })
    .await
}

const JIT_LIST: &str = "/providers/Microsoft.Security/jitNetworkAccessPolicies";

#[tokio::test]
async fn jit_01_is_closed_by_just_in_time_access_and_request_jit_is_the_fix_never_open_rdp_port() {
    within(async {
        let h = Harness::start(rdp_doctor::sim::demo_world()).await;
        let report = h.check("jit-01").await.expect("report");
        let nsg = finding(&report, "nsg");
        assert_eq!(nsg.status.as_str(), "fail");
        assert!(
            nsg.summary.starts_with(
                "TCP 3389 from the Internet is closed by just-in-time access (Defender for Cloud policy default, rule SecurityCenter-JITRule_"
            ),
            "{}",
            nsg.summary
        );
        assert_eq!(nsg.suggests.map(|a| a.as_str()), Some("request-jit"));
        assert_eq!(report.next_action.map(|a| a.as_str()), Some("request-jit"));
        let jit = &nsg.evidence["jit"];
        assert_eq!(jit["name"], "default");
        assert_eq!(jit["ports"][0]["number"], 3389);
        assert_eq!(jit["ports"][0]["max_hours"], 3);
        assert_eq!(jit["requests"].as_array().map(Vec::len), Some(0));
        assert_eq!(requests_to(&h.sim, "GET", JIT_LIST), 1);
        // No Defender rule in a VM's NSGs: no JIT read.
        let web = h.check("web-02").await.expect("report");
        assert_eq!(web.next_action.map(|a| a.as_str()), Some("open-rdp-port"));
        assert_eq!(requests_to(&h.sim, "GET", JIT_LIST), 1);
        assert!(h.arm_writes().is_empty(), "{:?}", h.arm_writes());
    })
    .await
}

#[tokio::test]
async fn request_jit_is_refused_outside_the_policy_and_for_a_vm_it_does_not_protect() {
    within(async {
        let h = Harness::start(
            World::new()
                .vm("jit-01")
                .jit_protected()
                .vm("web-02")
                .nsg_denies_rdp(),
        )
        .await;
        let policy = support::policy(Some(
            "[[grant]]\ncli_user = \"alice\"\nlevel = \"operate\"\nscope = \"*\"\n",
        ));
        let operator = h.operator(h.arm.clone(), policy, support::store(None).await);
        let alice = rdp_doctor::policy::Actor::terminal("alice");
        let ask = |vm: &'static str, hours: Option<u32>| {
            let (operator, alice, h) = (&operator, &alice, &h);
            async move {
                let query = rdp_doctor::azure::VmQuery::parse(vm).expect("valid");
                let vm = h
                    .arm
                    .resolve(&query, &h.subscriptions)
                    .await
                    .expect("found")
                    .vm;
                operator
                    .request(
                        alice,
                        None,
                        &vm,
                        rdp_doctor::runbook::fix::FixRequest::RequestJit {
                            source: "203.0.113.9".parse().expect("address"),
                            hours,
                        },
                    )
                    .await
            }
        };
        let too_long = ask("jit-01", Some(4))
            .await
            .expect_err("over the policy's 3 hours");
        assert!(
            too_long
                .to_string()
                .contains("allows requests of 1 to 3 hours; 4 is outside that"),
            "{too_long}"
        );
        let unprotected = ask("web-02", None).await.expect_err("no policy");
        assert!(
            unprotected
                .to_string()
                .contains("web-02 is not protected by just-in-time access"),
            "{unprotected}"
        );
        assert!(h.arm_writes().is_empty(), "{:?}", h.arm_writes());
    })
    .await
}

#[tokio::test]
async fn check_jit_01_simulate_says_closed_by_jit_and_how_to_request_it() {
    within(async {
        let text = simulated_check("jit-01", 1).await;
        let rule = regex::Regex::new(r"SecurityCenter-JITRule_-?\d+_[0-9A-F]+").expect("regex");
        let shown = rule.replace_all(&gate_part(&text), "SecurityCenter-JITRule_<n>_<hash>").into_owned();
        insta::assert_snapshot!(shown, @r"
        Verdict: PROBLEMS FOUND
          PASS  VM has a public IP (or a private path)
                Public IP 20.1.2.91 (static, Standard SKU, jit-01-ip)
          FAIL  Network security group allows TCP 3389
                TCP 3389 from the Internet is closed by just-in-time access (Defender for Cloud policy default, rule SecurityCenter-JITRule_<n>_<hash>)
                Just-in-time policy default allows requests for TCP 3389 from any address a request names, for at most 3 hours.
                No request is active.
                This is the security team's design: request access for your address instead of opening the NSG.
        Next step: Request just-in-time access to TCP 3389 (request-jit)
          Asks Defender for Cloud's just-in-time access to open TCP 3389 for your address, within the policy's maximum duration; Defender closes it again when the time is up.
          https://learn.microsoft.com/en-us/azure/defender-for-cloud/just-in-time-access-usage
          Run it: rdp-doctor request-jit jit-01 --from YOUR.IP.ADDRESS [--hours N]
          After each step, try to connect again.
        ");
    })
    .await
}

#[tokio::test]
async fn a_sweep_reports_jit_closed_vms_as_their_own_verdict_not_as_problems() {
    within(async {
        let world = World::new()
            .vm("jit-01")
            .jit_protected()
            .vm("jit-02")
            .jit_protected()
            .vm("web-01")
            .vm("web-02")
            .nsg_denies_rdp();
        let h = Harness::start(world).await;
        let report = sweep_rg_web(&h).await;
        let rows: Vec<(&str, &str)> = report
            .vms
            .iter()
            .map(|r| (r.vm.name.as_str(), r.verdict.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                ("web-02", "problems"),
                ("jit-01", "closed-by-jit"),
                ("jit-02", "closed-by-jit"),
                ("web-01", "ok"),
            ]
        );
        assert_eq!(report.count(Verdict::Problems), 1);
        assert_eq!(report.count(Verdict::ClosedByJit), 2);
        let jit = &report.vms[1];
        assert_eq!(jit.next_action.map(|a| a.as_str()), Some("request-jit"));
        assert!(jit
            .deciding
            .as_ref()
            .is_some_and(|f| f.summary.contains("closed by just-in-time access")));
        assert!(h.arm_writes().is_empty(), "{:?}", h.arm_writes());
    })
    .await
}
