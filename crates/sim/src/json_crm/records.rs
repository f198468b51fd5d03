//! The records ContactBook keeps, as tests see them through the handle. The wire shapes live in
//! `wire.rs`; these are plain data so tests can compare and construct them freely.

/// A live contact. `updated_at` is Unix seconds from the simulator's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// `c_<n>`, `n` counting from 1 in creation order.
    pub id: String,
    pub first_name: Option<String>,
    pub last_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// The company's name; on the wire `{"name": …}` or `null`.
    pub company: Option<String>,
    /// User name of whoever created the contact.
    pub owner: String,
    pub updated_at: i64,
}

/// A contact to insert through the handle, as if typed into ContactBook's UI: nothing is
/// validated, so tests can plant the data an API client could never create.
///
/// ```ignore
/// let id = sim.insert_contact(NewContact::new("Lovelace").first_name("Ada").phone("+44 20 7946 0001"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewContact {
    pub first_name: Option<String>,
    pub last_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    /// Default [`DEFAULT_USERNAME`](super::DEFAULT_USERNAME).
    pub owner: Option<String>,
    /// Backdates (or postdates) the contact. Default: the simulator clock's now.
    pub updated_at: Option<i64>,
}

impl NewContact {
    pub fn new(last_name: impl Into<String>) -> Self {
        NewContact { last_name: last_name.into(), ..NewContact::default() }
    }

    pub fn first_name(mut self, value: impl Into<String>) -> Self {
        self.first_name = Some(value.into());
        self
    }

    pub fn email(mut self, value: impl Into<String>) -> Self {
        self.email = Some(value.into());
        self
    }

    pub fn phone(mut self, value: impl Into<String>) -> Self {
        self.phone = Some(value.into());
        self
    }

    pub fn company(mut self, value: impl Into<String>) -> Self {
        self.company = Some(value.into());
        self
    }

    pub fn owner(mut self, value: impl Into<String>) -> Self {
        self.owner = Some(value.into());
        self
    }

    pub fn updated_at(mut self, unix_secs: i64) -> Self {
        self.updated_at = Some(unix_secs);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDirection {
    Inbound,
    Outbound,
}

impl CallDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            CallDirection::Inbound => "inbound",
            CallDirection::Outbound => "outbound",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inbound" => Some(CallDirection::Inbound),
            "outbound" => Some(CallDirection::Outbound),
            _ => None,
        }
    }
}

/// A call's state. A gateway typically pre-logs a call as `ringing`/`in_progress` and later
/// updates it to its final state, so both kinds are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    Ringing,
    InProgress,
    Answered,
    Completed,
    Missed,
    Busy,
    Failed,
    Voicemail,
}

impl CallStatus {
    pub const ALL: [CallStatus; 8] = [
        CallStatus::Ringing,
        CallStatus::InProgress,
        CallStatus::Answered,
        CallStatus::Completed,
        CallStatus::Missed,
        CallStatus::Busy,
        CallStatus::Failed,
        CallStatus::Voicemail,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Ringing => "ringing",
            CallStatus::InProgress => "in_progress",
            CallStatus::Answered => "answered",
            CallStatus::Completed => "completed",
            CallStatus::Missed => "missed",
            CallStatus::Busy => "busy",
            CallStatus::Failed => "failed",
            CallStatus::Voicemail => "voicemail",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        CallStatus::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

/// A logged call. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `call_<n>`.
    pub id: String,
    /// The caller's own id for the call (e.g. the PBX's). Not unique: ContactBook, like many
    /// CRMs, happily stores two calls with the same one, which is how tests catch double logging.
    pub external_id: String,
    pub contact_id: Option<String>,
    pub direction: CallDirection,
    pub from: Option<String>,
    pub to: Option<String>,
    pub started_at: i64,
    /// Seconds.
    pub duration: Option<u64>,
    pub status: CallStatus,
    pub notes: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A note on a contact (crmhub files received and sent SMS as notes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `n_<n>`.
    pub id: String,
    pub contact_id: String,
    pub body: String,
    /// User name of whoever wrote it.
    pub author: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketPriority {
    Low,
    Normal,
    High,
    Urgent,
}

impl TicketPriority {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketPriority::Low => "low",
            TicketPriority::Normal => "normal",
            TicketPriority::High => "high",
            TicketPriority::Urgent => "urgent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "low" => Some(TicketPriority::Low),
            "normal" => Some(TicketPriority::Normal),
            "high" => Some(TicketPriority::High),
            "urgent" => Some(TicketPriority::Urgent),
            _ => None,
        }
    }
}

/// A support ticket. New tickets are always `open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// `t_<n>`.
    pub id: String,
    pub contact_id: Option<String>,
    pub title: String,
    pub description: Option<String>,
    pub priority: TicketPriority,
    pub status: String,
    pub created_at: i64,
}
