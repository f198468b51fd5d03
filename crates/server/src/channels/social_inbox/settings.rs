//! The channel's per-tenant configuration: which connection it searches, how long a signed URL
//! may live, which origins may frame the card, and the signing secrets. Non-secret settings live
//! in the channel's own settings row (`social_inbox`), which only this channel's API reaches;
//! the secrets are tenant secrets sealed in the vault
//! (purposes `social_inbox.search` and `social_inbox.iframe`). Shared by the admin API, the
//! CLI and the demo so that all three accept and refuse the same things.

use std::time::Duration;

use crmhub_connectors::http::Lane;
use crmhub_core::crm::Capability;
use crmhub_core::signing::Policy;
use crmhub_core::{ConnectionId, FieldError, Secret, TenantSlug, UnixMillis};
use crmhub_store::tenants::Tenant;
use crmhub_store::{Store, StoreError};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::Endpoint;
use super::links::endpoint_url;
use crate::crm_access::AccessError;
use crate::state::AppState;

/// What the channel asks of its connection: `/search` and `/iframe`.
pub const REQUIRED: [Capability; 2] = [Capability::SearchContacts, Capability::ContactCard];

/// The channel kind its settings are stored under.
pub const SETTINGS_KEY: &str = "social_inbox";

pub const DEFAULT_RESULT_LIMIT: u32 = 20;
pub const MAX_RESULT_LIMIT: u32 = 100;
/// Five minutes: the longest a contact renamed or added in the CRM may go unseen by searches.
pub const MAX_SEARCH_CACHE_SECS: u32 = 300;
/// One day: long enough to paste a new secret into the platform at leisure; pass 0 to cut an
/// old (leaked) secret off at once.
pub const DEFAULT_ROTATION_GRACE_SECS: u64 = 86_400;
const MAX_ROTATION_GRACE_SECS: u64 = 30 * 86_400;
const MAX_SKEW_SECS: u32 = 300;
/// A signed URL is a bearer credential for one lookup; more than a day is never needed.
pub const MAX_MAX_TTL_SECS: u32 = 86_400;
const MAX_ORIGINS: usize = 20;
const MAX_ACTIVITIES: u32 = 50;
const SECRET_CHARS: std::ops::RangeInclusive<usize> = 8..=512;

/// What the card shows besides name, e-mails, phones, company and owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CardSettings {
    /// Notes, calls, meetings and tickets shown, newest first; 0 hides the section.
    pub max_activities: u32,
    /// Figures the CRM offers (open tickets, sales, …).
    pub show_figures: bool,
    /// The connection's extra card fields (for Vtiger: `fields.card_fields`).
    pub show_extra_fields: bool,
}

impl Default for CardSettings {
    fn default() -> Self {
        Self { max_activities: 10, show_figures: true, show_extra_fields: true }
    }
}

/// The stored (non-secret) settings, always valid once constructed through [`ChannelInput`]
/// or [`ChannelSettings::of`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    pub connection_id: ConnectionId,
    pub skew_secs: u32,
    pub max_ttl_secs: u32,
    pub result_limit: u32,
    /// How long a search's results are reused for the same term (per tenant and connection);
    /// 0, the default, asks the CRM every time. The trade-off: within this time a contact
    /// renamed, added or removed in the CRM is not seen by a search already answered.
    /// Concurrent identical searches share one CRM call whatever this is.
    #[serde(default)]
    pub search_cache_secs: u32,
    pub rotation_grace_secs: u64,
    /// Origins (`https://host[:port]`) allowed to frame the card; empty means
    /// `respond::DEFAULT_FRAME_ANCESTORS`.
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub card: CardSettings,
}

impl ChannelSettings {
    /// The tenant's channel settings; `None` when the channel is not configured. Stored
    /// settings are validated again: a row written by an older version, or by hand, must not
    /// switch the channel on with values this version refuses.
    pub async fn load(store: &Store, tenant: &Tenant) -> Result<Option<Self>, ConfigureError> {
        let Some(raw) = store.channel_settings(tenant.id).get(SETTINGS_KEY).await? else { return Ok(None) };
        Ok(Some(Self::from_stored(Value::Object(raw))?))
    }

    fn from_stored(raw: Value) -> Result<Self, FieldError> {
        let field = |e: serde_json::Error| FieldError::new(SETTINGS_KEY, e.to_string());
        let settings: Self = serde_json::from_value(raw).map_err(field)?;
        settings.validate().map_err(|e| FieldError::new(format!("{SETTINGS_KEY}.{}", e.field), e.message))?;
        Ok(settings)
    }

