//! Job handlers run inside the application: they reach its store and CRM registry, CRM errors
//! become outcomes in one place, refused credentials pause a connection's jobs until it is
//! active again, and the product's own job kinds are registered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crmhub_core::clock::ManualClock;
use crmhub_core::crm::CrmError;
use crmhub_core::request_log::RequestLogEntry;
use crmhub_core::{Clock, ConnectionStatus};
use crmhub_server::config::Role;
use crmhub_server::jobs::{JobContext, JobHandler, JobOutcome};
use crmhub_server::maintenance::PRUNE_REQUEST_LOG;
use crmhub_store::idempotency::Begin;
use crmhub_store::jobs::{ClaimedJob, JobFilter, JobStatus, NewJob};
use serde_json::json;

use crate::helpers::{TestApp, spawn, tenant_id};

const NOW: i64 = 1_800_000_000_000;

/// Builds the job's CRM through the context (so the job reaches the application), then fails
/// as its payload says: `"auth"` while `refusals` lasts, `"rate"`, `"invalid"`, or succeeds.
#[derive(Default)]
struct CrmJob {
    refusals: AtomicU32,
    runs: AtomicU32,
}

#[async_trait::async_trait]
impl JobHandler for CrmJob {
    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> JobOutcome {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = ctx.crm(job).await {
            return JobOutcome::Fail(format!("no CRM for the job: {e}"));
        }
        let fail = match job.payload["fail"].as_str() {
            Some("auth") if self.refusals.load(Ordering::SeqCst) > 0 => {
                self.refusals.fetch_sub(1, Ordering::SeqCst);
                CrmError::AuthFailed("INVALID_USER_CREDENTIALS".into())
            }
            Some("rate") => CrmError::RateLimited { retry_after: Some(Duration::from_secs(120)) },
            Some("invalid") => CrmError::validation("email", "is not an address"),
            _ => return JobOutcome::Done,
        };
        Err::<(), _>(fail).into()
    }
}

async fn start(handler: Arc<CrmJob>) -> (TestApp, ManualClock) {
    let clock = ManualClock::new(NOW);
    let app = spawn()
        .configure(|s| s.server.role = Role::Api) // the tests drain the queue by hand
        .clock(Arc::new(clock.clone()))
        .job_handler("test.crm", handler)
        .start()
        .await;
    (app, clock)
}

async fn vtiger(app: &TestApp, name: &str) -> crmhub_core::ConnectionId {
    let body = json!({"name": name, "kind": "vtiger", "host": "crm.example.com",
                      "fields": {"username": "admin"}, "credentials": {"access_key": "s3cr3t-access-key"}});
    app.create_connection("acme", &body).await.parse().unwrap()
}

async fn job(app: &TestApp, id: crmhub_core::JobId) -> crmhub_store::jobs::JobRecord {
    let all = app.store().jobs().list(&JobFilter::default()).await.unwrap();
    all.into_iter().find(|j| j.id == id).expect("the job is still there")
}

