use super::*;
use crate::store::testing::memory;
use std::time::Instant;

/// The shortest lease a replica takes: renewals every 100 ms.
const LEASE: Duration = Duration::from_millis(300);

fn rg_web() -> SweepScope {
    SweepScope {
        subscription_id: "11111111-1111-1111-1111-111111111111".into(),
        resource_group: Some("rg-web".into()),
    }
}

/// A sweep of `scope` that `who` starts on `replica`, with the handle `handle`.
fn new(scope: &SweepScope, who: &str, replica: &str, handle: Option<&str>) -> NewSweep {
    NewSweep {
        subscription_id: scope.subscription_id.clone(),
        resource_group: scope.resource_group.clone(),
        started_by: who.into(),
        owner: replica.into(),
        handle: handle.map(str::to_string),
        requester: format!("discord:{who}"),
    }
}

/// Alice's claim of rg-web on replica A, with no handle; `stop` stops her sweep.
async fn alices_claim(store: &Store, stop: &CancellationToken) -> ScopeClaim {
    ScopeClaim::take(
        store,
        LEASE,
        new(&rg_web(), "alice", "replica-a", None),
        stop.clone(),
    )
    .await
    .unwrap()
    .expect("free")
}

/// Waits until the claimed sweeps satisfy `done`: the renewer's ticks mark no event a test can
/// wait on, so look at the database until a deadline.
async fn until_claims(store: &Store, what: &str, done: impl Fn(&[StoredSweep]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let claims = store.claimed_sweeps().await.expect("claims");
        if done(&claims) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {claims:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_claim_lost_while_its_replica_stalled_is_taken_again_while_the_scope_is_free() {
    let store = memory().await;
    let lost = CancellationToken::new();
    let claim = alices_claim(&store, &lost).await;
    let first = store.claimed_sweeps().await.unwrap().remove(0);
    assert_eq!(
        (first.owner.as_str(), first.started_by.as_str()),
        ("replica-a", "alice")
    );
    // As another claim does with a lapsed one: deleted.
    assert!(store.release_sweep(&first.id, "replica-a").await.unwrap());
    until_claims(&store, "claimed again", |c| {
        c.len() == 1 && c[0].owner == "replica-a" && c[0].id != first.id
    })
    .await;
    assert!(!lost.is_cancelled(), "the sweep goes on");
    // Released under its new id.
    claim.release().await;
    assert_eq!(store.claimed_sweeps().await.unwrap(), []);
}

#[tokio::test]
async fn a_claim_lost_to_another_sweep_of_the_scope_stops_this_one() {
    let store = memory().await;
    let lost = CancellationToken::new();
    let claim = alices_claim(&store, &lost).await;
    let first = store.claimed_sweeps().await.unwrap().remove(0);
    assert!(store.release_sweep(&first.id, "replica-a").await.unwrap());
    // Someone else's sweep of the whole subscription started meanwhile.
    let other = store
        .claim_sweep(
            &new(
                &SweepScope {
                    resource_group: None,
                    ..rg_web()
                },
                "bob",
                "replica-b",
                None,
            ),
            0,
        )
        .await
        .unwrap()
        .expect("free");
    tokio::time::timeout(Duration::from_secs(10), lost.cancelled())
        .await
        .expect("the sweep is stopped");
    drop(claim);
    // Dropping the lost claim leaves Bob's alone.
    until_claims(&store, "only Bob's", |c| c == std::slice::from_ref(&other)).await;
}

#[tokio::test]
async fn a_busy_scope_is_refused_in_the_words_of_sweep_busy() {
    let store = memory().await;
    let _alice = ScopeClaim::take(
        &store,
        LEASE,
        new(&rg_web(), "alice", "replica-a", Some("7")),
        CancellationToken::new(),
    )
    .await
    .unwrap()
    .expect("free");
    let whole = SweepScope {
        resource_group: None,
        ..rg_web()
    };
    let busy = ScopeClaim::take(
        &store,
        LEASE,
        new(&whole, "bob", "replica-b", Some("8")),
        CancellationToken::new(),
    )
    .await
    .unwrap()
    .expect_err("rg-web is being swept");
    assert_eq!(busy.running.started_by, "alice");
    assert_eq!(busy.running.scope, rg_web());
    assert!(
        busy.to_string().starts_with(
            "a sweep of resource group rg-web is already running (it covers subscription \
             11111111-1111-1111-1111-111111111111): alice started it "
        ),
        "{busy}"
    );
}

#[tokio::test]
async fn a_cancel_asked_on_another_replica_stops_the_sweep_within_a_poll() {
    let store = memory().await;
    let stop = CancellationToken::new();
    let claim = ScopeClaim::take(
        &store,
        Duration::from_secs(30),
        new(&rg_web(), "alice", "replica-a", Some("1234")),
        stop.clone(),
    )
    .await
    .unwrap()
    .expect("free");
    // Another replica finds the sweep by its handle, with who may cancel it.
    let running = store
        .sweep_by_handle("1234", 0)
        .await
        .unwrap()
        .expect("running");
    assert_eq!(running.requester.as_deref(), Some("discord:alice"));
    assert_eq!(running.cancel_requested_ms, None);
    assert_eq!(store.sweep_by_handle("4321", 0).await.unwrap(), None);
    assert!(!stop.is_cancelled());
    let asked = Instant::now();
    // Only its requester's ask reaches it.
    assert!(!store
        .request_sweep_cancel("1234", "discord:mallory", 0)
        .await
        .unwrap());
    assert!(store
        .request_sweep_cancel("1234", "discord:alice", 0)
        .await
        .unwrap());
    tokio::time::timeout(Duration::from_secs(10), stop.cancelled())
        .await
        .expect("the sweep is stopped");
    // Within a poll, though renewals of a 30 s lease come every 10 s.
    assert!(asked.elapsed() < CANCEL_POLL * 3, "{:?}", asked.elapsed());
    // Asked again while it winds down: still running, still asked.
    assert!(store
        .request_sweep_cancel("1234", "discord:alice", 0)
        .await
        .unwrap());
    claim.release().await;
    assert_eq!(store.sweep_by_handle("1234", 0).await.unwrap(), None);
    // Over: nothing to cancel.
    assert!(!store
        .request_sweep_cancel("1234", "discord:alice", 0)
        .await
        .unwrap());
}
