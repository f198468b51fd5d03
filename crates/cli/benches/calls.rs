//! The call-centre channel's `POST /t/{tenant}/calls/events` under load: the screen pop a
//! `call.started` answers (against the Vtiger simulator, cold and cached, at 4 and 64
//! connections), and how many call events per second crmhub accepts durably at 64 connections
//! on SQLite and on PostgreSQL.
//!
//! ```sh
//! cargo bench -p crmhub --bench calls          # release build; not part of scripts/test
//! CRMHUB_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p crmhub --bench calls
//! ```
//!
//! The load generator is the one of `social_search`: N HTTP/1.1 keep-alive connections to
//! 127.0.0.1, each sending its next request when the previous answer is in (closed loop), for a
//! fixed time, on its own thread and runtime; crmhub and the simulator share one multi-threaded
//! runtime. Every request carries a call id never used before, so every `call.started` is a
//! new call that asks for its screen pop (a repeated one would get the pop stored on the call).
//!
//! * `cold`: a tenant with `screen_pop_cache_secs = 0`, the seeded numbers in turn, so every pop
//!   is a CRM lookup of a number that matches one contact. Caching off rather than fresh numbers:
//!   the run needs no more numbers than the CRM holds, and every lookup finds its contact (a
//!   number nobody has is a cheaper, different answer). Concurrent senders take consecutive
//!   numbers, so single flight does not merge them either; the `CRM req` column (simulator
//!   requests per pop, counted) shows that each pop reached the CRM.
//! * `cached`: a tenant with the default 30 s, a few numbers over and over: after the warm-up
//!   the pops are answered from the cache (`CRM req` about 0).
//! * `accept`: `call.answered` then `call.ended` for each new call id (no CRM call in the request
//!   path; the first enqueues the call's log job, the second finds it pending). A 202 means the
//!   event row, the call and its job are committed. Afterwards the pending jobs are counted
//!   against the calls answered. Each backend gets a fresh app and database; PostgreSQL is
//!   `CRMHUB_BENCH_DATABASE_URL` (else `postgres://postgres@127.0.0.1:5432/test`) as the admin
//!   URL of a database created for the run and dropped after; unreachable, its row is skipped.
//!   Beside each, `key-check`: `GET /t/{tenant}/channel-key` with the same key, the channel's
//!   authentication alone (the tenant and the key read, nothing written), for reading the
//!   accept rows against.
//!
//! Every app runs with role `api`: log jobs accumulate (the queue cap is raised) and no worker
//! competes for the CRM or the database during a measurement. The outbound rate budget is
//! raised, or the cold rows would measure the throttle (25 req/s per connection by default).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use crmhub_core::{PhoneRegion, TenantName, TenantSlug};
use crmhub_server::channels::calls::settings::{self, CallSettings};
use crmhub_server::config::Role;
use crmhub_server::connection_input::ConnectionInput;
use crmhub_server::{AppState, Application, Settings};
use crmhub_sim::vtiger::{self, VtigerSimHandle, VtigerSimOptions};
use crmhub_store::connections::NewConnection;
use crmhub_store::tenants::{NewTenant, Tenant};
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

const POP_CONNECTIONS: [usize; 2] = [4, 64];
const ACCEPT_CONNECTIONS: usize = 64;
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);
/// Requests per measurement at most, whatever the speed.
const MAX_REQUESTS: i64 = 2_000_000;
/// An answer later than this is an error (its connection is opened again).
const PATIENCE: Duration = Duration::from_secs(5);
/// Seeded contacts, as in `crmhub demo`.
const SEEDED_CONTACTS: usize = 300;
/// Numbers the cached rows ring again and again.
const CACHED_NUMBERS: usize = 8;
const CACHED_TTL_SECS: u32 = settings::DEFAULT_SCREEN_POP_CACHE_SECS;
/// Enough for every job the runs leave behind (no worker runs them).
const QUEUE_CAP: u64 = 100_000_000;

struct Target {
    /// Its turns are call numbers, counted across warm-up and measurement, so no call id
    /// repeats.
    row: Row,
    /// The status every answer must have; others (and time-outs) count as errors.
    expect: u16,
}

struct Measurement {
    load: Load,
    errors: usize,
    /// Calls made (turns taken).
    calls: u64,
}

