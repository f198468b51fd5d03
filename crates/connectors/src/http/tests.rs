//! The policy against a real local server: address refusals, redirects, size caps, timeouts,
//! retries and the redacted request log.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use crmhub_core::request_log::{RequestLogEntry, RequestLogSink};
use crmhub_core::{ConnectionId, Secret, SystemClock, TenantId};
use url::Url;

use super::*;

#[derive(Debug, Default)]
struct CollectingLog(Mutex<Vec<RequestLogEntry>>);

impl RequestLogSink for CollectingLog {
    fn record(&self, entry: RequestLogEntry) {
        self.0.lock().unwrap().push(entry);
    }
}

#[derive(Clone, Default)]
struct Hits(Arc<AtomicUsize>);

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn client(policy: OutboundPolicy) -> (HttpClient, Arc<CollectingLog>) {
    let log = Arc::new(CollectingLog::default());
    let client = HttpClient::new(policy, OutboundMetrics::new(), log.clone(), Arc::new(SystemClock)).unwrap();
    (client, log)
}

fn loopback_allowed() -> OutboundPolicy {
    OutboundPolicy {
        allow_private: vec!["127.0.0.1/32".parse().unwrap()],
        retry_after_max_wait: Duration::from_secs(2),
        ..OutboundPolicy::default()
    }
}

fn ctx() -> CallContext {
    CallContext::new("test", Lane::Interactive).for_connection(TenantId::new(), ConnectionId::new())
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

#[tokio::test]
async fn private_link_local_and_loopback_targets_are_refused_without_allow_listing() {
    let (client, log) = client(OutboundPolicy::default());
    for target in ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://[::1]:9/", "http://0.0.0.0/"]
    {
        let err = client.send(&ctx(), OutboundRequest::get(url(target))).await.unwrap_err();
        assert!(matches!(err, OutboundError::Blocked(_)), "{target}: {err:?}");
    }
    // A name is judged by what it resolves to.
    let err = client.send(&ctx(), OutboundRequest::get(url("http://localhost:9/"))).await.unwrap_err();
    match err {
        OutboundError::Blocked(refused) => assert!(refused.ip.is_loopback(), "{refused}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(log.0.lock().unwrap().iter().all(|e| e.outcome == "blocked"));
}

#[tokio::test]
async fn a_redirect_to_a_private_address_is_refused() {
    let base = serve(
        Router::new()
            .route("/to-private", get(|| async { (AxumStatus::FOUND, [("location", "http://10.0.0.1/admin")]) }))
            .route(
                "/to-metadata",
                get(|| async {
                    (AxumStatus::TEMPORARY_REDIRECT, [("location", "http://169.254.169.254/latest/meta-data/")])
                }),
            )
            .route("/to-localhost", get(|| async { (AxumStatus::FOUND, [("location", "http://localhost:1/")]) })),
    )
    .await;
    let (client, _) = client(loopback_allowed());
    for path in ["/to-private", "/to-metadata"] {
        let err = client.send(&ctx(), OutboundRequest::get(url(&format!("{base}{path}")))).await.unwrap_err();
        assert!(matches!(err, OutboundError::Blocked(_)), "{path}: {err:?}");
    }
    // localhost also resolves to ::1, which is not allow-listed; 127.0.0.1 is, so the
    // connection is tried (and refused by the closed port) rather than blocked.
    let err = client.send(&ctx(), OutboundRequest::get(url(&format!("{base}/to-localhost")))).await.unwrap_err();
    assert!(matches!(err, OutboundError::Connect(_)), "{err:?}");
}

#[tokio::test]
async fn redirects_are_followed_within_bounds_and_drop_credentials_across_origins() {
    let seen_auth = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let other = serve(Router::new().route(
        "/landing",
        get({
            let seen = seen_auth.clone();
            move |headers: AxumHeaders| async move {
                assert!(headers.get("x-api-key").is_none(), "an API key header crossed origins");
                seen.lock().unwrap().push(headers.get("authorization").map(|v| v.to_str().unwrap().to_owned()));
                "landed"
            }
        }),
    ))
    .await;
    let target = format!("{other}/landing");
    let base = serve(
        Router::new()
            .route(
                "/hop",
                get({
                    let target = target.clone();
                    move || async move { (AxumStatus::FOUND, [("location", target)]) }
                }),
            )
            .route("/hop-post", post(move || async move { (AxumStatus::TEMPORARY_REDIRECT, [("location", target)]) }))
            .route("/loop", get(|| async { (AxumStatus::FOUND, [("location", "/loop")]) })),
    )
    .await;
    let (client, _) = client(loopback_allowed());
    let request = OutboundRequest::get(url(&format!("{base}/hop")))
        .header(header::AUTHORIZATION, HeaderValue::from_static("Bearer secret"))
        .header(header::HeaderName::from_static("x-api-key"), HeaderValue::from_static("key-123"));
    let response = client.send(&ctx(), request).await.unwrap();
    assert_eq!(&response.body[..], b"landed");
    assert_eq!(*seen_auth.lock().unwrap(), [None], "Authorization must not cross origins");

    // A body (a login form, say) is never resent to another origin.
    let post = OutboundRequest::post(url(&format!("{base}/hop-post")), RequestBody::form(&[("accessKey", "secret")]));
    let err = client.send(&ctx(), post).await.unwrap_err();
    assert!(matches!(&err, OutboundError::InvalidUrl(m) if m.contains("resend the request body")), "{err:?}");

    let err = client.send(&ctx(), OutboundRequest::get(url(&format!("{base}/loop")))).await.unwrap_err();
    assert_eq!(err, OutboundError::TooManyRedirects { limit: 5 });
}

#[tokio::test]
async fn a_50_mb_response_is_cut_at_the_cap() {
    const FIFTY_MB: usize = 50 * 1024 * 1024;
    let base = serve(Router::new().route("/declared", get(|| async { vec![b'x'; FIFTY_MB] })).route(
        "/streamed",
        get(|| async {
            let chunks = futures_util::stream::iter((0..50).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 1024 * 1024])));
            Body::from_stream(chunks)
        }),
    ))
    .await;
    let policy = OutboundPolicy { max_response_bytes: 1024 * 1024, ..loopback_allowed() };
    let (client, log) = client(policy);
    for path in ["/declared", "/streamed"] {
        let err = client.send(&ctx(), OutboundRequest::get(url(&format!("{base}{path}")))).await.unwrap_err();
        assert_eq!(err, OutboundError::TooLarge { limit: 1024 * 1024 }, "{path}");
    }
    let log = log.0.lock().unwrap();
    assert!(log.iter().all(|e| e.outcome == "too_large" && e.status == Some(200)));
}

