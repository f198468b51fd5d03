//! The job runner inside the application: retries, dead letters, redrive, shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crmhub_core::clock::ManualClock;
use crmhub_server::config::Role;
use crmhub_server::jobs::{JobContext, JobHandler, JobOutcome};
use crmhub_store::jobs::{ClaimedJob, JobFilter, JobStatus, NewJob};
use serde_json::{Value, json};

use crate::helpers::{TestApp, reopen_store, spawn, tenant_id};

/// Fails the first `failures` attempts, then succeeds.
struct Flaky {
    failures: u32,
    calls: AtomicU32,
}

impl Flaky {
    fn new(failures: u32) -> Arc<Self> {
        Arc::new(Self { failures, calls: AtomicU32::new(0) })
    }
}

#[async_trait::async_trait]
impl JobHandler for Flaky {
    async fn run(&self, _ctx: &JobContext, _job: &ClaimedJob) -> JobOutcome {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.failures { JobOutcome::Retry(format!("failure {call}")) } else { JobOutcome::Done }
    }
}

struct Sleepy(Duration);

#[async_trait::async_trait]
impl JobHandler for Sleepy {
    async fn run(&self, _ctx: &JobContext, _job: &ClaimedJob) -> JobOutcome {
        tokio::time::sleep(self.0).await;
        JobOutcome::Done
    }
}

#[tokio::test]
async fn the_workers_retry_until_success_and_leave_nothing_behind() {
    let flaky = Flaky::new(2);
    let app = spawn()
        .configure(|s| {
            s.jobs.backoff_base_secs = 1;
            s.jobs.backoff_max_secs = 1;
        })
        .job_handler("test.flaky", flaky.clone())
        .start()
        .await;
    let tenant = tenant_id(&app.create_tenant("acme").await);
    app.store().jobs().enqueue(tenant, NewJob::new("test.flaky", json!({}))).await.unwrap();

    // The application's own workers pick it up; each retry waits 0.5–1 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while app.store().jobs().depth(None).await.unwrap() != Default::default() && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
    assert_eq!(app.store().jobs().depth(None).await.unwrap(), Default::default(), "no job left behind");
    let metrics = app.get_metrics().await;
    assert!(metrics.contains(r#"crmhub_jobs_processed_total{kind="test.flaky",outcome="retry"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"crmhub_jobs_processed_total{kind="test.flaky",outcome="done"} 1"#), "{metrics}");
}

#[tokio::test]
async fn dead_jobs_are_listed_and_redriven_through_the_admin_api() {
    let clock = ManualClock::new(1_800_000_000_000);
    let app = spawn()
        .configure(|s| {
            s.server.role = Role::Api; // this test drains the queue by hand
            s.jobs.max_attempts = 2;
        })
        .clock(Arc::new(clock.clone()))
        .job_handler("test.flaky", Flaky::new(2))
        .start()
        .await;
    let tenant = tenant_id(&app.create_tenant("acme").await);
    let job = app.store().jobs().enqueue(tenant, NewJob::new("test.flaky", json!({"n": 1}))).await.unwrap().id();

    assert_eq!(app.drain_jobs().await.ran, 1, "the retry waits for its backoff");
    clock.advance(Duration::from_secs(3600));
    let report = app.drain_jobs().await;
    assert_eq!((report.ran, report.dead), (1, 1), "{report:?}");

    let dead: Value = app.admin_get("/admin/v1/tenants/acme/jobs?status=dead").await.json().await.unwrap();
    let dead = dead["jobs"].as_array().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0]["id"].as_str(), dead[0]["last_error"].as_str()),
        (Some(job.to_string().as_str()), Some("failure 1"))
    );
    assert_eq!(dead[0]["payload"], json!({"n": 1}), "a dead job keeps its payload");
    assert_eq!(app.admin_get("/admin/v1/tenants/acme/jobs?status=zombie").await.status(), 422);
    let everywhere: Value = app.admin_get("/admin/v1/jobs?status=dead").await.json().await.unwrap();
    assert_eq!(everywhere["jobs"].as_array().unwrap().len(), 1);

    let redrive = app
        .admin_send(reqwest::Method::POST, "/admin/v1/tenants/acme/jobs/redrive", &json!({"ids": [job.to_string()]}))
        .await;
    assert_eq!(redrive.status(), 200);
    assert_eq!(redrive.json::<Value>().await.unwrap()["redriven"], 1);
    let report = app.drain_jobs().await;
    assert_eq!((report.ran, report.dead, report.pending), (1, 0, 0), "redriven job succeeded; nothing left");

    let bad = app.admin_send(reqwest::Method::POST, "/admin/v1/jobs/redrive", &json!({"ids": ["nope"]})).await;
    assert_eq!(bad.status(), 422);
}

