//! Run Command through the real SDK over HTTP: the simulator's guest answering rdp-doctor's
//! scripts, and Azure's refusals (one at a time, a stopped VM, an agent not Ready, a Linux VM,
//! a Reader), each as `Arm::run_command` reports it.

use crate::support::{self, within, Harness};
use rdp_doctor::azure::{ArmError, VmRef};
use rdp_doctor::diagnose::guest::READ_SCRIPT_MARKER;
use rdp_doctor::sim::{PowerState, SimOptions, World, DEFAULT_SUBSCRIPTION};
use serde_json::Value;
use std::time::{Duration, Instant};

fn vm(name: &str) -> VmRef {
    vm_in("rg-web", name)
}

fn vm_in(group: &str, name: &str) -> VmRef {
    VmRef {
        name: name.to_owned(),
        resource_group: group.to_owned(),
        subscription_id: DEFAULT_SUBSCRIPTION.to_owned(),
        id: format!("/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/{name}"),
    }
}

fn read_script() -> Vec<String> {
    vec![
        READ_SCRIPT_MARKER.to_owned(),
        "Write-Output 'ok'".to_owned(),
    ]
}

/// The JSON of the `RDP-DOCTOR-GUEST` line.
fn guest_json(stdout: &str) -> Value {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RDP-DOCTOR-GUEST "))
        .unwrap_or_else(|| panic!("no RDP-DOCTOR-GUEST line in {stdout:?}"));
    serde_json::from_str(line).expect("compact JSON")
}

fn delayed(delay: Duration) -> SimOptions {
    SimOptions {
        run_command_delay: delay,
        ..SimOptions::fast()
    }
}

#[tokio::test]
async fn the_read_script_reports_a_healthy_guest() {
    within(async {
        let h = Harness::start(World::new().vm("web-01")).await;
        let out = h
            .arm
            .run_command(&vm("web-01"), &read_script())
            .await
            .expect("runs");
        assert_eq!(out.stderr, "");
        let facts = guest_json(&out.stdout);
        assert_eq!(facts["v"], 1);
        assert_eq!(facts["rdp"]["fDenyTSConnections"], 0);
        assert_eq!(facts["rdp"]["policyDeny"], Value::Null);
        assert_eq!(facts["termService"]["status"], "Running");
        assert_eq!(facts["termService"]["startType"], "Automatic");
        assert_eq!(facts["listener"]["port"], 3389);
        assert_eq!(facts["listener"]["listening"], true);
        assert_eq!(facts["firewall"]["profiles"].as_array().unwrap().len(), 3);
        assert_eq!(
            facts["firewall"]["rules"][0]["name"],
            "RemoteDesktop-UserMode-In-TCP"
        );
        assert_eq!(facts["firewall"]["rules"][0]["enabled"], true);
        assert_eq!(facts["nla"]["userAuthentication"], 1);
        assert_eq!(facts["nla"]["securityLayer"], 2);
        assert_eq!(facts["certificate"]["subject"], "CN=web-01");
        let not_after = facts["certificate"]["notAfter"].as_str().unwrap();
        assert!(
            not_after > facts["checkedAt"].as_str().unwrap(),
            "valid for months"
        );
        assert_eq!(facts["licensing"]["rdshInstalled"], false);
        assert_eq!(facts["licensing"]["graceDaysLeft"], Value::Null);
        assert!(facts["systemDrive"]["freeBytes"].as_u64().unwrap() > 10_000_000_000);
        assert_eq!(facts["pendingReboot"]["pending"], false);
        // A POST Azure acts on: it spends the write bucket and is sent once.
        assert_eq!(support::requests_to(&h.sim, "POST", "/runCommand"), 1);
    })
    .await;
}

#[tokio::test]
async fn the_read_script_reports_what_the_world_broke() {
    within(async {
        let world = World::new().vm("web-01").rdp_disabled().guest(|g| {
            g.policy_deny = Some(1);
            g.term_service_status = rdp_doctor::sim::ServiceStatus::Stopped;
            g.term_service_start_type = rdp_doctor::sim::StartType::Disabled;
            g.firewall_rdp_rule = false;
            g.certificate_not_after = Some("2026-01-01T00:00:00Z".to_owned());
            g.rdsh_installed = true;
            g.grace_days_left = 0;
            g.free_bytes = 100_000_000;
            g.pending_reboot = vec!["WindowsUpdate".to_owned()];
        });
        let h = Harness::start(world).await;
        let out = h
            .arm
            .run_command(&vm("web-01"), &read_script())
            .await
            .expect("runs");
        let facts = guest_json(&out.stdout);
        assert_eq!(facts["rdp"]["fDenyTSConnections"], 1);
        assert_eq!(facts["rdp"]["policyDeny"], 1);
        assert_eq!(facts["termService"]["status"], "Stopped");
        assert_eq!(facts["termService"]["startType"], "Disabled");
        assert_eq!(facts["listener"]["listening"], false);
        assert_eq!(facts["firewall"]["rules"][0]["enabled"], false);
        assert_eq!(facts["certificate"]["notAfter"], "2026-01-01T00:00:00Z");
        assert_eq!(facts["licensing"]["rdshInstalled"], true);
        assert_eq!(facts["licensing"]["mode"], Value::Null);
        assert_eq!(facts["licensing"]["graceDaysLeft"], 0);
        assert_eq!(facts["systemDrive"]["freeBytes"], 100_000_000);
        assert_eq!(facts["pendingReboot"]["reasons"][0], "WindowsUpdate");
    })
    .await;
}

