//! `CallMapStore` on the database (table `call_maps`), its retention, and the move of the maps
//! that earlier versions kept in `auth_state`.

use crmhub_core::call_map::{CallMapError, CallMapStore, CallRecord};
use crmhub_core::crm::CallStage;
use crmhub_core::{ConnectionId, TenantId, UnixMillis};

use crate::db::on_pool;
use crate::{Result, Store};

fn failed(e: impl std::fmt::Display) -> CallMapError {
    CallMapError(e.to_string())
}

fn stage_name(stage: CallStage) -> &'static str {
    match stage {
        CallStage::Answered => "answered",
        CallStage::Ended => "ended",
    }
}

fn stage_of(name: &str) -> Option<CallStage> {
    match name {
        "answered" => Some(CallStage::Answered),
        "ended" => Some(CallStage::Ended),
        _ => None,
    }
}

#[async_trait::async_trait]
impl CallMapStore for Store {
    async fn get(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
        call_id: &str,
    ) -> Result<Option<CallRecord>, CallMapError> {
        let row: Option<(String, String)> = on_pool!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT record_id, stage FROM call_maps WHERE tenant_id = $1 AND connection_id = $2 AND call_id = $3",
            )
            .bind(tenant.to_string())
            .bind(connection.to_string())
            .bind(call_id)
            .fetch_optional(pool)
            .await
        })
        .map_err(failed)?;
        Ok(row.and_then(|(record_id, stage)| Some(CallRecord { record_id, stage: stage_of(&stage)? })))
    }

    async fn put(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
        call_id: &str,
        record: &CallRecord,
    ) -> Result<(), CallMapError> {
        let now = self.now();
        on_pool!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO call_maps (tenant_id, connection_id, call_id, record_id, stage, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, connection_id, call_id) \
                 DO UPDATE SET record_id = excluded.record_id, stage = excluded.stage, updated_at = excluded.updated_at",
            )
            .bind(tenant.to_string())
            .bind(connection.to_string())
            .bind(call_id)
            .bind(&record.record_id)
            .bind(stage_name(record.stage))
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(failed)?;
        Ok(())
    }
}

impl Store {
    /// Forgets the tenant's call maps not touched since `cutoff`: a call's events arrive within
    /// hours, so an old map only grows the table.
    pub async fn prune_call_maps(&self, tenant: TenantId, cutoff: UnixMillis) -> Result<u64> {
        Ok(on_pool!(&self.db, |pool| {
            sqlx::query("DELETE FROM call_maps WHERE tenant_id = $1 AND updated_at < $2")
                .bind(tenant.to_string())
                .bind(cutoff)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?)
    }

    /// Moves the call maps earlier versions sealed into `auth_state` (keys
    /// `template-state:{tenant}:{connection}:call:{call id}`) into `call_maps`; maps of
    /// connections that are gone, or that had no connection, are dropped.
    pub(crate) async fn move_legacy_call_maps(&self) -> Result<()> {
        let rows: Vec<(String, String)> = on_pool!(&self.db, |pool| {
            sqlx::query_as("SELECT key, sealed FROM auth_state WHERE key LIKE 'template-state:%:call:%'")
                .fetch_all(pool)
                .await
        })?;
        for (key, sealed) in rows {
            if let Some((tenant, connection, call_id, record)) = self.legacy_call_map(&key, &sealed) {
                let exists: Option<String> = on_pool!(&self.db, |pool| {
                    sqlx::query_scalar("SELECT id FROM connections WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.to_string())
                        .bind(connection.to_string())
                        .fetch_optional(pool)
                        .await
                })?;
                if exists.is_some() {
                    CallMapStore::put(self, tenant, connection, &call_id, &record)
                        .await
                        .map_err(|e| crate::StoreError::corrupt("call map", &key, e))?;
                }
            }
            on_pool!(&self.db, |pool| {
                sqlx::query("DELETE FROM auth_state WHERE key = $1")
                    .bind(&key)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            })?;
        }
        Ok(())
    }

    fn legacy_call_map(&self, key: &str, sealed: &str) -> Option<(TenantId, ConnectionId, String, CallRecord)> {
        let rest = key.strip_prefix("template-state:")?;
        let (owner, call_id) = rest.split_once(":call:")?;
        let (tenant, connection) = owner.split_once(':')?;
        let plain = self.vault.open_string(sealed, &crate::auth_state::seal_context(key)).ok()?;
        let record: CallRecord = serde_json::from_str(plain.as_str()).ok()?;
        Some((tenant.parse().ok()?, connection.parse().ok()?, call_id.to_owned(), record))
    }
}
