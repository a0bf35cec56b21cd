//! Watches: a VM re-checked on a schedule for a person, posting in the channel it was started in
//! when something changes. One per VM and channel (a second start there extends the first).
//!
//! A watch is run by exactly one replica at a time, with a lease as on operations: its `owner`
//! renews `heartbeat_ms` while it lives ([`Store::renew_watches`]), and [`Store::claim_due_watches`]
//! takes, in one conditional `UPDATE`, the due watches that have no owner, are this replica's, or
//! whose owner's heartbeat is older than the lease (a replica that died). Two replicas claiming
//! at once: the second's `UPDATE` finds the row already owned by a live replica and skips it
//! (PostgreSQL re-reads a row another transaction changed before applying its `WHERE`; SQLite
//! has one writer at a time). Every later write of a run is conditional on still owning it.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::secrets::check_json;
use super::{new_id, now_ms, require, vm_key, Store, StoreError};

/// A watch someone starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWatch {
    pub vm_id: String,
    pub vm_name: String,
    /// The Discord channel it posts in.
    pub channel: String,
    pub guild: Option<String>,
    /// The person, as the door names them (`discord:<id>`), their name and role ids.
    pub actor: String,
    pub actor_name: String,
    pub actor_roles: Vec<String>,
    pub interval_ms: i64,
    pub expires_ms: i64,
}

/// A watch as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWatch {
    pub id: String,
    pub vm_id: String,
    pub vm_name: String,
    pub channel: String,
    pub guild: Option<String>,
    pub actor: String,
    pub actor_name: String,
    pub actor_roles: Vec<String>,
    pub started_ms: i64,
    pub interval_ms: i64,
    /// When it is due next, unix ms.
    pub next_ms: i64,
    pub expires_ms: i64,
    /// The previous check's verdict and findings (JSON), `None` before the first.
    pub last_json: Option<String>,
    pub owner: Option<String>,
    pub heartbeat_ms: i64,
}

const COLUMNS: &str = "id, vm_id, vm_name, channel, guild, actor, actor_name, actor_roles, \
     started_ms, interval_ms, next_ms, expires_ms, last_json, owner, heartbeat_ms";

