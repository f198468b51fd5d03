//! The native Kommo (amoCRM) connector: OAuth 2.0 with rotating refresh tokens (or a
//! long-lived token), the contacts API v4, notes, and the account's webhook subscriptions, as
//! `shared/contracts/kommo.md` describes them.
//!
//! A connection names one Kommo account. Its `host` is where the API is reached: the account's
//! own `https://{subdomain}.kommo.com` (or `.amocrm.ru`) — never `www.`, where Kommo refuses API
//! calls. Any other host (a simulator, an egress proxy) needs the field `account` naming the
//! account domain, which the OAuth callback's `referer` must then match.

mod api;
mod contacts;
mod crm;
mod pause;
mod tokens;
pub mod webhook;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use crmhub_core::crm::CrmError;
use crmhub_core::{Credentials, Host, PhoneRegion, Secret};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

use crate::auth::{AuthKey, SharedAuth};
use crate::http::{CallContext, HttpClient, RateSpec};

pub use pause::{HostBlock, HostBlockListener, HostPauses};
pub use tokens::Connected;
pub use writes::{BATCH, ContactWrite};

/// The events crmhub subscribes to when a pipeline mirrors an account's contacts.
pub const WEBHOOK_EVENTS: [&str; 4] = ["add_contact", "update_contact", "delete_contact", "restore_contact"];

/// Kommo allows "not more than 7 requests per second" (contract §3), counted (as far as one can
/// tell) over any second. A token bucket lets `burst + rate` requests into one rolling second,
/// so 7 per second with a burst of 7 would send 14: the budget is 6 per second with no burst,
/// at most 7 in any second even when network jitter bunches two requests. It is per account
/// (every connection to it, and on PostgreSQL every instance, spend one bucket).
pub const RATE: RateSpec = RateSpec { per_second: 6.0, burst: 1 };

/// The domains Kommo accounts live under.
const ACCOUNT_BASES: [&str; 2] = ["kommo.com", "amocrm.ru"];

/// Whether `host` is a Kommo account's own domain: exactly one label (the subdomain) under
/// `kommo.com` or `amocrm.ru`, and not `www` (Kommo's site, which refuses API calls). Anything
/// else — `kommo.com.evil.test`, `evilkommo.com`, `a.b.kommo.com` — is not, so neither an API
/// call nor the client secret is ever sent there on a callback's word.
pub fn is_account_domain(host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    ACCOUNT_BASES.iter().any(|base| {
        let Some(label) = host.strip_suffix(base).and_then(|rest| rest.strip_suffix('.')) else { return false };
        !label.is_empty()
            && label != "www"
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

/// How Kommo's consent window hands back to crmhub (contract §1): `popup` closes the window and
/// redirects the main one; `post_message` redirects in the opened window, which tells its opener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizeMode {
    Popup,
    PostMessage,
}

impl AuthorizeMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Popup => "popup",
            Self::PostMessage => "post_message",
        }
    }
}

/// Non-secret settings of a Kommo connection (`fields` in the admin API).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KommoFields {
    /// The account domain (`mycompany.kommo.com`) when `host` is not the account's own.
    #[serde(default)]
    pub account: Option<String>,
    /// Kommo's numeric account id, learnt when the connection is connected.
    #[serde(default)]
    pub account_id: Option<i64>,
}

/// How the connection proves itself to Kommo.
#[derive(Debug, Clone)]
enum Grant {
    /// Authorization code flow: tokens live in the shared auth state, refreshed as they age.
    OAuth { client_id: String, client_secret: Secret },
    /// A private integration's long-lived token: used as is, never refreshed (contract §2).
    LongLived(Secret),
}

/// Which of a connection's credentials are set, checked before anything is stored.
fn grant(credentials: &Credentials) -> Result<Grant, CrmError> {
    let get = |name: &str| credentials.get(name).filter(|v| !v.is_empty());
    let names: Vec<&str> = credentials.names().collect();
    if let Some(unknown) = names.iter().find(|n| !["client_id", "client_secret", "long_lived_token"].contains(n)) {
        return Err(CrmError::validation(
            format!("credentials.{unknown}"),
            "is not a Kommo credential; expected client_id and client_secret, or long_lived_token",
        ));
    }
    match (get("client_id"), get("client_secret"), get("long_lived_token")) {
        (Some(id), Some(secret), None) => {
            Ok(Grant::OAuth { client_id: id.expose().trim().to_owned(), client_secret: secret.clone() })
        }
        (None, None, Some(token)) => Ok(Grant::LongLived(token.clone())),
        (_, _, Some(_)) => Err(CrmError::validation(
            "credentials.long_lived_token",
            "cannot be combined with client_id/client_secret: choose one way to connect",
        )),
        (None, _, None) => Err(CrmError::validation(
            "credentials.client_id",
            "is required (the integration id), with client_secret; or give long_lived_token",
        )),
        (Some(_), None, None) => Err(CrmError::validation(
            "credentials.client_secret",
            "is required with client_id: the integration's secret key",
        )),
    }
}

