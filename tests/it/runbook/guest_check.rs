//! The guest checks through the door (`Door::guest`): the runbook's ARM checks, then the real
//! read script through Run Command over HTTP to the simulator's guest, each failure found with
//! its fix; skipped VMs cost no Run Command; one per VM at a time; a timeout is a finding.

use crate::support::{self, requests_to, until, within, Harness};
use rdp_doctor::diagnose::{ActionId, CheckId, Status};
use rdp_doctor::policy::{Actor, Place};
use rdp_doctor::runbook::door::{Caller, Door, DoorError};
use rdp_doctor::runbook::{CheckOptions, Event, Report, Verdict};
use rdp_doctor::sim::{ServiceStatus, SimOptions, StartType, World, DEFAULT_SUBSCRIPTION};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const POLICY: &str = r#"
[[grant]]
cli_user = "olga"
level = "operate"
scope = "*"
[[grant]]
cli_user = "rita"
level = "read"
scope = "*"
"#;

fn door(h: &Harness) -> Door {
    Door::new(
        h.arm.clone(),
        h.catalog.clone(),
        Arc::new(support::policy(Some(POLICY))),
        h.subscriptions.clone(),
    )
}

fn at_terminal(name: &str) -> Caller {
    Caller {
        actor: Actor::terminal(name),
        place: Place::Terminal,
    }
}

async fn guest(door: &Door, vm: &str) -> Report {
    door.guest(&at_terminal("olga"), vm, &CheckOptions::default(), &|_| {})
        .await
        .expect("a report")
}

fn finding(report: &Report, step: CheckId) -> &rdp_doctor::diagnose::Finding {
    report
        .finding(step)
        .unwrap_or_else(|| panic!("no {step} finding in {:#?}", report.findings))
}

fn run_commands(h: &Harness) -> usize {
    requests_to(&h.sim, "POST", "/runCommand")
}

/// One VM per guest failure, as the demo world's (and each fix's) VMs are.
fn broken_guests() -> World {
    let mut world = World::new()
        .vm("rdp-off-01")
        .guest(|g| g.policy_deny = Some(1))
        .vm("svc-01")
        .guest(|g| {
            g.term_service_status = ServiceStatus::Stopped;
            g.term_service_start_type = StartType::Disabled;
        })
        .vm("port-01")
        .vm("fw-01")
        .guest(|g| g.firewall_rdp_rule = false)
        .vm("cert-01")
        .guest(|g| g.certificate_not_after = Some("2025-11-01T00:00:00Z".into()))
        .vm("lic-01")
        .guest(|g| {
            g.rdsh_installed = true;
            g.grace_days_left = 0;
        })
        .vm("disk-01")
        .guest(|g| g.free_bytes = 200 * 1024 * 1024);
    let port = world
        .find_vm_mut(DEFAULT_SUBSCRIPTION, "rg-web", "port-01")
        .expect("port-01");
    port.rdp_port = 3390;
    world
}

#[tokio::test]
async fn each_guest_failure_is_found_with_its_fix() {
    within(async {
        let h = Harness::with_options(broken_guests(), SimOptions::fast()).await;
        let door = door(&h);
        for (vm, step, fix, words) in [
            (
                "rdp-off-01",
                CheckId::GuestRdp,
                ActionId::EnableRdp,
                "group policy",
            ),
            (
                "svc-01",
                CheckId::GuestService,
                ActionId::StartTermservice,
                "TermService) is Stopped (start type Disabled)",
            ),
            (
                "port-01",
                CheckId::GuestListener,
                ActionId::ResetRdpPort,
                "port 3390, not 3389",
            ),
            (
                "fw-01",
                CheckId::GuestFirewall,
                ActionId::EnableFirewallRdp,
                "No enabled inbound Windows Firewall rule allows TCP 3389",
            ),
            (
                "cert-01",
                CheckId::GuestCertificate,
                ActionId::RenewRdpCertificate,
                "expired on 2025-11-01T00:00:00Z",
            ),
            (
                "lic-01",
                CheckId::GuestLicensing,
                ActionId::RemoveRdshRole,
                "no Remote Desktop License Servers available",
            ),
            (
                "disk-01",
                CheckId::GuestDisk,
                ActionId::FreeDiskSpace,
                "is full",
            ),
        ] {
            let report = guest(&door, vm).await;
            let f = finding(&report, step);
            assert_eq!(f.status, Status::Fail, "{vm}: {}", f.summary);
            assert!(f.summary.contains(words), "{vm}: {}", f.summary);
            assert_eq!(f.suggests, Some(fix), "{vm}");
            assert_eq!(report.next_action, Some(fix), "{vm}: the ladder's pick");
            assert_eq!(report.verdict, Verdict::Problems, "{vm}");
            // The ARM findings are there too, and every guest check has its finding.
            for id in CheckId::ARM.into_iter().chain(CheckId::GUEST) {
                finding(&report, id);
            }
        }
        assert_eq!(run_commands(&h), 7, "one Run Command per guest check");
    })
    .await
}

