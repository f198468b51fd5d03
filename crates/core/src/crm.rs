//! The unified CRM interface every channel uses. A connector implements what its CRM can do
//! and declares it in `capabilities()`; everything else answers `CrmError::Unsupported`
//! (the trait's default), never a panic and never a made-up result. Channels ask for
//! capabilities; they never downcast to a concrete connector.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::phone::PhoneNumber;

/// What a connector can do. The names double as the trigger names of integration templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Capability {
    #[serde(rename = "contact.search")]
    SearchContacts,
    #[serde(rename = "contact.find_by_phone")]
    FindByPhone,
    #[serde(rename = "contact.get")]
    ContactCard,
    #[serde(rename = "contact.create")]
    CreateContact,
    /// Create, then complete, one call log per external call id.
    #[serde(rename = "call.log")]
    LogCall,
    #[serde(rename = "note.create")]
    AddNote,
    #[serde(rename = "ticket.create")]
    CreateTicket,
    #[serde(rename = "contact.changes")]
    ListChanges,
}

impl Capability {
    pub const ALL: [Capability; 8] = [
        Self::SearchContacts,
        Self::FindByPhone,
        Self::ContactCard,
        Self::CreateContact,
        Self::LogCall,
        Self::AddNote,
        Self::CreateTicket,
        Self::ListChanges,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::SearchContacts => "contact.search",
            Self::FindByPhone => "contact.find_by_phone",
            Self::ContactCard => "contact.get",
            Self::CreateContact => "contact.create",
            Self::LogCall => "call.log",
            Self::AddNote => "note.create",
            Self::CreateTicket => "ticket.create",
            Self::ListChanges => "contact.changes",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a CRM operation failed, in terms a channel or a job can act on. Messages never carry
/// credentials or session ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrmError {
    #[error("this connector does not support {capability}")]
    Unsupported { capability: Capability },
    #[error("{what} not found")]
    NotFound { what: String },
    /// The CRM (or crmhub, before writing) refused a value; `field` names it.
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    /// Credentials were refused; an operator must fix the connection.
    #[error("the CRM refused the credentials: {0}")]
    AuthFailed(String),
    #[error("the CRM is rate limiting us")]
    RateLimited { retry_after: Option<Duration> },
    /// Worth retrying later: timeouts, dropped connections, 5xx, an empty HTTP 500.
    #[error("the CRM is unavailable: {0}")]
    Unavailable(String),
    /// The CRM answered with an error that retrying will not fix.
    #[error("the CRM answered {code}: {message}")]
    Remote { code: String, message: String },
    /// The answer did not have the documented shape.
    #[error("unexpected answer from the CRM: {0}")]
    Protocol(String),
    /// Refused by crmhub's outbound policy (a private address, say).
    #[error("{0}")]
    Blocked(String),
}

impl CrmError {
    /// The same error with `f` applied to every text it carries (to mask secrets, say).
    pub fn map_text(self, f: impl Fn(&str) -> String) -> Self {
        match self {
            Self::NotFound { what } => Self::NotFound { what: f(&what) },
            Self::Validation { field, message } => Self::Validation { field: f(&field), message: f(&message) },
            Self::AuthFailed(m) => Self::AuthFailed(f(&m)),
            Self::Unavailable(m) => Self::Unavailable(f(&m)),
            Self::Remote { code, message } => Self::Remote { code: f(&code), message: f(&message) },
            Self::Protocol(m) => Self::Protocol(f(&m)),
            Self::Blocked(m) => Self::Blocked(f(&m)),
            other @ (Self::Unsupported { .. } | Self::RateLimited { .. }) => other,
        }
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation { field: field.into(), message: message.into() }
    }

    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Unavailable(_))
    }
}

/// One line of a search result or a phone match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactSummary {
    /// The CRM's own id, always a string.
    pub id: String,
    pub display_name: String,
    pub company: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabeledValue {
    pub label: String,
    pub value: String,
}

impl LabeledValue {
    pub fn new(label: impl Into<String>, value: impl Into<String>) -> Self {
        Self { label: label.into(), value: value.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    Note,
    Call,
    Meeting,
    Task,
    Ticket,
    Other,
}

/// Something that happened with the contact, newest first on a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Activity {
    pub kind: ActivityKind,
    pub subject: String,
    pub body: Option<String>,
    /// When it happened, as the CRM reports it (`YYYY-MM-DD HH:MM:SS`, UTC where known).
    pub at: Option<String>,
    pub status: Option<String>,
}

/// Everything a contact card shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactCard {
    pub id: String,
    pub display_name: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub title: Option<String>,
    pub emails: Vec<LabeledValue>,
    pub phones: Vec<LabeledValue>,
    pub company: Option<String>,
    pub owner: Option<String>,
    /// Fields the connection is configured to show, with the CRM's labels.
    pub extra_fields: Vec<LabeledValue>,
    /// Figures the CRM offers (sales, open tickets, …).
    pub figures: Vec<LabeledValue>,
    pub activities: Vec<Activity>,
    /// Where to open the record in the CRM.
    pub record_url: Option<String>,
}

/// How much of a card to fetch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CardOptions {
    pub max_activities: usize,
}

