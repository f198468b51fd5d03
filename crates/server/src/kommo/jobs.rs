//! Kommo's jobs: the code exchange after a callback (`kommo.connect`), token refreshes ahead of
//! expiry (`kommo.refresh`, scheduled with the housekeeping), and the end of an IP block
//! (`kommo.unblock`).

use std::time::Duration;

use crmhub_connectors::http::Lane;
use crmhub_core::crm::CrmError;
use crmhub_core::time::utc_date_time;
use crmhub_core::{ConnectionId, ConnectionStatus, ConnectorKind, TenantId, UnixMillis};
use crmhub_store::jobs::{ClaimedJob, NewJob};
use crmhub_store::{Store, StoreError};
use serde_json::{Value, json};

use super::client::KommoAccount;
use super::connect::STATE_TTL;
use super::{REFRESH_JOB, UNBLOCK_JOB};
use crate::crm_access::AccessError;
use crate::jobs::{JobContext, JobHandler, JobOutcome};

/// Tokens expiring within this are refreshed.
pub const REFRESH_AHEAD: Duration = Duration::from_secs(2 * 3600);

fn payload_connection(job: &ClaimedJob) -> Result<ConnectionId, JobOutcome> {
    job.payload
        .get("connection_id")
        .and_then(Value::as_str)
        .and_then(|raw| raw.parse().ok())
        .ok_or_else(|| JobOutcome::Fail("the job's payload names no connection".into()))
}

async fn account(
    ctx: &JobContext,
    job: &ClaimedJob,
    id: ConnectionId,
    lane: Lane,
) -> Result<Option<KommoAccount>, JobOutcome> {
    let connection = match ctx.store.connections(job.tenant_id).get(id).await {
        Ok(connection) => connection,
        // Deleted since: nothing left to do.
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(JobOutcome::Retry(e.to_string())),
    };
    let tenant = ctx.store.tenants().get(job.tenant_id).await.map_err(|e| JobOutcome::Retry(e.to_string()))?;
    match KommoAccount::build(&ctx.store, &ctx.connectors, &tenant, &connection, lane).await {
        Ok(account) => Ok(Some(account)),
        Err(AccessError::Store(e)) => Err(JobOutcome::Retry(e.to_string())),
        Err(AccessError::Crm(e)) => Err(JobOutcome::Fail(e.to_string())),
    }
}

/// Exchanges the callback's code. The job names its connection only in the payload: a
/// connection being re-authorised is `needs_reauth`, and the queue pauses the jobs of such a
/// connection. The outcome is recorded on the connection, so the job itself ends either way.
pub struct ConnectJob;

#[async_trait::async_trait]
impl JobHandler for ConnectJob {
    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> JobOutcome {
        let id = match payload_connection(job) {
            Ok(id) => id,
            Err(outcome) => return outcome,
        };
        let Some(sealed) = job.payload.get("code_sealed").and_then(Value::as_str) else {
            return JobOutcome::Fail("the job's payload has no code".into());
        };
        let kommo = ctx.store.kommo(job.tenant_id);
        let code = match kommo.open_code(id, sealed) {
            Ok(code) => code,
            Err(e) => return JobOutcome::Fail(format!("the job's code cannot be opened: {e}")),
        };
        // Someone is looking at Kommo's consent window and waiting for the connection: the
        // exchange goes ahead of background work on the account's budget.
        let account = match account(ctx, job, id, Lane::Interactive).await {
            Ok(Some(account)) => account,
            Ok(None) => return JobOutcome::Done,
            Err(outcome) => return outcome,
        };
        let connections = ctx.store.connections(job.tenant_id);
        let received_at = job.payload.get("received_at").and_then(Value::as_i64).unwrap_or(0);
        let code_expired = ctx.clock.now_millis() >= received_at.saturating_add(STATE_TTL.as_millis() as i64);
        let outcome = account.exchange_code(&code).await;
        let (status, reason) = match outcome {
            Ok(connected) => {
                let record = async {
                    let mut fields = connections.get(id).await?.fields;
                    fields.insert("account_id".into(), json!(connected.account_id));
                    let update = crmhub_store::connections::ConnectionUpdate {
                        fields: Some(fields),
                        status: Some(ConnectionStatus::Active),
                        ..Default::default()
                    };
                    connections.update(id, update).await
                };
                return match record.await {
                    Ok(_) => {
                        tracing::info!(connection = %id, account_id = connected.account_id, "kommo account connected");
                        JobOutcome::Done
                    }
                    // The tokens are stored (the connector does so before returning); only the
                    // account id and the status are missing. A retry would spend the code again
                    // and be refused, so the job ends here with the reason.
                    Err(e) => JobOutcome::Fail(format!("connected, but the connection could not be updated: {e}")),
                };
            }
            Err(CrmError::AuthFailed(reason)) => (ConnectionStatus::NeedsReauth, reason),
            Err(e @ (CrmError::Unavailable(_) | CrmError::RateLimited { .. }))
                if !code_expired && !job.is_last_attempt() =>
            {
                return JobOutcome::Crm(e);
            }
            Err(e @ (CrmError::Unavailable(_) | CrmError::RateLimited { .. })) => {
                (ConnectionStatus::Failing, format!("Kommo could not be reached before the code expired: {e}"))
            }
            Err(e) => (ConnectionStatus::Failing, e.to_string()),
        };
        tracing::warn!(connection = %id, %reason, status = status.as_str(), "kommo code exchange failed");
        match connections.set_status(id, status, Some(&reason)).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => JobOutcome::Done,
            Err(e) => JobOutcome::Retry(e.to_string()),
        }
    }
}

