//! The runbook end to end: the real SDK clients and credential flow over HTTP against the
//! simulator. At least one test per status of every check, VM resolution, and the Azure failures
//! a person must understand.

use crate::support;

/// Signing in for weeks: our token credentials against the simulator's Entra ID.
mod credentials;
/// Run Command and the simulator's guest through `Arm::run_command`.
mod guest;
/// The guest checks through the door: each failure, skips, one at a time, timeouts.
mod guest_check;
/// Tracing spans from the person's command to Azure's request id.
mod spans;
/// One sweep per scope across replicas sharing a database, through the door.
mod sweep_claims;

use rdp_doctor::azure::{Arm, ArmError, ResolveError, SweepScope, VmDirectory, VmQuery};
use rdp_doctor::runbook::sweep::{self, SweepEvent, SweepOptions, SweepReport};
use rdp_doctor::runbook::{CheckError, CheckOptions, Verdict};
use rdp_doctor::sim::{BucketOptions, Fault, FaultKind, ListedInstanceView, SimOptions, World};
use std::sync::Arc;
use std::time::Duration;
use support::{finding, status_of, within, Harness};
use tokio_util::sync::CancellationToken;

fn assert_status(report: &rdp_doctor::runbook::Report, step: &str, status: &str, text: &str) {
    let (s, summary) = status_of(report, step);
    assert_eq!(s, status, "{step}: {summary}");
    assert!(
        summary.contains(text),
        "{step} summary {summary:?} should contain {text:?}"
    );
}

fn next_action(report: &rdp_doctor::runbook::Report) -> Option<&'static str> {
    report.next_action.map(|a| a.as_str())
}

// ---- a healthy VM ------------------------------------------------------------------------

#[tokio::test]
async fn healthy_vm_passes_every_check() {
    within(async {
        let h = Harness::start(World::new().vm("web-01")).await;
        let report = h.check("web-01").await.expect("report");
        assert_eq!(report.verdict, Verdict::Ok, "{:#?}", report.findings);
        for f in &report.findings {
            assert_eq!(f.status.as_str(), "pass", "{f:?}");
        }
        assert_eq!(report.findings.len(), 7);
        assert_eq!(next_action(&report), None);
        let nsg = &finding(&report, "nsg").evidence;
        assert_eq!(nsg["allowed"], true);
        assert_eq!(nsg["rule"], "allow-rdp");
        assert_eq!(nsg["priority"], 1000);
        assert_eq!(nsg["source"], "Internet");
        let png = report.screenshot_png.as_ref().expect("screenshot");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(!report.serial_tail.is_empty() && report.serial_tail.len() <= 40);
        assert!(report.stats.arm_requests >= 6, "{:?}", report.stats);
        assert_eq!(report.stats.arm_requests, h.sim.stats().requests);
        assert!(
            h.arm_writes().is_empty(),
            "a check never writes: {:?}",
            h.arm_writes()
        );
    })
    .await
}

// ---- vm-status ---------------------------------------------------------------------------

#[tokio::test]
async fn stopped_and_deallocated_vms_fail_with_start_as_next_step() {
    within(async {
        let h = Harness::start(
            World::new()
                .vm("app-01")
                .stopped()
                .vm("app-02")
                .deallocated(),
        )
        .await;
        for (vm, state) in [("app-01", "stopped"), ("app-02", "deallocated")] {
            let report = h.check(vm).await.expect("report");
            assert_eq!(report.verdict, Verdict::Problems);
            assert_status(&report, "vm-status", "fail", state);
            assert_status(&report, "vm-agent", "skip", "not running");
            assert_status(&report, "nsg", "skip", "only for running VMs");
            assert_eq!(next_action(&report), Some("start"));
        }
    })
    .await
}

#[tokio::test]
async fn transitional_and_failed_provisioning_states() {
    within(async {
        let h = Harness::start(
            World::new()
                .vm("busy-01")
                .power_state(rdp_doctor::sim::PowerState::Starting)
                .vm("broken-01")
                .provisioning_state("failed/InternalOperationError"),
        )
        .await;
        let busy = h.check("busy-01").await.expect("report");
        assert_status(&busy, "vm-status", "warn", "starting");
        let broken = h.check("broken-01").await.expect("report");
        assert_status(&broken, "vm-status", "fail", "InternalOperationError");
        assert_eq!(next_action(&broken), Some("redeploy"));
    })
    .await
}

// ---- vm-agent ----------------------------------------------------------------------------

#[tokio::test]
async fn agent_not_ready_and_missing_fail_and_block_the_vmaccess_fixes() {
    within(async {
        let h = Harness::start(
            World::new()
                .vm("sql-01")
                .agent_not_ready("VM Agent is unresponsive.")
                .vm("sql-02")
                .agent_missing(),
        )
        .await;
        let report = h.check("sql-01").await.expect("report");
        assert_status(&report, "vm-agent", "fail", "VM Agent is unresponsive.");
        let agent = finding(&report, "vm-agent");
        assert!(agent.details.iter().any(|d| d.contains("Serial Console")));
        // The ladder skips reset-rdp-config / reset-password without a Ready agent.
        assert_eq!(next_action(&report), Some("restart"));
        let missing = h.check("sql-02").await.expect("report");
        assert_status(&missing, "vm-agent", "fail", "has not reported");
    })
    .await
}

// ---- public-ip ---------------------------------------------------------------------------

#[tokio::test]
async fn public_ip_missing_or_dynamic_without_address_warns() {
    within(async {
        let h = Harness::start(
            World::new()
                .vm("batch-01")
                .no_public_ip()
                .vm("app-02")
                .dynamic_public_ip_without_address(),
        )
        .await;
        let none = h.check("batch-01").await.expect("report");
        assert_status(&none, "public-ip", "warn", "No public IP");
        assert!(finding(&none, "public-ip")
            .details
            .iter()
            .any(|d| d.contains("Bastion")));
        assert_eq!(
            none.verdict,
            Verdict::Ok,
            "a warning alone is not a failure"
        );
        let dynamic = h.check("app-02").await.expect("report");
        assert_status(&dynamic, "public-ip", "warn", "dynamic");
        let ok = Harness::start(World::new().vm("web-01")).await;
        let report = ok.check("web-01").await.expect("report");
        assert_status(&report, "public-ip", "pass", "static");
    })
    .await
}

// ---- nsg ---------------------------------------------------------------------------------

#[tokio::test]
async fn subnet_nsg_deny_fails_naming_the_rule() {
    within(async {
        let h = Harness::start(World::new().vm("web-02").nsg_denies_rdp()).await;
        let report = h.check("web-02").await.expect("report");
        assert_eq!(report.verdict, Verdict::Problems);
        let nsg = finding(&report, "nsg");
        assert_eq!(nsg.status.as_str(), "fail", "{nsg:?}");
        assert_eq!(nsg.evidence["allowed"], false);
        assert_eq!(nsg.evidence["priority"], 200);
        let rule = nsg.evidence["rule"].as_str().unwrap();
        let group = nsg.evidence["nsg"].as_str().unwrap();
        assert!(nsg.summary.contains(rule) && nsg.summary.contains(group));
        assert_eq!(next_action(&report), Some("open-rdp-port"));
    })
    .await
}

#[tokio::test]
async fn nic_nsg_deny_fails() {
    within(async {
        let h = Harness::start(World::new().vm("web-03").nic_nsg_denies_rdp()).await;
        let report = h.check("web-03").await.expect("report");
        assert_status(&report, "nsg", "fail", "denied");
    })
    .await
}

#[tokio::test]
async fn office_only_rule_warns_for_the_internet_and_decides_for_an_address() {
    within(async {
        let h = Harness::start(World::new().vm("jump-01").office_only_rdp("203.0.113.0/24")).await;
        let anyone = h.check("jump-01").await.expect("report");
        assert_status(&anyone, "nsg", "warn", "203.0.113.0/24");
        let inside = h
            .check_with(
                "jump-01",
                CheckOptions {
                    from: Some("203.0.113.7".parse().unwrap()),
                },
            )
            .await
            .expect("report");
        assert_status(&inside, "nsg", "pass", "from 203.0.113.7 is allowed");
        assert_eq!(finding(&inside, "nsg").evidence["source"], "203.0.113.7");
        let outside = h
            .check_with(
                "jump-01",
                CheckOptions {
                    from: Some("198.51.100.1".parse().unwrap()),
                },
            )
            .await
            .expect("report");
        assert_status(&outside, "nsg", "fail", "from 198.51.100.1 is denied");
    })
    .await
}

