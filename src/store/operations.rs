//! Operations: an action running against a VM, from start to outcome, and the per-VM lock.
//!
//! The lock is the partial unique index `operations_one_running_per_vm` on `vm_key` where
//! `state = 'running'`: inserting a second running operation for a VM fails inside the database,
//! whichever connection or process tries. Finishing an operation releases the lock. Running
//! operations survive a restart so that the bot can resume polling Azure instead of starting the
//! action again.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::secrets::check_text;
use super::{now_ms, require, vm_key, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOperation {
    /// The action id, e.g. `redeploy`.
    pub action: String,
    pub vm_id: String,
    pub vm_name: String,
    pub requester: String,
    pub requester_name: String,
    /// The confirmation that authorised it; one confirmation starts at most one operation.
    pub confirmation_id: Option<String>,
    pub started_ms: i64,
    /// The replica that runs it (holds its lease from the start); see [`Store::take_over`].
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub id: i64,
    pub action: String,
    pub vm_id: String,
    pub vm_name: String,
    pub requester: String,
    pub requester_name: String,
    pub confirmation_id: Option<String>,
    pub started_ms: i64,
    /// Azure's `Azure-AsyncOperation` or `Location` URL, to resume polling after a restart.
    pub azure_url: Option<String>,
    /// Where progress is shown (chat channel and message ids), to resume editing it.
    pub channel: Option<String>,
    pub message: Option<String>,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub finished_ms: Option<i64>,
    /// The replica following it now, and when it last said so (unix ms): its lease.
    pub owner: Option<String>,
    pub heartbeat_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationOutcome {
    Succeeded,
    Failed { code: String, message: String },
}

/// Another operation holds the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    pub holder_name: String,
    pub action: String,
    pub since_ms: i64,
}

const COLUMNS: &str = "id, action, vm_id, vm_name, requester, requester_name, confirmation_id, \
     started_ms, azure_url, channel, message, state, error_code, error_message, finished_ms, \
     owner, heartbeat_ms";

/// How often `start_operation` retries when the holder finished between our insert and our read.
const LOCK_RACE_RETRIES: usize = 3;

impl Store {
    /// Record a running operation and take the VM's lock, or say who holds it.
    pub async fn start_operation(
        &self,
        o: &NewOperation,
    ) -> Result<Result<Operation, Locked>, StoreError> {
        require("the action", &o.action)?;
        require("the VM id", &o.vm_id)?;
        require("the requester", &o.requester)?;
        for _ in 0..LOCK_RACE_RETRIES {
            let inserted = sqlx::query(&format!(
                "INSERT INTO operations (action, vm_id, vm_key, vm_name, requester,
                     requester_name, confirmation_id, started_ms, state, owner, heartbeat_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'running', $9, $10)
                 RETURNING {COLUMNS}"
            ))
            .bind(&o.action)
            .bind(&o.vm_id)
            .bind(vm_key(&o.vm_id))
            .bind(&o.vm_name)
            .bind(&o.requester)
            .bind(&o.requester_name)
            .bind(&o.confirmation_id)
            .bind(o.started_ms)
            .bind(&o.owner)
            // The owner's first heartbeat is the start.
            .bind(o.started_ms)
            .fetch_one(&self.pool)
            .await;
            let err = match inserted {
                Ok(row) => return Ok(Ok(operation_from_row(&row)?)),
                Err(err) => err,
            };
            let unique_violation = err
                .as_database_error()
                .is_some_and(|e| e.is_unique_violation());
            if !unique_violation {
                return Err(StoreError::Database {
                    doing: "starting an operation",
                    source: err,
                });
            }
            // Which index refused us? Read rather than parse the driver's message.
            if let Some(holder) = self.current_operation(&o.vm_id).await? {
                return Ok(Err(Locked {
                    holder_name: holder.requester_name,
                    action: holder.action,
                    since_ms: holder.started_ms,
                }));
            }
            if let Some(id) = &o.confirmation_id {
                let used = sqlx::query("SELECT id FROM operations WHERE confirmation_id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db("checking a confirmation's operation"))?;
                if used.is_some() {
                    return Err(StoreError::ConfirmationAlreadyUsed { id: id.clone() });
                }
            }
            // The holder finished in between: the VM is free now, try again.
        }
        Err(StoreError::Corrupt(format!(
            "the lock on {} kept changing hands; giving up after {LOCK_RACE_RETRIES} tries",
            o.vm_name
        )))
    }

    /// The running operation on a VM (its id, compared ignoring ASCII case), if any.
    pub async fn current_operation(&self, vm_id: &str) -> Result<Option<Operation>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM operations WHERE vm_key = $1 AND state = 'running'"
        ))
        .bind(vm_key(vm_id))
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("reading the running operation"))?;
        row.as_ref().map(operation_from_row).transpose()
    }

    /// Remember Azure's operation URL. It must carry no secret (a SAS signature is refused).
    pub async fn set_operation_url(&self, id: i64, url: &str) -> Result<(), StoreError> {
        check_text("the Azure operation URL", url)?;
        let statement = sqlx::query("UPDATE operations SET azure_url = $1 WHERE id = $2").bind(url);
        self.update_operation(id, statement, "saving the Azure operation URL")
            .await
    }

    /// Remember where progress is shown, so a restarted bot edits the same message.
    pub async fn set_operation_message(
        &self,
        id: i64,
        channel: Option<&str>,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        let statement =
            sqlx::query("UPDATE operations SET channel = $1, message = $2 WHERE id = $3")
                .bind(channel)
                .bind(message);
        self.update_operation(id, statement, "saving the progress message")
            .await
    }

    /// Runs an `UPDATE … WHERE id = ?` of one operation, binding `id` last.
    async fn update_operation(
        &self,
        id: i64,
        statement: super::Statement<'_>,
        doing: &'static str,
    ) -> Result<(), StoreError> {
        if self.run(statement.bind(id), doing).await? == 0 {
            return Err(StoreError::NoSuchOperation { id });
        }
        Ok(())
    }

    /// Record the outcome (stamped with the current time) and release the VM's lock.
    /// Finishing an operation twice is an error: [`StoreError::OperationNotRunning`].
    pub async fn finish_operation(
        &self,
        id: i64,
        outcome: &OperationOutcome,
    ) -> Result<(), StoreError> {
        let (state, code, message) = match outcome {
            OperationOutcome::Succeeded => ("succeeded", None, None),
            OperationOutcome::Failed { code, message } => {
                check_text("the error message", message)?;
                ("failed", Some(code.as_str()), Some(message.as_str()))
            }
        };
        let changed = self
            .run(
                sqlx::query(
                    "UPDATE operations
             SET state = $1, error_code = $2, error_message = $3, finished_ms = $4
             WHERE id = $5 AND state = 'running'",
                )
                .bind(state)
                .bind(code)
                .bind(message)
                .bind(now_ms())
                .bind(id),
                "finishing an operation",
            )
            .await?;
        if changed == 1 {
            return Ok(());
        }
        let exists = sqlx::query("SELECT id FROM operations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("finishing an operation"))?;
        Err(match exists {
            Some(_) => StoreError::OperationNotRunning { id },
            None => StoreError::NoSuchOperation { id },
        })
    }

    /// The owner says it still follows the running operation `id`: its heartbeat is now.
    /// `false` when the lease is lost: the operation ended, or another replica took it over
    /// (then the caller stops following it, and posts nothing).
    pub async fn renew_lease(&self, id: i64, owner: &str) -> Result<bool, StoreError> {
        let changed = self
            .run(
                sqlx::query(
                    "UPDATE operations SET heartbeat_ms = $1
                     WHERE id = $2 AND owner = $3 AND state = 'running'",
                )
                .bind(now_ms())
                .bind(id)
                .bind(owner),
                "renewing an operation's lease",
            )
            .await?;
        Ok(changed == 1)
    }

    /// Take over the running operation `id` if its lease lapsed: its heartbeat is older than
    /// `cutoff_ms` (or it has none). One conditional `UPDATE`, so of several replicas trying at
    /// once exactly one gets the operation back (`Some`, now owned by `owner`, heartbeat now);
    /// the others, and everyone when the owner renewed in time or the operation ended, get
    /// `None`. `cutoff_ms = i64::MAX` takes it whatever its heartbeat (`rdp-doctor resume`).
    pub async fn take_over(
        &self,
        id: i64,
        owner: &str,
        cutoff_ms: i64,
    ) -> Result<Option<Operation>, StoreError> {
        require("the owner", owner)?;
        let row = sqlx::query(&format!(
            "UPDATE operations SET owner = $1, heartbeat_ms = $2
             WHERE id = $3 AND state = 'running'
               AND (heartbeat_ms IS NULL OR heartbeat_ms < $4)
             RETURNING {COLUMNS}"
        ))
        .bind(owner)
        .bind(now_ms())
        .bind(id)
        .bind(cutoff_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("taking over an operation"))?;
        row.as_ref().map(operation_from_row).transpose()
    }

    /// Every running operation, oldest first: what to resume after a restart.
    pub async fn running_operations(&self) -> Result<Vec<Operation>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM operations WHERE state = 'running' ORDER BY started_ms, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("listing running operations"))?;
        rows.iter().map(operation_from_row).collect()
    }
}

