//! ContactBook's data: contacts, calls, notes and tickets, and the queries the API runs on them.
//! Everything is in memory under the simulator's one lock; nothing here awaits.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use super::error::{self, ApiError};
use super::input::{self, CallInput, CallPatch, ContactInput, NoteInput, TicketInput};
use super::records::{Call, CallDirection, Contact, NewContact, Note, Ticket};

/// A stored activity with the global recording order, which breaks ties between activities that
/// happened in the same second (common on a manual clock).
#[derive(Debug, Clone)]
struct Rec<T> {
    seq: u64,
    value: T,
}

/// One entry of a contact's activity timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Activity {
    pub(crate) kind: &'static str,
    pub(crate) subject: String,
    pub(crate) body: String,
    pub(crate) occurred_at: i64,
    seq: u64,
}

/// Longest note subject: the first line of the note, cut to this many characters.
const NOTE_SUBJECT_CHARS: usize = 80;

#[derive(Debug, Default)]
pub(crate) struct Store {
    contacts: BTreeMap<u64, Contact>,
    calls: BTreeMap<u64, Rec<Call>>,
    notes: BTreeMap<u64, Rec<Note>>,
    tickets: BTreeMap<u64, Rec<Ticket>>,
    last_contact: u64,
    last_call: u64,
    last_note: u64,
    last_ticket: u64,
    last_seq: u64,
}

/// The numeric part of an id in its canonical form (`c_7`, not `c_07` or `c_+7`).
fn parse_id(id: &str, prefix: &str) -> Option<u64> {
    let n: u64 = id.strip_prefix(prefix)?.parse().ok()?;
    (format!("{prefix}{n}") == id).then_some(n)
}

fn next(counter: &mut u64) -> u64 {
    *counter += 1;
    *counter
}

impl Store {
    // --- contacts -----------------------------------------------------------------------

    fn insert(&mut self, new: NewContact, now: i64) -> &Contact {
        let n = next(&mut self.last_contact);
        let contact = Contact {
            id: format!("c_{n}"),
            first_name: new.first_name,
            last_name: new.last_name,
            email: new.email,
            phone: new.phone,
            company: new.company,
            owner: new.owner.unwrap_or_else(|| super::DEFAULT_USERNAME.to_owned()),
            updated_at: new.updated_at.unwrap_or(now),
        };
        self.contacts.entry(n).or_insert(contact)
    }

    pub(crate) fn insert_contact(&mut self, new: NewContact, now: i64) -> String {
        self.insert(new, now).id.clone()
    }

    pub(crate) fn create_contact(&mut self, input: ContactInput, owner: &str, now: i64) -> Contact {
        let new = NewContact {
            first_name: input.first_name,
            last_name: input.last_name,
            email: input.email,
            phone: input.phone,
            company: input.company,
            owner: Some(owner.to_owned()),
            updated_at: Some(now),
        };
        self.insert(new, now).clone()
    }

    pub(crate) fn contact(&self, id: &str) -> Option<&Contact> {
        self.contacts.get(&parse_id(id, "c_")?)
    }

    /// Changes a contact as a CRM user would: whatever `change` does, then `updated_at` = now.
    /// The id cannot be changed.
    pub(crate) fn update_contact(&mut self, id: &str, change: impl FnOnce(&mut Contact), now: i64) -> bool {
        let Some(contact) = parse_id(id, "c_").and_then(|n| self.contacts.get_mut(&n)) else {
            return false;
        };
        let id = contact.id.clone();
        change(contact);
        contact.id = id;
        contact.updated_at = now;
        true
    }

    pub(crate) fn delete_contact(&mut self, id: &str) -> bool {
        parse_id(id, "c_").and_then(|n| self.contacts.remove(&n)).is_some()
    }

    pub(crate) fn contacts(&self) -> impl Iterator<Item = &Contact> {
        self.contacts.values()
    }

    /// Contacts matching a search term and/or a phone key, in id order.
    pub(crate) fn find_contacts(&self, search: Option<&str>, phone_key: Option<&str>) -> Vec<&Contact> {
        let term = search.map(str::to_lowercase);
        self.contacts
            .values()
            .filter(|c| term.as_deref().is_none_or(|t| matches_term(c, t)))
            .filter(|c| phone_key.is_none_or(|k| c.phone.as_deref().is_some_and(|p| input::digits(p).ends_with(k))))
            .collect()
    }