impl Store {
    /// Start watching, or extend the watch of the same VM in the same channel: its person,
    /// interval and expiry become these, it is due at once, and what it last saw is kept (so
    /// the first re-check of an extended watch still compares). Returns the watch and whether
    /// one was there already.
    pub async fn start_watch(&self, w: &NewWatch) -> Result<(StoredWatch, bool), StoreError> {
        require("the VM id", &w.vm_id)?;
        require("the channel", &w.channel)?;
        require("the person", &w.actor)?;
        let doing = "starting a watch";
        let now = now_ms();
        let key = vm_key(&w.vm_id);
        let existed = sqlx::query("SELECT id FROM watches WHERE vm_key = $1 AND channel = $2")
            .bind(&key)
            .bind(&w.channel)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db(doing))?
            .is_some();
        let row = sqlx::query(&format!(
            "INSERT INTO watches (id, vm_key, vm_id, vm_name, channel, guild, actor, actor_name,
                 actor_roles, started_ms, interval_ms, next_ms, expires_ms, last_json, owner,
                 heartbeat_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL, NULL, $14)
             ON CONFLICT (vm_key, channel) DO UPDATE
             SET actor = excluded.actor, actor_name = excluded.actor_name,
                 actor_roles = excluded.actor_roles, guild = excluded.guild,
                 interval_ms = excluded.interval_ms, next_ms = excluded.next_ms,
                 expires_ms = excluded.expires_ms
             RETURNING {COLUMNS}"
        ))
        .bind(new_id()?)
        .bind(&key)
        .bind(&w.vm_id)
        .bind(&w.vm_name)
        .bind(&w.channel)
        .bind(w.guild.clone())
        .bind(&w.actor)
        .bind(&w.actor_name)
        .bind(w.actor_roles.join(","))
        .bind(now)
        .bind(w.interval_ms)
        .bind(now)
        .bind(w.expires_ms)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::db(doing))?;
        Ok((watch_from_row(&row)?, existed))
    }

    /// Stop watching `vm_id` in `channel`; the watch that was there, if any.
    pub async fn stop_watch(
        &self,
        vm_id: &str,
        channel: &str,
    ) -> Result<Option<StoredWatch>, StoreError> {
        let row = sqlx::query(&format!(
            "DELETE FROM watches WHERE vm_key = $1 AND channel = $2 RETURNING {COLUMNS}"
        ))
        .bind(vm_key(vm_id))
        .bind(channel)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("stopping a watch"))?;
        row.as_ref().map(watch_from_row).transpose()
    }

    /// The watches, soonest expiry first; with `channel`, only that channel's.
    pub async fn watches(&self, channel: Option<&str>) -> Result<Vec<StoredWatch>, StoreError> {
        let doing = "listing watches";
        let rows = match channel {
            Some(channel) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM watches WHERE channel = $1 ORDER BY expires_ms, id"
                ))
                .bind(channel)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM watches ORDER BY expires_ms, id"
                ))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(StoreError::db(doing))?;
        rows.iter().map(watch_from_row).collect()
    }

    /// Take the watches due at `now_ms` that nobody live owns (no owner, `owner`'s own, or an
    /// owner whose heartbeat is older than `cutoff_ms`), in one conditional `UPDATE`: each is
    /// returned to exactly one replica, and is due again one interval later (so that nobody
    /// runs it meanwhile; the run may put that off further).
    pub async fn claim_due_watches(
        &self,
        owner: &str,
        now_ms: i64,
        cutoff_ms: i64,
    ) -> Result<Vec<StoredWatch>, StoreError> {
        require("the owner", owner)?;
        let rows = sqlx::query(&format!(
            "UPDATE watches SET owner = $1, heartbeat_ms = $2, next_ms = $3 + interval_ms
             WHERE next_ms <= $4 AND (owner IS NULL OR owner = $5 OR heartbeat_ms < $6)
             RETURNING {COLUMNS}"
        ))
        .bind(owner)
        .bind(now_ms)
        .bind(now_ms)
        .bind(now_ms)
        .bind(owner)
        .bind(cutoff_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("claiming due watches"))?;
        let mut claimed = rows
            .iter()
            .map(watch_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by(|a, b| (a.next_ms, &a.id).cmp(&(b.next_ms, &b.id)));
        Ok(claimed)
    }

    /// `owner` is alive: the heartbeat of every watch it owns is now. How many it owns.
    pub async fn renew_watches(&self, owner: &str) -> Result<u64, StoreError> {
        self.run(
            sqlx::query("UPDATE watches SET heartbeat_ms = $1 WHERE owner = $2")
                .bind(now_ms())
                .bind(owner),
            "renewing watches",
        )
        .await
    }

    /// A run of watch `id` ended: due again at `next_ms`, having seen `last_json`. `false` when
    /// `owner` no longer owns it (taken over, or stopped meanwhile): the run says nothing.
    pub async fn record_watch_run(
        &self,
        id: &str,
        owner: &str,
        next_ms: i64,
        last_json: Option<&str>,
    ) -> Result<bool, StoreError> {
        if let Some(json) = last_json {
            check_json("a watch's last check", json)?;
        }
        let changed = self
            .run(
                sqlx::query(
                    "UPDATE watches SET next_ms = $1, last_json = COALESCE($2, last_json),
                         heartbeat_ms = $3
                     WHERE id = $4 AND owner = $5",
                )
                .bind(next_ms)
                .bind(last_json.map(str::to_string))
                .bind(now_ms())
                .bind(id)
                .bind(owner),
                "recording a watch's check",
            )
            .await?;
        Ok(changed == 1)
    }

    /// `owner` ends watch `id` (expired, or its person may no longer read the VM). `false` when
    /// it does not own it any more.
    pub async fn end_watch(&self, id: &str, owner: &str) -> Result<bool, StoreError> {
        let changed = self
            .run(
                sqlx::query("DELETE FROM watches WHERE id = $1 AND owner = $2")
                    .bind(id)
                    .bind(owner),
                "ending a watch",
            )
            .await?;
        Ok(changed == 1)
    }
}

