//! A sweep's claim on its scope in the database: one sweep per scope across every replica that
//! shares it (the in-memory `limits::SweepSlots` keep the same rule inside one process, and
//! without a database).
//!
//! The claim is taken before the sweep's first Azure request, renewed every third of the lease
//! while it runs, and released when it ends: [`ScopeClaim::release`] on every return, and the
//! guard's `Drop` when the sweep's task is dropped. A release that fails, or a replica that dies
//! mid-sweep, leaves a claim whose heartbeat stops: the next claim of an overlapping scope after
//! the lease deletes it (`Store::claim_sweep`).

use super::limits::SweepBusy;
use crate::azure::SweepScope;
use crate::store::{lapsed_before, now_ms, NewSweep, Store, StoreError, StoredSweep};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A sweep's scope, claimed in the database; renewed until released or dropped.
#[derive(Debug)]
#[must_use = "the claim is released as soon as it is dropped"]
pub(crate) struct ScopeClaim {
    store: Store,
    owner: Arc<str>,
    /// The claim's id (a renewal that finds the claim gone claims the scope again, anew).
    id: Arc<Mutex<String>>,
    renewer: tokio::task::JoinHandle<()>,
    released: bool,
}

fn scope_of(sweep: &StoredSweep) -> SweepScope {
    SweepScope {
        subscription_id: sweep.subscription_id.clone(),
        resource_group: sweep.resource_group.clone(),
    }
}

impl ScopeClaim {
    /// Claim the scope of `new` (a sweep its `started_by` starts on replica `new.owner`), or
    /// say (in the words of [`SweepBusy`]) which sweep, here or on another replica, holds it.
    /// `stop` is cancelled, which stops the sweep, when its requester asks to cancel it on any
    /// replica (the claim's handle, read every [`CANCEL_POLL`]), or should the claim be lost
    /// while the sweep runs (this replica stalled past the lease and someone else started a
    /// sweep of the scope).
    ///
    /// Cancellation-safe: the claim is taken in a task of its own, so a sweep dropped while its
    /// claim is being committed does not leave the scope claimed until the lease lapses. The
    /// claim then finishes, and is released as soon as nobody is left to receive it.
    pub(crate) async fn take(
        store: &Store,
        lease: Duration,
        new: NewSweep,
        stop: CancellationToken,
    ) -> Result<Result<ScopeClaim, Box<SweepBusy>>, StoreError> {
        let store = store.clone();
        let taking =
            tokio::spawn(async move { ScopeClaim::take_here(store, new, lease, stop).await });
        match taking.await {
            Ok(taken) => taken,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only when the runtime itself is shutting down.
            Err(_) => Err(StoreError::Database {
                doing: "claiming a sweep's scope as the runtime shuts down",
                source: sqlx::Error::WorkerCrashed,
            }),
        }
    }

    async fn take_here(
        store: Store,
        new: NewSweep,
        lease: Duration,
        stop: CancellationToken,
    ) -> Result<Result<ScopeClaim, Box<SweepBusy>>, StoreError> {
        let claimed = match store.claim_sweep(&new, lapsed_before(lease)).await? {
            Ok(claimed) => claimed,
            Err(running) => {
                let scope = SweepScope {
                    subscription_id: new.subscription_id.clone(),
                    resource_group: new.resource_group.clone(),
                };
                return Ok(Err(Box::new(SweepBusy::elsewhere(
                    &scope,
                    scope_of(&running),
                    running.started_by,
                    running.started_ms,
                    now_ms(),
                ))));
            }
        };
        let id = Arc::new(Mutex::new(claimed.id));
        let owner: Arc<str> = new.owner.as_str().into();
        let renewer = tokio::spawn(renew(
            store.clone(),
            owner.clone(),
            id.clone(),
            lease,
            new,
            stop,
        ));
        Ok(Ok(ScopeClaim {
            store,
            owner,
            id,
            renewer,
            released: false,
        }))
    }

    fn id(&self) -> String {
        self.id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The sweep ended: free the scope now. A failure is logged; the lease lapses instead.
    /// The release runs in a task of its own, so it completes even if this sweep's task is
    /// dropped meanwhile.
    pub(crate) async fn release(mut self) {
        self.renewer.abort();
        self.released = true;
        let (store, id, owner) = (self.store.clone(), self.id(), self.owner.clone());
        let _ = tokio::spawn(async move { release(&store, &id, &owner).await }).await;
    }
}

impl Drop for ScopeClaim {
    fn drop(&mut self) {
        self.renewer.abort();
        if self.released {
            return;
        }
        // The sweep's task was dropped: release from a task of our own, if a runtime is left
        // to run it; otherwise the lease lapses.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, id, owner) = (self.store.clone(), self.id(), self.owner.clone());
            runtime.spawn(async move { release(&store, &id, &owner).await });
        }
    }
}

async fn release(store: &Store, id: &str, owner: &str) {
    if let Err(e) = store.release_sweep(id, owner).await {
        tracing::warn!(
            error = %e,
            "could not release a sweep's scope; other replicas may sweep it once its lease lapses"
        );
    }
}

/// How often the replica running a sweep looks for its requester's cancellation, asked on
/// whichever replica their click reached.
pub(crate) const CANCEL_POLL: Duration = Duration::from_secs(1);

/// Renew the claim every third of the lease, and look every [`CANCEL_POLL`] (or third of the
/// lease, if shorter) for a cancellation asked on another replica: it cancels `stop`. A claim
/// found gone (this replica could not renew for longer than the lease, and another claim in the
/// subscription deleted it) is taken again if the scope is still free; if another sweep holds it
/// now, `stop` stops this one.
async fn renew(
    store: Store,
    owner: Arc<str>,
    id: Arc<Mutex<String>>,
    lease: Duration,
    new: NewSweep,
    stop: CancellationToken,
) {
    let every = lease / 3;
    let tick = every.min(CANCEL_POLL);
    let mut renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let current = id.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if new.handle.is_some() && !stop.is_cancelled() {
            match store.sweep_cancel_requested(&current).await {
                Ok(Some(true)) => {
                    tracing::info!("a sweep's requester cancelled it on another replica");
                    stop.cancel();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not read whether a sweep was cancelled");
                }
            }
        }
        if renewed.elapsed() < every {
            continue;
        }
        match store.renew_sweep(&current, &owner).await {
            Ok(true) => {
                renewed = tokio::time::Instant::now();
                continue;
            }
            // Gone. A sweep already told to stop is ending: not claimed again.
            Ok(false) if stop.is_cancelled() => return,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not renew a sweep's claim; trying again");
                continue;
            }
        }
        match store.claim_sweep(&new, lapsed_before(lease)).await {
            Ok(Ok(again)) => {
                tracing::warn!("a sweep's claim had lapsed (renewals failed for longer than the lease); claimed its scope again");
                *id.lock().unwrap_or_else(PoisonError::into_inner) = again.id;
                renewed = tokio::time::Instant::now();
            }
            Ok(Err(running)) => {
                tracing::warn!(
                    started_by = %running.started_by,
                    "a sweep's claim lapsed (renewals failed for longer than the lease) and another sweep of its scope started meanwhile: stopping this one"
                );
                stop.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not claim a sweep's scope again; trying again");
            }
        }
    }
}

#[cfg(test)]
mod tests;
