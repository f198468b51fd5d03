//! Connection pools for the two backends and the macros that run one SQL text on either.
//!
//! Queries are written once with `$N` placeholders, which both PostgreSQL and sqlx's SQLite
//! driver bind by number; where the dialects differ (claiming jobs, autoincrement) the code
//! says so at the spot.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crmhub_core::Clock;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Postgres, Sqlite};

use crate::vault::{self, MasterKeySource, Vault};
use crate::{Result, StoreError};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Where the data lives. Parsed from `sqlite:PATH` / `sqlite://PATH` or
/// `postgres://…` / `postgresql://…`; anything else is refused with the scheme named.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseUrl {
    /// The database for messages: a SQLite path, or PostgreSQL's host, port and database
    /// (never its password).
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            Self::Postgres(raw) => match sqlx::postgres::PgConnectOptions::from_str(raw) {
                Ok(o) => {
                    format!("postgres://{}:{}/{}", o.get_host(), o.get_port(), o.get_database().unwrap_or_default())
                }
                Err(_) => "a PostgreSQL database".to_owned(),
            },
        }
    }

    pub fn parse(raw: &str) -> Result<Self> {
        let raw = raw.trim();
        if let Some(rest) = raw.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() || path == ":memory:" {
                return Err(StoreError::InvalidUrl(
                    "a SQLite URL must name a file, e.g. sqlite:///var/lib/crmhub/crmhub.db".into(),
                ));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres(raw.to_owned()));
        }
        let scheme = raw.split_once(':').map_or(raw, |(s, _)| s);
        Err(StoreError::InvalidUrl(format!("unknown scheme {scheme:?}; use sqlite:PATH or postgres://USER@HOST/DB")))
    }

    pub fn sqlite_file(path: impl AsRef<Path>) -> Self {
        Self::Sqlite(path.as_ref().to_path_buf())
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }
}

/// Never print a PostgreSQL URL: it may carry a password.
impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Self::Postgres(_) => f.write_str("postgres://[redacted]"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub url: DatabaseUrl,
    pub max_connections: u32,
    pub master_key: MasterKeySource,
    pub clock: Arc<dyn Clock>,
    /// Jobs a tenant may have waiting before `enqueue` refuses with `QueueFull`.
    pub max_queue_depth_per_tenant: u64,
    /// Attempts a job gets unless its kind says otherwise.
    pub default_max_attempts: u32,
    /// Whether an existing key file may seal a database that holds no secrets yet (see
    /// `VaultError::KeyWithoutDatabase`).
    pub allow_new_database: bool,
    /// How long opening waits for the database: a PostgreSQL server that refuses connections
    /// is retried until then (it may be starting up), then reported by host and port.
    pub connect_timeout: Duration,
}

impl StoreOptions {
    pub fn new(url: DatabaseUrl, master_key: MasterKeySource) -> Self {
        Self {
            url,
            max_connections: 10,
            master_key,
            clock: Arc::new(crmhub_core::SystemClock),
            max_queue_depth_per_tenant: 10_000,
            default_max_attempts: 10,
            allow_new_database: false,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the active pool. The body is compiled once per backend,
/// so it must only use SQL both dialects accept.
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Like `on_pool!` for an open transaction: `$conn` is a `&mut` connection; reborrow it
/// (`&mut *conn`) for each statement.
macro_rules! on_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx {
            $crate::db::Tx::Sqlite(t) => {
                let $conn = &mut **t;
                $body
            }
            $crate::db::Tx::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    };
}
pub(crate) use on_tx;

/// A write transaction on either backend. On SQLite it is opened with `BEGIN IMMEDIATE`, so
/// the write lock is taken up front and a read-then-write cannot fail half way with BUSY.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    pub async fn commit(self) -> Result<()> {
        match self {
            Self::Sqlite(t) => t.commit().await?,
            Self::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<()> {
        match self {
            Self::Sqlite(t) => t.rollback().await?,
            Self::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }
}

/// The PostgreSQL `url` with its database replaced by `name` (its query kept): another database
/// on the same server, as the test suites and benches create one per run.
pub fn postgres_url_with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Commits `tx` when the work done in it succeeded, rolls it back when it failed.
pub(crate) async fn finish<T>(tx: Tx, result: Result<T>) -> Result<T> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            tx.rollback().await?;
            Err(e)
        }
    }
}

/// The storage handle: cheap to clone, shared by the API and the workers.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Db,
    pub(crate) vault: Arc<Vault>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) limits: Arc<Limits>,
    /// PostgreSQL only: connections reserved for login locks, which are held for a whole remote
    /// login; on the main pool, many logins at once would starve requests and workers.
    pub(crate) lock_pool: Option<PgPool>,
}

#[derive(Debug)]
pub(crate) struct Limits {
    pub max_queue_depth_per_tenant: u64,
    pub default_max_attempts: u32,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend()).finish_non_exhaustive()
    }
}