/// The account domain a connection is for: the host's own domain when it is one, else the
/// `account` field (which a host that is an account domain must agree with).
fn account_domain(host: &Host, fields: &KommoFields) -> Result<String, CrmError> {
    let url = Url::parse(host.as_str()).map_err(|e| CrmError::validation("host", e.to_string()))?;
    let host_name = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if ["www.kommo.com", "www.amocrm.ru", "kommo.com", "amocrm.ru"].contains(&host_name.as_str()) {
        return Err(CrmError::validation(
            "host",
            "must be the account's own address (https://{subdomain}.kommo.com): Kommo refuses API calls on its main site",
        ));
    }
    let field = fields.account.as_deref().map(|a| a.trim().to_ascii_lowercase());
    if let Some(account) = &field {
        if !is_account_domain(account) {
            return Err(CrmError::validation(
                "fields.account",
                format!(
                    "{account:?} is not a Kommo account domain ({{subdomain}}.kommo.com or {{subdomain}}.amocrm.ru)"
                ),
            ));
        }
    }
    if is_account_domain(&host_name) {
        if url.scheme() != "https" {
            return Err(CrmError::validation("host", "Kommo is reached over https only"));
        }
        return match field {
            Some(account) if account != host_name => Err(CrmError::validation(
                "fields.account",
                format!("{account:?} differs from the host's account {host_name:?}; leave it out"),
            )),
            _ => Ok(host_name),
        };
    }
    field.ok_or_else(|| {
        CrmError::validation(
            "fields.account",
            "is required when host is not the account's own domain (a simulator or proxy): the account domain, e.g. mycompany.kommo.com",
        )
    })
}

/// Checks a Kommo connection's host, fields and credentials before it is stored.
pub fn validate(host: &Host, fields: &Map<String, Value>, credentials: &Credentials) -> Result<(), CrmError> {
    let parsed = KommoFields::parse(fields)?;
    account_domain(host, &parsed)?;
    grant(credentials)?;
    Ok(())
}

impl KommoFields {
    pub fn parse(fields: &Map<String, Value>) -> Result<Self, CrmError> {
        serde_json::from_value(Value::Object(fields.clone())).map_err(|e| CrmError::validation("fields", e.to_string()))
    }
}

/// What every Kommo connector of this process shares: where OAuth hands back to crmhub, how
/// long a 403 IP block pauses a host, and the pauses themselves.
#[derive(Debug, Clone)]
pub struct KommoShared {
    /// `{public_url}/oauth/kommo/callback`, sent with every token request (Kommo checks it
    /// against the integration's registered redirect URI).
    pub redirect_uri: Option<Url>,
    pub pauses: HostPauses,
    /// Each account's request budget: [`RATE`] unless an operator knows better.
    pub rate: RateSpec,
}

impl Default for KommoShared {
    fn default() -> Self {
        Self { redirect_uri: None, pauses: HostPauses::new(Duration::from_secs(15 * 60)), rate: RATE }
    }
}

pub struct Kommo {
    http: HttpClient,
    auth: SharedAuth,
    /// Where the API and the token endpoint are: `https://{account}` or the configured host.
    base: Host,
    account: String,
    grant: Grant,
    /// Whose tokens these are (the connection and a hash of its client credentials, so that
    /// new credentials never inherit tokens issued under the old ones).
    token_key: AuthKey,
    ctx: CallContext,
    shared: KommoShared,
    region: Option<PhoneRegion>,
    /// Company names by id, briefly: a card shows the contact's company.
    companies: std::sync::Mutex<std::collections::HashMap<i64, (String, std::time::Instant)>>,
}

impl std::fmt::Debug for Kommo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kommo").field("base", &self.base.as_str()).field("account", &self.account).finish()
    }
}

