//! A polled source (Vtiger, or any connector whose change feed is the only way to hear of
//! changes): the feed from the pipeline's cursor, each changed contact mirrored (re-read from
//! the source), each reported deletion confirmed and applied, then the cursor moved on.

use crmhub_core::crm::ChangeCursor;

use super::SyncError;
use super::mirror::{Engine, SourceContact, needs_cards};

/// Pages one poll reads at most; the next poll continues from the cursor.
const MAX_PAGES: usize = 20;

/// Reads the feed once from the cursor and mirrors what changed. Returns the contacts seen.
pub async fn poll_once(engine: &Engine<'_>) -> Result<u64, SyncError> {
    let sync = engine.sync();
    let mut cursor = engine.pipeline.change_cursor.clone().map(ChangeCursor);
    let mut seen = 0;
    for _ in 0..MAX_PAGES {
        let page = engine.source.list_changes(cursor.as_ref()).await?;
        let mut contacts = Vec::with_capacity(page.updated.len());
        for record in &page.updated {
            if needs_cards(engine.pipeline) {
                if let Some(contact) = engine.fetch(&record.id).await? {
                    contacts.push(contact);
                }
            } else {
                contacts.push(SourceContact::from(record.clone()));
            }
        }
        let result = engine.send_batch(&contacts, false).await?;
        sync.add_row_errors(engine.pipeline.id, &result.row_errors).await?;
        sync.write_index(engine.pipeline.id, &result.index).await?;
        for id in &page.deleted {
            // The feed says it is gone; the source confirms before anything is removed.
            engine.mirror_contact(id, false).await?;
        }
        seen += (page.updated.len() + page.deleted.len()) as u64;
        sync.set_change_cursor(engine.pipeline.id, &page.next.0).await?;
        cursor = Some(page.next);
        if !page.more {
            break;
        }
    }
    Ok(seen)
}
