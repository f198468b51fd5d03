//! Calls as a contact-centre platform reports them: the events it posts (`call.started`,
//! `call.answered`, `call.ended`, `call.finalized`, `sms.sent`, `sms.received`), read and
//! validated at the edge, and the state of one call they add up to.
//!
//! Platforms retry, duplicate and reorder their webhooks (a hang-up before the answer, the
//! final record half a minute after the hang-up), so a call's state is a merge: its stage only
//! moves forward (ringing < answered < ended < finalized), an event of a later or equal stage
//! overwrites the facts it carries, and an event of an earlier stage only fills facts still
//! missing. Whatever the order, the same set of events gives the same state.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crm::{CallDirection, CallOutcome};
use crate::phone::{PhoneError, PhoneNumber};
use crate::tenant::PhoneRegion;
use crate::validation::FieldError;

/// The platform's id of a call: 1 to 200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(String);

impl CallId {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let chars = raw.chars().count();
        if raw.trim().is_empty() {
            return Err(FieldError::new(field, "is required"));
        }
        if chars > Self::MAX_CHARS {
            return Err(FieldError::new(
                field,
                format!("must be at most {} characters (got {chars})", Self::MAX_CHARS),
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(FieldError::new(field, "must not contain control characters"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a call stands. Later stages never go back to earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallPhase {
    Ringing,
    Answered,
    Ended,
    /// The platform's last word: final duration, recording, disposition.
    Finalized,
}

impl CallPhase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ringing => "ringing",
            Self::Answered => "answered",
            Self::Ended => "ended",
            Self::Finalized => "finalized",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "ringing" => Some(Self::Ringing),
            "answered" => Some(Self::Answered),
            "ended" => Some(Self::Ended),
            "finalized" => Some(Self::Finalized),
            _ => None,
        }
    }

    /// The CRM log this phase asks for: none while ringing, a pre-log once answered, the
    /// final log once over.
    pub fn log_stage(&self) -> Option<crate::crm::CallStage> {
        match self {
            Self::Ringing => None,
            Self::Answered => Some(crate::crm::CallStage::Answered),
            Self::Ended | Self::Finalized => Some(crate::crm::CallStage::Ended),
        }
    }
}

/// How a call ended: HubSpot's `callEndStatus` set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Completed,
    Failed,
    Canceled,
    Busy,
    NoAnswer,
    Rejected,
    Missed,
}

impl EndReason {
    pub const NAMES: [&'static str; 7] = ["completed", "failed", "canceled", "busy", "no_answer", "rejected", "missed"];

    /// Accepts HubSpot's spelling (`NO_ANSWER`) as well as ours (`no_answer`).
    fn parse(raw: &str) -> Option<Self> {
        match raw.to_ascii_lowercase().as_str() {
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            "canceled" | "cancelled" => Some(Self::Canceled),
            "busy" => Some(Self::Busy),
            "no_answer" => Some(Self::NoAnswer),
            "rejected" => Some(Self::Rejected),
            "missed" => Some(Self::Missed),
            _ => None,
        }
    }

    pub fn outcome(&self) -> CallOutcome {
        match self {
            Self::Completed => CallOutcome::Completed,
            Self::Failed => CallOutcome::Failed,
            Self::Canceled => CallOutcome::Canceled,
            Self::Busy => CallOutcome::Busy,
            Self::NoAnswer => CallOutcome::NoAnswer,
            Self::Rejected => CallOutcome::Rejected,
            Self::Missed => CallOutcome::Missed,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl Agent {
    /// How a log names the agent: the name, else the e-mail, else the id.
    pub fn label(&self) -> Option<String> {
        match (&self.name, &self.email, &self.id) {
            (Some(name), Some(email), _) => Some(format!("{name} <{email}>")),
            (Some(name), None, _) => Some(name.clone()),
            (None, Some(email), _) => Some(email.clone()),
            (None, None, id) => id.clone(),
        }
    }
}

/// What is known about a call. Every fact is optional: each event carries some of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallFacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<CallDirection>,
    /// As sent; `anonymous` (or empty) for a withheld number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Agent>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

impl CallFacts {
    /// `newer`'s facts over these (`overwrite`), or only where these have none.
    fn merge(&mut self, newer: &CallFacts, overwrite: bool) -> bool {
        let before = self.clone();
        fn take<T: Clone>(slot: &mut Option<T>, value: &Option<T>, overwrite: bool) {
            if value.is_some() && (overwrite || slot.is_none()) {
                slot.clone_from(value);
            }
        }
        take(&mut self.direction, &newer.direction, overwrite);
        take(&mut self.from, &newer.from, overwrite);
        take(&mut self.to, &newer.to, overwrite);
        take(&mut self.agent, &newer.agent, overwrite);
        take(&mut self.started_at, &newer.started_at, overwrite);
        take(&mut self.answered_at, &newer.answered_at, overwrite);
        take(&mut self.ended_at, &newer.ended_at, overwrite);
        take(&mut self.duration_secs, &newer.duration_secs, overwrite);
        take(&mut self.end_reason, &newer.end_reason, overwrite);
        take(&mut self.recording_url, &newer.recording_url, overwrite);
        take(&mut self.disposition, &newer.disposition, overwrite);
        take(&mut self.notes, &newer.notes, overwrite);
        *self != before
    }

    /// The other party's number: the caller of an inbound call, the callee of an outbound one.
    pub fn counterpart(&self) -> Option<&str> {
        match self.direction.unwrap_or(CallDirection::Inbound) {
            CallDirection::Inbound => self.from.as_deref(),
            CallDirection::Outbound => self.to.as_deref(),
        }
    }

    /// The duration to log: the platform's, else what the timestamps say.
    pub fn duration(&self) -> Option<u32> {
        self.duration_secs.or_else(|| {
            let start = self.answered_at.or(self.started_at)?;
            u32::try_from(self.ended_at? - start).ok()
        })
    }
}

/// An event the platform posted, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Call { call_id: CallId, phase: CallPhase, facts: CallFacts },
    Sms(SmsMessage),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsDirection {
    Sent,
    Received,
}

/// A text message sent to or received from a contact, to be kept as a note on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsMessage {
    pub message_id: CallId,
    pub direction: SmsDirection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Agent>,
    /// The call the message belongs to, when the platform says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<CallId>,
}

impl SmsMessage {
    /// The contact's number: the recipient of a sent message, the sender of a received one.
    pub fn counterpart(&self) -> Option<&str> {
        match self.direction {
            SmsDirection::Sent => self.to.as_deref(),
            SmsDirection::Received => self.from.as_deref(),
        }
    }
}

pub const EVENT_TYPES: [&str; 6] =
    ["call.started", "call.answered", "call.ended", "call.finalized", "sms.sent", "sms.received"];

const MAX_TEXT_CHARS: usize = 20_000;
const MAX_SHORT_CHARS: usize = 200;
const MAX_URL_CHARS: usize = 2_000;

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("unknown event type {0:?}; expected one of {types}", types = EVENT_TYPES.join(", "))]
    UnknownType(String),
    #[error(transparent)]
    Field(#[from] FieldError),
}

impl Event {
    /// Reads a posted event: `{"type": "call.started", "call": {…}}` or
    /// `{"type": "sms.sent", "sms": {…}}`. Unknown fields are ignored; numbers are checked
    /// against the tenant's region so that a number nobody can dial is refused now, not when
    /// the log is written.
    pub fn parse(body: &Value, region: Option<PhoneRegion>) -> Result<Self, EventError> {
        let kind = match body.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            Some(_) => return Err(FieldError::new("type", "must be a string").into()),
            None => return Err(FieldError::new("type", "is required").into()),
        };
        let phase = match kind {
            "call.started" => CallPhase::Ringing,
            "call.answered" => CallPhase::Answered,
            "call.ended" => CallPhase::Ended,
            "call.finalized" => CallPhase::Finalized,
            "sms.sent" => return Ok(Self::Sms(sms(body, SmsDirection::Sent, region)?)),
            "sms.received" => return Ok(Self::Sms(sms(body, SmsDirection::Received, region)?)),
            other => return Err(EventError::UnknownType(other.chars().take(100).collect())),
        };
        let call = object(body, "call")?;
        let fields = Fields { object: call, prefix: "call" };
        let call_id = CallId::parse("call.call_id", &fields.id("call_id")?)?;
        let direction = match fields.string("direction", MAX_SHORT_CHARS)?.as_deref() {
            None => None,
            Some("inbound") => Some(CallDirection::Inbound),
            Some("outbound") => Some(CallDirection::Outbound),
            Some(_) => return Err(fields.error("direction", "must be inbound or outbound").into()),
        };
        let end_reason = match fields.string("end_reason", MAX_SHORT_CHARS)? {
            None => None,
            Some(raw) => Some(EndReason::parse(&raw).ok_or_else(|| {
                fields.error("end_reason", format!("must be one of {}", EndReason::NAMES.join(", ")))
            })?),
        };
        let recording_url = fields.string("recording_url", MAX_URL_CHARS)?;
        if let Some(url) = &recording_url {
            let https = url::Url::parse(url).is_ok_and(|u| u.scheme() == "https" && u.host().is_some());
            if !https {
                return Err(fields.error("recording_url", "must be an https:// URL").into());
            }
        }
        let duration_secs = match call.get("duration_secs") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                value
                    .as_u64()
                    .and_then(|d| u32::try_from(d).ok())
                    .ok_or_else(|| fields.error("duration_secs", "must be a whole number of seconds, 0 or more"))?,
            ),
        };
        let facts = CallFacts {
            direction,
            from: fields.number("from", region)?,
            to: fields.number("to", region)?,
            agent: agent(&fields)?,
            started_at: fields.time("started_at")?,
            answered_at: fields.time("answered_at")?,
            ended_at: fields.time("ended_at")?,
            duration_secs,
            end_reason,
            recording_url,
            disposition: fields.string("disposition", MAX_SHORT_CHARS)?,
            notes: fields.string("notes", MAX_TEXT_CHARS)?,
        };
        Ok(Self::Call { call_id, phase, facts })
    }
}

fn sms(body: &Value, direction: SmsDirection, region: Option<PhoneRegion>) -> Result<SmsMessage, EventError> {
    let object = object(body, "sms")?;
    let fields = Fields { object, prefix: "sms" };
    let message_id = CallId::parse("sms.message_id", &fields.id("message_id")?)?;
    let text = fields.string("text", MAX_TEXT_CHARS)?.filter(|t| !t.trim().is_empty());
    let text = text.ok_or_else(|| fields.error("text", "is required"))?;
    let call_id = match fields.string("call_id", CallId::MAX_CHARS + 1)? {
        None => None,
        Some(raw) => Some(CallId::parse("sms.call_id", &raw)?),
    };
    let message = SmsMessage {
        message_id,
        direction,
        from: fields.number("from", region)?,
        to: fields.number("to", region)?,
        text,
        at: fields.time("at")?,
        agent: agent(&fields)?,
        call_id,
    };
    if message.counterpart().is_none() {
        let which = match direction {
            SmsDirection::Sent => "to",
            SmsDirection::Received => "from",
        };
        return Err(fields.error(which, "is required: it is the contact the note belongs to").into());
    }
    Ok(message)
}

fn object<'a>(body: &'a Value, key: &str) -> Result<&'a serde_json::Map<String, Value>, FieldError> {
    match body.get(key) {
        Some(Value::Object(object)) => Ok(object),
        Some(_) => Err(FieldError::new(key, "must be an object")),
        None => Err(FieldError::new(key, "is required")),
    }
}

