//! One sweep per scope across replicas, through the door: two doors, as two replicas, on one
//! database file, the real SDK against the simulator (slowed, so that a sweep still runs when
//! the other replica asks).

use crate::support::{self, within, Harness};
use rdp_doctor::azure::SweepScope;
use rdp_doctor::policy::{Actor, Place};
use rdp_doctor::runbook::door::{Caller, Door, DoorError};
use rdp_doctor::runbook::sweep::{SweepOptions, SweepReport};
use rdp_doctor::sim::World;
use rdp_doctor::store::{NewSweep, Store};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const POLICY: &str = r#"
[[grant]]
cli_user = "alice"
level = "admin"
scope = "*"
[[grant]]
cli_user = "bob"
level = "admin"
scope = "*"
"#;

/// The replicas' lease (the shortest `with_replica` takes): a claim renewed every 100 ms.
const LEASE: Duration = Duration::from_millis(300);

/// Now, in unix milliseconds, as the store writes heartbeats.
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_millis()).expect("in range")
}

fn caller(name: &str) -> Caller {
    Caller {
        actor: Actor::terminal(name),
        place: Place::Terminal,
    }
}

fn group(name: &str) -> SweepScope {
    SweepScope {
        subscription_id: rdp_doctor::sim::DEFAULT_SUBSCRIPTION.to_string(),
        resource_group: Some(name.to_string()),
    }
}

fn whole() -> SweepScope {
    SweepScope {
        subscription_id: rdp_doctor::sim::DEFAULT_SUBSCRIPTION.to_string(),
        resource_group: None,
    }
}

/// Two replicas (doors with stores of their own) on one database file, and a third look at it.
struct Replicas {
    h: Harness,
    a: Door,
    b: Door,
    store: Store,
}

impl Replicas {
    /// Ten VMs in rg-web, each request answered after `latency`.
    async fn start(latency: Duration) -> Replicas {
        let world = support::numbered_vms(World::new().page_size(100), "web", 10);
        let h = Harness::with_options(world, support::slowed(latency)).await;
        let db = support::scratch_dir("sweep-claims", &h.sim).join("rdp-doctor.db");
        let replica = |name: &'static str| {
            let (h, db) = (&h, db.clone());
            async move {
                h.door(
                    support::policy(Some(POLICY)),
                    support::store(Some(&db)).await,
                )
                .with_replica(name, LEASE)
            }
        };
        let a = replica("replica-a").await;
        let b = replica("replica-b").await;
        let store = support::store(Some(&db)).await;
        Replicas { h, a, b, store }
    }

    /// NIC lists the simulator answered: one per sweep that reached Azure.
    fn fleet_listings(&self) -> usize {
        support::requests_to(
            &self.h.sim,
            "GET",
            "/providers/Microsoft.Network/networkInterfaces",
        )
    }

    /// Waits for a claim in the database (taken before the sweep's first request to Azure).
    async fn until_claimed(&self) {
        let store = &self.store;
        support::until_async("a sweep's claim", self.h.sim.watch_answers(), || async {
            store.claimed_sweeps().await.is_ok_and(|c| !c.is_empty())
        })
        .await;
    }
}

/// A sweep in a task of its own, two VMs at a time, as a front end runs it.
fn spawn_sweep(
    door: &Door,
    who: &str,
    scope: SweepScope,
) -> tokio::task::JoinHandle<Result<SweepReport, DoorError>> {
    let (door, who) = (door.clone(), who.to_string());
    tokio::spawn(async move {
        let options = SweepOptions {
            concurrency: 2,
            ..SweepOptions::default()
        };
        door.sweep(
            &caller(&who),
            &scope,
            &options,
            &CancellationToken::new(),
            &|_| {},
        )
        .await
    })
}

async fn sweep(door: &Door, who: &str, scope: SweepScope) -> Result<SweepReport, DoorError> {
    spawn_sweep(door, who, scope)
        .await
        .expect("the sweep's task")
}

fn busy_text(result: Result<SweepReport, DoorError>) -> String {
    match result {
        Err(DoorError::SweepBusy(busy)) => busy.to_string(),
        other => panic!("expected the sweep to be refused as busy: {other:?}"),
    }
}

