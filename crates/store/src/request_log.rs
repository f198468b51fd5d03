//! Per-connection log of outbound calls. Entries arrive already redacted from the HTTP client;
//! this module stores them in batches and keeps the log within its retention limits.

use crmhub_core::request_log::RequestLogEntry;
use crmhub_core::{ConnectionId, TenantId, UnixMillis};
use serde::Serialize;

use crate::db::{on_pool, on_tx};
use crate::rows::parse_id;
use crate::{Result, Store};

/// A stored entry as the admin API and portal show it.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    pub id: i64,
    pub connection_id: ConnectionId,
    pub at: UnixMillis,
    pub method: String,
    pub url: String,
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub outcome: String,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct LoggedRow {
    id: i64,
    connection_id: String,
    at: i64,
    method: String,
    url: String,
    status: Option<i32>,
    latency_ms: i64,
    outcome: String,
    request_body: Option<String>,
    response_body: Option<String>,
    error: Option<String>,
}

pub struct RequestLog<'a> {
    store: &'a Store,
    tenant: TenantId,
}

impl Store {
    pub fn request_log(&self, tenant: TenantId) -> RequestLog<'_> {
        RequestLog { store: self, tenant }
    }

    /// Writes a batch from the log writer. Entries carry their own tenant; an entry whose tenant
    /// was deleted meanwhile is skipped rather than failing the batch.
    pub async fn append_request_log(&self, entries: &[RequestLogEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for e in entries {
            on_tx!(&mut tx, |conn| {
                sqlx::query(
                    "INSERT INTO request_log (tenant_id, connection_id, at, method, url, status, latency_ms, outcome, \
                     request_body, response_body, error) \
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $1)",
                )
                .bind(e.tenant_id.to_string())
                .bind(e.connection_id.to_string())
                .bind(e.at)
                .bind(&e.method)
                .bind(&e.url)
                .bind(e.status.map(i32::from))
                .bind(e.latency_ms)
                .bind(&e.outcome)
                .bind(e.request_body.as_deref())
                .bind(e.response_body.as_deref())
                .bind(e.error.as_deref())
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected())
            })?;
        }
        tx.commit().await
    }

    /// Applies retention: entries older than `older_than`, and beyond the newest
    /// `keep_per_connection` of each connection, are deleted. Returns how many went.
    pub async fn prune_request_log(&self, older_than: UnixMillis, keep_per_connection: u32) -> Result<u64> {
        let by_age = on_pool!(&self.db, |pool| {
            sqlx::query("DELETE FROM request_log WHERE at < $1")
                .bind(older_than)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        let by_count = on_pool!(&self.db, |pool| {
            sqlx::query(
                "DELETE FROM request_log WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER \
                 (PARTITION BY connection_id ORDER BY id DESC) AS rank FROM request_log) ranked WHERE rank > $1)",
            )
            .bind(i64::from(keep_per_connection))
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(by_age + by_count)
    }
}

impl RequestLog<'_> {
    /// Retention for this tenant only: entries older than `older_than`, and beyond the newest
    /// `keep_per_connection` of each of its connections.
    pub async fn prune(&self, older_than: UnixMillis, keep_per_connection: u32) -> Result<u64> {
        let tenant = self.tenant.to_string();
        let by_age = on_pool!(&self.store.db, |pool| {
            sqlx::query("DELETE FROM request_log WHERE tenant_id = $1 AND at < $2")
                .bind(&tenant)
                .bind(older_than)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        let by_count = on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "DELETE FROM request_log WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER \
                 (PARTITION BY connection_id ORDER BY id DESC) AS rank FROM request_log WHERE tenant_id = $1) ranked \
                 WHERE rank > $2)",
            )
            .bind(&tenant)
            .bind(i64::from(keep_per_connection))
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(by_age + by_count)
    }

    /// The newest entries for one connection, newest first; `before` pages backwards by id.
    pub async fn list(&self, connection: ConnectionId, limit: u32, before: Option<i64>) -> Result<Vec<LoggedRequest>> {
        let rows: Vec<LoggedRow> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(
                "SELECT id, connection_id, at, method, url, status, latency_ms, outcome, request_body, response_body, \
                 error FROM request_log WHERE tenant_id = $1 AND connection_id = $2 AND ($3 IS NULL OR id < $3) \
                 ORDER BY id DESC LIMIT $4",
            )
            .bind(self.tenant.to_string())
            .bind(connection.to_string())
            .bind(before)
            .bind(i64::from(limit.clamp(1, 500)))
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter()
            .map(|r| {
                Ok(LoggedRequest {
                    id: r.id,
                    connection_id: parse_id("request_log", &r.connection_id)?,
                    at: r.at,
                    method: r.method,
                    url: r.url,
                    status: r.status.and_then(|s| u16::try_from(s).ok()),
                    latency_ms: r.latency_ms,
                    outcome: r.outcome,
                    request_body: r.request_body,
                    response_body: r.response_body,
                    error: r.error,
                })
            })
            .collect()
    }
}
