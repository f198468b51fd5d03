use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Json;
use axum::http::Request;
use crmhub_core::{TenantName, TenantSlug};
use crmhub_store::tenants::NewTenant;
use crmhub_store::{DatabaseUrl, MasterKeySource, StoreOptions};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::*;

const ROUTE: &str = "POST /t/{tenant}/contacts";

#[test]
fn keys_are_one_to_255_visible_ascii_characters() {
    let longest = "k".repeat(MAX_LEN);
    for key in ["7b03c785-5da6-422a-9426-10638484709e", "a", "A~!#$%&'*+-.^_`|", longest.as_str()] {
        assert_eq!(IdempotencyKey::parse(key.as_bytes()).unwrap().as_str(), key);
    }
    let too_long = "k".repeat(MAX_LEN + 1);
    for key in ["", " ", "a b", "a\tb", "ünï", "a\u{7f}", too_long.as_str()] {
        let err = IdempotencyKey::parse(key.as_bytes()).unwrap_err();
        assert!(matches!(&err, ApiError::BadRequest(m) if m.contains("Idempotency-Key")), "{key:?}: {err:?}");
    }
    assert!(IdempotencyKey::parse(b"\xff\xfe").is_err());
}

#[tokio::test]
async fn the_extractor_reads_one_header_and_refuses_bad_ones() {
    async fn extract(keys: &[&str]) -> Result<Option<IdempotencyKey>, ApiError> {
        let mut request = Request::builder();
        for key in keys {
            request = request.header("idempotency-key", *key);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        <IdempotencyKey as OptionalFromRequestParts<()>>::from_request_parts(&mut parts, &()).await
    }
    assert_eq!(extract(&[]).await.unwrap(), None);
    assert_eq!(extract(&["abc"]).await.unwrap().unwrap().as_str(), "abc");
    let bad = extract(&["a b"]).await.unwrap_err().into_response();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let several = extract(&["a", "b"]).await.unwrap_err();
    assert!(several.to_string().contains("one Idempotency-Key header"), "{several}");
}

#[test]
fn the_request_hash_covers_route_and_body() {
    let hash = request_hash(ROUTE, b"{\"name\":\"Ann\"}");
    assert_eq!(hash.len(), 64);
    assert_eq!(hash, request_hash(ROUTE, b"{\"name\":\"Ann\"}"));
    assert_ne!(hash, request_hash(ROUTE, b"{\"name\":\"Bob\"}"));
    assert_ne!(hash, request_hash("POST /t/{tenant}/sms", b"{\"name\":\"Ann\"}"));
    // The separator keeps route and body apart.
    assert_ne!(request_hash("POST /a", b"b"), request_hash("POST /ab", b""));
}

#[test]
fn final_answers_are_successes_and_refusals_a_retry_cannot_change() {
    for status in [200, 201, 204, 400, 403, 413, 415, 422] {
        assert!(is_final(StatusCode::from_u16(status).unwrap()), "{status}");
    }
    for status in [404, 408, 409, 425, 429, 500, 502, 503, 504] {
        assert!(!is_final(StatusCode::from_u16(status).unwrap()), "{status}");
    }
}

struct Fixture {
    _dir: TempDir,
    store: Store,
    tenant: TenantId,
    runs: Arc<AtomicU32>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(
        DatabaseUrl::sqlite_file(dir.path().join("crmhub.db")),
        MasterKeySource::File(dir.path().join("master.key")),
    );
    options.allow_new_database = true;
    let store = Store::open(options).await.unwrap();
    let tenant = store
        .tenants()
        .create(NewTenant {
            slug: TenantSlug::parse("acme").unwrap(),
            name: TenantName::parse("Acme").unwrap(),
            phone_region: None,
            settings: Default::default(),
        })
        .await
        .unwrap();
    Fixture { _dir: dir, store, tenant: tenant.id, runs: Arc::default() }
}

impl Fixture {
    /// A request with `key` and `body` whose work counts its runs and answers `status`.
    async fn send(&self, key: Option<&str>, body: &str, status: StatusCode) -> (StatusCode, bool, Value) {
        let key = key.map(|k| IdempotencyKey::parse(k.as_bytes()).unwrap());
        let runs = self.runs.clone();
        let work = async move {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            (status, Json(json!({"run": run})))
        };
        read(once(&self.store, self.tenant, ROUTE, key.as_ref(), body.as_bytes(), work).await).await
    }

    fn runs(&self) -> u32 {
        self.runs.load(Ordering::SeqCst)
    }
}

async fn read(response: Response) -> (StatusCode, bool, Value) {
    let status = response.status();
    let replayed = response.headers().get(REPLAYED).is_some_and(|v| v == "true");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (status, replayed, body)
}

#[tokio::test]
async fn without_a_key_every_request_runs() {
    let f = fixture().await;
    for run in 1..=2 {
        assert_eq!(f.send(None, "{}", StatusCode::CREATED).await, (StatusCode::CREATED, false, json!({"run": run})));
    }
}

#[tokio::test]
async fn a_repeat_replays_the_first_answer_and_other_content_is_refused() {
    let f = fixture().await;
    let first = f.send(Some("k1"), r#"{"name":"Ann"}"#, StatusCode::CREATED).await;
    assert_eq!(first, (StatusCode::CREATED, false, json!({"run": 1})));
    let repeat = f.send(Some("k1"), r#"{"name":"Ann"}"#, StatusCode::CREATED).await;
    assert_eq!(repeat, (StatusCode::CREATED, true, json!({"run": 1})), "the stored answer, marked");
    assert_eq!(f.runs(), 1, "the repeat wrote nothing");

    let (status, replayed, body) = f.send(Some("k1"), r#"{"name":"Bob"}"#, StatusCode::CREATED).await;
    assert_eq!((status, replayed), (StatusCode::UNPROCESSABLE_ENTITY, false));
    assert_eq!(body["error"]["field"], "Idempotency-Key", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("different body"), "{body}");
    assert_eq!(f.runs(), 1);

    // Another key is another request.
    assert_eq!(f.send(Some("k2"), r#"{"name":"Ann"}"#, StatusCode::CREATED).await.2, json!({"run": 2}));
}

#[tokio::test]
async fn a_refusal_is_kept_and_a_failure_worth_retrying_is_not() {
    let f = fixture().await;
    f.send(Some("k1"), "{}", StatusCode::UNPROCESSABLE_ENTITY).await;
    let repeat = f.send(Some("k1"), "{}", StatusCode::CREATED).await;
    assert_eq!(repeat, (StatusCode::UNPROCESSABLE_ENTITY, true, json!({"run": 1})));

    for (n, status) in
        [StatusCode::SERVICE_UNAVAILABLE, StatusCode::NOT_FOUND, StatusCode::TOO_MANY_REQUESTS].into_iter().enumerate()
    {
        let key = format!("retry{n}");
        let before = f.runs();
        assert_eq!(f.send(Some(&key), "{}", status).await.0, status);
        let retry = f.send(Some(&key), "{}", StatusCode::CREATED).await;
        assert_eq!((retry.0, retry.1), (StatusCode::CREATED, false), "{status}: the retry runs");
        assert_eq!(f.runs(), before + 2);
        assert!(f.send(Some(&key), "{}", StatusCode::CREATED).await.1, "{status}: then it is kept");
    }
}

#[tokio::test]
async fn a_repeat_while_the_first_runs_waits_for_its_answer() {
    let f = Arc::new(fixture().await);
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let key = IdempotencyKey::parse(b"k1").unwrap();
    let first = {
        let (f, key) = (f.clone(), key.clone());
        tokio::spawn(async move {
            let runs = f.runs.clone();
            let work = async move {
                runs.fetch_add(1, Ordering::SeqCst);
                released.await.ok();
                (StatusCode::CREATED, Json(json!({"first": true})))
            };
            read(once(&f.store, f.tenant, ROUTE, Some(&key), b"{}", work).await).await
        })
    };
    while f.runs() == 0 {
        tokio::time::sleep(POLL).await;
    }
    let repeat = tokio::spawn({
        let f = f.clone();
        async move { f.send(Some("k1"), "{}", StatusCode::CREATED).await }
    });
    tokio::time::sleep(POLL * 4).await;
    assert!(!repeat.is_finished(), "the repeat waits");
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap(), (StatusCode::CREATED, false, json!({"first": true})));
    assert_eq!(repeat.await.unwrap(), (StatusCode::CREATED, true, json!({"first": true})));
    assert_eq!(f.runs(), 1);
}

#[tokio::test]
async fn a_repeat_that_waits_too_long_is_a_conflict_and_the_first_still_answers() {
    let f = fixture().await;
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let key = IdempotencyKey::parse(b"k1").unwrap();
    let runs = f.runs.clone();
    let work = async move {
        runs.fetch_add(1, Ordering::SeqCst);
        released.await.ok();
        (StatusCode::CREATED, Json(json!({"first": true})))
    };
    // The first request's client gives up once the work runs (its handler is dropped): the work
    // goes on.
    let mut first = Box::pin(once(&f.store, f.tenant, ROUTE, Some(&key), b"{}", work));
    tokio::select! {
        _ = &mut first => panic!("answered before the work was released"),
        () = async { while f.runs() == 0 { tokio::time::sleep(POLL).await } } => {}
    }
    drop(first);

    let waited = once_waiting(POLL * 3, &f.store, f.tenant, ROUTE, Some(&key), b"{}", async { StatusCode::OK });
    let (status, _, body) = read(waited.await).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "Idempotency-Key", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("still being processed"), "{body}");

    release.send(()).unwrap();
    let mut replay = None;
    for _ in 0..100 {
        match keys_begin(&f, &key).await {
            Begin::InFlight => tokio::time::sleep(POLL).await,
            other => {
                replay = Some(other);
                break;
            }
        }
    }
    assert_eq!(replay, Some(Begin::Replay { status: 201, body: r#"{"first":true}"#.into() }));
    assert_eq!(f.runs(), 1);
}

async fn keys_begin(f: &Fixture, key: &IdempotencyKey) -> Begin {
    f.store.idempotency(f.tenant).begin(ROUTE, key.as_str(), &request_hash(ROUTE, b"{}"), TTL).await.unwrap()
}

#[tokio::test]
async fn work_that_panics_releases_its_key() {
    let f = fixture().await;
    let key = IdempotencyKey::parse(b"k1").unwrap();
    let work = async {
        assert!(std::hint::black_box(false), "the work failed");
        StatusCode::OK
    };
    let (status, ..) = read(once(&f.store, f.tenant, ROUTE, Some(&key), b"{}", work).await).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(f.send(Some("k1"), "{}", StatusCode::CREATED).await.0, StatusCode::CREATED, "the retry runs");
}
