//! Contacts and lists (contract §4–§6): importContacts in batches, exclude, getContact,
//! getLists, createList, exportContacts, and the connection check.

use std::collections::{BTreeMap, BTreeSet};

use crmhub_core::crm::{ConnectionCheck, CrmError, LabeledValue};
use serde_json::Value;

use super::Unisender;
use super::api::{Repeat, is_not_found};

/// Rows per importContacts call (§4).
pub const IMPORT_BATCH: usize = 500;
/// Rows per exportContacts call (§6).
pub const EXPORT_LIMIT: u64 = 1000;

/// One contact to upsert or delete. `fields` are user fields (by their Unisender name) that
/// crmhub owns: within one call every row carries every field any row of the call names, so a
/// field a row leaves out is sent empty, which clears it in Unisender.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportRow {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub fields: BTreeMap<String, String>,
    /// Delete the contact (the `delete` column, §4/§6) instead of upserting it.
    pub delete: bool,
}

/// A row Unisender (or crmhub, before sending) refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// Index into the rows passed to [`Unisender::import_contacts`].
    pub row: usize,
    pub code: String,
    pub message: String,
}

/// The import's counts over all its calls, and the refused rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub total: u64,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    pub new_emails: u64,
    pub invalid: u64,
    /// Sorted by row.
    pub row_errors: Vec<RowError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactType {
    Email,
    Phone,
}

impl ContactType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
        }
    }
}

/// What getContact tells about an e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnisenderContact {
    pub email: String,
    /// `new`, `active`, `unsubscribed`, … (§5).
    pub status: String,
    pub list_ids: Vec<String>,
    pub fields: BTreeMap<String, String>,
}

/// One exported row; empty cells are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedContact {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub status: Option<String>,
}

/// A JSON scalar as text (ids come as numbers or strings).
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_owned()),
        _ => None,
    }
}

fn count(value: &Value, key: &str) -> u64 {
    match value.get(key) {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

fn non_empty(value: Option<&String>) -> Option<String> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_owned)
}