impl Kommo {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        http: HttpClient,
        auth: SharedAuth,
        ctx: CallContext,
        shared: KommoShared,
        host: &Host,
        fields: &Map<String, Value>,
        credentials: &Credentials,
        region: Option<PhoneRegion>,
    ) -> Result<Self, CrmError> {
        let parsed = KommoFields::parse(fields)?;
        let account = account_domain(host, &parsed)?;
        let grant = grant(credentials)?;
        let connection = ctx.owner.map(|(_, id)| id.to_string()).unwrap_or_else(|| "unowned".into());
        let fingerprint = match &grant {
            Grant::OAuth { client_id, client_secret } => format!("{client_id}:{}", client_secret.expose()),
            Grant::LongLived(token) => token.expose().to_owned(),
        };
        let digest = hex::encode(&Sha256::digest(format!("crmhub-kommo:{fingerprint}"))[..8]);
        let token_key =
            AuthKey { lock: format!("kommo-token:{connection}"), state: format!("kommo:{connection}:{digest}") };
        let secrets: Vec<Secret> = match &grant {
            Grant::OAuth { client_secret, .. } => vec![client_secret.clone()],
            Grant::LongLived(token) => vec![token.clone()],
        };
        let mut ctx = ctx.redacting(secrets).budget_key(format!("kommo:{account}"));
        ctx.rate = Some(shared.rate);
        Ok(Self {
            http,
            auth,
            base: host.clone(),
            account,
            grant,
            token_key,
            ctx,
            shared,
            region,
            companies: std::sync::Mutex::default(),
        })
    }

    /// The Kommo account this connection is for (`mycompany.kommo.com`).
    pub fn account_domain(&self) -> &str {
        &self.account
    }

    /// The integration id, for OAuth connections.
    pub fn client_id(&self) -> Option<&str> {
        match &self.grant {
            Grant::OAuth { client_id, .. } => Some(client_id),
            Grant::LongLived(_) => None,
        }
    }

    /// Where the user grants access (contract §1): Kommo's own site for the account's region,
    /// or the configured host's `/oauth` when it is not Kommo's (a simulator).
    pub fn authorize_url(&self, state: &str, mode: AuthorizeMode) -> Url {
        let site = if self.base.as_str().ends_with(".amocrm.ru") && is_account_domain(&self.host_name()) {
            "https://www.amocrm.ru/oauth".to_owned()
        } else if is_account_domain(&self.host_name()) {
            "https://www.kommo.com/oauth".to_owned()
        } else {
            self.base.join("oauth")
        };
        let mut url = Url::parse(&site).expect("the authorize URL is built from a parsed host");
        url.query_pairs_mut()
            .append_pair("client_id", self.client_id().unwrap_or_default())
            .append_pair("state", state)
            .append_pair("mode", mode.as_str());
        url
    }

    fn host_name(&self) -> String {
        Url::parse(self.base.as_str()).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default()
    }

    /// Where a person opens a contact in Kommo.
    fn contact_url(&self, id: i64) -> String {
        format!("https://{}/contacts/detail/{id}", self.account)
    }
}

/// Builds a Kommo connector; the `Connectors` factory calls this.
pub(crate) fn build(
    http: HttpClient,
    auth: SharedAuth,
    ctx: CallContext,
    shared: &KommoShared,
    spec: &crate::ConnectionSpec<'_>,
) -> Result<Arc<Kommo>, CrmError> {
    Ok(Arc::new(Kommo::new(http, auth, ctx, shared.clone(), spec.host, spec.fields, spec.credentials, spec.region)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_domains_are_one_label_under_kommo_or_amocrm() {
        for good in ["demo.kommo.com", "My-Shop.kommo.com", "test.amocrm.ru", "x1.kommo.com"] {
            assert!(is_account_domain(good), "{good}");
        }
        for bad in [
            "kommo.com",
            "www.kommo.com",
            "www.amocrm.ru",
            "kommo.com.evil.test",
            "evilkommo.com",
            "demo.evilkommo.com",
            "a.b.kommo.com",
            "demo.kommo.com.",
            "-x.kommo.com",
            "demo kommo.com",
            "",
        ] {
            assert!(!is_account_domain(bad), "{bad}");
        }
    }

    fn creds(pairs: &[(&str, &str)]) -> Credentials {
        let mut c = Credentials::new();
        for (k, v) in pairs {
            c.insert(*k, Secret::new(*v));
        }
        c
    }

    #[test]
    fn credentials_are_either_oauth_or_a_long_lived_token() {
        assert!(matches!(grant(&creds(&[("client_id", "a"), ("client_secret", "b")])), Ok(Grant::OAuth { .. })));
        assert!(matches!(grant(&creds(&[("long_lived_token", "t")])), Ok(Grant::LongLived(_))));
        let field = |c: &[(&str, &str)]| match grant(&creds(c)) {
            Err(CrmError::Validation { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(&[("client_id", "a")]), "credentials.client_secret");
        assert_eq!(field(&[]), "credentials.client_id");
        assert_eq!(
            field(&[("client_id", "a"), ("client_secret", "b"), ("long_lived_token", "t")]),
            "credentials.long_lived_token"
        );
        assert_eq!(field(&[("access_key", "x")]), "credentials.access_key");
    }

    fn fields(account: Option<&str>) -> KommoFields {
        KommoFields { account: account.map(str::to_owned), account_id: None }
    }

    #[test]
    fn the_account_comes_from_the_host_or_the_account_field() {
        let host = |h: &str| Host::parse(h).unwrap();
        assert_eq!(account_domain(&host("https://demo.kommo.com"), &fields(None)).unwrap(), "demo.kommo.com");
        assert_eq!(
            account_domain(&host("http://127.0.0.1:9000"), &fields(Some("demo.kommo.com"))).unwrap(),
            "demo.kommo.com"
        );
        let refused = |h: &str, a: Option<&str>| match account_domain(&host(h), &fields(a)) {
            Err(CrmError::Validation { field, .. }) => field,
            other => panic!("{h}: {other:?}"),
        };
        assert_eq!(refused("https://www.kommo.com", None), "host");
        assert_eq!(refused("http://demo.kommo.com", None), "host");
        assert_eq!(refused("http://127.0.0.1:9000", None), "fields.account");
        assert_eq!(refused("http://127.0.0.1:9000", Some("kommo.com.evil.test")), "fields.account");
        assert_eq!(refused("https://demo.kommo.com", Some("other.kommo.com")), "fields.account");
    }
}
