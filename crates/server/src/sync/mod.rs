//! Contact sync (issue 12): a pipeline mirrors a source connection's contacts (Kommo by
//! webhooks and backfill, Vtiger by its polled change feed; any connector that lists changes)
//! into one Unisender list. See docs/sync.md.
//!
//! The pieces, a module each: `pipeline` (what a pipeline may be), `mirror` (one contact, or a
//! page of them, into the destination and the index), and the jobs: `sync.contact` (one
//! contact, re-fetched from the source; coalesced per contact by its dedupe key),
//! `sync.backfill` (the source's change feed page by page from a checkpoint), `sync.reconcile`
//! (source ids vs the index vs the destination list) and `sync.poll` (a polled feed).
//!
//! Delivery is at least once: the destination is written before the index, so a crash or a
//! lost lease between the two re-sends that contact (or page) once when the job runs again;
//! the destination's import is an upsert, so the re-send changes nothing there.

mod backfill;
mod destination;
mod mirror;
pub mod pipeline;
mod poll;
mod reconcile;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crmhub_connectors::http::Lane;
use crmhub_core::crm::{Crm, CrmError};
use crmhub_core::{ConnectionId, TenantId};
use crmhub_store::jobs::{ClaimedJob, NewJob};
use crmhub_store::sync::{Pipeline, PipelineStatus, RunKind, RunStart, SyncRun};
use crmhub_store::{Store, StoreError};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use backfill::{BackfillSlice, backfill_slice};
pub use destination::{
    DestinationResolver, DestinationRow, ImportOutcome, RowRefusal, SyncDestination, UnisenderDestinations,
    UnisenderList, unisender_of,
};
pub use mirror::{Engine, Mirrored, SourceContact};
pub use pipeline::{PipelineInput, SOURCE_FIELDS, ValidatedPipeline, validate_field_map};
pub use poll::poll_once;
pub use reconcile::{ReconcileReport, reconcile};

use crate::crm_access::AccessError;
use crate::jobs::{JobContext, JobHandler, JobOutcome, JobRegistry};

/// Mirrors one contact: `{"pipeline", "contact"}`, dedupe key `{pipeline}:{contact}`.
pub const CONTACT_JOB: &str = "sync.contact";
/// Runs a backfill from its checkpoint: `{"pipeline", "run"}`.
pub const BACKFILL_JOB: &str = "sync.backfill";
/// Runs a reconciliation: `{"pipeline", "run"}`.
pub const RECONCILE_JOB: &str = "sync.reconcile";
/// Reads a polled pipeline's change feed from its cursor: `{"pipeline"}`.
pub const POLL_JOB: &str = "sync.poll";

/// Rows per destination import call (Unisender's limit).
pub const IMPORT_BATCH: usize = 500;

/// A reconciliation of every active pipeline this often.
const RECONCILE_EVERY: Duration = Duration::from_secs(6 * 3600);
/// How often the scheduler looks for polls that are due.
const TICK: Duration = Duration::from_secs(5);

/// The job that mirrors one contact of a pipeline. Jobs for the same contact coalesce while one
/// waits: a storm of updates makes one fetch and one import.
pub fn contact_job(pipeline: &Pipeline, contact_id: &str) -> NewJob {
    NewJob::new(CONTACT_JOB, json!({"pipeline": pipeline.id, "contact": contact_id}))
        .dedupe_key(format!("{}:{contact_id}", pipeline.id))
        .connection(pipeline.source_connection_id)
        .priority(5)
}

/// The jobs a webhook delivery on `source` makes for these contact ids: one per active pipeline
/// reading from it and contact. Pass them to `Sync::record_delivery`, which enqueues them in
/// the same transaction that records the delivery.
pub async fn jobs_for_contacts(
    store: &Store,
    tenant: TenantId,
    source: ConnectionId,
    contact_ids: &[String],
) -> Result<Vec<NewJob>, StoreError> {
    let pipelines = store.sync(tenant).pipelines_from(source).await?;
    Ok(pipelines.iter().flat_map(|p| contact_ids.iter().map(move |id| contact_job(p, id))).collect())
}

fn run_job(kind: RunKind, run: &SyncRun, source: ConnectionId) -> NewJob {
    let job_kind = match kind {
        RunKind::Backfill => BACKFILL_JOB,
        RunKind::Reconcile => RECONCILE_JOB,
    };
    NewJob::new(job_kind, json!({"pipeline": run.pipeline_id, "run": run.id}))
        .dedupe_key(run.id.to_string())
        .connection(source)
        .max_attempts(20)
}

/// Starts a run of `kind` on the pipeline unless one is running (then that one is returned).
pub async fn start_run(store: &Store, pipeline: &Pipeline, kind: RunKind) -> Result<RunStart, StoreError> {
    let source = pipeline.source_connection_id;
    store.sync(pipeline.tenant_id).start_run(pipeline.id, kind, |run| run_job(kind, run, source)).await
}