#[tokio::test]
async fn a_sweep_on_one_replica_refuses_overlapping_ones_on_every_replica_until_it_ends() {
    within(async {
        let r = Replicas::start(Duration::from_millis(100)).await;
        let running = spawn_sweep(&r.a, "alice", group("rg-web"));
        r.until_claimed().await;
        // Past twice the lease, the claim is alive only because replica A renews it.
        let claimed = r.store.claimed_sweeps().await.unwrap().remove(0);
        let started = claimed.started_ms;
        let store = &r.store;
        support::until_async(
            "the sweep to outlive its first lease",
            r.h.sim.watch_answers(),
            || async {
                let at = store.claimed_sweeps().await.unwrap_or_default();
                at.first().is_some_and(|c| {
                    c.heartbeat_ms - started > LEASE.as_millis() as i64
                        && now_ms() - started > 2 * LEASE.as_millis() as i64
                })
            },
        )
        .await;
        assert_eq!(claimed.started_by, "alice");
        assert_eq!(claimed.owner, "replica-a");

        // Bob asks replica B for the whole subscription, and replica A for rg-web: the same
        // words, naming Alice and when she started.
        let elsewhere = busy_text(sweep(&r.b, "bob", whole()).await);
        let prefix = "a sweep of resource group rg-web is already running (it covers subscription 11111111-1111-1111-1111-111111111111): alice started it ";
        assert!(elsewhere.starts_with(prefix), "{elsewhere}");
        assert!(elsewhere.contains(" ago, at ") && elsewhere.contains(" UTC."), "{elsewhere}");
        let here = busy_text(sweep(&r.a, "bob", group("RG-WEB")).await);
        assert!(
            here.starts_with("a sweep of resource group rg-web is already running: alice started it "),
            "{here}"
        );
        let on_b = busy_text(sweep(&r.b, "bob", group("rg-web")).await);
        assert_eq!(
            on_b.split(" started it ").next(),
            here.split(" started it ").next(),
            "the same refusal on either replica"
        );
        assert_eq!(
            on_b.split(" ago, at ").nth(1),
            here.split(" ago, at ").nth(1),
            "the same start time on either replica"
        );

        let report = running.await.unwrap().expect("Alice's sweep");
        assert_eq!(report.total, 10);
        assert!(!report.cancelled);
        assert_eq!(r.fleet_listings(), 1, "only Alice's sweep reached Azure");
        // Released as the sweep returned: Bob's sweep of the whole subscription runs on B.
        assert_eq!(r.store.claimed_sweeps().await.unwrap(), []);
        let report = sweep(&r.b, "bob", whole()).await.expect("free again");
        assert_eq!(report.total, 10);
        assert_eq!(r.fleet_listings(), 2);
        assert_eq!(r.store.claimed_sweeps().await.unwrap(), []);
    })
    .await
}

#[tokio::test]
async fn a_sweep_whose_task_is_dropped_frees_its_scope() {
    within(async {
        let r = Replicas::start(Duration::from_millis(100)).await;
        let running = spawn_sweep(&r.a, "alice", whole());
        r.until_claimed().await;
        running.abort();
        assert!(running.await.unwrap_err().is_cancelled());
        // The guard releases the claim from a task of its own: nothing in Azure marks it, so
        // look at the database until a deadline far shorter than the lease's lapse would need.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !r.store.claimed_sweeps().await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the claim was never released");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sweep(&r.b, "bob", group("rg-web"))
            .await
            .expect("B may sweep it");
        // And replica A's own slot is free too.
        sweep(&r.a, "alice", group("rg-web"))
            .await
            .expect("A may sweep it");
    })
    .await
}

#[tokio::test]
async fn a_dead_replicas_sweep_frees_its_scope_once_the_lease_lapses() {
    within(async {
        let r = Replicas::start(Duration::ZERO).await;
        // A replica claimed the whole subscription and died: its heartbeat never moves again.
        let dead = r
            .store
            .claim_sweep(
                &NewSweep {
                    subscription_id: rdp_doctor::sim::DEFAULT_SUBSCRIPTION.to_string(),
                    resource_group: None,
                    started_by: "carol".into(),
                    owner: "replica-dead".into(),
                    handle: None,
                    requester: "discord:carol".into(),
                },
                0,
            )
            .await
            .unwrap()
            .expect("free");
        let refused = busy_text(sweep(&r.b, "bob", group("rg-web")).await);
        assert!(
            refused.starts_with("a sweep of subscription 11111111-1111-1111-1111-111111111111 is already running (it covers resource group rg-web): carol started it"),
            "{refused}"
        );
        assert_eq!(r.fleet_listings(), 0);
        // The lease is what is waited for: no event marks a heartbeat that never comes.
        let lapsed_at = Duration::from_millis(
            u64::try_from(dead.heartbeat_ms - now_ms()).unwrap_or(0),
        ) + LEASE
            + Duration::from_millis(5);
        tokio::time::sleep(lapsed_at).await;
        sweep(&r.b, "bob", group("rg-web"))
            .await
            .expect("the dead replica's claim lapsed");
        assert_eq!(r.fleet_listings(), 1);
        let left = r.store.claimed_sweeps().await.unwrap();
        assert!(left.iter().all(|c| c.owner != "replica-dead"), "{left:?}");
    })
    .await
}

