//! A PostgreSQL database of a bench's own, created for a run and dropped after it (shared by
//! the benches with PostgreSQL rows through `#[path]`).

use std::time::Duration;

use anyhow::Context;

/// Where a run's database is created when `CRMHUB_BENCH_DATABASE_URL` is not set.
const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database of its own on the PostgreSQL server, dropped by [`PgDatabase::drop_database`].
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        use sqlx::Connection as _;
        let admin_url =
            std::env::var("CRMHUB_BENCH_DATABASE_URL").ok().filter(|u| !u.is_empty()).unwrap_or(PG_ADMIN_URL.into());
        let mut conn = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&admin_url))
            .await
            .context("PostgreSQL did not answer in 5 s")?
            .context("PostgreSQL is unreachable (set CRMHUB_BENCH_DATABASE_URL)")?;
        let name = format!("bench_{}", crmhub_core::TenantId::new().to_string().replace('-', ""));
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await?;
        conn.close().await.ok();
        Ok(Self { url: crmhub_store::postgres_url_with_database(&admin_url, &name), admin_url, name })
    }

    pub async fn drop_database(self) {
        use sqlx::Connection as _;
        let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await else {
            println!("could not drop database {}: PostgreSQL unreachable", self.name);
            return;
        };
        let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        if let Err(e) = sqlx::query(&drop).execute(&mut conn).await {
            println!("could not drop database {}: {e}", self.name);
        }
        conn.close().await.ok();
    }
}
