//! The guest fixes through the operator, against the simulator's model of the guest (the demo
//! world's broken VMs): request → confirm → the script sent once through Run Command → the
//! guest read again, with what changed; `port-01`'s two ways out; refusals; permissions; a lost
//! answer never re-sent; the audit log.

use super::{person, quiet, Bench, POLICY};
use crate::support::{self, within};
use rdp_doctor::diagnose::{nsg, ActionId};
use rdp_doctor::runbook::fix::{parse_source, FixRequest};
use rdp_doctor::runbook::operate::OperateError;
use rdp_doctor::sim::{Fault, FaultKind, SimOptions, World};

/// Run Command POSTs that reached Azure and were not refused with 409 (one already running on
/// the VM, which runs nothing): the fixes and the guest reads.
fn run_commands(b: &Bench) -> u64 {
    let stats = b.h.sim.stats();
    let arrived = stats
        .by_route
        .get("POST virtualMachines/runCommand")
        .copied()
        .unwrap_or(0);
    let refused = stats
        .log
        .iter()
        .filter(|e| e.method == "POST" && e.path.contains("/runCommand?") && e.status == 409)
        .count() as u64;
    arrived - refused
}

async fn demo() -> Bench {
    Bench::start(rdp_doctor::sim::demo_world()).await
}

/// Each demo VM's failure, the guest fix that repairs it and the guest check that then passes:
/// one Run Command for the fix, one for the re-check's read, and nothing sent at request time.
#[tokio::test]
async fn each_guest_fix_repairs_its_demo_vm_with_one_script_and_the_recheck_passes() {
    within(async {
        let b = demo().await;
        let alice = person("alice");
        for (name, fix, check) in [
            ("rdp-off-01", ActionId::EnableRdp, "guest-rdp"),
            ("svc-01", ActionId::StartTermservice, "guest-service"),
            ("port-01", ActionId::ResetRdpPort, "guest-listener"),
            ("fw-01", ActionId::EnableFirewallRdp, "guest-firewall"),
            (
                "cert-01",
                ActionId::RenewRdpCertificate,
                "guest-certificate",
            ),
            ("lic-01", ActionId::RemoveRdshRole, "guest-licensing"),
            ("disk-01", ActionId::FreeDiskSpace, "guest-disk"),
        ] {
            let vm = b.vm(name).await;
            let sent = run_commands(&b);
            let prompt = b
                .operator
                .request(&alice, None, &vm, FixRequest::Guest(fix))
                .await
                .unwrap_or_else(|e| panic!("{fix} on {name}: {e}"));
            assert_eq!(run_commands(&b), sent, "{fix}: a prompt runs nothing");
            assert!(
                prompt
                    .plan
                    .consequences
                    .iter()
                    .any(|c| c.contains("as SYSTEM")),
                "{fix}: {:?}",
                prompt.plan.consequences
            );
            let outcome = b
                .operator
                .confirm(&alice, None, &prompt.confirmation_id, &quiet)
                .await
                .unwrap_or_else(|e| panic!("{fix} on {name}: {e}"));
            assert!(
                outcome.result.is_ok(),
                "{fix}: {:?} {:?}",
                outcome.result,
                outcome.notes
            );
            assert!(outcome.notes.is_empty(), "{fix}: {:?}", outcome.notes);
            assert_eq!(
                run_commands(&b) - sent,
                2,
                "{fix}: the script once, then the re-check's read"
            );
            let passes = format!("{check}: now passes");
            assert!(
                outcome.changes.iter().any(|c| c.starts_with(&passes)),
                "{fix} on {name}: {:?}",
                outcome.changes
            );
            // What the script said it changed comes first.
            assert!(
                !outcome.changes[0].starts_with(check),
                "{fix}: {:?}",
                outcome.changes
            );
            assert!(
                b.operator
                    .store
                    .current_operation(&vm.id)
                    .await
                    .unwrap()
                    .is_none(),
                "{fix}: the VM is free again"
            );
            let audit = b.operator.store.recent_audit(Some(name), 20).await.unwrap();
            for (command, result) in [
                (fix.as_str(), "requested"),
                ("confirm", "confirmed"),
                (fix.as_str(), "succeeded"),
            ] {
                assert!(
                    audit
                        .iter()
                        .any(|e| e.command == command && e.result.starts_with(result)),
                    "{fix}: no `{command}` `{result}` in {audit:#?}"
                );
            }
        }
        let world = b.h.sim.world();
        assert!(world.vm("rdp-off-01").rdp_enabled());
        assert_eq!(world.vm("port-01").rdp_port(), 3389);
    })
    .await
}