fn agent(fields: &Fields<'_>) -> Result<Option<Agent>, FieldError> {
    let Some(raw) = fields.object.get("agent").filter(|v| !v.is_null()) else { return Ok(None) };
    let Value::Object(object) = raw else { return Err(fields.error("agent", "must be an object")) };
    let inner = Fields { object, prefix: "agent" };
    let prefixed = |e: FieldError| FieldError::new(format!("{}.{}", fields.prefix, e.field), e.message);
    let agent = Agent {
        id: inner.id_opt("id").map_err(prefixed)?,
        name: inner.string("name", MAX_SHORT_CHARS).map_err(prefixed)?,
        email: inner.string("email", MAX_SHORT_CHARS).map_err(prefixed)?,
    };
    Ok((agent != Agent::default()).then_some(agent))
}

/// Reads the fields of one object, naming them `prefix.field` in errors.
struct Fields<'a> {
    object: &'a serde_json::Map<String, Value>,
    prefix: &'static str,
}

impl Fields<'_> {
    fn error(&self, field: &str, message: impl Into<String>) -> FieldError {
        FieldError::new(format!("{}.{field}", self.prefix), message)
    }

    /// A trimmed string of at most `max` characters; empty counts as absent.
    fn string(&self, field: &str, max: usize) -> Result<Option<String>, FieldError> {
        match self.object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let trimmed = s.trim();
                let chars = trimmed.chars().count();
                if chars > max {
                    return Err(self.error(field, format!("must be at most {max} characters (got {chars})")));
                }
                Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
            }
            Some(_) => Err(self.error(field, "must be a string")),
        }
    }

    /// An id, which platforms send as a string or a number.
    fn id(&self, field: &str) -> Result<String, FieldError> {
        self.id_opt(field)?.ok_or_else(|| self.error(field, "is required"))
    }

    fn id_opt(&self, field: &str) -> Result<Option<String>, FieldError> {
        match self.object.get(field) {
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            _ => self.string(field, usize::MAX),
        }
    }

    /// A number as sent, checked: a withheld caller id (`anonymous`, empty) is kept as
    /// `anonymous`; anything else must parse as a phone number.
    fn number(&self, field: &str, region: Option<PhoneRegion>) -> Result<Option<String>, FieldError> {
        let raw = match self.object.get(field) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(self.error(field, "must be a string")),
        };
        if raw.chars().count() > 64 {
            return Err(self.error(field, "must be at most 64 characters"));
        }
        match PhoneNumber::parse(&raw, region) {
            Ok(_) => Ok(Some(raw)),
            Err(PhoneError::Anonymous | PhoneError::Empty) => Ok(Some(ANONYMOUS.to_owned())),
            Err(e) => Err(self.error(field, format!("{raw:?} is not a phone number: {e}"))),
        }
    }

    /// RFC 3339 (`2026-12-01T09:30:00+07:00`) or Unix seconds.
    fn time(&self, field: &str) -> Result<Option<i64>, FieldError> {
        match self.object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .filter(|s| (0..=MAX_UNIX_SECS).contains(s))
                .map(Some)
                .ok_or_else(|| self.error(field, "must be Unix seconds or an RFC 3339 time")),
            Some(Value::String(s)) => crate::time::parse_rfc3339(s)
                .map(Some)
                .ok_or_else(|| self.error(field, format!("{s:?} is not an RFC 3339 time (2026-12-01T09:30:00Z)"))),
            Some(_) => Err(self.error(field, "must be Unix seconds or an RFC 3339 time")),
        }
    }
}

