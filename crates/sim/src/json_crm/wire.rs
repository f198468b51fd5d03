//! Response bodies. Typed structs rather than `serde_json::Value`, so keys come out in the
//! documented order (a `Value` map would sort them) and absent values are an explicit `null`.

use serde::Serialize;

use super::input::PageRequest;
use super::records::{Call, Contact, Note, Ticket};
use super::store::Activity;
use crate::support::rfc3339_utc;

#[derive(Serialize)]
pub(crate) struct Data<T> {
    pub(crate) data: T,
}

#[derive(Serialize)]
pub(crate) struct List<T> {
    pub(crate) data: Vec<T>,
    pub(crate) meta: Meta,
}

#[derive(Serialize, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) page: u64,
    pub(crate) per_page: u64,
    pub(crate) total: u64,
    pub(crate) has_more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next_since: Option<i64>,
}

/// Page `req.page` of `items`; a page past the end is empty (not an error).
pub(crate) fn paginate<T, U>(items: Vec<T>, req: PageRequest, map: impl Fn(T) -> U) -> List<U> {
    let total = u64::try_from(items.len()).unwrap_or(u64::MAX);
    let skip = req.page.saturating_sub(1).saturating_mul(req.per_page);
    let data = items
        .into_iter()
        .skip(usize::try_from(skip).unwrap_or(usize::MAX))
        .take(usize::try_from(req.per_page).unwrap_or(usize::MAX))
        .map(map)
        .collect();
    let has_more = skip.saturating_add(req.per_page) < total;
    List { data, meta: Meta { page: req.page, per_page: req.per_page, total, has_more, next_since: None } }
}

#[derive(Serialize)]
pub(crate) struct Company<'a> {
    name: &'a str,
}

#[derive(Serialize)]
pub(crate) struct ContactOut<'a> {
    id: &'a str,
    first_name: Option<&'a str>,
    last_name: &'a str,
    email: Option<&'a str>,
    phone: Option<&'a str>,
    company: Option<Company<'a>>,
    owner: &'a str,
    updated_at: i64,
}

impl<'a> From<&'a Contact> for ContactOut<'a> {
    fn from(c: &'a Contact) -> Self {
        ContactOut {
            id: &c.id,
            first_name: c.first_name.as_deref(),
            last_name: &c.last_name,
            email: c.email.as_deref(),
            phone: c.phone.as_deref(),
            company: c.company.as_deref().map(|name| Company { name }),
            owner: &c.owner,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Serialize)]
pub(crate) struct CallOut<'a> {
    id: &'a str,
    external_id: &'a str,
    contact_id: Option<&'a str>,
    direction: &'static str,
    from: Option<&'a str>,
    to: Option<&'a str>,
    started_at: i64,
    duration: Option<u64>,
    status: &'static str,
    notes: Option<&'a str>,
    created_at: i64,
    updated_at: i64,
}

impl<'a> From<&'a Call> for CallOut<'a> {
    fn from(c: &'a Call) -> Self {
        CallOut {
            id: &c.id,
            external_id: &c.external_id,
            contact_id: c.contact_id.as_deref(),
            direction: c.direction.as_str(),
            from: c.from.as_deref(),
            to: c.to.as_deref(),
            started_at: c.started_at,
            duration: c.duration,
            status: c.status.as_str(),
            notes: c.notes.as_deref(),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Serialize)]
pub(crate) struct NoteOut<'a> {
    id: &'a str,
    contact_id: &'a str,
    body: &'a str,
    author: &'a str,
    created_at: i64,
}

impl<'a> From<&'a Note> for NoteOut<'a> {
    fn from(n: &'a Note) -> Self {
        NoteOut { id: &n.id, contact_id: &n.contact_id, body: &n.body, author: &n.author, created_at: n.created_at }
    }
}

#[derive(Serialize)]
pub(crate) struct TicketOut<'a> {
    id: &'a str,
    contact_id: Option<&'a str>,
    title: &'a str,
    description: Option<&'a str>,
    priority: &'static str,
    status: &'a str,
    created_at: i64,
}

impl<'a> From<&'a Ticket> for TicketOut<'a> {
    fn from(t: &'a Ticket) -> Self {
        TicketOut {
            id: &t.id,
            contact_id: t.contact_id.as_deref(),
            title: &t.title,
            description: t.description.as_deref(),
            priority: t.priority.as_str(),
            status: &t.status,
            created_at: t.created_at,
        }
    }
}

#[derive(Serialize)]
pub(crate) struct ActivityOut {
    #[serde(rename = "type")]
    kind: &'static str,
    subject: String,
    body: String,
    occurred_at: String,
}

impl From<Activity> for ActivityOut {
    fn from(a: Activity) -> Self {
        ActivityOut { kind: a.kind, subject: a.subject, body: a.body, occurred_at: rfc3339_utc(a.occurred_at) }
    }
}

#[derive(Serialize)]
pub(crate) struct LoginOut {
    pub(crate) access_token: String,
    pub(crate) token_type: &'static str,
    pub(crate) expires_in: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_split_the_list_and_say_whether_more_follow() {
        let items: Vec<u32> = (1..=7).collect();
        let page = |page, per_page| paginate(items.clone(), PageRequest { page, per_page }, |i| i);
        assert_eq!(page(1, 3).data, [1, 2, 3]);
        assert!(page(1, 3).meta.has_more);
        assert_eq!(page(3, 3).data, [7]);
        assert!(!page(3, 3).meta.has_more);
        assert!(page(4, 3).data.is_empty());
        assert_eq!(page(u64::MAX, 100).meta.total, 7);
        assert!(!page(u64::MAX, 100).meta.has_more);
    }
}
