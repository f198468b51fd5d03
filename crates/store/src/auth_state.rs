//! `AuthStateStore` on the database: sessions and tokens sealed at rest, and a cross-instance
//! lock for logins. On PostgreSQL the lock is a transaction-scoped advisory lock, released
//! when the guard (the open transaction) is dropped. SQLite serves a single instance, so its
//! lock is in-process: one mutex per database file and key, shared by every `Store` opened on
//! that file in this process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use crmhub_core::Secret;
use crmhub_core::auth_state::{AuthLock, AuthStateError, AuthStateStore};

use crate::db::{Db, on_pool};
use crate::{Store, StoreError};

pub(crate) fn seal_context(key: &str) -> String {
    format!("auth_state:{key}")
}

fn failed(e: impl Into<StoreError>) -> AuthStateError {
    AuthStateError(e.into().to_string())
}

#[async_trait::async_trait]
impl AuthStateStore for Store {
    async fn load(&self, key: &str) -> Result<Option<Secret>, AuthStateError> {
        let sealed: Option<String> = on_pool!(&self.db, |pool| {
            sqlx::query_scalar("SELECT sealed FROM auth_state WHERE key = $1").bind(key).fetch_optional(pool).await
        })
        .map_err(failed)?;
        let Some(sealed) = sealed else { return Ok(None) };
        match self.vault.open_string(&sealed, &seal_context(key)) {
            Ok(plain) => Ok(Some(Secret::new(plain.as_str()))),
            // A value sealed under a previous key is just a stale session: log in again.
            Err(_) => Ok(None),
        }
    }

    async fn save(&self, key: &str, value: &Secret) -> Result<(), AuthStateError> {
        let sealed = self.vault.seal(value.expose().as_bytes(), &seal_context(key));
        let now = self.now();
        on_pool!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO auth_state (key, sealed, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
            )
            .bind(key)
            .bind(&sealed)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(failed)?;
        Ok(())
    }

    async fn lock(&self, key: &str) -> Result<AuthLock, AuthStateError> {
        match (&self.db, &self.lock_pool) {
            (Db::Postgres(_), Some(pool)) => {
                let mut tx = pool.begin().await.map_err(failed)?;
                // Bounded, so that an instance stuck in a login cannot block the others forever.
                sqlx::query("SET LOCAL lock_timeout = '60s'").execute(&mut *tx).await.map_err(failed)?;
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(failed)?;
                Ok(AuthLock::new(tx))
            }
            (Db::Sqlite(pool), _) => {
                let file = pool.connect_options().get_filename().to_path_buf();
                let file = std::fs::canonicalize(&file).unwrap_or(file);
                Ok(AuthLock::new(SqliteLoginLock::acquire((file, key.to_owned())).await))
            }
            (Db::Postgres(_), None) => Err(AuthStateError("PostgreSQL store without a lock pool".into())),
        }
    }
}

type LockKey = (PathBuf, String);

/// The in-process login locks of SQLite stores; an entry lives while someone holds or awaits it.
static SQLITE_LOGIN_LOCKS: LazyLock<Mutex<HashMap<LockKey, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

struct SqliteLoginLock {
    key: LockKey,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl SqliteLoginLock {
    async fn acquire(key: LockKey) -> Self {
        let mutex =
            SQLITE_LOGIN_LOCKS.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default().clone();
        Self { key, guard: Some(mutex.lock_owned().await) }
    }
}

impl Drop for SqliteLoginLock {
    fn drop(&mut self) {
        let mut locks = SQLITE_LOGIN_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
        // Release first; then forget the entry if nobody else holds a handle on it (handles are
        // only taken under this same map lock, so the count cannot grow meanwhile).
        self.guard = None;
        if locks.get(&self.key).is_some_and(|m| Arc::strong_count(m) == 1) {
            locks.remove(&self.key);
        }
    }
}
