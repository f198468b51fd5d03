//! The account's lists, user fields and contacts, and what the methods do to them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};

use super::SimContact;

/// Role addresses the import rejects (§4).
const ROLE_LOCALS: [&str; 4] = ["info", "sales", "no-reply", "all"];

#[derive(Debug, Clone)]
pub(super) struct Contact {
    /// Order of first import, for exports.
    pub seq: u64,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub status: String,
    pub added_at: i64,
    /// List id → when the contact joined it.
    pub lists: BTreeMap<i64, i64>,
    pub fields: BTreeMap<String, String>,
    pub tags: BTreeSet<String>,
}

#[derive(Debug)]
pub(super) struct Store {
    next_list: i64,
    lists: BTreeMap<i64, String>,
    fields: Vec<String>,
    next_seq: u64,
    /// By contact key: `email:<lower-cased>` or `phone:<digits>`.
    contacts: HashMap<String, Contact>,
    rows_received: HashMap<String, u64>,
}

/// An error envelope's parts.
pub(super) struct Refusal {
    pub code: &'static str,
    pub message: String,
}

pub(super) fn invalid_arg(message: impl Into<String>) -> Refusal {
    Refusal { code: "invalid_arg", message: message.into() }
}

pub(super) fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace)
}

fn phone_digits(phone: &str) -> Option<String> {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let allowed = phone.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c));
    (allowed && (7..=15).contains(&digits.len())).then_some(digits)
}

fn email_key(email: &str) -> String {
    format!("email:{}", email.trim().to_lowercase())
}

/// A parsed importContacts call.
pub(super) struct Import {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub overwrite_lists: bool,
    pub overwrite_tags: bool,
}

impl Store {
    pub fn new() -> Self {
        Store {
            next_list: 134,
            lists: BTreeMap::new(),
            fields: vec!["Name".to_owned()],
            next_seq: 1,
            contacts: HashMap::new(),
            rows_received: HashMap::new(),
        }
    }

    pub fn create_list(&mut self, title: &str) -> Result<i64, Refusal> {
        let title = title.trim();
        if title.is_empty() {
            return Err(invalid_arg("title is required"));
        }
        if self.lists.values().any(|t| t == title) {
            return Err(invalid_arg(format!("A list with the title \"{title}\" already exists")));
        }
        let id = self.next_list;
        self.next_list += 1;
        self.lists.insert(id, title.to_owned());
        Ok(id)
    }

    pub fn lists_json(&self) -> Value {
        Value::Array(self.lists.iter().map(|(id, title)| json!({"id": id, "title": title})).collect())
    }

    pub fn add_field(&mut self, name: &str) {
        if !self.fields.iter().any(|f| f == name) {
            self.fields.push(name.to_owned());
        }
    }

    pub fn fields_json(&self) -> Value {
        Value::Array(
            self.fields
                .iter()
                .enumerate()
                .map(|(i, name)| json!({"id": i + 1, "name": name, "type": "string", "is_visible": 1, "view_pos": i + 1}))
                .collect(),
        )
    }

