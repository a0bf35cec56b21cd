//! A sweep's buttons on every replica: Cancel, asked wherever the click lands and carried out by
//! the replica that runs the sweep (through its claim in the database, `sweep_claim.rs`), and the
//! details menu, which reads the finished sweep's rows from the database when they are not in
//! this process's memory.

use super::{Caller, Door, DoorError};
use crate::domain::VmRef;
use crate::runbook::CheckOptions;
use crate::store::{lapsed_before, now_ms, StoreError, SweptRows};
use std::time::Duration;

/// Kept rows that do not read back (or cannot be written): rdp-doctor's own failure.
fn unreadable(what: &'static str, message: String) -> DoorError {
    DoorError::Store(StoreError::KeptRows { what, message })
}

/// VMs as kept in the database: each one's id and name, as JSON (see [`KeptVm`]).
pub(super) fn kept_json(vms: &[VmRef]) -> Result<String, DoorError> {
    let kept: Vec<KeptVm> = vms
        .iter()
        .map(|vm| KeptVm {
            id: vm.id.clone(),
            name: vm.name.clone(),
        })
        .collect();
    serde_json::to_string(&kept).map_err(|e| unreadable("are not JSON", e.to_string()))
}

/// [`kept_json`] read back, each VM's scope from its id.
pub(super) fn kept_vms(json: &str) -> Result<Vec<VmRef>, DoorError> {
    let kept: Vec<KeptVm> =
        serde_json::from_str(json).map_err(|e| unreadable("are not JSON", e.to_string()))?;
    Ok(kept
        .iter()
        .map(|vm| VmRef::from_stored(&vm.id, &vm.name))
        .collect())
}

/// The check options kept beside VMs: the address to test 3389 from, if any.
pub(super) fn kept_options(from_address: Option<String>) -> Result<CheckOptions, DoorError> {
    let from = from_address.map(|from| from.parse()).transpose().map_err(
        |e: std::net::AddrParseError| {
            unreadable("name no IPv4 address to test from", e.to_string())
        },
    )?;
    Ok(CheckOptions { from })
}

/// How long a finished sweep's rows answer its details menu.
pub const SWEEP_ROWS_KEPT: Duration = Duration::from_secs(60 * 60);

/// What became of asking to cancel a sweep that this process does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepCancel {
    /// The replica running it stops it within about a second, and shows the cancelled summary.
    Asked,
    /// Someone else started it: only they may cancel it. Their identity (`Actor::id`), or their
    /// name where the claim predates identities.
    NotYours { requester: String },
    /// No sweep by that handle runs on any replica (it finished, or no database is shared).
    NotRunning,
}

/// A kept row: the VM's id and name. Its subscription and resource group are read from the id
/// again (`VmRef::from_stored`), never stored beside it, so a row cannot pair one VM's id with
/// another scope to pass the door's authorisation.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptVm {
    id: String,
    name: String,
}

impl Door {
    /// Ask for the cancellation of the running sweep the front end calls `handle`, on
    /// whichever replica runs it. Only the person who started it may.
    pub async fn cancel_sweep(
        &self,
        caller: &Caller,
        handle: &str,
    ) -> Result<SweepCancel, DoorError> {
        self.admit(caller)?;
        let Some(operator) = &self.operator else {
            return Ok(SweepCancel::NotRunning);
        };
        let cutoff = lapsed_before(operator.lease());
        let Some(running) = operator.store.sweep_by_handle(handle, cutoff).await? else {
            return Ok(SweepCancel::NotRunning);
        };
        match running.requester {
            Some(requester) if requester == caller.actor.id => {}
            requester => {
                return Ok(SweepCancel::NotYours {
                    requester: requester.unwrap_or(running.started_by),
                })
            }
        }
        let asked = operator
            .store
            .request_sweep_cancel(handle, &caller.actor.id, cutoff)
            .await?;
        Ok(if asked {
            SweepCancel::Asked
        } else {
            SweepCancel::NotRunning
        })
    }

    /// Keep a finished sweep's rows (its VMs, worst first, and the options its checks ran
    /// with) for [`SWEEP_ROWS_KEPT`], so that its details menu works on every replica. Without
    /// a database, nothing is kept here (the front end's memory serves).
    pub async fn keep_sweep_rows(
        &self,
        caller: &Caller,
        handle: &str,
        vms: &[VmRef],
        options: &CheckOptions,
    ) -> Result<(), DoorError> {
        self.admit(caller)?;
        let Some(operator) = &self.operator else {
            return Ok(());
        };
        let vms_json = kept_json(vms)?;
        let rows = SweptRows {
            handle: handle.to_string(),
            requester: caller.actor.id.clone(),
            from_address: options.from.map(|from| from.to_string()),
            vms_json,
            finished_ms: now_ms(),
        };
        operator
            .store
            .keep_swept(&rows, lapsed_before(SWEEP_ROWS_KEPT))
            .await?;
        Ok(())
    }

    /// A finished sweep's rows and check options, kept by any replica within
    /// [`SWEEP_ROWS_KEPT`]; `None` when there are none (expired, or no database). Each VM's
    /// scope comes from its id; what the person may read of it is the check's to decide.
    pub async fn sweep_rows(
        &self,
        caller: &Caller,
        handle: &str,
    ) -> Result<Option<(Vec<VmRef>, CheckOptions)>, DoorError> {
        self.admit(caller)?;
        let Some(operator) = &self.operator else {
            return Ok(None);
        };
        let Some(rows) = operator
            .store
            .swept(handle, lapsed_before(SWEEP_ROWS_KEPT))
            .await?
        else {
            return Ok(None);
        };
        Ok(Some((
            kept_vms(&rows.vms_json)?,
            kept_options(rows.from_address)?,
        )))
    }
}
