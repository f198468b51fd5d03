//! Signed social-inbox `/search` through crmhub — SQLite, a CRM on loopback, a URL signed the
//! way the platform signs it — beside a bare axum handler that returns the same JSON: requests
//! per second, p50/p99 latency and crmhub's own CPU per request at 4 and 64 connections.
//!
//! ```sh
//! cargo bench -p crmhub --bench social_search          # release build; not part of scripts/test
//! ```
//!
//! The load generator keeps N HTTP/1.1 keep-alive connections to 127.0.0.1, each sending its
//! next request when the previous answer is in (closed loop), for a fixed time and at most a
//! fixed number of requests; an answer that takes longer than the platform's patience (5 s) is
//! a time-out and its connection is opened again. It runs on the main thread. crmhub runs on a
//! runtime of its own (threads `crmhub`), the CRMs and the bare handler on another (`peer`), so
//! crmhub's CPU is measured apart: the process's CPU over the row less the peers' threads and
//! the load generator's (`/proc/self/task/*/stat`), divided by the requests answered.
//!
//! Rows:
//! * `bare`: an axum handler returning crmhub's answer — the ceiling of any HTTP service here;
//! * `crmhub-gw`: a signed request with `q=0`, verified and refused before any CRM call;
//! * `stub-direct`: the first contacts query of a search (the default 20 rows) straight to a
//!   canned-answer Vtiger stub (from memory, no lock, honouring the query's `LIMIT`);
//! * `hops-floor`: the two queries of a search (accounts, then contacts) sent to the stub by a
//!   handler on crmhub's runtime with a plain reqwest client and nothing else — what the two
//!   CRM hops of a search cost on this HTTP stack before crmhub does anything;
//! * `crmhub-stub`: searches through crmhub to the stub, a different term each (spellings of
//!   `red`: `red`, `Red`, ` rEd `, …, whose true matches the stub's rows are), so every search
//!   makes its own two CRM calls (matching accounts, then contacts) and 50 % of `stub-direct`
//!   is the most it could reach;
//! * `coalesced`: the same with one term from every connection, so concurrent searches share
//!   their CRM calls (single flight; the result cache stays off, its default);
//! * `crmhub`, `crm-only`: searches through crmhub to the Vtiger simulator (a term each, which
//!   the simulator searches for real), and
//!   crmhub's own contacts query (built by the connector's query builder) straight to it; the
//!   simulator serialises all work behind one lock, so these rows mostly measure it;
//! * `overload` (64 connections only): distinct searches through a second crmhub with the
//!   default outbound budget (25 requests a second per connection, `interactive_max_wait_ms`
//!   1000): most are answered 503 with `Retry-After` at once; none may time out.
//!
//! `CRM/1k` is the stub's requests per 1,000 searches answered. Outside the overload row the
//! outbound budget is raised: the default would measure the throttle rather than the gateway.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use crmhub_core::{PhoneRegion, Secret, TenantName, TenantSlug};
use crmhub_server::channels::social_inbox::Endpoint;
use crmhub_server::channels::social_inbox::links::signed_url;
use crmhub_server::channels::social_inbox::settings::{self, ChannelInput};
use crmhub_server::connection_input::ConnectionInput;
use crmhub_server::{Application, Settings};
use crmhub_sim::vtiger::{self, VtigerSimHandle, VtigerSimOptions};
use crmhub_store::connections::NewConnection;
use crmhub_store::tenants::NewTenant;
use tokio::net::TcpListener;

#[path = "support/load.rs"]
mod load;
#[path = "support/wire.rs"]
mod wire;

use load::{Limits, Load, Row, closed_loop};
use wire::fetch;

const CONNECTIONS: [usize; 2] = [4, 64];
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);
/// Requests per measurement at most, whatever the speed.
const MAX_REQUESTS: i64 = 2_000_000;
/// The platform's patience: an answer later than this is a time-out.
const PATIENCE: Duration = Duration::from_secs(5);
/// Seeded contacts besides Susan Red and Frank Redford, as in `crmhub demo`.
const SEEDED_CONTACTS: usize = 300;
/// Distinct search terms a row cycles through: spellings of `red` (see [`spelling_of_red`]).
const TERMS: usize = 1_000;
const SECRET: &str = "changeme!";

