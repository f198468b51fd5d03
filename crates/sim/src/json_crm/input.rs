//! Request bodies and query strings, parsed into typed inputs. Every rejection names the field it
//! is about, because that is what a template author needs to fix a mapping. Unknown body fields
//! are ignored, as most REST CRMs do.

use serde_json::{Map, Value};

use super::error::{self, ApiError};
use super::records::{CallDirection, CallStatus, TicketPriority};

/// A JSON object request body.
#[derive(Debug)]
pub(crate) struct Object(Map<String, Value>);

enum Slot<'a> {
    Absent,
    Null,
    Value(&'a Value),
}

/// A field of a partial update: absent keeps the value, `null` (or `""`) clears it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Patch<T> {
    Keep,
    Clear,
    Set(T),
}

impl<T> Patch<T> {
    pub(crate) fn apply(self, target: &mut Option<T>) {
        match self {
            Patch::Keep => {}
            Patch::Clear => *target = None,
            Patch::Set(v) => *target = Some(v),
        }
    }
}

impl Object {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Object(map)),
            Ok(_) => Err(error::not_an_object()),
            Err(e) => Err(error::invalid_json(e)),
        }
    }

    fn slot(&self, name: &str) -> Slot<'_> {
        match self.0.get(name) {
            None => Slot::Absent,
            Some(Value::Null) => Slot::Null,
            Some(v) => Slot::Value(v),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// A string field; absent, `null` and blank strings are all "not given", because clients
    /// that map empty form fields send `""` for them.
    fn text(&self, name: &'static str) -> Result<Option<String>, ApiError> {
        match self.slot(name) {
            Slot::Absent | Slot::Null => Ok(None),
            Slot::Value(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Slot::Value(Value::String(s)) => Ok(Some(s.clone())),
            Slot::Value(_) => Err(error::invalid_field(name, format!("{name} must be a string"))),
        }
    }

    fn required_text(&self, name: &'static str) -> Result<String, ApiError> {
        self.text(name)?.ok_or_else(|| error::invalid_field(name, format!("{name} is required")))
    }

    /// A non-negative integer field (Unix seconds, durations).
    fn count(&self, name: &'static str) -> Result<Option<u64>, ApiError> {
        match self.slot(name) {
            Slot::Absent | Slot::Null => Ok(None),
            Slot::Value(v) => {
                v.as_u64().map(Some).ok_or_else(|| error::invalid_field(name, format!("{name} must be an integer ≥ 0")))
            }
        }
    }

    fn unix_secs(&self, name: &'static str) -> Result<Option<i64>, ApiError> {
        let Some(n) = self.count(name)? else { return Ok(None) };
        i64::try_from(n).map(Some).map_err(|_| error::invalid_field(name, format!("{name} is out of range")))
    }

    /// A field of a partial update; `null` or `""` clear it.
    fn patch<T>(
        &self,
        name: &'static str,
        read: impl Fn(&Self, &'static str) -> Result<Option<T>, ApiError>,
    ) -> Result<Patch<T>, ApiError> {
        if !self.has(name) {
            return Ok(Patch::Keep);
        }
        Ok(read(self, name)?.map_or(Patch::Clear, Patch::Set))
    }

    /// A field of a partial update that cannot be cleared.
    fn patch_required<T>(
        &self,
        name: &'static str,
        read: impl Fn(&Self, &'static str) -> Result<Option<T>, ApiError>,
    ) -> Result<Option<T>, ApiError> {
        match self.patch(name, read)? {
            Patch::Keep => Ok(None),
            Patch::Clear => Err(error::invalid_field(name, format!("{name} cannot be empty"))),
            Patch::Set(v) => Ok(Some(v)),
        }
    }
}

fn direction(o: &Object, name: &'static str) -> Result<Option<CallDirection>, ApiError> {
    let Some(s) = o.text(name)? else { return Ok(None) };
    CallDirection::parse(&s)
        .map(Some)
        .ok_or_else(|| error::invalid_field(name, format!("{name} must be \"inbound\" or \"outbound\"")))
}

fn call_status(o: &Object, name: &'static str) -> Result<Option<CallStatus>, ApiError> {
    let Some(s) = o.text(name)? else { return Ok(None) };
    CallStatus::parse(&s).map(Some).ok_or_else(|| {
        let known: Vec<&str> = CallStatus::ALL.iter().map(|s| s.as_str()).collect();
        error::invalid_field(name, format!("{name} must be one of {}", known.join(", ")))
    })
}

fn email(o: &Object, name: &'static str) -> Result<Option<String>, ApiError> {
    let Some(s) = o.text(name)? else { return Ok(None) };
    if is_plausible_email(&s) {
        Ok(Some(s))
    } else {
        Err(error::invalid_field(name, format!("{name} is not a valid e-mail address")))
    }
}

/// The documented rule: exactly one `@`, a non-empty local part, a domain of two or more
/// non-empty dot-separated labels of letters, digits and hyphens, and no whitespace anywhere.
pub(crate) fn is_plausible_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let label_ok = |l: &str| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-');
    !local.is_empty()
        && !local.chars().any(|c| c.is_whitespace() || c.is_control())
        && domain.split('.').count() >= 2
        && domain.split('.').all(label_ok)
}

#[derive(Debug)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
}

impl TryFrom<&Object> for Credentials {
    type Error = ApiError;

    fn try_from(o: &Object) -> Result<Self, ApiError> {
        Ok(Credentials { username: o.required_text("username")?, password: o.required_text("password")? })
    }
}

#[derive(Debug)]
pub(crate) struct ContactInput {
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: String,
    pub(crate) email: Option<String>,
    pub(crate) phone: Option<String>,
    pub(crate) company: Option<String>,
}

impl TryFrom<&Object> for ContactInput {
    type Error = ApiError;

    fn try_from(o: &Object) -> Result<Self, ApiError> {
        Ok(ContactInput {
            first_name: o.text("first_name")?,
            last_name: o.required_text("last_name")?,
            email: email(o, "email")?,
            phone: o.text("phone")?,
            company: o.text("company")?,
        })
    }
}

#[derive(Debug)]
pub(crate) struct CallInput {
    pub(crate) external_id: String,
    pub(crate) contact_id: Option<String>,
    pub(crate) direction: CallDirection,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) started_at: i64,
    pub(crate) duration: Option<u64>,
    pub(crate) status: CallStatus,
    pub(crate) notes: Option<String>,
}

