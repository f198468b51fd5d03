//! `spawn_app()` and one helper per endpoint.
//!
//! Each app gets a fresh database: a SQLite file in its temp dir, or, when
//! `CRMHUB_TEST_APP_BACKEND=postgres`, a fresh `a_<uuid>` database on the server named by
//! `CRMHUB_TEST_DATABASE_URL`, dropped when the last app using it is gone. The tests about
//! SQLite's files (secrets at rest, an emptied database, key rotation) run the `crmhub` binary
//! on its default data directory, so they stay on SQLite in both runs.

use std::sync::{Arc, LazyLock};

use crmhub_server::jobs::{DrainReport, JobHandler, JobRegistry, WorkerConfig};
use crmhub_server::{AppState, Application, Settings};
use crmhub_store::Store;
use reqwest::Response;
use serde_json::Value;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// Logs go to the test output only with TEST_LOG=1.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = crmhub_server::telemetry::init(crmhub_server::config::LogFormat::Pretty, "debug", std::io::stdout);
    }
});

/// `CRMHUB_TEST_APP_BACKEND=postgres`: the suite runs on PostgreSQL.
pub fn on_postgres() -> bool {
    match std::env::var("CRMHUB_TEST_APP_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("CRMHUB_TEST_APP_BACKEND={other:?}: use sqlite or postgres"),
    }
}

/// The backend name the app reports (`/readyz`) in this run of the suite.
pub fn backend_name() -> &'static str {
    if on_postgres() { "postgres" } else { "sqlite" }
}

/// A fresh PostgreSQL database under `CRMHUB_TEST_DATABASE_URL`, dropped on Drop.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Arc<Self> {
        use sqlx::Connection as _;
        let admin_url = std::env::var("CRMHUB_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .expect("CRMHUB_TEST_DATABASE_URL is not set; the PostgreSQL tests need it (see README, Development)");
        let name = format!("a_{}", uuid_simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            let at = crmhub_store::DatabaseUrl::parse(&admin_url).map(|u| u.describe()).unwrap_or_default();
            panic!("CRMHUB_TEST_DATABASE_URL is set but PostgreSQL at {at} is unreachable: {e}")
        });
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await.expect("create database");
        conn.close().await.ok();
        Arc::new(Self { url: crmhub_store::postgres_url_with_database(&admin_url, &name), admin_url, name })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        use sqlx::Connection as _;
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside a runtime we must not block; a helper thread gets its own.
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

fn uuid_simple() -> String {
    crmhub_core::TenantId::new().to_string().replace('-', "")
}

pub struct TestApp {
    pub address: String,
    pub state: AppState,
    pub client: reqwest::Client,
    pub dir: TempDir,
    pub registry: Arc<JobRegistry>,
    pub worker_config: WorkerConfig,
    pub shutdown: CancellationToken,
    pub server: Option<JoinHandle<anyhow::Result<()>>>,
    pub settings: Settings,
    /// The PostgreSQL database this app runs on, if any.
    pub database: Option<Arc<PgDatabase>>,
}

/// A stopped app: its data directory (master key, SQLite files) and its database, kept until
/// this is dropped.
pub struct StoppedApp {
    _dir: TempDir,
    settings: Settings,
    _database: Option<Arc<PgDatabase>>,
}

pub fn test_settings(dir: &TempDir) -> Settings {
    let mut settings = Settings::defaults().expect("defaults");
    settings.data_dir = dir.path().to_path_buf();
    settings.server.listen = "127.0.0.1:0".into();
    settings.admin.token = ADMIN_TOKEN.into();
    settings.outbound.allow_private = vec!["127.0.0.1/32".into()];
    settings.jobs.poll_interval_ms = 20;
    settings.server.shutdown_grace_secs = 5;
    settings
}

pub struct Spawn {
    pub settings: Settings,
    dir: TempDir,
    handlers: Vec<(String, Arc<dyn JobHandler>)>,
    sync_destinations: Option<Arc<dyn crmhub_server::sync::DestinationResolver>>,
    clock: Option<Arc<dyn crmhub_core::Clock>>,
    database: Database,
}

enum Database {
    /// The suite's backend (`CRMHUB_TEST_APP_BACKEND`).
    Default,
    Postgres(Arc<PgDatabase>),
}