/// `cargo bench -p crmhub --bench calls -- ROW…` runs only the rows named (`cold`, `cached`,
/// `sqlite`, `postgres`); cargo's own `--bench` flag is ignored.
fn main() -> anyhow::Result<()> {
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let servers = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let load = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let crm = servers.block_on(start_crm())?;

    println!("calls channel: POST /t/{{tenant}}/calls/events through crmhub (role api, Vtiger simulator on loopback)");
    println!("{cpus} CPUs; servers on one tokio runtime ({cpus} workers), load on its own thread");
    println!(
        "closed loop, keep-alive; {}s warm-up + {}s measured per row; a new call id per call",
        WARMUP.as_secs(),
        MEASURE.as_secs()
    );

    if wanted("cold") || wanted("cached") {
        let pops = servers.block_on(start_pops(&crm))?;
        println!("\nscreen pop: call.started -> 202 with the pop (SQLite, {SEEDED_CONTACTS} seeded contacts)");
        println!("cold: screen_pop_cache_secs = 0, {} numbers in turn, each matching one contact", pops.numbers);
        println!("cached: screen_pop_cache_secs = {CACHED_TTL_SECS}, {CACHED_NUMBERS} numbers over and over");
        println!("CRM req: simulator requests per pop during the measurement\n");
        println!(
            "{:>5}  {:<7} {:>9} {:>8} {:>8} {:>7} {:>8}",
            "conns", "mode", "req/s", "p50 ms", "p99 ms", "errors", "CRM req"
        );
        for connections in POP_CONNECTIONS {
            for (name, target) in [("cold", &pops.cold), ("cached", &pops.cached)] {
                if !wanted(name) {
                    continue;
                }
                load.block_on(measure(target, connections, WARMUP))?;
                let before = crm.request_count();
                let m = load.block_on(measure(target, connections, MEASURE))?;
                let crm_requests = crm.request_count() - before;
                println!(
                    "{connections:>5}  {name:<7} {:>9.0} {:>8.3} {:>8.3} {:>7} {:>8.2}",
                    m.load.per_second(),
                    m.load.p(50).as_secs_f64() * 1e3,
                    m.load.p(99).as_secs_f64() * 1e3,
                    m.errors,
                    crm_requests as f64 / m.load.answered().max(1) as f64
                );
            }
        }
        servers.block_on(pops.running.stop())?;
    }

    if wanted("sqlite") || wanted("postgres") {
        println!(
            "\ndurable accept: call.answered + call.ended per new call id -> 202, {ACCEPT_CONNECTIONS} connections"
        );
        println!("calls: answered in the measurement; jobs: log jobs pending afterwards (one per call expected)");
        println!(
            "key-check: GET /t/{{tenant}}/channel-key, the same key check alone (tenant and key read, nothing written)\n"
        );
        println!(
            "{:<9} {:<10} {:>9} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8}",
            "backend", "path", "req/s", "p50 ms", "p99 ms", "errors", "calls", "jobs", "CRM req"
        );
        if wanted("sqlite") {
            let app = servers.block_on(start_accept(&crm, None))?;
            accept_row(&servers, &load, &crm, "sqlite", &app)?;
            servers.block_on(app.stop())?;
        }
        if wanted("postgres") {
            match servers.block_on(PgDatabase::create()) {
                Ok(db) => {
                    let result = servers.block_on(start_accept(&crm, Some(db.url.clone()))).and_then(|app| {
                        accept_row(&servers, &load, &crm, "postgres", &app)?;
                        servers.block_on(app.stop())
                    });
                    servers.block_on(db.drop_database());
                    result?;
                }
                Err(e) => println!("{:<9} skipped: {e:#}", "postgres"),
            }
        }
    }
    Ok(())
}

fn accept_row(
    servers: &tokio::runtime::Runtime,
    load: &tokio::runtime::Runtime,
    crm: &VtigerSimHandle,
    name: &str,
    app: &AcceptApp,
) -> anyhow::Result<()> {
    load.block_on(measure(&app.target, ACCEPT_CONNECTIONS, WARMUP))?;
    let jobs_before = servers.block_on(app.pending_jobs())?;
    let crm_before = crm.request_count();
    let m = load.block_on(measure(&app.target, ACCEPT_CONNECTIONS, MEASURE))?;
    let crm_requests = crm.request_count() - crm_before;
    let jobs = servers.block_on(app.pending_jobs())? - jobs_before;
    println!(
        "{name:<9} {:<10} {:>9.0} {:>8.3} {:>8.3} {:>7} {:>8} {:>8} {:>8}",
        "events",
        m.load.per_second(),
        m.load.p(50).as_secs_f64() * 1e3,
        m.load.p(99).as_secs_f64() * 1e3,
        m.errors,
        m.calls,
        jobs,
        crm_requests
    );
    load.block_on(measure(&app.key_check, ACCEPT_CONNECTIONS, WARMUP))?;
    let m = load.block_on(measure(&app.key_check, ACCEPT_CONNECTIONS, MEASURE))?;
    println!(
        "{name:<9} {:<10} {:>9.0} {:>8.3} {:>8.3} {:>7}",
        "key-check",
        m.load.per_second(),
        m.load.p(50).as_secs_f64() * 1e3,
        m.load.p(99).as_secs_f64() * 1e3,
        m.errors
    );
    Ok(())
}