impl TryFrom<&Object> for CallInput {
    type Error = ApiError;

    fn try_from(o: &Object) -> Result<Self, ApiError> {
        let required = |name: &'static str| error::invalid_field(name, format!("{name} is required"));
        Ok(CallInput {
            external_id: o.required_text("external_id")?,
            contact_id: o.text("contact_id")?,
            direction: direction(o, "direction")?.ok_or_else(|| required("direction"))?,
            from: o.text("from")?,
            to: o.text("to")?,
            started_at: o.unix_secs("started_at")?.ok_or_else(|| required("started_at"))?,
            duration: o.count("duration")?,
            status: call_status(o, "status")?.ok_or_else(|| required("status"))?,
            notes: o.text("notes")?,
        })
    }
}

/// `PUT /calls/{id}`: only the fields present change.
#[derive(Debug)]
pub(crate) struct CallPatch {
    pub(crate) external_id: Option<String>,
    pub(crate) contact_id: Patch<String>,
    pub(crate) direction: Option<CallDirection>,
    pub(crate) from: Patch<String>,
    pub(crate) to: Patch<String>,
    pub(crate) started_at: Option<i64>,
    pub(crate) duration: Patch<u64>,
    pub(crate) status: Option<CallStatus>,
    pub(crate) notes: Patch<String>,
}

impl TryFrom<&Object> for CallPatch {
    type Error = ApiError;

    fn try_from(o: &Object) -> Result<Self, ApiError> {
        Ok(CallPatch {
            external_id: o.patch_required("external_id", Object::text)?,
            contact_id: o.patch("contact_id", Object::text)?,
            direction: o.patch_required("direction", direction)?,
            from: o.patch("from", Object::text)?,
            to: o.patch("to", Object::text)?,
            started_at: o.patch_required("started_at", Object::unix_secs)?,
            duration: o.patch("duration", Object::count)?,
            status: o.patch_required("status", call_status)?,
            notes: o.patch("notes", Object::text)?,
        })
    }
}

#[derive(Debug)]
pub(crate) struct NoteInput {
    pub(crate) contact_id: String,
    pub(crate) body: String,
}