    /// Contacts with `updated_at > since`, by (updated_at, id).
    pub(crate) fn changed_since(&self, since: i64) -> Vec<&Contact> {
        let mut changed: Vec<(i64, u64, &Contact)> =
            self.contacts.iter().filter(|(_, c)| c.updated_at > since).map(|(n, c)| (c.updated_at, *n, c)).collect();
        changed.sort_by_key(|&(at, n, _)| (at, n));
        changed.into_iter().map(|(_, _, c)| c).collect()
    }

    /// A live contact's notes, calls and tickets, newest first; `None` if there is no contact.
    pub(crate) fn activities(&self, contact_id: &str) -> Option<Vec<Activity>> {
        self.contact(contact_id)?;
        let about = |c: &Option<String>| c.as_deref() == Some(contact_id);
        let notes = self.notes.values().filter(|r| r.value.contact_id == contact_id).map(|r| Activity {
            kind: "note",
            subject: r.value.body.lines().next().unwrap_or("").chars().take(NOTE_SUBJECT_CHARS).collect(),
            body: r.value.body.clone(),
            occurred_at: r.value.created_at,
            seq: r.seq,
        });
        let calls = self.calls.values().filter(|r| about(&r.value.contact_id)).map(|r| call_activity(&r.value, r.seq));
        let tickets = self.tickets.values().filter(|r| about(&r.value.contact_id)).map(|r| Activity {
            kind: "ticket",
            subject: r.value.title.clone(),
            body: r.value.description.clone().unwrap_or_default(),
            occurred_at: r.value.created_at,
            seq: r.seq,
        });
        let mut all: Vec<Activity> = notes.chain(calls).chain(tickets).collect();
        all.sort_by_key(|a| Reverse((a.occurred_at, a.seq)));
        Some(all)
    }

    fn require_contact(&self, contact_id: Option<&str>) -> Result<(), ApiError> {
        match contact_id {
            Some(id) if self.contact(id).is_none() => {
                Err(error::invalid_field("contact_id", format!("contact {id} does not exist")))
            }
            _ => Ok(()),
        }
    }

    // --- calls --------------------------------------------------------------------------

    pub(crate) fn create_call(&mut self, input: CallInput, now: i64) -> Result<Call, ApiError> {
        self.require_contact(input.contact_id.as_deref())?;
        let n = next(&mut self.last_call);
        let call = Call {
            id: format!("call_{n}"),
            external_id: input.external_id,
            contact_id: input.contact_id,
            direction: input.direction,
            from: input.from,
            to: input.to,
            started_at: input.started_at,
            duration: input.duration,
            status: input.status,
            notes: input.notes,
            created_at: now,
            updated_at: now,
        };
        let seq = next(&mut self.last_seq);
        self.calls.insert(n, Rec { seq, value: call.clone() });
        Ok(call)
    }

    /// Applies a partial update; 404 for an unknown call, 422 for an unknown contact.
    pub(crate) fn update_call(&mut self, id: &str, patch: CallPatch, now: i64) -> Result<Call, ApiError> {
        let n = parse_id(id, "call_").filter(|n| self.calls.contains_key(n)).ok_or_else(|| error::not_found("call"))?;
        if let input::Patch::Set(contact_id) = &patch.contact_id {
            self.require_contact(Some(contact_id))?;
        }
        let Some(Rec { value: call, .. }) = self.calls.get_mut(&n) else {
            return Err(error::not_found("call"));
        };
        call.external_id = patch.external_id.unwrap_or_else(|| call.external_id.clone());
        call.direction = patch.direction.unwrap_or(call.direction);
        call.started_at = patch.started_at.unwrap_or(call.started_at);
        call.status = patch.status.unwrap_or(call.status);
        patch.contact_id.apply(&mut call.contact_id);
        patch.from.apply(&mut call.from);
        patch.to.apply(&mut call.to);
        patch.duration.apply(&mut call.duration);
        patch.notes.apply(&mut call.notes);
        call.updated_at = now;
        Ok(call.clone())
    }

    /// Calls with this external id (all calls when `None`), in id order.
    pub(crate) fn find_calls(&self, external_id: Option<&str>) -> Vec<&Call> {
        self.calls.values().map(|r| &r.value).filter(|c| external_id.is_none_or(|x| c.external_id == x)).collect()
    }

