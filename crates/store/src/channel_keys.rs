//! A tenant's channel keys: their names, scopes and hashes (never the keys themselves).

use crmhub_core::channel_key::ChannelScope;
use crmhub_core::{TenantId, UnixMillis};
use serde::Serialize;
use uuid::Uuid;

use crate::db::on_pool;
use crate::error::on_unique;
use crate::{Result, Store, StoreError};

/// A key as it can be shown: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelKey {
    pub id: String,
    pub name: String,
    pub scopes: Vec<ChannelScope>,
    /// `crmhub_` and the first characters of the key, to tell keys apart.
    pub prefix: String,
    pub created_at: UnixMillis,
    pub revoked_at: Option<UnixMillis>,
}

pub struct ChannelKeys<'a> {
    store: &'a Store,
    tenant: TenantId,
}

impl Store {
    pub fn channel_keys(&self, tenant: TenantId) -> ChannelKeys<'_> {
        ChannelKeys { store: self, tenant }
    }
}

type Row = (String, String, String, String, i64, Option<i64>);

impl ChannelKeys<'_> {
    fn parse(&self, (id, name, scopes, prefix, created_at, revoked_at): Row) -> Result<ChannelKey> {
        let scopes: Vec<ChannelScope> =
            serde_json::from_str(&scopes).map_err(|e| StoreError::corrupt("channel key", &id, e))?;
        Ok(ChannelKey { id, name, scopes, prefix, created_at, revoked_at })
    }

    pub async fn create(&self, name: &str, scopes: &[ChannelScope], prefix: &str, hash: &str) -> Result<ChannelKey> {
        let id = Uuid::new_v4().to_string();
        let now = self.store.now();
        let scopes_json = serde_json::to_string(scopes).unwrap_or_else(|_| "[]".into());
        on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "INSERT INTO channel_keys (id, tenant_id, name, scopes, prefix, key_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&id)
            .bind(self.tenant.to_string())
            .bind(name)
            .bind(&scopes_json)
            .bind(prefix)
            .bind(hash)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(|e| on_unique(e, "name", || format!("this tenant already has a channel key named {name:?}")))?;
        Ok(ChannelKey {
            id,
            name: name.to_owned(),
            scopes: scopes.to_vec(),
            prefix: prefix.to_owned(),
            created_at: now,
            revoked_at: None,
        })
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn list(&self) -> Result<Vec<ChannelKey>> {
        let rows: Vec<Row> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(
                "SELECT id, name, scopes, prefix, created_at, revoked_at FROM channel_keys WHERE tenant_id = $1 \
                 ORDER BY created_at, id",
            )
            .bind(self.tenant.to_string())
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter().map(|row| self.parse(row)).collect()
    }

    /// Revokes the key at once; revoking it again is a no-op. `NotFound` for another tenant's.
    pub async fn revoke(&self, id: &str) -> Result<ChannelKey> {
        let now = self.store.now();
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "UPDATE channel_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE tenant_id = $1 AND id = $2",
            )
            .bind(self.tenant.to_string())
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        if done == 0 {
            return Err(StoreError::NotFound { entity: "channel key" });
        }
        self.list().await?.into_iter().find(|k| k.id == id).ok_or(StoreError::NotFound { entity: "channel key" })
    }

    /// The tenant's live key with this hash, if any.
    pub async fn verify(&self, hash: &str) -> Result<Option<ChannelKey>> {
        let row: Option<Row> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(
                "SELECT id, name, scopes, prefix, created_at, revoked_at FROM channel_keys \
                 WHERE tenant_id = $1 AND key_hash = $2 AND revoked_at IS NULL",
            )
            .bind(self.tenant.to_string())
            .bind(hash)
            .fetch_optional(pool)
            .await
        })?;
        row.map(|row| self.parse(row)).transpose()
    }
}
