//! "Which VM?" menus waiting for their requester's choice, on every replica that shares the
//! database (migration `0007_picks`): kept when the menu is shown, taken once by whichever
//! replica the choice reaches.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{require, Store, StoreError};

/// A menu's pending pick, as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptPick {
    /// The menu's id (its nonce).
    pub nonce: String,
    /// The identity of who asked: nobody else may pick.
    pub requester: String,
    /// What to run once the VM is known, in the front end's words.
    pub kind: String,
    /// The address checks test port 3389 from; `None`: the whole Internet.
    pub from_address: Option<String>,
    /// The candidates, as JSON (the door's to write and read).
    pub candidates_json: String,
    /// When it was asked, unix milliseconds.
    pub created_ms: i64,
}

impl Store {
    /// Keep `pick`; picks asked before `expired_ms` are deleted in the same transaction. A
    /// nonce already kept keeps its first pick.
    pub async fn keep_pick(&self, pick: &KeptPick, expired_ms: i64) -> Result<(), StoreError> {
        require("the menu's nonce", &pick.nonce)?;
        require("who asked", &pick.requester)?;
        require("what to run", &pick.kind)?;
        let doing = "keeping a menu's pick";
        let mut tx = self.pool.begin().await.map_err(StoreError::db(doing))?;
        sqlx::query("DELETE FROM picks WHERE created_ms < $1")
            .bind(expired_ms)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(doing))?;
        sqlx::query(
            "INSERT INTO picks (nonce, requester, kind, from_address, candidates, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (nonce) DO NOTHING",
        )
        .bind(&pick.nonce)
        .bind(&pick.requester)
        .bind(&pick.kind)
        .bind(pick.from_address.clone())
        .bind(&pick.candidates_json)
        .bind(pick.created_ms)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(doing))?;
        tx.commit().await.map_err(StoreError::db(doing))
    }

    /// Take the pick `nonce` that `requester` asked at or after `since_ms`: one statement that
    /// deletes it as it reads it, so of two choices on two replicas exactly one gets it.
    /// `None`: taken already, expired, never kept, or someone else's.
    pub async fn take_pick(
        &self,
        nonce: &str,
        requester: &str,
        since_ms: i64,
    ) -> Result<Option<KeptPick>, StoreError> {
        let doing = "taking a menu's pick";
        let row = sqlx::query(
            "DELETE FROM picks WHERE nonce = $1 AND requester = $2 AND created_ms >= $3
             RETURNING nonce, requester, kind, from_address, candidates, created_ms",
        )
        .bind(nonce)
        .bind(requester)
        .bind(since_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db(doing))?;
        let read = |row: &AnyRow| -> Result<KeptPick, sqlx::Error> {
            Ok(KeptPick {
                nonce: row.try_get("nonce")?,
                requester: row.try_get("requester")?,
                kind: row.try_get("kind")?,
                from_address: row.try_get("from_address")?,
                candidates_json: row.try_get("candidates")?,
                created_ms: row.try_get("created_ms")?,
            })
        };
        row.as_ref()
            .map(read)
            .transpose()
            .map_err(StoreError::db(doing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::on_both_backends;

    fn pick(nonce: &str, created_ms: i64) -> KeptPick {
        KeptPick {
            nonce: nonce.into(),
            requester: "discord:1".into(),
            kind: "fix open-rdp 198.51.100.7 3389".into(),
            from_address: None,
            candidates_json: "[]".into(),
            created_ms,
        }
    }

    on_both_backends! {
        #[tokio::test]
        async fn a_pick_is_taken_once_by_its_requester_while_fresh(store, pooled = true) {
            store.keep_pick(&pick("a1", 1_000), 0).await.unwrap();
            // Someone else, or a cutoff after it was asked: nothing, and it stays.
            assert_eq!(store.take_pick("a1", "discord:2", 0).await.unwrap(), None);
            assert_eq!(store.take_pick("a1", "discord:1", 1_001).await.unwrap(), None);
            // Kept again under its nonce: the first stays.
            let other = KeptPick { kind: "check".into(), ..pick("a1", 1_000) };
            store.keep_pick(&other, 0).await.unwrap();
            // Two takes at once, as on two replicas: exactly one gets it.
            let (first, second) = tokio::join!(
                store.take_pick("a1", "discord:1", 0),
                store.take_pick("a1", "discord:1", 0),
            );
            let taken: Vec<KeptPick> = [first.unwrap(), second.unwrap()].into_iter().flatten().collect();
            assert_eq!(taken, [pick("a1", 1_000)]);
            assert_eq!(store.take_pick("a1", "discord:1", 0).await.unwrap(), None, "taken once");
            // Keeping a pick deletes those asked before the cutoff.
            store.keep_pick(&pick("b2", 1_000), 0).await.unwrap();
            store.keep_pick(&pick("c3", 5_000), 2_000).await.unwrap();
            assert_eq!(store.take_pick("b2", "discord:1", 0).await.unwrap(), None, "expired");
            assert!(store.take_pick("c3", "discord:1", 0).await.unwrap().is_some());
            let blank = KeptPick { kind: " ".into(), ..pick("d4", 1) };
            assert!(store.keep_pick(&blank, 0).await.is_err());
            store.close().await;
        }
    }
}