    pub(crate) fn calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.values().map(|r| &r.value)
    }

    // --- notes and tickets --------------------------------------------------------------

    pub(crate) fn create_note(&mut self, input: NoteInput, author: &str, now: i64) -> Result<Note, ApiError> {
        self.require_contact(Some(&input.contact_id))?;
        let n = next(&mut self.last_note);
        let note = Note {
            id: format!("n_{n}"),
            contact_id: input.contact_id,
            body: input.body,
            author: author.to_owned(),
            created_at: now,
        };
        let seq = next(&mut self.last_seq);
        self.notes.insert(n, Rec { seq, value: note.clone() });
        Ok(note)
    }

    pub(crate) fn notes(&self) -> impl Iterator<Item = &Note> {
        self.notes.values().map(|r| &r.value)
    }

    pub(crate) fn create_ticket(&mut self, input: TicketInput, now: i64) -> Result<Ticket, ApiError> {
        self.require_contact(input.contact_id.as_deref())?;
        let n = next(&mut self.last_ticket);
        let ticket = Ticket {
            id: format!("t_{n}"),
            contact_id: input.contact_id,
            title: input.title,
            description: input.description,
            priority: input.priority,
            status: "open".to_owned(),
            created_at: now,
        };
        let seq = next(&mut self.last_seq);
        self.tickets.insert(n, Rec { seq, value: ticket.clone() });
        Ok(ticket)
    }

    pub(crate) fn tickets(&self) -> impl Iterator<Item = &Ticket> {
        self.tickets.values().map(|r| &r.value)
    }
}

/// Case-insensitive substring match on "first last", e-mail and company name; `term` is
/// already lower-cased.
fn matches_term(c: &Contact, term: &str) -> bool {
    let full_name = match &c.first_name {
        Some(first) => format!("{first} {}", c.last_name),
        None => c.last_name.clone(),
    };
    [Some(full_name.as_str()), c.email.as_deref(), c.company.as_deref()]
        .into_iter()
        .flatten()
        .any(|field| field.to_lowercase().contains(term))
}

/// A call on the timeline: `Inbound call from <from>` / `Outbound call to <to>` and a body of
/// `<status>[, <duration> s]` followed by the notes on a new line.
fn call_activity(call: &Call, seq: u64) -> Activity {
    let subject = match (call.direction, call.from.as_deref(), call.to.as_deref()) {
        (CallDirection::Inbound, Some(from), _) => format!("Inbound call from {from}"),
        (CallDirection::Outbound, _, Some(to)) => format!("Outbound call to {to}"),
        (CallDirection::Inbound, None, _) => "Inbound call".to_owned(),
        (CallDirection::Outbound, _, None) => "Outbound call".to_owned(),
    };
    let mut body = call.status.as_str().to_owned();
    if let Some(d) = call.duration {
        body.push_str(&format!(", {d} s"));
    }
    if let Some(notes) = &call.notes {
        body.push('\n');
        body.push_str(notes);
    }
    Activity { kind: "call", subject, body, occurred_at: call.started_at, seq }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_canonical() {
        assert_eq!(parse_id("c_7", "c_"), Some(7));
        assert_eq!(parse_id("c_07", "c_"), None);
        assert_eq!(parse_id("c_+7", "c_"), None);
        assert_eq!(parse_id("call_7", "c_"), None);
        assert_eq!(parse_id("c_", "c_"), None);
    }

    #[test]
    fn search_covers_full_name_email_and_company_case_insensitively() {
        let mut s = Store::default();
        let ada = s.insert_contact(NewContact::new("Lovelace").first_name("Ada").email("ada@engines.example"), 1);
        let grace = s.insert_contact(NewContact::new("Hopper").first_name("Grace").company("Navy Labs"), 1);
        let find = |s: &Store, t: &str| -> Vec<String> {
            s.find_contacts(Some(&t.to_lowercase()), None).into_iter().map(|c| c.id.clone()).collect()
        };
        assert_eq!(find(&s, "ADA LOVE"), vec![ada.clone()]);
        assert_eq!(find(&s, "engines.EX"), vec![ada]);
        assert_eq!(find(&s, "navy"), vec![grace]);
        assert!(find(&s, "nobody").is_empty());
    }

    #[test]
    fn changes_are_ordered_by_time_then_id() {
        let mut s = Store::default();
        let a = s.insert_contact(NewContact::new("A").updated_at(30), 0);
        let b = s.insert_contact(NewContact::new("B").updated_at(10), 0);
        let c = s.insert_contact(NewContact::new("C").updated_at(30), 0);
        let ids: Vec<&str> = s.changed_since(5).into_iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, [b.as_str(), a.as_str(), c.as_str()]);
        assert_eq!(s.changed_since(10).len(), 2);
    }
}
