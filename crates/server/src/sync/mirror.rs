//! One contact, or a page of them, into the destination list and the index.
//!
//! A contact becomes one row per e-mail address (key `email`), with the mapped fields as
//! columns (the phone too, when mapped). The rows' fingerprint is compared with the index: an
//! unchanged contact sends nothing. Addresses it no longer has are removed (excluded from the
//! list, or deleted account-wide, per the pipeline) only when no other contact in the index
//! still has them. The index is written after the destination accepted, so a crash in between
//! re-sends the contact once (an upsert) and never loses a removal.

use std::collections::{BTreeMap, BTreeSet};

use crmhub_core::crm::{CardOptions, ContactCard, ContactRecord, Crm, CrmError};
use crmhub_store::Store;
use crmhub_store::sync::{Deletion, IndexWrite, NewRowError, Pipeline, SentContact, Sync};
use sha2::{Digest, Sha256};

use super::destination::{DestinationRow, SyncDestination};
use super::pipeline::BUILTIN_FIELDS;
use super::{IMPORT_BATCH, SyncError};

/// A source contact as the engine needs it, from a card or a change-feed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceContact {
    pub id: String,
    pub name: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    /// Custom fields by label (cards only).
    pub custom: Vec<(String, String)>,
}

impl From<ContactCard> for SourceContact {
    fn from(card: ContactCard) -> Self {
        Self {
            id: card.id,
            name: card.display_name,
            first_name: card.first_name,
            last_name: card.last_name,
            emails: card.emails.into_iter().map(|e| e.value).collect(),
            phones: card.phones.into_iter().map(|p| p.value).collect(),
            custom: card.extra_fields.into_iter().map(|f| (f.label, f.value)).collect(),
        }
    }
}

impl From<ContactRecord> for SourceContact {
    fn from(record: ContactRecord) -> Self {
        Self {
            id: record.id,
            name: record.display_name,
            first_name: record.first_name,
            last_name: record.last_name,
            emails: record.emails,
            phones: record.phones,
            custom: Vec::new(),
        }
    }
}

/// How addresses are compared and kept: trimmed, lower case.
pub(crate) fn normal_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A custom field's code as Kommo spells codes: upper case, `_` for anything else.
fn as_code(label: &str) -> String {
    label.trim().chars().map(|c| if c.is_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

impl SourceContact {
    fn value(&self, field: &str) -> Option<String> {
        let value = match field {
            "name" => Some(self.name.clone()),
            "first_name" => self.first_name.clone(),
            "last_name" => self.last_name.clone(),
            "phone" => self.phones.first().cloned(),
            custom => self
                .custom
                .iter()
                .find(|(label, _)| label == custom || as_code(label) == as_code(custom))
                .map(|(_, v)| v.clone()),
        };
        value.filter(|v| !v.trim().is_empty())
    }

    /// The distinct addresses, normalised, in the source's order.
    pub fn addresses(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for email in self.emails.iter().map(|e| normal_email(e)).filter(|e| !e.is_empty()) {
            if !out.contains(&email) {
                out.push(email);
            }
        }
        out
    }
}

/// Whether the map needs fields only a card has (custom fields).
pub(crate) fn needs_cards(pipeline: &Pipeline) -> bool {
    pipeline.field_map.keys().any(|k| !BUILTIN_FIELDS.contains(&k.as_str()))
}

/// The rows a contact is in the destination.
pub(crate) fn rows(pipeline: &Pipeline, contact: &SourceContact) -> Vec<DestinationRow> {
    let mut phone = None;
    let mut fields = BTreeMap::new();
    for (source, target) in &pipeline.field_map {
        let Some(target) = target.as_str() else { continue };
        let Some(value) = contact.value(source) else { continue };
        if target == "phone" {
            phone = Some(value);
        } else {
            fields.insert(target.to_owned(), value);
        }
    }
    contact
        .addresses()
        .into_iter()
        .map(|email| DestinationRow { email, phone: phone.clone(), fields: fields.clone(), delete: false })
        .collect()
}

/// What was sent, as the index keeps it.
pub(crate) fn fingerprint(pipeline: &Pipeline, rows: &[DestinationRow]) -> String {
    let mut hash = Sha256::new();
    hash.update(pipeline.list_id.as_bytes());
    hash.update([0]);
    hash.update(serde_json::to_vec(rows).unwrap_or_default());
    hex::encode(hash.finalize())
}

/// What mirroring one contact did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirrored {
    /// The destination already has what the source says.
    Unchanged,
    /// Rows were imported; `removed` addresses it no longer has were removed.
    Sent { rows: usize, removed: Vec<String> },
    /// The contact is gone from the source; these addresses were removed.
    Deleted { removed: Vec<String> },
}

/// A pipeline with its two sides, for one job.
pub struct Engine<'a> {
    pub store: &'a Store,
    pub pipeline: &'a Pipeline,
    pub source: &'a dyn Crm,
    pub dest: &'a dyn SyncDestination,
}