#[tokio::test]
async fn a_database_that_fails_refuses_the_sweep_before_any_azure_request() {
    within(async {
        let r = Replicas::start(Duration::ZERO).await;
        let before = r.h.sim.stats().requests;
        // This replica's database is gone (its pool closed): it cannot tell who else sweeps.
        let db = support::scratch_dir("sweep-claims-closed", &r.h.sim).join("rdp-doctor.db");
        let closed = support::store(Some(&db)).await;
        closed.close().await;
        let door = r
            .h
            .door(support::policy(Some(POLICY)), closed)
            .with_replica("replica-c", LEASE);
        let err = sweep(&door, "alice", group("rg-web"))
            .await
            .expect_err("no sweep without the claim");
        assert!(matches!(err, DoorError::SweepUnclaimed(_)), "{err:?}");
        assert!(err.is_internal() && !err.is_user_error(), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("no sweep was started: rdp-doctor could not claim its scope in the database, so it cannot tell whether another replica sweeps it ("),
            "{text}"
        );
        assert_eq!(r.h.sim.stats().requests, before, "nothing reached Azure");
        // The process's own slot was given back: the same door refuses again for the same
        // reason, not as busy.
        let again = sweep(&door, "alice", group("rg-web")).await.expect_err("still no database");
        assert!(matches!(again, DoorError::SweepUnclaimed(_)), "{again:?}");
    })
    .await
}

#[tokio::test]
async fn a_kept_row_gets_its_scope_from_the_vms_id_not_from_what_the_row_claims() {
    within(async {
        let r = Replicas::start(Duration::ZERO).await;
        let vm = rdp_doctor::domain::VmRef::from_stored(
            "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-secret/providers/Microsoft.Compute/virtualMachines/db-01",
            "db-01",
        );
        let options = rdp_doctor::runbook::CheckOptions {
            from: Some("198.51.100.7".parse().unwrap()),
        };
        r.a.keep_sweep_rows(&caller("alice"), "00000000000000aa", std::slice::from_ref(&vm), &options)
            .await
            .unwrap();
        // Replica B reads what A kept.
        let (vms, read_options) = r
            .b
            .sweep_rows(&caller("bob"), "00000000000000aa")
            .await
            .unwrap()
            .expect("kept an hour");
        assert_eq!(vms, std::slice::from_ref(&vm));
        assert_eq!(read_options.from, options.from);
        assert!(r
            .b
            .sweep_rows(&caller("bob"), "00000000000000bb")
            .await
            .unwrap()
            .is_none());

        // A row that pairs that VM's id with another resource group (a bug, or a hand in the
        // database) still names rg-secret, where the door authorises it.
        let forged = rdp_doctor::store::SweptRows {
            handle: "00000000000000cc".into(),
            requester: "cli:alice".into(),
            from_address: None,
            vms_json: format!(
                r#"[{{"id": "{}", "name": "db-01", "resource_group": "rg-public", "subscription_id": "x"}}]"#,
                vm.id
            ),
            finished_ms: now_ms(),
        };
        r.store.keep_swept(&forged, 0).await.unwrap();
        let (vms, _) = r
            .b
            .sweep_rows(&caller("bob"), "00000000000000cc")
            .await
            .unwrap()
            .expect("kept");
        assert_eq!(vms[0].resource_group, "rg-secret");
        assert_eq!(vms[0].subscription_id, vm.subscription_id);
        // Rows that do not read back are rdp-doctor's own failure, not the person's.
        let broken = rdp_doctor::store::SweptRows {
            handle: "00000000000000dd".into(),
            vms_json: "not json".into(),
            ..forged
        };
        r.store.keep_swept(&broken, 0).await.unwrap();
        let e = r
            .b
            .sweep_rows(&caller("bob"), "00000000000000dd")
            .await
            .expect_err("unreadable");
        assert!(!e.is_user_error(), "{e}");
        assert!(e.to_string().contains("kept rows are not JSON"), "{e}");
    })
    .await
}
