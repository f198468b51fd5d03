//! Signed social-inbox `/search` through crmhub — SQLite, the Vtiger simulator on loopback, a
//! URL signed the way the platform signs it — beside a bare axum handler that returns the same
//! JSON: requests per second and p50/p99 latency at 4 and 64 connections, and the ratio.
//!
//! ```sh
//! cargo bench -p crmhub --bench social_search          # release build; not part of scripts/test
//! ```
//!
//! The load generator keeps N HTTP/1.1 keep-alive connections to 127.0.0.1, each sending its
//! next request when the previous answer is in (closed loop), for a fixed time and at most a
//! fixed number of requests. It runs on its own thread and runtime; crmhub, the simulator and
//! the bare handler share one multi-threaded runtime, as they would share the machine.
//! Two CRMs stand behind crmhub. The Vtiger simulator models Vtiger (one lock, a VTQL scan per
//! query), so a row through it mostly measures the simulator; its `crm-only` row sends crmhub's
//! own contacts query (built by the connector's query builder, so it cannot drift) straight to
//! it. A canned-answer stub answers the same queries from memory with no lock: `crmhub-stub`
//! against `stub-direct` (one stub answer per request) is crmhub's own cost with its outbound
//! hop. A search makes two CRM calls (matching accounts, then contacts), so `crmhub-stub` is
//! reported as a ratio to `stub-direct` as well as to `bare`.
//! The outbound rate budget is raised for the run: the default per-connection budget (25 req/s)
//! would otherwise measure the throttle rather than the gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CONNECTIONS: [usize; 2] = [4, 64];
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);
/// Requests per measurement at most, whatever the speed.
const MAX_REQUESTS: i64 = 2_000_000;
/// Seeded contacts besides Susan Red and Frank Redford, as in `crmhub demo`.
const SEEDED_CONTACTS: usize = 300;
const SECRET: &str = "changeme!";

struct Target {
    name: &'static str,
    addr: SocketAddr,
    request: Arc<[u8]>,
    /// The status every answer must have; others count as errors.
    expect: u16,
}

