//! The gateway's lock: which `rdp-doctor bot` on a shared PostgreSQL database holds the Discord
//! gateway. A PostgreSQL session advisory lock (`pg_try_advisory_lock`, PostgreSQL's manual,
//! "Advisory Locks" and "Advisory Lock Functions") on [`GATEWAY_LOCK_KEY`], taken on a
//! connection of its own that lives as long as the process holds the gateway: a session lock
//! belongs to the session, not to a transaction, so a pooled connection (handed to other
//! queries, closed when idle) cannot carry it. When the holder dies its session ends and the
//! server frees the lock; the next `pg_try_advisory_lock` elsewhere takes it.
//!
//! The connection must reach PostgreSQL itself (or a session-pooling proxy): a
//! transaction-pooling proxy would hand the session, and the lock with it, to whoever comes next.
//!
//! **Architecture Invariant:** nothing here is ever written to the log with the URL's password:
//! the options are kept, never shown (no `Debug`), and errors name the URL through `redact_url`.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};

use super::redact_url;

/// The advisory lock's key: the ASCII of `RDPDGW` and a version, `0x5244_5044_4757_0001`. Fixed,
/// so every rdp-doctor on the database asks for the same lock; positive, so it reads the same in
/// `pg_locks` (`classid` the high 32 bits, `objid` the low ones, `objsubid` 1 for a bigint key).
/// PostgreSQL keeps advisory locks per database, so deployments on two databases of one server
/// each have their own; another program on the same database must not use this key.
pub const GATEWAY_LOCK_KEY: i64 = 0x5244_5044_4757_0001;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The URL has credentials removed.
    #[error("cannot use the database {url} for the gateway lock: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database error while {doing}: {source}")]
    Database {
        doing: &'static str,
        source: sqlx::Error,
    },
    #[error("no answer from the database within {}s while {doing}", .within.as_secs())]
    TimedOut {
        doing: &'static str,
        within: Duration,
    },
    #[error("the gateway lock's session no longer holds the lock")]
    NotHeld,
}

/// How long connecting or one query may take; a connection that takes longer is dropped, which
/// ends its session (as sqlx's pool, `store::ACQUIRE_TIMEOUT`).
const WITHIN: Duration = Duration::from_secs(5);

/// The lock and the one connection that holds it (or asks for it).
pub struct GatewayLock {
    options: PgConnectOptions,
    shown: String,
    /// How long connecting or one query may take before the connection is given up.
    within: Duration,
    conn: Option<PgConnection>,
    held: bool,
}

impl GatewayLock {
    /// The lock on the PostgreSQL database at `url` (no connection yet).
    pub fn new(url: &str) -> Result<GatewayLock, LockError> {
        let shown = redact_url(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|source| LockError::Connect {
                url: shown.clone(),
                source,
            })?
            // A statement every few seconds: nothing worth a log line of its own.
            .disable_statement_logging();
        Ok(GatewayLock {
            options,
            shown,
            within: WITHIN,
            conn: None,
            held: false,
        })
    }

    /// Whether this process holds the lock (as last seen: [`GatewayLock::check`] tells for sure).
    pub fn held(&self) -> bool {
        self.held
    }

    /// Try to take the lock, connecting first if needed: `Ok(true)` it is this process's now
    /// (or already was), `Ok(false)` another session holds it. The connection is kept either
    /// way, for the next try or for as long as the lock is held; on an error it is dropped.
    pub async fn try_take(&mut self) -> Result<bool, LockError> {
        if self.held {
            return Ok(true);
        }
        let within = self.within;
        let doing = "asking for the gateway lock";
        let conn = self.connection().await?;
        let query = sqlx::query("SELECT pg_try_advisory_lock($1)")
            .bind(GATEWAY_LOCK_KEY)
            .fetch_one(conn);
        let taken = bounded(within, doing, query)
            .await
            .and_then(|row| row.try_get::<bool, _>(0).map_err(db(doing)));
        match taken {
            Ok(taken) => {
                self.held = taken;
                Ok(taken)
            }
            Err(e) => {
                self.drop_connection();
                Err(e)
            }
        }
    }