struct Target {
    name: &'static str,
    addr: SocketAddr,
    /// Sent in turn (each connection starting at its own place).
    requests: Arc<[Arc<[u8]>]>,
    /// Statuses that count as answers; others count as errors.
    expect: &'static [u16],
    /// Whether crmhub serves it (its CPU is then reported).
    through_crmhub: bool,
    /// Only at this many connections, when set.
    only_at: Option<usize>,
}

/// CPU time of this process, split into crmhub's threads, the peers' and the load generator's
/// (the main thread), in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTicks {
    process: u64,
    peers: u64,
    load: u64,
}

impl CpuTicks {
    fn read() -> anyhow::Result<Self> {
        let ticks = |stat: &str| -> anyhow::Result<u64> {
            // Fields after the parenthesised name: utime and stime are the 12th and 13th.
            let rest = stat.rsplit_once(')').context("a stat line")?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Ok(fields.get(11).context("utime")?.parse::<u64>()? + fields.get(12).context("stime")?.parse::<u64>()?)
        };
        let mut cpu = Self { process: ticks(&std::fs::read_to_string("/proc/self/stat")?)?, ..Self::default() };
        let main = std::process::id().to_string();
        for task in std::fs::read_dir("/proc/self/task")? {
            let task = task?.path();
            let (Ok(name), Ok(stat)) =
                (std::fs::read_to_string(task.join("comm")), std::fs::read_to_string(task.join("stat")))
            else {
                continue; // the thread ended meanwhile
            };
            if name.starts_with("peer") {
                cpu.peers += ticks(&stat)?;
            } else if task.file_name().is_some_and(|id| id.to_string_lossy() == main) {
                cpu.load += ticks(&stat)?;
            }
        }
        Ok(cpu)
    }

    /// crmhub's CPU between `self` and `later`: everything but the peers and the load.
    fn crmhub_since(self, later: Self, tick: Duration) -> Duration {
        let all = later.process.saturating_sub(self.process);
        let others = later.peers.saturating_sub(self.peers) + later.load.saturating_sub(self.load);
        tick * u32::try_from(all.saturating_sub(others)).unwrap_or(u32::MAX)
    }
}

fn clock_tick() -> Duration {
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().ok())
        .unwrap_or(100);
    Duration::from_secs(1) / hz.max(1)
}

/// `cargo bench -p crmhub --bench social_search -- NAME… N…` runs only the rows named and
/// the connection counts given (for profiling one of them); cargo's own `--bench` flag is
/// ignored.
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let (counts, only): (Vec<String>, Vec<String>) = args.into_iter().partition(|a| a.parse::<usize>().is_ok());
    let counts: Vec<usize> = counts.iter().filter_map(|n| n.parse().ok()).collect();
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let crmhub = tokio::runtime::Builder::new_multi_thread().thread_name("crmhub").enable_all().build()?;
    let peers =
        tokio::runtime::Builder::new_multi_thread().worker_threads(cpus).thread_name("peer").enable_all().build()?;
    let (targets, stub_calls, _keep) = crmhub.block_on(start(peers.handle()))?;
    let targets: Vec<Target> =
        targets.into_iter().filter(|t| only.is_empty() || only.iter().any(|o| o == t.name)).collect();
    let load = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let tick = clock_tick();
    println!("social /search: crmhub (SQLite) to a CRM on loopback, beside a bare axum handler");
    println!("{cpus} CPUs; crmhub on one runtime ({cpus} workers), the CRMs on another, load on the main thread");
    println!("closed loop, keep-alive; {}s warm-up + {}s measured per row", WARMUP.as_secs(), MEASURE.as_secs());
    println!("crmhub µs/req: crmhub's CPU (all its threads) per answered request; CRM/1k: stub requests per 1,000\n");
    println!(
        "{:>5}  {:<11} {:>9} {:>8} {:>8} {:>6} {:>6} {:>8} {:>7} {:>8} {:>8} {:>8}",
        "conns",
        "target",
        "req/s",
        "p50 ms",
        "p99 ms",
        "503",
        "t/o",
        "errors",
        "vs bare",
        "vs stub",
        "µs/req",
        "CRM/1k"
    );
    for connections in CONNECTIONS.into_iter().filter(|n| counts.is_empty() || counts.contains(n)) {
        let mut rates = HashMap::new();
        for target in targets.iter().filter(|t| t.only_at.is_none_or(|n| n == connections)) {
            load.block_on(measure(target, connections, WARMUP))?;
            let (cpu_before, calls_before) = (CpuTicks::read()?, stub_calls.load(Ordering::Relaxed));
            let m = load.block_on(measure(target, connections, MEASURE))?;
            let (cpu_after, calls_after) = (CpuTicks::read()?, stub_calls.load(Ordering::Relaxed));
            let rate = m.per_second();
            rates.insert(target.name, rate);
            let ratio_to =
                |name: &str| rates.get(name).map_or_else(String::new, |r| format!("{:.1}%", rate / r * 100.0));
            let vs_stub = if matches!(target.name, "crmhub-stub" | "coalesced") {
                ratio_to("stub-direct")
            } else {
                String::new()
            };
            let answered = m.answered();
            let per_request = (target.through_crmhub && answered > 0)
                .then(|| cpu_before.crmhub_since(cpu_after, tick).as_secs_f64() * 1e6 / answered as f64);
            let calls = calls_after - calls_before;
            let per_thousand =
                (target.through_crmhub && calls > 0 && answered > 0).then(|| calls as f64 * 1000.0 / answered as f64);
            println!(
                "{connections:>5}  {:<11} {:>9.0} {:>8.3} {:>8.3} {:>6} {:>6} {:>8} {:>7} {:>8} {:>8} {:>8}",
                target.name,
                rate,
                m.p(50).as_secs_f64() * 1e3,
                m.p(99).as_secs_f64() * 1e3,
                m.with_status(503),
                m.timeouts,
                m.other_than(target.expect),
                ratio_to("bare"),
                vs_stub,
                per_request.map_or_else(String::new, |us| format!("{us:.0}")),
                per_thousand.map_or_else(String::new, |n| format!("{n:.0}")),
            );
        }
        println!();
    }
    Ok(())
}

