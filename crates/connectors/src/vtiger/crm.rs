//! Vtiger as a `Crm`: Contacts, Accounts, Events (calls), ModComments (notes), HelpDesk
//! (tickets), mapped as contracts/vtiger.md §10 describes.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use crmhub_core::crm::{
    Activity, ActivityKind, CallLog, CallOutcome, CallStage, Capability, CardOptions, ChangeCursor, ChangePage,
    ConnectionCheck, ContactCard, ContactRecord, ContactSummary, Crm, CrmError, LabeledValue, LoggedCall, NewContact,
    NewNote, NewTicket, TicketPriority,
};
use crmhub_core::phone::PhoneNumber;
use crmhub_core::time::{parse_utc, utc_date_time as date_time};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::queries::{self, EMAIL_FIELDS, PHONE_FIELDS, SearchTerm, SummaryFields, SummaryRow};
use super::{Record, Vtiger, text};

const CAPABILITIES: &[Capability] = &Capability::ALL;
/// Contacts scanned at most for one search or phone lookup (pages of 100).
const MAX_SCAN: usize = 5_000;
/// How long an account's name is reused on search results (a rename shows within this delay).
const ACCOUNT_NAMES_TTL: std::time::Duration = std::time::Duration::from_secs(300);

impl Vtiger {
    fn summary(&self, record: &impl SummaryFields, companies: &BTreeMap<String, String>) -> ContactSummary {
        ContactSummary {
            id: record.text("id").unwrap_or_default().to_owned(),
            display_name: display_name(record),
            company: record.text("account_id").and_then(|a| companies.get(a)).cloned(),
            emails: EMAIL_FIELDS.iter().filter_map(|f| record.text(f)).map(str::to_owned).collect(),
            phones: PHONE_FIELDS.iter().filter_map(|f| record.text(f)).map(str::to_owned).collect(),
        }
    }