#[tokio::test]
async fn no_nsg_means_nothing_filters_3389() {
    within(async {
        let h = Harness::start(World::new().vm("open-01").no_nsg()).await;
        let report = h.check("open-01").await.expect("report");
        assert_status(&report, "nsg", "pass", "No network security group");
        assert_eq!(
            finding(&report, "nsg").evidence["rule"],
            serde_json::Value::Null
        );
    })
    .await
}

#[tokio::test]
async fn effective_nsg_polls_until_done() {
    within(async {
        let options = support::polled(3);
        let h = Harness::with_options(World::new().vm("web-01"), options).await;
        let report = h.check("web-01").await.expect("report");
        assert_status(&report, "nsg", "pass", "allow-rdp");
        let polls = h
            .sim
            .stats()
            .log
            .iter()
            .filter(|e| e.method == "GET" && e.path.contains("operationResults"))
            .count();
        // The effective routes, ready at once, are polled once beside them.
        assert_eq!(polls, 5, "three 202s, then the 200 with the result");
    })
    .await
}

/// Azure computes effective security rules for seconds and sends no `Retry-After` (Azure CLI's
/// recording of `list-effective-nsg`): the check waits it out at its own poll interval, with
/// no busy loop, and the finding is the same.
#[tokio::test]
async fn a_check_waits_out_azures_seconds_for_effective_rules_at_its_own_poll_interval() {
    within(async {
        let options = SimOptions {
            effective_nsg_time: Duration::from_millis(1200),
            lro_polls: 0,
            ..SimOptions::default()
        };
        let mut h = Harness::with_options(World::new().vm("web-01"), options).await;
        h.arm = h.arm_with(|s| s.poll_interval = Duration::from_millis(300));
        let started = std::time::Instant::now();
        let report = h.check("web-01").await.expect("report");
        assert_status(&report, "nsg", "pass", "allow-rdp");
        assert!(
            started.elapsed() >= Duration::from_millis(1200),
            "{:?}",
            started.elapsed()
        );
        let polls = h
            .sim
            .stats()
            .log
            .iter()
            .filter(|e| e.method == "GET" && e.path.contains("operationResults"))
            .count();
        // The effective routes take as long and are polled as often, side by side.
        assert!(
            (8..=12).contains(&polls),
            "{polls} polls: one every 300 ms until 1.2 s, for each of the two"
        );
    })
    .await
}

#[tokio::test]
async fn effective_nsg_failure_is_an_error_finding_and_the_rest_goes_on() {
    within(async {
        let options = support::failing(vec![Fault::new(
            "effectiveNetworkSecurityGroups",
            FaultKind::Status(400),
        )]);
        let h = Harness::with_options(World::new().vm("web-01"), options).await;
        let report = h.check("web-01").await.expect("report");
        assert_status(&report, "nsg", "error", "HTTP 400");
        assert_eq!(report.verdict, Verdict::Unknown);
        assert_status(&report, "resource-health", "pass", "Available");
    })
    .await
}

// ---- resource-health ---------------------------------------------------------------------

#[tokio::test]
async fn resource_health_states() {
    within(async {
        let h = Harness::start(
            World::new()
                .vm("db-01")
                .health(
                    "Unavailable",
                    "We're sorry, we couldn't automatically recover your virtual machine",
                )
                .vm("db-02")
                .health("Degraded", "Your virtual machine is degraded")
                .vm("db-03")
                .health("Unknown", "We cannot tell"),
        )
        .await;
        let down = h.check("db-01").await.expect("report");
        assert_status(
            &down,
            "resource-health",
            "fail",
            "couldn't automatically recover",
        );
        let evidence = &finding(&down, "resource-health").evidence;
        assert_eq!(evidence["state"], "Unavailable");
        let text = serde_json::to_string(evidence).unwrap();
        assert!(!text.contains("<#"), "portal placeholders removed: {text}");
        assert_status(
            &h.check("db-02").await.unwrap(),
            "resource-health",
            "fail",
            "Degraded",
        );
        assert_status(
            &h.check("db-03").await.unwrap(),
            "resource-health",
            "warn",
            "Unknown",
        );
    })
    .await
}

#[tokio::test]
async fn unregistered_resource_health_warns_and_the_other_checks_go_on() {
    within(async {
        let h = Harness::start(World::new().resource_health_unregistered().vm("reports-01")).await;
        let report = h.check("reports-01").await.expect("report");
        assert_status(&report, "resource-health", "warn", "not registered");
        assert!(finding(&report, "resource-health")
            .details
            .iter()
            .any(|d| d.contains("az provider register --namespace Microsoft.ResourceHealth")));
        assert_status(&report, "nsg", "pass", "allow-rdp");
        assert_eq!(report.verdict, Verdict::Ok);
    })
    .await
}

// ---- boot-diagnostics --------------------------------------------------------------------

#[tokio::test]
async fn boot_diagnostics_off_warns_with_how_to_enable() {
    within(async {
        let h = Harness::start(World::new().vm("legacy-01").boot_diagnostics_off()).await;
        let report = h.check("legacy-01").await.expect("report");
        assert_status(&report, "boot-diagnostics", "warn", "off");
        assert!(finding(&report, "boot-diagnostics")
            .details
            .iter()
            .any(|d| d.contains(
                "az vm boot-diagnostics enable --name legacy-01 --resource-group rg-web"
            )));
        assert!(report.screenshot_png.is_none());
        assert!(!h
            .sim
            .stats()
            .log
            .iter()
            .any(|e| e.path.contains("retrieveBootDiagnosticsData")));
    })
    .await
}

#[tokio::test]
async fn a_failed_blob_download_warns_without_the_sas_url() {
    within(async {
        let options = support::failing(vec![Fault::new(".screenshot.bmp", FaultKind::Status(403))]);
        let h = Harness::with_options(World::new().vm("web-01"), options).await;
        let report = h.check("web-01").await.expect("report");
        assert_status(
            &report,
            "boot-diagnostics",
            "warn",
            "screenshot download failed (HTTP 403)",
        );
        let json = serde_json::to_string(&report).unwrap();
        assert!(!json.contains("sig="), "no SAS signature in the report");
        assert!(
            !report.serial_tail.is_empty(),
            "the serial log still arrived"
        );
    })
    .await
}

/// Boot diagnostics in managed storage (no `storageUri`: "managed storage will be used", the
/// compute spec's `BootDiagnostics`) and in a customer's storage account (`storageUri` set)
/// both give a screenshot and a serial log through `retrieveBootDiagnosticsData`.
#[tokio::test]
async fn managed_and_custom_boot_diagnostics_storage_both_work() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .vm("web-02")
            .boot_diagnostics_in("diagstore01");
        let h = Harness::start(world).await;
        for name in ["web-01", "web-02"] {
            let report = h.check(name).await.expect("report");
            assert_status(&report, "boot-diagnostics", "pass", "screenshot captured");
            assert!(report.screenshot_png.is_some(), "{name}");
            assert!(!report.serial_tail.is_empty(), "{name}");
        }
        let blobs: Vec<String> = h
            .sim
            .stats()
            .log
            .iter()
            .filter(|e| e.path.starts_with("/_blob/"))
            .map(|e| e.path.split('/').nth(2).unwrap_or_default().to_owned())
            .collect();
        assert!(blobs.iter().any(|a| a == "diagstore01"), "{blobs:?}");
        assert!(blobs.iter().any(|a| a.starts_with("md-")), "{blobs:?}");
    })
    .await
}

/// A custom storage account with a firewall refuses the SAS downloads with 403
/// `AuthorizationFailure` (Azure Storage, "Common REST API error codes"): the finding says the
/// firewall is in the way and what to do, instead of a bare HTTP status.
#[tokio::test]
async fn a_storage_firewall_is_named_as_what_blocks_boot_diagnostics() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .boot_diagnostics_in("diagstore01")
            .storage_firewall();
        let h = Harness::start(world).await;
        let report = h.check("web-01").await.expect("report");
        assert_status(
            &report,
            "boot-diagnostics",
            "warn",
            "the storage account's firewall blocks the download of the screenshot and serial log (403 AuthorizationFailure); allow rdp-doctor's address or use managed boot diagnostics",
        );
        assert!(!status_of(&report, "boot-diagnostics").1.contains("HTTP 403"));
        assert_eq!(finding(&report, "boot-diagnostics").evidence["storage_firewall"], true);
        assert!(report.screenshot_png.is_none() && report.serial_tail.is_empty());
        let json = serde_json::to_string(&report).unwrap();
        assert!(!json.contains("sig="), "no SAS signature in the report");
    })
    .await
}

