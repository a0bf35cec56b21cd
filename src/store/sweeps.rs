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
    /// The front end's name for it (a Discord sweep's nonce), by which any replica finds it to
    /// cancel it; `None` where nothing can cancel it from elsewhere (the terminal).
    pub handle: Option<String>,
    /// The identity of who starts it (`Actor::id`): only they may cancel it.
    pub requester: String,
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
    pub handle: Option<String>,
    /// `None` in claims made before migration 0006 (none outlive a lease).
    pub requester: Option<String>,
    /// When its requester asked to cancel it, unix milliseconds.
    pub cancel_requested_ms: Option<i64>,
}

/// A finished sweep's rows, kept for its details menu on every replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweptRows {
    pub handle: String,
    /// The identity of who started the sweep.
    pub requester: String,
    /// The address its checks tested port 3389 from; `None`: the whole Internet.
    pub from_address: Option<String>,
    /// The VMs, worst first, as JSON (the door's to write and read: `[{"id", "name"}]`).
    pub vms_json: String,
    pub finished_ms: i64,
}

const COLUMNS: &str = "id, subscription_id, resource_group, started_by, started_ms, owner, \
     heartbeat_ms, handle, requester, cancel_requested_ms";

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
        require("who may cancel the sweep", &sweep.requester)?;
        if let Some(handle) = &sweep.handle {
            require("the sweep's handle", handle)?;
        }
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
                 started_by, started_ms, owner, heartbeat_ms, handle, requester)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
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
        .bind(sweep.handle.clone())
        .bind(&sweep.requester)
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

    /// The running sweep the front end calls `handle`, on whichever replica it runs; not one
    /// whose heartbeat is older than `cutoff_ms` (its replica died: nothing will stop it, and
    /// the next claim in its subscription deletes it).
    pub async fn sweep_by_handle(
        &self,
        handle: &str,
        cutoff_ms: i64,
    ) -> Result<Option<StoredSweep>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sweeps WHERE handle = $1 AND heartbeat_ms >= $2"
        ))
        .bind(handle)
        .bind(cutoff_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("finding a running sweep"))?;
        row.as_ref().map(sweep_from_row).transpose()
    }

    /// Ask the replica running the sweep `handle` that `requester` started to cancel it (it
    /// reads [`Self::sweep_cancel_requested`] every second): one statement by handle, so a
    /// claim taken again under a new id meanwhile is still reached. `false` when no such live
    /// sweep runs (it ended, its replica died, or someone else started it). Asking twice is
    /// asking once.
    pub async fn request_sweep_cancel(
        &self,
        handle: &str,
        requester: &str,
        cutoff_ms: i64,
    ) -> Result<bool, StoreError> {
        let changed = self
            .run(
                sqlx::query(
                    "UPDATE sweeps SET cancel_requested_ms = COALESCE(cancel_requested_ms, $1)
                     WHERE handle = $2 AND requester = $3 AND heartbeat_ms >= $4",
                )
                .bind(now_ms())
                .bind(handle)
                .bind(requester)
                .bind(cutoff_ms),
                "asking for a sweep's cancellation",
            )
            .await?;
        Ok(changed == 1)
    }

    /// Whether sweep `id`'s requester asked to cancel it: `Some(true)` when they did,
    /// `Some(false)` when not, `None` when the claim is gone.
    pub async fn sweep_cancel_requested(&self, id: &str) -> Result<Option<bool>, StoreError> {
        let row = sqlx::query("SELECT cancel_requested_ms FROM sweeps WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading a sweep's cancellation"))?;
        row.map(|row| {
            row.try_get::<Option<i64>, _>("cancel_requested_ms")
                .map(|at| at.is_some())
                .map_err(StoreError::db("reading a sweep's cancellation"))
        })
        .transpose()
    }

    /// Keep a finished sweep's rows (see [`SweptRows`]); rows that finished before `expired_ms`
    /// are deleted in the same transaction. A handle already kept keeps its first rows: a
    /// handle names one sweep, and no later one may put its VMs behind another's menu.
    pub async fn keep_swept(&self, rows: &SweptRows, expired_ms: i64) -> Result<(), StoreError> {
        require("the sweep's handle", &rows.handle)?;
        require("who started the sweep", &rows.requester)?;
        let doing = "keeping a sweep's rows";
        let mut tx = self.pool.begin().await.map_err(StoreError::db(doing))?;
        sqlx::query("DELETE FROM swept WHERE finished_ms < $1")
            .bind(expired_ms)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(doing))?;
        sqlx::query(
            "INSERT INTO swept (handle, requester, from_address, vms, finished_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (handle) DO NOTHING",
        )
        .bind(&rows.handle)
        .bind(&rows.requester)
        .bind(rows.from_address.clone())
        .bind(&rows.vms_json)
        .bind(rows.finished_ms)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(doing))?;
        tx.commit().await.map_err(StoreError::db(doing))
    }

    /// The rows of the sweep `handle` if it finished at or after `expired_ms`.
    pub async fn swept(
        &self,
        handle: &str,
        expired_ms: i64,
    ) -> Result<Option<SweptRows>, StoreError> {
        let doing = "reading a sweep's rows";
        let row = sqlx::query(
            "SELECT handle, requester, from_address, vms, finished_ms FROM swept
             WHERE handle = $1 AND finished_ms >= $2",
        )
        .bind(handle)
        .bind(expired_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db(doing))?;
        let read = |row: &AnyRow| -> Result<SweptRows, sqlx::Error> {
            Ok(SweptRows {
                handle: row.try_get("handle")?,
                requester: row.try_get("requester")?,
                from_address: row.try_get("from_address")?,
                vms_json: row.try_get("vms")?,
                finished_ms: row.try_get("finished_ms")?,
            })
        };
        row.as_ref()
            .map(read)
            .transpose()
            .map_err(StoreError::db(doing))
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
            handle: row.try_get("handle")?,
            requester: row.try_get("requester")?,
            cancel_requested_ms: row.try_get("cancel_requested_ms")?,
        })
    };
    read(row).map_err(StoreError::db("reading a running sweep"))
}

#[cfg(test)]
mod tests;