/// One contact's part of a batch.
struct Planned {
    contact_id: String,
    rows: Vec<DestinationRow>,
    fingerprint: String,
    old_emails: Vec<String>,
}

/// What a batch came to.
#[derive(Debug, Clone, Default)]
pub(crate) struct BatchResult {
    pub index: Vec<IndexWrite>,
    pub row_errors: Vec<NewRowError>,
    pub sent: Vec<String>,
    pub unchanged: usize,
    pub removed: Vec<String>,
}

impl<'a> Engine<'a> {
    pub fn new(store: &'a Store, pipeline: &'a Pipeline, source: &'a dyn Crm, dest: &'a dyn SyncDestination) -> Self {
        Self { store, pipeline, source, dest }
    }

    pub(crate) fn sync(&self) -> Sync<'a> {
        self.store.sync(self.pipeline.tenant_id)
    }

    /// The contact as the source has it now; `None` when it is gone.
    pub(crate) async fn fetch(&self, id: &str) -> Result<Option<SourceContact>, CrmError> {
        match self.source.contact_card(id, &CardOptions { max_activities: 0 }).await {
            Ok(card) => Ok(Some(card.into())),
            Err(CrmError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Mirrors one contact, re-read from the source (a webhook's payload is only a hint; a
    /// deletion is confirmed by the source not having it). `force` sends even when the
    /// fingerprint matches (reconciliation found it missing in the destination).
    pub async fn mirror_contact(&self, id: &str, force: bool) -> Result<Mirrored, SyncError> {
        match self.fetch(id).await? {
            None => Ok(Mirrored::Deleted { removed: self.delete_contact(id).await? }),
            Some(contact) => {
                let result = self.send_batch(&[contact], force).await?;
                self.sync().add_row_errors(self.pipeline.id, &result.row_errors).await?;
                self.sync().write_index(self.pipeline.id, &result.index).await?;
                if result.sent.is_empty() {
                    Ok(Mirrored::Unchanged)
                } else {
                    let rows = result.index.iter().filter_map(|w| w.sent.as_ref()).map(|s| s.emails.len()).sum();
                    Ok(Mirrored::Sent { rows, removed: result.removed })
                }
            }
        }
    }

    /// Removes a contact gone from the source: its indexed addresses that no other contact
    /// has, then its index entry.
    pub(crate) async fn delete_contact(&self, id: &str) -> Result<Vec<String>, SyncError> {
        let Some(entry) = self.sync().index_entry(self.pipeline.id, id).await? else { return Ok(Vec::new()) };
        let removed = self.remove_unheld(entry.emails.into_iter().collect(), &BTreeSet::from([id])).await?;
        self.sync()
            .write_index(self.pipeline.id, &[crmhub_store::sync::IndexWrite { contact_id: id.into(), sent: None }])
            .await?;
        Ok(removed)
    }

    /// Removes those of `candidates` that no indexed contact has besides the ones `leaving`
    /// (contacts being deleted, or rewritten without them), per the deletion policy. One read
    /// for all of them.
    async fn remove_unheld(
        &self,
        candidates: BTreeSet<String>,
        leaving: &BTreeSet<&str>,
    ) -> Result<Vec<String>, SyncError> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let candidates: Vec<String> = candidates.into_iter().collect();
        let holders = self.sync().email_holders(self.pipeline.id, &candidates).await?;
        let gone: Vec<String> = candidates
            .into_iter()
            .filter(|email| holders.get(email).is_none_or(|held| held.iter().all(|c| leaving.contains(c.as_str()))))
            .collect();
        self.remove(&gone).await?;
        Ok(gone)
    }

    /// Removes addresses from the destination per the deletion policy.
    pub(crate) async fn remove(&self, emails: &[String]) -> Result<(), CrmError> {
        if emails.is_empty() {
            return Ok(());
        }
        match self.pipeline.deletion {
            Deletion::Exclude => {
                for email in emails {
                    self.dest.exclude(&self.pipeline.list_id, email).await?;
                }
            }
            Deletion::Delete => {
                let rows: Vec<DestinationRow> = emails
                    .iter()
                    .map(|email| DestinationRow {
                        email: email.clone(),
                        phone: None,
                        fields: BTreeMap::new(),
                        delete: true,
                    })
                    .collect();
                for chunk in rows.chunks(IMPORT_BATCH) {
                    self.dest.import(&self.pipeline.list_id, chunk).await?;
                }
            }
        }
        Ok(())
    }

    /// Sends the contacts that changed since the index last saw them (all with `force`) in
    /// batches of at most `IMPORT_BATCH` rows, then removes the addresses they dropped.
    /// Returns the index writes to make; the caller writes them (with a checkpoint, for a run).
    pub(crate) async fn send_batch(&self, contacts: &[SourceContact], force: bool) -> Result<BatchResult, SyncError> {
        let mut result = BatchResult::default();
        let mut planned = Vec::new();
        let ids: Vec<String> = contacts.iter().map(|c| c.id.clone()).collect();
        let entries = self.sync().index_entries(self.pipeline.id, &ids).await?;
        for contact in contacts {
            let rows = rows(self.pipeline, contact);
            let fingerprint = fingerprint(self.pipeline, &rows);
            let entry = entries.get(&contact.id);
            if !force && entry.is_some_and(|e| e.fingerprint == fingerprint) {
                result.unchanged += 1;
                continue;
            }
            let old_emails = entry.map(|e| e.emails.clone()).unwrap_or_default();
            planned.push(Planned { contact_id: contact.id.clone(), rows, fingerprint, old_emails });
        }
        // Row i of the import is (contact, address).
        let all: Vec<(usize, &DestinationRow)> =
            planned.iter().enumerate().flat_map(|(i, p)| p.rows.iter().map(move |r| (i, r))).collect();
        let mut refused: Vec<BTreeSet<String>> = vec![BTreeSet::new(); planned.len()];
        for chunk in all.chunks(IMPORT_BATCH) {
            let rows: Vec<DestinationRow> = chunk.iter().map(|(_, r)| (*r).clone()).collect();
            let outcome = self.dest.import(&self.pipeline.list_id, &rows).await?;
            for refusal in outcome.refused {
                let Some((contact, row)) = chunk.get(refusal.row) else { continue };
                refused[*contact].insert(row.email.clone());
                result.row_errors.push(NewRowError {
                    contact_id: planned[*contact].contact_id.clone(),
                    email: Some(row.email.clone()),
                    code: refusal.code,
                    message: refusal.message,
                });
            }
        }
        // Addresses sent now stay, whoever dropped them. Of those dropped, an address goes
        // when no contact outside this batch has it either (one inside that still has it
        // sent it now).
        let keep: BTreeSet<&String> = planned.iter().flat_map(|p| p.rows.iter().map(|r| &r.email)).collect();
        let dropped: BTreeSet<String> =
            planned.iter().flat_map(|p| &p.old_emails).filter(|e| !keep.contains(e)).cloned().collect();
        let rewritten: BTreeSet<&str> = planned.iter().map(|p| p.contact_id.as_str()).collect();
        result.removed = self.remove_unheld(dropped, &rewritten).await?;
        for (plan, refused) in planned.iter().zip(refused) {
            let emails: Vec<String> =
                plan.rows.iter().map(|r| r.email.clone()).filter(|e| !refused.contains(e)).collect();
            let phones: Vec<String> = plan.rows.first().and_then(|r| r.phone.clone()).into_iter().collect();
            result.index.push(IndexWrite {
                contact_id: plan.contact_id.clone(),
                sent: Some(SentContact { fingerprint: plan.fingerprint.clone(), emails, phones }),
            });
            result.sent.push(plan.contact_id.clone());
        }
        Ok(result)
    }
}