impl TryFrom<&Object> for NoteInput {
    type Error = ApiError;

    fn try_from(o: &Object) -> Result<Self, ApiError> {
        Ok(NoteInput { contact_id: o.required_text("contact_id")?, body: o.required_text("body")? })
    }
}

#[derive(Debug)]
pub(crate) struct TicketInput {
    pub(crate) contact_id: Option<String>,
    pub(crate) title: String,
    pub(crate) description: Option<String>,
    pub(crate) priority: TicketPriority,
}

impl TryFrom<&Object> for TicketInput {
    type Error = ApiError;

    fn try_from(o: &Object) -> Result<Self, ApiError> {
        let priority = o.required_text("priority")?;
        let priority = TicketPriority::parse(&priority)
            .ok_or_else(|| error::invalid_field("priority", "priority must be one of low, normal, high, urgent"))?;
        Ok(TicketInput {
            contact_id: o.text("contact_id")?,
            title: o.required_text("title")?,
            description: o.text("description")?,
            priority,
        })
    }
}

/// A parsed query string (the last occurrence of a name wins).
#[derive(Debug, Default)]
pub(crate) struct Query(std::collections::HashMap<String, String>);

pub(crate) const DEFAULT_PER_PAGE: u64 = 25;
pub(crate) const MAX_PER_PAGE: u64 = 100;

/// `page` (≥ 1, default 1) and `per_page` (1..=100, default 25).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageRequest {
    pub(crate) page: u64,
    pub(crate) per_page: u64,
}