impl Default for CardOptions {
    fn default() -> Self {
        Self { max_activities: 10 }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NewContact {
    pub first_name: Option<String>,
    pub last_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub mobile: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
}

impl NewContact {
    /// What every connector checks before writing: CRMs validate weakly (Vtiger stores a
    /// malformed e-mail as given), so a contact crmhub creates must have a last name and, if
    /// given, a plausible e-mail address.
    pub fn validate(&self) -> Result<(), CrmError> {
        if self.last_name.trim().is_empty() {
            return Err(CrmError::validation("last_name", "is required"));
        }
        if let Some(email) = self.email.as_deref().filter(|e| !email_is_plausible(e)) {
            return Err(CrmError::validation("email", format!("{email:?} is not an e-mail address")));
        }
        Ok(())
    }
}

/// `local@domain.tld` with no whitespace: a plausibility check, not RFC 5322.
pub fn email_is_plausible(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.contains(char::is_whitespace)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    Inbound,
    Outbound,
}

/// Where a call stands. Later stages never go back to earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStage {
    /// Answered: the preliminary log, created while the call runs.
    Answered,
    /// Over: the final log with duration and outcome.
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    Completed,
    Missed,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
    /// Declined by the callee.
    Rejected,
}

/// A call log to create or complete. `call_id` is the telephony system's id: logging the same
/// call again updates the record it made before instead of making a second one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLog {
    pub call_id: String,
    pub stage: CallStage,
    pub direction: CallDirection,
    pub contact_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Unix seconds.
    pub started_at: i64,
    pub duration_secs: Option<u32>,
    pub outcome: Option<CallOutcome>,
    pub agent: Option<String>,
    pub notes: Option<String>,
    /// The agent's or platform's wrap-up code (`sale`, `callback`, …).
    pub disposition: Option<String>,
    pub recording_url: Option<String>,
    /// The CRM record crmhub already knows it made for this call (a `LoggedCall::record_id` it
    /// stored). When given, the connector updates that record directly and makes no lookup.
    /// When missing, it looks the call up by its marker or id before creating, so that a crash
    /// between the CRM write and crmhub storing the id cannot make a second record.
    pub record_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedCall {
    /// The CRM record holding the log.
    pub record_id: String,
    /// False when an earlier log of the same call was found and updated.
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewNote {
    pub contact_id: String,
    pub body: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketPriority {
    Low,
    Normal,
    High,
    Urgent,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewTicket {
    pub contact_id: Option<String>,
    pub title: String,
    pub description: Option<String>,
    pub priority: Option<TicketPriority>,
}

/// Where a change feed stands; opaque to callers, stored between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChangeCursor(pub String);

/// A contact as the change feed reports it, for syncing elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactRecord {
    pub id: String,
    pub display_name: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub company: Option<String>,
    /// Unix seconds of the change, as the CRM reports it.
    pub modified_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangePage {
    pub updated: Vec<ContactRecord>,
    /// Ids removed since the cursor, where the CRM can tell.
    pub deleted: Vec<String>,
    pub next: ChangeCursor,
    /// More changes are waiting beyond `next`.
    pub more: bool,
}

/// The result of a connection test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionCheck {
    /// What the CRM says about itself (`Vtiger 8.2.0`, the logged-in user, …).
    pub details: Vec<LabeledValue>,
    /// Why nothing could be checked, when the connector had no request that reaches the CRM
    /// (a template with no auth chain, check or search endpoint). A test that sent nothing
    /// must not pass for one that worked.
    pub unverified: Option<String>,
}

#[async_trait::async_trait]
pub trait Crm: Send + Sync {
    /// What this connector can do; anything else answers `Unsupported`.
    fn capabilities(&self) -> &[Capability];

    fn supports(&self, capability: Capability) -> bool {
        self.capabilities().contains(&capability)
    }

    /// Logs in (or otherwise proves the credentials) and reads the CRM's metadata.
    async fn check(&self) -> Result<ConnectionCheck, CrmError>;

    /// Contacts whose name, e-mail or phone matches `query`, at most `limit`.
    async fn search_contacts(&self, _query: &str, _limit: usize) -> Result<Vec<ContactSummary>, CrmError> {
        Err(CrmError::Unsupported { capability: Capability::SearchContacts })
    }

    /// Contacts with this number in any phone field, however the CRM stored it.
    async fn find_by_phone(&self, _phone: &PhoneNumber) -> Result<Vec<ContactSummary>, CrmError> {
        Err(CrmError::Unsupported { capability: Capability::FindByPhone })
    }

    async fn contact_card(&self, _id: &str, _options: &CardOptions) -> Result<ContactCard, CrmError> {
        Err(CrmError::Unsupported { capability: Capability::ContactCard })
    }

    async fn create_contact(&self, _contact: &NewContact) -> Result<ContactSummary, CrmError> {
        Err(CrmError::Unsupported { capability: Capability::CreateContact })
    }

    /// Creates the call's log, or updates the one an earlier call to this method made.
    async fn log_call(&self, _call: &CallLog) -> Result<LoggedCall, CrmError> {
        Err(CrmError::Unsupported { capability: Capability::LogCall })
    }

    /// Returns the new note's id.
    async fn add_note(&self, _note: &NewNote) -> Result<String, CrmError> {
        Err(CrmError::Unsupported { capability: Capability::AddNote })
    }

    /// Returns the new ticket's id.
    async fn create_ticket(&self, _ticket: &NewTicket) -> Result<String, CrmError> {
        Err(CrmError::Unsupported { capability: Capability::CreateTicket })
    }

    /// Contacts changed since `since` (from the beginning when `None`).
    async fn list_changes(&self, _since: Option<&ChangeCursor>) -> Result<ChangePage, CrmError> {
        Err(CrmError::Unsupported { capability: Capability::ListChanges })
    }
}

/// What an SMS provider returns for an accepted message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmsReceipt {
    pub message_id: Option<String>,
}

/// Sends text messages through a provider (an `sms` integration template).
#[async_trait::async_trait]
pub trait SmsSender: Send + Sync {
    async fn send_sms(&self, to: &PhoneNumber, text: &str, sender: Option<&str>) -> Result<SmsReceipt, CrmError>;
}