/// What a withheld caller id is stored as.
pub const ANONYMOUS: &str = "anonymous";

/// 9999-12-31T23:59:59Z.
const MAX_UNIX_SECS: i64 = 253_402_300_799;

/// The state of one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallState {
    pub phase: CallPhase,
    pub facts: CallFacts,
}

/// What an event did to its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventEffect {
    /// The call's stage moved forward, or the event brought facts it did not have.
    Applied,
    /// Nothing new: a repeat of what the call already knew.
    Duplicate,
    /// An earlier stage than the call's: the stage stays; only missing facts were taken.
    Stale,
}

impl EventEffect {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Stale => "stale",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "applied" => Some(Self::Applied),
            "duplicate" => Some(Self::Duplicate),
            "stale" => Some(Self::Stale),
            _ => None,
        }
    }
}

impl CallState {
    /// The state after an event; `changed` says whether anything a log shows changed.
    pub fn apply(existing: Option<&CallState>, phase: CallPhase, facts: &CallFacts) -> (CallState, EventEffect, bool) {
        let Some(current) = existing else {
            return (CallState { phase, facts: facts.clone() }, EventEffect::Applied, true);
        };
        let mut next = current.clone();
        if phase < current.phase {
            let changed = next.facts.merge(facts, false);
            return (next, EventEffect::Stale, changed);
        }
        let advanced = phase > current.phase;
        next.phase = phase;
        let merged = next.facts.merge(facts, true);
        let changed = advanced || merged;
        (next, if changed { EventEffect::Applied } else { EventEffect::Duplicate }, changed)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vn() -> Option<PhoneRegion> {
        Some(PhoneRegion::parse("VN").unwrap())
    }

    fn call_event(kind: &str, call: Value) -> Result<Event, EventError> {
        Event::parse(&json!({"type": kind, "call": call}), vn())
    }

    fn facts(event: Event) -> (CallPhase, CallFacts) {
        match event {
            Event::Call { phase, facts, .. } => (phase, facts),
            Event::Sms(_) => panic!("not a call event"),
        }
    }

    #[test]
    fn reads_a_full_call_event_and_ignores_unknown_fields() {
        let event = call_event(
            "call.finalized",
            json!({
                "call_id": "c-1", "direction": "inbound", "from": "+84 912 345 678", "to": "1900 1234",
                "agent": {"id": 7, "name": "Lan", "email": "lan@example.com"},
                "started_at": "2026-12-01T09:30:00+07:00", "answered_at": 1_796_092_210,
                "ended_at": "2026-12-01T02:35:00Z", "duration_secs": 290, "end_reason": "NO_ANSWER",
                "recording_url": "https://rec.example.com/1.mp3", "disposition": "sale", "notes": " n ",
                "vendor_extra": {"whatever": true}
            }),
        )
        .unwrap();
        let (phase, facts) = facts(event);
        assert_eq!(phase, CallPhase::Finalized);
        assert_eq!(facts.started_at, Some(1_796_092_200));
        assert_eq!(facts.ended_at, Some(1_796_092_500));
        assert_eq!(facts.end_reason, Some(EndReason::NoAnswer));
        assert_eq!(facts.agent.as_ref().and_then(|a| a.id.as_deref()), Some("7"));
        assert_eq!(facts.notes.as_deref(), Some("n"));
        assert_eq!(facts.counterpart(), Some("+84 912 345 678"));
    }

    #[test]
    fn refuses_what_cannot_be_logged_naming_the_field() {
        let err = |kind: &str, call: Value| match call_event(kind, call).unwrap_err() {
            EventError::Field(e) => e.field,
            EventError::UnknownType(t) => format!("type {t}"),
        };
        assert_eq!(err("call.rang", json!({"call_id": "1"})), "type call.rang");
        assert_eq!(err("call.started", json!({})), "call.call_id");
        assert_eq!(err("call.started", json!({"call_id": "x".repeat(201)})), "call.call_id");
        assert!(call_event("call.started", json!({"call_id": "x".repeat(200)})).is_ok());
        assert_eq!(err("call.started", json!({"call_id": "1", "from": "12ab!"})), "call.from");
        assert_eq!(err("call.started", json!({"call_id": "1", "direction": "sideways"})), "call.direction");
        assert_eq!(
            err("call.ended", json!({"call_id": "1", "recording_url": "http://x.example/r"})),
            "call.recording_url"
        );
        assert_eq!(err("call.ended", json!({"call_id": "1", "end_reason": "exploded"})), "call.end_reason");
        assert_eq!(err("call.ended", json!({"call_id": "1", "ended_at": "yesterday"})), "call.ended_at");
        assert_eq!(err("call.ended", json!({"call_id": "1", "duration_secs": -4})), "call.duration_secs");
        assert_eq!(err("call.ended", json!({"call_id": "1", "agent": {"name": 5}})), "call.agent.name");
        assert!(matches!(
            Event::parse(&json!({"call": {"call_id": "1"}}), vn()),
            Err(EventError::Field(FieldError { field, .. })) if field == "type"
        ));
    }

    #[test]
    fn withheld_numbers_are_anonymous_not_errors() {
        for raw in ["anonymous", "", "Private", "0000"] {
            let (_, facts) = facts(call_event("call.started", json!({"call_id": "1", "from": raw})).unwrap());
            assert_eq!(facts.from.as_deref(), Some(ANONYMOUS), "{raw:?}");
        }
    }

    #[test]
    fn sms_events_name_their_contact() {
        let body = json!({"type": "sms.sent", "sms": {"message_id": "m1", "to": "0912345678", "text": "hi"}});
        let Event::Sms(sms) = Event::parse(&body, vn()).unwrap() else { panic!() };
        assert_eq!(sms.counterpart(), Some("0912345678"));
        let missing = json!({"type": "sms.received", "sms": {"message_id": "m1", "to": "0912345678", "text": "hi"}});
        assert!(matches!(Event::parse(&missing, vn()), Err(EventError::Field(f)) if f.field == "sms.from"));
        let empty = json!({"type": "sms.sent", "sms": {"message_id": "m1", "to": "0912345678", "text": " "}});
        assert!(matches!(Event::parse(&empty, vn()), Err(EventError::Field(f)) if f.field == "sms.text"));
    }

    fn state(phase: CallPhase, facts: &CallFacts) -> CallState {
        CallState::apply(None, phase, facts).0
    }

    #[test]
    fn stages_only_move_forward_and_late_facts_merge_in() {
        let answered = CallFacts { answered_at: Some(20), from: Some("0912345678".into()), ..Default::default() };
        let ended = CallFacts { ended_at: Some(80), duration_secs: Some(60), ..Default::default() };
        let after_end = state(CallPhase::Ended, &ended);
        let (late, effect, changed) = CallState::apply(Some(&after_end), CallPhase::Answered, &answered);
        assert_eq!((late.phase, effect, changed), (CallPhase::Ended, EventEffect::Stale, true));
        assert_eq!(late.facts.answered_at, Some(20));
        // A stale event never overwrites what a later stage said.
        let contradicting = CallFacts { duration_secs: Some(5), ..Default::default() };
        let (kept, effect, changed) = CallState::apply(Some(&late), CallPhase::Answered, &contradicting);
        assert_eq!((kept.facts.duration_secs, effect, changed), (Some(60), EventEffect::Stale, false));
        let (same, effect, changed) = CallState::apply(Some(&late), CallPhase::Ended, &ended);
        assert_eq!((same, effect, changed), (late.clone(), EventEffect::Duplicate, false));
    }

    #[test]
    fn every_order_of_the_same_events_gives_the_same_state() {
        let events = [
            (
                CallPhase::Ringing,
                CallFacts { from: Some("0912345678".into()), started_at: Some(1), ..Default::default() },
            ),
            (CallPhase::Answered, CallFacts { answered_at: Some(5), ..Default::default() }),
            (CallPhase::Ended, CallFacts { ended_at: Some(65), duration_secs: Some(59), ..Default::default() }),
            (
                CallPhase::Finalized,
                CallFacts { duration_secs: Some(60), recording_url: Some("https://r".into()), ..Default::default() },
            ),
        ];
        let mut orders = vec![vec![0, 1, 2, 3]];
        for a in 0..4 {
            for b in 0..4 {
                let mut order: Vec<usize> = (0..4).collect();
                order.swap(a, b);
                orders.push(order.clone());
                order.reverse();
                orders.push(order);
            }
        }
        let fold = |order: &[usize]| {
            order
                .iter()
                .fold(None::<CallState>, |s, &i| Some(CallState::apply(s.as_ref(), events[i].0, &events[i].1).0))
        };
        let expected = fold(&orders[0]).unwrap();
        assert_eq!(expected.facts.duration_secs, Some(60));
        for order in &orders {
            let got = fold(order).unwrap();
            // The finalized duration wins whether it came before or after the ended one.
            assert_eq!(got.phase, CallPhase::Finalized, "{order:?}");
            assert_eq!(got.facts.from, expected.facts.from, "{order:?}");
            assert_eq!(got.facts.answered_at, Some(5), "{order:?}");
            assert_eq!(got.facts.duration_secs, Some(60), "{order:?}");
        }
    }
}
