//! Building and running the application: one process that serves the API, runs workers, or
//! both, as configured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use crmhub_core::{Clock, Secret, SystemClock};
use crmhub_store::Store;
use crmhub_store::settings::hash_admin_token;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::jobs::{JobContext, JobHandler, JobRegistry, WorkerConfig, WorkerPool};
use crate::metrics;
use crate::middleware::{self, RouteTimeout};
use crate::request_log_writer::RequestLogWriter;
use crate::state::AppState;
use crate::{admin, channels, kommo, maintenance, ops};

/// Options beyond the configuration file: what tests and embedders substitute.
pub struct ApplicationBuilder {
    settings: Settings,
    listener: Option<TcpListener>,
    clock: Arc<dyn Clock>,
    /// Kinds added by tests and embedders, beside the product's own.
    handlers: Vec<(String, Arc<dyn JobHandler>)>,
    extra_routes: Option<Router<AppState>>,
    /// Where sync pipelines write (tests substitute an in-memory list).
    destinations: Arc<dyn crate::sync::DestinationResolver>,
}

impl ApplicationBuilder {
    pub fn sync_destinations(mut self, destinations: Arc<dyn crate::sync::DestinationResolver>) -> Self {
        self.destinations = destinations;
        self
    }

    /// Serve on an already bound listener (tests bind `127.0.0.1:0`).
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn job_handler(mut self, kind: &str, handler: Arc<dyn JobHandler>) -> Self {
        self.handlers.push((kind.to_owned(), handler));
        self
    }

    /// Routes served beside crmhub's own (the demo mounts its simulators here).
    pub fn extra_routes(mut self, routes: Router<AppState>) -> Self {
        self.extra_routes = Some(routes);
        self
    }

    pub async fn build(self) -> anyhow::Result<Application> {
        let (state, log_writer) = AppState::build(self.settings, self.clock).await?;
        let generated_admin_token = bootstrap_admin_token(&state.store, &state.settings).await?;
        let listener = match self.listener {
            Some(listener) => listener,
            None => {
                let addr = state.settings.listen_addr()?;
                TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?
            }
        };
        let local_addr = listener.local_addr()?;
        let router = router(&state, self.extra_routes);
        // Handlers get the application they run in; the product's job kinds come first, so a
        // test may replace one.
        let mut registry = JobRegistry::new(JobContext::new(&state));
        maintenance::register(&mut registry, &state.settings);
        channels::calls::register_jobs(&mut registry);
        crate::sync::register_jobs(&mut registry, self.destinations.clone());
        kommo::register_jobs(&mut registry);
        for (kind, handler) in self.handlers {
            registry.register(&kind, handler);
        }
        Ok(Application {
            listener,
            local_addr,
            router,
            state,
            registry: Arc::new(registry),
            generated_admin_token,
            shutdown: CancellationToken::new(),
            log_writer,
        })
    }
}

/// Every route with the shared stack. From the outside in: the request id (a usable
/// `X-Request-Id`, else a generated one, echoed back), the request's tracing span, metrics and
/// the access log line, the body limit, then each route class's time limit. Unknown routes and
/// wrong methods answer in the API's JSON error shape (the channels' own routes in theirs).
fn router(state: &AppState, extra: Option<Router<AppState>>) -> Router {
    let server = &state.settings.server;
    let mut routes = ops::router();
    if server.role.runs_api() {
        routes = routes.merge(admin::router()).merge(channels::admin_router()).merge(kommo::admin_router());
    }
    if let Some(extra) = extra {
        routes = routes.merge(extra);
    }
    let admin_limit =
        RouteTimeout { after: Duration::from_millis(server.admin_timeout_ms), answer: middleware::admin_timeout };
    routes = routes.layer(axum::middleware::from_fn_with_state(admin_limit, middleware::timeout));
    if server.role.runs_api() {
        routes = routes.merge(channels::router(server)).merge(kommo::router());
    }
    routes
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .layer(DefaultBodyLimit::max(server.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.metrics.clone(), metrics::track))
        .layer(TraceLayer::new_for_http().make_span_with(middleware::request_span::<Body>).on_failure(()))
        .layer(PropagateRequestIdLayer::new(middleware::REQUEST_ID))
        .layer(SetRequestIdLayer::new(middleware::REQUEST_ID, middleware::GenerateRequestId))
        .layer(axum::middleware::map_request(middleware::drop_unusable_request_id))
        .with_state(state.clone())
}