#[tokio::test]
async fn slow_remotes_time_out() {
    let base = serve(Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }),
    ))
    .await;
    let policy = OutboundPolicy { request_timeout: Duration::from_millis(300), max_retries: 0, ..loopback_allowed() };
    let (client, _) = client(policy);
    let err = client.send(&ctx(), OutboundRequest::get(url(&format!("{base}/slow")))).await.unwrap_err();
    assert_eq!(err, OutboundError::Timeout);
}

#[tokio::test]
async fn retry_after_is_honoured_in_place_or_returned() {
    async fn limited(State(hits): State<Hits>) -> Response {
        if hits.0.fetch_add(1, Ordering::SeqCst) == 0 {
            (AxumStatus::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response()
        } else {
            "ok".into_response()
        }
    }
    let hits = Hits::default();
    let base = serve(
        Router::new()
            .route("/limited", get(limited))
            .route("/long", get(|| async { (AxumStatus::TOO_MANY_REQUESTS, [("retry-after", "3600")]) }))
            .with_state(hits.clone()),
    )
    .await;
    let (client, _) = client(loopback_allowed());
    let started = std::time::Instant::now();
    let response = client.send(&ctx(), OutboundRequest::get(url(&format!("{base}/limited")))).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_secs(1), "waited out Retry-After");
    assert_eq!(hits.0.load(Ordering::SeqCst), 2);

    let err = client.send(&ctx(), OutboundRequest::get(url(&format!("{base}/long")))).await.unwrap_err();
    assert_eq!(err, OutboundError::RateLimited { retry_after: Some(Duration::from_secs(3600)) });
}