    /// Account names for the contacts' `account_id`s: from the short-lived cache, the rest in
    /// short IN lists (the query travels in the URL).
    async fn company_names(&self, records: &[impl SummaryFields]) -> Result<BTreeMap<String, String>, CrmError> {
        let wanted: HashSet<String> = records.iter().filter_map(|r| r.text("account_id")).map(str::to_owned).collect();
        let mut names = BTreeMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
            for id in wanted {
                match cache.get(&id) {
                    Some((name, at)) if at.elapsed() < ACCOUNT_NAMES_TTL => {
                        names.insert(id, name.clone());
                    }
                    _ => missing.push(id),
                }
            }
        }
        for chunk in missing.chunks(40) {
            let rows = self.query(&queries::account_names(chunk)?).await?;
            self.remember_account_names(&rows);
            names.extend(
                rows.iter().filter_map(|row| Some((text(row, "id")?.to_owned(), text(row, "accountname")?.to_owned()))),
            );
        }
        Ok(names)
    }

    fn remember_account_names(&self, accounts: &[Record]) {
        let mut cache = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        for row in accounts {
            if let (Some(id), Some(name)) = (text(row, "id"), text(row, "accountname")) {
                cache.insert(id.to_owned(), (name.to_owned(), std::time::Instant::now()));
            }
        }
    }

    async fn summaries(&self, records: Vec<impl SummaryFields + Sync>) -> Result<Vec<ContactSummary>, CrmError> {
        let companies = self.company_names(&records).await?;
        Ok(records.iter().map(|r| self.summary(r, &companies)).collect())
    }

    /// Fails with `NotFound` unless `id` is an existing contact: Vtiger silently drops a
    /// reference to a missing record, so a write must check first.
    async fn existing_contact(&self, id: &str) -> Result<Record, CrmError> {
        let record = self.retrieve(id).await?;
        let contacts = self.describe("Contacts").await?;
        if !id.starts_with(&format!("{}x", contacts.id_prefix)) {
            return Err(CrmError::NotFound { what: format!("contact {id}") });
        }
        Ok(record)
    }

    async fn activities(&self, contact: &str, max: usize) -> Result<Vec<Activity>, CrmError> {
        let rows = max.clamp(1, 100) as u32;
        let notes = queries::related_newest("ModComments", "related_to", contact, "createdtime", rows)?;
        let events = queries::related_newest("Events", "contact_id", contact, "date_start", rows)?;
        let tickets = queries::related_newest("HelpDesk", "contact_id", contact, "createdtime", rows)?;
        let mut all: Vec<Activity> = Vec::new();
        all.extend(self.query(&notes).await?.iter().map(|r| Activity {
            kind: ActivityKind::Note,
            subject: "Note".into(),
            body: text(r, "commentcontent").map(str::to_owned),
            at: text(r, "createdtime").map(str::to_owned),
            status: None,
        }));
        all.extend(self.query(&events).await?.iter().map(|r| Activity {
            kind: match text(r, "activitytype") {
                Some("Call" | "Mobile Call") => ActivityKind::Call,
                Some("Meeting") => ActivityKind::Meeting,
                _ => ActivityKind::Other,
            },
            subject: text(r, "subject").unwrap_or("Event").to_owned(),
            body: text(r, "description").map(strip_marker),
            at: match (text(r, "date_start"), text(r, "time_start")) {
                (Some(d), Some(t)) => Some(format!("{d} {t}")),
                (d, _) => d.map(str::to_owned),
            },
            status: text(r, "eventstatus").map(str::to_owned),
        }));
        all.extend(self.query(&tickets).await?.iter().map(|r| {
            Activity {
                kind: ActivityKind::Ticket,
                subject: format!(
                    "{} {}",
                    text(r, "ticket_no").unwrap_or("Ticket"),
                    text(r, "ticket_title").unwrap_or_default()
                )
                .trim()
                .to_owned(),
                body: text(r, "description").map(str::to_owned),
                at: text(r, "createdtime").map(str::to_owned),
                status: text(r, "ticketstatus").map(str::to_owned),
            }
        }));
        all.sort_by(|a, b| b.at.cmp(&a.at));
        all.truncate(max);
        Ok(all)
    }

    async fn open_tickets(&self, contact: &str) -> Result<usize, CrmError> {
        let rows = self.query_all(queries::ticket_statuses(contact)?, 1_000).await?;
        Ok(rows.iter().filter(|r| text(r, "ticketstatus") != Some("Closed")).count())
    }

    /// A lookup for one part of a card. A record the user may not read (Vtiger answers
    /// ACCESS_DENIED, which is what a non-admin gets for Users) leaves that part out, as does an
    /// outage of that one lookup — logged and counted, since the rest of the card is still worth
    /// showing; a session that cannot be renewed fails the card.
    fn card_part(&self, part: &str, lookup: Result<Record, CrmError>) -> Result<Option<Record>, CrmError> {
        match lookup {
            Ok(record) => Ok(Some(record)),
            Err(CrmError::NotFound { .. }) => Ok(None),
            Err(e @ CrmError::AuthFailed(_)) => Err(e),
            Err(e) => {
                let e = self.ctx.secrets.redact_error(e);
                tracing::warn!(part, error = %e, "a contact card goes out without this part");
                self.http.metrics().card_part_missing("vtiger", part);
                Ok(None)
            }
        }
    }

    /// The call-log record made for `call_id` before, if any.
    async fn logged_call(&self, marker: &str) -> Result<Option<Record>, CrmError> {
        let rows = self.query_all(queries::call_logs_marked(marker)?, 200).await?;
        Ok(rows.into_iter().find(|r| text(r, "description").is_some_and(|d| d.contains(marker))))
    }

    /// The call's log so far: the record crmhub says it made, read by id (no query), or, when
    /// crmhub knows none or that one is gone, the record carrying the call's marker.
    async fn call_log_record(&self, call: &CallLog, marker: &str) -> Result<Option<Record>, CrmError> {
        if let Some(id) = &call.record_id {
            match self.retrieve(id).await {
                // Only an Events record is a call log: call details must never be written over
                // another module's record that an id mix-up pointed at.
                Ok(record) if record.contains_key("eventstatus") => return Ok(Some(record)),
                Ok(_) => tracing::warn!(record = %id, "the record stored for a call is not an event; looking it up"),
                // Deleted in the CRM (Vtiger answers ACCESS_DENIED, read as not found): the
                // marker finds a copy made meanwhile, or the log is made again.
                Err(CrmError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.logged_call(marker).await
    }
}

fn user_name(user: &Record) -> Option<String> {
    let name =
        format!("{} {}", text(user, "first_name").unwrap_or_default(), text(user, "last_name").unwrap_or_default());
    let name = name.trim().to_owned();
    if name.is_empty() { text(user, "user_name").map(str::to_owned) } else { Some(name) }
}

/// Whether `text`, lowercased, contains `lowered` (itself lowercase). ASCII text — most names
/// and every e-mail address — is compared in place; other text is lowercased first.
fn contains_lowercase(text: &str, lowered: &str) -> bool {
    if text.is_ascii() && lowered.is_ascii() {
        let (text, lowered) = (text.as_bytes(), lowered.as_bytes());
        lowered.is_empty() || text.windows(lowered.len()).any(|window| window.eq_ignore_ascii_case(lowered))
    } else {
        text.to_lowercase().contains(lowered)
    }
}

fn display_name(record: &impl SummaryFields) -> String {
    let name =
        format!("{} {}", record.text("firstname").unwrap_or_default(), record.text("lastname").unwrap_or_default());
    let name = name.trim();
    if name.is_empty() { record.text("label").unwrap_or("(no name)").to_owned() } else { name.to_owned() }
}

/// The marker that ties an Events record to an external call id. Vtiger has no field for
/// external ids, so it lives in the description, where it can be searched.
fn call_marker(call_id: &str) -> String {
    let safe = call_id.len() <= 100
        && call_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '@'));
    let id = if safe {
        call_id.to_owned()
    } else {
        use md5::{Digest, Md5};
        format!("md5-{}", hex::encode(Md5::digest(call_id.as_bytes())))
    };
    format!("[crmhub-call:{id}]")
}

