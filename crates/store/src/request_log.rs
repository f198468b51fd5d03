//! Per-connection log of outbound calls. Entries arrive already redacted from the HTTP client;
//! this module stores them in batches and keeps the log within its retention limits.

use std::collections::HashSet;

use crmhub_core::request_log::RequestLogEntry;
use crmhub_core::{ConnectionId, TenantId, UnixMillis};
use serde::Serialize;

use crate::db::{Tx, finish, on_pool, on_tx};
use crate::rows::parse_id;
use crate::{Result, Store, StoreError};

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
    ///
    /// A busy gateway logs tens of thousands of calls a second, so a batch goes in as few
    /// multi-row statements, after one read of which of its tenants still exist.
    pub async fn append_request_log(&self, entries: &[RequestLogEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        // On PostgreSQL a tenant deleted between the read and the insert fails the insert's
        // foreign key; the second round reads the tenants again and skips it.
        let mut retried = false;
        loop {
            let mut tx = self.begin().await?;
            let result = append_request_log_in(&mut tx, entries).await;
            match finish(tx, result).await {
                Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_foreign_key_violation() && !retried => {
                    retried = true;
                }
                other => return other,
            }
        }
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

/// Rows of one multi-row insert: 11 parameters each, well inside both backends' limits.
const ROWS_PER_INSERT: usize = 200;

async fn append_request_log_in(tx: &mut Tx, entries: &[RequestLogEntry]) -> Result<()> {
    let tenants: HashSet<TenantId> = entries.iter().map(|e| e.tenant_id).collect();
    let existing: Vec<String> = on_tx!(tx, |conn| {
        let mut query = sqlx::QueryBuilder::new("SELECT id FROM tenants WHERE id IN (");
        let mut list = query.separated(", ");
        for tenant in &tenants {
            list.push_bind(tenant.to_string());
        }
        list.push_unseparated(")");
        query.build_query_scalar::<String>().fetch_all(&mut *conn).await
    })?;
    let existing: HashSet<TenantId> = existing.iter().map(|id| parse_id("tenant", id)).collect::<Result<_>>()?;
    let kept: Vec<&RequestLogEntry> = entries.iter().filter(|e| existing.contains(&e.tenant_id)).collect();
    for chunk in kept.chunks(ROWS_PER_INSERT) {
        on_tx!(tx, |conn| {
            let mut query = sqlx::QueryBuilder::new(
                "INSERT INTO request_log (tenant_id, connection_id, at, method, url, status, latency_ms, outcome, \
                 request_body, response_body, error) ",
            );
            query.push_values(chunk, |mut row, e| {
                row.push_bind(e.tenant_id.to_string())
                    .push_bind(e.connection_id.to_string())
                    .push_bind(e.at)
                    .push_bind(e.method.as_str())
                    .push_bind(e.url.as_str())
                    .push_bind(e.status.map(i32::from))
                    .push_bind(e.latency_ms)
                    .push_bind(e.outcome.as_str())
                    .push_bind(e.request_body.as_deref())
                    .push_bind(e.response_body.as_deref())
                    .push_bind(e.error.as_deref());
            });
            query.build().execute(&mut *conn).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}
