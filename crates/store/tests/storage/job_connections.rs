//! Jobs that work for a connection pause while it needs new credentials and resume when it is
//! active again; the per-tenant depth cap follows every transition without counting rows.

use std::time::Duration;

use crmhub_core::ConnectionStatus;
use crmhub_store::jobs::{Enqueued, JobFilter, JobStatus, NewJob};
use crmhub_store::{MasterKeySource, Store, StoreError};
use serde_json::json;

use crate::harness::{TestDb, Which, connection, tenant};
use crate::on_both_backends;

const LEASE: Duration = Duration::from_secs(30);

on_both_backends!(
    a_connections_jobs_pause_while_it_needs_reauth_and_resume_when_active,
    a_parked_job_keeps_its_attempt_and_resumes_with_the_connection,
    a_job_parked_beside_a_pending_twin_merges_into_it,
    resuming_merges_paused_twins_into_one_pending_job,
    the_depth_cap_follows_every_transition,
);

async fn statuses(store: &Store) -> Vec<(String, JobStatus)> {
    let mut all: Vec<_> = store
        .jobs()
        .list(&JobFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|j| (j.payload["n"].as_str().unwrap_or_default().to_owned(), j.status))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

async fn a_connections_jobs_pause_while_it_needs_reauth_and_resume_when_active(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let c = connection(&store, &t, "crm", "k1").await;
    let other = connection(&store, &t, "other", "k2").await;
    let jobs = store.jobs();
    jobs.enqueue(t.id, NewJob::new("sync", json!({"n": "a"})).connection(c.id)).await.unwrap();
    jobs.enqueue(t.id, NewJob::new("sync", json!({"n": "b"})).connection(other.id)).await.unwrap();
    jobs.enqueue(t.id, NewJob::new("prune", json!({"n": "c"}))).await.unwrap();

    store.connections(t.id).set_status(c.id, ConnectionStatus::NeedsReauth, Some("refused")).await.unwrap();
    // Work enqueued meanwhile waits too, and its dedupe key still answers.
    let late = NewJob::new("sync", json!({"n": "d"})).connection(c.id).dedupe_key("d");
    let created = jobs.enqueue(t.id, late.clone()).await.unwrap();
    assert!(matches!(created, Enqueued::Created(_)));
    assert_eq!(jobs.enqueue(t.id, late).await.unwrap(), Enqueued::Duplicate(created.id()));
    assert_eq!(
        statuses(&store).await,
        [
            ("a".into(), JobStatus::Paused),
            ("b".into(), JobStatus::Pending),
            ("c".into(), JobStatus::Pending),
            ("d".into(), JobStatus::Paused)
        ]
    );
    assert_eq!(jobs.depth(Some(t.id)).await.unwrap().pending, 4, "paused jobs are still waiting");

    let mut claimed = Vec::new();
    while let Some(job) = jobs.claim("w", LEASE).await.unwrap() {
        assert_ne!(job.connection_id, Some(c.id), "a paused job was claimed");
        claimed.push(job.payload["n"].as_str().unwrap().to_owned());
        jobs.complete(&job).await.unwrap();
    }
    claimed.sort();
    assert_eq!(claimed, ["b", "c"]);

    // New credentials that pass the test make the connection active: its jobs run.
    store.connections(t.id).set_status(c.id, ConnectionStatus::Active, None).await.unwrap();
    let job = jobs.claim("w", LEASE).await.unwrap().expect("resumed");
    assert_eq!(job.connection_id, Some(c.id));
    jobs.complete(&job).await.unwrap();
    let job = jobs.claim("w", LEASE).await.unwrap().expect("resumed");
    jobs.complete(&job).await.unwrap();
    assert!(jobs.claim("w", LEASE).await.unwrap().is_none());
}

async fn a_parked_job_keeps_its_attempt_and_resumes_with_the_connection(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let c = connection(&store, &t, "crm", "k1").await;
    let jobs = store.jobs();
    jobs.enqueue(t.id, NewJob::new("sync", json!({"n": "a"})).connection(c.id)).await.unwrap();
    let job = jobs.claim("w", LEASE).await.unwrap().unwrap();
    assert_eq!(job.attempts, 1);

    // The run found the credentials refused: the worker marks the connection and parks the job.
    store.connections(t.id).set_status(c.id, ConnectionStatus::NeedsReauth, Some("refused")).await.unwrap();
    jobs.park(&job, "the CRM refused the credentials").await.unwrap();
    let listed = jobs.list(&JobFilter::default()).await.unwrap();
    assert_eq!((listed[0].status, listed[0].attempts), (JobStatus::Paused, 0), "the attempt is not counted");
    assert_eq!(listed[0].last_error.as_deref(), Some("the CRM refused the credentials"));
    assert!(jobs.claim("w", LEASE).await.unwrap().is_none());
    assert!(matches!(jobs.park(&job, "again").await, Err(StoreError::LeaseLost)));

    store.connections(t.id).set_status(c.id, ConnectionStatus::Active, None).await.unwrap();
    let again = jobs.claim("w", LEASE).await.unwrap().expect("resumed");
    assert_eq!((again.id, again.attempts), (job.id, 1));

    // Parked after the connection was fixed already: simply pending again.
    jobs.park(&again, "stale refusal").await.unwrap();
    assert_eq!(jobs.list(&JobFilter::default()).await.unwrap()[0].status, JobStatus::Pending);
}

/// A refusal seen by a run whose work was enqueued again meanwhile (a pending twin with its
/// dedupe key): once the connection is fixed, parking would make a second pending job of one
/// key, so the parked job merges into the twin, which does the work.
async fn a_job_parked_beside_a_pending_twin_merges_into_it(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let c = connection(&store, &t, "crm", "k1").await;
    let jobs = store.jobs();
    let work = NewJob::new("sync", json!({"n": "x"})).connection(c.id).dedupe_key("x");
    jobs.enqueue(t.id, work.clone()).await.unwrap();
    let running = jobs.claim("w", LEASE).await.unwrap().unwrap();
    let twin = jobs.enqueue(t.id, work).await.unwrap();
    assert!(matches!(twin, Enqueued::Created(_)), "the running job does not cover new work");

    jobs.park(&running, "a stale refusal").await.unwrap();
    let left = jobs.list(&JobFilter::default()).await.unwrap();
    assert_eq!(left.iter().map(|j| (j.id, j.status)).collect::<Vec<_>>(), [(twin.id(), JobStatus::Pending)]);
    assert_eq!(jobs.depth(Some(t.id)).await.unwrap().pending, 1);
    assert!(matches!(jobs.park(&running, "again").await, Err(StoreError::LeaseLost)));
}

async fn resuming_merges_paused_twins_into_one_pending_job(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let c = connection(&store, &t, "crm", "k1").await;
    let jobs = store.jobs();
    let twin = NewJob::new("sync", json!({"n": "x"})).connection(c.id).dedupe_key("x");
    jobs.enqueue(t.id, twin.clone()).await.unwrap();
    // One copy runs (and will be parked); another is enqueued while it runs.
    let running = jobs.claim("w", LEASE).await.unwrap().unwrap();
    jobs.enqueue(t.id, twin.clone()).await.unwrap();
    store.connections(t.id).set_status(c.id, ConnectionStatus::NeedsReauth, Some("refused")).await.unwrap();
    jobs.park(&running, "refused").await.unwrap();
    assert_eq!(statuses(&store).await, [("x".into(), JobStatus::Paused), ("x".into(), JobStatus::Paused)]);

    store.connections(t.id).set_status(c.id, ConnectionStatus::Active, None).await.unwrap();
    assert_eq!(statuses(&store).await, [("x".into(), JobStatus::Pending)], "one pending job per key");
    assert!(matches!(jobs.enqueue(t.id, twin).await.unwrap(), Enqueued::Duplicate(_)));
}

async fn the_depth_cap_follows_every_transition(which: Which) {
    let db = TestDb::new(which).await;
    let mut options = db.options(MasterKeySource::Given(db.key.clone()));
    options.max_queue_depth_per_tenant = 3;
    let store = Store::open(options).await.unwrap();
    let t = tenant(&store, "acme").await;
    let c = connection(&store, &t, "crm", "k1").await;
    let jobs = store.jobs();
    let full = |r: Result<Enqueued, StoreError>| matches!(r, Err(StoreError::QueueFull { cap: 3, .. }));
    for n in 0..3 {
        jobs.enqueue(t.id, NewJob::new("k", json!({"n": n})).connection(c.id).max_attempts(1)).await.unwrap();
    }
    assert!(full(jobs.enqueue(t.id, NewJob::new("k", json!({}))).await));

    // Running and paused jobs still count; done and dead ones do not.
    let a = jobs.claim("w", LEASE).await.unwrap().unwrap();
    assert!(full(jobs.enqueue(t.id, NewJob::new("k", json!({}))).await));
    jobs.complete(&a).await.unwrap();
    jobs.enqueue(t.id, NewJob::new("k", json!({"n": "after done"}))).await.unwrap();
    assert!(full(jobs.enqueue(t.id, NewJob::new("k", json!({}))).await));
    let b = jobs.claim("w", LEASE).await.unwrap().unwrap();
    assert_eq!(jobs.fail(&b, "last attempt", 0).await.unwrap(), JobStatus::Dead);
    jobs.enqueue(t.id, NewJob::new("k", json!({"n": "after dead"}))).await.unwrap();
    store.connections(t.id).set_status(c.id, ConnectionStatus::NeedsReauth, Some("refused")).await.unwrap();
    assert!(full(jobs.enqueue(t.id, NewJob::new("k", json!({}))).await));

    // A dead job discarded changes nothing; one redriven counts again (redrive may exceed the cap).
    jobs.discard_dead(t.id, b.id).await.unwrap();
    let c2 = jobs.claim("w", LEASE).await.unwrap().expect("the unconnected job");
    jobs.kill(&c2, "no").await.unwrap();
    jobs.enqueue(t.id, NewJob::new("k", json!({"n": "after kill"}))).await.unwrap();
    assert_eq!(jobs.redrive(Some(t.id), crmhub_store::jobs::Redrive::AllDead).await.unwrap(), 1);
    assert!(full(jobs.enqueue(t.id, NewJob::new("k", json!({}))).await));

    // Deleting the connection removes its (paused) job, and frees its place.
    store.connections(t.id).delete(c.id).await.unwrap();
    let left = jobs.depth(Some(t.id)).await.unwrap();
    assert_eq!(left.pending + left.running, 3, "{left:?}");
    assert!(full(jobs.enqueue(t.id, NewJob::new("k", json!({}))).await));
    let d = jobs.claim("w", LEASE).await.unwrap().unwrap();
    jobs.complete(&d).await.unwrap();
    jobs.enqueue(t.id, NewJob::new("k", json!({}))).await.unwrap();
    assert!(full(jobs.enqueue(t.id, NewJob::new("k", json!({}))).await));
}
