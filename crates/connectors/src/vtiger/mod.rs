//! The native Vtiger connector (webservice API, tested against Vtiger 8.2's documented
//! behaviour in `shared/contracts/vtiger.md`).

mod crm;
mod protocol;
pub mod queries;
pub mod vtql;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crmhub_core::crm::CrmError;
use crmhub_core::{Credentials, Host, PhoneRegion, Secret};
use md5::{Digest, Md5};
use serde_json::{Map, Value};
use url::Url;

use crate::auth::{AuthKey, SharedAuth};
use crate::http::{CallContext, HttpClient};

pub use protocol::{Describe, Field, Method};

/// A Vtiger record: a flat JSON object whose values are all strings.
pub type Record = Map<String, Value>;

/// Non-secret settings of a Vtiger connection (`fields` in the admin API).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VtigerFields {
    /// The webservice user (its access key is the credential `access_key`).
    #[serde(default)]
    pub username: String,
    /// Extra Contacts fields to show on cards, by field name (labels come from describe).
    #[serde(default)]
    pub card_fields: Vec<String>,
}

impl VtigerFields {
    pub fn parse(fields: &Map<String, Value>) -> Result<Self, CrmError> {
        let parsed: Self = serde_json::from_value(Value::Object(fields.clone()))
            .map_err(|e| CrmError::validation("fields", e.to_string()))?;
        if parsed.username.trim().is_empty() {
            return Err(CrmError::validation("fields.username", "is required: the Vtiger user name"));
        }
        for (i, name) in parsed.card_fields.iter().enumerate() {
            vtql::identifier(name).map_err(|_| {
                CrmError::validation(format!("fields.card_fields[{i}]"), format!("{name:?} is not a field name"))
            })?;
        }
        Ok(parsed)
    }
}

pub struct Vtiger {
    http: HttpClient,
    endpoint: Url,
    host: Host,
    username: String,
    access_key: Secret,
    auth: SharedAuth,
    auth_key: AuthKey,
    ctx: CallContext,
    card_fields: Vec<String>,
    region: Option<PhoneRegion>,
    describes: Mutex<HashMap<String, Arc<Describe>>>,
    /// Account names by id, briefly: search results show each contact's company, and a second
    /// round trip per search for names that rarely change would double its latency.
    accounts: Mutex<HashMap<String, (String, std::time::Instant)>>,
    /// Whether `sync` works on this installation (stock 8.2 on PHP 8 answers it with HTTP 500);
    /// probed once.
    sync_works: Mutex<Option<bool>>,
}

impl std::fmt::Debug for Vtiger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vtiger").field("endpoint", &self.endpoint.as_str()).field("username", &self.username).finish()
    }
}

impl Vtiger {
    pub fn new(
        http: HttpClient,
        auth: SharedAuth,
        ctx: CallContext,
        host: &Host,
        fields: &Map<String, Value>,
        credentials: &Credentials,
        region: Option<PhoneRegion>,
    ) -> Result<Self, CrmError> {
        let fields = VtigerFields::parse(fields)?;
        let access_key = credentials.get("access_key").filter(|k| !k.is_empty()).cloned().ok_or_else(|| {
            CrmError::validation("credentials.access_key", "is required: the user's Vtiger access key")
        })?;
        let endpoint = Url::parse(&host.join("webservice.php"))
            .map_err(|e| CrmError::validation("host", format!("is not a usable URL: {e}")))?;
        let username = fields.username.trim().to_owned();
        // Logins serialise per remote user; sessions are shared only with the same key.
        let account = format!("vtiger:{}:{}", host.as_str(), username.to_lowercase());
        let key_hash = hex::encode(&Md5::digest(format!("crmhub:{}", access_key.expose()))[..8]);
        let auth_key = AuthKey { lock: AuthKey::login_lock(host, &username), state: format!("{account}:{key_hash}") };
        // One budget per Vtiger user, however many connections (native or template) use it.
        let ctx = ctx.redacting([access_key.clone()]).budget_key(AuthKey::login_lock(host, &username));
        Ok(Self {
            http,
            endpoint,
            host: host.clone(),
            username,
            access_key,
            auth,
            auth_key,
            ctx,
            card_fields: fields.card_fields,
            region,
            describes: Mutex::default(),
            accounts: Mutex::default(),
            sync_works: Mutex::default(),
        })
    }

    /// Where a person opens a record in Vtiger's web UI.
    fn record_url(&self, module: &str, id: &str) -> Option<String> {
        let crmid = id.split_once('x')?.1;
        Some(format!("{}/index.php?module={module}&view=Detail&record={crmid}", self.host.as_str()))
    }
}

/// Reads a string field of a record (`""` counts as absent, as in Vtiger).
fn text<'a>(record: &'a Record, field: &str) -> Option<&'a str> {
    record.get(field).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}
