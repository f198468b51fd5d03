//! Secrets crmhub keeps for a tenant's channels (signing secrets, webhook path tokens), sealed
//! in the vault. Rotation keeps the previous secret valid for a grace period, so a platform
//! that has not picked up the new one yet keeps working.

use std::time::Duration;

use crmhub_core::clock::duration_millis;
use crmhub_core::{Secret, TenantId, UnixMillis};
use uuid::Uuid;

use crate::db::{on_pool, on_tx};
use crate::{Result, Store};

/// A secret with the id that may be logged in its place.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    pub id: String,
    pub secret: Secret,
    pub created_at: UnixMillis,
    /// When a superseded secret stops being accepted; `None` for the current one.
    pub retires_at: Option<UnixMillis>,
}

fn seal_context(id: &str) -> String {
    format!("tenant_secret:{id}")
}

pub struct TenantSecrets<'a> {
    store: &'a Store,
    tenant: TenantId,
}

impl Store {
    pub fn secrets(&self, tenant: TenantId) -> TenantSecrets<'_> {
        TenantSecrets { store: self, tenant }
    }
}

#[derive(sqlx::FromRow)]
struct SecretRow {
    id: String,
    sealed: String,
    created_at: i64,
    retires_at: Option<i64>,
}

impl TenantSecrets<'_> {
    /// Every secret for `purpose` that is accepted now, the current one first.
    pub async fn valid(&self, purpose: &str) -> Result<Vec<StoredSecret>> {
        let now = self.store.now();
        let rows: Vec<SecretRow> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(
                "SELECT id, sealed, created_at, retires_at FROM tenant_secrets \
                 WHERE tenant_id = $1 AND purpose = $2 AND (retires_at IS NULL OR retires_at > $3) \
                 ORDER BY (retires_at IS NULL) DESC, created_at DESC",
            )
            .bind(self.tenant.to_string())
            .bind(purpose)
            .bind(now)
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter()
            .map(|row| {
                let plain = self.store.vault.open_string(&row.sealed, &seal_context(&row.id))?;
                Ok(StoredSecret {
                    id: row.id,
                    secret: Secret::new(plain.as_str()),
                    created_at: row.created_at,
                    retires_at: row.retires_at,
                })
            })
            .collect()
    }

    /// Makes `new` (or a fresh 256-bit secret) the current secret for `purpose`. Secrets it
    /// supersedes stay valid for `grace`; ones already past their grace are deleted.
    pub async fn rotate(&self, purpose: &str, new: Option<Secret>, grace: Duration) -> Result<StoredSecret> {
        let now = self.store.now();
        let retires_at = now.saturating_add(duration_millis(grace));
        let secret = new.unwrap_or_else(Secret::generate);
        let id = Uuid::new_v4().to_string();
        let sealed = self.store.vault.seal(secret.expose().as_bytes(), &seal_context(&id));
        let tenant = self.tenant.to_string();
        let mut tx = self.store.begin().await?;
        on_tx!(&mut tx, |conn| {
            sqlx::query(
                "DELETE FROM tenant_secrets WHERE tenant_id = $1 AND purpose = $2 \
                 AND retires_at IS NOT NULL AND retires_at <= $3",
            )
            .bind(&tenant)
            .bind(purpose)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())?;
            // Every secret still accepted retires by the new grace's end at the latest: a rotation
            // with no grace (after a leak) cuts off older secrets still in an earlier grace too.
            sqlx::query(
                "UPDATE tenant_secrets SET retires_at = CASE WHEN retires_at IS NULL OR retires_at > $3 THEN $3 \
                 ELSE retires_at END WHERE tenant_id = $1 AND purpose = $2 AND (retires_at IS NULL OR retires_at > $3)",
            )
            .bind(&tenant)
            .bind(purpose)
            .bind(retires_at)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())?;
            sqlx::query(
                "INSERT INTO tenant_secrets (id, tenant_id, purpose, sealed, created_at, retires_at) \
                 SELECT $1, $2, $3, $4, $5, NULL WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $2)",
            )
            .bind(&id)
            .bind(&tenant)
            .bind(purpose)
            .bind(&sealed)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
        })?;
        tx.commit().await?;
        Ok(StoredSecret { id, secret, created_at: now, retires_at: None })
    }

    /// Removes every secret for `purpose` at once (no grace).
    pub async fn revoke_all(&self, purpose: &str) -> Result<u64> {
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query("DELETE FROM tenant_secrets WHERE tenant_id = $1 AND purpose = $2")
                .bind(self.tenant.to_string())
                .bind(purpose)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done)
    }
}