impl Store {
    /// How many operations are running (every replica's), for the metrics.
    pub async fn count_running_operations(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM operations WHERE state = 'running'")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::db("counting running operations"))?;
        row.try_get("n")
            .map_err(StoreError::db("counting running operations"))
    }
}

fn operation_from_row(row: &AnyRow) -> Result<Operation, StoreError> {
    let read = |row: &AnyRow| -> Result<Operation, sqlx::Error> {
        Ok(Operation {
            id: row.try_get("id")?,
            action: row.try_get("action")?,
            vm_id: row.try_get("vm_id")?,
            vm_name: row.try_get("vm_name")?,
            requester: row.try_get("requester")?,
            requester_name: row.try_get("requester_name")?,
            confirmation_id: row.try_get("confirmation_id")?,
            started_ms: row.try_get("started_ms")?,
            azure_url: row.try_get("azure_url")?,
            channel: row.try_get("channel")?,
            message: row.try_get("message")?,
            state: row.try_get("state")?,
            error_code: row.try_get("error_code")?,
            error_message: row.try_get("error_message")?,
            finished_ms: row.try_get("finished_ms")?,
            owner: row.try_get("owner")?,
            heartbeat_ms: row.try_get("heartbeat_ms")?,
        })
    };
    read(row).map_err(StoreError::db("reading an operation"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::on_both_backends;

    const WEB: &str =
        "/subscriptions/S1/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01";
    const DB: &str =
        "/subscriptions/S1/resourceGroups/rg-db/providers/Microsoft.Compute/virtualMachines/db-01";

    fn op(action: &str, vm_id: &str, who: &str, started_ms: i64) -> NewOperation {
        NewOperation {
            action: action.into(),
            vm_id: vm_id.into(),
            vm_name: vm_id.rsplit('/').next().unwrap_or_default().into(),
            requester: format!("id-{who}"),
            requester_name: who.into(),
            confirmation_id: None,
            started_ms,
            owner: Some(format!("replica-of-{who}")),
        }
    }

    on_both_backends! {
        #[tokio::test]
        async fn one_running_operation_per_vm_until_it_finishes(store, pooled = false) {
            let first = store
                .start_operation(&op("restart", WEB, "alice", 10))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(first.state, "running");
            assert_eq!(first.finished_ms, None);

            // Same VM spelled in another case: still the same VM.
            let locked = store
                .start_operation(&op("redeploy", &WEB.to_uppercase(), "bob", 20))
                .await
                .unwrap();
            assert_eq!(
                locked,
                Err(Locked {
                    holder_name: "alice".into(),
                    action: "restart".into(),
                    since_ms: 10
                })
            );
            // Another VM is free.
            let other = store
                .start_operation(&op("start", DB, "bob", 30))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                store.current_operation(&WEB.to_lowercase()).await.unwrap(),
                Some(first.clone())
            );
            assert_eq!(
                store
                    .running_operations()
                    .await
                    .unwrap()
                    .iter()
                    .map(|o| o.id)
                    .collect::<Vec<_>>(),
                [first.id, other.id]
            );

            store
                .finish_operation(first.id, &OperationOutcome::Succeeded)
                .await
                .unwrap();
            assert_eq!(store.current_operation(WEB).await.unwrap(), None);
            let second = store
                .start_operation(&op("redeploy", WEB, "bob", 40))
                .await
                .unwrap()
                .unwrap();
            store
                .finish_operation(
                    second.id,
                    &OperationOutcome::Failed {
                        code: "AllocationFailed".into(),
                        message: "no capacity".into(),
                    },
                )
                .await
                .unwrap();
            assert_eq!(
                store
                    .running_operations()
                    .await
                    .unwrap()
                    .iter()
                    .map(|o| o.id)
                    .collect::<Vec<_>>(),
                [other.id]
            );
            let failed: (String, Option<String>, Option<String>, Option<i64>) = {
                let row = sqlx::query(
                    "SELECT state, error_code, error_message, finished_ms FROM operations WHERE id = $1",
                )
                .bind(second.id)
                .fetch_one(&store.pool)
                .await
                .unwrap();
                (
                    row.get("state"),
                    row.get("error_code"),
                    row.get("error_message"),
                    row.get("finished_ms"),
                )
            };
            assert_eq!(failed.0, "failed");
            assert_eq!(failed.1.as_deref(), Some("AllocationFailed"));
            assert_eq!(failed.2.as_deref(), Some("no capacity"));
            assert!(failed.3.is_some());

            let err = store
                .finish_operation(second.id, &OperationOutcome::Succeeded)
                .await
                .unwrap_err();
            assert!(
                matches!(err, StoreError::OperationNotRunning { .. }),
                "{err}"
            );
            let err = store
                .finish_operation(999, &OperationOutcome::Succeeded)
                .await
                .unwrap_err();
            assert!(
                matches!(err, StoreError::NoSuchOperation { id: 999 }),
                "{err}"
            );
        }

        #[tokio::test]
        async fn url_and_progress_message_are_kept_for_resuming(store, pooled = false) {
            let o = store
                .start_operation(&op("redeploy", WEB, "alice", 10))
                .await
                .unwrap()
                .unwrap();
            let url = "https://management.azure.com/subscriptions/S1/providers/Microsoft.Compute/locations/westeurope/operations/abc?api-version=2024-07-01";
            store.set_operation_url(o.id, url).await.unwrap();
            store
                .set_operation_message(o.id, Some("chan"), Some("msg"))
                .await
                .unwrap();
            let resumed = store.running_operations().await.unwrap();
            assert_eq!(resumed.len(), 1);
            assert_eq!(resumed[0].azure_url.as_deref(), Some(url));
            assert_eq!(resumed[0].channel.as_deref(), Some("chan"));
            assert_eq!(resumed[0].message.as_deref(), Some("msg"));

            let err = store
                .set_operation_url(o.id, "https://x.blob.core.windows.net/b?sv=1&sig=abc")
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::Secret { .. }), "{err}");
            assert!(matches!(
                store.set_operation_url(42, url).await,
                Err(StoreError::NoSuchOperation { id: 42 })
            ));
            assert!(matches!(
                store.set_operation_message(42, None, None).await,
                Err(StoreError::NoSuchOperation { id: 42 })
            ));
        }

        #[tokio::test]
        async fn a_confirmation_starts_at_most_one_operation(store, pooled = false) {
            let mut first = op("restart", WEB, "alice", 10);
            first.confirmation_id = Some("c1".into());
            let o = store.start_operation(&first).await.unwrap().unwrap();
            store
                .finish_operation(o.id, &OperationOutcome::Succeeded)
                .await
                .unwrap();
            let err = store.start_operation(&first).await.unwrap_err();
            assert!(
                matches!(err, StoreError::ConfirmationAlreadyUsed { .. }),
                "{err}"
            );
        }

        #[tokio::test]
        async fn the_owner_renews_its_lease_until_another_takes_it_over(store, pooled = false) {
            let o = store
                .start_operation(&op("redeploy", WEB, "alice", 10))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(o.owner.as_deref(), Some("replica-of-alice"));
            let first_beat = o.heartbeat_ms.expect("a heartbeat from the start");
            assert!(store.renew_lease(o.id, "replica-of-alice").await.unwrap());
            // Only the owner renews.
            assert!(!store.renew_lease(o.id, "replica-b").await.unwrap());

            // A lease that has not lapsed (heartbeat newer than the cutoff) is not taken.
            assert_eq!(
                store.take_over(o.id, "replica-b", first_beat).await.unwrap(),
                None
            );
            // Lapsed: B takes it, and becomes the owner with a fresh heartbeat.
            let taken = store
                .take_over(o.id, "replica-b", i64::MAX)
                .await
                .unwrap()
                .expect("B takes the lapsed operation over");
            assert_eq!(taken.id, o.id);
            assert_eq!(taken.owner.as_deref(), Some("replica-b"));
            assert!(taken.heartbeat_ms.unwrap() >= first_beat);
            // The old owner has lost its lease; the new one renews.
            assert!(!store.renew_lease(o.id, "replica-of-alice").await.unwrap());
            assert!(store.renew_lease(o.id, "replica-b").await.unwrap());
            assert_eq!(
                store.running_operations().await.unwrap()[0].owner.as_deref(),
                Some("replica-b")
            );

            // A finished operation is nobody's: no renewal, no takeover.
            store
                .finish_operation(o.id, &OperationOutcome::Succeeded)
                .await
                .unwrap();
            assert!(!store.renew_lease(o.id, "replica-b").await.unwrap());
            assert_eq!(store.take_over(o.id, "replica-c", i64::MAX).await.unwrap(), None);
            assert!(matches!(
                store.take_over(o.id, " ", i64::MAX).await,
                Err(StoreError::Empty { .. })
            ));
        }

        /// An operation without an owner (started before leases existed) is anyone's to take.
        #[tokio::test]
        async fn an_operation_without_a_heartbeat_is_taken_over(store, pooled = false) {
            let mut legacy = op("restart", WEB, "alice", 10);
            legacy.owner = None;
            let o = store.start_operation(&legacy).await.unwrap().unwrap();
            assert_eq!(o.owner, None);
            sqlx::query("UPDATE operations SET heartbeat_ms = NULL WHERE id = $1")
                .bind(o.id)
                .execute(&store.pool)
                .await
                .unwrap();
            let taken = store.take_over(o.id, "replica-b", 0).await.unwrap();
            assert_eq!(taken.and_then(|t| t.owner).as_deref(), Some("replica-b"));
        }

        /// Ten replicas try to take one lapsed operation over at once: exactly one wins.
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_takeovers_of_one_operation_let_exactly_one_through(store, pooled = true) {
            let o = store
                .start_operation(&op("redeploy", WEB, "alice", 10))
                .await
                .unwrap()
                .unwrap();
            let cutoff = o.heartbeat_ms.unwrap() + 1;
            let start = std::sync::Arc::new(tokio::sync::Barrier::new(10));
            let tasks: Vec<_> = (0..10)
                .map(|i| {
                    let (store, start) = (store.clone(), start.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        store.take_over(o.id, &format!("replica-{i}"), cutoff).await
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for task in tasks {
                if let Some(taken) = task.await.unwrap().unwrap() {
                    winners.push(taken.owner.unwrap());
                }
            }
            assert_eq!(winners.len(), 1, "{winners:?}");
            let running = store.running_operations().await.unwrap();
            assert_eq!(running[0].owner.as_ref(), Some(&winners[0]));
            // Only the winner's renewals count; everyone else lost.
            for i in 0..10 {
                let me = format!("replica-{i}");
                assert_eq!(
                    store.renew_lease(o.id, &me).await.unwrap(),
                    me == winners[0],
                    "{me}"
                );
            }
            // And the outcome is recorded once.
            store
                .finish_operation(o.id, &OperationOutcome::Succeeded)
                .await
                .unwrap();
            assert!(matches!(
                store.finish_operation(o.id, &OperationOutcome::Succeeded).await,
                Err(StoreError::OperationNotRunning { .. })
            ));
            store.close().await;
        }

        /// Ten actions race for one VM through a pool of several connections to a file database.
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_starts_on_one_vm_let_exactly_one_through(store, pooled = true) {
            let start = std::sync::Arc::new(tokio::sync::Barrier::new(10));
            let tasks: Vec<_> = (0..10)
                .map(|i| {
                    let (store, start) = (store.clone(), start.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        store
                            .start_operation(&op("restart", WEB, &format!("u{i}"), i))
                            .await
                    })
                })
                .collect();
            let mut started = Vec::new();
            let mut locked = Vec::new();
            for task in tasks {
                match task.await.unwrap().unwrap() {
                    Ok(o) => started.push(o),
                    Err(l) => locked.push(l),
                }
            }
            assert_eq!(started.len(), 1, "{started:?}");
            assert_eq!(locked.len(), 9);
            for l in &locked {
                assert_eq!(l.holder_name, started[0].requester_name);
            }
            assert_eq!(store.running_operations().await.unwrap(), started);
            store.close().await;
        }
    }
}