impl Query {
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        Query(url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned().collect())
    }

    /// A parameter, `None` when absent or blank.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn integer(&self, name: &'static str, what: &str) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.get(name) else { return Ok(None) };
        v.parse::<u64>().map(Some).map_err(|_| error::invalid_field(name, format!("{name} must be {what}")))
    }

    pub(crate) fn page(&self) -> Result<PageRequest, ApiError> {
        let page = self.integer("page", "an integer ≥ 1")?.unwrap_or(1);
        if page < 1 {
            return Err(error::invalid_field("page", "page must be an integer ≥ 1"));
        }
        let per_page = self.integer("per_page", "an integer from 1 to 100")?.unwrap_or(DEFAULT_PER_PAGE);
        if !(1..=MAX_PER_PAGE).contains(&per_page) {
            return Err(error::invalid_field("per_page", "per_page must be an integer from 1 to 100"));
        }
        Ok(PageRequest { page, per_page })
    }

    /// Refuses any parameter but `known`: a misspelt filter would otherwise be ignored and the
    /// whole list come back, which a client looking one record up takes for its match.
    pub(crate) fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        let mut unknown: Vec<&str> = self.0.keys().map(String::as_str).filter(|k| !known.contains(k)).collect();
        unknown.sort_unstable();
        match unknown.first() {
            Some(name) => Err(error::invalid_field(
                (*name).to_owned(),
                format!("unknown query parameter {name:?}; this endpoint takes {}", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    /// A filter that, when present, must have a value: blank would mean "no filter" and list
    /// everything.
    pub(crate) fn filter(&self, name: &'static str) -> Result<Option<&str>, ApiError> {
        match (self.0.contains_key(name), self.get(name)) {
            (true, None) => {
                Err(error::invalid_field(name, format!("{name} must not be blank; leave it out to list all")))
            }
            (_, value) => Ok(value),
        }
    }

    /// `since` for the changes feed: Unix seconds, default 0.
    pub(crate) fn since(&self) -> Result<i64, ApiError> {
        let Some(v) = self.get("since") else { return Ok(0) };
        v.parse::<i64>().map_err(|_| error::invalid_field("since", "since must be an integer (Unix seconds)"))
    }

    /// The digits a phone lookup matches on: the last nine of those given.
    pub(crate) fn phone_key(&self) -> Result<Option<String>, ApiError> {
        let Some(v) = self.get("phone") else { return Ok(None) };
        let digits = digits(v);
        if digits.is_empty() {
            return Err(error::invalid_field("phone", "phone must contain digits"));
        }
        Ok(Some(last_chars(&digits, PHONE_MATCH_DIGITS).to_owned()))
    }
}

/// How many trailing digits a phone lookup compares: enough to identify a subscriber, few enough
/// to ignore country codes and trunk prefixes (`+84 912…` vs `0912…`).
pub(crate) const PHONE_MATCH_DIGITS: usize = 9;

pub(crate) fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// The last `n` characters of an ASCII string.
fn last_chars(s: &str, n: usize) -> &str {
    &s[s.len().saturating_sub(n)..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Object {
        Object::parse(v.to_string().as_bytes()).expect("object")
    }

    #[test]
    fn email_rule() {
        for ok in ["a@b.co", "ada.lovelace+crm@mail.example.com", "zoë@müller.de"] {
            assert!(is_plausible_email(ok), "{ok}");
        }
        for bad in ["", "plain", "@x.com", "a@", "a@b", "a@b..com", "a b@c.com", "a@b@c.com", "a@-b_.com", "a@.com"] {
            assert!(!is_plausible_email(bad), "{bad}");
        }
    }

    #[test]
    fn blank_strings_are_not_given_and_wrong_types_name_the_field() {
        let o = obj(serde_json::json!({"last_name": "X", "email": "", "phone": 5}));
        assert_eq!(ContactInput::try_from(&o).err().and_then(|e| e.field).as_deref(), Some("phone"));
        let o = obj(serde_json::json!({"last_name": "X", "email": "", "first_name": null}));
        let input = ContactInput::try_from(&o).expect("valid");
        assert_eq!((input.email, input.first_name), (None, None));
    }

    #[test]
    fn patches_distinguish_absent_null_and_value() {
        let o = obj(serde_json::json!({"notes": null, "duration": 42, "status": "completed"}));
        let p = CallPatch::try_from(&o).expect("patch");
        assert_eq!(p.notes, Patch::Clear);
        assert_eq!(p.duration, Patch::Set(42));
        assert_eq!(p.from, Patch::Keep);
        assert_eq!(p.status, Some(CallStatus::Completed));
        let o = obj(serde_json::json!({"status": null}));
        assert_eq!(CallPatch::try_from(&o).err().and_then(|e| e.field).as_deref(), Some("status"));
    }

    #[test]
    fn non_objects_and_garbage_are_invalid_json() {
        assert_eq!(Object::parse(b"[1]").err().map(|e| e.code), Some("invalid_json"));
        assert_eq!(Object::parse(b"{").err().map(|e| e.code), Some("invalid_json"));
    }

    #[test]
    fn paging_defaults_and_bounds() {
        assert_eq!(Query::parse(None).page().ok(), Some(PageRequest { page: 1, per_page: 25 }));
        assert_eq!(Query::parse(Some("page=3&per_page=100")).page().ok(), Some(PageRequest { page: 3, per_page: 100 }));
        for (q, field) in
            [("per_page=101", "per_page"), ("per_page=0", "per_page"), ("page=0", "page"), ("page=-1", "page")]
        {
            assert_eq!(Query::parse(Some(q)).page().err().and_then(|e| e.field).as_deref(), Some(field), "{q}");
        }
    }

    #[test]
    fn unknown_parameters_and_blank_filters_are_refused() {
        let q = Query::parse(Some("external_id=pbx-1&page=2&per_page=5"));
        assert!(q.only(&["external_id", "page", "per_page"]).is_ok());
        assert_eq!(q.filter("external_id").ok().flatten(), Some("pbx-1"));
        let q = Query::parse(Some("externalId=pbx-1&zeta=1"));
        assert_eq!(q.only(&["external_id"]).err().and_then(|e| e.field).as_deref(), Some("externalId"));
        let q = Query::parse(Some("external_id=%20"));
        assert_eq!(q.filter("external_id").err().and_then(|e| e.field).as_deref(), Some("external_id"));
        assert_eq!(Query::parse(None).filter("external_id").ok().flatten(), None);
    }

    #[test]
    fn phone_keys_keep_the_last_nine_digits() {
        assert_eq!(
            Query::parse(Some("phone=%2B84%20912%20345%20678")).phone_key().ok().flatten().as_deref(),
            Some("912345678")
        );
        assert_eq!(Query::parse(Some("phone=5678")).phone_key().ok().flatten().as_deref(), Some("5678"));
        assert_eq!(Query::parse(Some("phone=abc")).phone_key().err().and_then(|e| e.field).as_deref(), Some("phone"));
    }
}