/// The Vtiger simulator with the demo's contacts.
async fn start_crm() -> anyhow::Result<VtigerSimHandle> {
    let crm = vtiger::try_spawn(VtigerSimOptions::default()).await?;
    crm.seed_demo_contacts(SEEDED_CONTACTS);
    Ok(crm)
}

/// crmhub on a fresh data directory (and `database_url`, else SQLite in it), role `api`.
async fn start_app(database_url: Option<String>) -> anyhow::Result<(AppState, SocketAddr, RunningApp)> {
    let data = tempfile::tempdir()?;
    let mut config = Settings::defaults()?;
    config.data_dir = data.path().to_path_buf();
    if let Some(url) = database_url {
        config.database.url = url;
    }
    config.server.listen = "127.0.0.1:0".into();
    config.server.role = Role::Api;
    config.admin.token = "bench-admin-token-0123456789".into();
    config.jobs.max_queue_depth_per_tenant = QUEUE_CAP;
    config.outbound.allow_private = vec!["127.0.0.1/32".into()];
    config.outbound.per_connection_rps = 1e6;
    config.outbound.per_connection_burst = 1_000_000;
    config.outbound.per_host_rps = 1e6;
    config.outbound.per_host_burst = 1_000_000;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let app = Application::builder(config).listener(listener).build().await?;
    let (state, addr, shutdown) = (app.state().clone(), app.local_addr(), app.shutdown_token());
    let server = tokio::spawn(app.run_until_stopped());
    Ok((state, addr, RunningApp { shutdown, server, _data: data }))
}

/// A running app and what must outlive it.
struct RunningApp {
    shutdown: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _data: tempfile::TempDir,
}

impl RunningApp {
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.server.await.context("server task")?
    }
}

/// Tenant `slug` (region VN), a Vtiger connection to `crm`, the calls channel on it with
/// `cache_secs`, and a channel key with the `calls` scope; returns the tenant and the key.
async fn configure(
    state: &AppState,
    crm: &VtigerSimHandle,
    slug: &str,
    cache_secs: u32,
) -> anyhow::Result<(Tenant, String)> {
    let store = &state.store;
    let tenant = store
        .tenants()
        .create(NewTenant {
            slug: TenantSlug::parse(slug)?,
            name: TenantName::parse(slug)?,
            phone_region: Some(PhoneRegion::parse("VN")?),
            settings: Default::default(),
        })
        .await?;
    // Through the admin API's input type, so the bench follows the connection model.
    let input: ConnectionInput = serde_json::from_value(serde_json::json!({
        "name": "Vtiger", "kind": "vtiger", "host": crm.base_url(),
        "fields": {"username": "admin"}, "credentials": {"access_key": crm.admin_access_key()},
    }))?;
    let connection = store.connections(tenant.id).create(NewConnection::try_from(input)?).await?;
    let call_settings = CallSettings {
        connection_id: connection.id,
        sms_connection_id: None,
        screen_pop_cache_secs: cache_secs,
        max_matches: settings::DEFAULT_MAX_MATCHES,
    };
    settings::configure(state, &tenant, call_settings).await.map_err(|e| anyhow::anyhow!("calls settings: {e}"))?;
    let key = crmhub_server::admin::channel_keys::create_key(store, tenant.id, "bench", &["calls".to_owned()])
        .await
        .map_err(|e| anyhow::anyhow!("channel key: {e:?}"))?;
    Ok((tenant, key.key))
}

