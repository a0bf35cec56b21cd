//! Confirmations: an offer to run one action on one VM, taken at most once.
//!
//! A confirmation is created `pending` and leaves that state exactly once, to `confirmed` or
//! `cancelled`, by one conditional `UPDATE`. Whoever's `UPDATE` changed the row is the one caller
//! that may run the action; every other caller (a double click, a second person, a retry after a
//! restart) reads the row to learn why not.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::secrets::check_json;
use super::{new_id, require, Store, StoreError};

/// What the requester is asked to confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConfirmation {
    /// The action id, e.g. `redeploy`.
    pub action: String,
    pub vm_id: String,
    pub vm_name: String,
    /// The requester's stable id (Discord user id, CLI user name).
    pub requester: String,
    pub requester_name: String,
    pub channel: Option<String>,
    /// Non-secret parameters as a JSON object, e.g. `{"source":"203.0.113.0/24"}` or
    /// `{"username":"azureadmin"}`. Never a password: the store refuses secret-looking keys.
    pub params_json: String,
    /// The consequences shown to the person who confirms.
    pub summary: String,
    pub created_ms: i64,
    pub ttl_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    /// 128 random bits in hex: the id goes into button ids, so it must not be guessable.
    pub id: String,
    pub action: String,
    pub vm_id: String,
    pub vm_name: String,
    pub requester: String,
    pub requester_name: String,
    pub channel: Option<String>,
    pub params_json: String,
    pub summary: String,
    pub created_ms: i64,
    /// `created_ms + ttl_ms`; a pending confirmation at or after this instant is expired.
    pub expires_ms: i64,
    pub state: ConfirmationState,
}

impl Confirmation {
    /// Pending but past its expiry.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.state == ConfirmationState::Pending && now_ms >= self.expires_ms
    }
}

/// The stored state. "Expired" is not stored: it is `Pending` past `expires_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmationState {
    Pending,
    Confirmed {
        by: String,
        by_name: String,
        at_ms: i64,
    },
    Cancelled {
        by: String,
        by_name: String,
        at_ms: i64,
    },
}

// Returned once per click, never stored in bulk: boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// This caller took the confirmation: exactly one caller ever gets this for an id.
    Confirmed(Confirmation),
    AlreadyConfirmed {
        by_name: String,
        at_ms: i64,
    },
    Cancelled {
        by_name: String,
    },
    Expired,
    /// The action needs a second person and the requester tried to confirm it; still pending.
    SamePerson,
    NotFound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    AlreadyConfirmed { by_name: String },
    AlreadyCancelled { by_name: String },
    Expired,
    NotFound,
}

const COLUMNS: &str = "id, action, vm_id, vm_name, requester, requester_name, channel, \
     params_json, summary, created_ms, expires_ms, state, decided_by, decided_by_name, decided_ms";

