//! The runbook's fixes behind confirmations, through the real operator, store (SQLite file),
//! policy and SDK against the simulator: happy paths ending in the re-check, denials, the
//! two-person rule, expiry, double confirms, preconditions, the per-VM lock, resuming after a
//! crash, and the password kept out of everything.

use crate::support;

mod guest;

use rdp_doctor::azure::VmRef;
use rdp_doctor::policy::Actor;
use rdp_doctor::runbook::fix::{parse_source, FixRequest};
use rdp_doctor::runbook::operate::{OperateError, Operator};
use rdp_doctor::sim::{SimOptions, World};
use std::sync::Arc;
use support::within;

const POLICY: &str = r#"
two_person = ["redeploy", "open-rdp-port"]
[[grant]]
cli_user = "alice"
level = "admin"
scope = "*"
[[grant]]
cli_user = "bob"
level = "admin"
scope = "*"
[[grant]]
cli_user = "olly"
level = "operate"
scope = "subscription/11111111-1111-1111-1111-111111111111/resourceGroup/rg-web"
[[grant]]
cli_user = "rita"
level = "read"
scope = "*"
"#;

/// The suite's harness with the write path over a SQLite file, as the CLI runs it.
struct Bench {
    h: support::Harness,
    operator: Operator,
    db: std::path::PathBuf,
}

fn person(name: &str) -> Actor {
    Actor::terminal(name)
}

impl Bench {
    async fn start(world: World) -> Bench {
        Bench::with(world, SimOptions::fast(), POLICY).await
    }

    async fn with(world: World, options: SimOptions, policy: &str) -> Bench {
        Bench::build(support::Harness::build(world).options(options), policy).await
    }

    async fn build(build: support::Build, policy: &str) -> Bench {
        let h = build.start().await;
        let db = support::scratch_dir("fix", &h.sim).join("rdp-doctor.db");
        let store = support::store(Some(&db)).await;
        let operator = h.operator(h.arm.clone(), support::policy(Some(policy)), store);
        Bench { h, operator, db }
    }

    /// A new process over the same simulator, policy and database.
    async fn restarted(&self) -> Operator {
        let store = support::store(Some(&self.db)).await;
        self.h.operator(
            self.h.arm_with(|_| {}),
            support::policy(Some(POLICY)),
            store,
        )
    }

    async fn vm(&self, name: &str) -> VmRef {
        let query = rdp_doctor::azure::VmQuery::parse(name).unwrap();
        self.operator
            .arm
            .resolve(&query, &self.h.subscriptions)
            .await
            .unwrap()
            .vm
    }

    /// `who` asks for `fix` on `vm` and confirms it at once.
    async fn request_and_confirm(
        &self,
        who: &Actor,
        vm: &VmRef,
        fix: FixRequest,
    ) -> rdp_doctor::runbook::operate::Outcome {
        let prompt = self.operator.request(who, None, vm, fix).await.unwrap();
        self.operator
            .confirm(who, None, &prompt.confirmation_id, &quiet)
            .await
            .unwrap()
    }