fn watch_from_row(row: &AnyRow) -> Result<StoredWatch, StoreError> {
    let read = |row: &AnyRow| -> Result<StoredWatch, sqlx::Error> {
        let roles: String = row.try_get("actor_roles")?;
        Ok(StoredWatch {
            id: row.try_get("id")?,
            vm_id: row.try_get("vm_id")?,
            vm_name: row.try_get("vm_name")?,
            channel: row.try_get("channel")?,
            guild: row.try_get("guild")?,
            actor: row.try_get("actor")?,
            actor_name: row.try_get("actor_name")?,
            actor_roles: roles
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect(),
            started_ms: row.try_get("started_ms")?,
            interval_ms: row.try_get("interval_ms")?,
            next_ms: row.try_get("next_ms")?,
            expires_ms: row.try_get("expires_ms")?,
            last_json: row.try_get("last_json")?,
            owner: row.try_get("owner")?,
            heartbeat_ms: row.try_get("heartbeat_ms")?,
        })
    };
    read(row).map_err(StoreError::db("reading a watch"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::on_both_backends;

    const WEB: &str =
        "/subscriptions/S1/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-02";

    fn watch(channel: &str) -> NewWatch {
        NewWatch {
            vm_id: WEB.into(),
            vm_name: "web-02".into(),
            channel: channel.into(),
            guild: Some("g".into()),
            actor: "discord:1".into(),
            actor_name: "alice".into(),
            actor_roles: vec!["5001".into(), "5002".into()],
            interval_ms: 1000,
            expires_ms: now_ms() + 60_000,
        }
    }

    on_both_backends! {
        #[tokio::test]
        async fn a_due_watch_is_claimed_by_one_replica_until_its_lease_lapses(store, pooled = true) {
            let (started, existed) = store.start_watch(&watch("c1")).await.unwrap();
            assert!(!existed);
            assert_eq!(started.actor_roles, ["5001", "5002"]);
            let now = now_ms();
            let a = store.claim_due_watches("a", now, now - 10_000).await.unwrap();
            assert_eq!(a.len(), 1);
            // Claimed, it is due again an interval later; nobody runs it meanwhile.
            assert_eq!(a[0].next_ms, now + 1000);
            assert!(store.claim_due_watches("a", now, now - 10_000).await.unwrap().is_empty());
            // Due again but owned by a live replica: b skips it, a keeps it.
            let due = now + 2_000;
            assert!(store.claim_due_watches("b", due, now - 10_000).await.unwrap().is_empty());
            assert_eq!(store.claim_due_watches("a", due, now - 10_000).await.unwrap().len(), 1);
            assert!(store.record_watch_run(&a[0].id, "a", now + 5_000, Some(r#"{"verdict":"ok"}"#)).await.unwrap());
            // Not due: nobody claims it.
            assert!(store.claim_due_watches("a", now, now - 10_000).await.unwrap().is_empty());
            // Due, and a's heartbeat older than the cutoff: b takes it over; a's writes fail.
            let later = now + 6_000;
            let b = store.claim_due_watches("b", later, later).await.unwrap();
            assert_eq!(b.len(), 1);
            assert_eq!(b[0].last_json.as_deref(), Some(r#"{"verdict":"ok"}"#));
            assert!(!store.record_watch_run(&a[0].id, "a", later, None).await.unwrap());
            assert!(!store.end_watch(&a[0].id, "a").await.unwrap());
            assert_eq!(store.renew_watches("b").await.unwrap(), 1);
            assert!(store.end_watch(&b[0].id, "b").await.unwrap());
            assert!(store.watches(None).await.unwrap().is_empty());
        }

        #[tokio::test]
        async fn a_second_watch_of_a_vm_in_a_channel_extends_the_first(store, pooled = false) {
            let (first, _) = store.start_watch(&watch("c1")).await.unwrap();
            let mut again = watch("c1");
            again.vm_id = WEB.to_uppercase();
            again.expires_ms += 1000;
            let (second, existed) = store.start_watch(&again).await.unwrap();
            assert!(existed);
            assert_eq!(second.id, first.id);
            assert_eq!(second.expires_ms, again.expires_ms);
            store.start_watch(&watch("c2")).await.unwrap();
            assert_eq!(store.watches(Some("c1")).await.unwrap().len(), 1);
            assert_eq!(store.watches(None).await.unwrap().len(), 2);
            assert_eq!(store.stop_watch(WEB, "c1").await.unwrap().map(|w| w.id), Some(first.id));
            assert_eq!(store.stop_watch(WEB, "c1").await.unwrap(), None);
            assert_eq!(store.watches(None).await.unwrap().len(), 1);
        }
    }
}