/// What must stay alive while the load runs.
struct Running {
    _crm: VtigerSimHandle,
    _data: Vec<tempfile::TempDir>,
}

/// A crmhub with tenant `bench` (Vtiger simulator) and tenant `stub` (the stub), its outbound
/// budget raised unless `default_budget`.
async fn start_crmhub(default_budget: bool) -> anyhow::Result<(Application, tempfile::TempDir)> {
    let data = tempfile::tempdir()?;
    let mut config = Settings::defaults()?;
    config.data_dir = data.path().to_path_buf();
    config.server.listen = "127.0.0.1:0".into();
    config.admin.token = "bench-admin-token-0123456789".into();
    config.outbound.allow_private = vec!["127.0.0.1/32".into()];
    if !default_budget {
        config.outbound.per_connection_rps = 1e6;
        config.outbound.per_connection_burst = 1_000_000;
        config.outbound.per_host_rps = 1e6;
        config.outbound.per_host_burst = 1_000_000;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok((Application::builder(config).listener(listener).build().await?, data))
}

/// Starts the CRMs on `peers`, crmhub (twice: budget raised, and default for the overload row)
/// and the bare handler serving exactly the body crmhub answered.
async fn start(peers: &tokio::runtime::Handle) -> anyhow::Result<(Vec<Target>, Arc<AtomicU64>, Running)> {
    let crm = peers.spawn(vtiger::try_spawn(VtigerSimOptions::default())).await??;
    let account = crm.insert_record("Accounts", [("accountname", "Redwood Supplies")]);
    let contacts = [
        vec![("firstname", "Susan"), ("lastname", "Red"), ("account_id", account.as_str())],
        vec![("firstname", "Frank"), ("lastname", "Redford")],
    ];
    for fields in contacts {
        crm.insert_record("Contacts", fields);
    }
    crm.seed_demo_contacts(SEEDED_CONTACTS);
    let stub_calls = Arc::new(AtomicU64::new(0));
    let stub = start_stub(peers, &crm, stub_calls.clone()).await?;

    let (app, data) = start_crmhub(false).await?;
    let addr = app.local_addr();
    let sim_paths = configure(app.state(), "bench", &crm.base_url(), crm.admin_access_key(), addr).await?;
    let stub_paths = configure(app.state(), "stub", &format!("http://{stub}"), crm.admin_access_key(), addr).await?;
    tokio::spawn(app.run_until_stopped());
    let (throttled, throttled_data) = start_crmhub(true).await?;
    let throttled_addr = throttled.local_addr();
    let overload_paths =
        configure(throttled.state(), "stub", &format!("http://{stub}"), crm.admin_access_key(), throttled_addr).await?;
    tokio::spawn(throttled.run_until_stopped());

    let through = |name, addr, paths: &[String], expect| Target {
        name,
        addr,
        requests: paths.iter().map(|p| request(p)).collect(),
        expect,
        through_crmhub: true,
        only_at: None,
    };
    let crmhub = through("crmhub", addr, &sim_paths.terms, &[200]);
    let (status, body) = fetch(addr, &request(&sim_paths.one_term)).await?;
    if status != 200 || !body.contains("Susan Red") {
        bail!("crmhub did not answer the signed search: {status} {body}");
    }
    let gateway = through("crmhub-gw", addr, std::slice::from_ref(&sim_paths.no_term), &[400]);
    let (status, body) = fetch(addr, &gateway.requests[0]).await?;
    if status != 400 {
        bail!("crmhub did not refuse q=0: {status} {body}");
    }
    let through_stub = through("crmhub-stub", addr, &stub_paths.terms, &[200]);
    let coalesced = through("coalesced", addr, std::slice::from_ref(&stub_paths.one_term), &[200]);
    let (status, one_term_body) = fetch(addr, &coalesced.requests[0]).await?;
    if status != 200 || !one_term_body.contains("Susan Red") {
        bail!("crmhub did not answer the signed search through the stub: {status} {one_term_body}");
    }
    let overload =
        Target { only_at: Some(64), ..through("overload", throttled_addr, &overload_paths.terms, &[200, 503]) };

    let body: &'static str = one_term_body.leak();
    let router =
        axum::Router::new().route("/search", get(move || async move { ([(CONTENT_TYPE, "application/json")], body) }));
    let bare = serve_on(peers, router).await?;
    let bare = Target {
        name: "bare",
        addr: bare,
        requests: [request(&format!("/search?{}", query_of(&stub_paths.one_term)))].into(),
        expect: &[200],
        through_crmhub: false,
        only_at: None,
    };
    let crm_only = Target {
        name: "crm-only",
        addr: crm.addr(),
        requests: [request(&direct_query(&crm, first_page()).await?)].into(),
        ..bare_like()
    };
    let stub_direct = Target {
        name: "stub-direct",
        addr: stub,
        requests: [request(&format!(
            "/webservice.php?operation=query&sessionName=stub&query={}",
            encode(&contacts_query(&crm, first_page())?)
        ))]
        .into(),
        ..bare_like()
    };
    let floor = Target {
        name: "hops-floor",
        addr: start_hops_floor(stub, &crm).await?,
        requests: [request("/")].into(),
        through_crmhub: true,
        ..bare_like()
    };
    let targets = vec![bare, gateway, stub_direct, floor, through_stub, coalesced, crmhub, crm_only, overload];
    Ok((targets, stub_calls, Running { _crm: crm, _data: vec![data, throttled_data] }))
}

/// The fields of a row crmhub does not serve.
fn bare_like() -> Target {
    Target {
        name: "",
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        requests: Arc::new([]),
        expect: &[200],
        through_crmhub: false,
        only_at: None,
    }
}

async fn serve_on(peers: &tokio::runtime::Handle, router: axum::Router) -> anyhow::Result<SocketAddr> {
    let listener = peers.spawn(TcpListener::bind("127.0.0.1:0")).await??;
    let addr = listener.local_addr()?;
    peers.spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The contacts query of a search for `red`, as the native connector builds it, for `rows`
/// rows (the simulator's one account matches `red`, so the query includes its contacts).
fn contacts_query(crm: &VtigerSimHandle, rows: u32) -> anyhow::Result<String> {
    use crmhub_connectors::vtiger::queries::{SearchTerm, contact_search};
    let accounts: Vec<String> = crm.records("Accounts").iter().filter_map(|a| a.get("id").cloned()).collect();
    let term = SearchTerm::parse("red").context("a term")?;
    Ok(contact_search(&term, &accounts)?.limit(0, rows).render())
}

/// The rows of the first query of a search with the channel's default result limit.
fn first_page() -> u32 {
    crmhub_connectors::vtiger::queries::first_search_page(settings::DEFAULT_RESULT_LIMIT as usize)
}

/// A Vtiger that answers from memory, with no lock: every login succeeds, a query for Accounts
/// gets the simulator's accounts and any other query a full page of its search results for
/// `red` — each cut to the query's `LIMIT offset,rows`, as Vtiger would — so that a row through
/// it measures crmhub, not the CRM. Every request it answers is counted in `calls`.
async fn start_stub(
    peers: &tokio::runtime::Handle,
    crm: &VtigerSimHandle,
    calls: Arc<AtomicU64>,
) -> anyhow::Result<SocketAddr> {
    use axum::extract::RawQuery;
    let direct = direct_query(crm, crmhub_connectors::vtiger::vtql::PAGE).await?;
    let (_, page) = fetch(crm.addr(), &request(&direct)).await?;
    let rows = |answer: serde_json::Value| -> Vec<String> {
        answer["result"].as_array().into_iter().flatten().map(serde_json::Value::to_string).collect()
    };
    let contacts: &'static [String] = rows(serde_json::from_str(&page)?).leak();
    let accounts: Vec<serde_json::Value> = crm
        .records("Accounts")
        .iter()
        .map(|a| serde_json::json!({"id": a.get("id"), "accountname": a.get("accountname")}))
        .collect();
    let accounts: &'static [String] = rows(serde_json::json!({ "result": accounts })).leak();
    let first = within_limit(&contacts_query(crm, first_page())?, contacts);
    println!(
        "the stub holds {} contacts ({} bytes); a search's first contacts query gets {} bytes",
        contacts.len(),
        page.len(),
        first.len()
    );
    let challenge =
        r#"{"success":true,"result":{"token":"5f2a1c3b4d6e7","serverTime":1,"expireTime":4102444800}}"#.to_owned();
    let login =
        r#"{"success":true,"result":{"sessionName":"stub","userId":"19x1","version":"0.22","vtigerVersion":"8.2.0"}}"#
            .to_owned();
    let answer = move |query: Option<String>, body: String| {
        calls.fetch_add(1, Ordering::Relaxed);
        let query = query.unwrap_or_default();
        let vtql = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "query").map(|(_, q)| q);
        let text = match vtql {
            _ if query.contains("getchallenge") => challenge.clone(),
            _ if body.contains("operation=login") => login.clone(),
            Some(vtql) if vtql.contains("FROM Accounts") => within_limit(&vtql, accounts),
            Some(vtql) => within_limit(&vtql, contacts),
            None => r#"{"success":false,"error":{"code":"INVALID_OPERATION","message":"?"}}"#.to_owned(),
        };
        ([(CONTENT_TYPE, "application/json")], text)
    };
    let answer_post = answer.clone();
    let router = axum::Router::new().route(
        "/webservice.php",
        get(move |RawQuery(q): RawQuery| std::future::ready(answer(q, String::new())))
            .post(move |RawQuery(q): RawQuery, body: String| std::future::ready(answer_post(q, body))),
    );
    serve_on(peers, router).await
}

/// The floor of a search's CRM hops with crmhub's HTTP stack, on crmhub's runtime: an axum
/// handler that sends the two queries a search sends (matching accounts, then contacts) to the
/// stub with a plain reqwest client, reads both answers whole and answers 200 — no signature,
/// no parsing, no request log, no budget, no session.
async fn start_hops_floor(stub: SocketAddr, crm: &VtigerSimHandle) -> anyhow::Result<SocketAddr> {
    use crmhub_connectors::vtiger::queries::{SearchTerm, accounts_named};
    let term = SearchTerm::parse("red").context("a term")?;
    let url =
        |vtql: &str| format!("http://{stub}/webservice.php?operation=query&sessionName=stub&query={}", encode(vtql));
    let urls: Arc<[String; 2]> =
        Arc::new([url(&accounts_named(&term)?.render()), url(&contacts_query(crm, first_page())?)]);
    let client = reqwest::Client::builder().no_proxy().build()?;
    let relay = move || {
        let (client, urls) = (client.clone(), urls.clone());
        async move {
            for url in urls.iter() {
                let read = async { client.get(url).send().await?.error_for_status()?.bytes().await };
                if read.await.is_err() {
                    return axum::http::StatusCode::BAD_GATEWAY;
                }
            }
            axum::http::StatusCode::OK
        }
    };
    serve_on(&tokio::runtime::Handle::current(), axum::Router::new().route("/", get(relay))).await
}

/// Vtiger's answer to `vtql` out of `rows`: those its `LIMIT offset,rows` selects, or every one
/// without a LIMIT.
fn within_limit(vtql: &str, rows: &[String]) -> String {
    let limit = vtql.rsplit_once(" LIMIT ").and_then(|(_, limit)| {
        let (offset, count) = limit.trim_end_matches(';').split_once(',')?;
        Some((offset.trim().parse::<usize>().ok()?, count.trim().parse::<usize>().ok()?))
    });
    let (offset, count) = limit.unwrap_or((0, rows.len()));
    let chosen = rows.iter().skip(offset).take(count).map(String::as_str).collect::<Vec<_>>().join(",");
    format!(r#"{{"success":true,"result":[{chosen}]}}"#)
}

/// The search query crmhub sends, addressed to the simulator directly with a session of its own:
/// the CRM hop's own ceiling, for reading the crmhub row against.
async fn direct_query(crm: &VtigerSimHandle, rows: u32) -> anyhow::Result<String> {
    use md5::{Digest, Md5};
    let addr = crm.addr();
    let ask = |raw: String| async move {
        let (_, body) = fetch(addr, raw.as_bytes()).await?;
        anyhow::Ok(serde_json::from_str::<serde_json::Value>(&body)?)
    };
    let challenge =
        ask("GET /webservice.php?operation=getchallenge&username=admin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_owned())
            .await?;
    let token = challenge["result"]["token"].as_str().context("no challenge token")?;
    let key = hex::encode(Md5::digest(format!("{token}{}", crm.admin_access_key())));
    let form = format!("operation=login&username=admin&accessKey={key}");
    let login = ask(format!(
        "POST /webservice.php HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    ))
    .await?;
    let session = login["result"]["sessionName"].as_str().context("no session")?;
    Ok(format!("/webservice.php?operation=query&sessionName={session}&query={}", encode(&contacts_query(crm, rows)?)))
}

/// Signed request paths of one tenant's channel.
struct Paths {
    /// A search for `red`.
    one_term: String,
    /// Searches for [`TERMS`] spellings of `red`.
    terms: Vec<String>,
    /// A search with `q=0`, refused once verified.
    no_term: String,
}

/// Tenant `slug`, a Vtiger connection to `host` and the channel (secret `changeme!`), and the
/// signed paths of its searches.
async fn configure(
    state: &crmhub_server::AppState,
    slug: &str,
    host: &str,
    access_key: &str,
    addr: SocketAddr,
) -> anyhow::Result<Paths> {
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
        "name": "Vtiger", "kind": "vtiger", "host": host,
        "fields": {"username": "admin"}, "credentials": {"access_key": access_key},
    }))?;
    let connection = store.connections(tenant.id).create(NewConnection::try_from(input)?).await?;
    let public_url = url::Url::parse(&format!("http://{addr}"))?;
    let input = ChannelInput {
        connection_id: connection.id.to_string(),
        secret: Some(Secret::new(SECRET)),
        ..Default::default()
    };
    let view = settings::configure(state, &tenant, input, &public_url).await?;
    let expires = store.clock().now_secs() + i64::from(view.settings.max_ttl_secs);
    let path = |term: &str| {
        let url =
            signed_url(&public_url, &tenant.slug, Endpoint::Search, &[("q", term)], &Secret::new(SECRET), expires);
        url.trim_start_matches(public_url.as_str().trim_end_matches('/')).to_owned()
    };
    Ok(Paths {
        one_term: path("red"),
        terms: (0..TERMS).map(|i| path(&spelling_of_red(i))).collect(),
        no_term: path("0"),
    })
}

/// The `i`th spelling of `red`: its letters' case, then spaces before and after. Each is its
/// own search to crmhub (searches coalesce on the term as sent), and the stub's rows, the
/// contacts a CRM finds for `red`, are true matches of every one — as a CRM's answer to a term
/// would be.
fn spelling_of_red(i: usize) -> String {
    let letters: String =
        "red".chars().enumerate().map(|(bit, c)| if i >> bit & 1 == 1 { c.to_ascii_uppercase() } else { c }).collect();
    format!("{}{letters}{}", " ".repeat(i / 8 % 12), " ".repeat(i / 96))
}

fn query_of(path: &str) -> &str {
    path.split_once('?').map_or("", |(_, query)| query)
}

fn request(path: &str) -> Arc<[u8]> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n").into_bytes().into()
}

/// `connections` closed-loop clients sending `target`'s requests in turn for `duration`.
async fn measure(target: &Target, connections: usize, duration: Duration) -> anyhow::Result<Load> {
    let limits = Limits { duration, max_requests: MAX_REQUESTS, patience: PATIENCE };
    closed_loop(&Row::cycling(target.addr, target.requests.clone()), connections, limits).await
}