/// The line that closes crmhub's block in a call log's description.
const BLOCK_END: &str = "[/crmhub-call]";

/// The description as a person should read it: without crmhub's marker lines, everything else
/// (crmhub's details and whatever an agent wrote) kept.
fn strip_marker(description: &str) -> String {
    description
        .lines()
        .filter(|l| {
            let l = l.trim();
            !l.starts_with("[crmhub-call:") && l != BLOCK_END
        })
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

/// crmhub's part of a call log's description: the marker line, the call's notes and details,
/// then a closing line. The rest of the description belongs to whoever edits the record in
/// Vtiger, and a later log of the call replaces only this block.
fn call_block(marker: &str, notes: Option<&str>, details: &[String]) -> String {
    let mut block = format!("{marker}\n");
    if let Some(notes) = notes.map(str::trim).filter(|n| !n.is_empty()) {
        block.push_str(notes);
        block.push_str("\n\n");
    }
    block.push_str(&details.join("\n"));
    block.push('\n');
    block.push_str(BLOCK_END);
    block
}

/// `description` with crmhub's block for `marker` replaced by `block`, every character outside
/// it kept as it was. A description without the block (an agent cleared it) gets the block
/// appended. A marker line without a closing line after it (an agent deleted that line, or a
/// log written before blocks existed) is taken as a block of that one line, so that nobody
/// else's text is ever taken for crmhub's.
fn with_call_block(description: &str, marker: &str, block: &str) -> String {
    let mut start: Option<(usize, usize)> = None;
    let mut offset = 0;
    for line in description.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        let end = offset + content.len();
        match start {
            None if content.trim() == marker => start = Some((offset, end)),
            Some((from, _)) if content.trim() == BLOCK_END => {
                return format!("{}{block}{}", &description[..from], &description[end..]);
            }
            _ => {}
        }
        offset += line.len();
    }
    match start {
        Some((from, to)) => format!("{}{block}{}", &description[..from], &description[to..]),
        None if description.trim().is_empty() => block.to_owned(),
        None => {
            let gap = if description.ends_with('\n') { "\n" } else { "\n\n" };
            format!("{description}{gap}{block}")
        }
    }
}

fn contact_record(record: &Record, companies: &BTreeMap<String, String>) -> ContactRecord {
    ContactRecord {
        id: text(record, "id").unwrap_or_default().to_owned(),
        display_name: display_name(record),
        first_name: text(record, "firstname").map(str::to_owned),
        last_name: text(record, "lastname").map(str::to_owned),
        emails: EMAIL_FIELDS.iter().filter_map(|f| text(record, f)).map(str::to_owned).collect(),
        phones: PHONE_FIELDS.iter().filter_map(|f| text(record, f)).map(str::to_owned).collect(),
        company: text(record, "account_id").and_then(|a| companies.get(a)).cloned(),
        modified_at: text(record, "modifiedtime").and_then(parse_utc),
    }
}