struct Measurement {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Measurement {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// `cargo bench -p crmhub --bench social_search -- NAME…` runs only the targets named (for
/// profiling one of them); cargo's own `--bench` flag is ignored.
fn main() -> anyhow::Result<()> {
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let servers = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (targets, _keep) = servers.block_on(start())?;
    let targets: Vec<Target> =
        targets.into_iter().filter(|t| only.is_empty() || only.iter().any(|o| o == t.name)).collect();
    let load = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("social /search: crmhub (SQLite, Vtiger simulator on loopback) vs a bare axum handler");
    println!("{cpus} CPUs; servers on one tokio runtime ({cpus} workers), load on its own thread");
    println!("closed loop, keep-alive; {}s warm-up + {}s measured per row", WARMUP.as_secs(), MEASURE.as_secs());
    println!("crmhub-gw: the same signed request with q=0 (verified, answered 400 before any CRM call)");
    println!("crm-only: crmhub's contacts query, straight to the Vtiger simulator");
    println!("crmhub-stub / stub-direct: the same through crmhub to the canned-answer stub, and straight to it\n");
    println!(
        "{:>5}  {:<11} {:>9} {:>8} {:>8} {:>7} {:>8} {:>9}",
        "conns", "target", "req/s", "p50 ms", "p99 ms", "errors", "vs bare", "vs stub"
    );
    for connections in CONNECTIONS {
        let mut rates = std::collections::HashMap::new();
        for target in &targets {
            load.block_on(measure(target, connections, WARMUP))?;
            let m = load.block_on(measure(target, connections, MEASURE))?;
            let rate = m.per_second();
            rates.insert(target.name, rate);
            let ratio_to =
                |name: &str| rates.get(name).map_or_else(String::new, |r| format!("{:.1}%", rate / r * 100.0));
            let vs_stub = if target.name == "crmhub-stub" { ratio_to("stub-direct") } else { String::new() };
            println!(
                "{connections:>5}  {:<11} {:>9.0} {:>8.3} {:>8.3} {:>7} {:>8} {:>9}",
                target.name,
                rate,
                m.p50.as_secs_f64() * 1e3,
                m.p99.as_secs_f64() * 1e3,
                m.errors,
                ratio_to("bare"),
                vs_stub
            );
        }
        println!();
    }
    Ok(())
}

/// What must stay alive while the load runs.
struct Running {
    _crm: VtigerSimHandle,
    _data: tempfile::TempDir,
}

/// Starts the simulator, crmhub with tenant `bench` and its channel, and the bare handler
/// serving exactly the body crmhub answered.
async fn start() -> anyhow::Result<(Vec<Target>, Running)> {
    let crm = vtiger::try_spawn(VtigerSimOptions::default()).await?;
    let account = crm.insert_record("Accounts", [("accountname", "Redwood Supplies")]);
    let contacts = [
        vec![("firstname", "Susan"), ("lastname", "Red"), ("account_id", account.as_str())],
        vec![("firstname", "Frank"), ("lastname", "Redford")],
    ];
    for fields in contacts {
        crm.insert_record("Contacts", fields);
    }
    crm.seed_demo_contacts(SEEDED_CONTACTS);

    let data = tempfile::tempdir()?;
    let mut config = Settings::defaults()?;
    config.data_dir = data.path().to_path_buf();
    config.server.listen = "127.0.0.1:0".into();
    config.admin.token = "bench-admin-token-0123456789".into();
    config.outbound.allow_private = vec!["127.0.0.1/32".into()];
    config.outbound.per_connection_rps = 1e6;
    config.outbound.per_connection_burst = 1_000_000;
    config.outbound.per_host_rps = 1e6;
    config.outbound.per_host_burst = 1_000_000;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let app = Application::builder(config).listener(listener).build().await?;
    let crmhub = app.local_addr();
    let path = configure(app.state(), "bench", &crm.base_url(), crm.admin_access_key(), crmhub).await?;
    let stub = start_stub(&crm).await?;
    let (stub_search, _) =
        configure(app.state(), "stub", &format!("http://{stub}"), crm.admin_access_key(), crmhub).await?;
    tokio::spawn(app.run_until_stopped());

    let (search, no_term) = path;
    let gateway = Target { name: "crmhub-gw", addr: crmhub, request: request(&no_term), expect: 400 };
    let crmhub = Target { name: "crmhub", addr: crmhub, request: request(&search), expect: 200 };
    let (status, body) = fetch(&crmhub).await?;
    if status != 200 || !body.contains("Susan Red") {
        bail!("crmhub did not answer the signed search: {status} {body}");
    }
    let (status, body) = fetch(&gateway).await?;
    if status != 400 {
        bail!("crmhub did not refuse q=0: {status} {body}");
    }
    let bare = TcpListener::bind("127.0.0.1:0").await?;
    let bare_addr = bare.local_addr()?;
    let body: &'static str = body.leak();
    let router =
        axum::Router::new().route("/search", get(move || async move { ([(CONTENT_TYPE, "application/json")], body) }));
    tokio::spawn(async move { axum::serve(bare, router).await });
    let bare = Target {
        name: "bare",
        addr: bare_addr,
        request: request(&format!("/search?{}", query_of(&search))),
        expect: 200,
    };
    let crm_only =
        Target { name: "crm-only", addr: crm.addr(), request: request(&direct_query(&crm).await?), expect: 200 };
    let through_stub = Target { name: "crmhub-stub", addr: crmhub.addr, request: request(&stub_search), expect: 200 };
    let (status, body) = fetch(&through_stub).await?;
    if status != 200 || !body.contains("Susan Red") {
        bail!("crmhub did not answer the signed search through the stub: {status} {body}");
    }
    let stub_direct = Target {
        name: "stub-direct",
        addr: stub,
        request: request(&format!(
            "/webservice.php?operation=query&sessionName=stub&query={}",
            encode(&contacts_query(&crm)?)
        )),
        expect: 200,
    };
    Ok((vec![bare, crmhub, gateway, crm_only, stub_direct, through_stub], Running { _crm: crm, _data: data }))
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The contacts query of a search for `red`, as the native connector builds it (the simulator's
/// one account matches `red`, so the query includes its contacts).
fn contacts_query(crm: &VtigerSimHandle) -> anyhow::Result<String> {
    use crmhub_connectors::vtiger::queries::{SearchTerm, contact_search};
    let accounts: Vec<String> = crm.records("Accounts").iter().filter_map(|a| a.get("id").cloned()).collect();
    let term = SearchTerm::parse("red").context("a term")?;
    Ok(contact_search(&term, &accounts)?.limit(0, crmhub_connectors::vtiger::vtql::PAGE).render())
}

/// A Vtiger that answers from memory, with no lock: every login succeeds, a query for Accounts
/// gets the simulator's accounts and any other query its search results for `red` — so that a
/// row through it measures crmhub, not the CRM.
async fn start_stub(crm: &VtigerSimHandle) -> anyhow::Result<SocketAddr> {
    use axum::extract::RawQuery;
    let direct = direct_query(crm).await?;
    let (_, contacts) =
        fetch(&Target { name: "setup", addr: crm.addr(), request: request(&direct), expect: 200 }).await?;
    let accounts: Vec<serde_json::Value> = crm
        .records("Accounts")
        .iter()
        .map(|a| serde_json::json!({"id": a.get("id"), "accountname": a.get("accountname")}))
        .collect();
    let accounts: &'static str = serde_json::json!({"success": true, "result": accounts}).to_string().leak();
    let contacts: &'static str = contacts.leak();
    let challenge: &'static str =
        r#"{"success":true,"result":{"token":"5f2a1c3b4d6e7","serverTime":1,"expireTime":4102444800}}"#;
    let login: &'static str =
        r#"{"success":true,"result":{"sessionName":"stub","userId":"19x1","version":"0.22","vtigerVersion":"8.2.0"}}"#;
    let answer = move |query: Option<String>, body: String| async move {
        let query = query.unwrap_or_default();
        let text = if query.contains("getchallenge") {
            challenge
        } else if body.contains("operation=login") {
            login
        } else if query.contains("FROM+Accounts") {
            accounts
        } else {
            contacts
        };
        ([(CONTENT_TYPE, "application/json")], text)
    };
    let router = axum::Router::new().route(
        "/webservice.php",
        get(move |RawQuery(q): RawQuery| answer(q, String::new()))
            .post(move |RawQuery(q): RawQuery, body: String| answer(q, body)),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

/// The search query crmhub sends, addressed to the simulator directly with a session of its own:
/// the CRM hop's own ceiling, for reading the crmhub row against.
async fn direct_query(crm: &VtigerSimHandle) -> anyhow::Result<String> {
    use md5::{Digest, Md5};
    let addr = crm.addr();
    let ask = |raw: String| async move {
        let target = Target { name: "setup", addr, request: raw.into_bytes().into(), expect: 200 };
        let (_, body) = fetch(&target).await?;
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
    Ok(format!("/webservice.php?operation=query&sessionName={session}&query={}", encode(&contacts_query(crm)?)))
}

/// Tenant `slug`, a Vtiger connection to `host` and the channel (secret `changeme!`); returns
/// the paths of a signed search for `red` and of a signed search with `q=0`.
async fn configure(
    state: &crmhub_server::AppState,
    slug: &str,
    host: &str,
    access_key: &str,
    addr: SocketAddr,
) -> anyhow::Result<(String, String)> {
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
    Ok((path("red"), path("0")))
}

fn query_of(path: &str) -> &str {
    path.split_once('?').map_or("", |(_, query)| query)
}

fn request(path: &str) -> Arc<[u8]> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n").into_bytes().into()
}

async fn fetch(target: &Target) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(target.addr).await?;
    stream.write_all(&target.request).await?;
    let mut buf = Vec::new();
    let (status, body_at) = read_response(&mut stream, &mut buf).await?;
    Ok((status, String::from_utf8_lossy(&buf[body_at..]).into_owned()))
}

/// Runs `connections` closed-loop clients against `target` for `duration`.
async fn measure(target: &Target, connections: usize, duration: Duration) -> anyhow::Result<Measurement> {
    let budget = Arc::new(AtomicI64::new(MAX_REQUESTS));
    let started = Instant::now();
    let deadline = started + duration;
    let clients: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(client(target.addr, target.request.clone(), target.expect, deadline, budget.clone())))
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for client in clients {
        let (mut mine, failed) = client.await.context("load client")??;
        latencies.append(&mut mine);
        errors += failed;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |pct: usize| latencies.get(latencies.len() * pct / 100).copied().unwrap_or_default();
    Ok(Measurement { requests: latencies.len(), errors, elapsed, p50: at(50), p99: at(99) })
}

/// One keep-alive connection: latencies of its requests, and how many had another status
/// than `expect`.
async fn client(
    addr: SocketAddr,
    request: Arc<[u8]>,
    expect: u16,
    deadline: Instant,
    budget: Arc<AtomicI64>,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    let mut latencies = Vec::with_capacity(16_384);
    let mut errors = 0;
    while Instant::now() < deadline && budget.fetch_sub(1, Ordering::Relaxed) > 0 {
        let sent = Instant::now();
        stream.write_all(&request).await?;
        let (status, _) = read_response(&mut stream, &mut buf).await?;
        latencies.push(sent.elapsed());
        errors += usize::from(status != expect);
    }
    Ok((latencies, errors))
}

/// Reads one response with a `Content-Length` into `buf`: its status, and where the body starts.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<(u16, usize)> {
    buf.clear();
    loop {
        if stream.read_buf(buf).await? == 0 {
            bail!("connection closed mid-response");
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = std::str::from_utf8(&buf[..end])?;
        let status = head.get(9..12).and_then(|code| code.parse().ok()).context("no status line")?;
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
            })
            .context("response without Content-Length")?;
        let body_at = end + 4;
        while buf.len() < body_at + length {
            if stream.read_buf(buf).await? == 0 {
                bail!("connection closed mid-body");
            }
        }
        return Ok((status, body_at));
    }
}
