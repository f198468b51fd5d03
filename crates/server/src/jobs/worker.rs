//! The worker loop: claim, run under a renewed lease and a timeout, record the outcome.

use std::sync::Arc;
use std::time::Duration;

use crmhub_store::Store;
use crmhub_store::jobs::{ClaimedJob, JobStatus, backoff_delay};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{JobOutcome, JobRegistry};
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub job_timeout: Duration,
    pub lease: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

#[derive(Clone)]
struct WorkerContext {
    store: Store,
    registry: Arc<JobRegistry>,
    config: WorkerConfig,
    metrics: Arc<Metrics>,
}

/// Workers of one instance. `shutdown` stops claiming, lets running jobs finish within the
/// grace period, and puts back (without counting the attempt) whatever is still running then.
pub struct WorkerPool {
    workers: JoinSet<()>,
    stop_claiming: CancellationToken,
    abandon: CancellationToken,
}

impl WorkerPool {
    pub fn start(
        store: Store,
        registry: Arc<JobRegistry>,
        config: WorkerConfig,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> Self {
        let stop_claiming = CancellationToken::new();
        let abandon = CancellationToken::new();
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let ctx = WorkerContext { store, registry, config: config.clone(), metrics };
        let mut workers = JoinSet::new();
        for n in 0..config.concurrency {
            let name = format!("{}-{n}", &instance[..8]);
            workers.spawn(worker_loop(ctx.clone(), name, wake.clone(), stop_claiming.clone(), abandon.clone()));
        }
        Self { workers, stop_claiming, abandon }
    }

    pub async fn shutdown(mut self, grace: Duration) {
        self.stop_claiming.cancel();
        let finished = tokio::time::timeout(grace, async { while self.workers.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            tracing::warn!("jobs still running after the shutdown grace period; releasing them");
            self.abandon.cancel();
            while self.workers.join_next().await.is_some() {}
        }
    }
}

async fn worker_loop(
    ctx: WorkerContext,
    name: String,
    wake: Arc<Notify>,
    stop_claiming: CancellationToken,
    abandon: CancellationToken,
) {
    while !stop_claiming.is_cancelled() {
        match ctx.store.jobs().claim(&name, ctx.config.lease).await {
            Ok(Some(job)) => execute(&ctx, job, &abandon).await,
            Ok(None) => {
                tokio::select! {
                    () = tokio::time::sleep(ctx.config.poll_interval) => {}
                    () = wake.notified() => {}
                    () = stop_claiming.cancelled() => {}
                }
            }
            Err(e) => {
                tracing::warn!(worker = %name, error = %e, "could not claim a job");
                tokio::select! {
                    () = tokio::time::sleep(ctx.config.poll_interval * 4) => {}
                    () = stop_claiming.cancelled() => {}
                }
            }
        }
    }
}

/// Runs one claimed job to a recorded outcome, every log line of it in the job's span.
///
/// The span is attached with `instrument`, entered only while the job's future is polled. (An
/// `enter()` guard held across `.await` stays entered on the thread while the job waits, so
/// other jobs and requests polled there in the meantime would log under this job's id.)
async fn execute(ctx: &WorkerContext, job: ClaimedJob, abandon: &CancellationToken) {
    let span =
        tracing::info_span!("job", id = %job.id, kind = %job.kind, tenant = %job.tenant_id, attempt = job.attempts);
    run_claimed(ctx, job, abandon).instrument(span).await;
}

async fn run_claimed(ctx: &WorkerContext, job: ClaimedJob, abandon: &CancellationToken) {
    let Some(handler) = ctx.registry.get(&job.kind).cloned() else {
        let error = format!("no handler for job kind {:?} in this version; redrive it after upgrading", job.kind);
        tracing::error!(%error, "job cannot run");
        record(ctx, &job, "no_handler", ctx.store.jobs().kill(&job, &error).await);
        return;
    };

    let lease_lost = CancellationToken::new();
    let heartbeat = tokio::spawn(
        keep_lease(ctx.store.clone(), job.clone(), ctx.config.lease, lease_lost.clone()).in_current_span(),
    );
    let outcome = tokio::select! {
        result = tokio::time::timeout(ctx.config.job_timeout, handler.run(ctx.registry.context(), &job)) => Some(result.unwrap_or_else(|_| {
            JobOutcome::Retry(format!("timed out after {}s", ctx.config.job_timeout.as_secs()))
        })),
        () = lease_lost.cancelled() => None,
        () = abandon.cancelled() => {
            let now = ctx.store.clock().now_millis();
            heartbeat.abort();
            record(ctx, &job, "released", ctx.store.jobs().defer(&job, now, Some("released at shutdown")).await);
            return;
        }
    };
    heartbeat.abort();
    let Some(outcome) = outcome else {
        tracing::warn!("lease lost while running; another worker has the job now");
        ctx.metrics.job_finished(&job.kind, "lease_lost");
        return;
    };

    let outcome = match outcome {
        JobOutcome::Crm(error) => {
            let now = ctx.store.clock().now_millis();
            JobOutcome::of_crm_error(error, job.attempts, job.connection_id.is_some(), now, &ctx.config)
        }
        other => other,
    };
    let jobs = ctx.store.jobs();
    match outcome {
        JobOutcome::Done => record(ctx, &job, "done", jobs.complete(&job).await),
        JobOutcome::RetryAt { at, reason } => record(ctx, &job, "deferred", jobs.defer(&job, at, Some(&reason)).await),
        JobOutcome::Reauth(reason) => {
            tracing::warn!(%reason, "credentials refused; pausing the connection's jobs until it is active again");
            record(ctx, &job, "paused", pause(ctx, &job, &reason).await);
        }
        // Resolved above; kept total rather than trusting that.
        JobOutcome::Crm(error) => record(ctx, &job, "dead", jobs.kill(&job, &error.to_string()).await),
        JobOutcome::Fail(error) => {
            tracing::warn!(%error, "job failed permanently");
            record(ctx, &job, "dead", jobs.kill(&job, &error).await);
        }
        JobOutcome::Retry(error) => {
            let delay = backoff_delay(job.attempts, ctx.config.backoff_base, ctx.config.backoff_max);
            let retry_at = ctx.store.clock().now_millis() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            match jobs.fail(&job, &error, retry_at).await {
                Ok(JobStatus::Dead) => {
                    tracing::warn!(%error, "job failed on its last attempt; it is dead");
                    ctx.metrics.job_finished(&job.kind, "dead");
                }
                Ok(_) => {
                    tracing::info!(%error, retry_in_secs = delay.as_secs(), "job failed; will retry");
                    ctx.metrics.job_finished(&job.kind, "retry");
                }
                Err(e) => record(ctx, &job, "retry", Err(e)),
            }
        }
    }
}

/// Marks the job's connection `needs_reauth` (which pauses its waiting jobs) and parks the job.
async fn pause(ctx: &WorkerContext, job: &ClaimedJob, reason: &str) -> crmhub_store::Result<()> {
    if let Some(connection) = job.connection_id {
        let connections = ctx.store.connections(job.tenant_id);
        connections.set_status(connection, crmhub_core::ConnectionStatus::NeedsReauth, Some(reason)).await?;
    }
    ctx.store.jobs().park(job, reason).await
}

fn record(ctx: &WorkerContext, job: &ClaimedJob, outcome: &str, result: crmhub_store::Result<()>) {
    match result {
        Ok(()) => ctx.metrics.job_finished(&job.kind, outcome),
        Err(e) => {
            tracing::warn!(error = %e, outcome, "could not record the job's outcome");
            ctx.metrics.job_finished(&job.kind, "unrecorded");
        }
    }
}

/// Renews the lease at a third of its length; cancels `lost` if another worker took over.
async fn keep_lease(store: Store, job: ClaimedJob, lease: Duration, lost: CancellationToken) {
    loop {
        tokio::time::sleep(lease / 3).await;
        match store.jobs().heartbeat(&job, lease).await {
            Ok(true) => {}
            Ok(false) => {
                lost.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "lease renewal failed; will try again"),
        }
    }
}

/// What `drain` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DrainReport {
    pub ran: usize,
    pub dead: u64,
    pub pending: u64,
}

/// Runs every job that is runnable now, one at a time, until none is left; then reports what
/// remains. Tests use it to process the queue synchronously and assert nothing is left behind.
pub async fn drain(
    store: &Store,
    registry: Arc<JobRegistry>,
    config: WorkerConfig,
    metrics: Arc<Metrics>,
) -> DrainReport {
    let ctx = WorkerContext { store: store.clone(), registry, config, metrics };
    let never = CancellationToken::new();
    let mut report = DrainReport::default();
    while let Ok(Some(job)) = store.jobs().claim("drain", ctx.config.lease).await {
        execute(&ctx, job, &never).await;
        report.ran += 1;
    }
    if let Ok(depth) = store.jobs().depth(None).await {
        report.dead = depth.dead;
        report.pending = depth.pending + depth.running;
    }
    report
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use crmhub_core::{SystemClock, TenantName, TenantSlug};
    use crmhub_store::jobs::NewJob;
    use crmhub_store::tenants::NewTenant;
    use serde_json::Value;
    use tokio::sync::Barrier;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;
    use crate::Settings;
    use crate::jobs::{JobContext, JobHandler};

    /// Log output, kept for the test to read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl MakeWriter<'_> for Captured {
        type Writer = Captured;

        fn make_writer(&self) -> Self::Writer {
            self.clone()
        }
    }