// ---- Linux and classic -------------------------------------------------------------------

#[tokio::test]
async fn linux_vm_skips_the_rdp_checks() {
    within(async {
        let h = Harness::start(World::new().vm("linux-01").linux()).await;
        let report = h.check("linux-01").await.expect("report");
        assert_status(&report, "nsg", "skip", "Linux");
        assert_status(&report, "public-ip", "skip", "Linux");
        assert!(finding(&report, "public-ip")
            .details
            .iter()
            .any(|d| d.contains("SSH")));
        assert!(!h
            .sim
            .stats()
            .log
            .iter()
            .any(|e| e.path.contains("effectiveNetworkSecurityGroups")));
    })
    .await
}

#[tokio::test]
async fn classic_vm_ids_are_explained() {
    let err = rdp_doctor::azure::VmQuery::parse(
        "/subscriptions/1/resourceGroups/old/providers/Microsoft.ClassicCompute/virtualMachines/legacy",
    )
    .unwrap_err();
    assert!(matches!(
        err,
        rdp_doctor::domain::QueryError::Classic { .. }
    ));
    assert!(err.to_string().contains("retired classic VMs in 2023"));
}

// ---- finding the VM ----------------------------------------------------------------------

fn two_subscriptions() -> World {
    World::new()
        .page_size(1)
        .vm("web-01")
        .vm("web-02")
        .vm("api-01")
        .in_group("rg-api-east")
        .subscription("22222222-2222-2222-2222-222222222222")
        .vm("api-01")
        .in_group("rg-api-west")
        .vm("far-01")
}

#[tokio::test]
async fn resolution_by_name_group_and_id_across_paged_subscriptions() {
    within(async {
        let h = Harness::start(two_subscriptions()).await;
        let far = h
            .check("far-01")
            .await
            .expect("found in the second subscription");
        assert_eq!(
            far.vm.subscription_id,
            "22222222-2222-2222-2222-222222222222"
        );
        let west = h.check("rg-api-west/api-01").await.expect("report");
        assert_eq!(west.vm.resource_group, "rg-api-west");
        let by_id = h.check(&west.vm.id).await.expect("report by id");
        assert_eq!(by_id.vm, west.vm);
        let pages = h
            .sim
            .stats()
            .log
            .iter()
            .filter(|e| e.path.contains("skiptoken"))
            .count();
        assert!(
            pages >= 3,
            "page_size 1 forces nextLink paging ({pages} next pages)"
        );
    })
    .await
}

