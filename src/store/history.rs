//! The VMs' check history: every check report kept with when it was taken and what ran it
//! (`check`, `watch`, `fix`), for the timeline (`snapshots` keeps only the newest per VM). Rows
//! older than the retention are pruned on every write.

use sqlx::Row;

use super::secrets::check_json;
use super::{now_ms, require, vm_key, Store, StoreError};

/// One stored check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheck {
    pub id: i64,
    pub vm_id: String,
    pub taken_ms: i64,
    /// What ran it: `check`, `watch`, `fix`.
    pub source: String,
    pub report_json: String,
}

impl Store {
    /// Keep `report_json` (a JSON object without secrets) in the VM's history, and delete every
    /// VM's checks older than `retention` (how many were pruned comes back).
    pub async fn record_check(
        &self,
        vm_id: &str,
        taken_ms: i64,
        source: &str,
        report_json: &str,
        retention: std::time::Duration,
    ) -> Result<u64, StoreError> {
        require("the VM id", vm_id)?;
        require("what ran the check", source)?;
        check_json("the check report", report_json)?;
        self.run(
            sqlx::query(
                "INSERT INTO check_history (vm_key, vm_id, taken_ms, source, report_json)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(vm_key(vm_id))
            .bind(vm_id)
            .bind(taken_ms)
            .bind(source)
            .bind(report_json),
            "keeping a check in the history",
        )
        .await?;
        self.prune_checks(
            now_ms().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX)),
        )
        .await
    }

    /// Delete the checks taken before `before_ms`; how many.
    pub async fn prune_checks(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.run(
            sqlx::query("DELETE FROM check_history WHERE taken_ms < $1").bind(before_ms),
            "pruning the check history",
        )
        .await
    }

    /// The VM's newest `limit` checks, newest first (VM id compared ignoring ASCII case).
    pub async fn checks_of(&self, vm_id: &str, limit: u32) -> Result<Vec<StoredCheck>, StoreError> {
        let doing = "reading the check history";
        let rows = sqlx::query(
            "SELECT id, vm_id, taken_ms, source, report_json FROM check_history
             WHERE vm_key = $1 ORDER BY taken_ms DESC, id DESC LIMIT $2",
        )
        .bind(vm_key(vm_id))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db(doing))?;
        rows.iter()
            .map(|row| {
                Ok(StoredCheck {
                    id: row.try_get("id")?,
                    vm_id: row.try_get("vm_id")?,
                    taken_ms: row.try_get("taken_ms")?,
                    source: row.try_get("source")?,
                    report_json: row.try_get("report_json")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::db(doing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::on_both_backends;
    use std::time::Duration;

    const WEB: &str =
        "/subscriptions/S1/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-02";
    const DAY: Duration = Duration::from_secs(86_400);

    on_both_backends! {
        #[tokio::test]
        async fn checks_are_kept_newest_first_and_pruned_past_the_retention(store, pooled = false) {
            let now = now_ms();
            let old = now - 31 * 86_400_000;
            // Written with a long retention, then pruned by a write with the default 30 days.
            store.record_check(WEB, old, "check", r#"{"verdict":"ok"}"#, 40 * DAY).await.unwrap();
            store.record_check(WEB, now - 1000, "watch", r#"{"verdict":"problems"}"#, 40 * DAY).await.unwrap();
            assert_eq!(store.checks_of(WEB, 10).await.unwrap().len(), 2);
            let pruned = store.record_check(&WEB.to_uppercase(), now, "fix", r#"{"verdict":"ok"}"#, 30 * DAY).await.unwrap();
            assert_eq!(pruned, 1);
            let kept = store.checks_of(WEB, 10).await.unwrap();
            assert_eq!(kept.iter().map(|c| c.source.as_str()).collect::<Vec<_>>(), ["fix", "watch"]);
            assert_eq!(store.checks_of(WEB, 1).await.unwrap()[0].taken_ms, now);
        }

        #[tokio::test]
        async fn a_check_with_a_sas_url_is_not_kept(store, pooled = false) {
            let report = r#"{"findings":[{"evidence":{"screenshot":"https://a.blob.core.windows.net/x?sv=1&sig=s"}}]}"#;
            let err = store.record_check(WEB, 1, "check", report, DAY).await.unwrap_err();
            assert!(matches!(err, StoreError::Secret { .. }), "{err}");
            assert!(store.checks_of(WEB, 10).await.unwrap().is_empty());
        }
    }
}