    /// Two jobs meet twice, so each one waits while the other runs, and log in between.
    struct Rendezvous(Barrier, Barrier);

    #[async_trait::async_trait]
    impl JobHandler for Rendezvous {
        async fn run(&self, _: &JobContext, job: &ClaimedJob) -> JobOutcome {
            self.0.wait().await;
            tracing::info!(job = %job.id, "between the meetings");
            self.1.wait().await;
            tracing::info!(job = %job.id, "after the meetings");
            JobOutcome::Done
        }
    }

    /// On one thread (the test runtime), as on any worker thread that polls several jobs.
    #[tokio::test]
    async fn concurrent_jobs_log_under_their_own_ids() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt().json().flatten_event(true).with_writer(captured.clone()).finish();
        // tracing caches each call site's interest for the whole process, worked out against
        // the subscriber of the thread that reaches it first: another test's worker, with no
        // subscriber, reaching the job span first would make it a no-op for this thread-local
        // capture too. A global subscriber interested in everything keeps every interest
        // "always"; events on threads without a capture go nowhere.
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            tracing::subscriber::set_global_default(tracing_subscriber::registry())
                .expect("no other global subscriber in these unit tests");
        });
        let _default = tracing::subscriber::set_default(subscriber);

        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::defaults().unwrap();
        settings.data_dir = dir.path().to_path_buf();
        let (state, _log_writer) = crate::AppState::build(settings, Arc::new(SystemClock)).await.unwrap();
        let store = state.store.clone();
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
        for n in 0..2 {
            store.jobs().enqueue(tenant.id, NewJob::new("rendezvous", serde_json::json!({"n": n}))).await.unwrap();
        }
        let mut registry = JobRegistry::new(JobContext::new(&state));
        registry.register("rendezvous", Arc::new(Rendezvous(Barrier::new(2), Barrier::new(2))));
        let config = WorkerConfig {
            concurrency: 2,
            poll_interval: Duration::from_millis(10),
            job_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(1),
        };
        let pool =
            WorkerPool::start(store.clone(), Arc::new(registry), config, Arc::new(Metrics::new()), Arc::default());
        let finished = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let depth = store.jobs().depth(None).await.unwrap();
                if depth.pending + depth.running == 0 {
                    return depth.dead;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        pool.shutdown(Duration::from_secs(1)).await;
        assert_eq!(finished, Ok(0), "both jobs ran to completion");

        let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = output.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let logged: Vec<&Value> =
            lines.iter().filter(|l| l["message"].as_str().is_some_and(|m| m.contains("meetings"))).collect();
        assert_eq!(logged.len(), 4, "{output}");
        for line in logged {
            assert_eq!(line["span"]["name"], "job", "{line}");
            assert_eq!(line["span"]["id"], line["job"], "a line of one job under another's id: {line}");
        }
    }
}
