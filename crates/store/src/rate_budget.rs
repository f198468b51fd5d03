//! `SharedRateBudget` on the database. PostgreSQL keeps one token bucket row per key and takes
//! tokens with one locked read-refill-write statement, so every instance spends one budget.
//! SQLite serves one instance, whose in-process buckets already hold the whole budget: there a
//! take grants what is asked.

use std::time::Duration;

use crmhub_core::rate_budget::{BudgetGrant, RateBudgetError, SharedRateBudget};

use crate::Store;
use crate::db::Db;

fn failed(e: sqlx::Error) -> RateBudgetError {
    RateBudgetError(e.to_string())
}

/// The database's clock in Unix milliseconds, read once per statement.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint";

#[async_trait::async_trait]
impl SharedRateBudget for Store {
    async fn take(&self, key: &str, per_second: f64, burst: u32, want: u32) -> Result<BudgetGrant, RateBudgetError> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(BudgetGrant { granted: want, retry_in: Duration::ZERO });
        };
        let (per_second, burst) = (per_second.max(0.001), f64::from(burst.max(1)));
        // A new bucket starts full.
        sqlx::query(&format!(
            "INSERT INTO rate_budget (key, tokens, updated_at) VALUES ($1, $2, {NOW_MS}) ON CONFLICT (key) DO NOTHING"
        ))
        .bind(key)
        .bind(burst)
        .execute(pool)
        .await
        .map_err(failed)?;
        let (granted, available): (f64, f64) = sqlx::query_as(&format!(
            "WITH now AS (SELECT {NOW_MS} AS ms), \
             cur AS (SELECT LEAST($2, tokens + GREATEST(0, now.ms - updated_at) * $3 / 1000.0) AS avail, now.ms \
                     FROM rate_budget, now WHERE key = $1 FOR UPDATE OF rate_budget) \
             UPDATE rate_budget SET tokens = cur.avail - LEAST($4, FLOOR(cur.avail)), updated_at = cur.ms \
             FROM cur WHERE key = $1 \
             RETURNING LEAST($4, FLOOR(cur.avail))::float8, cur.avail::float8"
        ))
        .bind(key)
        .bind(burst)
        .bind(per_second)
        .bind(f64::from(want))
        .fetch_one(pool)
        .await
        .map_err(failed)?;
        let granted = granted.max(0.0) as u32;
        let retry_in = if granted > 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(((1.0 - available) / per_second).max(0.001))
        };
        Ok(BudgetGrant { granted, retry_in })
    }
}