    pub fn search_cache_ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.search_cache_secs))
    }

    pub fn policy(&self) -> Policy {
        Policy { skew_secs: self.skew_secs, max_ttl_secs: self.max_ttl_secs }
    }

    fn validate(&self) -> Result<(), FieldError> {
        within("skew_secs", self.skew_secs, 0, MAX_SKEW_SECS)?;
        within("max_ttl_secs", self.max_ttl_secs, 1, MAX_MAX_TTL_SECS)?;
        within("result_limit", self.result_limit, 1, MAX_RESULT_LIMIT)?;
        within("search_cache_secs", self.search_cache_secs, 0, MAX_SEARCH_CACHE_SECS)?;
        within("rotation_grace_secs", self.rotation_grace_secs, 0, MAX_ROTATION_GRACE_SECS)?;
        within("card.max_activities", self.card.max_activities, 0, MAX_ACTIVITIES)?;
        if self.allowed_origins.len() > MAX_ORIGINS {
            return Err(FieldError::new("allowed_origins", format!("at most {MAX_ORIGINS} origins")));
        }
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            if parse_origin(origin).as_deref() != Some(origin.as_str()) {
                return Err(FieldError::new(
                    format!("allowed_origins[{i}]"),
                    "must be an origin such as https://app.example.com",
                ));
            }
        }
        Ok(())
    }

    fn to_json(&self) -> serde_json::Map<String, Value> {
        // A struct of plain strings and numbers: it serialises to an object, always.
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        }
    }
}

fn within<T: PartialOrd + std::fmt::Display>(field: &str, value: T, min: T, max: T) -> Result<(), FieldError> {
    if value < min || value > max {
        return Err(FieldError::new(field, format!("must be between {min} and {max} (got {value})")));
    }
    Ok(())
}

/// `scheme://host[:port]` of an `http(s)` URL that is nothing but an origin; `None` otherwise.
/// The result goes into a CSP `frame-ancestors` list, so nothing else may get through.
fn parse_origin(raw: &str) -> Option<String> {
    let url = url::Url::parse(raw.trim()).ok()?;
    let bare = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    bare.then(|| url.origin().ascii_serialization())
}

/// The body of `PUT /admin/v1/tenants/{slug}/channels/social-inbox` (and the CLI's flags).
/// It replaces every non-secret setting (absent ones take their defaults); secrets change only
/// when given or when `generate_secrets` is set, and are generated when none exist yet.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelInput {
    pub connection_id: String,
    /// One secret for both endpoints.
    pub secret: Option<Secret>,
    pub search_secret: Option<Secret>,
    pub iframe_secret: Option<Secret>,
    /// Replace both secrets with fresh generated ones.
    #[serde(default)]
    pub generate_secrets: bool,
    pub rotation_grace_secs: Option<u64>,
    pub skew_secs: Option<u32>,
    pub max_ttl_secs: Option<u32>,
    pub result_limit: Option<u32>,
    pub search_cache_secs: Option<u32>,
    pub allowed_origins: Option<Vec<String>>,
    pub card: Option<CardSettings>,
}

/// What to do with one endpoint's secret.
#[derive(Debug)]
enum SecretChange {
    /// Keep the current one (generate one if there is none).
    Keep,
    Set(Secret),
    Generate,
}

struct Plan {
    settings: ChannelSettings,
    search: SecretChange,
    iframe: SecretChange,
}

