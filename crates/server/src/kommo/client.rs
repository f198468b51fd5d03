//! The one place that reaches the Kommo connector (`crmhub_connectors::kommo`): everything
//! else in this module goes through `KommoAccount`.

use std::sync::Arc;
use std::time::Duration;

use crmhub_connectors::Connectors;
use crmhub_connectors::http::Lane;
use crmhub_core::crm::CrmError;
use crmhub_core::{ConnectorKind, Credentials, Secret};
use crmhub_store::Store;
use crmhub_store::connections::Connection;
use crmhub_store::kommo::AuthorizeMode;
use crmhub_store::tenants::Tenant;
use subtle::ConstantTimeEq;

use crate::crm_access::AccessError;

/// What the connector reports after a code exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connected {
    pub account_id: i64,
    pub expires_at: i64,
}

/// A Kommo connection's connector, with the connection it was built for.
pub struct KommoAccount {
    connection: Connection,
    credentials: Credentials,
}

impl KommoAccount {
    pub async fn build(
        store: &Store,
        _connectors: &Connectors,
        tenant: &Tenant,
        connection: &Connection,
        _lane: Lane,
    ) -> Result<Self, AccessError> {
        if connection.kind != ConnectorKind::Kommo {
            return Err(AccessError::Crm(CrmError::validation("kind", "not a kommo connection")));
        }
        let credentials = store.connections(tenant.id).credentials(connection.id).await?;
        Ok(Self { connection: connection.clone(), credentials })
    }

    /// The Kommo account this connection is for (`demo.kommo.com`).
    pub fn account_domain(&self) -> String {
        if let Some(account) = self.connection.fields.get("account").and_then(|v| v.as_str()) {
            return account.to_ascii_lowercase();
        }
        url::Url::parse(self.connection.host.as_str())
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .unwrap_or_default()
    }

    /// `None` for a long-lived-token connection.
    pub fn client_id(&self) -> Option<&str> {
        self.credentials.get("client_id").map(Secret::expose)
    }

    /// Whether `presented` is this connection's client id, compared in constant time.
    pub fn has_client_id(&self, presented: &str) -> bool {
        self.client_id().is_some_and(|id| id.as_bytes().ct_eq(presented.as_bytes()).into())
    }

    /// The integration's client secret, which keys the widget's tokens.
    pub fn client_secret(&self) -> Option<&Secret> {
        self.credentials.get("client_secret")
    }

    pub fn authorize_url(&self, state: &str, mode: AuthorizeMode) -> url::Url {
        let mut url = url::Url::parse("https://www.kommo.com/oauth").expect("static URL");
        url.query_pairs_mut()
            .append_pair("client_id", self.client_id().unwrap_or_default())
            .append_pair("state", state)
            .append_pair("mode", mode.as_str());
        url
    }

    pub async fn exchange_code(&self, _code: &Secret) -> Result<Connected, CrmError> {
        Err(not_built())
    }

    pub async fn refresh_if_expiring(&self, _within: Duration) -> Result<Option<i64>, CrmError> {
        Err(not_built())
    }

    pub async fn subscribe_webhook(&self, _destination: &url::Url, _events: &[&str]) -> Result<(), CrmError> {
        Err(not_built())
    }

    pub async fn unsubscribe_webhook(&self, _destination: &url::Url) -> Result<(), CrmError> {
        Err(not_built())
    }
}

fn not_built() -> CrmError {
    CrmError::Unavailable("the kommo connector is not available in this version of crmhub".into())
}

/// `{label}.kommo.com` or `{label}.amocrm.ru`, never `www.`.
pub fn is_account_domain(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    ["kommo.com", "amocrm.ru"].iter().any(|base| {
        host.strip_suffix(base).and_then(|label| label.strip_suffix('.')).is_some_and(|label| {
            !label.is_empty()
                && label != "www"
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
        })
    })
}

pub const WEBHOOK_EVENTS: [&str; 4] = ["add_contact", "update_contact", "delete_contact", "restore_contact"];

pub type Shared = Arc<KommoAccount>;
