//! Each channel's configuration for a tenant, one row per channel kind. Only the channel's own
//! code reads and writes it (validated there); the tenant API cannot reach it.

use crmhub_core::TenantId;
use serde_json::{Map, Value};

use crate::db::on_pool;
use crate::{Result, Store, StoreError};

pub struct ChannelSettings<'a> {
    store: &'a Store,
    tenant: TenantId,
}

impl Store {
    pub fn channel_settings(&self, tenant: TenantId) -> ChannelSettings<'_> {
        ChannelSettings { store: self, tenant }
    }
}

impl ChannelSettings<'_> {
    /// The settings of the channel `kind` (`social_inbox`, …), if it is configured.
    pub async fn get(&self, kind: &str) -> Result<Option<Map<String, Value>>> {
        let raw: Option<String> = on_pool!(&self.store.db, |pool| {
            sqlx::query_scalar("SELECT settings FROM channel_settings WHERE tenant_id = $1 AND kind = $2")
                .bind(self.tenant.to_string())
                .bind(kind)
                .fetch_optional(pool)
                .await
        })?;
        raw.map(|raw| match serde_json::from_str(&raw) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(StoreError::corrupt("channel settings", format!("{}/{kind}", self.tenant), "not a JSON object")),
        })
        .transpose()
    }

    /// Stores the settings of the channel `kind`, replacing what was there.
    pub async fn put(&self, kind: &str, settings: &Map<String, Value>) -> Result<()> {
        let raw = Value::Object(settings.clone()).to_string();
        on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "INSERT INTO channel_settings (tenant_id, kind, settings, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant_id, kind) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
            )
            .bind(self.tenant.to_string())
            .bind(kind)
            .bind(&raw)
            .bind(self.store.now())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Removes the settings of the channel `kind`; whether there were any.
    pub async fn remove(&self, kind: &str) -> Result<bool> {
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query("DELETE FROM channel_settings WHERE tenant_id = $1 AND kind = $2")
                .bind(self.tenant.to_string())
                .bind(kind)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done > 0)
    }
}