impl ChannelInput {
    fn into_plan(self) -> Result<Plan, FieldError> {
        let connection_id = self
            .connection_id
            .trim()
            .parse()
            .map_err(|_| FieldError::new("connection_id", "must be the id of one of the tenant's connections"))?;
        let allowed_origins = self
            .allowed_origins
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                parse_origin(raw).ok_or_else(|| {
                    FieldError::new(
                        format!("allowed_origins[{i}]"),
                        "must be an origin such as https://app.example.com",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let defaults = Policy::default();
        let settings = ChannelSettings {
            connection_id,
            skew_secs: self.skew_secs.unwrap_or(defaults.skew_secs),
            max_ttl_secs: self.max_ttl_secs.unwrap_or(defaults.max_ttl_secs),
            result_limit: self.result_limit.unwrap_or(DEFAULT_RESULT_LIMIT),
            search_cache_secs: self.search_cache_secs.unwrap_or(0),
            rotation_grace_secs: self.rotation_grace_secs.unwrap_or(DEFAULT_ROTATION_GRACE_SECS),
            allowed_origins,
            card: self.card.unwrap_or_default(),
        };
        settings.validate()?;

        let given = |field: &str, secret: Option<Secret>| -> Result<SecretChange, FieldError> {
            match secret {
                Some(secret) => check_secret(field, &secret).map(|()| SecretChange::Set(secret)),
                None => Ok(SecretChange::Keep),
            }
        };
        let (search, iframe) = match (self.secret, self.generate_secrets) {
            (Some(_), _) if self.search_secret.is_some() || self.iframe_secret.is_some() => {
                return Err(FieldError::new("secret", "give either secret or search_secret/iframe_secret"));
            }
            (Some(_), true) => return Err(FieldError::new("generate_secrets", "cannot be combined with secret")),
            (Some(secret), false) => (given("secret", Some(secret.clone()))?, given("secret", Some(secret))?),
            (None, true) if self.search_secret.is_some() || self.iframe_secret.is_some() => {
                return Err(FieldError::new("generate_secrets", "cannot be combined with search_secret/iframe_secret"));
            }
            (None, true) => (SecretChange::Generate, SecretChange::Generate),
            (None, false) => (given("search_secret", self.search_secret)?, given("iframe_secret", self.iframe_secret)?),
        };
        Ok(Plan { settings, search, iframe })
    }
}

/// The platform accepts any string; crmhub refuses what is surely a mistake: very short
/// secrets, pasted whitespace at either end, control characters.
fn check_secret(field: &str, secret: &Secret) -> Result<(), FieldError> {
    let value = secret.expose();
    let chars = value.chars().count();
    if !SECRET_CHARS.contains(&chars) {
        let (min, max) = (SECRET_CHARS.start(), SECRET_CHARS.end());
        return Err(FieldError::new(field, format!("must be {min} to {max} characters (got {chars})")));
    }
    if value.trim() != value {
        return Err(FieldError::new(field, "must not start or end with whitespace"));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The channel as the admin API and the CLI show it: settings, endpoint URLs to paste into
/// the platform, and secret ids (never values, except `new_secrets` right after generating).
#[derive(Debug, Serialize)]
pub struct ChannelView {
    pub tenant: TenantSlug,
    pub settings: ChannelSettings,
    pub endpoints: Endpoints,
    pub secrets: SecretList,
    #[serde(skip_serializing_if = "NewSecrets::is_empty")]
    pub new_secrets: NewSecrets,
}

#[derive(Debug, Serialize)]
pub struct Endpoints {
    pub search_url: String,
    pub iframe_url: String,
}

#[derive(Debug, Serialize)]
pub struct SecretList {
    pub search: Vec<SecretInfo>,
    pub iframe: Vec<SecretInfo>,
}

#[derive(Debug, Serialize)]
pub struct SecretInfo {
    pub id: String,
    pub created_at: UnixMillis,
    /// When a superseded secret stops being accepted; `null` for the current one.
    pub retires_at: Option<UnixMillis>,
}

/// Secrets crmhub generated in this request: shown once, for the operator to paste into the
/// platform. Not stored anywhere in the clear.
#[derive(Debug, Default)]
pub struct NewSecrets {
    pub search: Option<Secret>,
    pub iframe: Option<Secret>,
}

impl NewSecrets {
    fn is_empty(&self) -> bool {
        self.search.is_none() && self.iframe.is_none()
    }

    fn slot(&mut self, endpoint: Endpoint) -> &mut Option<Secret> {
        match endpoint {
            Endpoint::Search => &mut self.search,
            Endpoint::Iframe => &mut self.iframe,
        }
    }
}

impl Serialize for NewSecrets {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (name, secret) in [("search", &self.search), ("iframe", &self.iframe)] {
            if let Some(secret) = secret {
                // The one place a channel secret leaves crmhub: the response that created it.
                map.serialize_entry(name, secret.expose())?;
            }
        }
        map.end()
    }
}

/// Applies `input` to the tenant: validates it, checks the connection, stores the settings and
/// rotates the secrets that change (the superseded ones stay valid for the grace period).
pub async fn configure(
    state: &AppState,
    tenant: &Tenant,
    input: ChannelInput,
    public_url: &url::Url,
) -> Result<ChannelView, ConfigureError> {
    let store = &state.store;
    let plan = input.into_plan()?;
    let connection = match store.connections(tenant.id).get(plan.settings.connection_id).await {
        Err(StoreError::NotFound { .. }) => {
            return Err(FieldError::new("connection_id", "no connection with this id belongs to the tenant").into());
        }
        other => other?,
    };
    // A connection that cannot search or show a card would fail every request of the
    // platform; refuse it here, where the operator sees why.
    let crm = match state.crms.crm(store, &state.connectors, tenant, &connection, Lane::Interactive).await {
        Ok(crm) => crm,
        Err(AccessError::Store(e)) => return Err(e.into()),
        Err(AccessError::Crm(e)) => return Err(FieldError::new("connection_id", e.to_string()).into()),
    };
    if let Some(missing) = REQUIRED.iter().find(|c| !crm.supports(**c)) {
        return Err(FieldError::new(
            "connection_id",
            format!(
                "the connection's connector ({}) does not support {missing}, which the social inbox needs",
                connection.kind
            ),
        )
        .into());
    }
    store.channel_settings(tenant.id).put(SETTINGS_KEY, &plan.settings.to_json()).await?;

    let grace = Duration::from_secs(plan.settings.rotation_grace_secs);
    let secrets = store.secrets(tenant.id);
    let mut new_secrets = NewSecrets::default();
    for (endpoint, change) in [(Endpoint::Search, plan.search), (Endpoint::Iframe, plan.iframe)] {
        let current = secrets.valid(endpoint.purpose()).await?;
        let current = current.iter().find(|s| s.retires_at.is_none());
        let replacement = match change {
            SecretChange::Keep if current.is_some() => None,
            // Setting the secret it already has is not a rotation (the demo does it at every start).
            SecretChange::Set(secret) if current.is_some_and(|c| c.secret == secret) => None,
            SecretChange::Set(secret) => Some(secret),
            SecretChange::Keep | SecretChange::Generate => {
                let secret = Secret::generate();
                *new_secrets.slot(endpoint) = Some(secret.clone());
                Some(secret)
            }
        };
        if let Some(secret) = replacement {
            let stored = secrets.rotate(endpoint.purpose(), Some(secret), grace).await?;
            tracing::info!(tenant = %tenant.slug, endpoint = endpoint.name(), secret_id = %stored.id, grace_secs = grace.as_secs(), "social inbox secret rotated");
        }
    }
    let view = view(store, tenant, plan.settings, public_url).await?;
    Ok(ChannelView { new_secrets, ..view })
}

/// The tenant's channel, or `None` when it is not configured.
pub async fn show(
    store: &Store,
    tenant: &Tenant,
    public_url: &url::Url,
) -> Result<Option<ChannelView>, ConfigureError> {
    match ChannelSettings::load(store, tenant).await? {
        Some(settings) => Ok(Some(view(store, tenant, settings, public_url).await?)),
        None => Ok(None),
    }
}

/// Removes the settings and revokes every secret at once (no grace). Returns whether the
/// channel was configured.
pub async fn remove(store: &Store, tenant: &Tenant) -> Result<bool, StoreError> {
    let had_settings = store.channel_settings(tenant.id).remove(SETTINGS_KEY).await?;
    let mut revoked = 0;
    for endpoint in Endpoint::ALL {
        revoked += store.secrets(tenant.id).revoke_all(endpoint.purpose()).await?;
    }
    Ok(had_settings || revoked > 0)
}

async fn view(
    store: &Store,
    tenant: &Tenant,
    settings: ChannelSettings,
    public_url: &url::Url,
) -> Result<ChannelView, StoreError> {
    let secrets = store.secrets(tenant.id);
    let info = |list: Vec<crmhub_store::secrets::StoredSecret>| -> Vec<SecretInfo> {
        list.into_iter().map(|s| SecretInfo { id: s.id, created_at: s.created_at, retires_at: s.retires_at }).collect()
    };
    Ok(ChannelView {
        tenant: tenant.slug.clone(),
        settings,
        endpoints: Endpoints {
            search_url: endpoint_url(public_url, &tenant.slug, Endpoint::Search),
            iframe_url: endpoint_url(public_url, &tenant.slug, Endpoint::Iframe),
        },
        secrets: SecretList {
            search: info(secrets.valid(Endpoint::Search.purpose()).await?),
            iframe: info(secrets.valid(Endpoint::Iframe.purpose()).await?),
        },
        new_secrets: NewSecrets::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ChannelInput {
        ChannelInput { connection_id: ConnectionId::new().to_string(), ..Default::default() }
    }

    fn refused(input: ChannelInput) -> FieldError {
        input.into_plan().err().expect("refused")
    }

    #[test]
    fn defaults_fill_what_is_absent() {
        let plan = input().into_plan().unwrap();
        let s = plan.settings;
        assert_eq!((s.skew_secs, s.max_ttl_secs, s.result_limit), (30, 3600, 20));
        assert_eq!(s.rotation_grace_secs, DEFAULT_ROTATION_GRACE_SECS);
        assert_eq!(s.search_cache_secs, 0, "no result cache unless asked for");
        assert_eq!(s.card, CardSettings::default());
        assert!(matches!((plan.search, plan.iframe), (SecretChange::Keep, SecretChange::Keep)));
    }

    #[test]
    fn every_refusal_names_its_field() {
        let cases: Vec<(ChannelInput, &str)> = vec![
            (ChannelInput { connection_id: "nope".into(), ..input() }, "connection_id"),
            (ChannelInput { skew_secs: Some(301), ..input() }, "skew_secs"),
            (ChannelInput { max_ttl_secs: Some(0), ..input() }, "max_ttl_secs"),
            (ChannelInput { max_ttl_secs: Some(86_401), ..input() }, "max_ttl_secs"),
            (ChannelInput { result_limit: Some(0), ..input() }, "result_limit"),
            (ChannelInput { result_limit: Some(101), ..input() }, "result_limit"),
            (ChannelInput { rotation_grace_secs: Some(31 * 86_400), ..input() }, "rotation_grace_secs"),
            (ChannelInput { search_cache_secs: Some(301), ..input() }, "search_cache_secs"),
            (
                ChannelInput { card: Some(CardSettings { max_activities: 51, ..Default::default() }), ..input() },
                "card.max_activities",
            ),
            (
                ChannelInput { allowed_origins: Some(vec!["https://ok.example".into(), "nope".into()]), ..input() },
                "allowed_origins[1]",
            ),
            (ChannelInput { secret: Some(Secret::new("short")), ..input() }, "secret"),
            (ChannelInput { search_secret: Some(Secret::new(" padded-secret")), ..input() }, "search_secret"),
            (ChannelInput { iframe_secret: Some(Secret::new("line\nbreak!")), ..input() }, "iframe_secret"),
            (
                ChannelInput {
                    secret: Some(Secret::new("changeme!")),
                    search_secret: Some(Secret::new("changeme!")),
                    ..input()
                },
                "secret",
            ),
            (
                ChannelInput { secret: Some(Secret::new("changeme!")), generate_secrets: true, ..input() },
                "generate_secrets",
            ),
            (
                ChannelInput { iframe_secret: Some(Secret::new("changeme!")), generate_secrets: true, ..input() },
                "generate_secrets",
            ),
        ];
        for (input, field) in cases {
            assert_eq!(refused(input).field, field);
        }
    }

    #[test]
    fn origins_are_normalised_and_nothing_but_origins_passes() {
        assert_eq!(parse_origin("https://App.Example.com").as_deref(), Some("https://app.example.com"));
        assert_eq!(parse_origin("https://app.example.com:8443/").as_deref(), Some("https://app.example.com:8443"));
        assert_eq!(parse_origin("http://localhost:3000").as_deref(), Some("http://localhost:3000"));
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "https://app.example.com/?q",
            "https://app.example.com/#f",
            "https://user@app.example.com",
            "ftp://app.example.com",
            "javascript:alert(1)",
            "https://a.example; script-src *",
            "'self'",
            "*",
        ] {
            assert_eq!(parse_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn one_secret_serves_both_endpoints() {
        let plan = ChannelInput { secret: Some(Secret::new("changeme!")), ..input() }.into_plan().unwrap();
        match (plan.search, plan.iframe) {
            (SecretChange::Set(a), SecretChange::Set(b)) => assert!(a == b && a.expose() == "changeme!"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hand_edited_settings_are_validated_when_read() {
        let good = input().into_plan().unwrap().settings;
        let stored = |map: serde_json::Map<String, Value>| ChannelSettings::from_stored(Value::Object(map));
        assert_eq!(stored(good.to_json()).unwrap(), good.clone());
        let mut bad = good.to_json();
        bad.insert("result_limit".into(), 0.into());
        assert_eq!(stored(bad).unwrap_err().field, "social_inbox.result_limit");
        let mut origins = good.to_json();
        origins.insert("allowed_origins".into(), serde_json::json!(["https://x.example; script-src *"]));
        assert!(stored(origins).is_err());
        assert!(ChannelSettings::from_stored(serde_json::json!("nonsense")).is_err());
        // Rows written before the result cache existed read as "no cache".
        let mut older = good.to_json();
        older.remove("search_cache_secs");
        assert_eq!(stored(older).unwrap().search_cache_secs, 0);
    }
}
