//! Contact sync (Kommo → Unisender) under load: a 100,000-contact backfill with the real rate
//! budgets and with every limit off, and how many Kommo webhook deliveries per second crmhub
//! accepts durably at 64 concurrent senders on SQLite and on PostgreSQL.
//!
//! ```sh
//! cargo bench -p crmhub --bench sync          # release build; not part of scripts/test
//! CRMHUB_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p crmhub --bench sync
//! ```
//!
//! Every pipeline is set up as an operator would, through the admin API and the simulators:
//! a tenant, a Kommo connection connected by the simulator's widget install (the connect job
//! exchanges the code), a Unisender connection, `POST …/sync/pipelines` (which starts the
//! backfill).
//!
//! * `backfill` (`throttled`): the Kommo simulator seeded with 100,000 contacts and enforcing its
//!   7 requests per second, crmhub's Kommo budget at its default (`[kommo] requests_per_second`,
//!   6 with no burst), Unisender's simulator at 1200 calls a minute and its connector budget at
//!   its default. The wall time (the run's `started_at` to `finished_at`) is printed beside the
//!   bounds: Kommo's 7 req/s × 250 contacts a page is 57 s for 100,000 contacts, the 6 req/s
//!   budget about 67 s; Unisender's 1200 calls a minute × 500 rows is 10,000 rows/s, far above.
//! * `backfill` (`unthrottled`): the same with every limit off (the simulators' and crmhub's:
//!   `[kommo] requests_per_second` and the outbound budgets raised, the Unisender connector's
//!   budget raised through a sync destination resolver), in contacts/s: what crmhub, the store
//!   and the simulators do when nothing waits.
//!
//!   One role `both` app on SQLite each, its workers running the backfill job by job (a job
//!   hands over to the next every 20 s). `contacts` is the run's `done`, `addresses` the list's
//!   members afterwards (a seeded contact has zero, one or two e-mails), `Kommo req` and `429`
//!   what the Kommo simulator saw, `imports` the Unisender `importContacts` calls.
//! * `webhooks` (`sqlite`, `postgres`): `POST /hooks/kommo/{connection}/{secret}` with a
//!   `contacts[update]` body naming a contact id never sent before, from 64 closed-loop
//!   keep-alive connections for 10 s (after 1 s of warm-up). A 200 means the delivery and its
//!   `sync.contact` job are committed. The app runs with role `api`: no worker competes, the
//!   jobs accumulate (the queue cap is raised); the setup's jobs (the connect, the 40-contact
//!   backfill) are drained by hand before. Afterwards the `accepted` deliveries recorded and the
//!   jobs pending are counted against the 200s. PostgreSQL is `CRMHUB_BENCH_DATABASE_URL` (else
//!   `postgres://postgres@127.0.0.1:5432/test`) as the admin URL of a database created for the
//!   run and dropped after; unreachable, its row is skipped.
//!
//! The load generator is the benches' shared one (`support/load.rs`): each connection sends its
//! next request when the previous answer is in, on its own thread and runtime; crmhub and the
//! simulators share one multi-threaded runtime.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use crmhub_connectors::Connectors;
use crmhub_connectors::http::RateSpec;
use crmhub_server::config::Role;
use crmhub_server::crm_access::AccessError;
use crmhub_server::jobs::{JobRegistry, WorkerConfig};
use crmhub_server::sync::{DestinationResolver, SyncDestination, UnisenderDestinations};
use crmhub_server::{AppState, Application, Settings};
use crmhub_sim::kommo::{self, KommoSim, KommoSimOptions};
use crmhub_sim::unisender::{self, UnisenderSim, UnisenderSimOptions};
use crmhub_store::Store;
use crmhub_store::connections::Connection;
use crmhub_store::tenants::Tenant;
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[allow(dead_code, reason = "each bench reads what it reports of the load")]
#[path = "support/load.rs"]
mod load;
#[path = "support/pg.rs"]
mod pg;
#[path = "support/wire.rs"]
mod wire;

use load::{Limits, Load, Row, closed_loop};
use pg::PgDatabase;
use wire::fetch;