    /// Whether the lock is still this process's: its session answers and the server lists the
    /// lock as granted to it (`pg_locks`). On any failure the connection is dropped (ending the
    /// session, so the server frees the lock if it still had it) and the lock counts as lost.
    pub async fn check(&mut self) -> Result<(), LockError> {
        let doing = "checking the gateway lock's session";
        let within = self.within;
        let held = self.held;
        let Some(conn) = self.conn.as_mut().filter(|_| held) else {
            self.drop_connection();
            return Err(LockError::NotHeld);
        };
        let query = sqlx::query(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND pid = pg_backend_pid() AND objsubid = 1 \
             AND ((classid::bigint << 32) | objid::bigint) = $1",
        )
        .bind(GATEWAY_LOCK_KEY)
        .fetch_one(conn);
        let found = bounded(within, doing, query)
            .await
            .and_then(|row| row.try_get::<i64, _>(0).map_err(db(doing)));
        match found {
            Ok(1) => Ok(()),
            Ok(_) => {
                self.drop_connection();
                Err(LockError::NotHeld)
            }
            Err(e) => {
                self.drop_connection();
                Err(e)
            }
        }
    }

    /// Give the lock up: the connection is closed, so the server frees the lock at once.
    pub async fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = tokio::time::timeout(self.within, conn.close()).await;
        }
        self.held = false;
    }

    fn drop_connection(&mut self) {
        self.conn = None;
        self.held = false;
    }

    async fn connection(&mut self) -> Result<&mut PgConnection, LockError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => match tokio::time::timeout(self.within, self.options.connect()).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(source)) => {
                    return Err(LockError::Connect {
                        url: self.shown.clone(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(LockError::TimedOut {
                        doing: "connecting for the gateway lock",
                        within: self.within,
                    })
                }
            },
        };
        Ok(self.conn.insert(conn))
    }
}

fn db(doing: &'static str) -> impl FnOnce(sqlx::Error) -> LockError {
    move |source| LockError::Database { doing, source }
}

/// `query` within `within`, or [`LockError::TimedOut`] (the caller then drops the connection: a
/// query abandoned halfway leaves it unusable).
async fn bounded<T>(
    within: Duration,
    doing: &'static str,
    query: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, LockError> {
    match tokio::time::timeout(within, query).await {
        Ok(answer) => answer.map_err(db(doing)),
        Err(_) => Err(LockError::TimedOut { doing, within }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::postgres_database;

    /// Until `lock` takes the lock: a session that ended frees its locks as its backend exits,
    /// a moment after the connection closed.
    async fn take_soon(lock: &mut GatewayLock) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !lock.try_take().await.expect("the database answers") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the lock was never freed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn one_session_holds_the_lock_until_it_ends() {
        let url = postgres_database().await;
        let mut a = GatewayLock::new(&url).expect("a URL");
        let mut b = GatewayLock::new(&url).expect("a URL");
        assert!(a.try_take().await.expect("a asks"));
        assert!(!b.try_take().await.expect("b asks"), "a holds it");
        assert!(!b.held());
        a.check().await.expect("a still holds it");
        assert!(a.try_take().await.expect("asked again"), "still a's");

        // The database ends a's session (as a restart would): a's check finds the lock gone,
        // and b, asking again, takes it.
        let mut admin = PgConnection::connect(&url).await.expect("admin connection");
        let ended: i64 = sqlx::query(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_locks \
             WHERE locktype = 'advisory' AND objsubid = 1 \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND ((classid::bigint << 32) | objid::bigint) = $1",
        )
        .bind(GATEWAY_LOCK_KEY)
        .fetch_one(&mut admin)
        .await
        .expect("terminate the holder")
        .get(0);
        assert_eq!(ended, 1, "one session held the key");
        let lost = a.check().await.expect_err("a's session is gone");
        assert!(!a.held(), "{lost}");
        take_soon(&mut b).await;
        assert!(!a.try_take().await.expect("a asks again"), "b holds it now");

        // Released: the other takes it.
        b.release().await;
        assert!(!b.held());
        take_soon(&mut a).await;
        a.check().await.expect("a holds it");
    }

    #[tokio::test]
    async fn an_unreachable_database_is_an_error_without_the_password() {
        let mut lock = GatewayLock::new("postgres://rdp:hunter2@127.0.0.1:1/rdp").expect("a URL");
        let error = lock
            .try_take()
            .await
            .expect_err("nothing listens on port 1");
        let text = error.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("127.0.0.1:1"), "{text}");
        assert!(!lock.held());
        assert!(matches!(lock.check().await, Err(LockError::NotHeld)));
    }
}
