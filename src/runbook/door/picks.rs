//! "Which VM?" menus on every replica: the front end keeps a menu's pending pick here when it
//! shows the menu, and whichever replica the choice reaches takes it (once) from the database
//! when it is not in that process's memory. What runs next is authorised again, as ever.

use super::swept::{kept_json, kept_options, kept_vms};
use super::{Caller, Door, DoorError};
use crate::domain::VmRef;
use crate::runbook::CheckOptions;
use crate::store::{lapsed_before, now_ms, KeptPick};
use std::time::Duration;

/// How long a "which VM?" menu answers.
pub const PICK_KEPT: Duration = Duration::from_secs(15 * 60);

/// A pending pick as the front end gets it back.
#[derive(Debug, Clone)]
pub struct Pick {
    /// What to run, in the front end's own words.
    pub kind: String,
    pub options: CheckOptions,
    pub candidates: Vec<VmRef>,
}

impl Door {
    /// Keep the pick a "which VM?" menu `nonce` waits for, so that any replica can take it.
    /// `false`: no database to keep it in (the front end's memory serves alone).
    pub async fn keep_pick(
        &self,
        caller: &Caller,
        nonce: &str,
        kind: &str,
        options: &CheckOptions,
        candidates: &[VmRef],
    ) -> Result<bool, DoorError> {
        self.admit(caller)?;
        let Some(operator) = &self.operator else {
            return Ok(false);
        };
        let pick = KeptPick {
            nonce: nonce.to_string(),
            requester: caller.actor.id.clone(),
            kind: kind.to_string(),
            from_address: options.from.map(|from| from.to_string()),
            candidates_json: kept_json(candidates)?,
            created_ms: now_ms(),
        };
        operator
            .store
            .keep_pick(&pick, lapsed_before(PICK_KEPT))
            .await?;
        Ok(true)
    }

    /// Take the pick of menu `nonce` if the caller asked for it within [`PICK_KEPT`] and no
    /// replica has taken it yet; `None` otherwise (or without a database).
    pub async fn take_pick(&self, caller: &Caller, nonce: &str) -> Result<Option<Pick>, DoorError> {
        self.admit(caller)?;
        let Some(operator) = &self.operator else {
            return Ok(None);
        };
        let Some(kept) = operator
            .store
            .take_pick(nonce, &caller.actor.id, lapsed_before(PICK_KEPT))
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(Pick {
            candidates: kept_vms(&kept.candidates_json)?,
            options: kept_options(kept.from_address)?,
            kind: kept.kind,
        }))
    }
}
