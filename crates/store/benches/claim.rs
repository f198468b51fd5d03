//! Claim latency with 100,000 jobs waiting: enqueues them (SQLite, and PostgreSQL when
//! CRMHUB_TEST_DATABASE_URL is set), then times 1,000 claims (each completed, as a worker
//! would) and 1,000 single enqueues at that depth. Run by hand, never by scripts/test:
//!
//!     cargo bench -p crmhub-store --bench claim
//!
//! Options (environment): CLAIM_BENCH_JOBS (100000), CLAIM_BENCH_SAMPLES (1000).

use std::str::FromStr;
use std::time::{Duration, Instant};

use crmhub_core::{TenantName, TenantSlug};
use crmhub_store::jobs::NewJob;
use crmhub_store::tenants::NewTenant;
use crmhub_store::{DatabaseUrl, MasterKey, MasterKeySource, Store, StoreOptions};
use serde_json::json;

const TENANTS: usize = 10;
const LEASE: Duration = Duration::from_secs(60);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let jobs = env("CLAIM_BENCH_JOBS", 100_000);
    let samples = env("CLAIM_BENCH_SAMPLES", 1_000);
    let dir = tempfile::tempdir()?;
    run("sqlite", DatabaseUrl::sqlite_file(dir.path().join("bench.db")), jobs, samples).await?;
    if let Some(admin) = std::env::var("CRMHUB_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        let name = format!("claim_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await?;
        let mut options = sqlx::postgres::PgConnectOptions::from_str(&admin)?;
        options = options.database(&name);
        let url = format!("postgres://{}@{}:{}/{name}", options.get_username(), options.get_host(), options.get_port());
        let result = run("postgres", DatabaseUrl::parse(&url)?, jobs, samples).await;
        sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)")).execute(&mut conn).await?;
        result?;
    } else {
        println!("postgres: skipped (CRMHUB_TEST_DATABASE_URL is not set)");
    }
    Ok(())
}

async fn run(backend: &str, url: DatabaseUrl, jobs: usize, samples: usize) -> anyhow::Result<()> {
    let mut options = StoreOptions::new(url, MasterKeySource::Given(MasterKey::generate()));
    options.max_queue_depth_per_tenant = (jobs as u64) * 2;
    let store = Store::open(options).await?;
    let mut tenants = Vec::new();
    for n in 0..TENANTS {
        let tenant = store
            .tenants()
            .create(NewTenant {
                slug: TenantSlug::parse(&format!("bench-{n}"))?,
                name: TenantName::parse(&format!("Bench {n}"))?,
                phone_region: None,
                settings: Default::default(),
            })
            .await?;
        tenants.push(tenant.id);
    }

    // 100k jobs in batches of 1,000 per transaction, spread over tenants and two priorities;
    // a fifth of them wait for a later run (retries backing off).
    let now = store.clock().now_millis();
    let started = Instant::now();
    for batch in 0..jobs.div_ceil(1000) {
        let mut tx = store.begin().await?;
        for i in batch * 1000..((batch + 1) * 1000).min(jobs) {
            let mut job = NewJob::new("bench.noop", json!({"i": i})).priority((i % 2) as i32);
            if i % 5 == 0 {
                job = job.run_at(now + 3_600_000);
            }
            if i % 3 == 0 {
                job = job.dedupe_key(format!("key-{i}"));
            }
            tx.enqueue_job(&store, tenants[i % TENANTS], job).await?;
        }
        tx.commit().await?;
    }
    let enqueue_all = started.elapsed();

    let mut enqueue = Vec::with_capacity(samples);
    for i in 0..samples {
        let t = Instant::now();
        store.jobs().enqueue(tenants[i % TENANTS], NewJob::new("bench.noop", json!({"late": i}))).await?;
        enqueue.push(t.elapsed());
    }

    let mut claim = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let job = store.jobs().claim("bench", LEASE).await?.ok_or_else(|| anyhow::anyhow!("queue ran dry"))?;
        claim.push(t.elapsed());
        store.jobs().complete(&job).await?;
    }
    let depth = store.jobs().depth(None).await?;
    println!(
        "{backend}: {jobs} jobs enqueued in {:.1}s ({:.0}/s); then, with {} waiting:",
        enqueue_all.as_secs_f64(),
        jobs as f64 / enqueue_all.as_secs_f64(),
        depth.pending
    );
    report("claim", &mut claim);
    report("enqueue", &mut enqueue);
    store.close().await;
    Ok(())
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  {what:8} n={} p50={:.3}ms p99={:.3}ms max={:.3}ms",
        samples.len(),
        ms(at(0.50)),
        ms(at(0.99)),
        ms(samples[samples.len() - 1])
    );
}