/// `enable-rdp` says what changed in the guest's own words, then the check that now passes.
#[tokio::test]
async fn the_outcome_says_what_the_script_changed_and_what_the_guest_shows_now() {
    within(async {
        let b = Bench::start(World::new().vm("web-01").rdp_disabled()).await;
        let web = b.vm("web-01").await;
        let prompt = b
            .ask("alice", &web, FixRequest::Guest(ActionId::EnableRdp))
            .await;
        let text = prompt.plan.consequences.join("\n");
        assert!(
            text.contains("To undo: `Set-ItemProperty") && text.contains("-Value 1`"),
            "{text}"
        );
        assert!(!text.contains("disconnected"), "{text}");
        let (outcome, said) = b.confirm_saying("alice", &prompt.confirmation_id).await;
        assert_eq!(
            outcome.changes,
            vec![
                "fDenyTSConnections set to 0 (was 1)".to_string(),
                "guest-rdp: now passes (Remote Desktop is enabled (fDenyTSConnections = 0))"
                    .to_string(),
            ]
        );
        let lines = said.lines();
        assert!(
            lines.contains(&"sent enable-rdp web-01".to_string()),
            "{lines:?}"
        );
        // Run again, the script finds nothing to change and says so.
        let again = b
            .ask("alice", &web, FixRequest::Guest(ActionId::EnableRdp))
            .await;
        let (outcome, _) = b.confirm_saying("alice", &again.confirmation_id).await;
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        assert_eq!(
            outcome.changes.first().map(String::as_str),
            Some("`enable-rdp` found nothing to change"),
            "{:?}",
            outcome.changes
        );
    })
    .await
}

/// `port-01`'s listener is on 3390: moving it back is one way; the other opens the NSG for 3390,
/// with the port stored in the confirmation, shown in the plan and named in the rule.
#[tokio::test]
async fn port_01_can_instead_open_the_nsg_for_its_custom_port() {
    within(async {
        let b = demo().await;
        let vm = b.vm("port-01").await;
        let source = parse_source("198.51.100.7").unwrap();
        let prompt = b
            .ask("alice", &vm, FixRequest::OpenRdpPort { source, port: 3390 })
            .await;
        assert_eq!(
            prompt.plan.headline,
            "Allow TCP 3390 from 198.51.100.7 to port-01"
        );
        let text = prompt.plan.consequences.join("\n");
        assert!(
            text.contains("rdp-doctor-allow-rdp-3390-198-51-100-7 (TCP 3390 from 198.51.100.7)"),
            "{text}"
        );
        assert!(text.contains("reset-rdp-port"), "{text}");
        let stored = b
            .operator
            .store
            .get_confirmation(&prompt.confirmation_id)
            .await
            .unwrap()
            .unwrap();
        let params: serde_json::Value = serde_json::from_str(&stored.params_json).unwrap();
        assert_eq!(params["port"], 3390);
        // Two-person in this policy: bob confirms.
        let (outcome, _) = b.confirm_saying("bob", &prompt.confirmation_id).await;
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        assert!(
            b.writes().iter().any(|w| w.starts_with("PUT")
                && w.contains("securityRules/rdp-doctor-allow-rdp-3390-198-51-100-7")),
            "{:?}",
            b.writes()
        );
        // Azure's effective rules now let 198.51.100.7 reach TCP 3390, and the listener stayed.
        let facts = b.operator.arm.vm_facts(&vm).await.unwrap();
        let nic = b.operator.arm.nic_facts(&facts.nic_ids[0]).await.unwrap();
        let nsgs = b.operator.arm.effective_nsgs(&nic.nic_id).await.unwrap();
        let verdict = nsg::evaluate(
            &nsgs,
            &nsg::Probe {
                source: nsg::TrafficSource::Address("198.51.100.7".parse().unwrap()),
                destination: nic.private_ip.as_deref().and_then(|ip| ip.parse().ok()),
                port: 3390,
            },
        );
        assert!(verdict.allowed, "{verdict:?}");
        assert_eq!(b.h.sim.world().vm("port-01").rdp_port(), 3390);
    })
    .await
}