/// The configured token wins; otherwise the first start of an installation makes one, and
/// only its hash is kept.
async fn bootstrap_admin_token(store: &Store, settings: &Settings) -> anyhow::Result<Option<Secret>> {
    if !settings.admin.token.is_empty() {
        store.set_admin_token_hash(&hash_admin_token(&settings.admin.token)).await?;
        return Ok(None);
    }
    if store.admin_token_hash().await?.is_some() {
        return Ok(None);
    }
    let token = Secret::generate();
    Ok(store.init_admin_token_hash(&hash_admin_token(token.expose())).await?.then_some(token))
}

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    state: AppState,
    registry: Arc<JobRegistry>,
    generated_admin_token: Option<Secret>,
    shutdown: CancellationToken,
    log_writer: RequestLogWriter,
}

impl Application {
    pub fn builder(settings: Settings) -> ApplicationBuilder {
        ApplicationBuilder {
            settings,
            listener: None,
            clock: Arc::new(SystemClock),
            handlers: Vec::new(),
            extra_routes: None,
            destinations: Arc::new(crate::sync::UnisenderDestinations),
        }
    }

    /// Builds with defaults for everything not in `settings`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::builder(settings).build().await
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn job_registry(&self) -> Arc<JobRegistry> {
        self.registry.clone()
    }

    /// The admin token made at this installation's first start, to show the operator once.
    pub fn take_generated_admin_token(&mut self) -> Option<Secret> {
        self.generated_admin_token.take()
    }

    /// Cancel it to stop the application gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn worker_config(&self) -> WorkerConfig {
        let jobs = &self.state.settings.jobs;
        WorkerConfig {
            concurrency: jobs.concurrency,
            poll_interval: Duration::from_millis(jobs.poll_interval_ms.max(10)),
            job_timeout: Duration::from_secs(jobs.job_timeout_secs),
            lease: Duration::from_secs(jobs.lease_secs),
            backoff_base: Duration::from_secs(jobs.backoff_base_secs),
            backoff_max: Duration::from_secs(jobs.backoff_max_secs),
        }
    }

    /// Serves until the shutdown token is cancelled; then stops taking requests and jobs,
    /// gives in-flight work the grace period, releases what is left and flushes the logs.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let settings = self.state.settings.clone();
        let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
        let role = settings.server.role;
        let maintenance_stop = CancellationToken::new();
        let (workers, housekeeping) = if role.runs_workers() {
            let pool = WorkerPool::start(
                self.state.store.clone(),
                self.registry.clone(),
                self.worker_config(),
                self.state.metrics.clone(),
                self.state.jobs_wake.clone(),
            );
            let housekeeping = tokio::spawn(maintenance::run(
                self.state.store.clone(),
                self.state.jobs_wake.clone(),
                maintenance_stop.clone(),
            ));
            let scheduler = tokio::spawn(crate::sync::run_scheduler(
                self.state.store.clone(),
                self.state.jobs_wake.clone(),
                maintenance_stop.clone(),
            ));
            (Some(pool), Some((housekeeping, scheduler)))
        } else {
            (None, None)
        };
        tracing::info!(addr = %self.local_addr, role = ?role, database = self.state.store.backend().as_str(), "crmhub is running");

        let shutdown = self.shutdown.clone();
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            result = &mut server => result.context("HTTP server failed")?,
            () = shutdown.cancelled() => {
                tracing::info!(grace_secs = grace.as_secs(), "shutting down");
                if tokio::time::timeout(grace, &mut server).await.is_err() {
                    tracing::warn!("requests still open after the grace period; closing them");
                }
            }
        }
        if let Some(pool) = workers {
            pool.shutdown(grace).await;
        }
        maintenance_stop.cancel();
        if let Some((housekeeping, scheduler)) = housekeeping {
            let _ = housekeeping.await;
            let _ = scheduler.await;
        }
        self.log_writer.finish().await;
        self.state.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}