/// Contacts the backfill rows seed into the Kommo simulator.
const BACKFILL_CONTACTS: usize = 100_000;
/// Kommo's page (the connector's change feed asks for the most Kommo gives).
const PAGE: f64 = 250.0;
/// Kommo's limit (contract §3) and crmhub's default budget under it.
const KOMMO_LIMIT: f64 = 7.0;
const KOMMO_BUDGET: f64 = 6.0;
/// Unisender: 1200 calls a minute, 500 rows an import.
const UNISENDER_CALLS_PER_MIN: f64 = 1200.0;
const UNISENDER_ROWS: f64 = 500.0;
/// A backfill still running then is stopped there and reported as such (its rate over what it
/// did, and the 100,000 at that rate), so that the whole bench stays within about 5 minutes.
const BACKFILL_TIMEOUT: Duration = Duration::from_secs(100);
const SENDERS: usize = 64;
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(10);
/// Requests per measurement at most, whatever the speed.
const MAX_REQUESTS: i64 = 2_000_000;
/// An answer later than this is an error (its connection is opened again).
const PATIENCE: Duration = Duration::from_secs(5);
/// Enough for every job the webhook rows leave behind (no worker runs them).
const QUEUE_CAP: u64 = 100_000_000;
/// "Off": far above anything a run reaches.
const UNLIMITED: f64 = 1_000_000.0;
/// The highest Kommo account budget the configuration accepts: far above what a backfill asks.
const KOMMO_UNLIMITED: f64 = 1_000.0;
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

/// `cargo bench -p crmhub --bench sync -- ROW…` runs only the rows named (`throttled`,
/// `unthrottled`, `sqlite`, `postgres`); cargo's own `--bench` flag is ignored.
fn main() -> anyhow::Result<()> {
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let servers = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let load = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());

    println!("contact sync: Kommo simulator -> crmhub -> Unisender simulator, all on loopback");
    println!("{cpus} CPUs; servers on one tokio runtime ({cpus} workers), load on its own thread");

    let rows = [("throttled", true), ("unthrottled", false)];
    if rows.iter().any(|(name, _)| wanted(name)) {
        println!("\nbackfill: {BACKFILL_CONTACTS} seeded Kommo contacts, one pipeline, role both, SQLite");
        let pages = (BACKFILL_CONTACTS as f64 / PAGE).ceil();
        println!(
            "bounds: Kommo {KOMMO_LIMIT} req/s x {PAGE} = {:.0} s; crmhub's Kommo budget {KOMMO_BUDGET} req/s = {:.0} s; \
             Unisender {UNISENDER_CALLS_PER_MIN}/min x {UNISENDER_ROWS} rows = {:.0} rows/s",
            pages / KOMMO_LIMIT,
            pages / KOMMO_BUDGET,
            UNISENDER_CALLS_PER_MIN / 60.0 * UNISENDER_ROWS
        );
        println!(
            "Kommo ms, Unisender ms: mean latency of a contact page and of an import (crmhub's request log); \
             rest ms: the rest of a page's time, crmhub's own"
        );
        println!(
            "\n| limits | seed s | wall s | contacts | contacts/s | 100k s | addresses | Kommo req | Kommo req/s | 429 | \
             imports | Kommo ms | Unisender ms | rest ms/page | status |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for (name, throttled) in rows {
            if wanted(name) {
                let b = servers.block_on(backfill(throttled))?;
                let secs = b.wall.as_secs_f64();
                let rate = b.contacts as f64 / secs;
                let page_ms = secs * 1e3 / (b.contacts as f64 / PAGE).max(1.0);
                let imports_per_page = b.imports as f64 / (b.contacts as f64 / PAGE).max(1.0);
                let rest = page_ms - b.kommo_ms - b.unisender_ms * imports_per_page;
                println!(
                    "| {name} | {:.1} | {secs:.1} | {} | {rate:.0} | {:.0} | {} | {} | {:.2} | {} | {} | {:.1} | {:.1} | \
                     {rest:.0} | {} |",
                    b.seed.as_secs_f64(),
                    b.contacts,
                    BACKFILL_CONTACTS as f64 / rate,
                    b.addresses,
                    b.kommo_requests,
                    b.kommo_requests as f64 / secs,
                    b.kommo_429,
                    b.imports,
                    b.kommo_ms,
                    b.unisender_ms,
                    b.status
                );
            }
        }
    }

    if wanted("sqlite") || wanted("postgres") {
        println!(
            "\nwebhooks: POST /hooks/kommo/{{connection}}/{{secret}}, one new contact id each -> 200 once the delivery \
             and its job are committed"
        );
        println!(
            "{SENDERS} closed-loop keep-alive senders, {}s warm-up + {}s measured; role api (no worker)",
            WARMUP.as_secs(),
            MEASURE.as_secs()
        );
        println!(
            "accepted: deliveries recorded as accepted in the measurement; jobs: sync.contact jobs pending after\n"
        );
        println!("| backend | deliveries/s | p50 ms | p99 ms | 200s | other | accepted | jobs |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        if wanted("sqlite") {
            webhook_row(&servers, &load, "sqlite", None)?;
        }
        if wanted("postgres") {
            match servers.block_on(PgDatabase::create()) {
                Ok(db) => {
                    let result = webhook_row(&servers, &load, "postgres", Some(db.url.clone()));
                    servers.block_on(db.drop_database());
                    result?;
                }
                Err(e) => println!("| postgres | skipped: {e:#} | | | | | | |"),
            }
        }
    }
    Ok(())
}

