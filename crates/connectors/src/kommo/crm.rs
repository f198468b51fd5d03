//! The `Crm` interface over Kommo: search, phone lookup, cards with notes and tasks, contact
//! and note creation, and the change feed a sync reads.

use std::time::{Duration, Instant};

use crmhub_core::crm::{
    Activity, ActivityKind, Capability, CardOptions, ChangeCursor, ChangePage, ConnectionCheck, ContactCard,
    ContactSummary, Crm, CrmError, LabeledValue, NewContact, NewNote,
};
use crmhub_core::phone::PhoneNumber;
use reqwest::Method;
use serde_json::{Value, json};

use super::Kommo;
use super::api::Answer;
use super::contacts::{self, MAX_PAGE, V4Contact};

const CAPABILITIES: [Capability; 6] = [
    Capability::SearchContacts,
    Capability::FindByPhone,
    Capability::ContactCard,
    Capability::CreateContact,
    Capability::AddNote,
    Capability::ListChanges,
];

/// Pages one phone lookup reads per number form at most: a number shared by more than a
/// thousand contacts is not a caller to pop a card for.
const PHONE_PAGES: u32 = 4;

/// Pages one change-feed read walks at most before answering `more`.
const CHANGE_PAGES: u32 = 40;

/// Company names are kept this long: a card shows the contact's company, and names rarely change.
const COMPANY_TTL: Duration = Duration::from_secs(300);