/// The job that starts a run of a pipeline made in the same transaction.
pub fn first_run_job(pipeline: &Pipeline, run: &SyncRun) -> NewJob {
    run_job(RunKind::Backfill, run, pipeline.source_connection_id)
}

/// A run as the API and the CLI show it: its row, plus `rate_per_sec` (contacts a second so
/// far) and `eta_secs` (when the total is known and it is running).
pub fn run_view(run: &SyncRun) -> serde_json::Value {
    let end = run.finished_at.unwrap_or(run.updated_at);
    let secs = ((end - run.started_at) as f64 / 1000.0).max(0.001);
    let rate = run.done as f64 / secs;
    let eta = match (run.status, run.total) {
        (crmhub_store::sync::RunStatus::Running, Some(total)) if rate > 0.0 => {
            Some((total.saturating_sub(run.done) as f64 / rate).ceil() as u64)
        }
        _ => None,
    };
    let mut value = serde_json::to_value(run).unwrap_or_default();
    value["rate_per_sec"] = json!((rate * 100.0).round() / 100.0);
    value["eta_secs"] = json!(eta);
    value
}

/// Checks a pipeline against its connections and stores it with its first backfill (one
/// transaction): what `POST …/sync/pipelines` and `crmhub sync pipeline create` do. Every
/// refusal is a 422 naming the field, and then nothing is stored.
pub async fn create_pipeline(
    state: &crate::state::AppState,
    tenant: &crmhub_store::tenants::Tenant,
    input: PipelineInput,
) -> Result<(Pipeline, RunStart), crate::error::ApiError> {
    use crate::error::ApiError;
    async fn connection_field(
        state: &crate::state::AppState,
        tenant: &crmhub_store::tenants::Tenant,
        field: &str,
        raw: &str,
    ) -> Result<crmhub_store::connections::Connection, ApiError> {
        let id = raw.parse().map_err(|_| ApiError::invalid(field, format!("{raw:?} is not a connection id")))?;
        match state.store.connections(tenant.id).get(id).await {
            Ok(c) => Ok(c),
            Err(StoreError::NotFound { .. }) => Err(ApiError::invalid(field, "no such connection in this tenant")),
            Err(e) => Err(e.into()),
        }
    }
    let source = connection_field(state, tenant, "source_connection_id", &input.source_connection_id).await?;
    let destination =
        connection_field(state, tenant, "destination_connection_id", &input.destination_connection_id).await?;
    let capabilities = match state.crms.crm(&state.store, &state.connectors, tenant, &source, Lane::Interactive).await {
        Ok(crm) => crm.capabilities().to_vec(),
        Err(AccessError::Crm(e)) => {
            return Err(ApiError::invalid("source_connection_id", format!("cannot be a source: {e}")));
        }
        Err(AccessError::Store(e)) => return Err(e.into()),
    };
    let valid = pipeline::validate(input, &source, &capabilities, &destination)?;
    Ok(state.store.sync(tenant.id).create_pipeline_with_run(valid.0, RunKind::Backfill, first_run_job).await?)
}

/// The sync job kinds, with how they reach the destination.
pub fn register_jobs(registry: &mut JobRegistry, destinations: Arc<dyn DestinationResolver>) {
    let handler = Arc::new(SyncJobs { destinations });
    for kind in [CONTACT_JOB, BACKFILL_JOB, RECONCILE_JOB, POLL_JOB] {
        registry.register(kind, handler.clone());
    }
}

struct SyncJobs {
    destinations: Arc<dyn DestinationResolver>,
}

/// Why a job could not even start its work.
fn access_outcome(error: AccessError) -> JobOutcome {
    match error {
        AccessError::Crm(e) => JobOutcome::Crm(e),
        AccessError::Store(StoreError::NotFound { entity }) => JobOutcome::Fail(format!("{entity} not found")),
        AccessError::Store(e) => JobOutcome::Retry(e.to_string()),
    }
}

fn store_outcome(error: StoreError) -> JobOutcome {
    match error {
        StoreError::NotFound { entity } => JobOutcome::Fail(format!("{entity} not found")),
        e => JobOutcome::Retry(e.to_string()),
    }
}

fn payload_id(job: &ClaimedJob, key: &str) -> Result<Uuid, JobOutcome> {
    job.payload
        .get(key)
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| JobOutcome::Fail(format!("a {} job without a valid {key:?}", job.kind)))
}

impl SyncJobs {
    async fn sides(
        &self,
        ctx: &JobContext,
        pipeline: &Pipeline,
    ) -> Result<(Arc<dyn Crm>, Arc<dyn SyncDestination>), AccessError> {
        let tenant = ctx.store.tenants().get(pipeline.tenant_id).await?;
        let connections = ctx.store.connections(pipeline.tenant_id);
        let source = connections.get(pipeline.source_connection_id).await?;
        let destination = connections.get(pipeline.destination_connection_id).await?;
        let crm = ctx.crms.crm(&ctx.store, &ctx.connectors, &tenant, &source, Lane::Background).await?;
        let dest = self.destinations.destination(&ctx.store, &ctx.connectors, &tenant, &destination).await?;
        Ok((crm, dest))
    }

