//! Several crmhub instances on one PostgreSQL database: one installation. Jobs run once,
//! whichever instance claims them, and a remote login is made once and shared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmhub_server::jobs::{JobContext, JobHandler, JobOutcome};
use crmhub_sim::vtiger::{VtigerSimOptions, spawn as spawn_vtiger};
use crmhub_store::MasterKey;
use crmhub_store::jobs::{ClaimedJob, NewJob};
use serde_json::{Value, json};

use crate::helpers::{PgDatabase, TestApp, spawn, tenant_id};

const KEY: &str = "sim-access-key-0001";

/// Counts the runs of each job, per instance.
#[derive(Default)]
struct Runs(Mutex<HashMap<String, Vec<&'static str>>>);

struct Counting {
    instance: &'static str,
    runs: Arc<Runs>,
}

#[async_trait::async_trait]
impl JobHandler for Counting {
    async fn run(&self, _: &JobContext, job: &ClaimedJob) -> JobOutcome {
        self.runs.0.lock().unwrap().entry(job.id.to_string()).or_default().push(self.instance);
        tokio::time::sleep(Duration::from_millis(10)).await;
        JobOutcome::Done
    }
}

async fn instance(db: &Arc<PgDatabase>, key: &str, name: &'static str, runs: &Arc<Runs>) -> TestApp {
    let key = key.to_owned();
    spawn()
        .postgres(db.clone())
        .configure(move |s| s.vault.master_key = key)
        .job_handler("test.count", Arc::new(Counting { instance: name, runs: runs.clone() }))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: set CRMHUB_TEST_DATABASE_URL and pass --include-ignored (scripts/test does both)"]
async fn two_instances_on_one_postgres_run_each_job_once_and_share_a_login() {
    let db = PgDatabase::create().await;
    let key = MasterKey::generate().encode().expose().to_owned();
    let runs = Arc::new(Runs::default());
    let a = instance(&db, &key, "a", &runs).await;
    let b = instance(&db, &key, "b", &runs).await;

    // Jobs enqueued on one instance are claimed by both, each exactly once.
    let tenant = tenant_id(&a.create_tenant("acme").await);
    let mut ids = Vec::new();
    for n in 0..60 {
        let store = if n % 2 == 0 { a.store() } else { b.store() };
        ids.push(store.jobs().enqueue(tenant, NewJob::new("test.count", json!({"n": n}))).await.unwrap().id());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while a.store().jobs().depth(None).await.unwrap() != Default::default() {
        assert!(tokio::time::Instant::now() < deadline, "the jobs did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let runs = runs.0.lock().unwrap().clone();
    for id in &ids {
        assert_eq!(runs.get(&id.to_string()).map(Vec::len), Some(1), "job {id} ran once: {runs:?}");
    }
    assert_eq!(runs.len(), ids.len(), "no other job ran");
    for name in ["a", "b"] {
        assert!(runs.values().flatten().any(|i| *i == name), "instance {name} claimed jobs too: {runs:?}");
    }

    // One Vtiger account used from both instances at once: one login, shared.
    let sim = spawn_vtiger(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    let body = json!({"name": "Vtiger", "kind": "vtiger", "host": sim.base_url(),
                      "fields": {"username": "admin"}, "credentials": {"access_key": KEY}});
    let id = a.create_connection("acme", &body).await;
    assert_eq!(b.get_connection("acme", &id).await.status(), 200, "b sees a's connection");
    let path = format!("/admin/v1/tenants/acme/connections/{id}/test");
    let empty = json!({});
    let (from_a, from_b) = tokio::join!(
        a.admin_send(reqwest::Method::POST, &path, &empty),
        b.admin_send(reqwest::Method::POST, &path, &empty)
    );
    for report in [from_a, from_b] {
        let report: Value = report.json().await.unwrap();
        assert_eq!(report["ok"], true, "{report}");
    }
    assert_eq!(sim.login_count("admin"), 1, "the two instances shared one login");

    a.stop().await;
    b.stop().await;
}