/// The change feed's position: `sync`'s `lastModifiedTime`, or a `(modifiedtime, id)`
/// watermark when `sync` is broken and `query` stands in for it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
enum FeedPosition {
    Sync { modified_time: i64 },
    Query { modified: String, id: String },
}

fn cursor(position: &FeedPosition) -> ChangeCursor {
    ChangeCursor(serde_json::to_string(position).unwrap_or_default())
}

#[async_trait]
impl Crm for Vtiger {
    fn capabilities(&self) -> &[Capability] {
        CAPABILITIES
    }

    async fn check(&self) -> Result<ConnectionCheck, CrmError> {
        let session = self.session().await?;
        let contacts = self.describe("Contacts").await?;
        // The queries a search sends, one row each: a grammar this installation refuses shows
        // here rather than at the first customer's search.
        let probe = SearchTerm::parse("crmhub connection test").expect("a non-empty term");
        self.query(&queries::accounts_named(&probe)?.limit(0, 1)).await?;
        self.query(&queries::contact_search(&probe, &["11x1".to_owned()])?.limit(0, 1)).await?;
        self.query(&queries::contacts_by_phone(&["84912345678".to_owned()])?.limit(0, 1)).await?;
        let mut details = vec![
            LabeledValue::new("user", format!("{} ({})", self.username, session.user_id)),
            LabeledValue::new("contacts fields", contacts.fields.len().to_string()),
            LabeledValue::new("search", "ok"),
        ];
        if let Some(version) = session.version {
            details.insert(0, LabeledValue::new("vtiger version", version));
        }
        Ok(ConnectionCheck { details, unverified: None })
    }

