//! The jobs queue: leases, retries, dead letters, dedupe, the depth cap, and exclusivity.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmhub_core::JobId;
use crmhub_store::jobs::{Enqueued, JobFilter, JobStatus, NewJob, QueueDepth, Redrive};
use crmhub_store::{MasterKeySource, Store, StoreError};
use serde_json::json;

use crate::harness::{TestDb, Which, tenant};
use crate::on_both_backends;

const LEASE: Duration = Duration::from_secs(30);

on_both_backends!(
    enqueue_claim_complete_leaves_nothing,
    dedupe_applies_while_pending_only,
    queue_depth_cap_refuses_new_work_and_keeps_old,
    failures_back_off_then_die_and_redrive_revives,
    deferral_does_not_count_an_attempt,
    a_crashed_workers_job_is_reclaimed_after_its_lease,
    heartbeats_keep_the_lease,
    final_attempt_lost_to_a_crash_is_dead,
    two_workers_never_run_one_job_at_once,
    enqueue_joins_the_callers_transaction,
    priority_runs_first,
    redrive_merges_into_a_pending_twin,
    a_failing_job_merges_into_a_newer_pending_twin,
    redrive_revives_one_of_several_dead_twins,
);

/// Runs every runnable job with `handler` until none is left; returns how many ran.
async fn drain(store: &Store, mut handler: impl FnMut(&crmhub_store::jobs::ClaimedJob) -> bool) -> usize {
    let mut ran = 0;
    while let Some(job) = store.jobs().claim("drain", LEASE).await.unwrap() {
        ran += 1;
        if handler(&job) {
            store.jobs().complete(&job).await.unwrap();
        } else {
            store.jobs().fail(&job, "handler failed", store.clock().now_millis()).await.unwrap();
        }
    }
    ran
}

async fn enqueue_claim_complete_leaves_nothing(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let id = store.jobs().enqueue(t.id, NewJob::new("sync.contact", json!({"contact": 7}))).await.unwrap();
    assert!(matches!(id, Enqueued::Created(_)));

    let job = store.jobs().claim("w1", LEASE).await.unwrap().expect("a job");
    assert_eq!((job.id, job.tenant_id, job.kind.as_str()), (id.id(), t.id, "sync.contact"));
    assert_eq!((job.payload.clone(), job.attempts), (json!({"contact": 7}), 1));
    assert!(store.jobs().claim("w2", LEASE).await.unwrap().is_none(), "a leased job is not handed out twice");
    assert_eq!(store.jobs().depth(None).await.unwrap(), QueueDepth { pending: 0, running: 1, dead: 0 });

    store.jobs().complete(&job).await.unwrap();
    assert_eq!(store.jobs().depth(None).await.unwrap(), QueueDepth::default(), "no job left behind");
}

async fn dedupe_applies_while_pending_only(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let job = || NewJob::new("sync.contact", json!({"contact": 7})).dedupe_key("contact:7");
    let first = store.jobs().enqueue(t.id, job()).await.unwrap();
    let second = store.jobs().enqueue(t.id, job()).await.unwrap();
    assert_eq!(second, Enqueued::Duplicate(first.id()));

    // Once running, new information must be able to schedule another run.
    let claimed = store.jobs().claim("w", LEASE).await.unwrap().unwrap();
    let third = store.jobs().enqueue(t.id, job()).await.unwrap();
    assert!(matches!(third, Enqueued::Created(id) if id != first.id()));
    store.jobs().complete(&claimed).await.unwrap();

    // Another tenant or another kind never collides.
    let other = tenant(&store, "other").await;
    assert!(matches!(store.jobs().enqueue(other.id, job()).await.unwrap(), Enqueued::Created(_)));
    let other_kind = NewJob::new("sync.delete", json!({})).dedupe_key("contact:7");
    assert!(matches!(store.jobs().enqueue(t.id, other_kind).await.unwrap(), Enqueued::Created(_)));
}

