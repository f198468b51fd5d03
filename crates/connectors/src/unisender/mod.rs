//! The native Unisender (classic API; the Selzy brand) connector, as
//! `shared/contracts/unisender.md` describes the API: contact import in batches, list
//! membership, reconciliation exports and a connection check. It is a destination crmhub
//! writes contacts to, not a CRM, so it has its own methods rather than the `Crm` interface.
//!
//! A connection's `host` is `https://api.unisender.com` (or `https://api.selzy.com`); its field
//! `lang` (`en`, `ru`, `ua`; default `en`) picks the language of Unisender's messages; its one
//! credential is `api_key`.
//!
//! How calls go (§1, §2, §7):
//! - Every call is a POST of `application/x-www-form-urlencoded` to
//!   `{host}/{lang}/api/{method}?format=json` with `api_key` in the **body**: the key never
//!   appears in a URL, and it is a redacted secret of the call context, so neither the request
//!   log nor an error carries it.
//! - An answer is read as failed whenever it has `error` or `code`, whatever its status. A
//!   status other than 200, or a body that is not JSON, is a transport failure
//!   (`CrmError::Unavailable`, retried later with back-off).
//! - Codes map to: `retry_later` → `Unavailable`; the two `api_call_limit_exceeded_*` →
//!   `RateLimited` with `retry_after` of at least 60 s; `invalid_api_key`, `access_denied`,
//!   `not_enough_money` → `AuthFailed` naming the code and what the operator must do (the job
//!   worker marks the connection `needs_reauth` and parks its jobs); `invalid_arg` →
//!   `Validation` (field `unisender.{method}`); `unknown_method` → `Protocol`; `unspecified` and
//!   any other → `Remote` with the (HTML-unescaped) message.
//! - Budgets: one of [`RATE`] per API key (the budget key is a hash of the key, so two
//!   connections with one key share it) and the client's per-host budget for the egress side.
//! - importContacts is an upsert: an attempt with no answer within [`IMPORT_TIMEOUT`] is sent
//!   again, up to the client's `max_retries` (2 by default) more times. Nothing else is retried
//!   once it may have reached Unisender (the client still retries a refused connection).

mod api;
mod contacts;

use std::sync::Arc;
use std::time::Duration;

use crmhub_core::crm::CrmError;
use crmhub_core::{Credentials, Host, Secret};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::http::{CallContext, HttpClient, RateSpec};

pub use contacts::{ContactType, ExportedContact, ImportReport, ImportRow, RowError, UnisenderContact};

/// 1200 calls a minute per key (§3). A token bucket lets `burst + rate × T` calls into any
/// window `T`: 19 a second with a burst of 60 lets at most 60 + 19 × 60 = 1200 into any minute.
pub const RATE: RateSpec = RateSpec { per_second: 19.0, burst: 60 };

/// Unisender's server timeout for importContacts (§4).
pub const IMPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// At least this long after a `api_call_limit_exceeded_*` (§2).
pub const LIMIT_BACKOFF: Duration = Duration::from_secs(60);

/// The languages `lang` may name.
const LANGS: [&str; 3] = ["en", "ru", "ua"];

/// Non-secret settings of a Unisender connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnisenderFields {
    /// `en` (default), `ru` or `ua`: the language of Unisender's messages.
    #[serde(default)]
    pub lang: Option<String>,
}

impl UnisenderFields {
    pub fn parse(fields: &Map<String, Value>) -> Result<Self, CrmError> {
        let parsed: Self = serde_json::from_value(Value::Object(fields.clone()))
            .map_err(|e| CrmError::validation("fields", e.to_string()))?;
        if let Some(lang) = &parsed.lang {
            if !LANGS.contains(&lang.as_str()) {
                return Err(CrmError::validation("fields.lang", format!("{lang:?} is not one of en, ru, ua")));
            }
        }
        Ok(parsed)
    }

    fn lang(&self) -> &str {
        self.lang.as_deref().unwrap_or("en")
    }
}

