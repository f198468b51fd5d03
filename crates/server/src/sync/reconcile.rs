//! Reconciliation: the source's ids (its change feed from the beginning) against the index and
//! the destination list (`export`). It repairs what missed webhooks and lost deletions left:
//! contacts missing in the list are mirrored again, index entries whose contact is gone are
//! deleted per the policy, and addresses in the list that no indexed contact has are excluded.

use std::collections::{BTreeMap, BTreeSet};

use crmhub_core::crm::ChangeCursor;
use crmhub_store::jobs::ClaimedJob;
use crmhub_store::sync::{PageCommit, RunStatus};
use serde::Serialize;
use uuid::Uuid;

use super::SyncError;
use super::mirror::{Engine, Mirrored, normal_email};
use crate::jobs::JobOutcome;

/// Pages of the change feed one reconciliation reads at most (a guard, not a limit in
/// practice: Kommo's feed pages are 250 contacts).
const MAX_FEED_PAGES: usize = 10_000;
/// Addresses per `export` call (Unisender's limit).
const EXPORT_PAGE: u64 = 1000;

/// What a reconciliation found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Source contacts seen.
    pub checked: u64,
    /// Contacts sent again (missing in the index or the list), by id.
    pub readded: Vec<String>,
    /// Contacts gone from the source whose addresses were removed, by id.
    pub deleted: Vec<String>,
    /// Addresses in the list that no indexed contact has, excluded.
    pub excluded: Vec<String>,
}

pub async fn reconcile(engine: &Engine<'_>) -> Result<ReconcileReport, SyncError> {
    let sync = engine.sync();
    let pipeline = engine.pipeline;
    // The source's ids and addresses.
    // By id: a contact changed during the read shows up again, its last addresses win.
    let mut source: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut gone_in_feed: BTreeSet<String> = BTreeSet::new();
    let mut cursor: Option<ChangeCursor> = None;
    for _ in 0..MAX_FEED_PAGES {
        let page = engine.source.list_changes(cursor.as_ref()).await?;
        for record in page.updated {
            let emails = record.emails.iter().map(|e| normal_email(e)).filter(|e| !e.is_empty()).collect();
            source.insert(record.id, emails);
        }
        gone_in_feed.extend(page.deleted);
        cursor = Some(page.next);
        if !page.more {
            break;
        }
    }
    let mut listed: BTreeSet<String> = BTreeSet::new();
    let mut offset = 0;
    loop {
        let batch = engine.dest.export(&pipeline.list_id, offset, EXPORT_PAGE).await?;
        let n = batch.len() as u64;
        listed.extend(batch.iter().flatten().map(|e| normal_email(e)));
        if n < EXPORT_PAGE {
            break;
        }
        offset += n;
    }
    let mut report = ReconcileReport { checked: source.len() as u64, ..Default::default() };
    // Addresses removed by the repairs below (`listed` was read before them).
    let mut gone: BTreeSet<String> = BTreeSet::new();
    let ids: Vec<String> = source.keys().cloned().collect();
    let entries = sync.index_entries(pipeline.id, &ids).await?;

    for (id, emails) in &source {
        if gone_in_feed.contains(id) {
            continue;
        }
        let missing = match entries.get(id) {
            None => true,
            Some(entry) => {
                entry.emails.iter().any(|e| !listed.contains(e)) || emails.iter().any(|e| !listed.contains(e))
            }
        };
        if missing && !emails.is_empty() {
            match engine.mirror_contact(id, true).await? {
                Mirrored::Sent { .. } => report.readded.push(id.clone()),
                Mirrored::Deleted { removed } => {
                    gone.extend(removed);
                    report.deleted.push(id.clone());
                }
                Mirrored::Unchanged => {}
            }
        }
    }
    for id in sync.indexed_contacts(pipeline.id).await? {
        if source.contains_key(&id) && !gone_in_feed.contains(&id) {
            continue;
        }
        // Confirmed by the source before anything is removed.
        if let Mirrored::Deleted { removed } = engine.mirror_contact(&id, false).await? {
            gone.extend(removed);
            report.deleted.push(id);
        }
    }
    let indexed = sync.indexed_emails(pipeline.id).await?;
    let strays: Vec<String> = listed.into_iter().filter(|e| !indexed.contains(e) && !gone.contains(e)).collect();
    for email in &strays {
        engine.dest.exclude(&pipeline.list_id, email).await?;
    }
    report.excluded = strays;
    Ok(report)
}

pub(super) async fn run_job(engine: &Engine<'_>, job: &ClaimedJob, run: Uuid) -> JobOutcome {
    let sync = engine.sync();
    match sync.run(run).await {
        Ok(r) if r.status != RunStatus::Running => return JobOutcome::Done,
        Ok(_) => {}
        Err(e) => return SyncError::from(e).into(),
    }
    match reconcile(engine).await {
        Ok(report) => {
            let repaired = (report.readded.len() + report.deleted.len() + report.excluded.len()) as u64;
            let commit = PageCommit { done: report.checked, total: Some(report.checked), ..Default::default() };
            let value = serde_json::to_value(&report).unwrap_or_default();
            let finished = async {
                sync.commit_page(run, commit).await?;
                sync.finish_run(run, RunStatus::Done, Some(value), None).await
            };
            match finished.await {
                Ok(_) => {
                    tracing::info!(pipeline = %engine.pipeline.id, repaired, "reconciliation done");
                    JobOutcome::Done
                }
                Err(e) => SyncError::from(e).into(),
            }
        }
        Err(error) => {
            let message = error.to_string();
            let _ = sync.note_run_error(run, &message).await;
            let transient = matches!(&error, SyncError::Crm(e) if e.is_transient());
            if !transient || job.is_last_attempt() {
                let _ = sync.finish_run(run, RunStatus::Failed, None, Some(&message)).await;
            }
            error.into()
        }
    }
}