fn post(slug: &str, key: &str, body: &serde_json::Value) -> Arc<[u8]> {
    let body = body.to_string();
    format!(
        "POST /t/{slug}/calls/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into()
}

fn started(prefix: &str, n: u64, from: &str) -> serde_json::Value {
    serde_json::json!({"type": "call.started", "call": {
        "call_id": format!("{prefix}-{n}"), "direction": "inbound", "from": from, "to": "02873001234",
        "started_at": 1_796_094_000, "agent": {"id": "a7", "name": "Mai"},
    }})
}

struct Pops {
    cold: Target,
    cached: Target,
    /// Seeded numbers that pop exactly one contact.
    numbers: usize,
    running: RunningApp,
}

/// crmhub (SQLite) with tenants `cold` and `cached`, and the numbers that pop one contact each.
async fn start_pops(crm: &VtigerSimHandle) -> anyhow::Result<Pops> {
    let (state, addr, running) = start_app(None).await?;
    let (_, cold_key) = configure(&state, crm, "cold", 0).await?;
    let (_, cached_key) = configure(&state, crm, "cached", CACHED_TTL_SECS).await?;
    // The seeded contacts' office numbers written internationally (the others are national
    // forms of other countries, which a VN tenant reads differently), kept when a pop of
    // them finds exactly that one contact.
    let candidates: Vec<String> =
        crm.records("Contacts").iter().filter_map(|c| c.get("phone").filter(|p| p.starts_with('+')).cloned()).collect();
    let mut numbers = Vec::new();
    for (n, number) in candidates.iter().enumerate() {
        let request = post("cold", &cold_key, &started("setup", n as u64, number));
        let (status, body) = fetch(addr, &request).await?;
        if status != 202 {
            bail!("crmhub refused call.started from {number}: {status} {body}");
        }
        let answer: serde_json::Value = serde_json::from_str(&body)?;
        if answer["call"]["screen_pop"]["match"] == "one" {
            numbers.push(number.clone());
        }
    }
    if numbers.len() < CACHED_NUMBERS {
        bail!("only {} of {} seeded numbers pop one contact", numbers.len(), candidates.len());
    }
    let numbers: Arc<[String]> = numbers.into();
    let cold = {
        let numbers = numbers.clone();
        let row = Row::new(addr, move |n| {
            let number = &numbers[n as usize % numbers.len()];
            vec![post("cold", &cold_key, &started("cold", n, number))]
        });
        Target { row, expect: 202 }
    };
    let cached = {
        let numbers = numbers.clone();
        let row = Row::new(addr, move |n| {
            let number = &numbers[n as usize % CACHED_NUMBERS];
            vec![post("cached", &cached_key, &started("cached", n, number))]
        });
        Target { row, expect: 202 }
    };
    Ok(Pops { cold, cached, numbers: numbers.len(), running })
}

struct AcceptApp {
    state: AppState,
    tenant: Tenant,
    target: Target,
    /// `GET /t/events/channel-key`: the key check alone (tenant and key read, nothing written).
    key_check: Target,
    running: RunningApp,
}

impl AcceptApp {
    async fn pending_jobs(&self) -> anyhow::Result<u64> {
        Ok(self.state.store.jobs().depth(Some(self.tenant.id)).await?.pending)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.running.stop().await
    }
}

/// A fresh crmhub with tenant `events`, whose calls are answered and ended.
async fn start_accept(crm: &VtigerSimHandle, database_url: Option<String>) -> anyhow::Result<AcceptApp> {
    let (state, addr, running) = start_app(database_url).await?;
    let (tenant, key) = configure(&state, crm, "events", settings::DEFAULT_SCREEN_POP_CACHE_SECS).await?;
    let whoami: Arc<[u8]> = format!(
        "GET /t/events/channel-key?scope=calls HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n"
    )
    .into_bytes()
    .into();
    let row = Row::new(addr, move |n| {
        let call_id = format!("call-{n}");
        let answered = serde_json::json!({"type": "call.answered", "call": {
            "call_id": call_id, "direction": "inbound", "from": "+14155550100", "to": "02873001234",
            "answered_at": 1_796_094_005, "agent": {"id": "a7", "name": "Mai"},
        }});
        let ended = serde_json::json!({"type": "call.ended", "call": {
            "call_id": call_id, "ended_at": 1_796_094_100, "duration_secs": 95, "end_reason": "completed",
        }});
        vec![post("events", &key, &answered), post("events", &key, &ended)]
    });
    let target = Target { row, expect: 202 };
    for request in (target.row.requests)(u64::MAX) {
        let (status, body) = fetch(addr, &request).await?;
        if status != 202 {
            bail!("crmhub refused a call event: {status} {body}");
        }
    }
    let (status, body) = fetch(addr, &whoami).await?;
    if status != 200 {
        bail!("crmhub refused the channel key: {status} {body}");
    }
    let key_check = Target { row: Row::cycling(addr, [whoami].into()), expect: 200 };
    Ok(AcceptApp { state, tenant, target, key_check, running })
}

/// Runs `connections` closed-loop clients against `target` for `duration`.
async fn measure(target: &Target, connections: usize, duration: Duration) -> anyhow::Result<Measurement> {
    let before = target.row.turns.load(Ordering::Relaxed);
    let limits = Limits { duration, max_requests: MAX_REQUESTS, patience: PATIENCE };
    let load = closed_loop(&target.row, connections, limits).await?;
    let calls = target.row.turns.load(Ordering::Relaxed) - before;
    Ok(Measurement { errors: load.other_than(&[target.expect]) + load.timeouts, calls, load })
}