#[tokio::test]
async fn a_healthy_guest_passes_every_guest_check_after_the_arm_report() {
    within(async {
        let h = Harness::with_options(World::new().vm("web-01"), SimOptions::fast()).await;
        let events = Mutex::new(Vec::new());
        let report = door(&h)
            .guest(
                &at_terminal("olga"),
                "web-01",
                &CheckOptions::default(),
                &|e| {
                    let seen = match e {
                        Event::ArmChecked(report) => {
                            format!("arm report of {} findings", report.findings.len())
                        }
                        Event::GuestStarted => "run command".to_string(),
                        Event::StepFinished(f) if f.step.is_guest() => "guest finding".to_string(),
                        _ => return,
                    };
                    events.lock().unwrap().push(seen);
                },
            )
            .await
            .expect("a report");
        for id in CheckId::GUEST {
            assert_eq!(
                finding(&report, id).status,
                Status::Pass,
                "{id}: {}",
                finding(&report, id).summary
            );
        }
        assert_eq!(report.verdict, Verdict::Ok);
        assert_eq!(report.next_action, None);
        assert_eq!(run_commands(&h), 1);
        let events = events.into_inner().unwrap();
        assert_eq!(
            events[..2],
            ["arm report of 7 findings", "run command"],
            "{events:?}"
        );
        assert_eq!(events[2..], vec!["guest finding"; 8], "{events:?}");
        // The JSON contract: the same shape, the guest checks' step ids.
        let json = serde_json::to_value(&report).unwrap();
        let steps: Vec<&str> = json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["step"].as_str().unwrap())
            .collect();
        assert_eq!(
            steps,
            [
                "vm-status",
                "vm-agent",
                "public-ip",
                "nsg",
                "resource-health",
                "boot-diagnostics",
                "network-path",
                "guest-rdp",
                "guest-service",
                "guest-listener",
                "guest-firewall",
                "guest-nla",
                "guest-certificate",
                "guest-licensing",
                "guest-disk"
            ]
        );
        assert_eq!(json["findings"][7]["evidence"]["fDenyTSConnections"], 0);
    })
    .await
}

#[tokio::test]
async fn linux_stopped_and_agent_not_ready_vms_are_skipped_without_run_command() {
    within(async {
        let world = World::new()
            .vm("tux-01")
            .linux()
            .vm("off-01")
            .deallocated()
            .vm("sick-01")
            .agent_not_ready("VM status blob not found.");
        let h = Harness::with_options(world, SimOptions::fast()).await;
        let door = door(&h);
        for (vm, why) in [
            ("tux-01", "Linux VM"),
            ("off-01", "The VM is not running"),
            ("sick-01", "The guest agent is not Ready"),
        ] {
            let report = guest(&door, vm).await;
            for id in CheckId::GUEST {
                let f = finding(&report, id);
                assert_eq!(f.status, Status::Skip, "{vm} {id}");
                assert!(f.summary.starts_with(why), "{vm}: {}", f.summary);
                assert!(
                    f.summary.contains("no Run Command was sent")
                        || f.summary.contains("none was sent"),
                    "{}",
                    f.summary
                );
            }
        }
        assert_eq!(
            run_commands(&h),
            0,
            "no Run Command for a VM that cannot run one"
        );
    })
    .await
}