#[tokio::test]
async fn any_other_script_runs_nothing_and_says_so_on_stderr() {
    within(async {
        let h = Harness::start(World::new().vm("web-01")).await;
        let script = vec![
            "Get-Service TermService".to_owned(),
            READ_SCRIPT_MARKER.to_owned(),
        ];
        let out = h
            .arm
            .run_command(&vm("web-01"), &script)
            .await
            .expect("runs");
        assert_eq!(out.stdout, "");
        assert!(
            out.stderr.contains("runs only rdp-doctor's scripts"),
            "{}",
            out.stderr
        );
    })
    .await;
}

#[tokio::test]
async fn a_run_command_takes_the_configured_time() {
    within(async {
        let delay = Duration::from_millis(400);
        let h = Harness::with_options(World::new().vm("web-01"), delayed(delay)).await;
        let started = Instant::now();
        h.arm
            .run_command(&vm("web-01"), &read_script())
            .await
            .expect("runs");
        assert!(started.elapsed() >= delay, "took {:?}", started.elapsed());
    })
    .await;
}

#[tokio::test]
async fn one_run_command_at_a_time_as_azure_refuses_a_second() {
    within(async {
        let h = Harness::with_options(World::new().vm("web-01"), delayed(Duration::from_secs(1)))
            .await;
        let first = {
            let arm = h.arm.clone();
            tokio::spawn(async move { arm.run_command(&vm("web-01"), &read_script()).await })
        };
        support::until("the first Run Command is accepted", h.sim.watch_answers(), || {
            support::requests_to(&h.sim, "POST", "/runCommand") == 1
        })
        .await;
        match h.arm.run_command(&vm("web-01"), &read_script()).await {
            Err(ArmError::Conflict { code, message }) => {
                assert_eq!(code, "Conflict");
                assert_eq!(message, "Run command extension execution is in progress. Please wait for completion before invoking a run command.");
            }
            other => panic!("expected Azure's 409, got {other:?}"),
        }
        let out = first.await.expect("joined").expect("the first runs to its end");
        assert!(out.stdout.starts_with("RDP-DOCTOR-GUEST "));
        // Once it is done, the next one runs.
        h.arm.run_command(&vm("web-01"), &read_script()).await.expect("runs");
    })
    .await;
}