/// Run Command needs a running Windows VM with a Ready agent: anything else is refused with what
/// to do instead, before any Run Command.
#[tokio::test]
async fn guest_fixes_are_refused_on_linux_stopped_vms_and_vms_whose_agent_is_not_ready() {
    within(async {
        let b = Bench::start(
            World::new()
                .vm("lin-01")
                .linux()
                .vm("off-01")
                .deallocated()
                .vm("hung-01")
                .agent_not_ready("VM Agent is unresponsive."),
        )
        .await;
        for (name, instead, says) in [
            ("lin-01", None, "runs Linux"),
            ("off-01", Some(ActionId::Start), "is deallocated"),
            (
                "hung-01",
                Some(ActionId::Restart),
                "guest agent of hung-01 is not Ready",
            ),
        ] {
            let vm = b.vm(name).await;
            for fix in ActionId::GUEST {
                match b
                    .operator
                    .request(&person("alice"), None, &vm, FixRequest::Guest(fix))
                    .await
                {
                    Err(OperateError::Refused(r)) => {
                        assert_eq!(r.instead, instead, "{name} {fix}: {r}");
                        assert!(r.reason.contains(says), "{name} {fix}: {r}");
                    }
                    other => panic!("{name} {fix}: {other:?}"),
                }
            }
        }
        assert_eq!(run_commands(&b), 0);
        let audit = b
            .operator
            .store
            .recent_audit(Some("hung-01"), 50)
            .await
            .unwrap();
        assert!(
            audit
                .iter()
                .any(|e| e.command == "enable-rdp" && e.result.starts_with("refused:")),
            "{audit:#?}"
        );
    })
    .await
}

/// A reader may not run a guest fix; an operator may run the `operate` ones but not
/// `remove-rdsh-role`, which needs `admin` (rdp.toml): each denial names what is missing.
#[tokio::test]
async fn guest_fixes_need_their_level() {
    within(async {
        let b = Bench::start(
            World::new()
                .vm("lic-02")
                .guest(|g| {
                    g.rdsh_installed = true;
                    g.grace_days_left = 0;
                })
                .rdp_disabled(),
        )
        .await;
        let vm = b.vm("lic-02").await;
        let denied = |r: Result<_, OperateError>| match r {
            Err(OperateError::Denied(d)) => d.to_string(),
            other => panic!("{other:?}"),
        };
        let rita = denied(
            b.operator
                .request(
                    &person("rita"),
                    None,
                    &vm,
                    FixRequest::Guest(ActionId::EnableRdp),
                )
                .await,
        );
        assert!(rita.contains("`operate`"), "{rita}");
        let olly = denied(
            b.operator
                .request(
                    &person("olly"),
                    None,
                    &vm,
                    FixRequest::Guest(ActionId::RemoveRdshRole),
                )
                .await,
        );
        assert!(olly.contains("`admin`"), "{olly}");
        // The operator may enable Remote Desktop; nothing ran for the two denials.
        let prompt = b
            .ask("olly", &vm, FixRequest::Guest(ActionId::EnableRdp))
            .await;
        let (outcome, _) = b.confirm_saying("olly", &prompt.confirmation_id).await;
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        assert_eq!(
            run_commands(&b),
            2,
            "enable-rdp and its re-check only: nothing ran for the two denials"
        );
    })
    .await
}

