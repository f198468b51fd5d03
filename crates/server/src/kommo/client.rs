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

pub use crmhub_connectors::kommo::{Connected, WEBHOOK_EVENTS, is_account_domain};

/// A Kommo connection's connector, with the integration's secret (which keys the widget's
/// tokens).
pub struct KommoAccount {
    kommo: Arc<crmhub_connectors::kommo::Kommo>,
    credentials: Credentials,
}

impl KommoAccount {
    pub async fn build(
        store: &Store,
        connectors: &Connectors,
        tenant: &Tenant,
        connection: &Connection,
        lane: Lane,
    ) -> Result<Self, AccessError> {
        if connection.kind != ConnectorKind::Kommo {
            return Err(AccessError::Crm(CrmError::validation("kind", "not a kommo connection")));
        }
        let credentials = store.connections(tenant.id).credentials(connection.id).await?;
        let kommo = connectors.kommo(crate::crm_access::spec(tenant, connection, &credentials, &None), lane)?;
        Ok(Self { kommo, credentials })
    }

    /// The Kommo account this connection is for (`demo.kommo.com`).
    pub fn account_domain(&self) -> String {
        self.kommo.account_domain().to_ascii_lowercase()
    }

    /// `None` for a long-lived-token connection.
    pub fn client_id(&self) -> Option<&str> {
        self.kommo.client_id()
    }

    /// Whether `presented` is this connection's client id, compared in constant time.
    pub fn has_client_id(&self, presented: &str) -> bool {
        self.client_id().is_some_and(|id| id.as_bytes().ct_eq(presented.as_bytes()).into())
    }

    pub fn client_secret(&self) -> Option<&Secret> {
        self.credentials.get("client_secret")
    }

    pub fn authorize_url(&self, state: &str, mode: AuthorizeMode) -> url::Url {
        let mode = match mode {
            AuthorizeMode::Popup => crmhub_connectors::kommo::AuthorizeMode::Popup,
            AuthorizeMode::PostMessage => crmhub_connectors::kommo::AuthorizeMode::PostMessage,
        };
        self.kommo.authorize_url(state, mode)
    }

    pub async fn exchange_code(&self, code: &Secret) -> Result<Connected, CrmError> {
        self.kommo.exchange_code(code).await
    }

    pub async fn refresh_if_expiring(&self, within: Duration) -> Result<Option<i64>, CrmError> {
        self.kommo.refresh_if_expiring(within).await
    }

    pub async fn subscribe_webhook(&self, destination: &url::Url, events: &[&str]) -> Result<(), CrmError> {
        self.kommo.subscribe_webhook(destination, events).await
    }

    pub async fn unsubscribe_webhook(&self, destination: &url::Url) -> Result<(), CrmError> {
        self.kommo.unsubscribe_webhook(destination).await
    }
}