    fn list_ids(&self, raw: &str) -> Result<Vec<i64>, String> {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<i64>().ok().filter(|id| self.lists.contains_key(id)).ok_or_else(|| s.to_owned()))
            .collect()
    }

    pub fn seed_contact(&mut self, email: &str, lists: &[i64], now: i64) {
        let seq = self.next_seq;
        let contact = self.contacts.entry(email_key(email)).or_insert_with(|| Contact {
            seq,
            email: Some(email.trim().to_lowercase()),
            phone: None,
            status: "new".into(),
            added_at: now,
            lists: BTreeMap::new(),
            fields: BTreeMap::new(),
            tags: BTreeSet::new(),
        });
        if contact.seq == seq {
            self.next_seq += 1;
        }
        for id in lists {
            contact.lists.entry(*id).or_insert(now);
        }
    }

    /// Checks the call as a whole (nothing is applied when it fails).
    pub fn check_import(&self, import: &Import) -> Result<(), Refusal> {
        let has_key = import.columns.iter().any(|c| c == "email" || c == "phone");
        if !has_key {
            return Err(invalid_arg("field_names must contain email or phone"));
        }
        let mut seen = BTreeSet::new();
        for column in &import.columns {
            if !seen.insert(column.as_str()) {
                return Err(invalid_arg(format!("field_names: \"{column}\" appears twice")));
            }
            let special = matches!(
                column.as_str(),
                "email"
                    | "phone"
                    | "delete"
                    | "tags"
                    | "email_status"
                    | "email_list_ids"
                    | "email_subscribe_times"
                    | "email_unsubscribed_list_ids"
                    | "email_excluded_list_ids"
                    | "email_availability"
                    | "email_add_time"
                    | "email_request_ip"
                    | "email_confirm_time"
                    | "email_confirm_ip"
            ) || column.starts_with("phone_");
            if !special && !self.fields.iter().any(|f| f == column) {
                return Err(invalid_arg(format!("field_names: unknown field \"{column}\"")));
            }
        }
        if import.rows.len() > super::MAX_IMPORT_ROWS {
            return Err(invalid_arg(format!(
                "Too many rows: {} (at most {} per call)",
                import.rows.len(),
                super::MAX_IMPORT_ROWS
            )));
        }
        if let Some(r) = import.rows.iter().position(|row| row.len() > import.columns.len()) {
            return Err(invalid_arg(format!("data[{r}] has more values than field_names")));
        }
        Ok(())
    }

    /// Applies a checked import; the `result` object.
    pub fn import(&mut self, import: &Import, now: i64) -> Value {
        let col = |name: &str| import.columns.iter().position(|c| c == name);
        let (email_c, phone_c, delete_c, lists_c, tags_c) =
            (col("email"), col("phone"), col("delete"), col("email_list_ids"), col("tags"));
        let (mut inserted, mut updated, mut deleted, mut new_emails, mut invalid) = (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut log = Vec::new();
        for (r, row) in import.rows.iter().enumerate() {
            let cell = |c: Option<usize>| c.and_then(|c| row.get(c)).map(|v| v.trim()).unwrap_or("");
            let email = cell(email_c);
            let phone = cell(phone_c);
            if !email.is_empty() {
                *self.rows_received.entry(email.to_lowercase()).or_default() += 1;
            }
            let mut problem = |code: &str, message: String| {
                invalid += 1;
                log.push(json!({"index": r.to_string(), "code": code, "message": message}));
            };
            let key = if !email.is_empty() {
                if !valid_email(email) {
                    problem("invalid_email", format!("Invalid e-mail address \"{email}\""));
                    continue;
                }
                let local = email.split('@').next().unwrap_or_default().to_lowercase();
                if ROLE_LOCALS.contains(&local.as_str()) {
                    problem("role_address", format!("Role address \"{email}\" cannot be imported"));
                    continue;
                }
                email_key(email)
            } else if !phone.is_empty() {
                match phone_digits(phone) {
                    Some(digits) => format!("phone:{digits}"),
                    None => {
                        problem("invalid_phone", format!("Invalid phone \"{phone}\""));
                        continue;
                    }
                }
            } else {
                problem("no_contact_key", "Neither e-mail nor phone is given".into());
                continue;
            };
            if cell(delete_c) == "1" {
                if self.contacts.remove(&key).is_some() {
                    deleted += 1;
                }
                continue;
            }
            let lists = match self.list_ids(cell(lists_c)) {
                Ok(ids) => ids,
                Err(bad) => {
                    problem("unknown_list", format!("List \"{bad}\" not found"));
                    continue;
                }
            };
            let seq = self.next_seq;
            let existed = self.contacts.contains_key(&key);
            let contact = self.contacts.entry(key).or_insert_with(|| Contact {
                seq,
                email: (!email.is_empty()).then(|| email.to_lowercase()),
                phone: None,
                status: "new".into(),
                added_at: now,
                lists: BTreeMap::new(),
                fields: BTreeMap::new(),
                tags: BTreeSet::new(),
            });
            if existed {
                updated += 1;
            } else {
                self.next_seq += 1;
                inserted += 1;
                if !email.is_empty() {
                    new_emails += 1;
                }
            }
            if !phone.is_empty() {
                contact.phone = Some(phone.to_owned());
            }
            if lists_c.is_some() {
                if import.overwrite_lists {
                    contact.lists.retain(|id, _| lists.contains(id));
                }
                for id in lists {
                    contact.lists.entry(id).or_insert(now);
                }
            }
            if tags_c.is_some() {
                if import.overwrite_tags {
                    contact.tags.clear();
                }
                contact
                    .tags
                    .extend(cell(tags_c).split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned));
            }
            for (c, name) in import.columns.iter().enumerate() {
                if self.fields.iter().any(|f| f == name) {
                    let value = row.get(c).map(String::as_str).unwrap_or("");
                    if value.is_empty() {
                        contact.fields.remove(name);
                    } else {
                        contact.fields.insert(name.clone(), value.to_owned());
                    }
                }
            }
        }
        json!({
            "total": import.rows.len(),
            "inserted": inserted,
            "updated": updated,
            "deleted": deleted,
            "new_emails": new_emails,
            "invalid": invalid,
            "log": log,
        })
    }

    /// §5: removes the contact from the lists (all when `None`); not in any → "not found".
    pub fn exclude(&mut self, contact_type: &str, contact: &str, list_ids: Option<&str>) -> Result<(), Refusal> {
        let key = match contact_type {
            "email" => email_key(contact),
            "phone" => format!("phone:{}", phone_digits(contact).unwrap_or_default()),
            other => return Err(invalid_arg(format!("contact_type must be email or phone, not \"{other}\""))),
        };
        if contact.trim().is_empty() {
            return Err(invalid_arg("contact is required"));
        }
        let lists = match list_ids {
            Some(raw) => Some(self.list_ids(raw).map_err(|bad| invalid_arg(format!("List \"{bad}\" not found")))?),
            None => None,
        };
        let not_found = || Refusal { code: "unspecified", message: format!("Contact \"{contact}\" not found") };
        let found = self.contacts.get_mut(&key).ok_or_else(not_found)?;
        let before = found.lists.len();
        match lists {
            Some(ids) => found.lists.retain(|id, _| !ids.contains(id)),
            None => found.lists.clear(),
        }
        if found.lists.len() == before {
            return Err(not_found());
        }
        Ok(())
    }

    pub fn get_contact(&self, email: &str, include_lists: bool, include_fields: bool) -> Result<Value, Refusal> {
        let contact = self
            .contacts
            .get(&email_key(email))
            .ok_or_else(|| Refusal { code: "unspecified", message: format!("Contact \"{email}\" not found") })?;
        let mut body = json!({
            "email": contact.email,
            "added_at": stamp(contact.added_at),
            "status": contact.status,
            "availability": "available",
        });
        if include_lists {
            body["lists"] = Value::Array(
                contact
                    .lists
                    .iter()
                    .map(|(id, at)| json!({"id": id, "title": self.lists.get(id), "added_at": stamp(*at)}))
                    .collect(),
            );
        }
        if include_fields {
            body["fields"] = json!(contact.fields);
        }
        Ok(json!({"email": body}))
    }

    pub fn export(
        &self,
        list_id: Option<i64>,
        field_names: &[String],
        offset: usize,
        limit: usize,
    ) -> Result<Value, Refusal> {
        if let Some(id) = list_id {
            if !self.lists.contains_key(&id) {
                return Err(invalid_arg(format!("List \"{id}\" not found")));
            }
        }
        for name in field_names {
            if !matches!(name.as_str(), "email" | "phone" | "email_status" | "email_list_ids" | "tags")
                && !self.fields.contains(name)
            {
                return Err(invalid_arg(format!("field_names: unknown field \"{name}\"")));
            }
        }
        let mut contacts: Vec<&Contact> =
            self.contacts.values().filter(|c| list_id.is_none_or(|id| c.lists.contains_key(&id))).collect();
        contacts.sort_by_key(|c| c.seq);
        let data: Vec<Value> = contacts
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|c| {
                Value::Array(
                    field_names
                        .iter()
                        .map(|name| match name.as_str() {
                            "email" => json!(c.email.clone().unwrap_or_default()),
                            "phone" => json!(c.phone.clone().unwrap_or_default()),
                            "email_status" => json!(c.status),
                            "email_list_ids" => {
                                json!(c.lists.keys().map(i64::to_string).collect::<Vec<_>>().join(","))
                            }
                            "tags" => json!(c.tags.iter().cloned().collect::<Vec<_>>().join(",")),
                            field => json!(c.fields.get(field).cloned().unwrap_or_default()),
                        })
                        .collect(),
                )
            })
            .collect();
        Ok(json!({"field_names": field_names, "data": data}))
    }

    pub fn members(&self, list_id: i64) -> Vec<String> {
        let mut members: Vec<(i64, u64, String)> = self
            .contacts
            .values()
            .filter_map(|c| {
                let at = *c.lists.get(&list_id)?;
                Some((at, c.seq, c.email.clone().or_else(|| c.phone.clone()).unwrap_or_default()))
            })
            .collect();
        members.sort();
        members.into_iter().map(|(_, _, key)| key).collect()
    }

    pub fn sim_contact(&self, email: &str) -> Option<SimContact> {
        let c = self.contacts.get(&email_key(email))?;
        Some(SimContact {
            email: c.email.clone(),
            phone: c.phone.clone(),
            status: c.status.clone(),
            list_ids: c.lists.keys().map(i64::to_string).collect(),
            fields: c.fields.clone(),
        })
    }

    pub fn rows_received(&self, email: &str) -> u64 {
        self.rows_received.get(&email.trim().to_lowercase()).copied().unwrap_or(0)
    }

    pub fn contact_count(&self) -> usize {
        self.contacts.len()
    }
}

/// `YYYY-MM-DD hh:mm:ss` in UTC (§5).
fn stamp(unix_secs: i64) -> String {
    crate::support::rfc3339_utc(unix_secs).replace('T', " ").trim_end_matches('Z').to_owned()
}
