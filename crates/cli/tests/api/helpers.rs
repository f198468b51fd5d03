//! `spawn_app()` and one helper per endpoint.

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

pub struct TestApp {
    pub address: String,
    pub state: AppState,
    pub client: reqwest::Client,
    pub dir: TempDir,
    pub registry: Arc<JobRegistry>,
    pub worker_config: WorkerConfig,
    pub shutdown: CancellationToken,
    pub server: Option<JoinHandle<anyhow::Result<()>>>,
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
    clock: Option<Arc<dyn crmhub_core::Clock>>,
}

pub fn spawn() -> Spawn {
    LazyLock::force(&TRACING);
    let dir = tempfile::tempdir().expect("temp dir");
    Spawn { settings: test_settings(&dir), dir, handlers: Vec::new(), clock: None }
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

    pub fn clock(mut self, clock: Arc<dyn crmhub_core::Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    pub async fn start(self) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut builder = Application::builder(self.settings).listener(listener);
        if let Some(clock) = self.clock {
            builder = builder.clock(clock);
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

    /// Stops the application gracefully, waits for it, and hands back its data directory.
    pub async fn stop(mut self) -> TempDir {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("clean shutdown");
        }
        self.dir
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

/// Opens the database a stopped application left in `dir`.
pub async fn reopen_store(dir: &TempDir) -> Store {
    let settings = test_settings(dir);
    Store::open(settings.store_options(Arc::new(crmhub_core::SystemClock)).unwrap()).await.expect("reopen")
}

pub fn tenant_id(tenant: &Value) -> crmhub_core::TenantId {
    tenant["id"].as_str().expect("tenant id").parse().expect("uuid")
}