#[tokio::test]
async fn one_guest_check_per_vm_at_a_time_here_and_in_azure() {
    within(async {
        let options = SimOptions {
            run_command_delay: Duration::from_secs(3),
            ..SimOptions::fast()
        };
        let h = Harness::with_options(World::new().vm("web-01"), options).await;
        let door = door(&h);
        let first = {
            let door = door.clone();
            tokio::spawn(async move { guest(&door, "web-01").await })
        };
        until(
            "the first guest check's Run Command",
            h.sim.watch_answers(),
            || run_commands(&h) == 1,
        )
        .await;
        // Another person, same VM, same process: told who and since when, no Run Command.
        let second = guest(&door, "web-01").await;
        let f = finding(&second, CheckId::GuestRdp);
        assert_eq!(f.status, Status::Error);
        assert!(
            f.summary
                .starts_with("A guest check of web-01 is already running: olga started it at "),
            "{}",
            f.summary
        );
        assert_eq!(second.verdict, Verdict::Unknown);
        assert_eq!(run_commands(&h), 1);
        let first = first.await.unwrap();
        assert_eq!(finding(&first, CheckId::GuestRdp).status, Status::Pass);

        // A Run Command someone else started (another process, the portal): Azure's 409, in
        // the same words.
        let vm = first.vm.clone();
        let other = {
            let arm = h.arm.clone();
            tokio::spawn(async move {
                arm.run_command(
                    &vm,
                    &[rdp_doctor::diagnose::guest::READ_SCRIPT_MARKER.to_string()],
                )
                .await
            })
        };
        until("the other Run Command", h.sim.watch_answers(), || {
            run_commands(&h) == 2
        })
        .await;
        let refused = guest(&door, "web-01").await;
        let f = finding(&refused, CheckId::GuestDisk);
        assert_eq!(f.status, Status::Error);
        assert!(
            f.summary.starts_with(
                "A guest check of web-01 is already running: Azure reports another Run Command"
            ),
            "{}",
            f.summary
        );
        other.await.unwrap().expect("the other Run Command ends");
        // Free again.
        let after = guest(&door, "web-01").await;
        assert_eq!(finding(&after, CheckId::GuestDisk).status, Status::Pass);
    })
    .await
}

#[tokio::test]
async fn a_run_command_that_takes_too_long_is_a_timeout_finding() {
    within(async {
        let options = SimOptions {
            run_command_delay: Duration::from_secs(60),
            ..SimOptions::fast()
        };
        let h = Harness::with_options(World::new().vm("web-01"), options).await;
        let door = Door::new(
            h.arm_with(|s| s.run_command_timeout = Duration::from_secs(1)),
            h.catalog.clone(),
            Arc::new(support::policy(Some(POLICY))),
            h.subscriptions.clone(),
        );
        let report = guest(&door, "web-01").await;
        for id in CheckId::GUEST {
            let f = finding(&report, id);
            assert_eq!(f.status, Status::Error, "{id}");
            assert!(
                f.summary
                    .starts_with("Run Command did not finish within 1 s"),
                "{}",
                f.summary
            );
        }
        // The ARM checks stand.
        assert_eq!(finding(&report, CheckId::Nsg).status, Status::Pass);
        assert_eq!(report.verdict, Verdict::Unknown);
    })
    .await
}

#[tokio::test]
async fn a_listener_on_3390_makes_the_nsg_check_judge_3390() {
    within(async {
        let h = Harness::with_options(broken_guests(), SimOptions::fast()).await;
        let door = door(&h);
        // Without the guest checks the NSG allows 3389 and that is all rdp-doctor knows.
        let plain = door
            .check(
                &at_terminal("olga"),
                "port-01",
                &CheckOptions::default(),
                &|_| {},
            )
            .await
            .unwrap();
        assert_eq!(finding(&plain, CheckId::Nsg).status, Status::Pass);
        assert_eq!(finding(&plain, CheckId::Nsg).title, None, "the runbook's title");
        let report = guest(&door, "port-01").await;
        let nsg = finding(&report, CheckId::Nsg);
        assert_eq!(nsg.status, Status::Fail, "{}", nsg.summary);
        assert!(
            nsg.summary
                .starts_with("TCP 3390 from the Internet is denied by rule DenyAllInBound (priority 65500) in NSG port-01-nsg"),
            "{}",
            nsg.summary
        );
        assert_eq!(nsg.evidence["port"], 3390);
        // Titled for the port judged, not the runbook's 3389.
        assert_eq!(
            nsg.title.as_deref(),
            Some("Network security group allows TCP 3390")
        );
        assert!(
            nsg.details
                .iter()
                .any(|d| d
                    .contains("Evaluated for TCP 3390, the port the guest's RDP listener is on")),
            "{:?}",
            nsg.details
        );
        assert_eq!(nsg.suggests, None, "open-rdp-port opens 3389");
        assert_eq!(report.next_action, Some(ActionId::ResetRdpPort));
    })
    .await
}

#[tokio::test]
async fn a_reader_is_refused_before_any_azure_request() {
    within(async {
        let h = Harness::with_options(World::new().vm("web-01"), SimOptions::fast()).await;
        let before = h.sim.stats().log.len();
        let err = door(&h)
            .guest(
                &at_terminal("rita"),
                "web-01",
                &CheckOptions::default(),
                &|_| {},
            )
            .await
            .expect_err("a reader may not run Run Command");
        assert!(matches!(err, DoorError::Denied(_)), "{err:?}");
        assert!(err.to_string().contains("operate"), "{err}");
        assert_eq!(h.sim.stats().log.len(), before, "no request reached Azure");
    })
    .await
}