impl Kommo {
    fn contact_id(id: &str) -> Result<i64, CrmError> {
        id.trim()
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| CrmError::NotFound { what: format!("Kommo contact {id:?}") })
    }

    pub(super) async fn list(&self, query: &[(&str, String)]) -> Result<(Vec<V4Contact>, Option<u32>), CrmError> {
        match self.get("contacts", query).await? {
            Answer::Json(body) => contacts::page(&body),
            Answer::Empty => Ok((Vec::new(), None)),
        }
    }

    async fn contact(&self, id: i64) -> Result<V4Contact, CrmError> {
        let not_found = || CrmError::NotFound { what: format!("Kommo contact {id}") };
        match self.get(&format!("contacts/{id}"), &[]).await {
            Ok(Answer::Json(body)) => serde_json::from_value(body)
                .map_err(|e| CrmError::Protocol(format!("a Kommo contact has an unexpected shape: {e}"))),
            Ok(Answer::Empty) | Err(CrmError::NotFound { .. }) => Err(not_found()),
            Err(e) => Err(e),
        }
    }

    async fn company_name(&self, id: i64) -> Result<Option<String>, CrmError> {
        if let Some((name, at)) = self.companies.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            if at.elapsed() < COMPANY_TTL {
                return Ok(Some(name.clone()));
            }
        }
        let name = match self.get(&format!("companies/{id}"), &[]).await {
            Ok(Answer::Json(body)) => body.get("name").and_then(Value::as_str).map(str::to_owned),
            Ok(Answer::Empty) | Err(CrmError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        if let Some(name) = &name {
            let mut companies = self.companies.lock().unwrap_or_else(|p| p.into_inner());
            companies.retain(|_, (_, at)| at.elapsed() < COMPANY_TTL);
            companies.insert(id, (name.clone(), Instant::now()));
        }
        Ok(name)
    }

    /// A part of a card that may be missing without failing the card: the failure is counted
    /// and logged, and the card shows the rest.
    fn card_part<T>(&self, part: &str, result: Result<T, CrmError>) -> Result<Option<T>, CrmError> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(e @ CrmError::AuthFailed(_)) => Err(e),
            Err(e) => {
                tracing::warn!(part, error = %e, "a part of a Kommo card could not be read");
                self.http.metrics().card_part_missing("kommo", part);
                Ok(None)
            }
        }
    }

    async fn notes(&self, id: i64, max: usize) -> Result<Vec<Activity>, CrmError> {
        let body = match self.get(&format!("contacts/{id}/notes"), &[("limit", MAX_PAGE.to_string())]).await? {
            Answer::Json(body) => body,
            Answer::Empty => return Ok(Vec::new()),
        };
        let mut notes: Vec<(i64, Activity)> = body
            .pointer("/_embedded/notes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|note| {
                let text = note.pointer("/params/text").and_then(Value::as_str)?.to_owned();
                let at = note.get("created_at").and_then(Value::as_i64).unwrap_or_default();
                let kind = match note.get("note_type").and_then(Value::as_str) {
                    Some("call_in" | "call_out") => ActivityKind::Call,
                    _ => ActivityKind::Note,
                };
                let subject = text.lines().next().unwrap_or_default().chars().take(80).collect();
                Some((at, Activity { kind, subject, body: Some(text), at: Some(datetime(at)), status: None }))
            })
            .collect();
        // The first page holds the oldest notes; newest first on a card.
        notes.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        Ok(notes.into_iter().take(max).map(|(_, activity)| activity).collect())
    }

    async fn tasks(&self, id: i64) -> Result<Vec<Activity>, CrmError> {
        let query = [
            ("filter[entity_type]", "contacts".to_owned()),
            ("filter[entity_id][]", id.to_string()),
            ("limit", "50".into()),
        ];
        let body = match self.get("tasks", &query).await? {
            Answer::Json(body) => body,
            Answer::Empty => return Ok(Vec::new()),
        };
        Ok(body
            .pointer("/_embedded/tasks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|task| {
                let text = task.get("text").and_then(Value::as_str)?.to_owned();
                let done = task.get("is_completed").and_then(Value::as_bool).unwrap_or(false);
                let due = task.get("complete_till").and_then(Value::as_i64);
                Some(Activity {
                    kind: ActivityKind::Task,
                    subject: text,
                    body: None,
                    at: due.map(datetime),
                    status: Some(if done { "completed" } else { "open" }.to_owned()),
                })
            })
            .collect())
    }

    /// One page of contacts changed since `from` (unix s), halving the page on a 504 (Kommo's
    /// sign that a page is too heavy, contract §4). `page` is 1-based at `limit` per page.
    async fn changed_page(
        &self,
        from: i64,
        page: u32,
        limit: usize,
    ) -> Result<(Vec<V4Contact>, Option<u32>, usize), CrmError> {
        let (mut page, mut limit) = (page, limit);
        loop {
            let query = [
                ("filter[updated_at][from]", from.to_string()),
                ("order[updated_at]", "asc".to_owned()),
                ("limit", limit.to_string()),
                ("page", page.to_string()),
            ];
            let answer = self.send(Method::GET, self.api_url("contacts", &query)?, None).await?;
            if answer.status.as_u16() == 504 && limit > 1 {
                // The same first contact at half the page size: page p of L is pages 2p-1.. of L/2.
                tracing::warn!(limit, "Kommo timed out on a contact page; halving it");
                page = (page - 1) * 2 + 1;
                limit /= 2;
                continue;
            }
            return match self.read(answer)? {
                Answer::Json(body) => contacts::page(&body).map(|(contacts, next)| (contacts, next, limit)),
                Answer::Empty => Ok((Vec::new(), None, limit)),
            };
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of unix seconds, as cards show times.
fn datetime(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = crmhub_core::time::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Where a change feed stands: the `updated_at` reached, and the ids already delivered with
/// exactly that time (several contacts can share a second; Kommo orders only by the time).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Position {
    at: i64,
    seen: Vec<i64>,
}

impl Position {
    fn parse(cursor: &ChangeCursor) -> Result<Self, CrmError> {
        let bad = || CrmError::validation("cursor", format!("{:?} is not a Kommo change cursor", cursor.0));
        let (at, seen) = cursor.0.split_once(':').ok_or_else(bad)?;
        let at = at.parse().map_err(|_| bad())?;
        let seen = if seen.is_empty() {
            Vec::new()
        } else {
            seen.split(',').map(|id| id.parse().map_err(|_| bad())).collect::<Result<_, _>>()?
        };
        Ok(Self { at, seen })
    }

    fn cursor(&self) -> ChangeCursor {
        let seen: Vec<String> = self.seen.iter().map(i64::to_string).collect();
        ChangeCursor(format!("{}:{}", self.at, seen.join(",")))
    }

    /// Whether `contact` comes after this position (and so is news).
    fn is_new(&self, contact: &V4Contact) -> bool {
        let at = contact.updated_at.unwrap_or_default();
        at > self.at || (at == self.at && !self.seen.contains(&contact.id))
    }

    fn advance(&mut self, contact: &V4Contact) {
        let at = contact.updated_at.unwrap_or_default();
        if at > self.at {
            self.at = at;
            self.seen.clear();
        }
        self.seen.push(contact.id);
    }
}

#[async_trait::async_trait]
impl Crm for Kommo {
    fn capabilities(&self) -> &[Capability] {
        &CAPABILITIES
    }

    async fn check(&self) -> Result<ConnectionCheck, CrmError> {
        let account = self.account().await?;
        let mut details = vec![
            LabeledValue::new("Kommo account", account.name),
            LabeledValue::new("Subdomain", account.subdomain),
            LabeledValue::new("Account id", account.id.to_string()),
        ];
        if let Some(expires) = self.stored_expiry().await? {
            details.push(LabeledValue::new("Access token expires", datetime(expires)));
        }
        Ok(ConnectionCheck { details, unverified: None })
    }

    async fn search_contacts(&self, query: &str, limit: usize) -> Result<Vec<ContactSummary>, CrmError> {
        let query = query.trim();
        if query.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let limit = limit.min(MAX_PAGE);
        let (found, _) = self.list(&[("query", query.to_owned()), ("limit", limit.to_string())]).await?;
        Ok(found.iter().take(limit).map(|c| c.summary(None)).collect())
    }

    /// Kommo's `query` matches the text as stored, so each national form of the number (a
    /// substring of every digit-only spelling: `+7912…`, `8912…`, `912…`) is searched, and the
    /// candidates are kept only if one of their phones is this number.
    async fn find_by_phone(&self, phone: &PhoneNumber) -> Result<Vec<ContactSummary>, CrmError> {
        let mut patterns = phone.digits_patterns();
        patterns.dedup();
        let mut found: Vec<ContactSummary> = Vec::new();
        for pattern in patterns {
            let mut page = 1;
            loop {
                let query = [("query", pattern.clone()), ("limit", MAX_PAGE.to_string()), ("page", page.to_string())];
                let (contacts, next) = self.list(&query).await?;
                for contact in contacts {
                    let matches = contact.phones().iter().any(|stored| phone.matches_text(stored, self.region));
                    if matches && !found.iter().any(|f| f.id == contact.id.to_string()) {
                        found.push(contact.summary(None));
                    }
                }
                match next {
                    Some(n) if n > page && n <= PHONE_PAGES => page = n,
                    _ => break,
                }
            }
        }
        Ok(found)
    }

    async fn contact_card(&self, id: &str, options: &CardOptions) -> Result<ContactCard, CrmError> {
        let id = Self::contact_id(id)?;
        let contact = self.contact(id).await?;
        let company = match contact.company_id() {
            Some(company) => self.card_part("company", self.company_name(company).await)?.flatten(),
            None => None,
        };
        let mut activities = Vec::new();
        if options.max_activities > 0 {
            activities.extend(self.card_part("tasks", self.tasks(id).await)?.unwrap_or_default());
            activities
                .extend(self.card_part("notes", self.notes(id, options.max_activities).await)?.unwrap_or_default());
            activities.truncate(options.max_activities);
        }
        let trimmed = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        Ok(ContactCard {
            id: id.to_string(),
            display_name: contact.display_name(),
            first_name: trimmed(&contact.first_name),
            last_name: trimmed(&contact.last_name),
            title: None,
            emails: contact.labeled("EMAIL"),
            phones: contact.labeled("PHONE"),
            company,
            owner: None,
            extra_fields: contact.other_fields(),
            figures: Vec::new(),
            activities,
            record_url: Some(self.contact_url(id)),
        })
    }

    async fn create_contact(&self, contact: &NewContact) -> Result<ContactSummary, CrmError> {
        contact.validate()?;
        let first = contact.first_name.as_deref().map(str::trim).filter(|s| !s.is_empty());
        let last = contact.last_name.trim();
        let name = first.map_or_else(|| last.to_owned(), |first| format!("{first} {last}"));
        let mut fields = Vec::new();
        if let Some(email) = contact.email.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            fields.push(json!({"field_code": "EMAIL", "values": [{"value": email, "enum_code": "WORK"}]}));
        }
        let phones: Vec<Value> = [(contact.phone.as_deref(), "WORK"), (contact.mobile.as_deref(), "MOB")]
            .into_iter()
            .filter_map(|(value, code)| {
                value.map(str::trim).filter(|v| !v.is_empty()).map(|v| json!({"value": v, "enum_code": code}))
            })
            .collect();
        if !phones.is_empty() {
            fields.push(json!({"field_code": "PHONE", "values": phones}));
        }
        let mut item = json!({"name": name, "last_name": last, "request_id": "crmhub-0"});
        if let Some(first) = first {
            item["first_name"] = json!(first);
        }
        if !fields.is_empty() {
            item["custom_fields_values"] = Value::Array(fields);
        }
        let created = match self.call(Method::POST, self.api_url("contacts", &[])?, Some(json!([item]))).await? {
            Answer::Json(body) => body,
            Answer::Empty => return Err(CrmError::Protocol("Kommo answered a contact creation with no body".into())),
        };
        let id = created
            .pointer("/_embedded/contacts")
            .and_then(Value::as_array)
            .and_then(|items| items.iter().find(|c| c.get("request_id").and_then(Value::as_str) == Some("crmhub-0")))
            .or_else(|| created.pointer("/_embedded/contacts/0"))
            .and_then(|c| c.get("id"))
            .and_then(Value::as_i64)
            .ok_or_else(|| CrmError::Protocol("Kommo's contact creation answer names no id".into()))?;
        Ok(ContactSummary {
            id: id.to_string(),
            display_name: name,
            company: None,
            emails: contact.email.iter().map(|e| e.trim().to_owned()).collect(),
            phones: [&contact.phone, &contact.mobile].into_iter().flatten().map(|p| p.trim().to_owned()).collect(),
        })
    }

    async fn add_note(&self, note: &NewNote) -> Result<String, CrmError> {
        let id = Self::contact_id(&note.contact_id)?;
        if note.body.trim().is_empty() {
            return Err(CrmError::validation("body", "must not be empty"));
        }
        // Kommo's answer for a note on a missing contact is undocumented; asking first makes
        // "not found" certain instead of guessed from an error text.
        self.contact(id).await?;
        let body = json!([{"note_type": "common", "params": {"text": note.body}, "request_id": "crmhub-0"}]);
        let created =
            match self.call(Method::POST, self.api_url(&format!("contacts/{id}/notes"), &[])?, Some(body)).await? {
                Answer::Json(body) => body,
                Answer::Empty => return Err(CrmError::Protocol("Kommo answered a note creation with no body".into())),
            };
        created
            .pointer("/_embedded/notes/0/id")
            .and_then(Value::as_i64)
            .map(|id| id.to_string())
            .ok_or_else(|| CrmError::Protocol("Kommo's note creation answer names no id".into()))
    }

    /// Contacts by `updated_at`, oldest first, from the cursor (inclusive of its second, minus
    /// the ids already delivered at it). Kommo's list does not report deletions: those arrive
    /// by webhook, so `deleted` is always empty here.
    async fn list_changes(&self, since: Option<&ChangeCursor>) -> Result<ChangePage, CrmError> {
        let mut position = since.map(Position::parse).transpose()?.unwrap_or_default();
        let from = position.at;
        let mut updated = Vec::new();
        let (mut page, mut limit, mut more) = (1, MAX_PAGE, true);
        for _ in 0..CHANGE_PAGES {
            let (contacts, next, used) = self.changed_page(from, page, limit).await?;
            // A halved page stays halved: `next` counts in the smaller pages.
            limit = used;
            let mut full = false;
            for contact in &contacts {
                if !position.is_new(contact) {
                    continue;
                }
                if updated.len() == MAX_PAGE {
                    full = true;
                    break;
                }
                position.advance(contact);
                updated.push(contact.record());
            }
            match next {
                // A page that brought nothing new (contacts delivered before, sharing the
                // cursor's second) is walked past; one that did ends this read at its edge.
                Some(n) if !full && updated.is_empty() => page = n,
                // Full, or more pages: `more` stays true (also when the page walk ran out).
                Some(_) => break,
                None if full => break,
                None => {
                    more = false;
                    break;
                }
            }
        }
        Ok(ChangePage { updated, deleted: Vec::new(), next: position.cursor(), more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(id: i64, at: i64) -> V4Contact {
        serde_json::from_value(json!({"id": id, "updated_at": at})).unwrap()
    }

    #[test]
    fn positions_round_trip_and_skip_what_was_delivered() {
        let mut position = Position::default();
        for c in [contact(5, 100), contact(3, 100)] {
            assert!(position.is_new(&c));
            position.advance(&c);
        }
        let cursor = position.cursor();
        assert_eq!(cursor.0, "100:5,3");
        let back = Position::parse(&cursor).unwrap();
        assert!(!back.is_new(&contact(3, 100)));
        assert!(back.is_new(&contact(9, 100)), "same second, not yet delivered");
        assert!(back.is_new(&contact(1, 101)));
        assert!(!back.is_new(&contact(1, 99)));
        assert!(Position::parse(&ChangeCursor("x".into())).is_err());
        assert!(Position::parse(&ChangeCursor("1:a".into())).is_err());
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(datetime(0), "1970-01-01 00:00:00");
        assert_eq!(datetime(1_700_000_000), "2023-11-14 22:13:20");
    }
}
