//! The integration template model, after parsing and validation (see `docs/templates.md`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::expr::Expr;
use super::pointer::Pointer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateType {
    Crm,
    Sms,
}

/// A whole template.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    pub label: String,
    pub kind: TemplateType,
    pub description: String,
    /// Free JSON passed to widgets: click-to-call placement (`renderTooltip`), options, etc.
    pub info: Value,
    /// Free JSON describing how cards/iframes show this integration.
    pub iframe: Value,
    pub fields: Vec<FieldDef>,
    pub auth: Option<AuthDef>,
    pub errors: ErrorMap,
    pub contact: ContactMap,
    pub company: CompanyMap,
    pub activity: ActivityMap,
    pub card: CardMap,
    pub endpoints: Vec<Endpoint>,
}

/// A value each connection supplies (the seed's integrator "fields").
#[derive(Debug, Clone, Serialize)]
pub struct FieldDef {
    pub name: String,
    pub label: String,
    /// Kept in the connection's encrypted credentials, referenced as `credential.NAME`.
    pub secret: bool,
    pub required: bool,
    pub default: Option<String>,
    pub description: String,
}

#[derive(Debug, Clone)]
pub struct AuthDef {
    /// The auth endpoint whose chain (its `after` steps first) yields the token.
    pub endpoint: String,
    /// What endpoints get as `auth.token`.
    pub token: Expr,
    /// Seconds the token lives, as a number or from a step output.
    pub expires_in: Option<Expr>,
    pub expired_when: ExpiredWhen,
    /// The remote account logging in (`{{field.username}}`): logins are serialised per
    /// (host, account) across every connector kind, because CRMs such as Vtiger keep one
    /// challenge per user. Without it, logins are serialised per template and host.
    pub account: Option<Expr>,
}

/// How a response says the token is no longer valid.
#[derive(Debug, Clone, Default)]
pub struct ExpiredWhen {
    pub status: Vec<u16>,
    pub body: Option<BodyMatch>,
}

#[derive(Debug, Clone)]
pub struct BodyMatch {
    pub pointer: Pointer,
    pub equals: Vec<String>,
}

/// Where a failed response keeps its details, and which codes mean what.
#[derive(Debug, Clone, Default)]
pub struct ErrorMap {
    /// A response that matches is a failure even with HTTP 200 (`{"success": false}`).
    pub when: Option<BodyMatch>,
    pub code: Option<Pointer>,
    pub message: Option<Pointer>,
    pub field: Option<Pointer>,
    pub not_found: Vec<String>,
    pub validation: Vec<String>,
}

/// How a record becomes a contact.
#[derive(Debug, Clone, Default)]
pub struct ContactMap {
    pub id: Option<Pointer>,
    pub name: Option<Pointer>,
    pub first_name: Option<Pointer>,
    pub last_name: Option<Pointer>,
    pub title: Option<Pointer>,
    pub company: Option<Pointer>,
    pub owner: Option<Pointer>,
    pub emails: Vec<Pointer>,
    pub phones: Vec<Pointer>,
    pub url: Option<Expr>,
    /// Label → pointer, shown on cards.
    pub extra: Vec<(String, Pointer)>,
    pub modified_at: Option<Pointer>,
    /// The id of the contact's company, to name it from `company.search` results.
    pub company_id: Option<Pointer>,
    /// What every contact id starts with (from field values), for CRMs whose ids name their
    /// module (Vtiger's `12x…`): another record's id is then not found instead of read as a
    /// contact.
    pub id_prefix: Option<Expr>,
}

/// How a `company.search` record becomes a company (an Account, an organisation).
#[derive(Debug, Clone, Default)]
pub struct CompanyMap {
    pub id: Option<Pointer>,
    pub name: Option<Pointer>,
}

/// What a contact card shows that lives in other records: each a lookup through a `get_data`
/// endpoint.
#[derive(Debug, Clone, Default)]
pub struct CardMap {
    pub company: Option<Lookup>,
    pub owner: Option<Lookup>,
    pub figures: Vec<Figure>,
}

