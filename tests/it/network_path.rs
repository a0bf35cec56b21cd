//! The way back from the VM (`network-path`): effective routes in every check, Network
//! Watcher's IP flow verify and next hop with `--from`, through the real SDK against the
//! simulator's route tables and watchers, and `check udr-01 --simulate` as the binary.

use crate::gates::{cli_check, simulated_check};
use crate::support;

use rdp_doctor::runbook::{CheckOptions, Verdict};
use rdp_doctor::sim::{SimOptions, World};
use support::{finding, requests_to, within, Harness};

fn from(ip: &str) -> CheckOptions {
    CheckOptions {
        from: Some(ip.parse().expect("an address")),
    }
}

#[tokio::test]
async fn udr_01_sends_the_internets_replies_to_an_appliance_and_the_check_names_the_route() {
    within(async {
        let h = Harness::start(rdp_doctor::sim::demo_world()).await;
        let report = h.check("udr-01").await.expect("report");
        assert_eq!(report.verdict, Verdict::Problems);
        let path = finding(&report, "network-path");
        assert_eq!(path.status.as_str(), "fail", "{}", path.summary);
        assert_eq!(
            path.summary,
            "Replies to clients on the Internet go to the virtual appliance 10.0.254.4: route to-firewall in route table rt-snet-udr sends 0.0.0.0/0 there"
        );
        assert_eq!(path.evidence["route"]["route_table"], "rt-snet-udr");
        assert_eq!(path.evidence["route"]["next_hop_ip"], "10.0.254.4");
        assert_eq!(finding(&report, "nsg").status.as_str(), "pass");
        assert_eq!(report.next_action.map(|a| a.as_str()), Some("remove-route"));
        // Without an address there is no Network Watcher request: the NIC's routes decide.
        assert_eq!(requests_to(&h.sim, "POST", "/ipFlowVerify"), 0);
        assert_eq!(requests_to(&h.sim, "POST", "/effectiveRouteTable"), 1);
        // Every other demo VM's way back is Azure's system route.
        let web = h.check("web-01").await.expect("report");
        let path = finding(&web, "network-path");
        assert_eq!(path.status.as_str(), "pass");
        assert_eq!(
            path.summary,
            "Replies to the Internet go to the Internet (system route 0.0.0.0/0)"
        );
        assert!(h.arm_writes().is_empty(), "{:?}", h.arm_writes());
    })
    .await
}

#[tokio::test]
async fn with_from_azures_verdict_and_rule_stand_beside_ours() {
    within(async {
        let h = Harness::start(World::new().vm("web-01")).await;
        let report = h
            .check_with("web-01", from("203.0.113.9"))
            .await
            .expect("report");
        let path = finding(&report, "network-path");
        assert_eq!(path.status.as_str(), "pass", "{}", path.summary);
        assert_eq!(
            path.summary,
            "Network Watcher: TCP 3389 from 203.0.113.9 is allowed by securityRules/allow-rdp; the reply to 203.0.113.9 goes to the Internet (system route)"
        );
        let flow = &path.evidence["ip_flow_verify"];
        assert_eq!(flow["azure"]["rule"], "securityRules/allow-rdp");
        assert_eq!(flow["ours"]["rule"], "allow-rdp");
        assert_eq!(flow["agree"], true);
        assert_eq!(path.evidence["next_hop"]["next_hop_type"], "Internet");
        assert_eq!(requests_to(&h.sim, "GET", "/networkWatchers"), 1);
        assert_eq!(requests_to(&h.sim, "POST", "/ipFlowVerify"), 1);
        assert_eq!(requests_to(&h.sim, "POST", "/nextHop"), 1);
        // Azure's own verdict on a denied flow names its default rule as ours does.
        let h = Harness::start(World::new().vm("web-02").nsg_denies_rdp()).await;
        let report = h
            .check_with("web-02", from("203.0.113.9"))
            .await
            .expect("report");
        let path = finding(&report, "network-path");
        assert_eq!(path.status.as_str(), "fail", "{}", path.summary);
        assert_eq!(
            path.evidence["ip_flow_verify"]["azure"]["rule"],
            "securityRules/deny-rdp-internet"
        );
        assert_eq!(path.evidence["ip_flow_verify"]["agree"], true);
        assert!(h.arm_writes().is_empty(), "{:?}", h.arm_writes());
    })
    .await
}

