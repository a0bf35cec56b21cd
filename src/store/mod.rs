//! Storage (sqlx, SQLite by default): the audit log, confirmations, operations with the per-VM
//! lock, the latest check snapshot per VM, the sweeps running now (one per scope), the watches
//! and every VM's check history.
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

mod alerts;
mod audit;
mod confirmations;
mod gateway_lock;
mod history;
mod operations;
mod picks;
mod secrets;
mod snapshots;
mod sweeps;
mod watches;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::AnyPool;
use sqlx::Executor;

pub use alerts::{AlertClaim, AlertRow};
pub use audit::{AuditEntry, NewAudit};
pub use confirmations::{
    CancelOutcome, ConfirmOutcome, Confirmation, ConfirmationState, NewConfirmation,
};
pub use gateway_lock::{GatewayLock, LockError, GATEWAY_LOCK_KEY};
pub use history::StoredCheck;
pub use operations::{Locked, NewOperation, Operation, OperationOutcome};
pub use picks::KeptPick;
pub use sweeps::{NewSweep, StoredSweep, SweptRows};
pub use watches::{NewWatch, StoredWatch};

/// The migrations in `migrations/sqlite/` and `migrations/postgres/`, embedded in the binary: the
/// same versions and descriptions in both, each in its database's dialect.
///
/// sqlx's `migrate!()` lives behind its `macros` feature, which we leave off (no compile-time
/// checked queries), so the files are listed here; a test checks these lists against the folders.
static SQLITE_MIGRATIONS: EmbeddedMigrations = EmbeddedMigrations(&[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "leases",
        include_str!("../../migrations/sqlite/0002_leases.sql"),
    ),
    (
        3,
        "sweeps",
        include_str!("../../migrations/sqlite/0003_sweeps.sql"),
    ),
    (
        4,
        "alerts",
        include_str!("../../migrations/sqlite/0004_alerts.sql"),
    ),
    (
        5,
        "watches",
        include_str!("../../migrations/sqlite/0005_watches.sql"),
    ),
    (
        6,
        "sweep_handles",
        include_str!("../../migrations/sqlite/0006_sweep_handles.sql"),
    ),
    (
        7,
        "picks",
        include_str!("../../migrations/sqlite/0007_picks.sql"),
    ),
]);
static POSTGRES_MIGRATIONS: EmbeddedMigrations = EmbeddedMigrations(&[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "leases",
        include_str!("../../migrations/postgres/0002_leases.sql"),
    ),
    (
        3,
        "sweeps",
        include_str!("../../migrations/postgres/0003_sweeps.sql"),
    ),
    (
        4,
        "alerts",
        include_str!("../../migrations/postgres/0004_alerts.sql"),
    ),
    (
        5,
        "watches",
        include_str!("../../migrations/postgres/0005_watches.sql"),
    ),
    (
        6,
        "sweep_handles",
        include_str!("../../migrations/postgres/0006_sweep_handles.sql"),
    ),
    (
        7,
        "picks",
        include_str!("../../migrations/postgres/0007_picks.sql"),
    ),
]);

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

/// Connections per PostgreSQL pool. Several replicas share one server, whose default
/// `max_connections` is 100: ten each leaves room for a dozen replicas and an operator's psql.
const POSTGRES_POOL_SIZE: u32 = 10;

/// How long getting a connection may take before the caller is told the database is unreachable
/// (sqlx's default is 30 s, too long for someone waiting in the war room).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The database. Cheap to clone: it holds a connection pool.
///
/// One code path serves both databases through sqlx's `Any` driver: the SQL is written once in
/// the dialect both understand (`$1` placeholders, TEXT and BIGINT/INTEGER columns, `RETURNING`,
/// partial unique indexes, `ON CONFLICT`); only the migrations differ.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://path` or `sqlite::memory:`: one machine, the embedded default.
    Sqlite,
    /// `postgres://…` or `postgresql://…`: shared by replicas.
    Postgres,
}

impl Backend {
    /// The backend a URL names, or `None` for a scheme rdp-doctor does not speak.
    pub fn of(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL has credentials removed (see [`redact_url`]).
    #[error("cannot open the database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error(
        "{url} is not a database rdp-doctor can use: the URL must start with sqlite:, \
         postgres:// or postgresql://"
    )]
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
    #[error("kept rows {what}: {message}")]
    KeptRows { what: &'static str, message: String },
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
    /// The database did not answer (no connection within the acquire timeout, the connection
    /// lost, the server gone), as opposed to the database refusing something or rdp-doctor
    /// having closed its pool: trying again later may work, and nothing was written.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::Open { source, .. } | StoreError::Database { source, .. } => matches!(
                source,
                sqlx::Error::PoolTimedOut
                    | sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::WorkerCrashed
            ),
            _ => false,
        }
    }

    fn db(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Database { doing, source }
    }
}