/// Calls `endpoint` with inputs taken from the contact record, and reads a value from its
/// answer.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub endpoint: String,
    /// Input name → pointer into the contact record; an empty one means there is nothing to
    /// look up (a contact without an account).
    pub inputs: Vec<(String, Pointer)>,
    /// The non-empty values found, joined by spaces (`[/first_name, /last_name]`).
    pub value: Vec<Pointer>,
}

#[derive(Debug, Clone)]
pub struct Figure {
    pub label: String,
    pub lookup: Lookup,
}

#[derive(Debug, Clone, Default)]
pub struct ActivityMap {
    pub kind: Option<Pointer>,
    pub subject: Option<Pointer>,
    pub body: Option<Pointer>,
    pub at: Option<Pointer>,
    pub status: Option<Pointer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    Auth,
    GetData,
    PostData,
    SendSms,
}

/// What an endpoint does for crmhub: the capability it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Trigger {
    #[serde(rename = "connection.check")]
    ConnectionCheck,
    #[serde(rename = "contact.search")]
    ContactSearch,
    #[serde(rename = "contact.find_by_phone")]
    ContactFindByPhone,
    #[serde(rename = "contact.get")]
    ContactGet,
    #[serde(rename = "contact.activities")]
    ContactActivities,
    #[serde(rename = "contact.create")]
    ContactCreate,
    #[serde(rename = "contact.changes")]
    ContactChanges,
    #[serde(rename = "call.log.create")]
    CallLogCreate,
    #[serde(rename = "call.log.complete")]
    CallLogComplete,
    /// The record a CRM holds for a call id, for a call crmhub lost track of.
    #[serde(rename = "call.log.find")]
    CallLogFind,
    #[serde(rename = "note.create")]
    NoteCreate,
    #[serde(rename = "ticket.create")]
    TicketCreate,
    #[serde(rename = "sms.send")]
    SmsSend,
    #[serde(rename = "company.search")]
    CompanySearch,
    #[serde(rename = "company.contacts")]
    CompanyContacts,
}