    async fn search_contacts(&self, query: &str, limit: usize) -> Result<Vec<ContactSummary>, CrmError> {
        let Some(term) = SearchTerm::parse(query) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Contacts of a matching company belong in the results, and VTQL has no joins: the
        // matching accounts first (their names serve the results too), then their contacts
        // alongside the name, e-mail and phone matches.
        let accounts =
            if term.may_be_a_company() { self.query(&queries::accounts_named(&term)?).await? } else { Vec::new() };
        let account_ids: Vec<String> = accounts.iter().filter_map(|a| text(a, "id")).map(str::to_owned).collect();
        self.remember_account_names(&accounts);
        let query = queries::contact_search(&term, &account_ids)?;
        // The patterns may match more than the literal term (wildcards in it, separators in
        // phones, words beyond those in the query); keep only true matches.
        let lowered: Vec<String> = term.words.iter().map(|w| w.to_lowercase()).collect();
        let whole = term.whole.to_lowercase();
        let matches = |r: &SummaryRow<'_>| {
            let (first, last) = (r.text("firstname").unwrap_or_default(), r.text("lastname").unwrap_or_default());
            lowered.iter().all(|w| contains_lowercase(first, w) || contains_lowercase(last, w))
                || EMAIL_FIELDS.iter().any(|f| r.text(f).is_some_and(|e| contains_lowercase(e, &whole)))
                || r.text("account_id").is_some_and(|a| account_ids.iter().any(|id| id == a))
                || term.phone_digits.as_ref().is_some_and(|digits| {
                    PHONE_FIELDS.iter().any(|f| {
                        r.text(f).is_some_and(|p| {
                            p.chars().filter(char::is_ascii_digit).collect::<String>().contains(digits.as_str())
                        })
                    })
                })
        };
        let mut found = Vec::new();
        let mut offset = 0u64;
        let mut rows = queries::first_search_page(limit);
        while found.len() < limit && (offset as usize) < MAX_SCAN {
            let raw = self.query_raw(&query.clone().limit(offset, rows)).await?;
            let page: Vec<SummaryRow<'_>> = serde_json::from_str(raw.get())
                .map_err(|e| CrmError::Protocol(format!("Vtiger's query result is not a list of records ({e})")))?;
            let got = page.len();
            // Only the matches the result has room for are copied out of the page.
            let room = limit - found.len();
            found.extend(page.into_iter().filter(|r| matches(r)).take(room).map(SummaryRow::into_owned));
            if got < rows as usize {
                break;
            }
            offset += u64::from(rows);
            rows = super::vtql::PAGE;
        }
        found.truncate(limit);
        self.summaries(found).await
    }

    async fn find_by_phone(&self, phone: &PhoneNumber) -> Result<Vec<ContactSummary>, CrmError> {
        let mut patterns: Vec<String> = phone.digits_patterns();
        patterns.sort();
        patterns.dedup();
        let candidates = self.query_all(queries::contacts_by_phone(&patterns)?, MAX_SCAN).await?;
        let matching: Vec<Record> = candidates
            .into_iter()
            .filter(|r| {
                PHONE_FIELDS.iter().any(|f| text(r, f).is_some_and(|stored| phone.matches_text(stored, self.region)))
            })
            .collect();
        self.summaries(matching).await
    }

    async fn contact_card(&self, id: &str, options: &CardOptions) -> Result<ContactCard, CrmError> {
        let record = self.existing_contact(id).await?;
        let describe = self.describe("Contacts").await?;
        let label = |field: &str, fallback: &str| describe.label_of(field).unwrap_or(fallback).to_owned();
        let company = match text(&record, "account_id") {
            Some(account) => self.card_part("company", self.retrieve(account).await)?,
            None => None,
        };
        let company = company.and_then(|a| text(&a, "accountname").map(str::to_owned));
        let owner = match text(&record, "assigned_user_id") {
            Some(owner) => self.card_part("owner", self.retrieve(owner).await)?.and_then(|user| user_name(&user)),
            None => None,
        };
        let extra_fields = self
            .card_fields
            .iter()
            .filter_map(|f| text(&record, f).map(|v| LabeledValue::new(label(f, f), v)))
            .collect();
        let open = self.open_tickets(id).await?;
        Ok(ContactCard {
            id: id.to_owned(),
            display_name: display_name(&record),
            first_name: text(&record, "firstname").map(str::to_owned),
            last_name: text(&record, "lastname").map(str::to_owned),
            title: text(&record, "title").map(str::to_owned),
            emails: EMAIL_FIELDS
                .iter()
                .filter_map(|f| text(&record, f).map(|v| LabeledValue::new(label(f, f), v)))
                .collect(),
            phones: PHONE_FIELDS
                .iter()
                .filter_map(|f| text(&record, f).map(|v| LabeledValue::new(label(f, f), v)))
                .collect(),
            company,
            owner,
            extra_fields,
            figures: vec![LabeledValue::new("Open tickets", open.to_string())],
            activities: self.activities(id, options.max_activities).await?,
            record_url: self.record_url("Contacts", id),
        })
    }

    async fn create_contact(&self, contact: &NewContact) -> Result<ContactSummary, CrmError> {
        contact.validate()?;
        let mut element = Map::new();
        let mut put = |field: &str, value: Option<&str>| {
            if let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) {
                element.insert(field.to_owned(), Value::String(v.to_owned()));
            }
        };
        put("firstname", contact.first_name.as_deref());
        put("lastname", Some(&contact.last_name));
        put("email", contact.email.as_deref());
        put("phone", contact.phone.as_deref());
        put("mobile", contact.mobile.as_deref());
        put("title", contact.title.as_deref());
        put("description", contact.description.as_deref());
        let created = self.create("Contacts", element).await?;
        Ok(self.summary(&created, &BTreeMap::new()))
    }

    async fn log_call(&self, call: &CallLog) -> Result<LoggedCall, CrmError> {
        if let Some(contact) = &call.contact_id {
            self.existing_contact(contact).await?;
        }
        let marker = call_marker(&call.call_id);
        let existing = self.call_log_record(call, &marker).await?;
        if let Some(record) = &existing {
            // An answered event arriving after the call's final log must not undo it.
            let finalised = matches!(text(record, "eventstatus"), Some("Held" | "Not Held"));
            if finalised && call.stage == CallStage::Answered {
                return Ok(LoggedCall { record_id: text(record, "id").unwrap_or_default().to_owned(), created: false });
            }
        }
        let duration = i64::from(call.duration_secs.unwrap_or(0));
        let (date_start, time_start) = date_time(call.started_at);
        let (due_date, time_end) = date_time(call.started_at + duration);
        let status = match (call.stage, call.outcome) {
            (CallStage::Answered, _) => "Planned",
            (CallStage::Ended, Some(CallOutcome::Completed) | None) => "Held",
            (CallStage::Ended, Some(_)) => "Not Held",
        };
        let direction = match call.direction {
            crmhub_core::crm::CallDirection::Inbound => "Inbound",
            crmhub_core::crm::CallDirection::Outbound => "Outbound",
        };
        let mut details = vec![format!("Direction: {direction}")];
        details.extend(call.from.as_ref().map(|f| format!("From: {f}")));
        details.extend(call.to.as_ref().map(|t| format!("To: {t}")));
        details.extend(call.agent.as_ref().map(|a| format!("Agent: {a}")));
        details.extend(call.outcome.map(|o| format!("Outcome: {o:?}")));
        details.extend(call.duration_secs.map(|d| format!("Duration: {d} s")));
        details.extend(call.disposition.as_ref().map(|d| format!("Disposition: {d}")));
        details.extend(call.recording_url.as_ref().map(|r| format!("Recording: {r}")));
        let block = call_block(&marker, call.notes.as_deref(), &details);

        let counterpart = match call.direction {
            crmhub_core::crm::CallDirection::Inbound => call.from.as_deref(),
            crmhub_core::crm::CallDirection::Outbound => call.to.as_deref(),
        };
        let bare_subject = format!("{direction} call");
        let subject = match counterpart {
            Some(c) => format!("{bare_subject} {c}"),
            None => bare_subject.clone(),
        };
        // `revise` changes only the fields sent, so every field crmhub never sets keeps what an
        // agent put there.
        let mut element = Map::new();
        for (field, value) in [
            ("activitytype", "Call".to_owned()),
            ("date_start", date_start),
            ("time_start", time_start),
            ("due_date", due_date),
            ("time_end", time_end),
            ("duration_hours", (duration / 3600).to_string()),
            ("eventstatus", status.to_owned()),
        ] {
            element.insert(field.to_owned(), Value::String(value));
        }
        if let Some(contact) = &call.contact_id {
            element.insert("contact_id".into(), Value::String(contact.clone()));
        }
        match existing {
            Some(record) => {
                let id = text(&record, "id").unwrap_or_default().to_owned();
                let description = record.get("description").and_then(Value::as_str).unwrap_or_default();
                element.insert("description".into(), Value::String(with_call_block(description, &marker, &block)));
                // The subject is crmhub's only while it still reads as crmhub wrote it at an
                // earlier stage. That stage may have had no number yet (`Inbound call`), which
                // the final log fills in; any other subject is an agent's (or names the same
                // call's number already) and is kept. crmhub stores no copy of what it wrote,
                // so this is the one comparison that cannot mistake an agent's words for ours.
                let current = text(&record, "subject").unwrap_or_default();
                if current.is_empty() || current == bare_subject {
                    element.insert("subject".into(), Value::String(subject));
                }
                self.revise(&id, element).await?;
                Ok(LoggedCall { record_id: id, created: false })
            }
            None => {
                element.insert("subject".into(), Value::String(subject));
                element.insert("description".into(), Value::String(block));
                let created = self.create("Events", element).await?;
                Ok(LoggedCall { record_id: text(&created, "id").unwrap_or_default().to_owned(), created: true })
            }
        }
    }

    async fn add_note(&self, note: &NewNote) -> Result<String, CrmError> {
        if note.body.trim().is_empty() {
            return Err(CrmError::validation("body", "must not be empty"));
        }
        self.existing_contact(&note.contact_id).await?;
        let mut element = Map::new();
        element.insert("commentcontent".into(), Value::String(note.body.clone()));
        element.insert("related_to".into(), Value::String(note.contact_id.clone()));
        let created = self.create("ModComments", element).await?;
        Ok(text(&created, "id").unwrap_or_default().to_owned())
    }

    async fn create_ticket(&self, ticket: &NewTicket) -> Result<String, CrmError> {
        if ticket.title.trim().is_empty() {
            return Err(CrmError::validation("title", "must not be empty"));
        }
        let contact = match &ticket.contact_id {
            Some(id) => Some(self.existing_contact(id).await?),
            None => None,
        };
        let priority = match ticket.priority.unwrap_or(TicketPriority::Normal) {
            TicketPriority::Low => "Low",
            TicketPriority::Normal => "Normal",
            TicketPriority::High => "High",
            TicketPriority::Urgent => "Urgent",
        };
        let mut element = Map::new();
        element.insert("ticket_title".into(), Value::String(ticket.title.trim().to_owned()));
        element.insert("ticketpriorities".into(), Value::String(priority.into()));
        element.insert("ticketstatus".into(), Value::String("Open".into()));
        if let Some(description) = &ticket.description {
            element.insert("description".into(), Value::String(description.clone()));
        }
        if let Some(contact) = &ticket.contact_id {
            element.insert("contact_id".into(), Value::String(contact.clone()));
        }
        // The contact's organization, as a ticket made in Vtiger's UI gets it: the ticket then
        // shows on the account too. Read from the contact already fetched to check it exists.
        if let Some(account) = contact.as_ref().and_then(|c| text(c, "account_id")) {
            element.insert("parent_id".into(), Value::String(account.to_owned()));
        }
        let created = self.create("HelpDesk", element).await?;
        Ok(text(&created, "id").unwrap_or_default().to_owned())
    }

    async fn list_changes(&self, since: Option<&ChangeCursor>) -> Result<ChangePage, CrmError> {
        let position = match since {
            None => None,
            Some(c) => Some(
                serde_json::from_str::<FeedPosition>(&c.0)
                    .map_err(|_| CrmError::validation("cursor", "is not a Vtiger change cursor"))?,
            ),
        };
        let modified_time = match &position {
            Some(FeedPosition::Sync { modified_time }) => Some(*modified_time),
            None => Some(1),
            Some(FeedPosition::Query { .. }) => None,
        };
        if let Some(modified_time) = modified_time {
            if let Some(result) = self.sync(modified_time, "Contacts").await? {
                let updated: Vec<Record> = result
                    .get("updated")
                    .and_then(Value::as_array)
                    .map(|rows| rows.iter().filter_map(|r| r.as_object().cloned()).collect())
                    .unwrap_or_default();
                let deleted = result
                    .get("deleted")
                    .and_then(Value::as_array)
                    .map(|ids| ids.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                let last = result.get("lastModifiedTime").and_then(Value::as_i64).unwrap_or(modified_time);
                let more = result.get("more").and_then(Value::as_bool).unwrap_or(false);
                let next = next_sync_position(modified_time, last, more);
                let companies = self.company_names(&updated).await?;
                return Ok(ChangePage {
                    updated: updated.iter().map(|r| contact_record(r, &companies)).collect(),
                    deleted,
                    next: cursor(&next),
                    more,
                });
            }
        }
        // Watermark on (modifiedtime, id): `id >` compares the numeric crmid in VTQL.
        let (modified, after_id) = match position {
            Some(FeedPosition::Query { modified, id }) => (modified, id),
            Some(FeedPosition::Sync { modified_time }) => {
                let (date, time) = date_time(modified_time);
                (format!("{date} {time}"), "0x0".into())
            }
            None => ("1970-01-01 00:00:00".into(), "0x0".into()),
        };
        let query = queries::changes_after(&modified, &after_id)?;
        let rows = self.query(&query).await?;
        let more = rows.len() == super::vtql::PAGE as usize;
        let next = match rows.last() {
            Some(last) => FeedPosition::Query {
                modified: text(last, "modifiedtime").unwrap_or(&modified).to_owned(),
                id: text(last, "id").unwrap_or(&after_id).to_owned(),
            },
            None => FeedPosition::Query { modified, id: after_id },
        };
        let companies = self.company_names(&rows).await?;
        Ok(ChangePage {
            updated: rows.iter().map(|r| contact_record(r, &companies)).collect(),
            deleted: Vec::new(),
            next: cursor(&next),
            more,
        })
    }
}