    /// Writes the simulator saw (method + path), reads and polls excluded.
    fn writes(&self) -> Vec<String> {
        self.h
            .sim
            .stats()
            .log
            .iter()
            .filter(|e| {
                e.method == "PUT"
                    || e.method == "DELETE"
                    || (e.method == "POST"
                        && !e.path.contains("effectiveNetworkSecurityGroups")
                        && !e.path.contains("effectiveRouteTable")
                        && !e
                            .path
                            .contains("listNetworkManagerEffectiveSecurityAdminRules")
                        && !e.path.contains("retrieveBootDiagnosticsData")
                        && !e.path.contains("oauth2"))
            })
            .map(|e| format!("{} {}", e.method, e.path.split('?').next().unwrap_or("")))
            .collect()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(dir) = self.db.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn quiet(_: rdp_doctor::runbook::operate::Progress) {}

#[tokio::test]
async fn start_restart_and_reset_config_run_once_and_recheck() {
    within(async {
        let b = Bench::start(
            World::new()
                .vm("app-02")
                .deallocated()
                .dynamic_public_ip_without_address()
                .vm("web-01")
                .rdp_disabled(),
        )
        .await;
        let alice = person("alice");
        let app = b.vm("app-02").await;
        let prompt = b
            .operator
            .request(&alice, None, &app, FixRequest::Start)
            .await
            .expect("start offered");
        assert!(
            prompt
                .plan
                .consequences
                .iter()
                .any(|c| c.contains("billing")),
            "{:?}",
            prompt.plan
        );
        let outcome = b
            .operator
            .confirm(&alice, None, &prompt.confirmation_id, &quiet)
            .await
            .expect("confirmed");
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        assert_eq!(
            b.h.sim.world().vm("app-02").power_state().as_str(),
            "running"
        );
        assert!(
            b.h.sim.world().vm("app-02").public_ip_address().is_some(),
            "a dynamic IP gets an address on start"
        );
        assert!(
            outcome
                .changes
                .iter()
                .any(|c| c.starts_with("vm-status: fail → pass")),
            "{:?}",
            outcome.changes
        );
        assert_eq!(outcome.after.as_ref().unwrap().verdict.as_str(), "ok");

        let web = b.vm("web-01").await;
        let prompt = b
            .operator
            .request(&alice, None, &web, FixRequest::Restart)
            .await
            .unwrap();
        assert!(prompt
            .plan
            .consequences
            .iter()
            .any(|c| c.contains("disconnected")));
        let outcome = b
            .operator
            .confirm(&alice, None, &prompt.confirmation_id, &quiet)
            .await
            .unwrap();
        assert!(outcome.result.is_ok());

        let outcome = b
            .request_and_confirm(&alice, &web, FixRequest::ResetRdpConfig)
            .await;
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        assert!(b.h.sim.world().vm("web-01").rdp_enabled());
        assert_eq!(
            b.writes().iter().filter(|w| w.contains("/restart")).count(),
            1,
            "{:?}",
            b.writes()
        );
        let audit = b
            .operator
            .store
            .recent_audit(Some("web-01"), 50)
            .await
            .unwrap();
        assert!(
            audit
                .iter()
                .any(|e| e.command == "restart" && e.result == "succeeded"),
            "{audit:#?}"
        );
    })
    .await
}

#[tokio::test]
async fn redeploy_needs_a_second_person_and_changes_a_dynamic_ip() {
    within(async {
        let b = Bench::start(
            World::new()
                .vm("web-01")
                .dynamic_public_ip_without_address(),
        )
        .await;
        // Start it so the dynamic IP has an address to lose.
        let alice = person("alice");
        let bob = person("bob");
        let web = b.vm("web-01").await;
        let before = b.h.sim.world().vm("web-01").public_ip_address();
        let prompt = b
            .operator
            .request(&alice, None, &web, FixRequest::Redeploy)
            .await
            .unwrap();
        assert!(prompt.two_person);
        let text = prompt.plan.consequences.join("\n");
        assert!(text.contains("temporary disk"), "{text}");
        match b
            .operator
            .confirm(&alice, None, &prompt.confirmation_id, &quiet)
            .await
        {
            Err(OperateError::SamePerson { .. }) => {}
            other => panic!("the requester cannot confirm: {other:?}"),
        }
        let outcome = b
            .operator
            .confirm(&bob, None, &prompt.confirmation_id, &quiet)
            .await
            .unwrap();
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        assert_eq!(outcome.confirmed_by, "bob");
        let after = b.h.sim.world().vm("web-01").public_ip_address();
        assert!(
            after.is_some() && after != before,
            "{before:?} -> {after:?}"
        );
    })
    .await
}

#[tokio::test]
async fn open_rdp_port_adds_a_rule_that_wins_over_the_deny() {
    within(async {
        let b = Bench::start(World::new().vm("web-02").nsg_denies_rdp()).await;
        let web = b.vm("web-02").await;
        let source = parse_source("198.51.100.7").unwrap();
        let prompt = b
            .operator
            .request(
                &person("alice"),
                None,
                &web,
                FixRequest::OpenRdpPort { source, port: 3389 },
            )
            .await
            .unwrap();
        let text = prompt.plan.consequences.join("\n");
        assert!(
            text.contains("priority 199") && text.contains("deny-rdp-internet (priority 200)"),
            "{text}"
        );
        let outcome = b
            .operator
            .confirm(&person("bob"), None, &prompt.confirmation_id, &quiet)
            .await
            .unwrap();
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        assert!(
            b.writes().iter().any(|w| w.starts_with("PUT")
                && w.contains("securityRules/rdp-doctor-allow-rdp-198-51-100-7")),
            "{:?}",
            b.writes()
        );
        // From the Internet it is still denied (the rule is for one address); from that address it passes.
        let anywhere = parse_source("anywhere").unwrap();
        let wide = b
            .operator
            .request(
                &person("alice"),
                None,
                &web,
                FixRequest::OpenRdpPort {
                    source: anywhere,
                    port: 3389,
                },
            )
            .await
            .unwrap();
        assert!(wide
            .plan
            .warnings
            .iter()
            .any(|w| w.contains("whole Internet")));
        assert!(
            parse_source("0.0.0.0/0").is_err(),
            "everyone needs the word anywhere"
        );
    })
    .await
}

#[tokio::test]
async fn reset_password_keeps_the_password_out_of_everything() {
    within(async {
        let b = Bench::start(World::new().vm("web-01")).await;
        let web = b.vm("web-01").await;
        let secret = "Tr0ub4dor&3-Correct-Horse";
        let weak = b
            .operator
            .request(
                &person("alice"),
                None,
                &web,
                FixRequest::ResetPassword {
                    username: "opsadmin".into(),
                    password: "short".to_string().into(),
                },
            )
            .await;
        assert!(matches!(weak, Err(OperateError::Refused(_))), "{weak:?}");
        assert!(b.writes().is_empty(), "nothing sent for a weak password");
        let prompt = b
            .operator
            .request(
                &person("alice"),
                None,
                &web,
                FixRequest::ResetPassword {
                    username: "opsadmin".into(),
                    password: secret.to_string().into(),
                },
            )
            .await
            .unwrap();
        assert!(prompt.plan.headline.contains("opsadmin"));
        let outcome = b
            .operator
            .confirm(&person("alice"), None, &prompt.confirmation_id, &quiet)
            .await
            .unwrap();
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        assert_eq!(b.h.sim.world().vm("web-01").password_resets(), 1);
        assert!(b
            .h
            .sim
            .world()
            .vm("web-01")
            .local_admins()
            .iter()
            .any(|u| u == "opsadmin"));
        // Not in the database (any table, any column), not in the simulator's log or stats.
        let db = std::fs::read(&b.db).unwrap_or_default();
        let wal = std::fs::read(format!("{}-wal", b.db.display())).unwrap_or_default();
        for bytes in [&db, &wal] {
            assert!(
                !String::from_utf8_lossy(bytes).contains(secret),
                "the password reached the database"
            );
        }
        let stats = serde_json::to_string(&b.h.sim.stats()).unwrap();
        assert!(!stats.contains(secret));
        let audit = serde_json::to_string(&format!(
            "{:?}",
            b.operator.store.recent_audit(None, 100).await.unwrap()
        ))
        .unwrap();
        assert!(!audit.contains(secret));
        assert!(!format!("{outcome:?}").contains(secret));
    })
    .await
}

/// The PUTs the operator sends are the ones the Windows VMAccess handler reads: `UserName` in
/// public settings, `Password` only in protectedSettings, empty tables for "reset configuration
/// only", typeHandlerVersion "2.0" with minor upgrades (Azure PowerShell,
/// src/Compute/Compute/Extension/VMAccess/SetAzureVMAccessExtension.cs; az CLI,
/// src/azure-cli/azure/cli/command_modules/vm/custom.py `_reset_windows_admin`). The simulator
/// fails any other spelling, and a password in public settings, as the handler would.
#[tokio::test]
async fn vmaccess_is_sent_as_the_windows_handler_reads_it() {
    within(async {
        let b = Bench::start(World::new().vm("web-01").rdp_disabled()).await;
        let web = b.vm("web-01").await;
        let alice = person("alice");
        let outcome = b
            .request_and_confirm(&alice, &web, FixRequest::ResetRdpConfig)
            .await;
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        let vm = b.h.sim.world().vm("web-01");
        assert!(vm.rdp_enabled(), "the handler reset the RDP configuration");
        let ext = vm.extensions().remove(0);
        assert_eq!(
            (
                ext.publisher.as_str(),
                ext.kind.as_str(),
                ext.type_handler_version.as_str(),
                ext.auto_upgrade_minor_version,
                ext.provisioning_state.as_str(),
            ),
            (
                "Microsoft.Compute",
                "VMAccessAgent",
                "2.0",
                true,
                "Succeeded"
            )
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&ext.settings).unwrap(),
            serde_json::json!({})
        );

        let secret = "Tr0ub4dor&3-Correct-Horse";
        let outcome = b
            .request_and_confirm(
                &alice,
                &web,
                FixRequest::ResetPassword {
                    username: "opsadmin".into(),
                    password: secret.to_string().into(),
                },
            )
            .await;
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        assert_eq!(vm.password_resets(), 1, "the handler set the password");
        let ext = vm.extensions().remove(0);
        assert_eq!(ext.provisioning_state, "Succeeded");
        // Public settings are stored and returned on every read: the user name only.
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&ext.settings).unwrap(),
            serde_json::json!({"UserName": "opsadmin"})
        );
        assert!(!ext.settings.contains(secret));
    })
    .await
}

