//! The jobs queue: leases, retries, dead letters, dedupe, the depth cap, and exclusivity.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmhub_core::{JobId, TenantId};
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
    jobs_of_one_dedupe_key_never_run_at_once,
    jobs_without_a_dedupe_key_are_not_held_back,
    a_lease_expired_job_of_a_key_is_taken_over_not_blocked_by_itself,
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

/// What the workers of `jobs_of_one_dedupe_key_never_run_at_once` saw, under one lock.
#[derive(Default)]
struct SerialRun {
    created: HashSet<JobId>,
    /// Runs per job.
    ran: HashMap<JobId, usize>,
    completed: usize,
    /// (tenant, key) → its jobs running now.
    running: HashMap<(TenantId, u64), HashSet<JobId>>,
    /// Re-enqueues done per (tenant, key).
    reenqueued: HashMap<(TenantId, u64), usize>,
    /// Times a keyed job started while another key's job ran.
    keys_overlapped: usize,
    violations: Vec<String>,
}

/// The serial rule under load: several keys (in two tenants, where the same key names two
/// units of work), each re-enqueued while its job runs, plus jobs without a key, claimed by
/// eight workers on two pools. No two jobs of one key ever run at once, and every job runs.
/// Violations are collected, not panicked on, so a broken rule fails fast with a list.
async fn jobs_of_one_dedupe_key_never_run_at_once(which: Which) {
    let db = TestDb::new(which).await;
    let first = db.open().await;
    let second = db.open().await;
    let tenants = [tenant(&first, "acme").await.id, tenant(&first, "other").await.id];
    const KEYS: u64 = 2;
    const REENQUEUES_PER_KEY: usize = 6;
    const UNKEYED: usize = 12;
    let key_job = |key: u64| NewJob::new("call.log", json!({"key": key})).dedupe_key(format!("call:{key}"));

    let run: Arc<Mutex<SerialRun>> = Arc::default();
    for t in tenants {
        for key in 0..KEYS {
            let id = first.jobs().enqueue(t, key_job(key)).await.unwrap();
            assert!(matches!(id, Enqueued::Created(_)));
            run.lock().unwrap().created.insert(id.id());
        }
    }
    for i in 0..UNKEYED {
        let id = first.jobs().enqueue(tenants[i % 2], NewJob::new("sync", json!({"i": i}))).await.unwrap();
        run.lock().unwrap().created.insert(id.id());
    }

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut workers = Vec::new();
    for n in 0..8 {
        let store = if n % 2 == 0 { first.clone() } else { second.clone() };
        let run = run.clone();
        workers.push(tokio::spawn(async move {
            let name = format!("worker-{n}");
            while std::time::Instant::now() < deadline {
                let Some(job) = store.jobs().claim(&name, LEASE).await.unwrap() else {
                    // Done once every job ever created has finished (a running one may still
                    // enqueue its key's next run); until then a key's next job may be waiting.
                    let done = {
                        let run = run.lock().unwrap();
                        run.completed == run.created.len()
                    };
                    if done {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                let unit = job.payload["key"].as_u64().map(|key| (job.tenant_id, key));
                {
                    let mut run = run.lock().unwrap();
                    *run.ran.entry(job.id).or_default() += 1;
                    if let Some(unit) = unit {
                        if run.running.values().any(|jobs| !jobs.is_empty()) {
                            run.keys_overlapped += 1;
                        }
                        let same_key = run.running.entry(unit).or_default();
                        same_key.insert(job.id);
                        if same_key.len() > 1 {
                            let msg = format!("{unit:?} had {same_key:?} running at once");
                            run.violations.push(msg);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_micros(rand_micros())).await;
                if let Some((tenant, key)) = unit {
                    // New information while the job runs: another run of the same key.
                    let again = {
                        let mut run = run.lock().unwrap();
                        let done = run.reenqueued.entry((tenant, key)).or_default();
                        *done += 1;
                        *done <= REENQUEUES_PER_KEY
                    };
                    if again {
                        let enqueued = store.jobs().enqueue(tenant, key_job(key)).await.unwrap();
                        let mut run = run.lock().unwrap();
                        if !matches!(enqueued, Enqueued::Created(_)) {
                            run.violations.push(format!("a job of {:?} was pending while one ran", (tenant, key)));
                        }
                        run.created.insert(enqueued.id());
                    }
                    // Long enough for an idle worker to try the new job while this one runs.
                    tokio::time::sleep(Duration::from_millis(3) + Duration::from_micros(rand_micros())).await;
                    run.lock().unwrap().running.entry((tenant, key)).or_default().remove(&job.id);
                }
                store.jobs().complete(&job).await.unwrap();
                run.lock().unwrap().completed += 1;
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    {
        let run = run.lock().unwrap();
        assert!(run.violations.is_empty(), "{} violations, first: {:?}", run.violations.len(), &run.violations[..1]);
        assert_eq!(run.created.len(), 2 * KEYS as usize * (1 + REENQUEUES_PER_KEY) + UNKEYED);
        assert_eq!(run.completed, run.created.len(), "the queue drained in time");
        assert_eq!(run.ran.keys().copied().collect::<HashSet<_>>(), run.created, "every job ran");
        assert!(run.ran.values().all(|&n| n == 1), "every job ran once");
        assert!(run.keys_overlapped > 0, "different keys did run at the same time");
    }
    assert_eq!(first.jobs().depth(None).await.unwrap(), QueueDepth::default());
}

async fn jobs_without_a_dedupe_key_are_not_held_back(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let other = tenant(&store, "other").await;
    let key_job = || NewJob::new("call.log", json!({})).dedupe_key("call:x");
    store.jobs().enqueue(t.id, key_job()).await.unwrap();
    let running = store.jobs().claim("w1", LEASE).await.unwrap().unwrap();

    // Enqueued in this order; the waiting twin is the oldest and the most urgent.
    let twin = store.jobs().enqueue(t.id, key_job().priority(10)).await.unwrap().id();
    let plain = store.jobs().enqueue(t.id, NewJob::new("call.log", json!({}))).await.unwrap().id();
    let other_kind = store.jobs().enqueue(t.id, NewJob::new("sms.note", json!({})).dedupe_key("call:x")).await.unwrap();
    let other_tenant = store.jobs().enqueue(other.id, key_job()).await.unwrap().id();
    let mut claimed = Vec::new();
    while let Some(job) = store.jobs().claim("w2", LEASE).await.unwrap() {
        claimed.push(job);
    }
    let ids: HashSet<JobId> = claimed.iter().map(|j| j.id).collect();
    assert_eq!(ids, HashSet::from([plain, other_kind.id(), other_tenant]), "only the key's twin waits");
    assert_eq!(store.jobs().depth(None).await.unwrap(), QueueDepth { pending: 1, running: 4, dead: 0 });

    // The other units finishing does not free the key; its own job does.
    for job in &claimed {
        store.jobs().complete(job).await.unwrap();
    }
    assert!(store.jobs().claim("w2", LEASE).await.unwrap().is_none());
    store.jobs().complete(&running).await.unwrap();
    let next = store.jobs().claim("w2", LEASE).await.unwrap().expect("the twin, once the key is free");
    assert_eq!(next.id, twin);
    // A failed attempt going back to pending does not block itself either.
    let retry_at = store.clock().now_millis();
    assert_eq!(store.jobs().fail(&next, "boom", retry_at).await.unwrap(), JobStatus::Pending);
    let retried = store.jobs().claim("w2", LEASE).await.unwrap().expect("the retry");
    assert_eq!((retried.id, retried.attempts), (twin, 2));
    store.jobs().complete(&retried).await.unwrap();
    assert_eq!(store.jobs().depth(None).await.unwrap(), QueueDepth::default());
}

async fn a_lease_expired_job_of_a_key_is_taken_over_not_blocked_by_itself(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let key_job = || NewJob::new("call.log", json!({})).dedupe_key("call:x");
    let first = store.jobs().enqueue(t.id, key_job()).await.unwrap().id();
    let crashed = store.jobs().claim("worker-a", LEASE).await.unwrap().unwrap();
    let twin = store.jobs().enqueue(t.id, key_job()).await.unwrap().id();
    // worker-a dies. Until its lease runs out the key stays held.
    db.clock.advance(LEASE - Duration::from_millis(1));
    assert!(store.jobs().claim("worker-b", LEASE).await.unwrap().is_none());
    db.clock.advance(Duration::from_millis(2));

    // The abandoned job is taken over (the key's running job is that job itself); its twin
    // still waits for it.
    let taken = store.jobs().claim("worker-b", LEASE).await.unwrap().expect("taken over");
    assert_eq!((taken.id, taken.attempts), (first, 2));
    assert!(store.jobs().claim("worker-c", LEASE).await.unwrap().is_none(), "the twin waits for the takeover");
    assert!(matches!(store.jobs().complete(&crashed).await, Err(StoreError::LeaseLost)));
    store.jobs().complete(&taken).await.unwrap();
    let next = store.jobs().claim("worker-c", LEASE).await.unwrap().expect("the twin");
    assert_eq!(next.id, twin);

    // A key whose last attempt was lost does not hold its twin forever: the lost job is dead.
    let crashed = next;
    let last = store.jobs().enqueue(t.id, key_job().max_attempts(1)).await.unwrap().id();
    store.jobs().complete(&crashed).await.unwrap();
    let lost = store.jobs().claim("worker-d", LEASE).await.unwrap().unwrap();
    assert_eq!(lost.id, last);
    let after = store.jobs().enqueue(t.id, key_job()).await.unwrap().id();
    db.clock.advance(LEASE * 2);
    let next = store.jobs().claim("worker-e", LEASE).await.unwrap().expect("the twin of a dead job runs");
    assert_eq!(next.id, after);
    let dead = store.jobs().list(&JobFilter { status: Some(JobStatus::Dead), ..Default::default() }).await.unwrap();
    assert_eq!(dead.iter().map(|j| j.id).collect::<Vec<_>>(), [last]);
    store.jobs().complete(&next).await.unwrap();
}
