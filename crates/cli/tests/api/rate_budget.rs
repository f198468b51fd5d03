//! Rate budgets across instances: two HTTP clients (as two crmhub instances) on one PostgreSQL
//! database spend one budget per CRM account. Needs PostgreSQL: `#[ignore]`d, so a run without
//! it counts the test as ignored; `scripts/test` runs it with `--include-ignored`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use crmhub_connectors::http::{
    CallContext, HttpClient, Lane, OutboundMetrics, OutboundPolicy, OutboundRequest, RateSpec,
};
use crmhub_core::SystemClock;
use crmhub_core::request_log::{RequestLogEntry, RequestLogSink};
use crmhub_store::{DatabaseUrl, MasterKey, MasterKeySource, Store, StoreOptions};

use crate::helpers::PgDatabase;

#[derive(Debug)]
struct NoLog;

impl RequestLogSink for NoLog {
    fn record(&self, _entry: RequestLogEntry) {}
}

const WINDOW: Duration = Duration::from_millis(1500);
const RATE: f64 = 10.0;
const BURST: u32 = 5;

fn instance(shared: Option<&Store>) -> HttpClient {
    let policy = OutboundPolicy {
        allow_private: vec!["127.0.0.1/32".parse().unwrap()],
        per_host: RateSpec::new(1000.0, 1000),
        ..OutboundPolicy::default()
    };
    let client = HttpClient::new(policy, OutboundMetrics::new(), Arc::new(NoLog), Arc::new(SystemClock)).unwrap();
    match shared {
        Some(store) => client.with_shared_budget(Arc::new(store.clone())),
        None => client,
    }
}

/// Every instance sends as fast as its budget lets it for the window; returns what the fake
/// CRM received.
async fn hits_in_window(instances: &[HttpClient]) -> usize {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let router = Router::new().route(
        "/",
        get(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    // Two connections of one CRM account, one on each instance.
    let ctx = CallContext { rate: Some(RateSpec::new(RATE, BURST)), ..CallContext::new("test", Lane::Background) }
        .budget_key("login:crm.example.com:admin");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in instances {
        for _ in 0..3 {
            let (client, ctx, url) = (client.clone(), ctx.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                // Only sends that start within the window count; the wait for a token is cut off.
                while let Ok(result) = tokio::time::timeout(
                    WINDOW.saturating_sub(started.elapsed()),
                    client.send(&ctx, OutboundRequest::get(url.clone())),
                )
                .await
                {
                    result.unwrap();
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    server.abort();
    hits.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set CRMHUB_TEST_DATABASE_URL and pass --include-ignored (scripts/test does both)"]
async fn two_instances_on_one_postgres_spend_one_budget_per_account() {
    let database = PgDatabase::create().await;
    let store = Store::open(StoreOptions::new(
        DatabaseUrl::parse(&database.url).unwrap(),
        MasterKeySource::Given(MasterKey::generate()),
    ))
    .await
    .unwrap();
    // The most one budget allows in the window: its burst, and its rate for the window's length.
    let allowed = BURST as usize + (RATE * WINDOW.as_secs_f64()).ceil() as usize;

    // Per process only, two instances get twice the account's limit.
    let alone = hits_in_window(&[instance(None), instance(None)]).await;
    assert!(alone > allowed + BURST as usize, "the control run should exceed one budget: {alone} ≤ {allowed}");

    // Sharing the database's budget, both together stay within one.
    let shared = hits_in_window(&[instance(Some(&store)), instance(Some(&store))]).await;
    eprintln!("requests in {WINDOW:?}: per process {alone}, shared {shared}; one budget allows {allowed}");
    assert!(shared <= allowed + 1, "{shared} requests in {WINDOW:?}; one budget allows {allowed}");
    assert!(shared >= allowed / 2, "the budget was not spent: only {shared} requests");

    store.close().await;
}
