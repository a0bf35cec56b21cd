//! The sweeps running now, across every replica that shares the database: one sweep per scope.
//!
//! A scope is a subscription, or a resource group in it (`resource_group` `None` is the whole
//! subscription); two scopes overlap when they are in the same subscription and either is the
//! whole subscription or both are the same group (names compared ignoring ASCII case, as ARM
//! does). A claim carries a lease, as running operations do: its `owner` (the replica) renews
//! `heartbeat_ms` while it sweeps, and a claim whose heartbeat is older than the lease belongs to
//! a replica that died: the next claim in its subscription deletes it.
//!
//! **Why a gate row.** Checking for an overlapping sweep and then inserting ours is two
//! statements, and no unique index can say "a group, or the whole subscription, but not both".
//! So [`Store::claim_sweep`] runs in one transaction that first upserts the subscription's row of
//! `sweep_gates`. In PostgreSQL that upsert takes the row's lock (a second claim of the same
//! subscription waits on it until the first commits, then, in READ COMMITTED, its next statement
//! sees the first's sweep); in SQLite the first write of a transaction takes the database's write
//! lock (a second writer waits, `busy_timeout`), and as it is the transaction's first statement
//! there is no older snapshot to upgrade. Either way the claims of one subscription take turns
//! through "look for an overlapping live sweep, insert ours", on every connection and every
//! process, while claims in other subscriptions do not wait on each other in PostgreSQL. A
//! serialisable transaction would give the same answer, but reports the conflict as an error to
//! retry instead of waiting.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{new_id, now_ms, require, Store, StoreError};

/// A sweep someone asks to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSweep {
    pub subscription_id: String,
    /// `None`: the whole subscription.
    pub resource_group: Option<String>,
    /// The person who starts it, as the front end names them.
    pub started_by: String,
    /// The replica that runs it (renews its heartbeat).
    pub owner: String,
}

/// A sweep running now (on this replica or another).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSweep {
    pub id: String,
    pub subscription_id: String,
    pub resource_group: Option<String>,
    pub started_by: String,
    /// When it started, unix milliseconds.
    pub started_ms: i64,
    pub owner: String,
    pub heartbeat_ms: i64,
}

const COLUMNS: &str =
    "id, subscription_id, resource_group, started_by, started_ms, owner, heartbeat_ms";

fn key(name: &str) -> String {
    name.trim().to_ascii_lowercase()
}

impl Store {
    /// Claim the scope of `sweep`, or say which running sweep overlaps it. Claims whose
    /// heartbeat is older than `cutoff_ms` (their owner stopped renewing: it died) do not count,
    /// and those of the subscription are deleted. Race-free across connections and processes:
    /// of concurrent claims of overlapping scopes exactly one gets `Ok` (see the module's
    /// comment for how).
    pub async fn claim_sweep(
        &self,
        sweep: &NewSweep,
        cutoff_ms: i64,
    ) -> Result<Result<StoredSweep, StoredSweep>, StoreError> {
        require("the subscription", &sweep.subscription_id)?;
        require("who starts the sweep", &sweep.started_by)?;
        require("the owner", &sweep.owner)?;
        if let Some(group) = &sweep.resource_group {
            require("the resource group", group)?;
        }
        let doing = "claiming a sweep's scope";
        let subscription = key(&sweep.subscription_id);
        let group = sweep.resource_group.as_deref().map(key);
        let now = now_ms();
        let id = new_id()?;
        let mut tx = self.pool.begin().await.map_err(StoreError::db(doing))?;
        // First the gate: from here on, other claims in this subscription wait for our commit.
        sqlx::query(
            "INSERT INTO sweep_gates (subscription_key, claimed_ms) VALUES ($1, $2)
             ON CONFLICT (subscription_key) DO UPDATE SET claimed_ms = excluded.claimed_ms",
        )
        .bind(&subscription)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(doing))?;
        sqlx::query("DELETE FROM sweeps WHERE subscription_key = $1 AND heartbeat_ms < $2")
            .bind(&subscription)
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(doing))?;
        // The whole subscription overlaps every sweep in it; a group, the same group and the
        // whole subscription.
        let sql = match &group {
            None => format!(
                "SELECT {COLUMNS} FROM sweeps WHERE subscription_key = $1
                 ORDER BY started_ms, id LIMIT 1"
            ),
            Some(_) => format!(
                "SELECT {COLUMNS} FROM sweeps WHERE subscription_key = $1
                   AND (group_key IS NULL OR group_key = $2)
                 ORDER BY started_ms, id LIMIT 1"
            ),
        };
        let mut query = sqlx::query(&sql).bind(&subscription);
        if let Some(group) = &group {
            query = query.bind(group);
        }
        let overlapping = query
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db(doing))?;
        if let Some(row) = overlapping {
            let running = sweep_from_row(&row)?;
            // Keep the deletion of lapsed claims.
            tx.commit().await.map_err(StoreError::db(doing))?;
            return Ok(Err(running));
        }
        let row = sqlx::query(&format!(
            "INSERT INTO sweeps (id, subscription_id, subscription_key, resource_group, group_key,
                 started_by, started_ms, owner, heartbeat_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             RETURNING {COLUMNS}"
        ))
        .bind(&id)
        .bind(&sweep.subscription_id)
        .bind(&subscription)
        .bind(sweep.resource_group.clone())
        .bind(group)
        .bind(&sweep.started_by)
        .bind(now)
        .bind(&sweep.owner)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::db(doing))?;
        let claimed = sweep_from_row(&row)?;
        tx.commit().await.map_err(StoreError::db(doing))?;
        Ok(Ok(claimed))
    }

    /// The owner says it still runs sweep `id`: its heartbeat is now. `false` when the claim is
    /// gone (released, or deleted by another claim after its lease lapsed).
    pub async fn renew_sweep(&self, id: &str, owner: &str) -> Result<bool, StoreError> {
        let changed = self
            .run(
                sqlx::query("UPDATE sweeps SET heartbeat_ms = $1 WHERE id = $2 AND owner = $3")
                    .bind(now_ms())
                    .bind(id)
                    .bind(owner),
                "renewing a sweep's claim",
            )
            .await?;
        Ok(changed == 1)
    }

    /// The sweep `id` ended: its scope is free. `false` when there was no such claim of
    /// `owner`'s (already released, or lapsed and deleted).
    pub async fn release_sweep(&self, id: &str, owner: &str) -> Result<bool, StoreError> {
        let changed = self
            .run(
                sqlx::query("DELETE FROM sweeps WHERE id = $1 AND owner = $2")
                    .bind(id)
                    .bind(owner),
                "releasing a sweep's claim",
            )
            .await?;
        Ok(changed == 1)
    }

    /// Every claimed sweep, lapsed or not, oldest first.
    pub async fn claimed_sweeps(&self) -> Result<Vec<StoredSweep>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sweeps ORDER BY started_ms, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("listing running sweeps"))?;
        rows.iter().map(sweep_from_row).collect()
    }
}

fn sweep_from_row(row: &AnyRow) -> Result<StoredSweep, StoreError> {
    let read = |row: &AnyRow| -> Result<StoredSweep, sqlx::Error> {
        Ok(StoredSweep {
            id: row.try_get("id")?,
            subscription_id: row.try_get("subscription_id")?,
            resource_group: row.try_get("resource_group")?,
            started_by: row.try_get("started_by")?,
            started_ms: row.try_get("started_ms")?,
            owner: row.try_get("owner")?,
            heartbeat_ms: row.try_get("heartbeat_ms")?,
        })
    };
    read(row).map_err(StoreError::db("reading a running sweep"))
}

#[cfg(test)]
mod tests;
