use super::*;
use crate::store::testing::on_both_backends;

const S: &str = "11111111-1111-1111-1111-111111111111";
const T: &str = "22222222-2222-2222-2222-222222222222";

fn sweep(subscription: &str, group: Option<&str>, who: &str) -> NewSweep {
    NewSweep {
        subscription_id: subscription.into(),
        resource_group: group.map(str::to_string),
        started_by: who.into(),
        owner: format!("replica-of-{who}"),
        handle: None,
        requester: format!("discord:{who}"),
    }
}

/// No claim has lapsed: every heartbeat is newer than this.
const LIVE: i64 = 0;

on_both_backends! {
    #[tokio::test]
    async fn a_group_and_its_subscription_overlap_other_groups_and_subscriptions_do_not(store, pooled = false) {
        let web = store
            .claim_sweep(&sweep(S, Some("rg-web"), "alice"), LIVE)
            .await
            .unwrap()
            .expect("free");
        assert_eq!(web.resource_group.as_deref(), Some("rg-web"));
        assert_eq!(web.started_by, "alice");
        assert_eq!(web.owner, "replica-of-alice");
        assert_eq!(web.heartbeat_ms, web.started_ms);
        assert_eq!(web.id.len(), 32);

        // The same group in another case is the same group: refused, naming the running sweep.
        let busy = store
            .claim_sweep(&sweep(&S.to_uppercase(), Some("RG-WEB"), "bob"), LIVE)
            .await
            .unwrap()
            .expect_err("taken");
        assert_eq!(busy, web);
        // The whole subscription holds rg-web: refused too.
        let busy = store
            .claim_sweep(&sweep(S, None, "bob"), LIVE)
            .await
            .unwrap()
            .expect_err("overlaps");
        assert_eq!(busy.started_by, "alice");
        // Another group of the subscription, and the whole of another subscription, are free.
        let data = store
            .claim_sweep(&sweep(S, Some("rg-data"), "bob"), LIVE)
            .await
            .unwrap()
            .expect("another group");
        let other = store
            .claim_sweep(&sweep(T, None, "carol"), LIVE)
            .await
            .unwrap()
            .expect("another subscription");
        assert_eq!(store.claimed_sweeps().await.unwrap().len(), 3);

        // Released, the groups free the subscription; then it holds every group in it.
        assert!(store.release_sweep(&web.id, &web.owner).await.unwrap());
        let busy = store
            .claim_sweep(&sweep(S, None, "dave"), LIVE)
            .await
            .unwrap()
            .expect_err("rg-data still runs");
        assert_eq!(busy, data);
        assert!(store.release_sweep(&data.id, &data.owner).await.unwrap());
        let whole = store
            .claim_sweep(&sweep(S, None, "dave"), LIVE)
            .await
            .unwrap()
            .expect("free now");
        assert_eq!(whole.resource_group, None);
        let busy = store
            .claim_sweep(&sweep(S, Some("rg-new"), "erin"), LIVE)
            .await
            .unwrap()
            .expect_err("the subscription holds every group");
        assert_eq!(busy, whole);
        assert!(store
            .claim_sweep(&sweep(T, Some("rg-web"), "erin"), LIVE)
            .await
            .unwrap()
            .is_err(), "carol sweeps all of T");
        assert!(store.release_sweep(&other.id, &other.owner).await.unwrap());
        assert!(store
            .claim_sweep(&sweep(T, Some("rg-web"), "erin"), LIVE)
            .await
            .unwrap()
            .is_ok());
    }

    #[tokio::test]
    async fn only_the_owner_renews_or_releases_and_only_once(store, pooled = false) {
        let web = store
            .claim_sweep(&sweep(S, Some("rg-web"), "alice"), LIVE)
            .await
            .unwrap()
            .unwrap();
        assert!(store.renew_sweep(&web.id, "replica-of-alice").await.unwrap());
        assert!(!store.renew_sweep(&web.id, "replica-b").await.unwrap());
        assert!(!store.release_sweep(&web.id, "replica-b").await.unwrap());
        assert_eq!(store.claimed_sweeps().await.unwrap().len(), 1);
        assert!(store.release_sweep(&web.id, "replica-of-alice").await.unwrap());
        assert!(!store.release_sweep(&web.id, "replica-of-alice").await.unwrap());
        assert!(!store.renew_sweep(&web.id, "replica-of-alice").await.unwrap());
        assert_eq!(store.claimed_sweeps().await.unwrap(), []);
        for empty in [
            sweep(" ", None, "alice"),
            sweep(S, Some(""), "alice"),
            sweep(S, None, ""),
        ] {
            assert!(matches!(
                store.claim_sweep(&empty, LIVE).await,
                Err(StoreError::Empty { .. })
            ));
        }
    }

    /// A replica that dies stops renewing: once its heartbeat is older than the lease, the
    /// next claim of an overlapping scope deletes its claim and takes the scope.
    #[tokio::test]
    async fn a_dead_owners_claim_lapses_with_its_lease(store, pooled = false) {
        let dead = store
            .claim_sweep(&sweep(S, None, "alice"), LIVE)
            .await
            .unwrap()
            .unwrap();
        // Its heartbeat is not older than the cutoff: still alive.
        let cutoff = dead.heartbeat_ms;
        assert!(store
            .claim_sweep(&sweep(S, Some("rg-web"), "bob"), cutoff)
            .await
            .unwrap()
            .is_err());
        // Older than the cutoff: lapsed.
        let cutoff = dead.heartbeat_ms + 1;
        let taken = store
            .claim_sweep(&sweep(S, Some("rg-web"), "bob"), cutoff)
            .await
            .unwrap()
            .expect("the lapsed claim does not count");
        assert_eq!(store.claimed_sweeps().await.unwrap(), std::slice::from_ref(&taken));
        // The old owner's renewal says the claim is gone, and its release changes nothing.
        assert!(!store.renew_sweep(&dead.id, &dead.owner).await.unwrap());
        assert!(!store.release_sweep(&dead.id, &dead.owner).await.unwrap());
        // A renewed claim is alive again against the same cutoff.
        sqlx::query("UPDATE sweeps SET heartbeat_ms = 0 WHERE id = $1")
            .bind(&taken.id)
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(store.renew_sweep(&taken.id, &taken.owner).await.unwrap());
        assert!(store
            .claim_sweep(&sweep(S, None, "carol"), cutoff)
            .await
            .unwrap()
            .is_err());
    }

    /// Claims of overlapping scopes race, through a pool of several connections: in every
    /// round exactly one of them wins, and a claim elsewhere is not held up by them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claims_of_overlapping_scopes_let_exactly_one_through(store, pooled = true) {
        for round in 0..25 {
            let claims = [
                sweep(S, None, "whole"),
                sweep(S, Some("rg-web"), "web"),
                sweep(S, Some("RG-Web"), "web-again"),
                sweep(T, Some("rg-web"), "elsewhere"),
            ];
            let start = std::sync::Arc::new(tokio::sync::Barrier::new(claims.len()));
            let tasks: Vec<_> = claims
                .into_iter()
                .map(|claim| {
                    let (store, start) = (store.clone(), start.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        let result = store.claim_sweep(&claim, LIVE).await;
                        (claim, result)
                    })
                })
                .collect();
            let mut won = Vec::new();
            let mut refused = Vec::new();
            for task in tasks {
                let (claim, result) = task.await.unwrap();
                match result.unwrap() {
                    Ok(claimed) => won.push((claim.started_by, claimed)),
                    Err(running) => refused.push((claim.started_by, running)),
                }
            }
            let in_s: Vec<&str> = won
                .iter()
                .filter(|(who, _)| who != "elsewhere")
                .map(|(who, _)| who.as_str())
                .collect();
            assert_eq!(in_s.len(), 1, "round {round}: {won:?}");
            assert!(won.iter().any(|(who, _)| who == "elsewhere"), "round {round}");
            assert_eq!(refused.len(), 2, "round {round}");
            for (_, running) in &refused {
                assert_eq!(running.started_by, in_s[0], "round {round}: the winner is named");
            }
            let claimed = store.claimed_sweeps().await.unwrap();
            assert_eq!(claimed.len(), 2, "round {round}: {claimed:?}");
            for (_, c) in &won {
                assert!(store.release_sweep(&c.id, &c.owner).await.unwrap());
            }
        }
        store.close().await;
    }

    #[tokio::test]
    async fn a_sweep_is_found_and_cancelled_by_its_handle_and_its_rows_kept_an_hour(store, pooled = false) {
        let mut alice = sweep(S, Some("rg-web"), "alice");
        alice.handle = Some("1234".into());
        let running = store.claim_sweep(&alice, LIVE).await.unwrap().expect("free");
        assert_eq!(running.handle.as_deref(), Some("1234"));
        assert_eq!(running.requester.as_deref(), Some("discord:alice"));
        assert_eq!(store.sweep_by_handle("1234", LIVE).await.unwrap(), Some(running.clone()));
        assert_eq!(store.sweep_by_handle("12345", LIVE).await.unwrap(), None);
        // A claim whose heartbeat is older than the cutoff is a dead replica's: not found.
        assert_eq!(store.sweep_by_handle("1234", running.heartbeat_ms + 1).await.unwrap(), None);
        assert!(!store.request_sweep_cancel("1234", "discord:alice", running.heartbeat_ms + 1).await.unwrap());
        // Two running sweeps cannot share a handle.
        let mut again = sweep(T, None, "bob");
        again.handle = Some("1234".into());
        assert!(store.claim_sweep(&again, LIVE).await.is_err(), "a handle names one sweep");

        assert_eq!(store.sweep_cancel_requested(&running.id).await.unwrap(), Some(false));
        // Someone else's ask changes nothing; its requester's is kept, the first time's.
        assert!(!store.request_sweep_cancel("1234", "discord:bob", LIVE).await.unwrap());
        assert_eq!(store.sweep_cancel_requested(&running.id).await.unwrap(), Some(false));
        assert!(store.request_sweep_cancel("1234", "discord:alice", LIVE).await.unwrap());
        assert_eq!(store.sweep_cancel_requested(&running.id).await.unwrap(), Some(true));
        let asked = store.sweep_by_handle("1234", LIVE).await.unwrap().expect("running");
        assert!(asked.cancel_requested_ms.is_some_and(|at| at >= running.started_ms));
        assert!(store.request_sweep_cancel("1234", "discord:alice", LIVE).await.unwrap());
        let again = store.sweep_by_handle("1234", LIVE).await.unwrap().expect("running");
        assert_eq!(again.cancel_requested_ms, asked.cancel_requested_ms, "the first ask's time");
        assert!(store.release_sweep(&running.id, &running.owner).await.unwrap());
        assert_eq!(store.sweep_cancel_requested(&running.id).await.unwrap(), None);
        assert!(!store.request_sweep_cancel("1234", "discord:alice", LIVE).await.unwrap(), "over");

        let rows = SweptRows {
            handle: "1234".into(),
            requester: "discord:alice".into(),
            from_address: Some("198.51.100.7".into()),
            vms_json: "[1]".into(),
            finished_ms: 1_000,
        };
        store.keep_swept(&rows, 0).await.unwrap();
        assert_eq!(store.swept("1234", 1_000).await.unwrap(), Some(rows.clone()));
        assert_eq!(store.swept("1234", 1_001).await.unwrap(), None, "expired");
        assert_eq!(store.swept("4321", 0).await.unwrap(), None);
        // Kept again under the same handle: the first rows stay (a handle names one sweep).
        let later = SweptRows { vms_json: "[2]".into(), from_address: None, finished_ms: 2_000, ..rows.clone() };
        store.keep_swept(&later, 0).await.unwrap();
        assert_eq!(store.swept("1234", 0).await.unwrap(), Some(rows.clone()));
        // Keeping another deletes those finished before its cutoff.
        let other = SweptRows { handle: "5678".into(), finished_ms: 9_000, ..later.clone() };
        store.keep_swept(&other, 5_000).await.unwrap();
        assert_eq!(store.swept("1234", 0).await.unwrap(), None, "deleted as expired");
        assert_eq!(store.swept("5678", 0).await.unwrap(), Some(other));
        // Refused without a handle or a requester.
        let blank = SweptRows { handle: " ".into(), ..later };
        assert!(store.keep_swept(&blank, 0).await.is_err());
        store.close().await;
    }
}
