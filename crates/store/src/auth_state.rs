//! `AuthStateStore` on the database: sessions and tokens sealed at rest, and a cross-instance
//! lock for logins. On PostgreSQL the lock is a transaction-scoped advisory lock, released
//! when the guard (the open transaction) is dropped. SQLite serves a single instance, where
//! the connectors' in-process single flight is already exclusive, so its lock is a no-op.

use crmhub_core::Secret;
use crmhub_core::auth_state::{AuthLock, AuthStateError, AuthStateStore};

use crate::db::{Db, on_pool};
use crate::{Store, StoreError};

fn seal_context(key: &str) -> String {
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
            _ => Ok(AuthLock::new(())),
        }
    }
}