#[tokio::test]
async fn a_security_admin_rule_is_weighed_as_network_watcher_weighs_it() {
    within(async {
        // Virtual Network Manager's admin rule denies RDP from the Internet before any NSG;
        // the NIC's effective security rules do not list it, the virtual network's effective
        // admin rules do, and Network Watcher counts it: both verdicts name it.
        let world = World::new().vm("web-01").admin_rule(
            "deny-rdp-from-internet",
            "Deny",
            "Internet",
            "3389",
        );
        let h = Harness::start(world).await;
        let report = h
            .check_with("web-01", from("203.0.113.9"))
            .await
            .expect("report");
        let nsg = finding(&report, "nsg");
        assert_eq!(nsg.status.as_str(), "fail", "{}", nsg.summary);
        assert_eq!(nsg.evidence["admin_rule"]["name"], "deny-rdp-from-internet");
        let path = finding(&report, "network-path");
        assert_eq!(path.status.as_str(), "fail", "{}", path.summary);
        assert_eq!(
            path.evidence["ip_flow_verify"]["azure"]["rule"],
            "deny-rdp-from-internet"
        );
        assert_eq!(path.evidence["ip_flow_verify"]["agree"], true);
        // From inside the virtual network the admin rule does not apply: the NSG allows it.
        let inside = h
            .check_with("web-01", from("10.0.7.7"))
            .await
            .expect("report");
        assert_eq!(finding(&inside, "nsg").status.as_str(), "pass");
        let path = finding(&inside, "network-path");
        assert_eq!(
            path.evidence["ip_flow_verify"]["agree"], true,
            "{}",
            path.summary
        );
    })
    .await
}

/// A route table's name is unique only within its resource group (Microsoft Learn, "Naming
/// rules and restrictions for Azure resources": `routeTables`, scope "resource group"). Two VMs
/// web-01 in rg-a and rg-b of one subscription each have a route table `web-01-rt`; only rg-b's
/// sends the Internet to an appliance, and only rg-b's web-01 is told so, from its own table.
#[tokio::test]
async fn same_named_route_tables_in_two_resource_groups_are_each_their_subnets_own() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .in_group("rg-a")
            .route("office", "203.0.113.0/24", "Internet", None)
            .vm("web-01")
            .in_group("rg-b")
            .route(
                "all-via-firewall",
                "0.0.0.0/0",
                "VirtualAppliance",
                Some("10.0.254.4"),
            );
        let h = Harness::start(world).await;
        let a = h.check("rg-a/web-01").await.expect("report");
        let path = finding(&a, "network-path");
        assert_eq!(path.status.as_str(), "pass", "{}", path.summary);
        let b = h.check("rg-b/web-01").await.expect("report");
        let path = finding(&b, "network-path");
        assert_eq!(path.status.as_str(), "fail", "{}", path.summary);
        assert!(
            path.summary.contains("route all-via-firewall"),
            "{}",
            path.summary
        );
        assert!(
            path.evidence["route"]["route_table_id"]
                .as_str()
                .is_some_and(|id| id.to_ascii_lowercase().contains("/resourcegroups/rg-b/")),
            "{}",
            path.evidence
        );
    })
    .await
}

#[tokio::test]
async fn next_hop_to_an_appliance_names_the_route_table_and_route_by_longest_prefix() {
    within(async {
        // Only the office's range goes to the appliance: the Internet at large is fine.
        let world = World::new().vm("web-01").route(
            "office-via-firewall",
            "203.0.113.0/24",
            "VirtualAppliance",
            Some("10.0.254.5"),
        );
        let h = Harness::start(world).await;
        let plain = h.check("web-01").await.expect("report");
        assert_eq!(finding(&plain, "network-path").status.as_str(), "pass");
        let office = h
            .check_with("web-01", from("203.0.113.9"))
            .await
            .expect("report");
        let path = finding(&office, "network-path");
        assert_eq!(path.status.as_str(), "fail", "{}", path.summary);
        assert_eq!(
            path.summary,
            "The reply to 203.0.113.9 goes to the virtual appliance 10.0.254.5: route office-via-firewall (203.0.113.0/24) in route table web-01-rt"
        );
        assert!(
            path.evidence["next_hop"]["route_table_id"]
                .as_str()
                .is_some_and(|id| id.ends_with("/routeTables/web-01-rt")),
            "{}",
            path.evidence
        );
        assert_eq!(requests_to(&h.sim, "GET", "/routeTables/web-01-rt"), 1);
        let home = h
            .check_with("web-01", from("198.51.100.7"))
            .await
            .expect("report");
        let path = finding(&home, "network-path");
        assert_eq!(path.status.as_str(), "pass", "{}", path.summary);
        assert_eq!(path.evidence["next_hop"]["route_table_id"], serde_json::Value::Null);
    })
    .await
}

