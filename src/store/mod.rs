//! Storage (sqlx, SQLite by default): the audit log, confirmations, operations with the per-VM
//! lock, and the latest check snapshot per VM.
//!
//! The guarantees that matter are enforced by the database, not by Rust code holding a mutex:
//! a confirmation is taken by exactly one caller (one conditional `UPDATE`, see
//! [`Store::confirm`]), and a VM has at most one running operation (a partial unique index, see
//! [`Store::start_operation`]). Both hold across connections, tasks and processes.
//!
//! SQL is kept portable for the PostgreSQL backend to come: TEXT/INTEGER columns, INTEGER unix
//! milliseconds, `RETURNING`, partial unique indexes. Placeholders are `?` because that is what
//! SQLite understands through sqlx; the PostgreSQL backend will need `$1`, `$2`, ...
//!
//! **Architecture Invariant:** the store speaks plain types (strings, ids, milliseconds). It knows
//! nothing of Discord, the CLI, ARM SDK types or policy, and it never stores a secret: it refuses
//! parameters with a password-like key and URLs with a SAS signature (see `secrets`).

mod audit;
mod confirmations;
mod operations;
mod secrets;
mod snapshots;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

pub use audit::{AuditEntry, NewAudit};
pub use confirmations::{
    CancelOutcome, ConfirmOutcome, Confirmation, ConfirmationState, NewConfirmation,
};
pub use operations::{Locked, NewOperation, Operation, OperationOutcome};

/// The migrations in `migrations/`, embedded in the binary.
///
/// sqlx's `migrate!()` lives behind its `macros` feature, which we leave off (no compile-time
/// checked queries), so the files are listed here; a test checks this list against the folder.
static MIGRATIONS: EmbeddedMigrations =
    EmbeddedMigrations(&[(1, "init", include_str!("../../migrations/0001_init.sql"))]);

/// Migrations compiled into the binary: `(version, description, sql)`.
#[derive(Debug, Clone, Copy)]
struct EmbeddedMigrations(&'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(
        self,
    ) -> BoxFuture<'static, Result<Vec<Migration>, Box<dyn std::error::Error + Send + Sync>>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Connections per file database. SQLite serialises writers anyway; a few connections let reads
/// (WAL) go on while one task writes.
const FILE_POOL_SIZE: u32 = 8;

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The database. Cheap to clone: it holds a connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL has credentials removed (see [`redact_url`]).
    #[error("cannot open the database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("{url} is not a database rdp-doctor can use yet: only sqlite:// URLs are supported")]
    UnsupportedUrl { url: String },
    #[error("cannot bring the database schema up to date: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error while {doing}: {source}")]
    Database {
        doing: &'static str,
        source: sqlx::Error,
    },
    /// Defence in depth: the callers must never hand the store a secret.
    #[error("refusing to store {what}: it contains {found}, and secrets never go to the database")]
    Secret { what: &'static str, found: String },
    #[error("{what} is not a JSON object: {message}")]
    InvalidJson { what: &'static str, message: String },
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("confirmation {id} has already started an operation")]
    ConfirmationAlreadyUsed { id: String },
    #[error("operation {id} does not exist")]
    NoSuchOperation { id: i64 },
    #[error("operation {id} is not running (it already finished)")]
    OperationNotRunning { id: i64 },
    #[error("the operating system's random source failed ({0}); no confirmation id can be made")]
    NoRandomness(String),
    /// A row the schema should have prevented, e.g. an unknown state.
    #[error("unexpected data in the database: {0}")]
    Corrupt(String),
}

impl StoreError {
    fn db(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Database { doing, source }
    }
}

/// One SQL statement with its values bound.
type Statement<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

impl Store {
    /// Runs one statement and tells how many rows it changed; `doing` names it in an error.
    async fn run(&self, statement: Statement<'_>, doing: &'static str) -> Result<u64, StoreError> {
        Ok(statement
            .execute(&self.pool)
            .await
            .map_err(StoreError::db(doing))?
            .rows_affected())
    }

