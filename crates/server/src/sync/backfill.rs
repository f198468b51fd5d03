//! The initial load: the source's change feed from the run's checkpoint, page by page. Each
//! page is imported (in batches of at most 500 rows), then its index entries, the checkpoint
//! after it and the progress are committed in one store call. A run that stops (a crash, a
//! lost lease, the destination failing) resumes from its checkpoint: only the page in flight
//! can be sent twice, and contacts the index already has unchanged are skipped.

use std::time::{Duration, Instant};

use crmhub_core::crm::ChangeCursor;
use crmhub_store::jobs::ClaimedJob;
use crmhub_store::sync::{PageCommit, RunStatus, SyncRun};
use serde_json::json;
use uuid::Uuid;

use super::mirror::{Engine, SourceContact, needs_cards};
use super::{SyncError, first_run_job};
use crate::jobs::{JobContext, JobOutcome};

/// One job works this long at most, then hands over to a follow-up job (so a long backfill
/// never runs into the job timeout, and other work gets workers in between).
const SLICE: Duration = Duration::from_secs(20);

/// What one slice of a backfill came to.
#[derive(Debug, Clone)]
pub struct BackfillSlice {
    pub run: SyncRun,
    /// The feed has no more pages: the run is done.
    pub finished: bool,
}

/// Runs pages of a backfill until the feed ends, `max_pages` pages were committed, or `budget`
/// elapsed. A run no longer running is returned as it is.
pub async fn backfill_slice(
    engine: &Engine<'_>,
    run: Uuid,
    max_pages: usize,
    budget: Duration,
) -> Result<BackfillSlice, SyncError> {
    let started = Instant::now();
    let sync = engine.sync();
    let mut current = sync.run(run).await?;
    for _ in 0..max_pages {
        if current.status != RunStatus::Running {
            return Ok(BackfillSlice { finished: true, run: current });
        }
        let cursor = current.checkpoint.clone().map(ChangeCursor);
        let page = engine.source.list_changes(cursor.as_ref()).await?;
        let mut contacts: Vec<SourceContact> = Vec::with_capacity(page.updated.len());
        if needs_cards(engine.pipeline) {
            // Custom fields are on cards only: one read each, at the source's budget.
            for record in &page.updated {
                if let Some(contact) = engine.fetch(&record.id).await? {
                    contacts.push(contact);
                }
            }
        } else {
            contacts.extend(page.updated.iter().cloned().map(SourceContact::from));
        }
        let mut result = engine.send_batch(&contacts, false).await?;
        for id in &page.deleted {
            result.removed.extend(engine.delete_contact(id).await?);
        }
        let done = (page.updated.len() + page.deleted.len()) as u64;
        let commit = PageCommit {
            checkpoint: Some(page.next.0.clone()),
            done,
            index: result.index,
            row_errors: result.row_errors.clone(),
            errors: result.row_errors.len() as u64,
            ..Default::default()
        };
        current = sync.commit_page(run, commit).await?;
        if !page.more {
            let report = json!({"contacts": current.done, "row_errors": current.errors});
            current = sync.finish_run(run, RunStatus::Done, Some(report), None).await?;
            // A polled pipeline's feed continues where the backfill ended.
            if engine.pipeline.change_cursor.is_none() {
                sync.set_change_cursor(engine.pipeline.id, &page.next.0).await?;
            }
            return Ok(BackfillSlice { run: current, finished: true });
        }
        if started.elapsed() >= budget {
            break;
        }
    }
    Ok(BackfillSlice { run: current, finished: false })
}

/// The `sync.backfill` job: a slice, then a follow-up job while the feed has more.
pub(super) async fn run_job(engine: &Engine<'_>, ctx: &JobContext, job: &ClaimedJob, run: Uuid) -> JobOutcome {
    let sync = engine.sync();
    match backfill_slice(engine, run, usize::MAX, SLICE).await {
        Ok(BackfillSlice { finished: true, .. }) => JobOutcome::Done,
        Ok(BackfillSlice { run, .. }) => {
            // The follow-up waits while this job is running (same dedupe key), and starts
            // from the checkpoint committed above.
            match ctx.store.jobs().enqueue(job.tenant_id, first_run_job(engine.pipeline, &run)).await {
                Ok(_) => JobOutcome::Done,
                Err(e) => JobOutcome::Retry(e.to_string()),
            }
        }
        Err(error) => {
            let message = error.to_string();
            let _ = sync.note_run_error(run, &message).await;
            // Refused credentials park the job until the connection is fixed: the run waits too.
            let transient = matches!(&error, SyncError::Crm(e) if e.is_transient() || matches!(e, crmhub_core::crm::CrmError::AuthFailed(_)))
                || matches!(&error, SyncError::Store(e) if !matches!(e, crmhub_store::StoreError::NotFound { .. }));
            if !transient || job.is_last_attempt() {
                let _ = sync.finish_run(run, RunStatus::Failed, None, Some(&message)).await;
            }
            error.into()
        }
    }
}