/// Azure runs the script and the answer is lost (a 500 after acting, or no answer at all): the
/// Run Command is not sent again; ARM cannot tell, so the guest is read and decides.
#[tokio::test]
async fn a_guest_fix_whose_answer_is_lost_is_never_sent_twice_and_the_guest_decides() {
    within(async {
        for (fault, lost) in [
            (FaultKind::AppliedThenStatus(500), "HTTP 500"),
            (FaultKind::AppliedThenHang, "no answer from Azure"),
        ] {
            // Only the first Run Command (the fix) loses its answer; the read after it is answered.
            let options = support::failing(vec![Fault::new("/runCommand", fault)
                .method("POST")
                .times(1)]);
            let b = Bench::with(World::new().vm("web-01").rdp_disabled(), options, POLICY).await;
            let web = b.vm("web-01").await;
            let prompt = b
                .ask("alice", &web, FixRequest::Guest(ActionId::EnableRdp))
                .await;
            let (outcome, said) = b.confirm_saying("alice", &prompt.confirmation_id).await;
            let lines = said.lines();
            assert!(
                lines.contains(
                    &"Azure may have accepted the enable-rdp of web-01; checking…".to_string()
                ),
                "{lost}: {lines:?}"
            );
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with("cannot tell: Run Command leaves no trace")),
                "{lost}: {lines:?}"
            );
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with("it did: guest-rdp passes")),
                "{lost}: {lines:?}"
            );
            assert!(outcome.result.is_ok(), "{lost}: {:?}", outcome.result);
            assert!(
                outcome
                    .notes
                    .iter()
                    .any(|n| n.contains(lost) && n.contains("did not send it again")),
                "{lost}: {:?}",
                outcome.notes
            );
            assert!(
                outcome
                    .changes
                    .iter()
                    .any(|c| c.starts_with("guest-rdp: now passes")),
                "{lost}: {:?}",
                outcome.changes
            );
            assert_eq!(
                run_commands(&b),
                2,
                "{lost}: the fix once and one read of the guest"
            );
            assert!(b.h.sim.world().vm("web-01").rdp_enabled());
            assert!(b
                .operator
                .store
                .current_operation(&web.id)
                .await
                .unwrap()
                .is_none());
        }
    })
    .await
}

/// One change per VM: while a guest fix's Run Command runs, a second fix on the VM is refused
/// with who holds it, and no second Run Command is sent.
#[tokio::test]
async fn a_running_guest_fix_holds_the_vm() {
    within(async {
        let options = SimOptions {
            run_command_delay: std::time::Duration::from_millis(1500),
            ..SimOptions::fast()
        };
        let b = Bench::with(World::new().vm("web-01").rdp_disabled(), options, POLICY).await;
        let web = b.vm("web-01").await;
        let first = b
            .ask("alice", &web, FixRequest::Guest(ActionId::EnableRdp))
            .await;
        let second = b
            .ask("bob", &web, FixRequest::Guest(ActionId::EnableFirewallRdp))
            .await;
        let operator = b.operator.clone();
        let id = first.confirmation_id.clone();
        let running =
            tokio::spawn(
                async move { operator.confirm(&person("alice"), None, &id, &quiet).await },
            );
        // Wait until the fix's Run Command is in: the VM is locked from before it was sent.
        support::until(
            "the fix's Run Command to reach Azure",
            b.h.sim.watch_answers(),
            || run_commands(&b) == 1,
        )
        .await;
        match b
            .operator
            .confirm(&person("bob"), None, &second.confirmation_id, &quiet)
            .await
        {
            Err(OperateError::Locked { holder, action, .. }) => {
                assert_eq!((holder.as_str(), action.as_str()), ("alice", "enable-rdp"));
            }
            other => panic!("{other:?}"),
        }
        let outcome = running.await.unwrap().unwrap();
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        assert_eq!(
            run_commands(&b),
            2,
            "the fix and its re-check, nothing for bob"
        );
    })
    .await
}
