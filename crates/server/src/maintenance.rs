//! Housekeeping, as jobs: worker instances schedule one retention job per tenant every ten
//! minutes (request log, call maps, expired idempotency keys, Kommo's OAuth states and codes)
//! and a token refresh per active Kommo OAuth connection, and any worker runs them (with the
//! queue's retries and dead letters).

use std::sync::Arc;
use std::time::Duration;

use crmhub_store::jobs::{ClaimedJob, NewJob};
use crmhub_store::{Store, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{CallMapSettings, RequestLogSettings, Settings};
use crate::jobs::{JobContext, JobHandler, JobOutcome, JobRegistry};

const EVERY: Duration = Duration::from_secs(600);
/// The first round waits a little, so that a starting instance serves before it prunes.
const FIRST: Duration = Duration::from_secs(60);

/// Applies request-log, call-map and idempotency-key retention to the job's tenant.
pub const PRUNE_REQUEST_LOG: &str = "maintenance.prune_request_log";

/// The product's job kinds.
pub fn register(registry: &mut JobRegistry, settings: &Settings) {
    registry.register(
        PRUNE_REQUEST_LOG,
        Arc::new(PruneRequestLog { settings: settings.request_log.clone(), call_maps: settings.call_maps.clone() }),
    );
}

struct PruneRequestLog {
    settings: RequestLogSettings,
    call_maps: CallMapSettings,
}

#[async_trait::async_trait]
impl JobHandler for PruneRequestLog {
    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> JobOutcome {
        let cutoff = ctx.clock.now_millis() - i64::from(self.call_maps.retention_days) * 86_400_000;
        match ctx.store.prune_call_maps(job.tenant_id, cutoff).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, tenant = %job.tenant_id, "call maps pruned"),
            Err(e) => return JobOutcome::Retry(e.to_string()),
        }
        // The call-centre channel's calls are kept as long as the maps: both only serve to log
        // a late event of a call against the record it already has.
        match ctx.store.calls(job.tenant_id).prune(cutoff).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, tenant = %job.tenant_id, "calls and text messages pruned"),
            Err(e) => return JobOutcome::Retry(e.to_string()),
        }
        // Kommo's seen authorisation codes (replay refusal) and used or expired states, a day on.
        match ctx.store.kommo(job.tenant_id).prune(ctx.clock.now_millis() - 86_400_000).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, tenant = %job.tenant_id, "kommo oauth states and codes pruned"),
            Err(e) => return JobOutcome::Retry(e.to_string()),
        }
        match ctx.store.idempotency(job.tenant_id).prune(ctx.clock.now_millis()).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, tenant = %job.tenant_id, "expired idempotency keys pruned"),
            Err(e) => return JobOutcome::Retry(e.to_string()),
        }
        let cutoff = ctx.clock.now_millis() - i64::from(self.settings.retention_days) * 86_400_000;
        match ctx.store.request_log(job.tenant_id).prune(cutoff, self.settings.max_entries_per_connection).await {
            Ok(0) => JobOutcome::Done,
            Ok(pruned) => {
                tracing::info!(pruned, tenant = %job.tenant_id, "request log pruned");
                JobOutcome::Done
            }
            Err(e) => JobOutcome::Retry(e.to_string()),
        }
    }
}

/// Schedules the housekeeping jobs until `stop`. Several instances may all do so: the dedupe
/// key keeps one waiting job per tenant.
pub async fn run(store: Store, wake: Arc<Notify>, stop: CancellationToken) {
    let mut wait = FIRST;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
        wait = EVERY;
        if let Err(e) = schedule(&store).await {
            tracing::warn!(error = %e, "could not schedule housekeeping");
        }
        // Kommo access tokens live 24 h; each round refreshes those expiring within two hours.
        if let Err(e) = crate::kommo::schedule_refreshes(&store).await {
            tracing::warn!(error = %e, "could not schedule kommo token refreshes");
        }
        wake.notify_waiters();
    }
}

async fn schedule(store: &Store) -> Result<(), StoreError> {
    for tenant in store.tenants().list().await? {
        let job = NewJob::new(PRUNE_REQUEST_LOG, serde_json::json!({})).dedupe_key(PRUNE_REQUEST_LOG).max_attempts(3);
        match store.jobs().enqueue(tenant.id, job).await {
            Ok(_) => {}
            // A tenant whose queue is full gets pruned next round.
            Err(StoreError::QueueFull { .. }) => tracing::debug!(tenant = %tenant.id, "queue full; pruning later"),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
