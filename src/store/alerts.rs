//! The Azure Monitor alerts posted in the war room: which message each alert's report is, so
//! that a refire and the resolution edit it, and who is posting it now, so that replicas
//! receiving the same notification post once.
//!
//! One row per alert and VM (`alert_key`). Receiving a notification is [`Store::claim_alert`]:
//! the row is inserted with this replica as its owner (one `INSERT … ON CONFLICT DO NOTHING`:
//! exactly one of concurrent first notifications inserts it), or the newest notification is
//! recorded in `wanted` and the row taken with one conditional `UPDATE` when nobody holds it
//! (or its holder stopped renewing) and `wanted` was not posted yet (or not within the
//! duplicate window: a later refire refreshes the message). The holder posts or edits, then
//! [`Store::release_alert`]s the row for what it posted; when a newer notification was recorded
//! meanwhile the release fails and the holder handles that one too, so nothing received is
//! lost and nothing is posted twice.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now_ms, require, Store, StoreError};

/// An alert's row as its holder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRow {
    pub key: String,
    pub channel_id: String,
    /// The message posted for it, if one was.
    pub message_id: Option<String>,
    /// The newest notification received (the caller's JSON).
    pub wanted: String,
}

/// What receiving a notification came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertClaim {
    /// This replica holds the alert: post (no message yet) or edit, then release.
    Mine(AlertRow),
    /// Another replica holds it now; the notification is recorded and it will post it.
    Busy,
    /// This very notification was posted within the duplicate window (a second delivery).
    Duplicate,
}

const COLUMNS: &str = "alert_key, channel_id, message_id, wanted";

fn row_of(row: &AnyRow) -> Result<AlertRow, StoreError> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("an alert row: {e}"));
    Ok(AlertRow {
        key: row.try_get("alert_key").map_err(get)?,
        channel_id: row.try_get("channel_id").map_err(get)?,
        message_id: row.try_get("message_id").map_err(get)?,
        wanted: row.try_get("wanted").map_err(get)?,
    })
}

/// The row's key: the alertId and the VM id, ignoring case as ARM does.
pub fn alert_key(alert_id: &str, vm_id: &str) -> String {
    format!(
        "{}|{}",
        alert_id.trim().to_ascii_lowercase(),
        vm_id.trim().to_ascii_lowercase()
    )
}