// --- the apps --------------------------------------------------------------------------------

/// How an app is started.
struct AppOptions {
    role: Role,
    database_url: Option<String>,
    /// Kommo's, the outbound budgets' and the Unisender connector's limits all off.
    unthrottled: bool,
}

/// A running crmhub and what must outlive it.
struct RunningApp {
    state: AppState,
    addr: SocketAddr,
    data: tempfile::TempDir,
    registry: Arc<JobRegistry>,
    workers: WorkerConfig,
    role: Role,
    shutdown: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningApp {
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.server.await.context("server task")?
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Runs the jobs due now when the app has no workers of its own.
    async fn drain(&self) -> anyhow::Result<()> {
        if self.role == Role::Api {
            let store = &self.state.store;
            let report = crmhub_server::jobs::drain(
                store,
                self.registry.clone(),
                self.workers.clone(),
                self.state.metrics.clone(),
            )
            .await;
            if report.dead > 0 {
                bail!("setup jobs died: {report:?}");
            }
        }
        Ok(())
    }
}

/// The Unisender list of a connection, through a connector whose call budget is raised: the
/// app's own connectors keep Unisender's (the builder takes no connectors, only destinations).
struct UnthrottledUnisender;

#[async_trait::async_trait]
impl DestinationResolver for UnthrottledUnisender {
    async fn destination(
        &self,
        store: &Store,
        connectors: &Connectors,
        tenant: &Tenant,
        connection: &Connection,
    ) -> Result<Arc<dyn SyncDestination>, AccessError> {
        let fast = connectors.clone().with_unisender_rate(RateSpec::new(UNLIMITED, 1_000_000));
        UnisenderDestinations.destination(store, &fast, tenant, connection).await
    }
}

/// crmhub on a fresh data directory (and `database_url`, else SQLite in it).
async fn start_app(options: AppOptions) -> anyhow::Result<RunningApp> {
    let data = tempfile::tempdir()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut config = Settings::defaults()?;
    config.data_dir = data.path().to_path_buf();
    if let Some(url) = options.database_url {
        config.database.url = url;
    }
    config.server.listen = "127.0.0.1:0".into();
    // Where Kommo sends the widget install's browser and the webhook deliveries.
    config.server.public_url = format!("http://{addr}");
    config.server.role = options.role;
    config.admin.token = ADMIN_TOKEN.into();
    config.jobs.max_queue_depth_per_tenant = QUEUE_CAP;
    config.outbound.allow_private = vec!["127.0.0.1/32".into()];
    if options.unthrottled {
        config.kommo.requests_per_second = KOMMO_UNLIMITED;
        config.outbound.per_connection_rps = UNLIMITED;
        config.outbound.per_connection_burst = 1_000_000;
        config.outbound.per_host_rps = UNLIMITED;
        config.outbound.per_host_burst = 1_000_000;
    }
    let mut builder = Application::builder(config).listener(listener);
    if options.unthrottled {
        builder = builder.sync_destinations(Arc::new(UnthrottledUnisender));
    }
    let app = builder.build().await?;
    let (state, shutdown) = (app.state().clone(), app.shutdown_token());
    let (registry, workers) = (app.job_registry(), app.worker_config());
    let server = tokio::spawn(app.run_until_stopped());
    Ok(RunningApp { state, addr, data, registry, workers, role: options.role, shutdown, server })
}

/// The admin API of an app.
struct Admin {
    client: reqwest::Client,
    base: String,
}

impl Admin {
    fn of(app: &RunningApp) -> Self {
        Self { client: reqwest::Client::new(), base: app.url("") }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        want: u16,
    ) -> anyhow::Result<Value> {
        let (status, answer) = self.send(method.clone(), path, body).await?;
        if status != want {
            bail!("{method} {path}: {status} {answer}");
        }
        Ok(answer)
    }
}

/// A tenant `acme` with a Kommo connection to `kommo` (connected by a widget install), a
/// Unisender connection to `unisender` and a list; returns the connections' ids and the list.
struct Pipeline {
    kommo_id: String,
    unisender_id: String,
    list: String,
}

async fn configure(app: &RunningApp, kommo: &KommoSim, unisender: &UnisenderSim) -> anyhow::Result<Pipeline> {
    let admin = Admin::of(app);
    let post = reqwest::Method::POST;
    admin.expect(post.clone(), "/admin/v1/tenants", Some(&json!({"slug": "acme", "name": "Acme"})), 201).await?;
    kommo.set_redirect_uri(&app.url("/oauth/kommo/callback"));
    let integration = kommo.integration();
    let connection = json!({"name": "Kommo", "kind": "kommo", "host": kommo.base_url(),
        "fields": {"account": kommo.account_domain()},
        "credentials": {"client_id": integration.client_id, "client_secret": integration.client_secret}});
    let created = admin.expect(post.clone(), "/admin/v1/tenants/acme/connections", Some(&connection), 201).await?;
    let kommo_id = created["id"].as_str().context("connection id")?.to_owned();
    // The widget install's callback brings the code; the connect job exchanges it.
    let callback = url::Url::parse(&kommo.widget_install_callback())?;
    let at_app = app.url(&format!("{}?{}", callback.path(), callback.query().unwrap_or_default()));
    let status = admin.client.get(at_app).send().await?.status();
    if status != 200 {
        bail!("the widget install callback answered {status}");
    }
    let shown = format!("/admin/v1/tenants/acme/connections/{kommo_id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        app.drain().await?;
        let connection = admin.expect(reqwest::Method::GET, &shown, None, 200).await?;
        if connection["status"] == "active" {
            break;
        }
        if Instant::now() > deadline {
            bail!("the Kommo connection did not become active: {connection}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connection = json!({"name": "Unisender", "kind": "unisender", "host": unisender.base_url(),
        "credentials": {"api_key": unisender.api_key()}});
    let created = admin.expect(post, "/admin/v1/tenants/acme/connections", Some(&connection), 201).await?;
    let unisender_id = created["id"].as_str().context("connection id")?.to_owned();
    let list = unisender.create_list("Customers");
    Ok(Pipeline { kommo_id, unisender_id, list })
}

/// `POST …/sync/pipelines`: the pipeline and its backfill run's id.
async fn create_pipeline(app: &RunningApp, pipeline: &Pipeline) -> anyhow::Result<String> {
    let body = json!({"name": "main", "source_connection_id": pipeline.kommo_id,
        "destination_connection_id": pipeline.unisender_id, "list_id": pipeline.list});
    let created =
        Admin::of(app).expect(reqwest::Method::POST, "/admin/v1/tenants/acme/sync/pipelines", Some(&body), 201).await?;
    Ok(created["backfill"]["id"].as_str().context("no backfill run")?.to_owned())
}

// --- backfill --------------------------------------------------------------------------------

struct Backfill {
    seed: Duration,
    wall: Duration,
    contacts: u64,
    addresses: usize,
    kommo_requests: usize,
    kommo_429: u64,
    imports: u64,
    /// Mean latency of a Kommo contact page and of a Unisender import, in ms.
    kommo_ms: f64,
    unisender_ms: f64,
    status: String,
}

/// One 100,000-contact backfill from pipeline creation to the run's end.
async fn backfill(throttled: bool) -> anyhow::Result<Backfill> {
    let seeding = Instant::now();
    let rate_limit = throttled.then_some(KOMMO_LIMIT as u32);
    let kommo =
        kommo::spawn(KommoSimOptions { seed_contacts: BACKFILL_CONTACTS, rate_limit, ..KommoSimOptions::default() })
            .await;
    let seed = seeding.elapsed();
    let unisender_limit = throttled.then_some(UNISENDER_CALLS_PER_MIN as u32);
    let unisender =
        unisender::spawn(UnisenderSimOptions { rate_limit: unisender_limit, ..UnisenderSimOptions::default() }).await;
    let app = start_app(AppOptions { role: Role::Both, database_url: None, unthrottled: !throttled }).await?;
    let app_db = app.data.path().join("crmhub.db");
    let pipeline = configure(&app, &kommo, &unisender).await?;
    let (requests_before, rejected_before) = (kommo.api_request_times().len(), kommo.rejected_429());
    let imports_before = unisender.calls("importContacts");
    let run_id = create_pipeline(&app, &pipeline).await?;
    let admin = Admin::of(&app);
    let path = format!("/admin/v1/tenants/acme/sync/runs/{run_id}");
    let deadline = Instant::now() + BACKFILL_TIMEOUT;
    let run = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let run = admin.expect(reqwest::Method::GET, &path, None, 200).await?;
        if run["status"] != "running" || Instant::now() > deadline {
            break run;
        }
    };
    let at = |key: &str| run[key].as_i64().unwrap_or_default();
    let finished = if run["finished_at"].is_null() { at("updated_at") } else { at("finished_at") };
    let status = match run["status"].as_str().unwrap_or("?") {
        "running" => format!("running after {} s", BACKFILL_TIMEOUT.as_secs()),
        other => other.to_owned(),
    };
    let result = Backfill {
        seed,
        wall: Duration::from_millis(u64::try_from(finished - at("started_at")).unwrap_or_default()),
        contacts: run["done"].as_u64().unwrap_or_default(),
        addresses: unisender.list_members(&pipeline.list).len(),
        kommo_requests: kommo.api_request_times().len() - requests_before,
        kommo_429: kommo.rejected_429() - rejected_before,
        imports: unisender.calls("importContacts") - imports_before,
        // The request log as the writer has flushed it (a few seconds behind at most).
        kommo_ms: Database::Sqlite(app_db.clone()).mean_latency("%/api/v4/contacts%").await?,
        unisender_ms: Database::Sqlite(app_db).mean_latency("%/importContacts%").await?,
        status,
    };
    app.stop().await?;
    Ok(result)
}

// --- webhooks --------------------------------------------------------------------------------

fn webhook_row(
    servers: &tokio::runtime::Runtime,
    load: &tokio::runtime::Runtime,
    name: &str,
    database_url: Option<String>,
) -> anyhow::Result<()> {
    let hooks = servers.block_on(start_hooks(database_url))?;
    load.block_on(measure(&hooks.target, SENDERS, WARMUP))?;
    let (accepted_before, jobs_before) = servers.block_on(hooks.counts())?;
    let m = load.block_on(measure(&hooks.target, SENDERS, MEASURE))?;
    let (accepted_after, jobs_after) = servers.block_on(hooks.counts())?;
    println!(
        "| {name} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} |",
        m.ok as f64 / m.load.elapsed.as_secs_f64(),
        m.load.p(50).as_secs_f64() * 1e3,
        m.load.p(99).as_secs_f64() * 1e3,
        m.ok,
        m.errors,
        accepted_after - accepted_before,
        jobs_after - jobs_before
    );
    servers.block_on(hooks.stop())
}

struct Hooks {
    app: RunningApp,
    target: Target,
    database: Database,
    _kommo: KommoSim,
    _unisender: UnisenderSim,
}

impl Hooks {
    /// Deliveries recorded as accepted, and jobs pending.
    async fn counts(&self) -> anyhow::Result<(u64, u64)> {
        let accepted = self.database.accepted_deliveries().await?;
        let pending = self.app.state.store.jobs().depth(None).await?.pending;
        Ok((accepted, pending))
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.app.stop().await
    }
}

/// A role `api` crmhub with a Kommo → Unisender pipeline whose setup jobs have run, and its
/// webhook destination registered at the Kommo simulator.
async fn start_hooks(database_url: Option<String>) -> anyhow::Result<Hooks> {
    let kommo = kommo::spawn(KommoSimOptions { rate_limit: None, ..KommoSimOptions::default() }).await;
    let unisender = unisender::spawn(UnisenderSimOptions { rate_limit: None, ..UnisenderSimOptions::default() }).await;
    let app = start_app(AppOptions { role: Role::Api, database_url: database_url.clone(), unthrottled: true }).await?;
    let pipeline = configure(&app, &kommo, &unisender).await?;
    create_pipeline(&app, &pipeline).await?;
    app.drain().await?;
    let depth = app.state.store.jobs().depth(None).await?;
    if depth.pending > 0 {
        bail!("setup jobs still pending: {depth:?}");
    }
    let path = format!("/admin/v1/tenants/acme/connections/{}/kommo/webhook", pipeline.kommo_id);
    let (status, answer) = Admin::of(&app).send(reqwest::Method::PUT, &path, Some(&json!({}))).await?;
    if !(200..300).contains(&status) {
        bail!("PUT {path}: {status} {answer}");
    }
    let destination = kommo.webhooks().first().context("no webhook registered at Kommo")?.destination.clone();
    let hook_path = url::Url::parse(&destination)?.path().to_owned();
    let account = kommo.account_id();
    let requests = move |n| {
        // A contact id nobody sent before: every delivery enqueues a job of its own.
        let body = format!(
            "contacts[update][0][id]={}&contacts[update][0][type]=contact&account[id]={account}&account[subdomain]=demo",
            100_000_000 + n
        );
        let request = format!(
            "POST {hook_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: amoCRM-WebHook-client/1.0\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        vec![Arc::<[u8]>::from(request.into_bytes())]
    };
    // Request 0 is the probe; the load starts at 1.
    let row = Row { turns: Arc::new(AtomicU64::new(1)), ..Row::new(app.addr, requests) };
    let target = Target { row, expect: 200 };
    let (status, body) = fetch(app.addr, &(target.row.requests)(0)[0]).await?;
    if status != 200 || !body.contains("\"accepted\"") {
        bail!("crmhub did not accept a delivery: {status} {body}");
    }
    let database = match database_url {
        Some(url) => Database::Postgres(url),
        None => Database::Sqlite(app.data.path().join("crmhub.db")),
    };
    Ok(Hooks { app, target, database, _kommo: kommo, _unisender: unisender })
}

/// Where an app's store is, to count what it recorded.
enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Database {
    /// Mean latency in ms of the logged outbound requests whose URL is `like`.
    async fn mean_latency(&self, like: &str) -> anyhow::Result<f64> {
        use sqlx::Connection as _;
        let Database::Sqlite(path) = self else { bail!("request log latencies are read on SQLite only") };
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display())).await?;
        let mean: Option<f64> =
            sqlx::query_scalar("SELECT AVG(CAST(latency_ms AS REAL)) FROM request_log WHERE url LIKE $1")
                .bind(like)
                .fetch_one(&mut conn)
                .await?;
        conn.close().await.ok();
        Ok(mean.unwrap_or(f64::NAN))
    }