#[tokio::test]
async fn a_vm_that_is_not_running_or_whose_agent_is_not_ready_fails_as_azure_does() {
    within(async {
        let world = World::new()
            .vm("off-01")
            .power_state(PowerState::Deallocated)
            .vm("sick-01")
            .agent_not_ready("VM Agent is unresponsive.")
            .vm("tux-01")
            .linux();
        let h = Harness::start(world).await;
        match h.arm.run_command(&vm("off-01"), &read_script()).await {
            Err(ArmError::Conflict { code, message }) => {
                assert_eq!(code, "OperationNotAllowed");
                assert_eq!(
                    message,
                    "The operation requires the VM to be running (or set to run)."
                );
            }
            other => panic!("expected a 409 for a deallocated VM, got {other:?}"),
        }
        match h.arm.run_command(&vm("sick-01"), &read_script()).await {
            Err(ArmError::OperationFailed { code, message, .. }) => {
                assert_eq!(code, "VMAgentStatusCommunicationError");
                assert!(
                    message.contains("has not reported status for VM agent"),
                    "{message}"
                );
            }
            other => panic!("expected the operation to fail, got {other:?}"),
        }
        match h.arm.run_command(&vm("tux-01"), &read_script()).await {
            Err(ArmError::Conflict { code, message }) => {
                assert_eq!(code, "Conflict");
                assert_eq!(
                    message,
                    "Run command OS type 'Windows' does not match the target OS Linux."
                );
            }
            other => panic!("expected a 409 for a Linux VM, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn a_reader_may_not_run_commands_and_a_vm_contributor_may() {
    within(async {
        let sub = format!("/subscriptions/{DEFAULT_SUBSCRIPTION}");
        let world = World::new()
            .client_secret("s")
            .vm("web-01")
            .vm("api-01")
            .in_group("rg-api")
            .principal(support::CLIENT, "s")
            .role_at("Reader", &sub)
            .role_at(
                "Virtual Machine Contributor",
                &format!("{sub}/resourceGroups/rg-api"),
            );
        let h = Harness::start(world).await;
        match h.arm.run_command(&vm("web-01"), &read_script()).await {
            Err(ArmError::Forbidden { code, message }) => {
                assert_eq!(code, "AuthorizationFailed");
                assert!(
                    message.contains("'Microsoft.Compute/virtualMachines/runCommand/action'"),
                    "{message}"
                );
            }
            other => panic!("expected 403, got {other:?}"),
        }
        h.arm
            .run_command(&vm_in("rg-api", "api-01"), &read_script())
            .await
            .expect("Virtual Machine Contributor runs commands");
    })
    .await;
}

#[tokio::test]
async fn a_run_command_that_outlasts_the_timeout_is_reported_as_one() {
    within(async {
        let h = Harness::with_options(World::new().vm("web-01"), delayed(Duration::from_secs(30)))
            .await;
        let arm = h.arm_with(|s| s.run_command_timeout = Duration::from_millis(200));
        match arm.run_command(&vm("web-01"), &read_script()).await {
            Err(ArmError::Timeout { what, .. }) => assert!(what.contains("Run Command"), "{what}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn runbook_reads_the_guest_with_the_real_script_and_tells_failures_apart() {
    use rdp_doctor::runbook::guest::{self, GuestError};
    within(async {
        let world = World::new()
            .vm("web-01")
            .vm("off-01")
            .power_state(PowerState::Stopped)
            .vm("sick-01")
            .agent_not_ready("VM Agent is unresponsive.");
        let h = Harness::start(world).await;
        let long = Duration::from_secs(10);
        let facts = guest::read(&h.arm, &vm("web-01"), long)
            .await
            .expect("reads");
        assert_eq!(facts.v, 1);
        assert_eq!(facts.listener.and_then(|l| l.port), Some(3389));
        assert!(matches!(
            guest::read(&h.arm, &vm("off-01"), long).await,
            Err(GuestError::VmNotRunning { .. })
        ));
        let sick = guest::read(&h.arm, &vm("sick-01"), long).await.unwrap_err();
        assert!(matches!(sick, GuestError::AgentNotReady { .. }), "{sick:?}");
        assert!(sick.to_string().contains("VM agent to be Ready"), "{sick}");
    })
    .await;
}

#[tokio::test]
async fn runbook_read_says_when_another_run_command_runs_or_time_runs_out() {
    use rdp_doctor::runbook::guest::{self, GuestError};
    within(async {
        let h =
            Harness::with_options(World::new().vm("web-01"), delayed(Duration::from_secs(2))).await;
        let first = {
            let arm = h.arm.clone();
            tokio::spawn(
                async move { guest::read(&arm, &vm("web-01"), Duration::from_secs(10)).await },
            )
        };
        support::until(
            "the first Run Command is accepted",
            h.sim.watch_answers(),
            || support::requests_to(&h.sim, "POST", "/runCommand") == 1,
        )
        .await;
        assert!(matches!(
            guest::read(&h.arm, &vm("web-01"), Duration::from_secs(10)).await,
            Err(GuestError::Busy { .. })
        ));
        first.await.expect("joined").expect("the first reads");
        let short = Duration::from_millis(300);
        match guest::read(&h.arm, &vm("web-01"), short).await {
            Err(GuestError::TimedOut { after }) => assert_eq!(after, short),
            other => panic!("expected a timeout, got {other:?}"),
        }
    })
    .await;
}

/// Runs the fix `fix` in `name` and returns the read that follows it.
async fn fix_then_read(h: &Harness, name: &str, fix: &str) -> (Vec<String>, Value) {
    use rdp_doctor::diagnose::guest::{fix_script_marker, parse_fix};
    let script = vec![fix_script_marker(fix), "# fix".to_owned()];
    let out = h
        .arm
        .run_command(&vm(name), &script)
        .await
        .expect("the fix runs");
    let fixed = parse_fix(&out.stdout).expect("the fix line");
    assert_eq!(fixed.fix, fix);
    let read = h
        .arm
        .run_command(&vm(name), &read_script())
        .await
        .expect("reads");
    (fixed.changed, guest_json(&read.stdout))
}

#[tokio::test]
async fn each_fix_script_changes_the_guest_as_the_contract_says() {
    use rdp_doctor::sim::{ServiceStatus, StartType};
    within(async {
        let world = World::new()
            .vm("rdp-off")
            .rdp_disabled()
            .guest(|g| g.policy_deny = Some(1))
            .vm("svc")
            .guest(|g| {
                g.term_service_status = ServiceStatus::Stopped;
                g.term_service_start_type = StartType::Disabled;
            })
            .vm("port")
            .vm("fw")
            .guest(|g| g.firewall_rdp_rule = false)
            .vm("cert")
            .guest(|g| g.certificate_not_after = Some("2026-01-01T00:00:00Z".to_owned()))
            .vm("lic")
            .guest(|g| {
                g.rdsh_installed = true;
                g.grace_days_left = 0;
            })
            .vm("disk")
            .guest(|g| {
                g.free_bytes = 100_000_000;
                g.reclaimable_bytes = 5_000_000_000;
            });
        let mut world = world;
        world.vms[2].rdp_port = 3390;
        let h = Harness::start(world).await;

        let (changed, facts) = fix_then_read(&h, "rdp-off", "enable-rdp").await;
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert_eq!(facts["rdp"]["fDenyTSConnections"], 0);
        assert_eq!(facts["rdp"]["policyDeny"], Value::Null);

        let (_, facts) = fix_then_read(&h, "svc", "start-termservice").await;
        assert_eq!(facts["termService"]["status"], "Running");
        assert_eq!(facts["termService"]["startType"], "Automatic");
        assert_eq!(facts["listener"]["listening"], true);

        let (changed, facts) = fix_then_read(&h, "port", "reset-rdp-port").await;
        assert!(changed[0].contains("was 3390"), "{changed:?}");
        assert_eq!(facts["listener"]["port"], 3389);

        let (_, facts) = fix_then_read(&h, "fw", "enable-firewall-rdp").await;
        assert_eq!(facts["firewall"]["rules"][0]["enabled"], true);

        let (_, facts) = fix_then_read(&h, "cert", "renew-rdp-certificate").await;
        let not_after = facts["certificate"]["notAfter"].as_str().unwrap();
        assert!(
            not_after > facts["checkedAt"].as_str().unwrap(),
            "{not_after}"
        );
        assert!(not_after < "2027-12-01", "valid six months: {not_after}");

        let (_, facts) = fix_then_read(&h, "lic", "remove-rdsh-role").await;
        assert_eq!(facts["licensing"]["rdshInstalled"], false);
        assert_eq!(facts["licensing"]["graceDaysLeft"], Value::Null);
        assert_eq!(facts["pendingReboot"]["pending"], true);
        assert_eq!(
            facts["pendingReboot"]["reasons"][0],
            "ComponentBasedServicing"
        );

        let (_, facts) = fix_then_read(&h, "disk", "free-disk-space").await;
        assert_eq!(facts["systemDrive"]["freeBytes"], 5_100_000_000u64);
        // Nothing more to reclaim the second time.
        let (_, facts) = fix_then_read(&h, "disk", "free-disk-space").await;
        assert_eq!(facts["systemDrive"]["freeBytes"], 5_100_000_000u64);
    })
    .await;
}

#[tokio::test]
async fn the_demo_guests_are_each_broken_in_their_one_way() {
    within(async {
        let h = Harness::start(rdp_doctor::sim::demo_world()).await;
        let read = |name: &'static str| {
            let arm = h.arm.clone();
            async move {
                let out = arm
                    .run_command(&vm(name), &read_script())
                    .await
                    .expect("reads");
                guest_json(&out.stdout)
            }
        };
        assert_eq!(read("web-01").await["rdp"]["fDenyTSConnections"], 0);
        assert_eq!(read("rdp-off-01").await["rdp"]["fDenyTSConnections"], 1);
        let svc = read("svc-01").await;
        assert_eq!(svc["termService"]["status"], "Stopped");
        assert_eq!(svc["termService"]["startType"], "Disabled");
        assert_eq!(svc["listener"]["listening"], false);
        assert_eq!(read("port-01").await["listener"]["port"], 3390);
        assert_eq!(
            read("fw-01").await["firewall"]["rules"][0]["enabled"],
            false
        );
        let cert = read("cert-01").await;
        assert!(
            cert["certificate"]["notAfter"].as_str().unwrap() < cert["checkedAt"].as_str().unwrap()
        );
        let lic = read("lic-01").await;
        assert_eq!(lic["licensing"]["rdshInstalled"], true);
        assert_eq!(lic["licensing"]["mode"], Value::Null);
        assert_eq!(lic["licensing"]["graceDaysLeft"], 0);
        assert_eq!(
            read("disk-01").await["systemDrive"]["freeBytes"],
            104_857_600
        );
    })
    .await;
}
