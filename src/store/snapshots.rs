//! Check snapshots: the latest check report per VM, so that after a fix rdp-doctor can show what
//! changed. Only the newest report per VM is kept here; `history.rs` keeps them all, for the
//! timeline.

use sqlx::Row;

use super::secrets::check_json;
use super::{require, vm_key, Store, StoreError};

impl Store {
    /// Keep `report_json` (a JSON object without secrets) as the VM's latest report, unless a
    /// newer one is already stored (two checks finishing out of order).
    pub async fn save_snapshot(
        &self,
        vm_id: &str,
        taken_ms: i64,
        report_json: &str,
    ) -> Result<(), StoreError> {
        require("the VM id", vm_id)?;
        check_json("the check report", report_json)?;
        // `ON CONFLICT ... DO UPDATE ... WHERE` reads the same in SQLite and PostgreSQL.
        self.run(
            sqlx::query(
                "INSERT INTO snapshots (vm_key, vm_id, taken_ms, report_json) VALUES ($1, $2, $3, $4)
             ON CONFLICT (vm_key) DO UPDATE
             SET vm_id = excluded.vm_id, taken_ms = excluded.taken_ms,
                 report_json = excluded.report_json
             WHERE excluded.taken_ms >= snapshots.taken_ms",
            )
            .bind(vm_key(vm_id))
            .bind(vm_id)
            .bind(taken_ms)
            .bind(report_json),
            "saving a check snapshot",
        )
        .await?;
        Ok(())
    }

    /// The VM's latest report and when it was taken (VM id compared ignoring ASCII case).
    pub async fn latest_snapshot(&self, vm_id: &str) -> Result<Option<(i64, String)>, StoreError> {
        let row = sqlx::query("SELECT taken_ms, report_json FROM snapshots WHERE vm_key = $1")
            .bind(vm_key(vm_id))
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading a check snapshot"))?;
        row.map(|row| Ok((row.try_get("taken_ms")?, row.try_get("report_json")?)))
            .transpose()
            .map_err(StoreError::db("reading a check snapshot"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::on_both_backends;

    const WEB: &str =
        "/subscriptions/S1/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01";

    on_both_backends! {
        #[tokio::test]
        async fn the_newest_snapshot_wins_whatever_the_order_of_saving(store, pooled = false) {
            assert_eq!(store.latest_snapshot(WEB).await.unwrap(), None);
            store
                .save_snapshot(WEB, 10, r#"{"verdict":"problems"}"#)
                .await
                .unwrap();
            store
                .save_snapshot(WEB, 30, r#"{"verdict":"ok"}"#)
                .await
                .unwrap();
            store
                .save_snapshot(WEB, 20, r#"{"verdict":"unknown"}"#)
                .await
                .unwrap();
            assert_eq!(
                store.latest_snapshot(&WEB.to_uppercase()).await.unwrap(),
                Some((30, r#"{"verdict":"ok"}"#.to_string()))
            );
        }

        #[tokio::test]
        async fn a_report_with_a_sas_url_is_refused(store, pooled = false) {
            let report = r#"{"findings":[{"evidence":{"screenshot":"https://a.blob.core.windows.net/x?sv=1&sig=s"}}]}"#;
            let err = store.save_snapshot(WEB, 10, report).await.unwrap_err();
            assert!(matches!(err, StoreError::Secret { .. }), "{err}");
            assert_eq!(store.latest_snapshot(WEB).await.unwrap(), None);
        }
    }
}