#[tokio::test]
async fn not_found_suggests_the_closest_names() {
    within(async {
        let h = Harness::start(two_subscriptions()).await;
        match h.check("web-1").await {
            Err(CheckError::Resolve(ResolveError::NotFound { suggestions, .. })) => {
                let names: Vec<&str> = suggestions.iter().map(|v| v.name.as_str()).collect();
                assert_eq!(names[..2], ["web-01", "web-02"]);
            }
            other => panic!("expected not found, got {other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn the_same_name_in_two_groups_is_ambiguous() {
    within(async {
        let h = Harness::start(two_subscriptions()).await;
        let err = h.check("api-01").await.expect_err("ambiguous");
        let text = err.to_string();
        assert!(
            text.contains("rg-api-east/api-01") && text.contains("rg-api-west/api-01"),
            "{text}"
        );
        assert!(
            text.contains("22222222-2222-2222-2222-222222222222"),
            "{text}"
        );
    })
    .await
}

// ---- Azure failures ----------------------------------------------------------------------

fn arm_error(result: Result<rdp_doctor::runbook::Report, CheckError>) -> ArmError {
    match result {
        Err(CheckError::Resolve(ResolveError::Arm(e))) | Err(CheckError::Arm(e)) => e,
        other => panic!("expected an Azure error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_sign_in_error_without_the_secret() {
    within(async {
        let h = Harness::with_secret(
            World::new().vm("web-01"),
            SimOptions::fast(),
            "not-the-secret-XYZ",
        )
        .await;
        let error = arm_error(h.check("web-01").await);
        let text = error.to_string();
        assert!(matches!(error, ArmError::SignIn { .. }), "{error:?}");
        assert!(
            text.contains("invalid_client") && text.contains("AADSTS7000215"),
            "{text}"
        );
        assert!(!text.contains("not-the-secret-XYZ"));
        assert_eq!(h.sim.stats().requests, 0, "no ARM request without a token");
    })
    .await
}

#[tokio::test]
async fn authorization_failed_names_the_missing_action() {
    within(async {
        let body = r#"{"error":{"code":"AuthorizationFailed","message":"The client 'x' with object id 'y' does not have authorization to perform action 'Microsoft.Compute/virtualMachines/read' over scope '/subscriptions/11111111-1111-1111-1111-111111111111' or the scope is invalid."}}"#;
        let options = support::failing(vec![Fault::new("virtualMachines", FaultKind::StatusBody(403, body.into()))]);
        let h = Harness::with_options(World::new().vm("web-01"), options).await;
        // A VM named by group is read directly; that read is refused. (A bare name whose list
        // is refused falls back to the groups the principal can see: see the least-privilege
        // tests below.)
        let error = arm_error(h.check("rg-web/web-01").await);
        assert!(matches!(error, ArmError::Forbidden { .. }), "{error:?}");
        let text = error.to_string();
        assert!(text.contains("AuthorizationFailed"), "{text}");
        assert!(text.contains("Microsoft.Compute/virtualMachines/read"), "{text}");
        assert_eq!(text.lines().count(), 1);
    })
    .await
}

#[tokio::test]
async fn a_missing_vm_by_id_is_not_found() {
    within(async {
        let h = Harness::start(World::new().vm("web-01")).await;
        let id = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/ghost-01";
        match h.check(id).await {
            Err(CheckError::Resolve(ResolveError::NotFound { .. })) => {}
            other => panic!("expected not found, got {other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn throttling_is_retried_honouring_retry_after() {
    within(async {
        let options = support::failing(vec![
            Fault::new("virtualMachines", FaultKind::Status(429)).times(2)
        ]);
        let h = Harness::with_options(World::new().vm("web-01"), options).await;
        let report = h.check("web-01").await.expect("retries get through");
        assert_eq!(report.verdict, Verdict::Ok);
        let throttled = h.sim.stats().log.iter().filter(|e| e.status == 429).count();
        assert_eq!(throttled, 2);
    })
    .await
}

#[tokio::test]
async fn throttling_beyond_the_retry_budget_is_a_clear_error() {
    within(async {
        let options = SimOptions {
            faults: vec![Fault::new("virtualMachines", FaultKind::Status(429))],
            retry_after_secs: 1,
            ..SimOptions::fast()
        };
        let h = Harness::with_options(World::new().vm("web-01"), options).await;
        let error = arm_error(h.check("web-01").await);
        match &error {
            ArmError::Throttled {
                retries,
                retry_after,
                ..
            } => {
                assert_eq!(*retries, 2, "the harness allows two retries");
                assert_eq!(*retry_after, Some(std::time::Duration::from_secs(1)));
            }
            other => panic!("expected throttling, got {other:?}"),
        }
        assert!(error.to_string().contains("HTTP 429"), "{error}");
        assert_eq!(h.sim.stats().requests, 3, "1 try + 2 retries");
    })
    .await
}

#[tokio::test]
async fn a_retry_after_longer_than_the_budget_gives_up_at_once() {
    within(async {
        // A bucket that never refills answers Retry-After: 3600; waiting would blow the budget.
        let options = SimOptions {
            bucket: Some(BucketOptions {
                capacity: 0,
                refill_per_sec: 0.0,
            }),
            ..SimOptions::fast()
        };
        let h = Harness::with_options(World::new().vm("web-01"), options).await;
        let started = std::time::Instant::now();
        let error = arm_error(h.check("web-01").await);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(
            matches!(error, ArmError::Throttled { retries: 0, .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("wait 3600s"), "{error}");
        assert_eq!(h.sim.stats().requests, 1);
    })
    .await
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_with_azure_code() {
    within(async {
        let options = support::failing(vec![Fault::new("virtualMachines", FaultKind::Status(503))]);
        let h = Harness::with_options(World::new().vm("web-01"), options).await;
        let error = arm_error(h.check("web-01").await);
        assert!(
            matches!(error, ArmError::Http { status: 503, .. }),
            "{error:?}"
        );
        assert_eq!(h.sim.stats().requests, 3, "retried twice");
    })
    .await
}

#[tokio::test]
async fn a_hanging_azure_times_out() {
    within(async {
        let options = support::failing(vec![Fault::new(
            "providers/Microsoft.Compute/virtualMachines?",
            FaultKind::Hang,
        )]);
        let h = Harness::with_options(World::new().vm("web-01"), options).await;
        let error = arm_error(h.check("web-01").await);
        assert!(matches!(error, ArmError::Timeout { .. }), "{error:?}");
        assert!(error.to_string().contains("no answer from Azure"));
    })
    .await
}

#[tokio::test]
async fn a_malformed_response_is_reported_not_panicked() {
    within(async {
        let options = support::failing(vec![Fault::new(
            "providers/Microsoft.Compute/virtualMachines?",
            FaultKind::Malformed,
        )]);
        let h = Harness::with_options(World::new().vm("web-01"), options).await;
        let error = arm_error(h.check("web-01").await);
        assert!(matches!(error, ArmError::Malformed { .. }), "{error:?}");
    })
    .await
}

#[tokio::test]
async fn independent_reads_run_concurrently() {
    within(async {
        let options = support::slowed(std::time::Duration::from_millis(100));
        let h = Harness::with_options(World::new().vm("web-01"), options).await;
        h.check("web-01").await.expect("report");
        // With 100 ms per request, overlap is certain if the reads are issued together: the VM
        // read, Resource Health, the NIC and boot diagnostics start at once.
        let stats = h.sim.stats();
        assert!(
            stats.peak_in_flight >= 4,
            "peak in flight {}",
            stats.peak_in_flight
        );
    })
    .await
}

// ---- the VM directory: names from a cache with a time-to-live ------------------------------

fn list_requests(h: &Harness) -> usize {
    h.sim
        .stats()
        .log
        .iter()
        .filter(|e| e.method == "GET" && e.path.contains("/virtualMachines?"))
        .count()
}

#[tokio::test]
async fn names_resolve_from_the_directory_and_a_miss_lists_afresh() {
    within(async {
        let h = Harness::start(two_subscriptions()).await;
        let directory = VmDirectory::with_ttl(Duration::from_secs(600));
        let resolve = |name: &str| {
            let query = VmQuery::parse(name).expect("valid");
            let directory = &directory;
            let h = &h;
            async move { directory.resolve(&h.arm, &query, &h.subscriptions).await }
        };
        // An empty directory lists every subscription once.
        let far = resolve("far-01").await.expect("found");
        assert_eq!(
            far.vm.subscription_id,
            "22222222-2222-2222-2222-222222222222"
        );
        let first = list_requests(&h);
        assert!(first >= 2, "both subscriptions listed ({first} list pages)");
        // A known name costs no list call at all.
        let web = resolve("web-01").await.expect("found");
        assert_eq!(web.vm.resource_group, "rg-web");
        assert_eq!(list_requests(&h), first, "resolved from the cache");
        // The cache still answers ambiguity without Azure.
        let err = resolve("api-01").await.expect_err("ambiguous");
        assert!(matches!(err, ResolveError::Ambiguous { .. }), "{err}");
        assert_eq!(list_requests(&h), first);
        // A VM created since: the cache misses, a fresh list finds it.
        h.sim.world().update(|w| {
            let fresh = World::new().vm("new-01").vms.remove(0);
            w.vms.push(fresh);
        });
        let new = resolve("new-01").await.expect("found by a fresh list");
        assert_eq!(new.vm.name, "new-01");
        assert!(list_requests(&h) > first, "the miss listed again");
        // A name nowhere is still not found, with suggestions from the fresh list.
        let after = list_requests(&h);
        match resolve("new-1").await {
            Err(ResolveError::NotFound { suggestions, .. }) => {
                assert_eq!(suggestions[0].name, "new-01")
            }
            other => panic!("expected not found, got {other:?}"),
        }
        assert!(list_requests(&h) > after, "a miss always checks Azure");
    })
    .await
}

#[tokio::test]
async fn a_stale_directory_lists_again_and_concurrent_misses_share_one_list() {
    within(async {
        let h = Harness::start(World::new().page_size(100).vm("web-01").vm("web-02")).await;
        // Ten checks at once against an empty directory: one list, not ten.
        let directory = VmDirectory::with_ttl(Duration::from_secs(600));
        let query = VmQuery::parse("web-02").expect("valid");
        let all = futures::future::join_all(
            (0..10).map(|_| directory.resolve(&h.arm, &query, &h.subscriptions)),
        )
        .await;
        assert!(all.iter().all(|r| r.is_ok()), "{all:?}");
        assert_eq!(list_requests(&h), 1, "one shared refresh");
        directory
            .resolve(&h.arm, &query, &h.subscriptions)
            .await
            .expect("found");
        assert_eq!(list_requests(&h), 1, "fresh: from the cache");
        // A directory whose list is older than its time-to-live lists on every lookup.
        let stale = VmDirectory::with_ttl(Duration::ZERO);
        for _ in 0..2 {
            stale
                .resolve(&h.arm, &query, &h.subscriptions)
                .await
                .expect("found");
        }
        assert_eq!(
            list_requests(&h),
            3,
            "older than its time-to-live: listed again"
        );
    })
    .await
}

/// A form must be the first answer to an interaction, so it is answered from the VM list
/// without asking Azure; right after start the first list is waited for (bounded), not taken
/// as empty (`Door::resolve_listed`).
#[tokio::test]
async fn an_answer_from_the_list_waits_for_the_first_list_and_no_longer() {
    within(async {
        let h = Harness::build(World::new().vm("web-01"))
            .options(support::slowed(Duration::from_millis(300)))
            .start()
            .await;
        let directory = Arc::new(VmDirectory::new());
        // The first list is running (slowed) when the question comes.
        let listing = tokio::spawn({
            let (directory, arm, subscriptions) =
                (directory.clone(), h.arm.clone(), h.subscriptions.clone());
            async move { directory.refresh(&arm, &subscriptions).await }
        });
        directory.first_list_within(Duration::from_secs(10)).await;
        assert!(
            directory.find(|s| s.vm.name == "web-01").is_some(),
            "answered once the first list was in"
        );
        assert_eq!(listing.await.expect("joined").expect("listed"), 1);
        // A list that never comes is waited for no longer than the limit.
        let never = VmDirectory::new();
        let asked = tokio::time::Instant::now();
        never.first_list_within(Duration::from_millis(50)).await;
        assert!(asked.elapsed() >= Duration::from_millis(50));
        assert!(never.is_empty());
    })
    .await
}

// ---- sweeps ------------------------------------------------------------------------------

fn scope(group: &str) -> SweepScope {
    SweepScope {
        subscription_id: rdp_doctor::sim::DEFAULT_SUBSCRIPTION.to_string(),
        resource_group: Some(group.to_string()),
    }
}

async fn run_sweep(h: &Harness, scope: &SweepScope, options: &SweepOptions) -> SweepReport {
    sweep::sweep(
        &h.arm,
        &h.catalog,
        scope,
        options,
        &CancellationToken::new(),
        &|_| {},
    )
    .await
    .expect("sweep")
}

#[tokio::test]
async fn a_sweep_ranks_the_group_worst_first_with_the_deciding_finding() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .vm("web-02")
            .nsg_denies_rdp()
            .vm("web-03")
            .deallocated()
            .vm("web-04")
            .no_public_ip()
            .vm("lin-01")
            .linux()
            .vm("db-01")
            .in_group("rg-data")
            .nsg_denies_rdp();
        let h = Harness::start(world).await;
        let report = run_sweep(&h, &scope("rg-web"), &SweepOptions::default()).await;
        assert!(!report.cancelled);
        assert_eq!(report.total, 4, "the Windows VMs of rg-web");
        let names: Vec<&str> = report.vms.iter().map(|r| r.vm.name.as_str()).collect();
        assert_eq!(names, ["web-02", "web-03", "web-04", "web-01"]);
        let deciding: Vec<(String, String)> = report
            .vms
            .iter()
            .map(|r| match &r.deciding {
                Some(f) => (f.step.as_str().to_string(), f.status.as_str().to_string()),
                None => ("-".into(), "-".into()),
            })
            .collect();
        assert_eq!(
            deciding,
            [
                ("nsg".to_string(), "fail".to_string()),
                ("vm-status".into(), "fail".into()),
                ("public-ip".into(), "warn".into()),
                ("-".into(), "-".into()),
            ]
        );
        assert!(report.vms[0]
            .deciding
            .as_ref()
            .is_some_and(|f| f.summary.contains("deny-rdp-internet")));
        assert_eq!(report.vms[1].next_action.map(|a| a.as_str()), Some("start"));
        assert_eq!(report.count(Verdict::Problems), 2);
        assert_eq!(report.count(Verdict::Ok), 2);
        let skipped: Vec<&str> = report.skipped.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(skipped, ["lin-01"]);
        assert!(h.arm_writes().is_empty(), "{:?}", h.arm_writes());
        assert_eq!(report.stats.arm_requests, h.sim.stats().requests);
        assert!(report.stats.list_requests >= 1);
    })
    .await
}

#[tokio::test]
async fn a_sweep_under_the_token_bucket_paces_itself_instead_of_being_throttled() {
    within(async {
        let world = support::numbered_vms(World::new().page_size(100), "vm", 24);
        // Both of ARM's buckets small: the effective-NSG POSTs spend the write bucket (every
        // request that is not a GET does), their results and the lists the read bucket.
        let options = SimOptions {
            bucket: Some(BucketOptions {
                capacity: 15,
                refill_per_sec: 25.0,
            }),
            write_bucket: Some(BucketOptions {
                capacity: 8,
                refill_per_sec: 10.0,
            }),
            retry_after_secs: 1,
            ..SimOptions::fast()
        };
        let h = Harness::with_options(world, options).await;
        let report = run_sweep(&h, &scope("rg-web"), &SweepOptions::default()).await;
        assert_eq!(report.vms.len(), 24);
        let writes = h
            .sim
            .stats()
            .log
            .iter()
            .filter(|e| e.method == "POST" && e.path.contains("effectiveNetworkSecurityGroups"))
            .count();
        assert_eq!(
            writes, 24,
            "one POST per VM, each spending the write bucket"
        );
        assert_eq!(
            report.count(Verdict::Ok),
            24,
            "no check failed: {:#?}",
            report.vms
        );
        let stats = h.sim.stats();
        assert_eq!(
            stats.throttled, 0,
            "paced from the headers, never throttled"
        );
        assert!(report.stats.paced > 0, "{:?}", report.stats);
        assert_eq!(report.stats.throttled, 0);
    })
    .await
}

/// Compute's own bucket for reading one VM (`x-ms-ratelimit-remaining-resource`,
/// `LowCostGetResource`) is honoured: reading the same VM past it waits for its refill instead
/// of being answered 429. The simulator's bucket has Azure's shape (refilled a third of its size
/// a minute, "Compute throttling limits"), larger than a VM's 36 so that a token refills in 3 s
/// and the test waits seconds, not minutes.
#[tokio::test]
async fn reads_of_one_vm_wait_for_computes_bucket_instead_of_429s() {
    within(async {
        let options = SimOptions {
            compute_get: Some(rdp_doctor::sim::ComputeGetBuckets {
                resource: BucketOptions {
                    capacity: 60,
                    refill_per_sec: 20.0 / 60.0,
                },
                ..rdp_doctor::sim::ComputeGetBuckets::AZURE
            }),
            ..SimOptions::fast()
        };
        let h = Harness::with_options(World::new().vm("web-01"), options).await;
        let vm = rdp_doctor::domain::VmRef::from_stored(
            &format!(
                "/subscriptions/{}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01",
                rdp_doctor::sim::DEFAULT_SUBSCRIPTION
            ),
            "web-01",
        );
        let started = std::time::Instant::now();
        for _ in 0..61 {
            h.arm.vm_facts(&vm).await.expect("read");
        }
        let stats = h.sim.stats();
        assert_eq!(stats.throttled, 0, "held by the pacer, never refused: {:?}", stats.by_route);
        assert_eq!(stats.by_route["GET virtualMachines"], 61);
        assert!(h.arm.pacing().paced >= 1, "{:?}", h.arm.pacing());
        assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
    })
    .await
}

/// A service that overrides ARM's limit for a resource type answers
/// `x-ms-ratelimit-remaining-subscription-resource-requests` instead of the reads or writes
/// ("Understand how Azure Resource Manager throttles requests"): the pacer gives that route a
/// bucket of its own and holds its requests at its (assumed, one a second) refill instead of
/// collecting 429s, while the rest of the check goes by ARM's buckets.
#[tokio::test]
async fn a_resource_types_own_limit_is_honoured() {
    within(async {
        let options = SimOptions {
            resource_type_limit: Some((
                "/effectiveNetworkSecurityGroups".to_string(),
                BucketOptions {
                    capacity: 4,
                    refill_per_sec: 1.0,
                },
            )),
            lro_polls: 0,
            ..SimOptions::fast()
        };
        let h = Harness::with_options(World::new().vm("web-01"), options).await;
        for _ in 0..5 {
            let report = h.check("web-01").await.expect("report");
            assert_status(&report, "nsg", "pass", "allow-rdp");
        }
        let stats = h.sim.stats();
        assert_eq!(
            stats.throttled, 0,
            "held, never refused: {:?}",
            stats.by_route
        );
        assert_eq!(
            stats.by_route["POST networkInterfaces/effectiveNetworkSecurityGroups"],
            5
        );
        assert!(h.arm.pacing().paced >= 1, "{:?}", h.arm.pacing());
    })
    .await
}

#[tokio::test]
async fn a_cancelled_sweep_stops_and_returns_the_rows_so_far() {
    within(async {
        let world = support::numbered_vms(World::new().page_size(100), "vm", 20);
        let options = support::slowed(Duration::from_millis(30));
        let h = Harness::with_options(world, options).await;
        let cancel = CancellationToken::new();
        let on_event = {
            let cancel = cancel.clone();
            move |event: SweepEvent| {
                if let SweepEvent::Checked { done: 3, .. } = event {
                    cancel.cancel();
                }
            }
        };
        let sweep_options = SweepOptions {
            concurrency: 2,
            ..SweepOptions::default()
        };
        let report = sweep::sweep(
            &h.arm,
            &h.catalog,
            &scope("rg-web"),
            &sweep_options,
            &cancel,
            &on_event,
        )
        .await
        .expect("sweep");
        assert!(report.cancelled);
        assert_eq!(report.total, 20);
        assert_eq!(report.vms.len(), 3, "no row after the cancel");
        // Nothing more reaches Azure once cancelled.
        // Time passing is what is tested: no event marks a request that never comes, so give
        // one 200 ms to show up.
        let after = h.sim.stats().requests;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(h.sim.stats().requests, after);
    })
    .await
}

// ---- the critical path -------------------------------------------------------------------

#[tokio::test]
async fn a_healthy_check_of_a_listed_vm_costs_nine_requests_two_deep() {
    within(async {
        let options = SimOptions {
            latency: Duration::from_millis(100),
            lro_polls: 0,
            ..SimOptions::fast()
        };
        let h = Harness::with_options(World::new().vm("web-01"), options).await;
        let directory = VmDirectory::new();
        let query = VmQuery::parse("web-01").expect("valid");
        // Sign in and fill the directory first, as a running bot has.
        directory
            .resolve(&h.arm, &query, &h.subscriptions)
            .await
            .expect("found");
        let before = h.sim.stats().log.len();
        let summary = directory
            .resolve(&h.arm, &query, &h.subscriptions)
            .await
            .expect("found");
        let report = rdp_doctor::runbook::check(
            &h.arm,
            &h.catalog,
            summary,
            &CheckOptions::default(),
            &|_| {},
        )
        .await
        .expect("report");
        assert_eq!(report.verdict, Verdict::Ok, "{:#?}", report.findings);
        // The VM, Resource Health, the NIC, boot diagnostics, two long-running POSTs
        // (effective security rules, effective routes) with one poll each, and the virtual
        // network's Virtual Network Manager admin rules (a synchronous POST once the NIC names
        // the subnet).
        assert_eq!(
            report.stats.arm_requests,
            9,
            "{:#?}",
            &h.sim.stats().log[before..]
        );
        let log = h.sim.stats().log;
        let routes: Vec<String> = log[before..]
            .iter()
            .map(|e| format!("{} {}", e.method, e.path.split('?').next().unwrap_or("")))
            .collect();
        let reads_of = |needle: &str| routes.iter().filter(|r| r.contains(needle)).count();
        let vm_reads = routes
            .iter()
            .filter(|r| r.ends_with("/virtualMachines/web-01") && r.starts_with("GET"))
            .count();
        assert_eq!(vm_reads, 1, "one VM read: {routes:#?}");
        assert_eq!(
            reads_of("GET ") - reads_of("_blob") - reads_of("operationResults"),
            3,
            "one read each of the VM, its health and its NIC: {routes:#?}"
        );
        assert_eq!(
            reads_of("publicIPAddresses"),
            0,
            "the NIC read expands the public IP"
        );
        // Two requests deep: every request but the effective-NSG and effective-route results,
        // and the admin rules the NIC's answer names the subnet for, starts before the first
        // answer (100 ms each), so the check is one round trip plus that one.
        let first_answer = log[before..]
            .iter()
            .map(|e| e.finished_us)
            .min()
            .unwrap_or(0);
        let late: Vec<&String> = log[before..]
            .iter()
            .zip(&routes)
            .filter(|(e, _)| e.started_us >= first_answer)
            .map(|(_, r)| r)
            .collect();
        assert!(
            late.iter().all(|r| r.contains("operationResults")
                || r.contains("blob")
                || r.contains("listNetworkManagerEffectiveSecurityAdminRules")),
            "waited for an answer before asking: {late:#?}"
        );
    })
    .await
}

#[tokio::test]
async fn when_azure_cannot_list_concurrent_misses_share_one_failure_and_known_vms_still_resolve() {
    within(async {
        let h = Harness::start(World::new().page_size(100).vm("web-01")).await;
        // A time-to-live of zero: every lookup wants a fresh list.
        let directory = VmDirectory::with_ttl(Duration::ZERO);
        let web = VmQuery::parse("web-01").expect("valid");
        directory
            .resolve(&h.arm, &web, &h.subscriptions)
            .await
            .expect("found");
        h.sim.set_options(support::failing(vec![Fault::new(
            "virtualMachines?",
            FaultKind::Status(500),
        )]));
        let before = list_requests(&h);
        let nowhere = VmQuery::parse("gone-01").expect("valid");
        let all = futures::future::join_all(
            (0..10).map(|_| directory.resolve(&h.arm, &nowhere, &h.subscriptions)),
        )
        .await;
        for result in &all {
            match result {
                Err(ResolveError::Arm(e)) => {
                    assert!(e.to_string().contains("InternalServerError"), "{e}")
                }
                other => panic!("expected Azure's error, got {other:?}"),
            }
        }
        // One list attempt (with its retries), not ten.
        let tries = list_requests(&h) - before;
        assert!((1..=3).contains(&tries), "{tries} list requests");
        // A VM the older list knows is still found while Azure cannot list.
        let found = directory
            .resolve(&h.arm, &web, &h.subscriptions)
            .await
            .expect("from the older list");
        assert_eq!(found.vm.name, "web-01");
    })
    .await
}

#[tokio::test]
async fn a_sweep_whose_public_ip_list_fails_reads_each_nic_with_its_ip_instead() {
    within(async {
        let world = support::numbered_vms(World::new().page_size(100), "vm", 5);
        let options = support::failing(vec![Fault::new(
            "publicIPAddresses?",
            FaultKind::Status(403),
        )]);
        let h = Harness::with_options(world, options).await;
        let report = run_sweep(&h, &scope("rg-web"), &SweepOptions::default()).await;
        assert_eq!(report.count(Verdict::Ok), 5, "{:#?}", report.vms);
        let log = h.sim.stats().log;
        let single = |needle: &str| {
            log.iter()
                .filter(|e| e.method == "GET" && e.path.contains(needle) && !e.path.contains("s?"))
                .count()
        };
        assert_eq!(single("/networkInterfaces/"), 5, "each VM read its NIC");
        assert_eq!(
            single("/publicIPAddresses/"),
            0,
            "with the public IP expanded in it"
        );
    })
    .await
}

/// `(VM name, status of step)` for every row of a sweep, by name.
fn statuses_by_vm(report: &SweepReport, step: &str) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for row in &report.vms {
        let Some(found) = row.findings.iter().find(|f| f.step.as_str() == step) else {
            panic!("no {step} finding for {}", row.vm.name);
        };
        rows.push((row.vm.name.clone(), found.status.as_str().to_string()));
    }
    rows.sort();
    rows
}

/// ARM may refuse a VM list's `$expand=instanceView` (400: the compute spec allows it only with a
/// `$filter`) or answer it with status-only instance views (no `vmAgent`): either way the sweep
/// reads those VMs one by one and finds each agent as it is, instead of "agent missing" for all.
#[tokio::test]
async fn a_sweep_reads_each_vm_when_the_list_has_no_agent_to_show() {
    within(async {
        assert_eq!(
            ListedInstanceView::default(),
            ListedInstanceView::Refused,
            "as the spec says"
        );
        for answer in [ListedInstanceView::Refused, ListedInstanceView::StatusOnly] {
            let world = World::new()
                .page_size(100)
                .vm_list_instance_view(answer)
                .vm("web-01")
                .vm("web-02")
                .agent_not_ready("VM Agent is unresponsive.")
                .vm("web-03")
                .deallocated();
            let h = Harness::start(world).await;
            let report = run_sweep(&h, &scope("rg-web"), &SweepOptions::default()).await;
            assert_eq!(
                statuses_by_vm(&report, "vm-agent"),
                [
                    ("web-01".to_string(), "pass".to_string()),
                    ("web-02".into(), "fail".into()),
                    ("web-03".into(), "skip".into()),
                ],
                "{answer:?}"
            );
            let log = h.sim.stats().log;
            let single_reads = log
                .iter()
                .filter(|e| e.method == "GET" && e.path.contains("/virtualMachines/web-0"))
                .filter(|e| !e.path.contains("/providers/Microsoft.ResourceHealth"))
                .count();
            assert!(
                single_reads >= 2,
                "{answer:?}: the running VMs were read one by one"
            );
            assert!(
                log.iter()
                    .filter(|e| e.path.contains("/virtualMachines?")
                        || e.path.ends_with("/virtualMachines"))
                    .all(|e| !e.path.contains("expand")),
                "{answer:?}: the list never asks for what the spec allows only with a $filter"
            );
        }
    })
    .await
}

/// A subscription's Resource Health list holds every resource it has (disks, NICs...), thousands
/// in a large one: a subscription sweep reads Resource Health per resource group of its VMs,
/// while the VMs are checked, and never lists the whole subscription.
#[tokio::test]
async fn a_subscription_sweep_reads_resource_health_per_resource_group() {
    within(async {
        let world = World::new()
            .page_size(100)
            .other_resources_per_group(1500)
            .vm("web-01")
            .vm("web-02")
            .vm("db-01")
            .in_group("rg-data")
            .health(
                "Unavailable",
                "We're sorry, your virtual machine isn't available.",
            );
        let h = Harness::start(world).await;
        let whole = SweepScope {
            subscription_id: rdp_doctor::sim::DEFAULT_SUBSCRIPTION.to_string(),
            resource_group: None,
        };
        let report = run_sweep(&h, &whole, &SweepOptions::default()).await;
        assert_eq!(
            statuses_by_vm(&report, "resource-health"),
            [
                ("db-01".to_string(), "fail".to_string()),
                ("web-01".into(), "pass".into()),
                ("web-02".into(), "pass".into()),
            ]
        );
        let lists: Vec<String> = h
            .sim
            .stats()
            .log
            .iter()
            .filter(|e| {
                e.path
                    .contains("/providers/Microsoft.ResourceHealth/availabilityStatuses?")
            })
            .map(|e| e.path.split('?').next().unwrap_or_default().to_string())
            .collect();
        let sub = format!("/subscriptions/{}", rdp_doctor::sim::DEFAULT_SUBSCRIPTION);
        assert!(
            lists
                .iter()
                .all(|p| p.starts_with(&format!("{sub}/resourceGroups/"))),
            "never the whole subscription: {lists:?}"
        );
        for group in ["rg-web", "rg-data"] {
            let first_pages = lists
                .iter()
                .filter(|p| p.contains(&format!("/resourceGroups/{group}/")))
                .count();
            assert_eq!(first_pages, 16, "{group}: each page of its list read once");
        }
        let singles = h
            .sim
            .stats()
            .log
            .iter()
            .filter(|e| e.path.contains("/availabilityStatuses/current"))
            .count();
        assert_eq!(singles, 0, "every VM's health came from its group's list");
    })
    .await
}

// ---- a fair budget: people before sweeps ---------------------------------------------------

#[tokio::test]
async fn a_persons_check_during_a_sweep_that_drained_the_bucket_does_not_wait_behind_it() {
    within(async {
        let world = World::new()
            .page_size(100)
            .vm("web-01")
            .fleet("rg-fleet", "vm", 80);
        // A slow refill: the sweep (two requests per VM) drains the bucket whatever the speed
        // of the machine, and is cancelled once the person has their answer.
        let options = SimOptions {
            lro_polls: 0,
            bucket: Some(BucketOptions {
                capacity: 60,
                refill_per_sec: 5.0,
            }),
            retry_after_secs: 1,
            ..SimOptions::fast()
        };
        let mut h = Harness::with_options(world, options).await;
        // rdp-doctor told the bucket's refill, as `[azure] refill_per_sec` does.
        h.arm = h.arm_with(|s| s.refill_per_sec = 5.0);
        // Signed in, as a running bot is.
        h.check("web-01").await.expect("first check");
        let sweeps = h.arm.for_sweep();
        // Once the sweep's requests queue for ARM's budget, a person asks for a check.
        let (on_event, drained) = support::when_a_sweep_queues(&h.arm);
        let cancel = CancellationToken::new();
        let fleet = scope("rg-fleet");
        let sweep_options = SweepOptions::default();
        let sweep = sweep::sweep(
            &h.arm,
            &h.catalog,
            &fleet,
            &sweep_options,
            &cancel,
            &on_event,
        );
        let person = async {
            drained.await.expect("the sweep drained the bucket");
            let before = h.arm.pacing();
            let report = h.check("web-01").await;
            // Still queued when the person's answer is in: they went ahead of the sweep.
            let sweep_waiting = sweeps.pacing().waiting;
            cancel.cancel();
            (report, before, h.arm.pacing(), sweep_waiting)
        };
        let (swept, (report, before, after, sweep_waiting)) = tokio::join!(sweep, person);
        let report = report.expect("the person's check");
        assert_eq!(report.verdict, Verdict::Ok, "{:#?}", report.findings);
        assert_eq!(
            after.paced, before.paced,
            "none of the person's requests waited for a token: {after:?}"
        );
        assert!(
            sweep_waiting > 0,
            "the sweep's requests were still queued when the person's check was done"
        );
        let swept = swept.expect("sweep");
        assert!(swept.cancelled && swept.vms.len() < 80, "{:?}", swept.stats);
        assert_eq!(swept.count(Verdict::Unknown), 0, "{:#?}", swept.vms);
        assert_eq!(h.sim.stats().throttled, 0, "and nobody was throttled");
    })
    .await
}

/// A sweep with default options through `arm`, to its end.
async fn sweep_with(arm: &Arm, h: &Harness, scope: &SweepScope) -> Result<SweepReport, ArmError> {
    sweep::sweep(
        arm,
        &h.catalog,
        scope,
        &SweepOptions::default(),
        &CancellationToken::new(),
        &|_| {},
    )
    .await
}

#[tokio::test]
async fn a_sweep_of_a_scope_over_the_cap_is_refused_before_any_per_vm_request() {
    within(async {
        let world = support::numbered_vms(World::new().page_size(100), "vm", 5);
        let h = Harness::start(world.vm("lin-01").linux()).await;
        let arm = h.arm_with(|s| s.sweep_max_vms = 4);
        let error = sweep_with(&arm, &h, &scope("rg-web"))
            .await
            .expect_err("5 Windows VMs, at most 4");
        assert!(matches!(error, ArmError::Config(_)), "{error:?}");
        let text = error.to_string();
        assert!(
            text.starts_with("resource group rg-web has 5 Windows VMs; a sweep checks at most 4"),
            "{text}"
        );
        assert!(text.contains("sweep_max_vms"), "{text}");
        let per_vm: Vec<String> = h
            .sim
            .stats()
            .log
            .iter()
            .filter(|e| {
                e.method != "GET"
                    || !e.path.contains("?api-version")
                    || e.path.contains("/virtualMachines/")
            })
            .filter(|e| !e.path.contains("/oauth2/"))
            .map(|e| format!("{} {}", e.method, e.path))
            .collect();
        assert!(per_vm.is_empty(), "only the scope's lists: {per_vm:#?}");
        // The Linux VM does not count: at 5 the same scope is swept.
        let arm = h.arm_with(|s| s.sweep_max_vms = 5);
        let report = sweep_with(&arm, &h, &scope("rg-web"))
            .await
            .expect("at the cap");
        assert_eq!(report.vms.len(), 5);
    })
    .await
}

#[tokio::test]
async fn an_unknown_name_is_remembered_for_a_while_and_asking_again_lists_nothing() {
    within(async {
        let h = Harness::start(World::new().page_size(100).vm("web-01")).await;
        let directory = VmDirectory::with_ttl(Duration::from_secs(600));
        let lookup = |name: &str| VmQuery::parse(name).expect("valid");
        directory
            .resolve(&h.arm, &lookup("web-01"), &h.subscriptions)
            .await
            .expect("found");
        let before = list_requests(&h);
        for name in ["web-99", "WEB-99", "web-99"] {
            match directory
                .resolve(&h.arm, &lookup(name), &h.subscriptions)
                .await
            {
                Err(ResolveError::NotFound { suggestions, .. }) => {
                    assert_eq!(suggestions[0].name, "web-01")
                }
                other => panic!("expected not found, got {other:?}"),
            }
        }
        assert_eq!(
            list_requests(&h),
            before + 1,
            "the first miss listed; asking again within 30 s did not"
        );
        // Without the memory, every miss lists.
        let forgetful =
            VmDirectory::with_ttl(Duration::from_secs(600)).with_unknown_ttl(Duration::ZERO);
        let before = list_requests(&h);
        for _ in 0..2 {
            let missing = forgetful
                .resolve(&h.arm, &lookup("web-99"), &h.subscriptions)
                .await;
            assert!(matches!(missing, Err(ResolveError::NotFound { .. })));
        }
        assert_eq!(list_requests(&h), before + 2);
    })
    .await
}

#[tokio::test]
async fn the_serial_log_tail_is_read_with_a_range_not_the_whole_blob() {
    within(async {
        // A log that has grown over a VM's life: 4,000 lines, about 220 KB.
        let log: String = (0..4000)
            .map(|i| format!("[{i:05}] boot message {}\r\n", "x".repeat(36)))
            .collect();
        let mut world = World::new().vm("web-01").vm("web-02");
        world.vms[0].serial_log = Some(log.clone());
        let h = Harness::start(world).await;
        let report = h.check("web-01").await.expect("report");
        let lines: Vec<&str> = log.lines().collect();
        let expected: Vec<String> = lines[lines.len() - rdp_doctor::diagnose::SERIAL_TAIL_LINES..]
            .iter()
            .map(|l| l.to_string())
            .collect();
        assert_eq!(report.serial_tail, expected);
        let serial: Vec<_> = h
            .sim
            .stats()
            .log
            .into_iter()
            .filter(|e| e.path.contains("web-01.serialconsole.log"))
            .collect();
        assert!(
            serial.iter().all(|e| e.range.is_some() && e.status == 206),
            "{serial:#?}"
        );
        let sent: u64 = serial.iter().map(|e| e.body_bytes).sum();
        assert!(
            sent < log.len() as u64,
            "{sent} bytes sent of {}",
            log.len()
        );
        // A short log comes whole, in one range request.
        let report = h.check("web-02").await.expect("report");
        assert!(!report.serial_tail.is_empty());
        let short: Vec<_> = h
            .sim
            .stats()
            .log
            .into_iter()
            .filter(|e| e.path.contains("web-02.serialconsole.log"))
            .collect();
        assert_eq!(short.len(), 1, "{short:#?}");
        assert_eq!(short[0].range.as_deref(), Some("bytes=0-65535"));
    })
    .await
}

// ---- least-privilege principals ------------------------------------------------------------

const SUB: &str = rdp_doctor::sim::DEFAULT_SUBSCRIPTION;
const PRINCIPAL_SECRET: &str = "group-scoped-secret";

/// web-01 in rg-web, api-01 in rg-api; the bot's principal (support::CLIENT) holds Virtual
/// Machine Contributor on rg-web only, as teams that give it a few resource groups do.
fn group_scoped_world() -> World {
    World::new()
        .vm("web-01")
        .vm("api-01")
        .in_group("rg-api")
        .principal(support::CLIENT, PRINCIPAL_SECRET)
        .role_at(
            "Virtual Machine Contributor",
            &format!("/subscriptions/{SUB}/resourceGroups/rg-web"),
        )
}

async fn group_scoped() -> Harness {
    Harness::with_secret(group_scoped_world(), SimOptions::fast(), PRINCIPAL_SECRET).await
}

fn vm_lists(h: &Harness) -> u64 {
    h.sim
        .stats()
        .by_route
        .get("GET virtualMachines (list)")
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn azure_refuses_what_the_principals_roles_do_not_grant_with_its_message() {
    within(async {
        let h = group_scoped().await;
        // The subscription's VM list: 403 AuthorizationFailed, scope up to the provider
        // namespace (Azure's wording, as quoted in pivotal-cf/terraforming-azure#71 and
        // Azure/CloudShell#572).
        let error = h.arm.list_vms(SUB).await.expect_err("refused");
        let expected = format!(
            "The client '{c}' with object id '{c}' does not have authorization to perform action 'Microsoft.Compute/virtualMachines/read' over scope '/subscriptions/{SUB}/providers/Microsoft.Compute' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            c = support::CLIENT
        );
        assert_eq!(
            error,
            ArmError::Forbidden {
                code: "AuthorizationFailed".into(),
                message: expected
            }
        );
        // A VM in a group it has no role on: refused over the VM's id.
        let error = h
            .arm
            .read_vm_summary(SUB, "rg-api", "api-01")
            .await
            .expect_err("refused");
        assert!(
            error.to_string().contains(&format!(
                "over scope '/subscriptions/{SUB}/resourceGroups/rg-api/providers/Microsoft.Compute/virtualMachines/api-01'"
            )),
            "{error}"
        );
        // ARM lists only the resource groups the principal may read (ResourceGroups_List).
        assert_eq!(h.arm.list_resource_groups(SUB).await.expect("groups"), ["rg-web"]);
        // Another app's secret signs nobody in.
        let stranger =
            Harness::with_secret(group_scoped_world(), SimOptions::fast(), "sim-secret").await;
        let error = arm_error(stranger.check("rg-web/web-01").await);
        assert!(matches!(error, ArmError::SignIn { .. }), "{error:?}");
        // A world without principals keeps the one client that may do everything.
        let open = Harness::start(World::new().vm("web-01").vm("api-01").in_group("rg-api")).await;
        assert_eq!(
            open.arm.list_resource_groups(SUB).await.expect("groups"),
            ["rg-api", "rg-web"]
        );
    })
    .await
}

#[tokio::test]
async fn a_group_scoped_principal_checks_a_vm_named_by_group_or_id_with_one_read() {
    within(async {
        let h = group_scoped().await;
        let report = h.check("rg-web/web-01").await.expect("report");
        assert_eq!(report.verdict, Verdict::Ok, "{:#?}", report.findings);
        let by_id = h.check(&report.vm.id).await.expect("report by id");
        assert_eq!(by_id.vm, report.vm);
        assert_eq!(vm_lists(&h), 0, "{:?}", h.sim.stats().by_route);
        // The door's path: the directory reads the VM, it lists nothing.
        let directory = VmDirectory::new();
        let query = VmQuery::parse("rg-web/web-01").expect("valid");
        let found = directory
            .resolve(&h.arm, &query, &h.subscriptions)
            .await
            .expect("found");
        assert_eq!(found.vm.id, report.vm.id);
        assert!(found.windows == Some(true) && !found.nic_ids.is_empty());
        assert_eq!(vm_lists(&h), 0, "{:?}", h.sim.stats().by_route);
        // A group and name that is not there is not found, without a list.
        match h.check("rg-web/ghost-01").await {
            Err(CheckError::Resolve(ResolveError::NotFound { name, .. })) => {
                assert_eq!(name, "rg-web/ghost-01")
            }
            other => panic!("expected not found, got {other:?}"),
        }
        assert_eq!(vm_lists(&h), 0);
    })
    .await
}

#[tokio::test]
async fn a_bare_name_falls_back_to_the_groups_the_principal_can_see() {
    within(async {
        let h = group_scoped().await;
        // The subscription list is refused; the groups ARM lists for it are listed instead.
        let report = h.check("web-01").await.expect("found in rg-web");
        assert_eq!(report.vm.resource_group, "rg-web");
        let routes = h.sim.stats().by_route;
        assert_eq!(
            routes.get("GET resourcegroups (list)"),
            Some(&1),
            "{routes:?}"
        );
        // A VM outside those groups: not found, saying what Azure refused and how to name it.
        let text = match h.check("api-01").await {
            Err(CheckError::Resolve(e @ ResolveError::NotFound { .. })) => e.to_string(),
            other => panic!("expected not found, got {other:?}"),
        };
        for part in [
            "no VM named api-01 in resource group rg-web of subscription",
            "'Microsoft.Compute/virtualMachines/read'",
            &format!("'/subscriptions/{SUB}/providers/Microsoft.Compute'"),
            "AuthorizationFailed",
            "RESOURCE-GROUP/NAME",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
        // The door's directory does the same, and suggests among what it can see.
        let directory = VmDirectory::new();
        let web = directory
            .resolve(
                &h.arm,
                &VmQuery::parse("web-01").expect("valid"),
                &h.subscriptions,
            )
            .await
            .expect("found");
        assert_eq!(web.vm.resource_group, "rg-web");
        let err = directory
            .resolve(
                &h.arm,
                &VmQuery::parse("web-1").expect("valid"),
                &h.subscriptions,
            )
            .await
            .expect_err("not found");
        match &err {
            ResolveError::NotFound { suggestions, .. } => {
                assert_eq!(suggestions[0].name, "web-01")
            }
            other => panic!("expected not found, got {other:?}"),
        }
        assert!(err.to_string().contains("RESOURCE-GROUP/NAME"), "{err}");
    })
    .await
}

/// A sweep is paced by ARM's write bucket, which the effective-rules POST spends: it sends one
/// only for a VM its own read showed running, never for one that turns out deallocated (Azure
/// would answer 400 and keep the token).
#[tokio::test]
async fn a_sweep_spends_a_write_only_on_running_vms() {
    within(async {
        let world = World::new()
            .page_size(100)
            .fleet("rg-fleet", "vm", 20)
            .select("vm-007")
            .deallocated()
            .select("vm-012")
            .stopped();
        let options = support::polled(0);
        let h = Harness::with_options(world, options).await;
        let report = run_sweep(&h, &scope("rg-fleet"), &SweepOptions::default()).await;
        assert_eq!(report.vms.len(), 20);
        let by_route = h.sim.stats().by_route;
        assert_eq!(
            by_route["POST networkInterfaces/effectiveNetworkSecurityGroups"],
            18
        );
        assert_eq!(by_route["GET Microsoft.Network/operationResults"], 18);
        assert_eq!(
            by_route["GET virtualMachines"], 20,
            "each VM's instance view, once"
        );
        assert_eq!(
            h.sim.stats().log.iter().filter(|e| e.status == 400).count(),
            0
        );
    })
    .await
}