    /// Open (creating the file if missing) and migrate the database at `url`.
    ///
    /// `sqlite://rdp-doctor.db` is a file next to the working directory, in WAL mode;
    /// `sqlite::memory:` is a private in-memory database on one connection (for tests).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let shown = redact_url(url);
        if !url.starts_with("sqlite:") {
            return Err(StoreError::UnsupportedUrl { url: shown });
        }
        let open_err = |source| StoreError::Open {
            url: shown.clone(),
            source,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(open_err)?
            .create_if_missing(true)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = if in_memory {
            // Every connection to `:memory:` would be its own empty database, and the database
            // disappears with its last connection: keep exactly one, forever.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await
                .map_err(open_err)?
        } else {
            SqlitePoolOptions::new()
                .max_connections(FILE_POOL_SIZE)
                .connect_with(options.journal_mode(SqliteJournalMode::Wal))
                .await
                .map_err(open_err)?
        };
        Migrator::new(MIGRATIONS).await?.run(&pool).await?;
        Ok(Store { pool })
    }

    /// One trivial query: whether the database answers (a readiness probe).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(StoreError::db("checking the database answers"))
    }

    /// Close every connection (waits for queries in flight). Later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `url` without user, password or query (PostgreSQL URLs may carry a password in either).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("REDACTED"));
            }
            parsed.set_query(None);
            parsed.to_string()
        }
        // Not a URL (e.g. `sqlite::memory:` parses, a bare path may not): keep only up to any `?`
        // and `@`, which is where credentials would be.
        Err(_) => {
            let cut = url.find(['?', '@']).unwrap_or(url.len());
            url[..cut].to_string()
        }
    }
}

/// A new unguessable id: 128 bits from the operating system's CSPRNG, as 32 lowercase hex
/// digits. Without a random source there is no id (and so no confirmation), never a weak one.
pub(crate) fn new_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| StoreError::NoRandomness(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Now, in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// ARM resource ids are case-insensitive; the lock and the snapshots key on this form.
pub(crate) fn vm_key(vm_id: &str) -> String {
    vm_id.trim().to_ascii_lowercase()
}

fn require(what: &'static str, value: &str) -> Result<(), StoreError> {
    if value.trim().is_empty() {
        Err(StoreError::Empty { what })
    } else {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::Store;
    use std::path::PathBuf;

    /// A fresh in-memory store.
    pub async fn memory() -> Store {
        Store::open("sqlite::memory:")
            .await
            .expect("open memory db")
    }

    /// A directory under the system temp dir, removed (with the database in it) on drop.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new() -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "rdp-doctor-store-{}",
                super::new_id().expect("random source")
            ));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        pub fn url(&self) -> String {
            format!("sqlite://{}", self.0.join("test.db").display())
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::TempDir;
    use super::*;

    #[test]
    fn embedded_migrations_match_the_folder() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("migrations/ exists")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATIONS
            .0
            .iter()
            .map(|(v, d, _)| format!("{v:04}_{d}.sql"))
            .collect();
        assert_eq!(
            files, embedded,
            "list every file of migrations/ in MIGRATIONS"
        );
        for (name, (_, _, sql)) in files.iter().zip(MIGRATIONS.0) {
            let on_disk = std::fs::read_to_string(dir.join(name)).expect("read migration");
            assert_eq!(&on_disk, sql, "{name}");
        }
    }

    #[tokio::test]
    async fn a_file_database_is_created_migrated_and_reopened() {
        let dir = TempDir::new();
        let store = Store::open(&dir.url()).await.unwrap();
        store
            .save_snapshot("/subscriptions/s/resourceGroups/rg/providers/x/vm", 5, "{}")
            .await
            .unwrap();
        store.close().await;
        assert!(dir.0.join("test.db").exists());
        // Migrations already applied are recognised by checksum, not re-run.
        let again = Store::open(&dir.url()).await.unwrap();
        let snap = again
            .latest_snapshot("/subscriptions/s/resourceGroups/rg/providers/x/vm")
            .await
            .unwrap();
        assert_eq!(snap, Some((5, "{}".to_string())));
        again.close().await;
    }

    #[tokio::test]
    async fn unsupported_and_broken_urls_are_reported_without_credentials() {
        let err = Store::open("postgres://bot:hunter2@db.example/rdp?password=hunter2")
            .await
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("db.example"), "{err}");
        assert!(err.contains("only sqlite://"), "{err}");

        let err = Store::open("sqlite:///nonexistent-dir-rdp-doctor/x/y.db")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot open the database sqlite:///nonexistent"),
            "{err}"
        );
    }

    #[test]
    fn ids_are_128_bit_hex_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_id().unwrap()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
    }
}