impl Trigger {
    pub const ALL: [Trigger; 15] = [
        Self::ConnectionCheck,
        Self::ContactSearch,
        Self::ContactFindByPhone,
        Self::ContactGet,
        Self::ContactActivities,
        Self::ContactCreate,
        Self::ContactChanges,
        Self::CallLogCreate,
        Self::CallLogComplete,
        Self::CallLogFind,
        Self::NoteCreate,
        Self::TicketCreate,
        Self::SmsSend,
        Self::CompanySearch,
        Self::CompanyContacts,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ConnectionCheck => "connection.check",
            Self::ContactSearch => "contact.search",
            Self::ContactFindByPhone => "contact.find_by_phone",
            Self::ContactGet => "contact.get",
            Self::ContactActivities => "contact.activities",
            Self::ContactCreate => "contact.create",
            Self::ContactChanges => "contact.changes",
            Self::CallLogCreate => "call.log.create",
            Self::CallLogComplete => "call.log.complete",
            Self::CallLogFind => "call.log.find",
            Self::NoteCreate => "note.create",
            Self::TicketCreate => "ticket.create",
            Self::SmsSend => "sms.send",
            Self::CompanySearch => "company.search",
            Self::CompanyContacts => "company.contacts",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw)
    }

    /// The `input.*` names the caller supplies for this trigger.
    pub fn inputs(&self) -> &'static [&'static str] {
        match self {
            Self::ConnectionCheck => &[],
            Self::ContactSearch => &["query", "limit"],
            Self::ContactFindByPhone => &["phone", "phone_national", "phone_digits"],
            Self::ContactGet | Self::ContactActivities => &["id"],
            Self::ContactCreate => &["first_name", "last_name", "email", "phone", "mobile", "title", "description"],
            Self::ContactChanges => &["since"],
            Self::CallLogFind => &["call_id"],
            Self::CallLogCreate | Self::CallLogComplete => &[
                "call_id",
                "record_id",
                "stage",
                "direction",
                "contact_id",
                "from",
                "to",
                "started_at",
                "started_at_iso",
                "started_date",
                "started_time",
                "ended_date",
                "ended_time",
                "duration_secs",
                "duration_hours",
                "status",
                "state",
                "outcome",
                "agent",
                "notes",
                "recording_url",
            ],
            Self::NoteCreate => &["contact_id", "body"],
            Self::TicketCreate => &["contact_id", "title", "description", "priority"],
            Self::SmsSend => &["to", "text", "sender"],
            Self::CompanySearch => &["query", "limit"],
            Self::CompanyContacts => &["company_ids"],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_http(&self) -> crate::http::Method {
        match self {
            Self::Get => crate::http::Method::GET,
            Self::Post => crate::http::Method::POST,
            Self::Put => crate::http::Method::PUT,
            Self::Patch => crate::http::Method::PATCH,
            Self::Delete => crate::http::Method::DELETE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    None,
    Json,
    Form,
}

/// Where a parameter's value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Header,
    Body,
    Query,
    Path,
}

/// How a parameter's value is made.
#[derive(Debug, Clone)]
pub enum ParamValue {
    /// A string built from literal text and `{{…}}` references.
    Expr(Expr),
    /// A JSON value built as JSON (objects and arrays of expressions), never by concatenation.
    Json(JsonTemplate),
    /// Lowercase hex MD5 of the parts' UTF-8 text joined by `separator`.
    Md5 { parts: Vec<Expr>, separator: String },
}

/// A JSON shape whose string leaves are expressions.
#[derive(Debug, Clone)]
pub enum JsonTemplate {
    Text(Expr),
    Literal(Value),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    String,
    Number,
    Boolean,
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub placement: Placement,
    pub value: ParamValue,
    pub value_type: ValueType,
    /// Left out entirely when its value renders empty.
    pub optional: bool,
    /// Where a JSON-encoded form field or string goes: `element` holds `json` as a string.
    pub as_json_string: bool,
    /// The query language the value is written in, so that `template check` can warn about
    /// what the CRM will refuse.
    pub dialect: Option<Dialect>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Vtiger's VTQL: flat conditions, a mandatory trailing `;`.
    Vtql,
}

#[derive(Debug, Clone)]
pub struct Pagination {
    /// `{{page}}` of the first request; later ones add `step` (1 for page numbers, the page
    /// size for offsets).
    pub start: u32,
    pub step: u32,
    pub max_pages: u32,
    pub has_more: Option<Pointer>,
    /// The most records a page holds: a shorter page is the last, so reading stops without
    /// asking for the (empty) page after it.
    pub page_size: Option<u32>,
}

impl Pagination {
    /// `{{page}}` of the `index`-th request (0 first).
    pub fn page(&self, index: u32) -> u32 {
        self.start.saturating_add(index.saturating_mul(self.step))
    }

    /// Whether a page of `len` records is shorter than a full page.
    pub fn is_short(&self, len: usize) -> bool {
        self.page_size.is_some_and(|size| len < size as usize)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ResponseMap {
    /// For list triggers: the array of records.
    pub records: Option<Pointer>,
    /// For single-record triggers: the record.
    pub record: Option<Pointer>,
    /// For create-type triggers: the new record's id.
    pub id: Option<Pointer>,
    /// For change feeds: the next `since`.
    pub next: Option<Pointer>,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub label: String,
    pub description: String,
    pub kind: EndpointKind,
    pub method: Method,
    pub url: UrlTemplate,
    pub trigger: Option<Trigger>,
    /// Auth steps that must run first; their outputs are `steps.NAME.OUTPUT`.
    pub after: Vec<String>,
    pub body: BodyEncoding,
    pub params: Vec<Param>,
    /// Values this endpoint yields (auth steps): name → pointer into the response.
    pub outputs: BTreeMap<String, Pointer>,
    pub response: ResponseMap,
    pub pagination: Option<Pagination>,
}

/// `{{host}}/path/{slot}/more`: the base is the connection's host (or a fixed https URL), and
/// `{slot}`s are filled by `path` parameters, each percent-encoded as one segment.
#[derive(Debug, Clone)]
pub struct UrlTemplate {
    pub raw: String,
    pub base: UrlBase,
    /// Literal segments and slots after the base, in order.
    pub segments: Vec<UrlSegment>,
    /// A fixed query string written in the template (`?operation=query`), kept as is.
    pub fixed_query: Option<String>,
}

#[derive(Debug, Clone)]
pub enum UrlBase {
    Host,
    Fixed(url::Url),
}

#[derive(Debug, Clone)]
pub enum UrlSegment {
    Literal(String),
    Slot(String),
}