#[tokio::test]
async fn only_safe_requests_are_retried_after_a_server_error() {
    let hits = Hits::default();
    let base = serve(
        Router::new()
            .route(
                "/flaky",
                get(|State(h): State<Hits>| async move {
                    h.0.fetch_add(1, Ordering::SeqCst);
                    AxumStatus::SERVICE_UNAVAILABLE
                }),
            )
            .route(
                "/create",
                post(|State(h): State<Hits>| async move {
                    h.0.fetch_add(1, Ordering::SeqCst);
                    AxumStatus::BAD_GATEWAY
                }),
            )
            .with_state(hits.clone()),
    )
    .await;
    let policy = OutboundPolicy { max_retries: 2, ..loopback_allowed() };
    let (client, _) = client(policy);
    let response = client.send(&ctx(), OutboundRequest::get(url(&format!("{base}/flaky")))).await.unwrap();
    assert_eq!((response.status, hits.0.swap(0, Ordering::SeqCst)), (StatusCode::SERVICE_UNAVAILABLE, 3));

    let body = RequestBody::form(&[("element", "{}")]);
    let post = OutboundRequest::post(url(&format!("{base}/create")), body.clone());
    let response = client.send(&ctx(), post).await.unwrap();
    assert_eq!((response.status, hits.0.swap(0, Ordering::SeqCst)), (StatusCode::BAD_GATEWAY, 1), "POST not repeated");

    let opted_in = OutboundRequest::post(url(&format!("{base}/create")), body).retry(RetryMode::Always);
    client.send(&ctx(), opted_in).await.unwrap();
    assert_eq!(hits.0.load(Ordering::SeqCst), 3, "the caller said a repeat is harmless");
}

#[tokio::test]
async fn the_request_log_is_redacted() {
    let base = serve(Router::new().route(
        "/webservice.php",
        post(|| async { axum::Json(serde_json::json!({"success": true, "result": {"sessionName": "abcdef0123456789abcde", "userId": "19x1"}})) }),
    ))
    .await;
    let (client, log) = client(loopback_allowed());
    let ctx = ctx().redacting([Secret::new("my-access-key-value")]);
    let body = RequestBody::form(&[
        ("operation", "login"),
        ("username", "admin"),
        ("accessKey", "0123abcd"),
        ("note", "my-access-key-value"),
    ]);
    let target = url(&format!("{base}/webservice.php?operation=login&sessionName=abcdef0123456789abcde"));
    client.send(&ctx, OutboundRequest::post(target, body)).await.unwrap();
    let entries = log.0.lock().unwrap();
    let entry = &entries[0];
    let all = format!("{} {:?} {:?}", entry.url, entry.request_body, entry.response_body);
    for secret in ["abcdef0123456789abcde", "0123abcd", "my-access-key-value"] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
    assert!(all.contains("username=admin") && all.contains("19x1"), "{all}");
    assert_eq!((entry.status, entry.outcome.as_str()), (Some(200), "ok"));
}

/// A shared budget in memory, as the database keeps it: counts what it granted.
#[derive(Debug, Default)]
struct CountingBudget {
    granted: AtomicUsize,
    asks: AtomicUsize,
}

#[async_trait::async_trait]
impl crmhub_core::rate_budget::SharedRateBudget for CountingBudget {
    async fn take(
        &self,
        _key: &str,
        _per_second: f64,
        _burst: u32,
        want: u32,
    ) -> Result<crmhub_core::rate_budget::BudgetGrant, crmhub_core::rate_budget::RateBudgetError> {
        self.asks.fetch_add(1, Ordering::SeqCst);
        self.granted.fetch_add(want as usize, Ordering::SeqCst);
        Ok(crmhub_core::rate_budget::BudgetGrant { granted: want, retry_in: Duration::ZERO })
    }
}