#[tokio::test]
async fn each_permission_level_is_enforced_and_a_denial_names_what_is_missing() {
    within(async {
        let b = Bench::start(World::new().vm("web-01").vm("db-01").in_group("rg-data")).await;
        let web = b.vm("web-01").await;
        let db = b.vm("db-01").await;
        // read: no fixes at all
        match b
            .operator
            .request(&person("rita"), None, &web, FixRequest::Restart)
            .await
        {
            Err(OperateError::Denied(d)) => {
                let text = d.to_string();
                assert!(
                    text.contains("`operate`") && text.contains("(you have `read`)"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        // operate in rg-web: restart yes, redeploy (admin) no, and nothing outside rg-web
        assert!(b
            .operator
            .request(&person("olly"), None, &web, FixRequest::Restart)
            .await
            .is_ok());
        match b
            .operator
            .request(&person("olly"), None, &web, FixRequest::Redeploy)
            .await
        {
            Err(OperateError::Denied(d)) => assert!(d.to_string().contains("`admin`"), "{d}"),
            other => panic!("{other:?}"),
        }
        match b
            .operator
            .request(&person("olly"), None, &db, FixRequest::Restart)
            .await
        {
            Err(OperateError::Denied(d)) => assert!(
                d.to_string().contains("rg-data") && d.to_string().contains("(you have none)"),
                "{d}"
            ),
            other => panic!("{other:?}"),
        }
        // unknown person: fail closed
        assert!(matches!(
            b.operator
                .request(&person("mallory"), None, &web, FixRequest::Restart)
                .await,
            Err(OperateError::Denied(_))
        ));
        // an operator cannot confirm an admin's redeploy
        let prompt = b
            .operator
            .request(&person("alice"), None, &web, FixRequest::Redeploy)
            .await
            .unwrap();
        assert!(matches!(
            b.operator
                .confirm(&person("olly"), None, &prompt.confirmation_id, &quiet)
                .await,
            Err(OperateError::Denied(_))
        ));
        let audit = b.operator.store.recent_audit(None, 100).await.unwrap();
        assert!(
            audit
                .iter()
                .filter(|e| e.result.starts_with("denied"))
                .count()
                >= 4,
            "{audit:#?}"
        );
        assert!(b.writes().is_empty(), "{:?}", b.writes());
    })
    .await
}

#[tokio::test]
async fn expired_cancelled_and_double_confirms() {
    within(async {
        let b = Bench::start(World::new().vm("web-01")).await;
        let web = b.vm("web-01").await;
        let alice = person("alice");
        // Two confirms of one prompt at once: exactly one runs, exactly one ARM write.
        let prompt = b
            .operator
            .request(&alice, None, &web, FixRequest::Restart)
            .await
            .unwrap();
        let bob = person("bob");
        let (one, two) = tokio::join!(
            b.operator
                .confirm(&alice, None, &prompt.confirmation_id, &quiet),
            b.operator
                .confirm(&bob, None, &prompt.confirmation_id, &quiet)
        );
        let oks = [&one, &two].iter().filter(|r| r.is_ok()).count();
        assert_eq!(oks, 1, "{one:?} / {two:?}");
        let loser = if one.is_ok() { two } else { one };
        assert!(
            matches!(loser, Err(OperateError::AlreadyConfirmed { .. })),
            "{loser:?}"
        );
        assert_eq!(
            b.writes().iter().filter(|w| w.contains("/restart")).count(),
            1,
            "{:?}",
            b.writes()
        );
        // A later click says who confirmed.
        match b
            .operator
            .confirm(&alice, None, &prompt.confirmation_id, &quiet)
            .await
        {
            Err(e @ OperateError::AlreadyConfirmed { .. }) => {
                assert!(e.to_string().contains("confirmed by"))
            }
            other => panic!("{other:?}"),
        }
        // Cancelled.
        let prompt = b
            .operator
            .request(&alice, None, &web, FixRequest::Restart)
            .await
            .unwrap();
        b.operator
            .cancel(&person("bob"), None, &prompt.confirmation_id)
            .await
            .unwrap();
        match b
            .operator
            .confirm(&alice, None, &prompt.confirmation_id, &quiet)
            .await
        {
            Err(OperateError::Cancelled { by }) => assert_eq!(by, "bob"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            b.operator.confirm(&alice, None, "nope", &quiet).await,
            Err(OperateError::NotFound)
        ));
    })
    .await
}

#[tokio::test]
async fn an_expired_confirmation_runs_nothing() {
    within(async {
        let policy = format!("confirm_ttl_secs = 1\n{POLICY}");
        let b = Bench::with(World::new().vm("web-01"), SimOptions::fast(), &policy).await;
        let web = b.vm("web-01").await;
        let prompt = b
            .operator
            .request(&person("alice"), None, &web, FixRequest::Restart)
            .await
            .unwrap();
        // Time passing is what is tested: a sleep past the policy's shortest lifetime (1 s).
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert!(matches!(
            b.operator
                .confirm(&person("alice"), None, &prompt.confirmation_id, &quiet)
                .await,
            Err(OperateError::Expired)
        ));
        assert!(b.writes().is_empty());
    })
    .await
}

#[tokio::test]
async fn refused_preconditions_say_what_to_do_instead() {
    within(async {
        let b = Bench::start(
            World::new()
                .vm("app-02")
                .deallocated()
                .vm("sql-01")
                .agent_not_ready("VM status blob not found."),
        )
        .await;
        let app = b.vm("app-02").await;
        match b
            .operator
            .request(&person("alice"), None, &app, FixRequest::Restart)
            .await
        {
            Err(OperateError::Refused(r)) => {
                assert_eq!(r.instead.map(|a| a.as_str()), Some("start"));
                assert!(r.to_string().contains("Try `start` instead"), "{r}");
            }
            other => panic!("{other:?}"),
        }
        let sql = b.vm("sql-01").await;
        match b
            .operator
            .request(&person("alice"), None, &sql, FixRequest::ResetRdpConfig)
            .await
        {
            Err(OperateError::Refused(r)) => assert!(r.reason.contains("not Ready"), "{r}"),
            other => panic!("{other:?}"),
        }
        assert!(b.writes().is_empty());
    })
    .await
}

#[tokio::test]
async fn one_change_per_vm_at_a_time_and_a_crash_mid_redeploy_resumes() {
    within(async {
        let options = SimOptions {
            lro_polls: 4,
            retry_after_secs: 1,
            ..SimOptions::fast()
        };
        let b = Bench::with(World::new().vm("web-01"), options, POLICY).await;
        let web = b.vm("web-01").await;
        let prompt = b
            .operator
            .request(&person("alice"), None, &web, FixRequest::Redeploy)
            .await
            .unwrap();
        let operator = b.operator.clone();
        let id = prompt.confirmation_id.clone();
        let running =
            tokio::spawn(async move { operator.confirm(&person("bob"), None, &id, &quiet).await });
        // Wait until Azure accepted the redeploy, then "kill" the process mid-operation.
        support::until("the redeploy sent", b.h.sim.watch_answers(), || {
            b.writes().iter().any(|w| w.contains("/redeploy"))
        })
        .await;
        // While it runs, the VM is held.
        match b
            .operator
            .request(&person("alice"), None, &web, FixRequest::Restart)
            .await
        {
            Err(e @ OperateError::Locked { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("bob") && text.contains("redeploy") && text.contains("UTC"),
                    "{text}"
                );
            }
            other => panic!("expected the VM lock, got {other:?}"),
        }
        // Abort only once the operation URL is stored, as a crash after Azure accepted would be:
        // it is stored between Azure's answer and the first poll, so look at each answer.
        support::until_async(
            "the operation URL stored",
            b.h.sim.watch_answers(),
            || async {
                b.operator
                    .store
                    .running_operations()
                    .await
                    .is_ok_and(|ops| ops.iter().any(|o| o.azure_url.is_some()))
            },
        )
        .await;
        running.abort();
        // A new process with the same database resumes from the stored operation URL.
        let restarted = b.restarted().await;
        let finished = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = finished.clone();
        let count = restarted
            .resume(&move |op, outcome| {
                sink.lock()
                    .unwrap()
                    .push((op.action.clone(), outcome.result.is_ok()));
            })
            .await
            .expect("resume");
        assert_eq!(count, 1);
        assert_eq!(
            finished.lock().unwrap().clone(),
            vec![("redeploy".to_string(), true)]
        );
        assert_eq!(
            b.writes()
                .iter()
                .filter(|w| w.contains("/redeploy"))
                .count(),
            1,
            "never sent twice"
        );
        assert!(
            restarted
                .store
                .current_operation(&web.id)
                .await
                .unwrap()
                .is_none(),
            "lock released"
        );
        let audit = restarted
            .store
            .recent_audit(Some("web-01"), 50)
            .await
            .unwrap();
        let lines: Vec<String> = audit
            .iter()
            .map(|e| format!("{} {}", e.command, e.result))
            .collect();
        assert!(
            lines.iter().any(|l| l.starts_with("redeploy requested")),
            "{lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("confirm confirmed")),
            "{lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l == "redeploy succeeded"),
            "{lines:#?}"
        );
    })
    .await
}

/// A password stays in the memory of the process that received it (never the database): its
/// Confirm on another process sharing the database (another replica) is refused, in words
/// that say why, with nothing sent to Azure and the password not left behind there.
#[tokio::test]
async fn a_password_resets_confirm_on_another_replica_is_refused_and_nothing_is_sent() {
    within(async {
        let b = Bench::start(World::new().vm("web-01")).await;
        let web = b.vm("web-01").await;
        let prompt = b
            .operator
            .request(
                &person("alice"),
                None,
                &web,
                FixRequest::ResetPassword {
                    username: "opsadmin".into(),
                    password: "Tr0ub4dor&3-Correct-Horse".to_string().into(),
                },
            )
            .await
            .unwrap();
        let other = b.restarted().await;
        assert_eq!(other.passwords_waiting(), 0);
        let refused = other
            .confirm(&person("alice"), None, &prompt.confirmation_id, &quiet)
            .await;
        let Err(e @ OperateError::PasswordGone) = refused else {
            panic!("refused for its password: {refused:?}");
        };
        assert!(
            e.to_string()
                .contains("with several replicas the Confirm reached another one. Ask again."),
            "{e}"
        );
        assert!(b.writes().is_empty(), "nothing sent to Azure");
        assert_eq!(b.h.sim.world().vm("web-01").password_resets(), 0);
    })
    .await
}

/// A replica that loses its lease (another process took the operation over, believing it dead)
/// stops following and tells its person so; the new owner records the outcome, once.
#[tokio::test]
async fn a_replica_that_lost_its_lease_stops_following_and_the_new_owner_reports_once() {
    within(async {
        let options = SimOptions {
            lro_polls: 4,
            retry_after_secs: 1,
            ..SimOptions::fast()
        };
        let b = Bench::with(World::new().vm("web-01"), options, POLICY).await;
        let web = b.vm("web-01").await;
        // Replica A renews every 200 ms.
        let a = b
            .operator
            .clone()
            .with_replica("replica-a", std::time::Duration::from_millis(600));
        let prompt = a
            .request(&person("alice"), None, &web, FixRequest::Redeploy)
            .await
            .unwrap();
        let (follower, id) = (a.clone(), prompt.confirmation_id.clone());
        let running =
            tokio::spawn(async move { follower.confirm(&person("bob"), None, &id, &quiet).await });
        support::until_async(
            "the operation URL stored",
            b.h.sim.watch_answers(),
            || async {
                b.operator
                    .store
                    .running_operations()
                    .await
                    .is_ok_and(|ops| ops.iter().any(|o| o.azure_url.is_some()))
            },
        )
        .await;
        assert_eq!(
            b.operator.store.running_operations().await.unwrap()[0]
                .owner
                .as_deref(),
            Some("replica-a")
        );
        // Replica B (`rdp-doctor resume`) takes it over while A still follows it.
        let replica_b = b.restarted().await;
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = told.clone();
        let followed = replica_b
            .resume(&move |_, outcome| sink.lock().unwrap().push(outcome.result.is_ok()))
            .await
            .expect("resume");
        assert_eq!(followed, 1);
        assert_eq!(told.lock().unwrap().clone(), vec![true]);
        assert_eq!(replica_b.takeovers(), 1);

        // A noticed at its next renewal and stopped, saying who follows it now.
        let outcome = running.await.unwrap().expect("A's outcome");
        assert!(outcome.still_running, "{:?}", outcome.result);
        assert!(
            outcome
                .notes
                .iter()
                .any(|n| n.contains("another rdp-doctor replica took this operation over")),
            "{:?}",
            outcome.notes
        );
        assert_eq!(
            b.writes()
                .iter()
                .filter(|w| w.contains("/redeploy"))
                .count(),
            1,
            "never sent twice"
        );
        let audit = replica_b
            .store
            .recent_audit(Some("web-01"), 50)
            .await
            .unwrap();
        let outcomes: Vec<&str> = audit
            .iter()
            .filter(|e| e.command == "redeploy" && !e.result.starts_with("requested"))
            .map(|e| e.result.as_str())
            .collect();
        assert_eq!(outcomes, vec!["succeeded"], "{audit:#?}");
    })
    .await
}

#[tokio::test]
async fn a_failed_operation_reports_azures_code_and_releases_the_vm() {
    within(async {
        let options = SimOptions {
            fail_operations: vec![rdp_doctor::sim::FailOperation::new(
                "/restart",
                "AllocationFailed",
                "Allocation failed. We do not have sufficient capacity for the requested VM size in this region.",
            )],
            ..SimOptions::fast()
        };
        let b = Bench::with(World::new().vm("web-01"), options, POLICY).await;
        let web = b.vm("web-01").await;
        let prompt = b.operator.request(&person("alice"), None, &web, FixRequest::Restart).await.unwrap();
        let outcome = b.operator.confirm(&person("alice"), None, &prompt.confirmation_id, &quiet).await.unwrap();
        let error = outcome.result.expect_err("the operation failed");
        let text = error.to_string();
        assert!(text.contains("AllocationFailed") && text.contains("sufficient capacity"), "{text}");
        assert!(outcome.after.is_none(), "no re-check after a failure");
        assert!(b.operator.store.current_operation(&web.id).await.unwrap().is_none(), "lock released");
        let audit = b.operator.store.recent_audit(Some("web-01"), 10).await.unwrap();
        assert!(audit.iter().any(|e| e.command == "restart" && e.result.contains("AllocationFailed")), "{audit:#?}");
    })
    .await
}

// ---- exactly once against Azure, no VM locked forever, secrets (issue 9) -------------------

use rdp_doctor::runbook::operate::Progress;
use rdp_doctor::sim::{Fault, FaultKind};

impl Bench {
    /// A prompt `who` asked for, which must be offered.
    async fn ask(
        &self,
        who: &str,
        vm: &VmRef,
        request: FixRequest,
    ) -> rdp_doctor::runbook::operate::Prompt {
        self.operator
            .request(&person(who), None, vm, request)
            .await
            .unwrap_or_else(|e| panic!("{who}'s request was refused: {e}"))
    }

    /// Confirm as `who`; the outcome and the progress lines said on the way.
    async fn confirm_saying(
        &self,
        who: &str,
        id: &str,
    ) -> (rdp_doctor::runbook::operate::Outcome, Said) {
        let said = Said::default();
        let outcome = self
            .operator
            .confirm(&person(who), None, id, &said.sink())
            .await
            .unwrap_or_else(|e| panic!("{who} could not confirm: {e}"));
        (outcome, said)
    }

    /// How many writes whose path ends with `suffix` Azure answered.
    fn sent(&self, suffix: &str) -> usize {
        self.writes().iter().filter(|w| w.ends_with(suffix)).count()
    }
}

/// Progress lines a fix emitted, in order.
#[derive(Default, Clone)]
struct Said(Arc<std::sync::Mutex<Vec<String>>>);

impl Said {
    fn sink(&self) -> impl Fn(Progress) + Send + Sync {
        let lines = self.0.clone();
        move |p| {
            let line = match p {
                Progress::Sent { action, vm } => format!("sent {} {vm}", action.as_str()),
                Progress::Waiting => "waiting".into(),
                Progress::Rechecking => "rechecking".into(),
                other => other.text(None),
            };
            lines.lock().unwrap().push(line);
        }
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A bench whose ARM settings differ from the suite's fast ones.
async fn bench_with_settings(
    world: World,
    options: SimOptions,
    change: impl FnOnce(&mut rdp_doctor::azure::ArmSettings) + Send + 'static,
) -> Bench {
    let build = support::Harness::build(world)
        .options(options)
        .settings(change);
    Bench::build(build, POLICY).await
}

/// Azure carries the restart out and then answers 500, or never answers (the request times
/// out): the POST is not sent again, the VM is read instead, and what it shows is said.
#[tokio::test]
async fn a_restart_whose_answer_is_lost_is_never_sent_twice_and_the_vm_tells_what_happened() {
    within(async {
        for (fault, lost) in [
            (FaultKind::AppliedThenStatus(500), "HTTP 500"),
            (FaultKind::AppliedThenHang, "no answer from Azure"),
        ] {
            let options = support::failing(vec![Fault::new("/restart", fault).method("POST")]);
            let b = Bench::with(World::new().vm("web-01"), options, POLICY).await;
            let web = b.vm("web-01").await;
            let prompt = b.ask("alice", &web, FixRequest::Restart).await;
            let (outcome, said) = b.confirm_saying("alice", &prompt.confirmation_id).await;
            // Counted on arrival: a request whose answer never came is not in the answered log.
            let arrived =
                b.h.sim
                    .stats()
                    .by_route
                    .get("POST virtualMachines/restart")
                    .copied();
            assert_eq!(
                arrived,
                Some(1),
                "{lost}: the restart reached Azure exactly once"
            );
            let lines = said.lines();
            assert!(
                lines.contains(
                    &"Azure may have accepted the restart of web-01; checking…".to_string()
                ),
                "{lines:?}"
            );
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with("it did: the VM is running")),
                "{lost}: {lines:?}"
            );
            assert!(outcome.result.is_ok(), "{lost}: {:?}", outcome.result);
            assert!(
                outcome
                    .notes
                    .iter()
                    .any(|n| n.contains(lost) && n.contains("did not send it again")),
                "{:?}",
                outcome.notes
            );
            assert!(outcome.after.is_some(), "re-checked after Azure finished");
            assert_eq!(
                b.h.sim.world().vm("web-01").power_state().as_str(),
                "running"
            );
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

/// A 500 that Azure did not act on: the start is not re-sent; the VM still deallocated says
/// "it did not", the operation ends failed and the VM is free for the next attempt. Answers
/// that prove Azure did not act (429, 503 with Retry-After) are retried.
#[tokio::test]
async fn only_answers_that_prove_azure_did_not_act_are_retried() {
    within(async {
        let options = support::failing(vec![
            Fault::new("/start", FaultKind::Status(500)).method("POST")
        ]);
        let b = Bench::with(World::new().vm("app-02").deallocated(), options, POLICY).await;
        let app = b.vm("app-02").await;
        let prompt = b.ask("alice", &app, FixRequest::Start).await;
        let (outcome, said) = b.confirm_saying("alice", &prompt.confirmation_id).await;
        assert_eq!(b.writes(), vec![format!("POST {}/start", app.id)]);
        assert!(
            said.lines()
                .iter()
                .any(|l| l.starts_with("it did not: the VM is still deallocated")),
            "{:?}",
            said.lines()
        );
        let error = outcome.result.unwrap_err().to_string();
        assert!(
            error.contains("NotAccepted") && error.contains("ask again"),
            "{error}"
        );
        assert!(!outcome.still_running);
        assert!(b
            .operator
            .store
            .current_operation(&app.id)
            .await
            .unwrap()
            .is_none());

        for (path, refused) in [
            ("/start", FaultKind::Status(429)),
            ("/restart", FaultKind::Status(503)),
        ] {
            b.h.sim
                .set_options(support::quick(support::failing(vec![Fault::new(
                    path,
                    refused.clone(),
                )
                .method("POST")
                .times(1)])));
            let request = if path == "/start" {
                FixRequest::Start
            } else {
                FixRequest::Restart
            };
            let sent_before = b.writes().len();
            let prompt = b
                .operator
                .request(&person("alice"), None, &app, request)
                .await
                .unwrap();
            let outcome = b
                .operator
                .confirm(&person("alice"), None, &prompt.confirmation_id, &quiet)
                .await
                .unwrap_or_else(|e| panic!("{refused:?}: {e}"));
            assert!(outcome.result.is_ok(), "{refused:?}: {:?}", outcome.result);
            assert_eq!(
                b.writes()[sent_before..],
                [
                    format!("POST {}{path}", app.id),
                    format!("POST {}{path}", app.id)
                ],
                "{refused:?}: refused once, accepted on the retry"
            );
        }
    })
    .await
}

/// A restart that Azure has not finished by the operation's deadline is reported as still
/// running, not as failed: its operation stays running with Azure's URL, so the VM stays
/// locked, and the next request says so and how to follow it.
#[tokio::test]
async fn an_operation_past_its_deadline_keeps_the_vm_locked_and_is_reported_running() {
    within(async {
        let options = support::polled(1_000_000);
        let b = bench_with_settings(World::new().vm("web-01"), options, |s| {
            s.operation_timeout = std::time::Duration::from_millis(500);
        })
        .await;
        let web = b.vm("web-01").await;
        let prompt = b.ask("alice", &web, FixRequest::Restart).await;
        let outcome = b
            .operator
            .confirm(&person("alice"), None, &prompt.confirmation_id, &quiet)
            .await
            .unwrap();
        assert!(outcome.still_running, "{:?}", outcome.result);
        let error = outcome.result.unwrap_err().to_string();
        assert!(error.contains("still running"), "{error}");
        let held = b.operator.store.current_operation(&web.id).await.unwrap();
        let held = held.expect("the VM stays locked");
        assert_eq!(held.state, "running");
        assert!(
            held.azure_url.is_some(),
            "Azure's URL is kept to follow it later"
        );
        let audit = b
            .operator
            .store
            .recent_audit(Some("web-01"), 10)
            .await
            .unwrap();
        assert!(
            audit
                .iter()
                .any(|e| e.command == "restart" && e.result.starts_with("still running")),
            "{audit:#?}"
        );
        // The next request follows it first (this process no longer does): still running.
        match b
            .operator
            .request(&person("bob"), None, &web, FixRequest::Restart)
            .await
        {
            Err(e @ OperateError::Locked { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("rdp-doctor resume") && text.contains("rdp-doctor unlock web-01"),
                    "{text}"
                );
            }
            other => panic!("expected the VM to stay locked, got {other:?}"),
        }
        assert_eq!(b.sent("/restart"), 1);
    })
    .await
}

/// A task that ran a fix is gone (a crash, a cancelled request): the next request on the VM
/// follows the stored operation to its end first, records its outcome once, then proceeds.
#[tokio::test]
async fn the_next_request_follows_an_abandoned_operation_first() {
    within(async {
        let options = support::polled(30);
        let b = Bench::with(World::new().vm("web-01"), options, POLICY).await;
        let web = b.vm("web-01").await;
        let prompt = b.ask("alice", &web, FixRequest::Restart).await;
        let said = Said::default();
        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel::<()>();
        let sent_tx = std::sync::Mutex::new(Some(sent_tx));
        let sink = said.sink();
        let operator = b.operator.clone();
        let id = prompt.confirmation_id.clone();
        let running = tokio::spawn(async move {
            operator
                .confirm(&person("alice"), None, &id, &move |p| {
                    if matches!(p, Progress::Sent { .. }) {
                        if let Some(tx) = sent_tx.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                    }
                    sink(p)
                })
                .await
        });
        sent_rx.await.expect("sent to Azure");
        running.abort();
        let _ = running.await;
        let stored = b.operator.store.current_operation(&web.id).await.unwrap();
        assert!(
            stored.is_some_and(|o| o.azure_url.is_some()),
            "abandoned with its URL"
        );

        let next = b
            .operator
            .request(&person("bob"), None, &web, FixRequest::Restart)
            .await
            .expect("the VM is free once the earlier restart ended");
        assert!(
            next.notes
                .iter()
                .any(|n| n.contains("Followed the earlier restart of web-01")
                    && n.contains("it succeeded")),
            "{:?}",
            next.notes
        );
        let audit = b
            .operator
            .store
            .recent_audit(Some("web-01"), 20)
            .await
            .unwrap();
        assert_eq!(
            audit
                .iter()
                .filter(|e| e.command == "restart" && e.result == "succeeded")
                .count(),
            1,
            "the outcome is recorded once: {audit:#?}"
        );
        assert_eq!(b.sent("/restart"), 1);
    })
    .await
}

/// An operation URL read back from the database that points anywhere but the ARM endpoint is
/// never followed (nothing is sent there, no token leaves); the VM stays locked for an admin's
/// unlock, which needs a reason and is audited.
#[tokio::test]
async fn a_stored_operation_url_on_another_host_is_refused_and_unlock_frees_the_vm() {
    within(async {
        let b = Bench::start(World::new().vm("web-01")).await;
        let web = b.vm("web-01").await;
        let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = elsewhere.local_addr().unwrap().port();
        let op = b
            .operator
            .store
            .start_operation(&rdp_doctor::store::NewOperation {
                action: "restart".into(),
                vm_id: web.id.clone(),
                vm_name: web.name.clone(),
                requester: "alice".into(),
                requester_name: "alice".into(),
                confirmation_id: None,
                started_ms: rdp_doctor::runbook::operate::now_ms(),
                owner: None,
            })
            .await
            .unwrap()
            .unwrap();
        let handle = format!(
            r#"{{"status_url":"http://127.0.0.1:{port}/subscriptions/x/operations/1?api-version=1","location":null,"done":false}}"#
        );
        b.operator.store.set_operation_url(op.id, &handle).await.unwrap();
        let outcomes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = outcomes.clone();
        b.operator
            .resume(&move |_, outcome| {
                sink.lock().unwrap().push((outcome.still_running, format!("{:?}", outcome.result)));
            })
            .await
            .unwrap();
        let seen = outcomes.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].0, "not finished: {seen:?}");
        assert!(seen[0].1.contains("UntrustedUrl") && seen[0].1.contains("127.0.0.1"), "{seen:?}");
        let knocked = tokio::time::timeout(std::time::Duration::from_millis(200), elsewhere.accept()).await;
        assert!(knocked.is_err(), "a connection reached the other host");
        assert!(b.operator.store.current_operation(&web.id).await.unwrap().is_some());

        // Unlock: admin only, with a reason, audited.
        let no_reason = b.operator.unlock(&person("alice"), &web, "  ").await;
        assert!(matches!(no_reason, Err(OperateError::ReasonNeeded)), "{no_reason:?}");
        let denied = b.operator.unlock(&person("olly"), &web, "stuck").await;
        assert!(matches!(denied, Err(OperateError::Denied(_))), "{denied:?}");
        b.operator
            .unlock(&person("alice"), &web, "Azure lost the operation; VM checked running")
            .await
            .unwrap();
        assert!(b.operator.store.current_operation(&web.id).await.unwrap().is_none());
        let audit = b.operator.store.recent_audit(Some("web-01"), 10).await.unwrap();
        assert!(
            audit.iter().any(|e| e.command == "unlock"
                && e.actor_name == "alice"
                && e.result.contains("Azure lost the operation; VM checked running")),
            "{audit:#?}"
        );
        let again = b.operator.unlock(&person("alice"), &web, "twice").await;
        assert!(matches!(again, Err(OperateError::NotLocked { .. })), "{again:?}");
    })
    .await
}

/// The password of a prompt nobody confirms is dropped when the prompt expires, not kept
/// until someone clicks.
#[tokio::test]
async fn the_password_of_an_abandoned_prompt_is_dropped_at_its_expiry() {
    within(async {
        let policy = format!("confirm_ttl_secs = 1\n{POLICY}");
        let b = Bench::with(World::new().vm("web-01"), SimOptions::fast(), &policy).await;
        let web = b.vm("web-01").await;
        let prompt = b
            .operator
            .request(
                &person("alice"),
                None,
                &web,
                FixRequest::ResetPassword {
                    username: "opsadmin".into(),
                    password: "Unguessable-Pa55word-42".to_string().into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(b.operator.passwords_waiting(), 1);
        // Time passing is what is tested (the prompt's 1 s lifetime), and the operator's expiry
        // timer has nothing to wait on: look every 50 ms, for at most 10 s.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while b.operator.passwords_waiting() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the password outlived its prompt"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let late = b
            .operator
            .confirm(&person("alice"), None, &prompt.confirmation_id, &quiet)
            .await;
        assert!(matches!(late, Err(OperateError::Expired)), "{late:?}");
        assert!(b.writes().is_empty());
    })
    .await
}

/// A database that refuses the audit entry stops the fix before Azure; one that refuses the
/// outcome after the write is surfaced to the person, not dropped; one that fails a couple of
/// times is retried.
#[tokio::test]
async fn store_failures_stop_unaudited_fixes_and_are_surfaced_after_a_write() {
    within(async {
        let b = Bench::start(World::new().vm("web-01")).await;
        let web = b.vm("web-01").await;
        // A second connection to the same database, to make it fail like a full disk would.
        let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", b.db.display()))
            .await
            .unwrap();
        let sql = |text: &'static str| {
            let raw = raw.clone();
            async move {
                sqlx::query(text).execute(&raw).await.unwrap();
            }
        };
        let prompt = b.ask("alice", &web, FixRequest::Restart).await;
        sql("CREATE TRIGGER audit_full BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END").await;
        let refused = b.operator.confirm(&person("alice"), None, &prompt.confirmation_id, &quiet).await;
        match refused {
            Err(OperateError::Store(e)) => assert!(e.to_string().contains("disk is full"), "{e}"),
            other => panic!("expected a store error, got {other:?}"),
        }
        assert!(b.writes().is_empty(), "nothing sent without an audit entry");
        sql("DROP TRIGGER audit_full").await;

        let prompt = b.ask("alice", &web, FixRequest::Restart).await;
        sql("CREATE TRIGGER no_finish BEFORE UPDATE OF state ON operations BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END").await;
        let outcome = b
            .operator
            .confirm(&person("alice"), None, &prompt.confirmation_id, &quiet)
            .await
            .unwrap();
        assert!(outcome.result.is_ok());
        assert!(
            outcome.notes.iter().any(|n| n.contains("could not save the outcome") && n.contains("disk I/O error")),
            "{:?}",
            outcome.notes
        );
        assert_eq!(b.writes().len(), 1);
        sql("DROP TRIGGER no_finish").await;
        b.operator.unlock(&person("alice"), &web, "test: the outcome could not be saved").await.unwrap();

        // A database that fails twice and then works: the write is retried, nothing is lost.
        sql("CREATE TABLE flaky (left INTEGER)").await;
        sql("INSERT INTO flaky VALUES (2)").await;
        sql("CREATE TRIGGER flaky_finish BEFORE UPDATE OF state ON operations WHEN (SELECT left FROM flaky) > 0 BEGIN UPDATE flaky SET left = left - 1; SELECT RAISE(FAIL, 'database is locked'); END").await;
        let prompt = b.ask("alice", &web, FixRequest::Restart).await;
        let (outcome, _) = b.confirm_saying("alice", &prompt.confirmation_id).await;
        assert!(outcome.result.is_ok() && outcome.notes.is_empty(), "{:?}", outcome.notes);
        assert!(b.operator.store.current_operation(&web.id).await.unwrap().is_none(), "recorded on the third try");
        let left: i64 = sqlx::query_scalar("SELECT left FROM flaky").fetch_one(&raw).await.unwrap();
        assert_eq!(left, 0, "it failed twice first");
    })
    .await
}

/// An operation that never got Azure's answer stored: while it may still be someone's write on
/// its way it holds the VM; past the grace period the next request reads the VM, finishes it
/// as interrupted (saying what the VM shows) and proceeds.
#[tokio::test]
async fn an_operation_without_azures_answer_is_finished_as_interrupted_after_a_grace_period() {
    within(async {
        let b = Bench::start(World::new().vm("web-01")).await;
        let web = b.vm("web-01").await;
        let left_behind = |started_ms| rdp_doctor::store::NewOperation {
            action: "restart".into(),
            vm_id: web.id.clone(),
            vm_name: web.name.clone(),
            requester: "alice".into(),
            requester_name: "alice".into(),
            confirmation_id: None,
            started_ms,
            owner: None,
        };
        let now = rdp_doctor::runbook::operate::now_ms();
        b.operator
            .store
            .start_operation(&left_behind(now))
            .await
            .unwrap()
            .unwrap();
        let held = b
            .operator
            .request(&person("bob"), None, &web, FixRequest::Restart)
            .await;
        assert!(matches!(held, Err(OperateError::Locked { .. })), "{held:?}");
        b.operator
            .unlock(&person("alice"), &web, "test: a fresh one")
            .await
            .unwrap();
        assert!(b
            .operator
            .store
            .current_operation(&web.id)
            .await
            .unwrap()
            .is_none());

        let two_hours_ago = now - 2 * 3600 * 1000;
        b.operator
            .store
            .start_operation(&left_behind(two_hours_ago))
            .await
            .unwrap()
            .unwrap();
        let prompt = b.ask("bob", &web, FixRequest::Restart).await;
        assert!(
            prompt.notes.iter().any(|n| n
                .contains("Followed the earlier restart of web-01 by alice")
                && n.contains("Interrupted")
                && n.contains("PowerState/running")),
            "{:?}",
            prompt.notes
        );
        assert!(
            b.writes().is_empty(),
            "nothing was sent for the interrupted one"
        );
    })
    .await
}

/// The VMAccess PUT and the rule PUT, each carried out by Azure with the answer lost: neither is
/// sent again; the extension's `forceUpdateTag` and the rule read back say Azure did it.
#[tokio::test]
async fn a_lost_answer_to_an_extension_or_rule_put_is_read_back_not_resent() {
    within(async {
        let options = support::failing(vec![
                Fault::new("/extensions/", FaultKind::AppliedThenStatus(502)).method("PUT"),
                Fault::new("/securityRules/", FaultKind::AppliedThenStatus(500)).method("PUT"),
            ]);
        let world = World::new().vm("web-03").rdp_disabled().vm("web-02").nsg_denies_rdp();
        let b = Bench::with(world, options, POLICY).await;

        let web3 = b.vm("web-03").await;
        let prompt = b.ask("alice", &web3, FixRequest::ResetRdpConfig).await;
        let (outcome, said) = b.confirm_saying("alice", &prompt.confirmation_id).await;
        assert!(outcome.result.is_ok(), "{:?} {:?}", outcome.result, said.lines());
        assert!(
            said.lines().iter().any(|l| l.starts_with("it did: extension") && l.contains("provisioning succeeded")),
            "{:?}",
            said.lines()
        );
        assert!(b.h.sim.world().vm("web-03").rdp_enabled());

        let web2 = b.vm("web-02").await;
        let source = parse_source("198.51.100.7").unwrap();
        let prompt = b.ask("alice", &web2, FixRequest::OpenRdpPort { source, port: 3389 }).await;
        let (outcome, said) = b.confirm_saying("bob", &prompt.confirmation_id).await;
        assert!(outcome.result.is_ok(), "{:?} {:?}", outcome.result, said.lines());
        assert!(
            said.lines().iter().any(|l| l.starts_with("it did: rule rdp-doctor-allow-rdp-198-51-100-7")),
            "{:?}",
            said.lines()
        );
        let puts: Vec<String> = b.writes().into_iter().filter(|w| w.starts_with("PUT")).collect();
        assert_eq!(puts.len(), 2, "each PUT reached Azure once: {puts:?}");
    })
    .await
}

// ---- VMs take time to settle (issue 10) ---------------------------------------------------

/// Restart a healthy web-01 whose agent Azure shows Not Ready for `settle_ms` after the
/// restart, the re-check waiting at most `timeout_ms` for it; the outcome (the restart
/// succeeded) and what was said on the way.
async fn restart_settling(
    settle_ms: u64,
    timeout_ms: u64,
) -> (rdp_doctor::runbook::operate::Outcome, Said) {
    let options = SimOptions {
        settle: Some(std::time::Duration::from_millis(settle_ms)),
        ..SimOptions::fast()
    };
    let b = bench_with_settings(World::new().vm("web-01"), options, move |s| {
        s.settle_timeout = std::time::Duration::from_millis(timeout_ms);
        s.settle_poll = std::time::Duration::from_millis(50);
    })
    .await;
    let web = b.vm("web-01").await;
    let prompt = b.ask("alice", &web, FixRequest::Restart).await;
    let (outcome, said) = b.confirm_saying("alice", &prompt.confirmation_id).await;
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    (outcome, said)
}

/// After a restart Azure shows the guest agent Not Ready for a while: the re-check waits for it
/// (saying so) and judges the VM once the agent is Ready.
#[tokio::test]
async fn the_recheck_after_a_restart_waits_for_the_agent_to_be_ready() {
    within(async {
        let (outcome, said) = restart_settling(800, 20_000).await;
        assert_eq!(outcome.still_settling, None);
        let lines = said.lines();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("waiting for web-01 to settle: agent Not Ready (")),
            "{lines:?}"
        );
        let rechecking = lines.iter().position(|l| l == "rechecking").unwrap();
        let last_wait = lines
            .iter()
            .rposition(|l| l.starts_with("waiting for"))
            .unwrap();
        assert!(last_wait < rechecking, "judged while it settled: {lines:?}");
        let after = outcome.after.expect("re-checked");
        assert_eq!(support::status_of(&after, "vm-agent").0, "pass");
        assert_eq!(support::status_of(&after, "resource-health").0, "pass");
        assert_eq!(after.verdict.as_str(), "ok");
        assert_eq!(after.next_action, None);
    })
    .await
}

/// A VM that has not settled by the deadline is reported as still settling, and the restart
/// that just ran is not recommended again (Azure still shows the agent Not Ready and Resource
/// Health the reboot).
#[tokio::test]
async fn past_the_settle_deadline_it_says_still_settling_and_never_suggests_the_same_fix() {
    within(async {
        let (outcome, _) = restart_settling(600_000, 400).await;
        let settling = outcome.still_settling.expect("still settling");
        assert!(
            settling.starts_with("web-01 is still settling after 0 s: agent Not Ready."),
            "{settling}"
        );
        let after = outcome.after.expect("re-checked");
        assert_eq!(support::status_of(&after, "vm-agent").0, "fail");
        assert_ne!(
            after.next_action,
            Some(rdp_doctor::diagnose::ActionId::Restart)
        );
        assert!(
            outcome
                .notes
                .iter()
                .any(|n| n.starts_with("Not suggesting another restart now")),
            "{:?}",
            outcome.notes
        );
    })
    .await
}

// ---- the way back: remove-route (issue 13) ------------------------------------------------

#[tokio::test]
async fn remove_route_deletes_the_route_once_names_every_subnet_and_the_recheck_passes() {
    within(async {
        let world = World::new()
            .vm("udr-01")
            .default_route_to_appliance("10.0.254.4");
        let b = Bench::start(world).await;
        let udr = b.vm("udr-01").await;
        // Admin level: an operator may not.
        let refused = b
            .operator
            .request(&person("olly"), None, &udr, FixRequest::RemoveRoute)
            .await;
        assert!(
            matches!(refused, Err(OperateError::Denied(_))),
            "{:?}",
            refused.err()
        );
        let prompt = b.ask("alice", &udr, FixRequest::RemoveRoute).await;
        assert_eq!(
            prompt.plan.headline,
            "Remove route to-firewall (0.0.0.0/0 to virtual appliance 10.0.254.4) from route table udr-01-rt"
        );
        let text = prompt.plan.consequences.join("\n");
        assert!(
            text.contains("Route table udr-01-rt is used by subnet udr-01-snet: every VM there loses the route, not only udr-01."),
            "{text}"
        );
        assert!(
            text.contains("To undo: az network route-table route create --subscription 11111111-1111-1111-1111-111111111111 --resource-group rg-web --route-table-name udr-01-rt --name to-firewall --address-prefix 0.0.0.0/0 --next-hop-type VirtualAppliance --next-hop-ip-address 10.0.254.4"),
            "{text}"
        );
        assert!(b.writes().is_empty(), "nothing sent before Confirm: {:?}", b.writes());
        let (outcome, _) = b.confirm_saying("alice", &prompt.confirmation_id).await;
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        assert_eq!(
            b.writes(),
            vec!["DELETE /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-web/providers/Microsoft.Network/routeTables/udr-01-rt/routes/to-firewall"],
        );
        assert!(
            outcome
                .changes
                .iter()
                .any(|c| c.starts_with("network-path: fail → pass")),
            "{:?}",
            outcome.changes
        );
        assert_eq!(outcome.after.as_ref().expect("re-checked").verdict.as_str(), "ok");
        let audit = b
            .operator
            .store
            .recent_audit(Some("udr-01"), 50)
            .await
            .unwrap();
        assert!(
            audit
                .iter()
                .any(|e| e.command == "remove-route" && e.result == "succeeded"),
            "{audit:#?}"
        );
        // Nothing left to remove: refused before anything is sent.
        let again = b
            .operator
            .request(&person("alice"), None, &udr, FixRequest::RemoveRoute)
            .await;
        match again {
            Err(OperateError::Refused(r)) => {
                assert!(r.reason.contains("there is nothing to remove"), "{}", r.reason)
            }
            other => panic!("expected a refusal, got {:?}", other.map(|p| p.plan.headline)),
        }
        assert_eq!(b.writes().len(), 1);
    })
    .await
}

/// Azure deletes the route and the answer is lost: the DELETE is not sent again; reading the
/// route back says Azure did it.
#[tokio::test]
async fn a_lost_answer_to_a_route_delete_is_read_back_not_resent() {
    within(async {
        let options = support::failing(vec![Fault::new(
            "/routes/",
            FaultKind::AppliedThenStatus(500),
        )
        .method("DELETE")]);
        let world = World::new()
            .vm("udr-01")
            .default_route_to_appliance("10.0.254.4");
        let b = Bench::with(world, options, POLICY).await;
        let udr = b.vm("udr-01").await;
        let prompt = b.ask("alice", &udr, FixRequest::RemoveRoute).await;
        let (outcome, said) = b.confirm_saying("alice", &prompt.confirmation_id).await;
        assert!(
            outcome.result.is_ok(),
            "{:?} {:?}",
            outcome.result,
            said.lines()
        );
        assert!(
            said.lines()
                .iter()
                .any(|l| l.starts_with("it did: route to-firewall is gone")),
            "{:?}",
            said.lines()
        );
        let deletes: Vec<String> = b
            .writes()
            .into_iter()
            .filter(|w| w.starts_with("DELETE"))
            .collect();
        assert_eq!(
            deletes.len(),
            1,
            "the DELETE reached Azure once: {deletes:?}"
        );
    })
    .await
}