#[tokio::test]
async fn crm_errors_become_outcomes_in_one_place() {
    let handler = Arc::new(CrmJob::default());
    let (app, _clock) = start(handler.clone()).await;
    let tenant = tenant_id(&app.create_tenant("acme").await);
    let crm = vtiger(&app, "crm").await;
    let jobs = app.store().jobs();
    let rate = jobs.enqueue(tenant, NewJob::new("test.crm", json!({"fail": "rate"})).connection(crm)).await.unwrap();
    let invalid =
        jobs.enqueue(tenant, NewJob::new("test.crm", json!({"fail": "invalid"})).connection(crm)).await.unwrap();
    let unowned = jobs.enqueue(tenant, NewJob::new("test.crm", json!({}))).await.unwrap();

    let report = app.drain_jobs().await;
    assert_eq!((report.ran, report.dead, report.pending), (3, 2, 1), "{report:?}");
    // Rate limited: back at the time the CRM named, the attempt not counted.
    let rate = job(&app, rate.id()).await;
    assert_eq!((rate.status, rate.attempts, rate.run_at), (JobStatus::Pending, 0, NOW + 120_000));
    // A refused value: dead at once, with the reason.
    let invalid = job(&app, invalid.id()).await;
    assert_eq!(invalid.status, JobStatus::Dead);
    assert_eq!(invalid.last_error.as_deref(), Some("email: is not an address"));
    // A CRM job without a connection cannot reach a CRM.
    let unowned = job(&app, unowned.id()).await;
    assert!(unowned.last_error.unwrap().contains("names no connection"));
    let metrics = app.get_metrics().await;
    assert!(metrics.contains(r#"crmhub_jobs_processed_total{kind="test.crm",outcome="deferred"} 1"#), "{metrics}");
}

#[tokio::test]
async fn refused_credentials_pause_the_connections_jobs_until_it_is_active_again() {
    let handler = Arc::new(CrmJob { refusals: AtomicU32::new(1), ..Default::default() });
    let (app, _clock) = start(handler.clone()).await;
    let tenant = tenant_id(&app.create_tenant("acme").await);
    let crm = vtiger(&app, "crm").await;
    let other = vtiger(&app, "other").await;
    let jobs = app.store().jobs();
    let refused = jobs
        .enqueue(tenant, NewJob::new("test.crm", json!({"fail": "auth"})).connection(crm).priority(10))
        .await
        .unwrap();
    let waiting = jobs.enqueue(tenant, NewJob::new("test.crm", json!({})).connection(crm)).await.unwrap();
    jobs.enqueue(tenant, NewJob::new("test.crm", json!({})).connection(other)).await.unwrap();

    // The refused job runs first: its connection needs new credentials, and neither it nor the
    // connection's other job runs again meanwhile; the other connection's job is unaffected.
    let report = app.drain_jobs().await;
    assert_eq!((report.ran, report.dead, report.pending), (2, 0, 2), "{report:?}");
    let connection = app.store().connections(tenant).get(crm).await.unwrap();
    assert_eq!(connection.status, ConnectionStatus::NeedsReauth);
    assert!(connection.last_error.unwrap().contains("INVALID_USER_CREDENTIALS"));
    let refused = job(&app, refused.id()).await;
    assert_eq!((refused.status, refused.attempts), (JobStatus::Paused, 0), "paused, the attempt not counted");
    assert_eq!(job(&app, waiting.id()).await.status, JobStatus::Paused);
    assert_eq!(app.drain_jobs().await.ran, 0, "nothing of the connection runs while it needs reauth");

    // The operator's new credentials pass the connection test: the connection is active, and
    // its jobs resume.
    app.store().connections(tenant).set_status(crm, ConnectionStatus::Active, None).await.unwrap();
    let report = app.drain_jobs().await;
    assert_eq!((report.ran, report.dead, report.pending), (2, 0, 0), "{report:?}");
    assert_eq!(handler.runs.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn the_products_job_kinds_are_registered_and_prune_the_request_log() {
    let (app, _clock) = start(Arc::new(CrmJob::default())).await;
    assert!(app.registry.get(PRUNE_REQUEST_LOG).is_some(), "{:?}", app.registry);
    let tenant = tenant_id(&app.create_tenant("acme").await);
    let crm = vtiger(&app, "crm").await;
    let entry = |at: i64| RequestLogEntry {
        tenant_id: tenant,
        connection_id: crm,
        at,
        method: "GET".into(),
        url: "https://crm.example.com/webservice.php".into(),
        status: Some(200),
        latency_ms: 5,
        outcome: "ok".into(),
        request_body: None,
        response_body: None,
        error: None,
    };
    let old = NOW - 30 * 86_400_000;
    app.store().append_request_log(&[entry(old), entry(old + 1), entry(NOW - 1000)]).await.unwrap();
    app.store().jobs().enqueue(tenant, NewJob::new(PRUNE_REQUEST_LOG, json!({}))).await.unwrap();
    let report = app.drain_jobs().await;
    assert_eq!((report.ran, report.dead, report.pending), (1, 0, 0), "{report:?}");
    let left = app.store().request_log(tenant).list(crm, 100, None).await.unwrap();
    assert_eq!(left.len(), 1, "entries past the 7-day retention are gone");
}

#[tokio::test]
async fn the_retention_job_prunes_expired_idempotency_keys() {
    let (app, clock) = start(Arc::new(CrmJob::default())).await;
    let tenant = tenant_id(&app.create_tenant("acme").await);
    let keys = app.store().idempotency(tenant);
    let (route, day, hour) = ("POST /t/{tenant}/contacts", Duration::from_secs(86_400), Duration::from_secs(3600));
    assert_eq!(keys.begin(route, "old", "h", day).await.unwrap(), Begin::Fresh);
    keys.finish(route, "old", 201, "{}").await.unwrap();
    clock.advance(2 * hour);
    assert_eq!(keys.begin(route, "recent", "h", day).await.unwrap(), Begin::Fresh);
    keys.finish(route, "recent", 201, "{}").await.unwrap();
    clock.advance(day - hour);

    app.store().jobs().enqueue(tenant, NewJob::new(PRUNE_REQUEST_LOG, json!({}))).await.unwrap();
    let report = app.drain_jobs().await;
    assert_eq!((report.ran, report.dead, report.pending), (1, 0, 0), "{report:?}");
    assert_eq!(keys.prune(clock.now_millis()).await.unwrap(), 0, "the job pruned the expired key");
    assert!(matches!(keys.begin(route, "recent", "h", day).await.unwrap(), Begin::Replay { status: 201, .. }));
}