impl Unisender {
    /// Upserts (or deletes) `rows`, ≤ 500 per call, putting upserted rows into `list_id`
    /// (`email_list_ids`); the `delete` column is sent only in calls where a row deletes. A row
    /// with neither e-mail nor phone is refused here (`missing_contact_key`) without being
    /// sent. Unisender's `log[].index` is read as the 0-based row of the call's `data` (what
    /// the simulator does; the contract leaves it open), as a number or a string, and mapped
    /// back to the index in `rows`.
    ///
    /// An error stops the import at that call: the calls before it were applied, and sending
    /// all the rows again is safe (an upsert).
    pub async fn import_contacts(&self, list_id: &str, rows: &[ImportRow]) -> Result<ImportReport, CrmError> {
        let mut report = ImportReport::default();
        let mut sendable = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            if non_empty(row.email.as_ref()).is_none() && non_empty(row.phone.as_ref()).is_none() {
                report.total += 1;
                report.invalid += 1;
                report.row_errors.push(RowError {
                    row: i,
                    code: "missing_contact_key".into(),
                    message: "the row has neither an e-mail nor a phone".into(),
                });
            } else {
                sendable.push(i);
            }
        }
        for batch in sendable.chunks(IMPORT_BATCH) {
            let result = self.import_batch(list_id, rows, batch).await?;
            report.total += count(&result, "total");
            report.inserted += count(&result, "inserted");
            report.updated += count(&result, "updated");
            report.deleted += count(&result, "deleted");
            report.new_emails += count(&result, "new_emails");
            report.invalid += count(&result, "invalid");
            for entry in result.get("log").and_then(Value::as_array).into_iter().flatten() {
                let index = entry.get("index").and_then(scalar).and_then(|i| i.trim().parse::<usize>().ok());
                let row = index.and_then(|i| batch.get(i)).copied().ok_or_else(|| {
                    CrmError::Protocol(format!(
                        "Unisender's import log names row {:?} of a call of {} rows",
                        entry.get("index"),
                        batch.len()
                    ))
                })?;
                report.row_errors.push(RowError {
                    row,
                    code: entry.get("code").and_then(scalar).unwrap_or_default(),
                    message: entry.get("message").and_then(scalar).unwrap_or_default(),
                });
            }
        }
        report.row_errors.sort_by_key(|e| e.row);
        Ok(report)
    }

    async fn import_batch(&self, list_id: &str, rows: &[ImportRow], batch: &[usize]) -> Result<Value, CrmError> {
        let picked: Vec<&ImportRow> = batch.iter().map(|i| &rows[*i]).collect();
        let any = |f: &dyn Fn(&ImportRow) -> bool| picked.iter().any(|r| f(r));
        let mut columns: Vec<String> = Vec::new();
        if any(&|r| non_empty(r.email.as_ref()).is_some()) {
            columns.push("email".into());
        }
        if any(&|r| non_empty(r.phone.as_ref()).is_some()) {
            columns.push("phone".into());
        }
        let fields: BTreeSet<&String> = picked.iter().flat_map(|r| r.fields.keys()).collect();
        columns.extend(fields.iter().map(|f| (*f).clone()));
        let upserts = any(&|r| !r.delete);
        if upserts {
            columns.push("email_list_ids".into());
        }
        let deletes = any(&|r| r.delete);
        if deletes {
            columns.push("delete".into());
        }
        let mut args: Vec<(String, String)> = Vec::with_capacity(columns.len() * (picked.len() + 1) + 2);
        for (c, name) in columns.iter().enumerate() {
            args.push((format!("field_names[{c}]"), name.clone()));
        }
        for (r, row) in picked.iter().enumerate() {
            for (c, name) in columns.iter().enumerate() {
                let value = match name.as_str() {
                    "email" => non_empty(row.email.as_ref()).unwrap_or_default(),
                    "phone" => non_empty(row.phone.as_ref()).unwrap_or_default(),
                    "email_list_ids" if !row.delete => list_id.to_owned(),
                    "email_list_ids" => String::new(),
                    "delete" => if row.delete { "1" } else { "0" }.to_owned(),
                    field => row.fields.get(field).cloned().unwrap_or_default(),
                };
                args.push((format!("data[{r}][{c}]"), value));
            }
        }
        args.push(("overwrite_tags".into(), "0".into()));
        args.push(("overwrite_lists".into(), "0".into()));
        let result =
            self.call("importContacts", &args, Repeat::Idempotent { timeout: self.shared.import_timeout }).await?;
        if result.is_object() {
            Ok(result)
        } else {
            Err(CrmError::Protocol("Unisender's import result is not an object".into()))
        }
    }

    /// Removes the contact from `list_ids` (from every list when empty) without unsubscribing
    /// it (§5). A contact that is not there is already removed: `Ok`.
    pub async fn exclude(&self, kind: ContactType, contact: &str, list_ids: &[&str]) -> Result<(), CrmError> {
        let mut args = vec![("contact_type".to_owned(), kind.as_str().to_owned()), ("contact".into(), contact.into())];
        if !list_ids.is_empty() {
            args.push(("list_ids".into(), list_ids.join(",")));
        }
        match self.call("exclude", &args, Repeat::Unsafe).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The contact with this e-mail, its lists and fields; an unknown e-mail is `None`.
    pub async fn get_contact(&self, email: &str) -> Result<Option<UnisenderContact>, CrmError> {
        let args = [
            ("email".to_owned(), email.to_owned()),
            ("include_lists".into(), "1".into()),
            ("include_fields".into(), "1".into()),
        ];
        let result = match self.call("getContact", &args, Repeat::Unsafe).await {
            Ok(result) => result,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let contact = result
            .get("email")
            .filter(|c| c.is_object())
            .ok_or_else(|| CrmError::Protocol("Unisender's getContact result has no email object".into()))?;
        let list_ids = contact
            .get("lists")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|l| l.get("id").and_then(scalar))
            .collect();
        let fields = contact
            .get("fields")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| scalar(v).map(|v| (k.clone(), v)))
            .collect();
        Ok(Some(UnisenderContact {
            email: contact.get("email").and_then(scalar).unwrap_or_else(|| email.to_owned()),
            status: contact.get("status").and_then(scalar).unwrap_or_default(),
            list_ids,
            fields,
        }))
    }

    /// The account's lists as `(id, title)`.
    pub async fn get_lists(&self) -> Result<Vec<(String, String)>, CrmError> {
        let result = self.call("getLists", &[], Repeat::Unsafe).await?;
        let lists = result
            .as_array()
            .ok_or_else(|| CrmError::Protocol("Unisender's getLists result is not an array".into()))?;
        lists
            .iter()
            .map(|l| {
                let id = l.get("id").and_then(scalar);
                let title = l.get("title").and_then(scalar).unwrap_or_default();
                id.map(|id| (id, title)).ok_or_else(|| CrmError::Protocol("a Unisender list has no id".into()))
            })
            .collect()
    }

    /// Creates a list; its id. A title another list has is refused (`Validation`).
    pub async fn create_list(&self, title: &str) -> Result<String, CrmError> {
        let result = self.call("createList", &[("title".to_owned(), title.to_owned())], Repeat::Unsafe).await?;
        result
            .get("id")
            .and_then(scalar)
            .ok_or_else(|| CrmError::Protocol("Unisender's createList result has no id".into()))
    }

    /// Contacts of `list_id` from `offset`, at most `limit` (≤ 1000), for reconciliation.
    pub async fn export_contacts(
        &self,
        list_id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<ExportedContact>, CrmError> {
        if limit > EXPORT_LIMIT {
            return Err(CrmError::validation("limit", format!("at most {EXPORT_LIMIT} contacts per export call")));
        }
        let args = [
            ("list_id".to_owned(), list_id.to_owned()),
            ("field_names[0]".into(), "email".into()),
            ("field_names[1]".into(), "phone".into()),
            ("field_names[2]".into(), "email_status".into()),
            ("offset".into(), offset.to_string()),
            ("limit".into(), limit.to_string()),
        ];
        let result = self.call("exportContacts", &args, Repeat::Unsafe).await?;
        // The answer names its columns; read them by name rather than trusting the order asked.
        let names: Vec<String> = match result.get("field_names").and_then(Value::as_array) {
            Some(names) => names.iter().filter_map(scalar).collect(),
            None => vec!["email".into(), "phone".into(), "email_status".into()],
        };
        let at = |name: &str| names.iter().position(|n| n == name);
        let (email, phone, status) = (at("email"), at("phone"), at("email_status"));
        let data = result
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| CrmError::Protocol("Unisender's exportContacts result has no data".into()))?;
        Ok(data
            .iter()
            .filter_map(Value::as_array)
            .map(|row| {
                let cell = |c: Option<usize>| non_empty(c.and_then(|c| row.get(c)).and_then(scalar).as_ref());
                ExportedContact { email: cell(email), phone: cell(phone), status: cell(status) }
            })
            .collect())
    }

    /// The connection test: getLists, reporting how many lists the account has.
    pub async fn check(&self) -> Result<ConnectionCheck, CrmError> {
        let lists = self.get_lists().await?;
        Ok(ConnectionCheck {
            details: vec![
                LabeledValue::new("Host", self.host.as_str()),
                LabeledValue::new("Lists", lists.len().to_string()),
            ],
            unverified: None,
        })
    }
}