impl Store {
    /// Connects, applies the embedded migrations for the backend, and opens the vault (which
    /// refuses a master key that does not match the one the database was sealed with).
    pub async fn open(options: StoreOptions) -> Result<Self> {
        let db = connect(&options.url, options.max_connections, options.connect_timeout).await?;
        vault::refuse_key_without_database(
            &db,
            &options.master_key,
            options.allow_new_database,
            &options.url.describe(),
        )
        .await?;
        on_pool!(&db, |pool| migrator(&db).run(pool).await)?;
        let vault = vault::open_vault(&db, &options.master_key).await?;
        let lock_pool = match &options.url {
            DatabaseUrl::Postgres(raw) => {
                let connect = sqlx::postgres::PgConnectOptions::from_str(raw)
                    .map_err(|e| StoreError::InvalidUrl(format!("bad PostgreSQL URL: {e}")))?;
                // Lazily connected: an instance that never logs in anywhere opens none.
                Some(
                    PgPoolOptions::new()
                        .max_connections(8)
                        .acquire_timeout(Duration::from_secs(60))
                        .connect_lazy_with(connect),
                )
            }
            DatabaseUrl::Sqlite(_) => None,
        };
        let store = Self {
            lock_pool,
            db,
            vault: Arc::new(vault),
            clock: options.clock,
            limits: Arc::new(Limits {
                max_queue_depth_per_tenant: options.max_queue_depth_per_tenant,
                default_max_attempts: options.default_max_attempts,
            }),
        };
        store.move_legacy_call_maps().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub(crate) fn now(&self) -> i64 {
        self.clock.now_millis()
    }

    /// Opens a write transaction that several storage calls can join (`tx.enqueue_job(..)`).
    pub async fn begin(&self) -> Result<Tx> {
        Ok(match &self.db {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Readiness: the database answers and every embedded migration is recorded as applied.
    pub async fn check_ready(&self) -> Result<(), String> {
        let applied: Vec<i64> = on_pool!(&self.db, |pool| {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = TRUE ORDER BY version")
                .fetch_all(pool)
                .await
        })
        .map_err(|e| format!("database unreachable: {e}"))?;
        let missing: Vec<i64> = migrator(&self.db).iter().map(|m| m.version).filter(|v| !applied.contains(v)).collect();
        if missing.is_empty() { Ok(()) } else { Err(format!("migrations not applied: {missing:?}")) }
    }

    /// Closes the pools; pending statements finish first.
    pub async fn close(&self) {
        if let Some(locks) = &self.lock_pool {
            locks.close().await;
        }
        on_pool!(&self.db, |pool| pool.close().await);
    }
}

fn migrator(db: &Db) -> &'static sqlx::migrate::Migrator {
    match db {
        Db::Sqlite(_) => &SQLITE_MIGRATIONS,
        Db::Postgres(_) => &POSTGRES_MIGRATIONS,
    }
}

async fn connect(url: &DatabaseUrl, max_connections: u32, timeout: Duration) -> Result<Db> {
    let unavailable = |reason: String| StoreError::Unavailable { database: url.describe(), reason };
    match url {
        DatabaseUrl::Sqlite(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::InvalidUrl(format!("cannot create directory {}: {e}", parent.display()))
                })?;
            }
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(timeout)
                .connect_with(options)
                .await
                .map_err(|e| {
                    // SQLite's own message ("unable to open database file") names nothing.
                    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                    unavailable(format!(
                        "{e}; check that {} exists and that it and its directory {} are writable by this user",
                        path.display(),
                        dir.display()
                    ))
                })?;
            Ok(Db::Sqlite(pool))
        }
        DatabaseUrl::Postgres(raw) => {
            let options = sqlx::postgres::PgConnectOptions::from_str(raw)
                .map_err(|e| StoreError::InvalidUrl(format!("bad PostgreSQL URL: {e}")))?;
            // One connection of our own first: the pool retries a refused connection until its
            // timeout and then only says that it timed out, naming neither server nor cause.
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let attempt =
                    tokio::time::timeout_at(deadline, <sqlx::PgConnection as sqlx::Connection>::connect_with(&options))
                        .await;
                match attempt {
                    Ok(Ok(conn)) => {
                        let _ = sqlx::Connection::close(conn).await;
                        break;
                    }
                    // The server may be starting up: retry until the deadline.
                    Ok(Err(sqlx::Error::Io(e)))
                        if e.kind() == std::io::ErrorKind::ConnectionRefused
                            && tokio::time::Instant::now() + Duration::from_millis(200) < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Ok(Err(e)) => return Err(unavailable(e.to_string())),
                    Err(_) => return Err(unavailable(format!("no answer within {timeout:?}"))),
                }
            }
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(timeout)
                .connect_with(options)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            Ok(Db::Postgres(pool))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_database_on_the_same_server() {
        let other = |url| postgres_url_with_database(url, "run_1");
        assert_eq!(other("postgres://postgres@127.0.0.1:5432/test"), "postgres://postgres@127.0.0.1:5432/run_1");
        assert_eq!(
            other("postgres://u:p@db:5432/test?sslmode=disable"),
            "postgres://u:p@db:5432/run_1?sslmode=disable"
        );
        assert_eq!(other("postgres://127.0.0.1"), "postgres://127.0.0.1/run_1");
    }

    #[test]
    fn database_urls_parse_by_scheme() {
        assert_eq!(DatabaseUrl::parse("sqlite:///tmp/a.db").unwrap(), DatabaseUrl::Sqlite("/tmp/a.db".into()));
        assert_eq!(DatabaseUrl::parse("sqlite:data/a.db").unwrap(), DatabaseUrl::Sqlite("data/a.db".into()));
        assert_eq!(DatabaseUrl::parse("postgres://u@h/db").unwrap().backend(), Backend::Postgres);
        assert_eq!(DatabaseUrl::parse("postgresql://u@h/db").unwrap().backend(), Backend::Postgres);
    }

    #[test]
    fn unknown_schemes_are_named_in_the_error() {
        let err = DatabaseUrl::parse("mysql://root@localhost/crm").unwrap_err().to_string();
        assert!(err.contains("unknown scheme \"mysql\""), "{err}");
        assert!(DatabaseUrl::parse("sqlite::memory:").is_err());
    }

    #[test]
    fn postgres_urls_never_print() {
        let url = DatabaseUrl::parse("postgres://u:pw@h/db").unwrap();
        assert!(!format!("{url:?}").contains("pw"));
    }
}