#[tokio::test]
async fn connections_with_one_budget_key_share_one_bucket() {
    let base = serve(Router::new().route("/", get(|| async { "ok" }))).await;
    let (client, _) = client(loopback_allowed());
    let rate = Some(RateSpec::new(10.0, 1));
    let account = |key: Option<&str>| {
        let mut ctx = ctx();
        ctx.rate = rate;
        ctx.budget_key = key.map(str::to_owned);
        ctx
    };
    // Two connections, each with its own budget: 3 calls each at 10/s take ~0.2 s.
    let (a, b) = (account(None), account(None));
    let started = std::time::Instant::now();
    for _ in 0..3 {
        client.send(&a, OutboundRequest::get(url(&base))).await.unwrap();
        client.send(&b, OutboundRequest::get(url(&base))).await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_millis(400), "{:?}", started.elapsed());
    // The same two calls on one account: 6 calls of one 10/s budget take at least 0.5 s.
    let (a, b) = (account(Some("login:crm.example.com:admin")), account(Some("login:crm.example.com:admin")));
    let started = std::time::Instant::now();
    for _ in 0..3 {
        client.send(&a, OutboundRequest::get(url(&base))).await.unwrap();
        client.send(&b, OutboundRequest::get(url(&base))).await.unwrap();
    }
    assert!(started.elapsed() >= Duration::from_millis(450), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_shared_budget_is_asked_in_leases_not_per_call() {
    let base = serve(Router::new().route("/", get(|| async { "ok" }))).await;
    let shared = Arc::new(CountingBudget::default());
    let (client, _) = client(loopback_allowed());
    let client = client.with_shared_budget(shared.clone());
    let mut ctx = ctx();
    ctx.rate = Some(RateSpec::new(100.0, 200));
    for _ in 0..20 {
        client.send(&ctx, OutboundRequest::get(url(&base))).await.unwrap();
    }
    // The connection's budget (100/s) leases 10 tokens at a time: 2 asks; the host's (the
    // default 50/s) leases 5: 4 asks. Not 40.
    assert_eq!(shared.asks.load(Ordering::SeqCst), 2 + 4, "{shared:?}");
}

/// A connection whose budget is 2 requests per second, burst 1, in `lane`.
fn slow_connection(lane: Lane, connection: ConnectionId) -> CallContext {
    let mut ctx = CallContext::new("test", lane).for_connection(TenantId::new(), connection);
    ctx.rate = Some(RateSpec::new(2.0, 1));
    ctx
}

#[tokio::test]
async fn an_interactive_call_that_would_wait_too_long_is_refused_at_once() {
    let base = serve(Router::new().route("/", get(|| async { "ok" }))).await;
    let policy = OutboundPolicy { interactive_max_wait: Duration::from_millis(200), ..loopback_allowed() };
    let (client, _) = client(policy);
    let ctx = slow_connection(Lane::Interactive, ConnectionId::new());
    client.send(&ctx, OutboundRequest::get(url(&base))).await.unwrap();
    // The next token is 500 ms away, past the 200 ms bound: told so without waiting.
    let started = std::time::Instant::now();
    let err = client.send(&ctx, OutboundRequest::get(url(&base))).await.unwrap_err();
    let waited = started.elapsed();
    let OutboundError::RateLimited { retry_after: Some(retry_after) } = err else { panic!("{err:?}") };
    assert!(waited < Duration::from_millis(50), "refused after {waited:?}");
    assert!(retry_after > Duration::from_millis(400) && retry_after <= Duration::from_millis(500), "{retry_after:?}");
    // Within the bound, it waits its turn.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let started = std::time::Instant::now();
    client.send(&ctx, OutboundRequest::get(url(&base))).await.unwrap();
    assert!(started.elapsed() <= Duration::from_millis(250), "{:?}", started.elapsed());
}

#[tokio::test]
async fn background_jobs_saturating_a_budget_do_not_hold_up_an_interactive_call() {
    let base = serve(Router::new().route("/", get(|| async { "ok" }))).await;
    let (client, _) = client(loopback_allowed());
    let connection = ConnectionId::new();
    let jobs: Vec<_> = (0..20)
        .map(|_| {
            let (client, ctx, target) = (client.clone(), slow_connection(Lane::Background, connection), url(&base));
            tokio::spawn(async move {
                loop {
                    let _ = client.send(&ctx, OutboundRequest::get(target.clone())).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let ctx = slow_connection(Lane::Interactive, connection);
    for _ in 0..3 {
        let started = std::time::Instant::now();
        client.send(&ctx, OutboundRequest::get(url(&base))).await.expect("within the bound");
        // One refill at 2/s at most, never the 20 jobs' backlog (10 s).
        assert!(started.elapsed() <= Duration::from_millis(550), "{:?}", started.elapsed());
    }
    jobs.iter().for_each(|job| job.abort());
}

/// A shared budget that is always spent: the next token is `retry_in` away.
#[derive(Debug)]
struct SpentBudget {
    retry_in: Duration,
}

#[async_trait::async_trait]
impl crmhub_core::rate_budget::SharedRateBudget for SpentBudget {
    async fn take(
        &self,
        _key: &str,
        _per_second: f64,
        _burst: u32,
        _want: u32,
    ) -> Result<crmhub_core::rate_budget::BudgetGrant, crmhub_core::rate_budget::RateBudgetError> {
        Ok(crmhub_core::rate_budget::BudgetGrant { granted: 0, retry_in: self.retry_in })
    }
}

#[tokio::test]
async fn a_spent_shared_budget_refuses_interactive_calls_within_the_bound() {
    let base = serve(Router::new().route("/", get(|| async { "ok" }))).await;
    let policy = OutboundPolicy { interactive_max_wait: Duration::from_millis(300), ..loopback_allowed() };
    let (client, _) = client(policy);
    let client = client.with_shared_budget(Arc::new(SpentBudget { retry_in: Duration::from_secs(4) }));
    let started = std::time::Instant::now();
    let err = client.send(&ctx(), OutboundRequest::get(url(&base))).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
    assert_eq!(err, OutboundError::RateLimited { retry_after: Some(Duration::from_secs(4)) });

    // Other instances spent it for 200 ms: within the bound, the call waits and goes ahead…
    // of a budget that is then still spent, so it is cut off at the bound, not later.
    let client = client.with_shared_budget(Arc::new(SpentBudget { retry_in: Duration::from_millis(200) }));
    let started = std::time::Instant::now();
    let err = client.send(&ctx(), OutboundRequest::get(url(&base))).await.unwrap_err();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(150) && waited < Duration::from_millis(400), "{waited:?}");
    assert!(matches!(err, OutboundError::RateLimited { .. }), "{err:?}");
}

#[tokio::test]
async fn the_calls_of_one_interactive_request_share_one_bound() {
    let base = serve(Router::new().route("/", get(|| async { "ok" }))).await;
    let policy = OutboundPolicy { interactive_max_wait: Duration::from_millis(800), ..loopback_allowed() };
    let (client, _) = client(policy);
    let send = |ctx: CallContext| {
        let (client, target) = (client.clone(), url(&base));
        async move { client.send(&ctx, OutboundRequest::get(target)).await }
    };
    let started = std::time::Instant::now();
    let ctx = slow_connection(Lane::Interactive, ConnectionId::new());
    let (first, second, third) = interactive_request(async {
        let first = send(ctx.clone()).await;
        let second = send(ctx.clone()).await;
        // 500 ms of the 800 are spent; the next token is 500 ms away again.
        (first, second, send(ctx.clone()).await)
    })
    .await;
    first.unwrap();
    second.expect("after the first call, the rest of the bound");
    assert!(matches!(third, Err(OutboundError::RateLimited { .. })), "{third:?}");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(700), "{elapsed:?}");

    // Outside a request each call has the whole bound; inside one, its first call only half
    // of it, so that the calls after it can still be served.
    let ctx = slow_connection(Lane::Interactive, ConnectionId::new());
    send(ctx.clone()).await.unwrap();
    let admitted = interactive_request(send(ctx.clone())).await;
    assert!(matches!(admitted, Err(OutboundError::RateLimited { .. })), "{admitted:?}");
    send(ctx).await.expect("500 ms is within 800");
}

#[test]
fn a_session_learnt_after_a_redaction_is_masked_by_the_next() {
    let secrets = KnownSecrets::default();
    secrets.add_credentials([Secret::new("access-key-1")]);
    assert_eq!(secrets.redactor().text("access-key-1 sess-0001"), "[redacted] sess-0001");
    secrets.remember_session(&Secret::new("sess-0001"));
    assert_eq!(secrets.redactor().text("access-key-1 sess-0001"), "[redacted] [redacted]");
    secrets.add_credentials([Secret::new("password-2")]);
    assert_eq!(secrets.redactor().text("password-2 sess-0001"), "[redacted] [redacted]");
}
