//! Idempotency keys: a client that sends a write twice with the same key (a retry after a lost
//! answer, a double click) gets the first answer again instead of a second write.
//!
//! A key is scoped by tenant and route. `begin` claims it with one upsert, so two instances
//! racing on one key never both own it: the row is inserted (or taken over, when it expired or
//! its owner crashed) by exactly one of them, and every other caller reads what is there.

use std::time::Duration;

use crmhub_core::TenantId;
use crmhub_core::clock::duration_millis;

use crate::db::on_pool;
use crate::{Result, Store, StoreError};

/// How long a `running` key may go without an answer before its owner is presumed dead (the
/// instance crashed mid-request) and the next request with the key runs it instead. Longer
/// than any route's time limit, so a live owner is never overtaken.
pub const STALE_AFTER: Duration = Duration::from_secs(120);

/// What `begin` found for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The caller owns the key: it must run the request, then `finish` or `abandon` it.
    Fresh,
    /// The request ran before with the same content; this was its answer.
    Replay { status: u16, body: String },
    /// The key was used for a request with different content.
    Mismatch,
    /// The same request is running elsewhere and has not answered yet.
    InFlight,
}

pub struct Idempotency<'a> {
    store: &'a Store,
    tenant: TenantId,
}

impl Store {
    pub fn idempotency(&self, tenant: TenantId) -> Idempotency<'_> {
        Idempotency { store: self, tenant }
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    request_hash: String,
    state: String,
    response_status: Option<i32>,
    response_body: Option<String>,
}

impl Idempotency<'_> {
    /// Claims `key` on `route` for a request whose content hashes to `request_hash`, to be kept
    /// for `ttl` once claimed. An expired row counts as absent; a `running` row of the same
    /// content older than `STALE_AFTER` is taken over.
    pub async fn begin(&self, route: &str, key: &str, request_hash: &str, ttl: Duration) -> Result<Begin> {
        let tenant = self.tenant.to_string();
        // A row deleted between the upsert and the read (its owner abandoned it) is claimed on
        // the next round; the bound only guards against a key abandoned over and over.
        for _ in 0..3 {
            let now = self.store.now();
            let claimed = on_pool!(&self.store.db, |pool| {
                sqlx::query(
                    "INSERT INTO idempotency_keys (tenant_id, route, key, request_hash, state, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, 'running', $5, $6) \
                     ON CONFLICT (tenant_id, route, key) DO UPDATE SET request_hash = excluded.request_hash, \
                     state = 'running', response_status = NULL, response_body = NULL, \
                     created_at = excluded.created_at, expires_at = excluded.expires_at \
                     WHERE idempotency_keys.expires_at <= $5 \
                     OR (idempotency_keys.state = 'running' AND idempotency_keys.request_hash = excluded.request_hash \
                         AND idempotency_keys.created_at <= $7)",
                )
                .bind(&tenant)
                .bind(route)
                .bind(key)
                .bind(request_hash)
                .bind(now)
                .bind(now.saturating_add(duration_millis(ttl)))
                .bind(now.saturating_sub(duration_millis(STALE_AFTER)))
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
            })
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound { entity: "tenant" },
                _ => StoreError::Database(e),
            })?;
            if claimed == 1 {
                return Ok(Begin::Fresh);
            }
            let row: Option<KeyRow> = on_pool!(&self.store.db, |pool| {
                sqlx::query_as(
                    "SELECT request_hash, state, response_status, response_body FROM idempotency_keys \
                     WHERE tenant_id = $1 AND route = $2 AND key = $3",
                )
                .bind(&tenant)
                .bind(route)
                .bind(key)
                .fetch_optional(pool)
                .await
            })?;
            let Some(row) = row else { continue };
            if row.request_hash != request_hash {
                return Ok(Begin::Mismatch);
            }
            return match (row.state.as_str(), row.response_status, row.response_body) {
                ("running", _, _) => Ok(Begin::InFlight),
                ("done", Some(status), Some(body)) => Ok(Begin::Replay {
                    status: u16::try_from(status)
                        .map_err(|_| StoreError::corrupt("idempotency key", key, format!("status {status}")))?,
                    body,
                }),
                (state, ..) => {
                    Err(StoreError::corrupt("idempotency key", key, format!("state {state:?} without an answer")))
                }
            };
        }
        Ok(Begin::InFlight)
    }

    /// Stores the answer of the request that owns `key`; repeats are answered with it until
    /// the key expires.
    pub async fn finish(&self, route: &str, key: &str, status: u16, body: &str) -> Result<()> {
        on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "UPDATE idempotency_keys SET state = 'done', response_status = $4, response_body = $5 \
                 WHERE tenant_id = $1 AND route = $2 AND key = $3 AND state = 'running'",
            )
            .bind(self.tenant.to_string())
            .bind(route)
            .bind(key)
            .bind(i32::from(status))
            .bind(body)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Releases a running `key` without an answer (the request failed in a way a retry may
    /// fix), so that the next request with it runs afresh.
    pub async fn abandon(&self, route: &str, key: &str) -> Result<()> {
        on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND route = $2 AND key = $3 AND state = 'running'",
            )
            .bind(self.tenant.to_string())
            .bind(route)
            .bind(key)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Deletes the tenant's keys that expired by `now`; returns how many.
    pub async fn prune(&self, now: crmhub_core::UnixMillis) -> Result<u64> {
        Ok(on_pool!(&self.store.db, |pool| {
            sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND expires_at <= $2")
                .bind(self.tenant.to_string())
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?)
    }
}