async fn queue_depth_cap_refuses_new_work_and_keeps_old(which: Which) {
    let db = TestDb::new(which).await;
    let mut options = db.options(MasterKeySource::Given(db.key.clone()));
    options.max_queue_depth_per_tenant = 3;
    let store = Store::open(options).await.unwrap();
    let t = tenant(&store, "acme").await;
    let other = tenant(&store, "other").await;
    for i in 0..3 {
        store.jobs().enqueue(t.id, NewJob::new("k", json!({"i": i}))).await.unwrap();
    }
    let err = store.jobs().enqueue(t.id, NewJob::new("k", json!({"i": 3}))).await.unwrap_err();
    assert!(matches!(err, StoreError::QueueFull { cap: 3, .. }), "{err:?}");
    assert!(err.to_string().contains("full"), "{err}");
    // The three accepted jobs are intact, and the cap is per tenant.
    assert_eq!(store.jobs().depth(Some(t.id)).await.unwrap().pending, 3);
    store.jobs().enqueue(other.id, NewJob::new("k", json!({}))).await.unwrap();
    // A duplicate of a pending job is still answered (it adds nothing).
    let dup = NewJob::new("d", json!({})).dedupe_key("x");
    store.jobs().enqueue(other.id, dup.clone()).await.unwrap();
    assert!(matches!(store.jobs().enqueue(other.id, dup).await.unwrap(), Enqueued::Duplicate(_)));
}

async fn failures_back_off_then_die_and_redrive_revives(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let id = store.jobs().enqueue(t.id, NewJob::new("k", json!({})).max_attempts(3)).await.unwrap().id();

    for attempt in 1..=3u32 {
        let job = store.jobs().claim("w", LEASE).await.unwrap().expect("runnable");
        assert_eq!(job.attempts, attempt);
        assert_eq!(job.is_last_attempt(), attempt == 3);
        let retry_at = store.clock().now_millis() + 10_000;
        let status = store.jobs().fail(&job, &format!("boom {attempt}"), retry_at).await.unwrap();
        if attempt < 3 {
            assert_eq!(status, JobStatus::Pending);
            assert!(store.jobs().claim("w", LEASE).await.unwrap().is_none(), "not before its retry time");
            db.clock.advance(Duration::from_secs(10));
        } else {
            assert_eq!(status, JobStatus::Dead);
        }
    }
    let dead = store.jobs().list(&JobFilter { status: Some(JobStatus::Dead), ..Default::default() }).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id, dead[0].last_error.as_deref(), dead[0].attempts), (id, Some("boom 3"), 3));
    assert!(store.jobs().claim("w", LEASE).await.unwrap().is_none(), "dead jobs are not claimed");

    assert_eq!(store.jobs().redrive(Some(t.id), Redrive::Ids(vec![id])).await.unwrap(), 1);
    let job = store.jobs().claim("w", LEASE).await.unwrap().expect("redriven job runs");
    assert_eq!(job.attempts, 1, "a redrive grants fresh attempts");
    store.jobs().complete(&job).await.unwrap();
    assert_eq!(store.jobs().depth(None).await.unwrap(), QueueDepth::default());
}

async fn deferral_does_not_count_an_attempt(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    store.jobs().enqueue(t.id, NewJob::new("k", json!({})).max_attempts(2)).await.unwrap();
    for _ in 0..5 {
        let job = store.jobs().claim("w", LEASE).await.unwrap().unwrap();
        assert_eq!(job.attempts, 1);
        let at = store.clock().now_millis() + 300_000;
        store.jobs().defer(&job, at, Some("rate limited; Retry-After 300")).await.unwrap();
        assert!(store.jobs().claim("w", LEASE).await.unwrap().is_none());
        db.clock.advance(Duration::from_secs(300));
    }
    let listed = store.jobs().list(&JobFilter::default()).await.unwrap();
    assert_eq!((listed[0].status, listed[0].attempts), (JobStatus::Pending, 0));
    assert_eq!(listed[0].last_error.as_deref(), Some("rate limited; Retry-After 300"));
}