#[tokio::test]
async fn a_job_of_an_unknown_kind_is_dead_not_lost() {
    let app = spawn().configure(|s| s.server.role = Role::Api).start().await;
    let tenant = tenant_id(&app.create_tenant("acme").await);
    app.store().jobs().enqueue(tenant, NewJob::new("from.the.future", json!({"keep": "me"}))).await.unwrap();
    assert_eq!(app.drain_jobs().await.dead, 1);
    let dead =
        app.store().jobs().list(&JobFilter { status: Some(JobStatus::Dead), ..Default::default() }).await.unwrap();
    assert_eq!(dead[0].payload, json!({"keep": "me"}));
    assert!(dead[0].last_error.as_deref().unwrap().contains("no handler"));
}

#[tokio::test]
async fn a_full_queue_refuses_new_work_with_429_semantics() {
    let app = spawn()
        .configure(|s| {
            s.server.role = Role::Api;
            s.jobs.max_queue_depth_per_tenant = 2;
        })
        .start()
        .await;
    let tenant = tenant_id(&app.create_tenant("acme").await);
    for _ in 0..2 {
        app.store().jobs().enqueue(tenant, NewJob::new("k", json!({}))).await.unwrap();
    }
    let err = app.store().jobs().enqueue(tenant, NewJob::new("k", json!({}))).await.unwrap_err();
    let api: crmhub_server::error::ApiError = err.into();
    assert!(matches!(api, crmhub_server::error::ApiError::TooManyRequests(_)), "{api:?}");
    assert_eq!(app.store().jobs().depth(Some(tenant)).await.unwrap().pending, 2, "accepted jobs kept");
}

#[tokio::test]
async fn shutdown_finishes_running_jobs_within_the_grace_period() {
    let app = spawn().job_handler("test.sleepy", Arc::new(Sleepy(Duration::from_millis(500)))).start().await;
    let tenant = tenant_id(&app.create_tenant("acme").await);
    app.store().jobs().enqueue(tenant, NewJob::new("test.sleepy", json!({}))).await.unwrap();
    wait_until_running(&app).await;
    let dir = app.stop().await;
    let store = reopen_store(&dir).await;
    assert_eq!(store.jobs().depth(None).await.unwrap(), Default::default(), "the job finished before exit");
}

#[tokio::test]
async fn shutdown_releases_a_job_that_outlives_the_grace_period() {
    let app = spawn()
        .configure(|s| s.server.shutdown_grace_secs = 0)
        .job_handler("test.sleepy", Arc::new(Sleepy(Duration::from_secs(30))))
        .start()
        .await;
    let tenant = tenant_id(&app.create_tenant("acme").await);
    app.store().jobs().enqueue(tenant, NewJob::new("test.sleepy", json!({}))).await.unwrap();
    wait_until_running(&app).await;
    let started = std::time::Instant::now();
    let dir = app.stop().await;
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown did not wait for the 30 s job");
    let store = reopen_store(&dir).await;
    let jobs = store.jobs().list(&JobFilter::default()).await.unwrap();
    assert_eq!(jobs.len(), 1, "released, not lost");
    assert_eq!((jobs[0].status, jobs[0].attempts), (JobStatus::Pending, 0), "the attempt was not counted");
}

async fn wait_until_running(app: &TestApp) {
    for _ in 0..300 {
        if app.store().jobs().depth(None).await.unwrap().running == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the job never started");
}