    async fn accepted_deliveries(&self) -> anyhow::Result<u64> {
        use sqlx::Connection as _;
        const COUNT: &str = "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'accepted'";
        let count: i64 = match self {
            Database::Sqlite(path) => {
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display())).await?;
                let count = sqlx::query_scalar(COUNT).fetch_one(&mut conn).await?;
                conn.close().await.ok();
                count
            }
            Database::Postgres(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await?;
                let count = sqlx::query_scalar(COUNT).fetch_one(&mut conn).await?;
                conn.close().await.ok();
                count
            }
        };
        Ok(u64::try_from(count)?)
    }
}

// --- the load generator ----------------------------------------------------------------------

struct Target {
    /// Its turns number the requests, across warm-up and measurement, so none repeats.
    row: Row,
    /// The status every answer must have; others (and time-outs) count as errors.
    expect: u16,
}

struct Measurement {
    load: Load,
    /// Answers with the expected status.
    ok: usize,
    errors: usize,
}

/// Runs `connections` closed-loop clients against `target` for `duration`.
async fn measure(target: &Target, connections: usize, duration: Duration) -> anyhow::Result<Measurement> {
    let limits = Limits { duration, max_requests: MAX_REQUESTS, patience: PATIENCE };
    let load = closed_loop(&target.row, connections, limits).await?;
    let wrong = load.other_than(&[target.expect]);
    Ok(Measurement { ok: load.answered() - wrong, errors: wrong + load.timeouts, load })
}