/// Where the feed goes on after a `sync` page from `asked` that ended at `last`.
///
/// `sync` reports changes strictly after its `modifiedTime`, at one-second resolution, so a
/// record written later in the second `last` would never be reported: when the feed is caught
/// up (`more` false) it re-reads that second next time (a few repeated upserts, nothing lost).
/// While `more` is true, Vtiger already holds changes after `last`, so that second is over and
/// the feed moves past it; re-reading it then would stall on a second holding more than a page
/// of records (a mass edit), which `sync` returns whole each time. Should `more` ever come
/// without progress, the `(modifiedtime, id)` watermark pages that second by id instead.
fn next_sync_position(asked: i64, last: i64, more: bool) -> FeedPosition {
    match (more, last > asked) {
        (true, true) => FeedPosition::Sync { modified_time: last },
        (true, false) => {
            let (date, time) = date_time(asked);
            FeedPosition::Query { modified: format!("{date} {time}"), id: "0x0".into() }
        }
        (false, _) => FeedPosition::Sync { modified_time: (last - 1).max(asked) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_ignores_case_in_and_beyond_ascii() {
        assert!(contains_lowercase("Frank REDFORD", "redf"));
        assert!(contains_lowercase("Susan.Red@Example.com", "red@example"));
        assert!(contains_lowercase("anything", ""));
        assert!(!contains_lowercase("Re d", "red"));
        assert!(!contains_lowercase("re", "red"));
        assert!(contains_lowercase("ĐẶNG Văn", "đặng"));
        assert!(contains_lowercase("ПЕТРОВ", "петр"));
        assert!(!contains_lowercase("Petrov", "петр"));
    }

    #[test]
    fn the_sync_position_always_moves_while_there_is_more() {
        let sync = |p: FeedPosition| match p {
            FeedPosition::Sync { modified_time } => modified_time,
            FeedPosition::Query { .. } => panic!("{p:?}"),
        };
        // 150 records in the second 1000, more after it: the next read starts past 1000.
        assert_eq!(sync(next_sync_position(999, 1000, true)), 1000);
        // Caught up: the last second is read again.
        assert_eq!(sync(next_sync_position(999, 1000, false)), 999);
        assert_eq!(sync(next_sync_position(500, 1000, false)), 999);
        assert_eq!(sync(next_sync_position(1000, 1000, false)), 1000);
        // `more` without progress pages that second by id.
        assert!(matches!(
            next_sync_position(1000, 1000, true),
            FeedPosition::Query { modified, id } if modified == "1970-01-01 00:16:40" && id == "0x0"
        ));
    }

    #[test]
    fn call_markers_are_searchable_and_safe() {
        assert_eq!(call_marker("abc-123"), "[crmhub-call:abc-123]");
        assert!(call_marker("a'b%c").starts_with("[crmhub-call:md5-"));
        assert_eq!(strip_marker("hello\n[crmhub-call:x]"), "hello");
    }

    #[test]
    fn a_later_log_replaces_only_crmhubs_block() {
        let marker = call_marker("c-1");
        let first = call_block(&marker, Some("Wants a quote"), &["Direction: Inbound".to_owned()]);
        assert_eq!(first, "[crmhub-call:c-1]\nWants a quote\n\nDirection: Inbound\n[/crmhub-call]");
        let edited = format!("Agent before\r\n\r\n{first}\r\n  Agent after: call back 10:00\n");
        let second = call_block(&marker, None, &["Direction: Inbound".to_owned(), "Duration: 5 s".to_owned()]);
        assert_eq!(
            with_call_block(&edited, &marker, &second),
            format!("Agent before\r\n\r\n{second}\r\n  Agent after: call back 10:00\n")
        );
        assert_eq!(
            strip_marker(&with_call_block(&edited, &marker, &second)),
            "Agent before\n\nDirection: Inbound\nDuration: 5 s\n  Agent after: call back 10:00"
        );
        // Cleared by an agent: the block goes after what is there.
        assert_eq!(with_call_block("", &marker, &second), second);
        assert_eq!(with_call_block("Only mine", &marker, &second), format!("Only mine\n\n{second}"));
        // No closing line: only the marker line is crmhub's.
        let unclosed = "Old details\n[crmhub-call:c-1]\nAgent text";
        assert_eq!(with_call_block(unclosed, &marker, "NEW"), "Old details\nNEW\nAgent text");
        // Another call's block is someone else's text here.
        let other = call_block(&call_marker("c-2"), None, &["x".to_owned()]);
        assert_eq!(with_call_block(&other, &marker, "NEW"), format!("{other}\n\nNEW"));
    }
}
