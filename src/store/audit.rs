//! The audit log: who asked for what, on which VM, from where, and how it ended. Append-only.

use sqlx::Row;

use super::secrets::check_text;
use super::{require, Store, StoreError};

/// One line of the audit log, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    /// The actor's stable id (Discord user id, CLI user name).
    pub actor: String,
    /// The actor's display name at the time.
    pub actor_name: String,
    /// Where it was asked (a Discord channel id); `None` from the terminal.
    pub channel: Option<String>,
    /// The command, e.g. `check`, `redeploy`, `confirm`.
    pub command: String,
    /// The VM's resource id, when one was resolved.
    pub vm: Option<String>,
    pub vm_name: Option<String>,
    /// How it ended: `ok`, `denied: ...`, `failed: CODE`, ...
    pub result: String,
    pub at_ms: i64,
}

/// One line of the audit log, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub actor: String,
    pub actor_name: String,
    pub channel: Option<String>,
    pub command: String,
    pub vm: Option<String>,
    pub vm_name: Option<String>,
    pub result: String,
    pub at_ms: i64,
}

impl Store {
    /// Append one line; returns its id.
    pub async fn audit(&self, e: &NewAudit) -> Result<i64, StoreError> {
        require("the audit actor", &e.actor)?;
        require("the audit command", &e.command)?;
        check_text("the audit result", &e.result)?;
        check_text("the audit command", &e.command)?;
        let row = sqlx::query(
            "INSERT INTO audit (at_ms, actor, actor_name, channel, command, vm_id, vm_name, result)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             RETURNING id",
        )
        .bind(e.at_ms)
        .bind(&e.actor)
        .bind(&e.actor_name)
        .bind(&e.channel)
        .bind(&e.command)
        .bind(&e.vm)
        .bind(&e.vm_name)
        .bind(&e.result)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::db("writing the audit log"))?;
        row.try_get("id")
            .map_err(StoreError::db("reading the audit id"))
    }

    /// The newest `limit` lines, newest first; with `vm`, only lines whose VM id or VM name
    /// equals it, ignoring ASCII case.
    pub async fn recent_audit(
        &self,
        vm: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        const COLUMNS: &str =
            "id, at_ms, actor, actor_name, channel, command, vm_id, vm_name, result";
        let rows = match vm {
            Some(vm) => {
                let key = vm.trim().to_ascii_lowercase();
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM audit
                     WHERE lower(vm_id) = $1 OR lower(vm_name) = $2
                     ORDER BY at_ms DESC, id DESC LIMIT $3"
                ))
                .bind(key.clone())
                .bind(key)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM audit ORDER BY at_ms DESC, id DESC LIMIT $1"
                ))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(StoreError::db("reading the audit log"))?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: row.try_get("id")?,
                    actor: row.try_get("actor")?,
                    actor_name: row.try_get("actor_name")?,
                    channel: row.try_get("channel")?,
                    command: row.try_get("command")?,
                    vm: row.try_get("vm_id")?,
                    vm_name: row.try_get("vm_name")?,
                    result: row.try_get("result")?,
                    at_ms: row.try_get("at_ms")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::db("reading the audit log"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::on_both_backends;

    fn line(command: &str, vm: Option<(&str, &str)>, at_ms: i64) -> NewAudit {
        NewAudit {
            actor: "u1".into(),
            actor_name: "alice".into(),
            channel: Some("c1".into()),
            command: command.into(),
            vm: vm.map(|(id, _)| id.to_string()),
            vm_name: vm.map(|(_, name)| name.to_string()),
            result: "ok".into(),
            at_ms,
        }
    }

    const WEB: (&str, &str) = (
        "/subscriptions/S1/resourceGroups/RG-Web/providers/Microsoft.Compute/virtualMachines/web-01",
        "web-01",
    );
    const DB: (&str, &str) = (
        "/subscriptions/S1/resourceGroups/rg-db/providers/Microsoft.Compute/virtualMachines/db-01",
        "db-01",
    );

    on_both_backends! {
        #[tokio::test]
        async fn recent_audit_is_newest_first_and_filters_by_name_or_id_ignoring_case(store, pooled = false) {
            let a = store.audit(&line("check", Some(WEB), 10)).await.unwrap();
            let b = store.audit(&line("check", Some(DB), 20)).await.unwrap();
            let c = store.audit(&line("redeploy", Some(WEB), 30)).await.unwrap();
            let d = store.audit(&line("explain", None, 40)).await.unwrap();
            assert!(a < b && b < c && c < d);

            let ids = |entries: Vec<AuditEntry>| entries.iter().map(|e| e.id).collect::<Vec<_>>();
            assert_eq!(
                ids(store.recent_audit(None, 10).await.unwrap()),
                [d, c, b, a]
            );
            assert_eq!(ids(store.recent_audit(None, 2).await.unwrap()), [d, c]);
            assert_eq!(
                ids(store.recent_audit(Some("WEB-01"), 10).await.unwrap()),
                [c, a]
            );
            let by_id = WEB.0.to_lowercase();
            assert_eq!(
                ids(store.recent_audit(Some(&by_id), 10).await.unwrap()),
                [c, a]
            );
            assert!(store
                .recent_audit(Some("nope"), 10)
                .await
                .unwrap()
                .is_empty());

            let newest = &store.recent_audit(Some("db-01"), 1).await.unwrap()[0];
            assert_eq!(
                newest,
                &AuditEntry {
                    id: b,
                    actor: "u1".into(),
                    actor_name: "alice".into(),
                    channel: Some("c1".into()),
                    command: "check".into(),
                    vm: Some(DB.0.into()),
                    vm_name: Some("db-01".into()),
                    result: "ok".into(),
                    at_ms: 20,
                }
            );
        }

        #[tokio::test]
        async fn an_audit_result_with_a_sas_url_is_refused(store, pooled = false) {
            let mut e = line("check", Some(WEB), 1);
            e.result = "failed: https://x.blob.core.windows.net/b?sv=1&sig=abc".into();
            let err = store.audit(&e).await.unwrap_err();
            assert!(matches!(err, StoreError::Secret { .. }), "{err}");
            assert!(store.recent_audit(None, 10).await.unwrap().is_empty());
        }
    }
}