/// Refreshes the tokens of one OAuth connection when they expire within `REFRESH_AHEAD`. The
/// job names its connection, so refused credentials make it `needs_reauth` (the worker's rule).
pub struct RefreshJob;

#[async_trait::async_trait]
impl JobHandler for RefreshJob {
    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> JobOutcome {
        let Some(id) = job.connection_id else { return JobOutcome::Fail("a refresh job names no connection".into()) };
        let account = match account(ctx, job, id, Lane::Background).await {
            Ok(Some(account)) => account,
            Ok(None) => return JobOutcome::Done,
            Err(outcome) => return outcome,
        };
        match account.refresh_if_expiring(REFRESH_AHEAD).await {
            Ok(None) => JobOutcome::Done,
            Ok(Some(expires_at)) => {
                tracing::info!(connection = %id, expires_at, "kommo tokens refreshed");
                JobOutcome::Done
            }
            Err(e) => JobOutcome::Crm(e),
        }
    }
}

/// Schedules a refresh for every active OAuth kommo connection (one waiting job each).
pub async fn schedule_refreshes(store: &Store) -> Result<u64, StoreError> {
    let mut scheduled = 0;
    for connection in store.connections_of_kind(&ConnectorKind::Kommo).await? {
        let oauth = connection.credential_names.iter().any(|n| n == "client_id");
        if !oauth || connection.status != ConnectionStatus::Active {
            continue;
        }
        let job = NewJob::new(REFRESH_JOB, json!({}))
            .connection(connection.id)
            .dedupe_key(format!("{REFRESH_JOB}:{}", connection.id))
            .max_attempts(3);
        match store.jobs().enqueue(connection.tenant_id, job).await {
            Ok(_) => scheduled += 1,
            Err(StoreError::QueueFull { .. }) => {
                tracing::debug!(tenant = %connection.tenant_id, "queue full; refreshing later")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(scheduled)
}

/// Kommo blocked this installation's IP for `host` until `until`: every connection to that
/// host is marked `failing` with a reason naming the block, and a `kommo.unblock` job per
/// tenant concerned makes those still failing for that reason active again at `until`.
///
/// The jobs are enqueued before any connection is marked: a crash in between then leaves a
/// job that finds nothing to restore, never a connection failing with nothing to end it.
pub async fn host_blocked(store: &Store, host: &str, until: UnixMillis, reason: &str) -> Result<(), StoreError> {
    let (date, time) = utc_date_time(until.div_euclid(1000));
    let message = format!("{reason} (Kommo blocked requests from this IP; paused until {date} {time} UTC)");
    let mut scheduled = Vec::new();
    // Every tenant with a connection there gets one; a job whose connections all kept their
    // status (disabled, needing reauthorisation) restores nothing.
    for connection in store.connections_on_host(&ConnectorKind::Kommo, host).await? {
        schedule_unblock(store, &mut scheduled, connection.tenant_id, host, until, &message).await?;
    }
    let failed = store.fail_connections_on_host(&ConnectorKind::Kommo, host, &message).await?;
    // A connection made on the host in between belongs to a tenant with no job yet.
    for connection in &failed {
        schedule_unblock(store, &mut scheduled, connection.tenant_id, host, until, &message).await?;
    }
    tracing::warn!(%host, until, connections = failed.len(), "kommo host blocked; its connections are paused");
    Ok(())
}

/// Enqueues `tenant`'s unblock job unless `scheduled` says it already has one.
async fn schedule_unblock(
    store: &Store,
    scheduled: &mut Vec<TenantId>,
    tenant: TenantId,
    host: &str,
    until: UnixMillis,
    reason: &str,
) -> Result<(), StoreError> {
    if scheduled.contains(&tenant) {
        return Ok(());
    }
    let job = NewJob::new(UNBLOCK_JOB, json!({"host": host, "reason": reason}))
        .run_at(until)
        .dedupe_key(format!("{UNBLOCK_JOB}:{host}:{until}"))
        .max_attempts(5);
    store.jobs().enqueue(tenant, job).await?;
    scheduled.push(tenant);
    Ok(())
}

pub struct UnblockJob;

#[async_trait::async_trait]
impl JobHandler for UnblockJob {
    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> JobOutcome {
        let (Some(host), Some(reason)) =
            (job.payload.get("host").and_then(Value::as_str), job.payload.get("reason").and_then(Value::as_str))
        else {
            return JobOutcome::Fail("the job's payload names no host and reason".into());
        };
        match ctx.store.restore_connections_on_host(&ConnectorKind::Kommo, host, reason).await {
            Ok(restored) => {
                tracing::info!(%host, restored, "kommo host block ended");
                JobOutcome::Done
            }
            Err(e) => JobOutcome::Retry(e.to_string()),
        }
    }
}