impl Store {
    /// Store a new pending confirmation with a fresh unguessable id.
    pub async fn create_confirmation(
        &self,
        c: &NewConfirmation,
    ) -> Result<Confirmation, StoreError> {
        require("the action", &c.action)?;
        require("the VM id", &c.vm_id)?;
        require("the requester", &c.requester)?;
        check_json("the confirmation parameters", &c.params_json)?;
        let confirmation = Confirmation {
            id: new_id()?,
            action: c.action.clone(),
            vm_id: c.vm_id.clone(),
            vm_name: c.vm_name.clone(),
            requester: c.requester.clone(),
            requester_name: c.requester_name.clone(),
            channel: c.channel.clone(),
            params_json: c.params_json.clone(),
            summary: c.summary.clone(),
            created_ms: c.created_ms,
            expires_ms: c.created_ms.saturating_add(c.ttl_ms.max(0)),
            state: ConfirmationState::Pending,
        };
        self.run(
            sqlx::query(
                "INSERT INTO confirmations (id, action, vm_id, vm_name, requester, requester_name,
                 channel, params_json, summary, created_ms, expires_ms, state)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending')",
            )
            .bind(&confirmation.id)
            .bind(&confirmation.action)
            .bind(&confirmation.vm_id)
            .bind(&confirmation.vm_name)
            .bind(&confirmation.requester)
            .bind(&confirmation.requester_name)
            .bind(&confirmation.channel)
            .bind(&confirmation.params_json)
            .bind(&confirmation.summary)
            .bind(confirmation.created_ms)
            .bind(confirmation.expires_ms),
            "storing a confirmation",
        )
        .await?;
        Ok(confirmation)
    }

    /// How many confirmations are pending and not expired at `now_ms`, for the metrics.
    pub async fn count_pending_confirmations(&self, now_ms: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM confirmations WHERE state = 'pending' AND expires_ms > $1",
        )
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::db("counting pending confirmations"))?;
        row.try_get("n")
            .map_err(StoreError::db("counting pending confirmations"))
    }

    pub async fn get_confirmation(&self, id: &str) -> Result<Option<Confirmation>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM confirmations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("reading a confirmation"))?;
        row.as_ref().map(confirmation_from_row).transpose()
    }

    /// Take the confirmation for `actor`. With `two_person`, the requester cannot take it.
    ///
    /// Atomic: one `UPDATE ... WHERE state = 'pending' AND <not expired> AND <not the same
    /// person>` decides; the row is read afterwards only to explain a refusal.
    pub async fn confirm(
        &self,
        id: &str,
        actor: &str,
        actor_name: &str,
        two_person: bool,
        now_ms: i64,
    ) -> Result<ConfirmOutcome, StoreError> {
        let taken = sqlx::query(&format!(
            "UPDATE confirmations
             SET state = 'confirmed', decided_by = $1, decided_by_name = $2, decided_ms = $3
             WHERE id = $4 AND state = 'pending' AND expires_ms > $5 AND ($6 = 0 OR requester <> $7)
             RETURNING {COLUMNS}"
        ))
        .bind(actor)
        .bind(actor_name)
        .bind(now_ms)
        .bind(id)
        .bind(now_ms)
        .bind(i64::from(two_person))
        .bind(actor)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("confirming"))?;
        if let Some(row) = taken {
            return Ok(ConfirmOutcome::Confirmed(confirmation_from_row(&row)?));
        }
        // Refused. The decided states are final, so what we read now is why.
        let Some(current) = self.get_confirmation(id).await? else {
            return Ok(ConfirmOutcome::NotFound);
        };
        Ok(match current.state {
            ConfirmationState::Confirmed { by_name, at_ms, .. } => {
                ConfirmOutcome::AlreadyConfirmed { by_name, at_ms }
            }
            ConfirmationState::Cancelled { by_name, .. } => ConfirmOutcome::Cancelled { by_name },
            ConfirmationState::Pending if current.expires_ms <= now_ms => ConfirmOutcome::Expired,
            ConfirmationState::Pending if two_person && current.requester == actor => {
                ConfirmOutcome::SamePerson
            }
            ConfirmationState::Pending => {
                return Err(StoreError::Corrupt(format!(
                    "confirmation {id} is pending and valid, yet could not be confirmed"
                )))
            }
        })
    }

    /// Withdraw a pending, unexpired confirmation. Who may cancel is the caller's (policy's) call.
    pub async fn cancel(
        &self,
        id: &str,
        actor: &str,
        actor_name: &str,
        now_ms: i64,
    ) -> Result<CancelOutcome, StoreError> {
        let changed = self
            .run(
                sqlx::query(
                    "UPDATE confirmations
             SET state = 'cancelled', decided_by = $1, decided_by_name = $2, decided_ms = $3
             WHERE id = $4 AND state = 'pending' AND expires_ms > $5",
                )
                .bind(actor)
                .bind(actor_name)
                .bind(now_ms)
                .bind(id)
                .bind(now_ms),
                "cancelling a confirmation",
            )
            .await?;
        if changed == 1 {
            return Ok(CancelOutcome::Cancelled);
        }
        let Some(current) = self.get_confirmation(id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        Ok(match current.state {
            ConfirmationState::Confirmed { by_name, .. } => {
                CancelOutcome::AlreadyConfirmed { by_name }
            }
            ConfirmationState::Cancelled { by_name, .. } => {
                CancelOutcome::AlreadyCancelled { by_name }
            }
            ConfirmationState::Pending if current.expires_ms <= now_ms => CancelOutcome::Expired,
            ConfirmationState::Pending => {
                return Err(StoreError::Corrupt(format!(
                    "confirmation {id} is pending and valid, yet could not be cancelled"
                )))
            }
        })
    }
}

fn confirmation_from_row(row: &AnyRow) -> Result<Confirmation, StoreError> {
    let read = |row: &AnyRow| -> Result<Confirmation, sqlx::Error> {
        let state: String = row.try_get("state")?;
        let decided = || -> Result<(String, String, i64), sqlx::Error> {
            let by: Option<String> = row.try_get("decided_by")?;
            let by_name: Option<String> = row.try_get("decided_by_name")?;
            let at_ms: Option<i64> = row.try_get("decided_ms")?;
            Ok((
                by.unwrap_or_default(),
                by_name.unwrap_or_default(),
                at_ms.unwrap_or_default(),
            ))
        };
        let state = match state.as_str() {
            "pending" => ConfirmationState::Pending,
            "confirmed" => {
                let (by, by_name, at_ms) = decided()?;
                ConfirmationState::Confirmed { by, by_name, at_ms }
            }
            "cancelled" => {
                let (by, by_name, at_ms) = decided()?;
                ConfirmationState::Cancelled { by, by_name, at_ms }
            }
            other => {
                return Err(sqlx::Error::Decode(
                    format!("unknown confirmation state {other:?}").into(),
                ))
            }
        };
        Ok(Confirmation {
            id: row.try_get("id")?,
            action: row.try_get("action")?,
            vm_id: row.try_get("vm_id")?,
            vm_name: row.try_get("vm_name")?,
            requester: row.try_get("requester")?,
            requester_name: row.try_get("requester_name")?,
            channel: row.try_get("channel")?,
            params_json: row.try_get("params_json")?,
            summary: row.try_get("summary")?,
            created_ms: row.try_get("created_ms")?,
            expires_ms: row.try_get("expires_ms")?,
            state,
        })
    };
    read(row).map_err(StoreError::db("reading a confirmation"))
}

#[cfg(test)]
mod tests;