pub fn spawn() -> Spawn {
    LazyLock::force(&TRACING);
    let dir = tempfile::tempdir().expect("temp dir");
    Spawn {
        settings: test_settings(&dir),
        dir,
        handlers: Vec::new(),
        sync_destinations: None,
        clock: None,
        database: Database::Default,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn().start().await
}

impl Spawn {
    pub fn configure(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        f(&mut self.settings);
        self
    }

    pub fn job_handler(mut self, kind: &str, handler: Arc<dyn JobHandler>) -> Self {
        self.handlers.push((kind.to_owned(), handler));
        self
    }

    /// Where sync pipelines write (a wrapper that fails on demand, say).
    pub fn sync_destinations(mut self, destinations: Arc<dyn crmhub_server::sync::DestinationResolver>) -> Self {
        self.sync_destinations = Some(destinations);
        self
    }

    pub fn clock(mut self, clock: Arc<dyn crmhub_core::Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// This PostgreSQL database, e.g. one shared by several apps.
    pub fn postgres(mut self, database: Arc<PgDatabase>) -> Self {
        self.database = Database::Postgres(database);
        self
    }

    pub async fn start(mut self) -> TestApp {
        let database = match std::mem::replace(&mut self.database, Database::Default) {
            Database::Postgres(db) => Some(db),
            Database::Default if on_postgres() => Some(PgDatabase::create().await),
            Database::Default => None,
        };
        if let Some(db) = &database {
            self.settings.database.url = db.url.clone();
        }
        let settings = self.settings.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut builder = Application::builder(self.settings).listener(listener);
        if let Some(clock) = self.clock {
            builder = builder.clock(clock);
        }
        if let Some(destinations) = self.sync_destinations {
            builder = builder.sync_destinations(destinations);
        }
        for (kind, handler) in self.handlers {
            builder = builder.job_handler(&kind, handler);
        }
        let app = builder.build().await.expect("application builds");
        TestApp {
            address: format!("http://{}", app.local_addr()),
            state: app.state().clone(),
            client: reqwest::Client::new(),
            registry: app.job_registry(),
            worker_config: app.worker_config(),
            shutdown: app.shutdown_token(),
            dir: self.dir,
            server: Some(tokio::spawn(app.run_until_stopped())),
            settings,
            database,
        }
    }
}

impl TestApp {
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Runs every runnable job now and reports what is left.
    pub async fn drain_jobs(&self) -> DrainReport {
        crmhub_server::jobs::drain(
            self.store(),
            self.registry.clone(),
            self.worker_config.clone(),
            self.state.metrics.clone(),
        )
        .await
    }

    /// Stops the application gracefully, waits for it, and hands back its data directory
    /// (and database).
    pub async fn stop(mut self) -> StoppedApp {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("clean shutdown");
        }
        StoppedApp { _dir: self.dir, settings: self.settings, _database: self.database }
    }

    pub async fn admin_get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).bearer_auth(ADMIN_TOKEN).send().await.expect("request")
    }

    pub async fn admin_delete(&self, path: &str) -> Response {
        self.client.delete(self.url(path)).bearer_auth(ADMIN_TOKEN).send().await.expect("request")
    }

    pub async fn admin_send(&self, method: reqwest::Method, path: &str, body: &Value) -> Response {
        self.client.request(method, self.url(path)).bearer_auth(ADMIN_TOKEN).json(body).send().await.expect("request")
    }

    pub async fn post_tenant(&self, body: &Value) -> Response {
        self.admin_send(reqwest::Method::POST, "/admin/v1/tenants", body).await
    }

    pub async fn create_tenant(&self, slug: &str) -> Value {
        let response = self.post_tenant(&serde_json::json!({"slug": slug, "name": format!("Tenant {slug}")})).await;
        assert_eq!(response.status(), 201, "creating tenant {slug}");
        response.json().await.unwrap()
    }

    pub async fn post_connection(&self, slug: &str, body: &Value) -> Response {
        self.admin_send(reqwest::Method::POST, &format!("/admin/v1/tenants/{slug}/connections"), body).await
    }

    /// Creates a connection and returns its id.
    pub async fn create_connection(&self, slug: &str, body: &Value) -> String {
        let response = self.post_connection(slug, body).await;
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 201, "creating connection {body}: {answer}");
        answer["id"].as_str().unwrap().to_owned()
    }

    pub async fn get_connection(&self, slug: &str, id: &str) -> Response {
        self.admin_get(&format!("/admin/v1/tenants/{slug}/connections/{id}")).await
    }

    /// The connection's request log once it holds at least `entries` (it is written in the
    /// background, in batches).
    pub async fn wait_for_request_log(&self, connection: &str, entries: usize) -> Value {
        let path = format!("/admin/v1/tenants/acme/connections/{connection}/requests");
        for _ in 0..100 {
            let log: Value = self.admin_get(&path).await.json().await.unwrap();
            if log["requests"].as_array().is_some_and(|r| r.len() >= entries) {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the request log of {connection} never reached {entries} entries");
    }

    pub async fn get_metrics(&self) -> String {
        self.client.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }
}

/// The error envelope: `(code, message)`.
pub async fn error_of(response: Response) -> (String, String, Option<String>) {
    let body: Value = response.json().await.expect("JSON error body");
    let error = &body["error"];
    (
        error["code"].as_str().expect("code").to_owned(),
        error["message"].as_str().expect("message").to_owned(),
        error["field"].as_str().map(str::to_owned),
    )
}

/// Opens the database a stopped application left behind.
pub async fn reopen_store(stopped: &StoppedApp) -> Store {
    let options = stopped.settings.store_options(Arc::new(crmhub_core::SystemClock)).unwrap();
    Store::open(options).await.expect("reopen")
}

pub fn tenant_id(tenant: &Value) -> crmhub_core::TenantId {
    tenant["id"].as_str().expect("tenant id").parse().expect("uuid")
}

/// A template that can show a contact card but has no auth chain, check or search endpoint.
pub const CARD_ONLY_TEMPLATE: &str = r#"
name: card-only
type: crm
fields: [{ name: token, secret: true, required: true }]
contact: { id: /id, name: /name }
endpoints:
  - name: contact
    kind: get_data
    trigger: contact.get
    url: "{{host}}/contacts/{id}"
    parameters:
      - { name: id, kind: path, value: "{{input.id}}" }
      - { name: Authorization, kind: header, value: "Bearer {{credential.token}}" }
    response: { record: /data }
"#;

impl TestApp {
    /// An admin POST with a raw body of `content_type` (templates are YAML or JSON text).
    pub async fn admin_post_raw(&self, path: &str, content_type: &str, body: &str) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// Publishes a YAML template for every tenant; panics unless it is created.
    pub async fn publish_template(&self, source: &str) {
        let response = self.admin_post_raw("/admin/v1/templates", "application/yaml", source).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    }
}