/// One SQL statement with its values bound.
type Statement<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

impl Store {
    /// Runs one statement and tells how many rows it changed; `doing` names it in an error.
    async fn run(&self, statement: Statement<'_>, doing: &'static str) -> Result<u64, StoreError> {
        Ok(statement
            .execute(&self.pool)
            .await
            .map_err(StoreError::db(doing))?
            .rows_affected())
    }

    /// Open and migrate the database at `url`.
    ///
    /// `sqlite://rdp-doctor.db` is a file next to the working directory (created if missing), in
    /// WAL mode; `sqlite::memory:` is a private in-memory database on one connection (for tests);
    /// `postgres://user@host/db` is a PostgreSQL database that must exist (its tables are created
    /// by the migrations, which take PostgreSQL's migration lock, so replicas starting together
    /// migrate once).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let shown = redact_url(url);
        let Some(backend) = Backend::of(url) else {
            return Err(StoreError::UnsupportedUrl { url: shown });
        };
        sqlx::any::install_default_drivers();
        let open_err = |source| StoreError::Open {
            url: shown.clone(),
            source,
        };
        let (pool, migrations) = match backend {
            Backend::Sqlite => (
                Self::open_sqlite(url).await.map_err(open_err)?,
                SQLITE_MIGRATIONS,
            ),
            Backend::Postgres => {
                let options = AnyConnectOptions::from_str(url).map_err(open_err)?;
                let pool = AnyPoolOptions::new()
                    .max_connections(POSTGRES_POOL_SIZE)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(open_err)?;
                (pool, POSTGRES_MIGRATIONS)
            }
        };
        Migrator::new(migrations).await?.run(&pool).await?;
        Ok(Store { pool, backend })
    }

    /// SQLite through the `Any` driver. Its URL carries only the file and the open mode, so the
    /// rest (write-ahead log, busy timeout, foreign keys) is set on each new connection.
    async fn open_sqlite(url: &str) -> Result<AnyPool, sqlx::Error> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if in_memory {
            // Every connection to `:memory:` would be its own empty database, and the database
            // disappears with its last connection: keep exactly one, forever.
            return AnyPoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        Ok(())
                    })
                })
                .connect_with(AnyConnectOptions::from_str(url)?)
                .await;
        }
        // Create the file if missing (`mode=rwc`) unless the URL chose a mode itself.
        let url = if url.contains("mode=") {
            url.to_string()
        } else if url.contains('?') {
            format!("{url}&mode=rwc")
        } else {
            format!("{url}?mode=rwc")
        };
        let busy = format!("PRAGMA busy_timeout = {}", BUSY_TIMEOUT.as_millis());
        AnyPoolOptions::new()
            .max_connections(FILE_POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT.max(BUSY_TIMEOUT))
            .after_connect(move |conn, _| {
                let busy = busy.clone();
                Box::pin(async move {
                    conn.execute(busy.as_str()).await?;
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            })
            .connect_with(AnyConnectOptions::from_str(&url)?)
            .await
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers now (for readiness probes): one trivial round trip.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(StoreError::db("checking that the database answers"))
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

/// Heartbeats older than this (unix ms) belong to owners whose `lease` has lapsed: the cutoff
/// for taking over operations and for deleting sweep claims.
pub(crate) fn lapsed_before(lease: std::time::Duration) -> i64 {
    now_ms().saturating_sub(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
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

/// Test support shared by the unit tests and `tests/it`: fresh stores of either backend.
#[doc(hidden)]
pub mod testing {
    #[cfg(test)]
    use super::{Backend, Store};
    #[cfg(test)]
    use std::path::PathBuf;

    /// The PostgreSQL server the store's tests use: a URL whose user may create databases (each
    /// test gets a database of its own). `.ci/test` starts Debian's PostgreSQL on loopback and
    /// sets it.
    pub const POSTGRES_URL_VAR: &str = "RDP_DOCTOR_TEST_POSTGRES_URL";

    #[cfg(test)]
    /// A fresh in-memory SQLite store.
    pub async fn memory() -> Store {
        Store::open("sqlite::memory:")
            .await
            .expect("open memory db")
    }

    #[cfg(test)]
    /// A store under test, with whatever keeps its database alive.
    pub(crate) struct TestStore {
        pub store: Store,
        _dir: Option<TempDir>,
    }

    #[cfg(test)]
    impl std::ops::Deref for TestStore {
        type Target = Store;
        fn deref(&self) -> &Store {
            &self.store
        }
    }

    #[cfg(test)]
    /// A fresh, empty store of `backend`. `pooled`: SQLite in a file (several connections, like
    /// production) instead of in memory (one connection); PostgreSQL is always pooled.
    pub(crate) async fn fresh(backend: Backend, pooled: bool) -> TestStore {
        match backend {
            Backend::Sqlite if pooled => {
                let dir = TempDir::new();
                let store = Store::open(&dir.url()).await.expect("open file db");
                TestStore {
                    store,
                    _dir: Some(dir),
                }
            }
            Backend::Sqlite => TestStore {
                store: memory().await,
                _dir: None,
            },
            Backend::Postgres => TestStore {
                store: Store::open(&postgres_database().await)
                    .await
                    .expect("open the test database on PostgreSQL"),
                _dir: None,
            },
        }
    }

    /// Creates a database named `rdp_test_<random>` on the test server and returns its URL.
    pub async fn postgres_database() -> String {
        use sqlx::Connection;
        let Ok(admin) = std::env::var(POSTGRES_URL_VAR) else {
            panic!(
                "the store's tests need PostgreSQL: set {POSTGRES_URL_VAR} to a URL whose user \
                 may create databases (e.g. postgres://rdp:rdp@127.0.0.1:5432/postgres), or run \
                 .ci/test, which starts Debian's PostgreSQL on loopback and sets it"
            )
        };
        sqlx::any::install_default_drivers();
        let name = format!("rdp_test_{}", super::new_id().expect("random source"));
        let mut conn = sqlx::AnyConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot reach the test PostgreSQL at {} ({POSTGRES_URL_VAR}): {e}",
                    super::redact_url(&admin)
                )
            });
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        conn.close().await.ok();
        let mut url = url::Url::parse(&admin).expect("the test PostgreSQL URL parses");
        url.set_path(&name);
        url.to_string()
    }

    /// Drops a database [`postgres_database`] made, with any connection still open to it
    /// (`WITH (FORCE)`: a killed replica's may linger). For runs that outlive `.ci/test`'s
    /// clean-up, such as the benchmark's. Not a database of another name.
    pub async fn drop_postgres_database(url: &str) -> anyhow::Result<()> {
        use anyhow::Context as _;
        use sqlx::Connection;
        let admin = std::env::var(POSTGRES_URL_VAR)
            .with_context(|| format!("{POSTGRES_URL_VAR} is not set"))?;
        let name = url::Url::parse(url)
            .ok()
            .map(|u| u.path().trim_start_matches('/').to_string())
            .filter(|n| {
                n.strip_prefix("rdp_test_").is_some_and(|id| {
                    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                })
            })
            .context("not a database postgres_database made")?;
        let mut conn = sqlx::AnyConnection::connect(&admin)
            .await
            .context("cannot reach the test PostgreSQL")?;
        let dropped = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .map(|_| ())
            .with_context(|| format!("cannot drop {name}"));
        conn.close().await.ok();
        dropped
    }

    /// Defines each test twice, in modules `sqlite` and `postgres`, with `$store` a fresh
    /// [`TestStore`] of that backend (`pooled` as in [`fresh`]).
    #[cfg(test)]
    macro_rules! on_both_backends {
        ($(
            $(#[$meta:meta])*
            async fn $name:ident($store:ident, pooled = $pooled:expr) $body:block
        )*) => {
            mod sqlite {
                #[allow(unused_imports)]
                use super::*;
                $(
                    $(#[$meta])*
                    async fn $name() {
                        let $store = $crate::store::testing::fresh(
                            $crate::store::Backend::Sqlite,
                            $pooled,
                        )
                        .await;
                        $body
                    }
                )*
            }
            mod postgres {
                #[allow(unused_imports)]
                use super::*;
                $(
                    $(#[$meta])*
                    async fn $name() {
                        let $store = $crate::store::testing::fresh(
                            $crate::store::Backend::Postgres,
                            $pooled,
                        )
                        .await;
                        $body
                    }
                )*
            }
        };
    }
    #[cfg(test)]
    pub(crate) use on_both_backends;

    #[cfg(test)]
    /// A directory under the system temp dir, removed (with the database in it) on drop.
    pub(crate) struct TempDir(pub PathBuf);

    #[cfg(test)]
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

    #[cfg(test)]
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    /// sqlx's checksum of migrations/sqlite/0001_init.sql as released.
    const RELEASED_SQLITE_INIT_SHA384: &str = "7e2046075580d162af8368d60ef1c6ae43f80accaae70a1e151190f86b9f985c28fe1a8af125d49e3e608ceb80cf3cfb";

    /// sqlx's checksum of migrations/sqlite/0004_alerts.sql as released.
    const RELEASED_SQLITE_ALERTS_SHA384: &str = "573cbfdaeb98967e47a9c85cd5ee98b2d5d31b8557f07d1841a1d8f39d1ab643bd1518080018f014fa55f83d254ed171";

    use super::testing::TempDir;
    use super::*;

    /// A database the tests made is dropped with a connection still open to it; the admin
    /// database, or a name the tests did not make, is refused.
    #[tokio::test]
    async fn a_test_database_is_dropped_and_no_other() {
        let url = testing::postgres_database().await;
        let store = Store::open(&url).await.expect("the test database opens");
        testing::drop_postgres_database(&url)
            .await
            .expect("dropped with the store still connected");
        assert!(Store::open(&url).await.is_err(), "{url} is still there");
        drop(store);
        let admin = std::env::var(testing::POSTGRES_URL_VAR).unwrap();
        for other in [
            admin.as_str(),
            "postgres://u:p@127.0.0.1/rdp_test_x;DROP",
            "not a url",
        ] {
            assert!(
                testing::drop_postgres_database(other).await.is_err(),
                "{other} was not refused"
            );
        }
    }

    #[test]
    fn embedded_migrations_match_their_folders() {
        for (folder, embedded) in [
            ("sqlite", SQLITE_MIGRATIONS),
            ("postgres", POSTGRES_MIGRATIONS),
        ] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(folder);
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .expect("the migrations folder exists")
                .map(|e| {
                    e.expect("dir entry")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            files.sort();
            let listed: Vec<String> = embedded
                .0
                .iter()
                .map(|(v, d, _)| format!("{v:04}_{d}.sql"))
                .collect();
            assert_eq!(files, listed, "list every file of migrations/{folder}/");
            for (name, (_, _, sql)) in files.iter().zip(embedded.0) {
                let on_disk = std::fs::read_to_string(dir.join(name)).expect("read migration");
                assert_eq!(&on_disk, sql, "{folder}/{name}");
            }
        }
    }

    /// sqlx refuses to start when an applied migration's text changed (it keeps a SHA-384
    /// checksum), so the SQLite schema that databases in the field were created with must never
    /// be edited: a new migration goes in a new file.
    #[tokio::test]
    async fn the_released_sqlite_migration_is_unchanged() {
        let migrations = SQLITE_MIGRATIONS.resolve().await.expect("embedded");
        let checksum: String = migrations[0]
            .checksum
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(checksum, RELEASED_SQLITE_INIT_SHA384);
        let alerts = migrations
            .iter()
            .find(|m| m.version == 4)
            .expect("0004_alerts");
        let checksum: String = alerts.checksum.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(checksum, RELEASED_SQLITE_ALERTS_SHA384, "0004_alerts.sql");
    }

    /// sqlx's checksum of migrations/sqlite/0005_watches.sql as released.
    const RELEASED_SQLITE_WATCHES_SHA384: &str = "119c66ded35af21b5bac88f43283d00441f19c7288de816a7340bbc7bffe475972b5db6b03d8b8921c95d01a2975c374";

    #[tokio::test]
    async fn the_released_sqlite_watches_migration_is_unchanged() {
        let migrations = SQLITE_MIGRATIONS.resolve().await.expect("embedded");
        let watches = migrations
            .iter()
            .find(|m| m.version == 5)
            .expect("migration 0005");
        let checksum: String = watches
            .checksum
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(checksum, RELEASED_SQLITE_WATCHES_SHA384);
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
        let err = Store::open("mysql://bot:hunter2@db.example/rdp?password=hunter2")
            .await
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("db.example"), "{err}");
        assert!(
            err.contains("must start with sqlite:, postgres://"),
            "{err}"
        );

        // Nothing listens on port 1 of loopback: the connection is refused, and neither the
        // password in the URL nor the one in its query reaches the error.
        let err = Store::open("postgres://bot:hunter2@127.0.0.1:1/rdp?password=hunter2")
            .await
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(
            err.starts_with("cannot open the database postgres://bot:REDACTED@127.0.0.1:1/rdp"),
            "{err}"
        );

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