fn api_key(credentials: &Credentials) -> Result<Secret, CrmError> {
    if let Some(unknown) = credentials.names().find(|n| *n != "api_key") {
        return Err(CrmError::validation(
            format!("credentials.{unknown}"),
            "is not a Unisender credential; expected api_key",
        ));
    }
    credentials.get("api_key").filter(|k| !k.expose().trim().is_empty()).cloned().ok_or_else(|| {
        CrmError::validation(
            "credentials.api_key",
            "is required: the account's API key (Account → Integration and API)",
        )
    })
}

/// Checks a Unisender connection's fields and credentials before it is stored.
pub fn validate(_host: &Host, fields: &Map<String, Value>, credentials: &Credentials) -> Result<(), CrmError> {
    UnisenderFields::parse(fields)?;
    api_key(credentials)?;
    Ok(())
}

/// What every Unisender connector of this process shares.
#[derive(Debug, Clone, Copy)]
pub struct UnisenderShared {
    /// Each API key's budget: [`RATE`] unless an operator (or a test) knows better.
    pub rate: RateSpec,
    /// How long an importContacts attempt may go unanswered: [`IMPORT_TIMEOUT`].
    pub import_timeout: Duration,
}

impl Default for UnisenderShared {
    fn default() -> Self {
        Self { rate: RATE, import_timeout: IMPORT_TIMEOUT }
    }
}

pub struct Unisender {
    http: HttpClient,
    host: Host,
    lang: String,
    api_key: Secret,
    ctx: CallContext,
    shared: UnisenderShared,
}

impl std::fmt::Debug for Unisender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unisender").field("host", &self.host.as_str()).field("lang", &self.lang).finish_non_exhaustive()
    }
}

impl Unisender {
    pub fn new(
        http: HttpClient,
        ctx: CallContext,
        shared: UnisenderShared,
        host: &Host,
        fields: &Map<String, Value>,
        credentials: &Credentials,
    ) -> Result<Self, CrmError> {
        let parsed = UnisenderFields::parse(fields)?;
        let api_key = api_key(credentials)?;
        let digest = hex::encode(&Sha256::digest(format!("crmhub-unisender:{}", api_key.expose()))[..8]);
        let mut ctx = ctx.redacting([api_key.clone()]).budget_key(format!("unisender:{digest}"));
        ctx.rate = Some(shared.rate);
        Ok(Self { http, host: host.clone(), lang: parsed.lang().to_owned(), api_key, ctx, shared })
    }
}

/// Builds a Unisender connector; the `Connectors` factory calls this.
pub(crate) fn build(
    http: HttpClient,
    ctx: CallContext,
    shared: UnisenderShared,
    spec: &crate::ConnectionSpec<'_>,
) -> Result<Arc<Unisender>, CrmError> {
    Ok(Arc::new(Unisender::new(http, ctx, shared, spec.host, spec.fields, spec.credentials)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_never_exceeds_1200_in_a_minute() {
        assert!(f64::from(RATE.burst) + RATE.per_second * 60.0 <= 1200.0);
    }

    #[test]
    fn fields_and_credentials_are_checked() {
        let fields = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(UnisenderFields::parse(&fields(serde_json::json!({}))).unwrap().lang(), "en");
        assert_eq!(UnisenderFields::parse(&fields(serde_json::json!({"lang": "ua"}))).unwrap().lang(), "ua");
        assert!(matches!(
            UnisenderFields::parse(&fields(serde_json::json!({"lang": "de"}))),
            Err(CrmError::Validation { field, .. }) if field == "fields.lang"
        ));
        let mut creds = Credentials::new();
        assert!(matches!(api_key(&creds), Err(CrmError::Validation { field, .. }) if field == "credentials.api_key"));
        creds.insert("api_key", Secret::new("k"));
        assert!(api_key(&creds).is_ok());
        creds.insert("token", Secret::new("t"));
        assert!(matches!(api_key(&creds), Err(CrmError::Validation { field, .. }) if field == "credentials.token"));
    }
}