    async fn run_job(&self, ctx: &JobContext, job: &ClaimedJob) -> Result<JobOutcome, JobOutcome> {
        let pipeline_id = payload_id(job, "pipeline")?;
        let pipeline = match ctx.store.sync(job.tenant_id).pipeline(pipeline_id).await {
            Ok(p) => p,
            // The pipeline was deleted: its queued work has nothing left to do.
            Err(StoreError::NotFound { .. }) => return Ok(JobOutcome::Done),
            Err(e) => return Err(store_outcome(e)),
        };
        let (source, dest) = self.sides(ctx, &pipeline).await.map_err(access_outcome)?;
        let engine = Engine::new(&ctx.store, &pipeline, source.as_ref(), dest.as_ref());
        match job.kind.as_str() {
            CONTACT_JOB => {
                if pipeline.status == PipelineStatus::Paused {
                    return Ok(JobOutcome::Done);
                }
                let contact = job.payload.get("contact").and_then(|v| v.as_str()).unwrap_or_default();
                if contact.is_empty() {
                    return Err(JobOutcome::Fail("a sync.contact job without a contact".into()));
                }
                Ok(engine.mirror_contact(contact, false).await.map(|_| JobOutcome::Done).unwrap_or_else(Into::into))
            }
            BACKFILL_JOB => {
                let run = payload_id(job, "run")?;
                Ok(backfill::run_job(&engine, ctx, job, run).await)
            }
            RECONCILE_JOB => {
                let run = payload_id(job, "run")?;
                Ok(reconcile::run_job(&engine, job, run).await)
            }
            POLL_JOB => {
                if pipeline.status == PipelineStatus::Paused || pipeline.poll_secs.is_none() {
                    return Ok(JobOutcome::Done);
                }
                Ok(poll_once(&engine).await.map(|_| JobOutcome::Done).unwrap_or_else(Into::into))
            }
            other => Err(JobOutcome::Fail(format!("not a sync job kind: {other}"))),
        }
    }
}

#[async_trait::async_trait]
impl JobHandler for SyncJobs {
    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> JobOutcome {
        self.run_job(ctx, job).await.unwrap_or_else(|outcome| outcome)
    }
}

/// What a step of the engine can fail with: the source or the destination, or the store.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Crm(#[from] CrmError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<SyncError> for JobOutcome {
    fn from(error: SyncError) -> Self {
        match error {
            SyncError::Crm(e) => JobOutcome::Crm(e),
            SyncError::Store(e) => store_outcome(e),
        }
    }
}

/// Enqueues a poll of every polled pipeline that is due (`last` remembers when each was last
/// enqueued by this instance) and a reconciliation of every active pipeline every six hours.
/// Several instances may all do so: dedupe keys and the one-running-run rule keep it single.
pub async fn schedule(
    store: &Store,
    last_poll: &mut HashMap<Uuid, Instant>,
    last_reconcile: &mut HashMap<Uuid, Instant>,
) -> Result<usize, StoreError> {
    let mut enqueued = 0;
    for pipeline in store.active_sync_pipelines().await? {
        if let Some(secs) = pipeline.poll_secs {
            let due = last_poll.get(&pipeline.id).is_none_or(|at| at.elapsed() >= Duration::from_secs(secs.into()));
            if due {
                let job = NewJob::new(POLL_JOB, json!({"pipeline": pipeline.id}))
                    .dedupe_key(format!("poll:{}", pipeline.id))
                    .connection(pipeline.source_connection_id)
                    .max_attempts(3);
                store.jobs().enqueue(pipeline.tenant_id, job).await?;
                last_poll.insert(pipeline.id, Instant::now());
                enqueued += 1;
            }
        }
        // The first reconciliation waits a full period: creation starts a backfill.
        let since = *last_reconcile.entry(pipeline.id).or_insert_with(Instant::now);
        if since.elapsed() >= RECONCILE_EVERY {
            start_run(store, &pipeline, RunKind::Reconcile).await?;
            last_reconcile.insert(pipeline.id, Instant::now());
            enqueued += 1;
        }
    }
    Ok(enqueued)
}

/// Runs the scheduler until `stop`.
pub async fn run_scheduler(store: Store, wake: Arc<Notify>, stop: CancellationToken) {
    let (mut polls, mut reconciles) = (HashMap::new(), HashMap::new());
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = stop.cancelled() => return,
        }
        match schedule(&store, &mut polls, &mut reconciles).await {
            Ok(0) => {}
            Ok(_) => wake.notify_waiters(),
            Err(e) => tracing::warn!(error = %e, "could not schedule sync polls"),
        }
    }
}