async fn a_crashed_workers_job_is_reclaimed_after_its_lease(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    store.jobs().enqueue(t.id, NewJob::new("k", json!({}))).await.unwrap();
    let crashed = store.jobs().claim("worker-a", LEASE).await.unwrap().unwrap();
    // worker-a dies here without a word.
    db.clock.advance(LEASE - Duration::from_millis(1));
    assert!(store.jobs().claim("worker-b", LEASE).await.unwrap().is_none(), "lease still held");
    db.clock.advance(Duration::from_millis(2));
    let retried = store.jobs().claim("worker-b", LEASE).await.unwrap().expect("reclaimed after the lease");
    assert_eq!((retried.id, retried.attempts), (crashed.id, 2));

    // The ghost of worker-a cannot report anything for a job it no longer owns.
    assert!(matches!(store.jobs().complete(&crashed).await, Err(StoreError::LeaseLost)));
    assert!(!store.jobs().heartbeat(&crashed, LEASE).await.unwrap());
    store.jobs().complete(&retried).await.unwrap();
    assert_eq!(store.jobs().depth(None).await.unwrap(), QueueDepth::default());
}

async fn heartbeats_keep_the_lease(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    store.jobs().enqueue(t.id, NewJob::new("k", json!({}))).await.unwrap();
    let job = store.jobs().claim("w", LEASE).await.unwrap().unwrap();
    for _ in 0..5 {
        db.clock.advance(LEASE / 2);
        assert!(store.jobs().heartbeat(&job, LEASE).await.unwrap());
        assert!(store.jobs().claim("other", LEASE).await.unwrap().is_none());
    }
    store.jobs().complete(&job).await.unwrap();
}

async fn final_attempt_lost_to_a_crash_is_dead(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    store.jobs().enqueue(t.id, NewJob::new("k", json!({})).max_attempts(1)).await.unwrap();
    store.jobs().claim("w", LEASE).await.unwrap().unwrap();
    db.clock.advance(LEASE * 2);
    assert!(store.jobs().claim("w2", LEASE).await.unwrap().is_none());
    let dead = store.jobs().list(&JobFilter { status: Some(JobStatus::Dead), ..Default::default() }).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].last_error.as_deref().unwrap().contains("lease"), "{:?}", dead[0].last_error);
}