impl Store {
    /// The alerts about `vm_id` (compared ignoring ASCII case), newest first: each alert's
    /// newest notification (the JSON it was received as) and when the alert was first received
    /// (unix ms), for the VM's timeline.
    pub async fn alerts_of(
        &self,
        vm_id: &str,
        limit: u32,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        require("the VM id", vm_id)?;
        let doing = "reading the alerts of a VM";
        let rows = sqlx::query(
            "SELECT wanted, created_ms FROM alerts WHERE lower(vm_id) = $1
             ORDER BY created_ms DESC LIMIT $2",
        )
        .bind(vm_id.trim().to_ascii_lowercase())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db(doing))?;
        rows.iter()
            .map(|row| Ok((row.try_get("wanted")?, row.try_get("created_ms")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::db(doing))
    }

    /// Receive `wanted` (a notification, as the caller's JSON) for the alert `alert_id` on
    /// `vm_id`, to be posted in `channel_id` by `owner`. A holder whose heartbeat is older than
    /// `cutoff_ms` has stopped; the same notification posted after `duplicate_before_ms` is a
    /// refire, not a duplicate.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_alert(
        &self,
        alert_id: &str,
        vm_id: &str,
        channel_id: &str,
        wanted: &str,
        owner: &str,
        cutoff_ms: i64,
        duplicate_before_ms: i64,
    ) -> Result<AlertClaim, StoreError> {
        require("the alert id", alert_id)?;
        require("the VM id", vm_id)?;
        require("the channel", channel_id)?;
        require("the owner", owner)?;
        let doing = "claiming an alert";
        let key = alert_key(alert_id, vm_id);
        let now = now_ms();
        let inserted = self
            .run(
                sqlx::query(
                    "INSERT INTO alerts (alert_key, alert_id, vm_id, channel_id, wanted, owner,
                                         heartbeat_ms, created_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
                     ON CONFLICT (alert_key) DO NOTHING",
                )
                .bind(&key)
                .bind(alert_id.trim())
                .bind(vm_id.trim())
                .bind(channel_id)
                .bind(wanted)
                .bind(owner)
                .bind(now),
                doing,
            )
            .await?;
        if inserted == 1 {
            return Ok(AlertClaim::Mine(AlertRow {
                key,
                channel_id: channel_id.to_string(),
                message_id: None,
                wanted: wanted.to_string(),
            }));
        }
        // Known: record the newest notification, then take the row if it is free and this
        // notification is not posted yet (or long enough ago to be a refire).
        self.run(
            sqlx::query("UPDATE alerts SET wanted = $1 WHERE alert_key = $2")
                .bind(wanted)
                .bind(&key),
            doing,
        )
        .await?;
        let taken = sqlx::query(&format!(
            "UPDATE alerts SET owner = $1, heartbeat_ms = $2
             WHERE alert_key = $3
               AND (owner IS NULL OR heartbeat_ms < $4)
               AND (done IS NULL OR done <> wanted OR done_ms < $5)
             RETURNING {COLUMNS}"
        ))
        .bind(owner)
        .bind(now)
        .bind(&key)
        .bind(cutoff_ms)
        .bind(duplicate_before_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db(doing))?;
        if let Some(row) = taken {
            return Ok(AlertClaim::Mine(row_of(&row)?));
        }
        let held = sqlx::query("SELECT owner FROM alerts WHERE alert_key = $1")
            .bind(&key)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db(doing))?;
        let owner: Option<String> = match held {
            Some(row) => row
                .try_get("owner")
                .map_err(|e| StoreError::Corrupt(format!("an alert row: {e}")))?,
            None => None,
        };
        Ok(if owner.is_some() {
            AlertClaim::Busy
        } else {
            AlertClaim::Duplicate
        })
    }

    /// The holder posted the alert's message: remember it (and renew the hold). `false`: the
    /// row is no longer this owner's.
    pub async fn alert_posted(
        &self,
        key: &str,
        owner: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        let changed = self
            .run(
                sqlx::query(
                    "UPDATE alerts SET message_id = $1, heartbeat_ms = $2
                     WHERE alert_key = $3 AND owner = $4",
                )
                .bind(message_id)
                .bind(now_ms())
                .bind(key)
                .bind(owner),
                "recording an alert's message",
            )
            .await?;
        Ok(changed == 1)
    }

    /// Renew the hold while a check runs. `false`: the row is no longer this owner's.
    pub async fn renew_alert(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let changed = self
            .run(
                sqlx::query(
                    "UPDATE alerts SET heartbeat_ms = $1 WHERE alert_key = $2 AND owner = $3",
                )
                .bind(now_ms())
                .bind(key)
                .bind(owner),
                "renewing an alert",
            )
            .await?;
        Ok(changed == 1)
    }

    /// Let go of the alert without having posted (Discord failed): the next notification takes
    /// it at once instead of after the lease.
    pub async fn abandon_alert(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.run(
            sqlx::query(
                "UPDATE alerts SET owner = NULL, heartbeat_ms = NULL
                 WHERE alert_key = $1 AND owner = $2",
            )
            .bind(key)
            .bind(owner),
            "abandoning an alert",
        )
        .await?;
        Ok(())
    }

    /// Let go of the alert after posting `handled`. `Ok(None)`: released. `Ok(Some(row))`: a
    /// newer notification came meanwhile; the row is still this owner's, to post that one.
    pub async fn release_alert(
        &self,
        key: &str,
        owner: &str,
        handled: &str,
    ) -> Result<Option<AlertRow>, StoreError> {
        let doing = "releasing an alert";
        let released = self
            .run(
                sqlx::query(
                    "UPDATE alerts SET owner = NULL, heartbeat_ms = NULL, done = $1, done_ms = $2
                     WHERE alert_key = $3 AND owner = $4 AND wanted = $1",
                )
                .bind(handled)
                .bind(now_ms())
                .bind(key)
                .bind(owner),
                doing,
            )
            .await?;
        if released == 1 {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM alerts WHERE alert_key = $1 AND owner = $2"
        ))
        .bind(key)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db(doing))?;
        row.as_ref().map(row_of).transpose()
    }
}

#[cfg(test)]
mod tests;
