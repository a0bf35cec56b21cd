//! The gateway's hot standby: on a shared PostgreSQL database only the `rdp-doctor bot` that
//! holds the gateway lock (`store::GatewayLock`, a session advisory lock) connects to Discord's
//! gateway; the others wait, asking for the lock every `[replicas] standby_check_secs` (2 s),
//! and the first to ask after the holder dies takes over.
//!
//! The holder checks its lock's session as often. A check that fails (the database restarted,
//! the connection dropped, no answer within the period) counts as the lock lost: the gateway
//! must then be shut down and the wait starts again, because another replica may already have
//! the lock. Shutting down on a database that only blinked costs a reconnect; going on
//! unguarded could leave two bots answering every interaction.
//!
//! A replica that takes the lock waits one period more before connecting (`hold_off`): a holder
//! whose session the database dropped finds out at its next check, within that period, so the
//! two are never connected together for long. Takeover after a holder dies is at most two
//! periods and the connect: well within 30 s at the default.
//!
//! **Architecture Invariant:** no chat types: the front end is told what to show in `/readyz`
//! through a callback and runs the gateway itself.

use std::time::Duration;

use crate::store::{GatewayLock, LockError};

/// Default of `[replicas] standby_check_secs`.
pub const DEFAULT_CHECK: Duration = Duration::from_secs(2);

/// What `/readyz` says of the gateway while this process waits for the lock.
pub const STANDBY: &str = "standby, another replica holds the gateway";

/// The lock and how often to ask for it or check it.
pub struct Standby {
    lock: GatewayLock,
    every: Duration,
}

impl Standby {
    pub fn new(lock: GatewayLock, every: Duration) -> Standby {
        Standby { lock, every }
    }

    /// Returns once this process holds the lock and has waited out the hold-off. `status` is
    /// told why not, at each change (for `/readyz`); the log says it once per change too.
    pub async fn wait_turn(&mut self, status: impl Fn(String)) {
        let mut said: Option<String> = None;
        loop {
            let why = match self.lock.try_take().await {
                Ok(true) => break,
                Ok(false) => STANDBY.to_string(),
                Err(e) => format!("cannot reach the database for the gateway lock: {e}"),
            };
            if said.as_deref() != Some(why.as_str()) {
                if why == STANDBY {
                    tracing::info!(
                        "another replica holds the gateway: this one is the standby, asking again every {}s",
                        self.every.as_secs()
                    );
                } else {
                    tracing::warn!("{why}; asking again every {}s", self.every.as_secs());
                }
                status(why.clone());
                said = Some(why);
            }
            tokio::time::sleep(self.every).await;
        }
        let taking = format!(
            "took the gateway lock; connecting in {}s",
            self.every.as_secs()
        );
        tracing::info!("{taking}");
        status(taking);
        tokio::time::sleep(self.every).await;
    }

    /// Checks the lock every period while the gateway runs; returns why once it is lost. The
    /// connection is gone by then (and with it the lock, if the server still had it).
    pub async fn until_lost(&mut self) -> LockError {
        loop {
            tokio::time::sleep(self.every).await;
            if let Err(e) = self.lock.check().await {
                return e;
            }
        }
    }

    /// Give the lock up at once (the process is stopping).
    pub async fn release(&mut self) {
        self.lock.release().await;
    }
}
