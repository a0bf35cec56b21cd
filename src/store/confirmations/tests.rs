use super::*;
use crate::store::testing::on_both_backends;

const VM: &str =
    "/subscriptions/S1/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01";

fn offer(action: &str, requester: &str) -> NewConfirmation {
    NewConfirmation {
        action: action.into(),
        vm_id: VM.into(),
        vm_name: "web-01".into(),
        requester: requester.into(),
        requester_name: format!("{requester}-name"),
        channel: Some("chan".into()),
        params_json: r#"{"username":"azureadmin"}"#.into(),
        summary: "Redeploy web-01: temporary disk data is lost.".into(),
        created_ms: 1_000,
        ttl_ms: 300_000,
    }
}

on_both_backends! {
    #[tokio::test]
    async fn a_confirmation_round_trips_with_an_unguessable_id(store, pooled = false) {
        let c = store
            .create_confirmation(&offer("redeploy", "u1"))
            .await
            .unwrap();
        assert_eq!(c.id.len(), 32);
        assert_eq!(c.expires_ms, 301_000);
        assert_eq!(c.state, ConfirmationState::Pending);
        assert!(!c.is_expired(300_999));
        assert!(c.is_expired(301_000));
        assert_eq!(
            store.get_confirmation(&c.id).await.unwrap(),
            Some(c.clone())
        );
        assert_eq!(store.get_confirmation("nope").await.unwrap(), None);
        let other = store
            .create_confirmation(&offer("redeploy", "u1"))
            .await
            .unwrap();
        assert_ne!(c.id, other.id);
    }

    #[tokio::test]
    async fn confirm_outcomes(store, pooled = false) {
        let c = store
            .create_confirmation(&offer("redeploy", "u1"))
            .await
            .unwrap();

        // Two-person: the requester is refused and nothing changes.
        assert_eq!(
            store
                .confirm(&c.id, "u1", "u1-name", true, 2_000)
                .await
                .unwrap(),
            ConfirmOutcome::SamePerson
        );
        assert_eq!(
            store.get_confirmation(&c.id).await.unwrap().unwrap().state,
            ConfirmationState::Pending
        );
        assert_eq!(
            store
                .confirm("missing", "u2", "bob", true, 2_000)
                .await
                .unwrap(),
            ConfirmOutcome::NotFound
        );

        let ConfirmOutcome::Confirmed(taken) = store
            .confirm(&c.id, "u2", "bob", true, 3_000)
            .await
            .unwrap()
        else {
            panic!("second person confirms")
        };
        let confirmed = ConfirmationState::Confirmed {
            by: "u2".into(),
            by_name: "bob".into(),
            at_ms: 3_000,
        };
        assert_eq!(taken.state, confirmed);
        assert_eq!(taken.params_json, c.params_json);

        // A double click, by anyone, later: already confirmed, by whom and when.
        for who in ["u1", "u2", "u3"] {
            assert_eq!(
                store.confirm(&c.id, who, who, true, 4_000).await.unwrap(),
                ConfirmOutcome::AlreadyConfirmed {
                    by_name: "bob".into(),
                    at_ms: 3_000
                }
            );
        }
        assert_eq!(
            store.cancel(&c.id, "u1", "u1-name", 4_000).await.unwrap(),
            CancelOutcome::AlreadyConfirmed {
                by_name: "bob".into()
            }
        );
        assert_eq!(
            store.get_confirmation(&c.id).await.unwrap().unwrap().state,
            confirmed
        );
    }

    #[tokio::test]
    async fn one_person_actions_may_be_confirmed_by_the_requester(store, pooled = false) {
        let c = store
            .create_confirmation(&offer("restart", "u1"))
            .await
            .unwrap();
        assert!(matches!(
            store
                .confirm(&c.id, "u1", "u1-name", false, 2_000)
                .await
                .unwrap(),
            ConfirmOutcome::Confirmed(_)
        ));
    }

    #[tokio::test]
    async fn expiry_is_exclusive_of_the_deadline(store, pooled = false) {
        let c = store
            .create_confirmation(&offer("restart", "u1"))
            .await
            .unwrap();
        assert_eq!(
            store
                .confirm(&c.id, "u2", "bob", false, c.expires_ms)
                .await
                .unwrap(),
            ConfirmOutcome::Expired
        );
        assert_eq!(
            store
                .cancel(&c.id, "u1", "u1-name", c.expires_ms + 1)
                .await
                .unwrap(),
            CancelOutcome::Expired
        );
        // Expired even for the requester of a two-person action: expiry is the better reason.
        assert_eq!(
            store
                .confirm(&c.id, "u1", "u1-name", true, c.expires_ms)
                .await
                .unwrap(),
            ConfirmOutcome::Expired
        );
        let d = store
            .create_confirmation(&offer("restart", "u1"))
            .await
            .unwrap();
        assert!(matches!(
            store
                .confirm(&d.id, "u2", "bob", false, d.expires_ms - 1)
                .await
                .unwrap(),
            ConfirmOutcome::Confirmed(_)
        ));
    }

    #[tokio::test]
    async fn cancel_outcomes(store, pooled = false) {
        let c = store
            .create_confirmation(&offer("redeploy", "u1"))
            .await
            .unwrap();
        assert_eq!(
            store.cancel(&c.id, "u1", "alice", 2_000).await.unwrap(),
            CancelOutcome::Cancelled
        );
        assert_eq!(
            store.cancel(&c.id, "u2", "bob", 2_500).await.unwrap(),
            CancelOutcome::AlreadyCancelled {
                by_name: "alice".into()
            }
        );
        assert_eq!(
            store
                .confirm(&c.id, "u2", "bob", true, 3_000)
                .await
                .unwrap(),
            ConfirmOutcome::Cancelled {
                by_name: "alice".into()
            }
        );
        assert_eq!(
            store.get_confirmation(&c.id).await.unwrap().unwrap().state,
            ConfirmationState::Cancelled {
                by: "u1".into(),
                by_name: "alice".into(),
                at_ms: 2_000
            }
        );
        assert_eq!(
            store.cancel("missing", "u1", "alice", 2_000).await.unwrap(),
            CancelOutcome::NotFound
        );
    }

    #[tokio::test]
    async fn no_column_can_hold_a_password(store, pooled = false) {
        let mut o = offer("reset-password", "u1");
        o.params_json = r#"{"username":"azureadmin","password":"Hunter2!Hunter2!"}"#.into();
        let err = store.create_confirmation(&o).await.unwrap_err();
        assert!(matches!(err, StoreError::Secret { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("`password`") && !text.contains("Hunter2"),
            "{text}"
        );

        o.params_json = "username=azureadmin".into();
        let err = store.create_confirmation(&o).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidJson { .. }), "{err:?}");

        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM confirmations")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(rows, 0);
    }

    /// Twenty people click "Confirm" at once, through a pool of several connections to a file
    /// database: the database lets exactly one through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_confirms_let_exactly_one_through(store, pooled = true) {
        let c = store
            .create_confirmation(&offer("redeploy", "u0"))
            .await
            .unwrap();
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(20));
        let tasks: Vec<_> = (1..=20)
            .map(|i| {
                let (store, id, start) = (store.clone(), c.id.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    let who = format!("u{i}");
                    store.confirm(&id, &who, &who, true, 2_000).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut others = 0;
        for task in tasks {
            match task.await.unwrap().unwrap() {
                ConfirmOutcome::Confirmed(c) => winners.push(c),
                ConfirmOutcome::AlreadyConfirmed { .. } => others += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        assert_eq!(others, 19);
        let ConfirmationState::Confirmed { by, .. } = &winners[0].state else {
            panic!("{:?}", winners[0])
        };
        let stored = store.get_confirmation(&c.id).await.unwrap().unwrap();
        assert_eq!(
            stored.state, winners[0].state,
            "the winner {by} is what is stored"
        );
        store.close().await;
    }
}
