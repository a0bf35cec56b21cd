use super::*;
use crate::store::testing::on_both_backends;

const VM: &str =
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web-02";
const LONG_AGO: i64 = 0;

async fn claim(store: &Store, wanted: &str, owner: &str) -> AlertClaim {
    store
        .claim_alert("alert-1", VM, "42", wanted, owner, LONG_AGO, LONG_AGO)
        .await
        .unwrap()
}

on_both_backends! {
    #[tokio::test]
    async fn the_first_notification_is_claimed_once_and_a_duplicate_is_not(store, pooled = true) {
        let AlertClaim::Mine(row) = claim(&store, "fired", "a").await else { panic!("first") };
        assert_eq!(row.message_id, None);
        // The same notification at another replica while the first posts: recorded, not taken.
        assert_eq!(claim(&store, "fired", "b").await, AlertClaim::Busy);
        assert!(store.alert_posted(&row.key, "a", "900").await.unwrap());
        assert_eq!(store.release_alert(&row.key, "a", "fired").await.unwrap(), None);
        // Delivered again just after: a duplicate (posted after the window's start).
        let now = crate::store::now_ms();
        let again = store
            .claim_alert("ALERT-1", VM, "42", "fired", "b", LONG_AGO, now - 60_000)
            .await
            .unwrap();
        assert_eq!(again, AlertClaim::Duplicate);
    }

    #[tokio::test]
    async fn a_refire_and_a_resolution_take_the_row_with_its_message(store, pooled = true) {
        let AlertClaim::Mine(row) = claim(&store, "fired", "a").await else { panic!("first") };
        store.alert_posted(&row.key, "a", "900").await.unwrap();
        store.release_alert(&row.key, "a", "fired").await.unwrap();
        let AlertClaim::Mine(row) = claim(&store, "resolved", "b").await else { panic!("resolve") };
        assert_eq!(row.message_id.as_deref(), Some("900"));
        assert_eq!(row.wanted, "resolved");
        // Outside the window the same notification again is a refire.
        store.release_alert(&row.key, "b", "resolved").await.unwrap();
        assert_eq!(claim(&store, "resolved", "a").await, AlertClaim::Duplicate);
        let after_the_window = crate::store::now_ms() + 1;
        let refire = store
            .claim_alert("alert-1", VM, "42", "resolved", "a", LONG_AGO, after_the_window)
            .await
            .unwrap();
        assert!(matches!(refire, AlertClaim::Mine(_)));
    }

    #[tokio::test]
    async fn a_notification_received_while_held_is_handed_to_the_holder(store, pooled = true) {
        let AlertClaim::Mine(row) = claim(&store, "fired", "a").await else { panic!("first") };
        let now = crate::store::now_ms();
        let busy = store
            .claim_alert("alert-1", VM, "42", "resolved", "b", now - 60_000, now)
            .await
            .unwrap();
        assert_eq!(busy, AlertClaim::Busy);
        // The holder's release for what it posted fails: it has the newer one to post.
        let next = store.release_alert(&row.key, "a", "fired").await.unwrap();
        assert_eq!(next.map(|r| r.wanted).as_deref(), Some("resolved"));
        assert_eq!(store.release_alert(&row.key, "a", "resolved").await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_abandoned_alert_is_taken_by_the_next_notification(store, pooled = true) {
        let AlertClaim::Mine(row) = claim(&store, "fired", "a").await else { panic!("first") };
        store.abandon_alert(&row.key, "a").await.unwrap();
        // Nothing was posted: the same notification again is not a duplicate.
        let now = crate::store::now_ms();
        let again = store
            .claim_alert("alert-1", VM, "42", "fired", "b", LONG_AGO, now - 60_000)
            .await
            .unwrap();
        assert!(matches!(again, AlertClaim::Mine(AlertRow { message_id: None, .. })));
    }

    #[tokio::test]
    async fn a_holder_that_stopped_renewing_loses_the_row(store, pooled = true) {
        let AlertClaim::Mine(row) = claim(&store, "fired", "a").await else { panic!("first") };
        // Everything before now counts as lapsed.
        let now = crate::store::now_ms() + 1;
        let taken = store
            .claim_alert("alert-1", VM, "42", "fired", "b", now, LONG_AGO)
            .await
            .unwrap();
        assert!(matches!(taken, AlertClaim::Mine(_)));
        assert!(!store.renew_alert(&row.key, "a").await.unwrap());
        assert!(!store.alert_posted(&row.key, "a", "1").await.unwrap());
        assert_eq!(store.release_alert(&row.key, "a", "fired").await.unwrap(), None);
    }
}