#[tokio::test]
async fn a_region_without_network_watcher_is_skipped_with_the_reason() {
    within(async {
        let h = Harness::start(World::new().vm("web-01").without_network_watcher()).await;
        let report = h
            .check_with("web-01", from("203.0.113.9"))
            .await
            .expect("report");
        let path = finding(&report, "network-path");
        assert_eq!(path.status.as_str(), "skip");
        assert_eq!(
            path.summary,
            "Network Watcher is not enabled in region westeurope: IP flow verify and next hop for 203.0.113.9 were not run"
        );
        assert_eq!(report.verdict, Verdict::Ok, "a skip blocks nothing");
        assert_eq!(requests_to(&h.sim, "GET", "/networkWatchers"), 1);
        assert_eq!(requests_to(&h.sim, "POST", "/ipFlowVerify"), 0);
        assert_eq!(requests_to(&h.sim, "POST", "/nextHop"), 0);
    })
    .await
}

#[tokio::test]
async fn an_identity_without_network_watcher_rights_gets_azures_refusal_in_the_finding() {
    within(async {
        // Reader reads everything but may not run Network Watcher's actions (Microsoft Learn,
        // "Azure built-in roles": Network Contributor may).
        let world = World::new()
            .vm("web-01")
            .principal(support::CLIENT, "reader-secret")
            .role_at(
                "Virtual Machine Contributor",
                "/subscriptions/11111111-1111-1111-1111-111111111111",
            )
            .role_at(
                "Reader",
                "/subscriptions/11111111-1111-1111-1111-111111111111",
            );
        let h = Harness::with_secret(world, SimOptions::fast(), "reader-secret").await;
        let plain = h.check("web-01").await.expect("report");
        assert_eq!(finding(&plain, "network-path").status.as_str(), "pass");
        let report = h
            .check_with("web-01", from("203.0.113.9"))
            .await
            .expect("report");
        let path = finding(&report, "network-path");
        assert_eq!(path.status.as_str(), "error", "{}", path.summary);
        assert!(
            path.summary
                .contains("Microsoft.Network/networkWatchers/ipFlowVerify/action")
                || path
                    .summary
                    .contains("Microsoft.Network/networkWatchers/nextHop/action"),
            "{}",
            path.summary
        );
    })
    .await
}

#[tokio::test]
async fn check_udr_01_simulate_finds_the_route_in_text_and_json() {
    within(async {
        let text = simulated_check("udr-01", 1).await;
        assert!(
            text.contains("  FAIL  The reply finds its way back to you\n        Replies to clients on the Internet go to the virtual appliance 10.0.254.4: route to-firewall in route table rt-snet-udr sends 0.0.0.0/0 there"),
            "{text}"
        );
        assert!(text.contains("Remove the route"), "the next step: {text}");
        let out = tokio::task::spawn_blocking(|| {
            cli_check(&["check", "udr-01", "--simulate", "--json", "--from", "203.0.113.9"])
        })
        .await
        .expect("joined");
        assert_eq!(out.status.code(), Some(1));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let path = v["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .find(|f| f["step"] == "network-path")
            .expect("the network-path finding");
        assert_eq!(path["status"], "fail");
        assert_eq!(path["evidence"]["from"], "203.0.113.9");
        assert_eq!(path["evidence"]["route"]["route"], "to-firewall");
        assert_eq!(path["evidence"]["ip_flow_verify"]["azure"]["rule"], "securityRules/allow-rdp");
        assert_eq!(v["next_action"], "remove-route");
    })
    .await
}

#[tokio::test]
async fn with_from_the_watcher_is_looked_up_beside_the_vm_read() {
    within(async {
        // 50 ms per request: what starts before the VM read has answered did not wait for it.
        let h = Harness::with_options(
            World::new().vm("web-01"),
            support::slowed(std::time::Duration::from_millis(50)),
        )
        .await;
        let report = h
            .check_with("web-01", from("203.0.113.9"))
            .await
            .expect("report");
        assert_eq!(finding(&report, "network-path").status.as_str(), "pass");
        let log = h.sim.stats().log;
        let path = |e: &&rdp_doctor::sim::RequestLogEntry| {
            e.path.split('?').next().unwrap_or("").to_owned()
        };
        let vm_read = log
            .iter()
            .find(|e| e.method == "GET" && path(e).ends_with("/virtualMachines/web-01"))
            .expect("the VM read");
        let watchers = log
            .iter()
            .find(|e| e.method == "GET" && path(e).ends_with("/networkWatchers"))
            .expect("the watcher list");
        assert!(
            watchers.started_us < vm_read.finished_us,
            "the watcher list waited for the VM read: {} >= {}",
            watchers.started_us,
            vm_read.finished_us
        );
    })
    .await
}
