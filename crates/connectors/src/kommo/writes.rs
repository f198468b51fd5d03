//! Writing contacts in batches (contract §4): arrays of at most 50 (Kommo's recommendation; 250
//! is the hard limit), each item tagged with its index as `request_id` so the answer's ids map
//! back to the input whatever order Kommo answers in. A batch Kommo answers 504 is split in
//! halves and sent again. An update is safe to resend; a create might have been applied before
//! the gateway gave up, so before resending, each contact of the batch is looked up by its
//! e-mail (or phone) and only those not found are created again — a contact with neither is
//! not resent, and reported, rather than risk a duplicate.

use crmhub_core::crm::CrmError;
use reqwest::Method;
use serde_json::{Value, json};

use super::Kommo;
use super::api::Answer;

/// Items per request.
pub const BATCH: usize = 50;

/// A contact to create (`id: None`) or update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactWrite {
    pub id: Option<i64>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
}

impl ContactWrite {
    fn name(&self) -> String {
        [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn body(&self, request_id: usize) -> Value {
        let mut item = json!({"request_id": request_id.to_string()});
        if let Some(id) = self.id {
            item["id"] = json!(id);
        }
        let name = self.name();
        if !name.is_empty() {
            item["name"] = json!(name);
        }
        for (key, value) in [("first_name", &self.first_name), ("last_name", &self.last_name)] {
            if let Some(value) = value {
                item[key] = json!(value.trim());
            }
        }
        let mut fields = Vec::new();
        for (code, values, enum_code) in [("EMAIL", &self.emails, "WORK"), ("PHONE", &self.phones, "WORK")] {
            if !values.is_empty() {
                let values: Vec<Value> = values.iter().map(|v| json!({"value": v, "enum_code": enum_code})).collect();
                fields.push(json!({"field_code": code, "values": values}));
            }
        }
        if !fields.is_empty() {
            item["custom_fields_values"] = Value::Array(fields);
        }
        item
    }

    /// What a lookup after a timed-out create searches for.
    fn key(&self) -> Option<&str> {
        self.emails.first().or(self.phones.first()).map(String::as_str)
    }
}

/// The `(request_id, id)` pairs of a write's answer.
fn answered_ids(body: &Value) -> Vec<(usize, i64)> {
    body.pointer("/_embedded/contacts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let request = c.get("request_id").and_then(Value::as_str)?.parse().ok()?;
            Some((request, c.get("id").and_then(Value::as_i64)?))
        })
        .collect()
}

impl Kommo {
    /// Creates `contacts`; returns their new ids in the input's order.
    pub async fn create_contacts(&self, contacts: &[ContactWrite]) -> Result<Vec<i64>, CrmError> {
        if let Some((i, _)) = contacts.iter().enumerate().find(|(_, c)| c.id.is_some()) {
            return Err(CrmError::validation(format!("contacts[{i}].id"), "a contact to create has no id yet"));
        }
        if let Some((i, _)) = contacts.iter().enumerate().find(|(_, c)| c.name().is_empty()) {
            return Err(CrmError::validation(format!("contacts[{i}].name"), "a contact needs a first or last name"));
        }
        let mut ids = vec![0; contacts.len()];
        for chunk in (0..contacts.len()).collect::<Vec<_>>().chunks(BATCH) {
            let mut pending = vec![chunk.to_vec()];
            while let Some(batch) = pending.pop() {
                match self.write_batch(Method::POST, contacts, &batch).await? {
                    Written::Ids(written) => {
                        for (index, id) in written {
                            ids[index] = id;
                        }
                    }
                    Written::TimedOut => {
                        let mut again = Vec::new();
                        for index in batch.iter().copied() {
                            match self.already_created(&contacts[index]).await? {
                                Some(id) => ids[index] = id,
                                None => again.push(index),
                            }
                        }
                        if again.len() == 1 && batch.len() == 1 {
                            return Err(CrmError::Unavailable(
                                "Kommo timed out (504) creating one contact twice".into(),
                            ));
                        }
                        let half = again.len().div_ceil(2);
                        let (a, b) = again.split_at(half);
                        pending.extend([a.to_vec(), b.to_vec()].into_iter().filter(|p| !p.is_empty()));
                    }
                }
            }
        }
        Ok(ids)
    }

    /// Updates `contacts` (each with its id).
    pub async fn update_contacts(&self, contacts: &[ContactWrite]) -> Result<(), CrmError> {
        if let Some((i, _)) = contacts.iter().enumerate().find(|(_, c)| c.id.is_none()) {
            return Err(CrmError::validation(format!("contacts[{i}].id"), "a contact to update needs its id"));
        }
        for chunk in (0..contacts.len()).collect::<Vec<_>>().chunks(BATCH) {
            let mut pending = vec![chunk.to_vec()];
            while let Some(batch) = pending.pop() {
                if let Written::TimedOut = self.write_batch(Method::PATCH, contacts, &batch).await? {
                    if batch.len() == 1 {
                        return Err(CrmError::Unavailable("Kommo timed out (504) updating one contact".into()));
                    }
                    // An update is the same whether it landed or not: resend in halves.
                    let (a, b) = batch.split_at(batch.len().div_ceil(2));
                    pending.extend([a.to_vec(), b.to_vec()]);
                }
            }
        }
        Ok(())
    }

    async fn write_batch(
        &self,
        method: Method,
        contacts: &[ContactWrite],
        batch: &[usize],
    ) -> Result<Written, CrmError> {
        let body = Value::Array(batch.iter().map(|&i| contacts[i].body(i)).collect());
        let answer = self.send(method, self.api_url("contacts", &[])?, Some(body)).await?;
        if answer.status.as_u16() == 504 {
            tracing::warn!(items = batch.len(), "Kommo timed out on a contact batch; splitting it");
            return Ok(Written::TimedOut);
        }
        match self.read(answer)? {
            Answer::Json(body) => {
                let written = answered_ids(&body);
                if written.len() != batch.len() || written.iter().any(|(r, _)| !batch.contains(r)) {
                    return Err(CrmError::Protocol(format!(
                        "Kommo answered {} of {} contacts of a batch, or with request ids it was not sent",
                        written.len(),
                        batch.len()
                    )));
                }
                Ok(Written::Ids(written))
            }
            Answer::Empty => Err(CrmError::Protocol("Kommo answered a contact batch with no body".into())),
        }
    }

    /// The contact a timed-out create may have made: one with the same key and name.
    async fn already_created(&self, contact: &ContactWrite) -> Result<Option<i64>, CrmError> {
        let Some(key) = contact.key() else {
            return Err(CrmError::Unavailable(
                "Kommo timed out (504) creating a contact with neither e-mail nor phone, which cannot be checked for; \
                 not sent again to avoid a duplicate"
                    .into(),
            ));
        };
        let (found, _) = self.list(&[("query", key.to_owned()), ("limit", "50".to_owned())]).await?;
        Ok(found
            .iter()
            .find(|c| {
                c.display_name() == contact.name()
                    && (c.emails().iter().any(|e| e == key) || c.phones().iter().any(|p| p == key))
            })
            .map(|c| c.id))
    }
}

enum Written {
    Ids(Vec<(usize, i64)>),
    TimedOut,
}