async fn two_workers_never_run_one_job_at_once(which: Which) {
    let db = TestDb::new(which).await;
    // Two stores = two connection pools, as two crmhub instances would have.
    let first = db.open().await;
    let second = db.open().await;
    let t = tenant(&first, "acme").await;
    const JOBS: usize = 120;
    for i in 0..JOBS {
        first.jobs().enqueue(t.id, NewJob::new("k", json!({"i": i}))).await.unwrap();
    }
    let in_flight: Arc<Mutex<HashSet<JobId>>> = Arc::default();
    let runs: Arc<Mutex<HashMap<JobId, usize>>> = Arc::default();
    let mut workers = Vec::new();
    for (n, store) in [first.clone(), second.clone(), first.clone(), second.clone()].into_iter().enumerate() {
        let (in_flight, runs) = (in_flight.clone(), runs.clone());
        workers.push(tokio::spawn(async move {
            let name = format!("worker-{n}");
            while let Some(job) = store.jobs().claim(&name, LEASE).await.unwrap() {
                assert!(in_flight.lock().unwrap().insert(job.id), "job {} ran twice at once", job.id);
                *runs.lock().unwrap().entry(job.id).or_default() += 1;
                tokio::time::sleep(Duration::from_micros(rand_micros())).await;
                in_flight.lock().unwrap().remove(&job.id);
                store.jobs().complete(&job).await.unwrap();
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), JOBS, "every job ran");
    assert!(runs.values().all(|&n| n == 1), "every job ran exactly once");
    assert_eq!(first.jobs().depth(None).await.unwrap(), QueueDepth::default());
}

fn rand_micros() -> u64 {
    use std::time::SystemTime;
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| u64::from(d.subsec_nanos()) % 2000).unwrap_or(0)
}

async fn enqueue_joins_the_callers_transaction(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;

    let mut tx = store.begin().await.unwrap();
    tx.enqueue_job(&store, t.id, NewJob::new("k", json!({"n": 1}))).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(store.jobs().depth(None).await.unwrap().pending, 0, "rolled back with the caller");

    let mut tx = store.begin().await.unwrap();
    tx.enqueue_job(&store, t.id, NewJob::new("k", json!({"n": 2}))).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.jobs().depth(None).await.unwrap().pending, 1);
    assert_eq!(drain(&store, |_| true).await, 1);
    assert_eq!(store.jobs().depth(None).await.unwrap(), QueueDepth::default());
}

async fn priority_runs_first(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    store.jobs().enqueue(t.id, NewJob::new("backfill", json!({}))).await.unwrap();
    store.jobs().enqueue(t.id, NewJob::new("live", json!({})).priority(10)).await.unwrap();
    let mut order = Vec::new();
    drain(&store, |job| {
        order.push(job.kind.clone());
        true
    })
    .await;
    assert_eq!(order, ["live", "backfill"]);
}

async fn redrive_merges_into_a_pending_twin(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let job = || NewJob::new("sync.contact", json!({})).dedupe_key("contact:1").max_attempts(1);
    store.jobs().enqueue(t.id, job()).await.unwrap();
    let claimed = store.jobs().claim("w", LEASE).await.unwrap().unwrap();
    store.jobs().fail(&claimed, "boom", 0).await.unwrap();
    store.jobs().enqueue(t.id, job()).await.unwrap(); // a fresh pending twin
    assert_eq!(store.jobs().redrive(None, Redrive::AllDead).await.unwrap(), 1);
    assert_eq!(store.jobs().depth(None).await.unwrap(), QueueDepth { pending: 1, running: 0, dead: 0 });
}

async fn a_failing_job_merges_into_a_newer_pending_twin(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let job = || NewJob::new("sync.contact", json!({})).dedupe_key("contact:9");
    store.jobs().enqueue(t.id, job()).await.unwrap();
    let running = store.jobs().claim("w", LEASE).await.unwrap().unwrap();
    let twin = store.jobs().enqueue(t.id, job()).await.unwrap().id(); // new information meanwhile
    assert_eq!(store.jobs().fail(&running, "boom", 0).await.unwrap(), JobStatus::Pending);
    let listed = store.jobs().list(&JobFilter::default()).await.unwrap();
    assert_eq!(listed.iter().map(|j| j.id).collect::<Vec<_>>(), [twin], "merged into the twin, nothing stuck running");

    let running = store.jobs().claim("w", LEASE).await.unwrap().unwrap();
    store.jobs().enqueue(t.id, job()).await.unwrap();
    store.jobs().defer(&running, 0, Some("shutting down")).await.unwrap();
    assert_eq!(store.jobs().depth(None).await.unwrap(), QueueDepth { pending: 1, running: 0, dead: 0 });
}

async fn redrive_revives_one_of_several_dead_twins(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    for _ in 0..3 {
        store
            .jobs()
            .enqueue(t.id, NewJob::new("sync.contact", json!({})).dedupe_key("contact:1").max_attempts(1))
            .await
            .unwrap();
        let claimed = store.jobs().claim("w", LEASE).await.unwrap().unwrap();
        store.jobs().fail(&claimed, "boom", 0).await.unwrap();
    }
    assert_eq!(store.jobs().depth(None).await.unwrap().dead, 3);
    assert_eq!(store.jobs().redrive(Some(t.id), Redrive::AllDead).await.unwrap(), 3);
    assert_eq!(store.jobs().depth(None).await.unwrap(), QueueDepth { pending: 1, running: 0, dead: 0 });
}
