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
    let claim = ScopeClaim::take(&store, "replica-a", LEASE, &rg_web(), "alice", lost.clone())
        .await
        .unwrap()
        .expect("free");
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
    let claim = ScopeClaim::take(&store, "replica-a", LEASE, &rg_web(), "alice", lost.clone())
        .await
        .unwrap()
        .expect("free");
    let first = store.claimed_sweeps().await.unwrap().remove(0);
    assert!(store.release_sweep(&first.id, "replica-a").await.unwrap());
    // Someone else's sweep of the whole subscription started meanwhile.
    let other = store
        .claim_sweep(
            &NewSweep {
                subscription_id: "11111111-1111-1111-1111-111111111111".into(),
                resource_group: None,
                started_by: "bob".into(),
                owner: "replica-b".into(),
            },
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
        "replica-a",
        LEASE,
        &rg_web(),
        "alice",
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
        "replica-b",
        LEASE,
        &whole,
        "bob",
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
