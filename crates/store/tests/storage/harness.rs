//! Fresh databases for each test, and cleanup even when a test fails.

use std::path::PathBuf;
use std::sync::Arc;

use crmhub_core::clock::ManualClock;
use crmhub_core::{Clock, ConnectionName, ConnectorKind, Credentials, Host, Secret, TenantName, TenantSlug};
use crmhub_store::connections::{Connection, NewConnection};
use crmhub_store::tenants::{NewTenant, Tenant};
use crmhub_store::{DatabaseUrl, MasterKey, MasterKeySource, Store, StoreOptions};
use sqlx::Connection as _;
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Sqlite,
    Postgres,
}

pub fn postgres_url() -> Option<String> {
    std::env::var("CRMHUB_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty())
}

/// One test database: a temp SQLite file or a `t_<uuid>` PostgreSQL database dropped on Drop.
pub struct TestDb {
    pub url: DatabaseUrl,
    pub dir: TempDir,
    pub key: MasterKey,
    pub clock: ManualClock,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(which: Which) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, pg) = match which {
            Which::Sqlite => (DatabaseUrl::sqlite_file(dir.path().join("crmhub.db")), None),
            Which::Postgres => {
                let admin_url = postgres_url().expect(
                    "CRMHUB_TEST_DATABASE_URL is not set; the PostgreSQL tests need it (see README, Development)",
                );
                let name = format!("t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
                    let at = DatabaseUrl::parse(&admin_url).map(|u| u.describe()).unwrap_or_default();
                    panic!("CRMHUB_TEST_DATABASE_URL is set but PostgreSQL at {at} is unreachable: {e}")
                });
                sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await.expect("create db");
                conn.close().await.ok();
                let url = crmhub_store::postgres_url_with_database(&admin_url, &name);
                (DatabaseUrl::parse(&url).expect("pg url"), Some((admin_url, name)))
            }
        };
        Self { url, dir, key: MasterKey::generate(), clock: ManualClock::new(1_700_000_000_000), pg }
    }

    pub fn options(&self, key: MasterKeySource) -> StoreOptions {
        let mut options = StoreOptions::new(self.url.clone(), key);
        options.clock = Arc::new(self.clock.clone()) as Arc<dyn Clock>;
        options.max_connections = 5;
        options
    }

    pub async fn open(&self) -> Store {
        Store::open(self.options(MasterKeySource::Given(self.key.clone()))).await.expect("open store")
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("master.key")
    }

    /// Files belonging to the SQLite database (main, WAL, shared memory).
    pub fn sqlite_files(&self) -> Vec<PathBuf> {
        let base = self.dir.path().join("crmhub.db");
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| PathBuf::from(format!("{}{suffix}", base.display())))
            .filter(|p| p.exists())
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.pg.take() else { return };
        // Drop runs outside any runtime we may block on; a helper thread gets its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut conn).await.ok()
            })
        })
        .join();
    }
}

pub async fn tenant(store: &Store, slug: &str) -> Tenant {
    store
        .tenants()
        .create(NewTenant {
            slug: TenantSlug::parse(slug).unwrap(),
            name: TenantName::parse(&format!("Tenant {slug}")).unwrap(),
            phone_region: None,
            settings: Default::default(),
        })
        .await
        .expect("create tenant")
}

pub fn credentials(pairs: &[(&str, &str)]) -> Credentials {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), Secret::new(*v))).collect()
}

pub async fn connection(store: &Store, tenant: &Tenant, name: &str, secret: &str) -> Connection {
    store
        .connections(tenant.id)
        .create(NewConnection {
            name: ConnectionName::parse(name).unwrap(),
            kind: ConnectorKind::Vtiger,
            host: Host::parse("https://crm.example.com").unwrap(),
            fields: serde_json::json!({"username": "admin"}).as_object().unwrap().clone(),
            credentials: credentials(&[("access_key", secret)]),
            template_version: None,
            details: Default::default(),
        })
        .await
        .expect("create connection")
}
