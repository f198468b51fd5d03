//! Reaching a tenant's CRM: building (and keeping) the connector for a connection, and testing
//! a connection. Channels, jobs, the admin API and the CLI all come through here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crmhub_connectors::http::{AddressPolicy, Lane};
use crmhub_connectors::template::{Template, TemplateConnector};
use crmhub_connectors::{ConnectionSpec, Connectors};
use crmhub_core::Credentials;
use crmhub_core::crm::{Capability, ConnectionCheck, Crm, CrmError, LabeledValue, SmsSender};
use crmhub_core::{ConnectionId, ConnectionStatus, ConnectorKind, UnixMillis};

use crate::templates::TemplateRegistry;
use crmhub_store::Store;
use crmhub_store::connections::Connection;
use crmhub_store::tenants::Tenant;
use serde::Serialize;

/// Connectors kept per connection and lane, so that caches inside them (Vtiger's describe,
/// the sync probe) outlive one request. An entry is rebuilt when the connection changes.
#[derive(Clone)]
pub struct CrmRegistry {
    built: Arc<Mutex<HashMap<BuiltKey, Built>>>,
    templates: TemplateRegistry,
    policy: AddressPolicy,
}

/// A connection, and whether its calls go in the interactive lane.
type BuiltKey = (ConnectionId, bool);

/// A connector, the connection version (`updated_at`) it was built from, and when it was last
/// used.
type Built = (UnixMillis, Arc<dyn Crm>, Instant);

/// A connector unused this long is dropped (with its caches and sessions held in memory): the
/// connection may be gone, deleted through another instance or the CLI.
const IDLE: Duration = Duration::from_secs(30 * 60);

impl CrmRegistry {
    pub fn new(templates: TemplateRegistry, policy: AddressPolicy) -> Self {
        Self { built: Arc::default(), templates, policy }
    }

    pub async fn crm(
        &self,
        store: &Store,
        connectors: &Connectors,
        tenant: &Tenant,
        connection: &Connection,
        lane: Lane,
    ) -> Result<Arc<dyn Crm>, AccessError> {
        let key = (connection.id, lane == Lane::Interactive);
        if let Some((version, crm, used)) = self.built.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&key) {
            if *version == connection.updated_at {
                *used = Instant::now();
                return Ok(crm.clone());
            }
        }
        let (credentials, template) = self.parts(store, tenant, connection).await?;
        let spec = spec(tenant, connection, &credentials, &template);
        let crm = connectors.crm(spec, lane)?;
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        built.retain(|_, (_, _, used)| used.elapsed() < IDLE);
        built.insert(key, (connection.updated_at, crm.clone(), Instant::now()));
        Ok(crm)
    }

    /// Drops the connectors built for a deleted connection.
    pub fn forget(&self, connection: ConnectionId) {
        self.built.lock().unwrap_or_else(|p| p.into_inner()).retain(|(id, _), _| *id != connection);
    }

    /// How many connectors are kept (for tests).
    pub fn kept(&self) -> usize {
        self.built.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The Unisender account behind a `unisender` connection (built per use: it keeps no cache).
    pub async fn unisender(
        &self,
        store: &Store,
        connectors: &Connectors,
        tenant: &Tenant,
        connection: &Connection,
    ) -> Result<Arc<crmhub_connectors::unisender::Unisender>, AccessError> {
        let (credentials, template) = self.parts(store, tenant, connection).await?;
        Ok(connectors.unisender(spec(tenant, connection, &credentials, &template), Lane::Background)?)
    }

    /// The SMS provider behind an `sms` template connection.
    pub async fn sms(
        &self,
        store: &Store,
        connectors: &Connectors,
        tenant: &Tenant,
        connection: &Connection,
    ) -> Result<Arc<dyn SmsSender>, AccessError> {
        let (credentials, template) = self.parts(store, tenant, connection).await?;
        Ok(connectors.sms(spec(tenant, connection, &credentials, &template), Lane::Interactive)?)
    }

    /// A template connection's connector, to run one of its endpoints by name.
    pub async fn template_connector(
        &self,
        store: &Store,
        connectors: &Connectors,
        tenant: &Tenant,
        connection: &Connection,
    ) -> Result<Arc<TemplateConnector>, AccessError> {
        let (credentials, template) = self.parts(store, tenant, connection).await?;
        Ok(connectors.template_connector(spec(tenant, connection, &credentials, &template), Lane::Interactive)?)
    }

    async fn parts(
        &self,
        store: &Store,
        tenant: &Tenant,
        connection: &Connection,
    ) -> Result<(Credentials, Option<(Arc<Template>, u32)>), AccessError> {
        let credentials = store.connections(tenant.id).credentials(connection.id).await?;
        let template = match &connection.kind {
            ConnectorKind::Template(name) => {
                Some(self.templates.resolve(store, &self.policy, tenant.id, name, connection.template_version).await?)
            }
            _ => None,
        };
        Ok((credentials, template))
    }
}

pub(crate) fn spec<'a>(
    tenant: &Tenant,
    connection: &'a Connection,
    credentials: &'a Credentials,
    template: &'a Option<(Arc<Template>, u32)>,
) -> ConnectionSpec<'a> {
    ConnectionSpec {
        tenant: tenant.id,
        id: connection.id,
        kind: &connection.kind,
        host: &connection.host,
        fields: &connection.fields,
        credentials,
        region: tenant.phone_region,
        template: template.as_ref().map(|(t, v)| (t, *v)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Store(#[from] crmhub_store::StoreError),
    #[error(transparent)]
    Crm(#[from] CrmError),
}

/// What `connection test` reports.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub capabilities: Vec<Capability>,
    pub details: Vec<LabeledValue>,
    pub status: ConnectionStatus,
    pub error: Option<String>,
}

/// Logs in, reads the CRM's metadata, and records the outcome on the connection: refused
/// credentials make it `needs_reauth`, other failures `failing`, success `active`.
pub async fn check(
    registry: &CrmRegistry,
    store: &Store,
    connectors: &Connectors,
    tenant: &Tenant,
    connection: &Connection,
) -> Result<CheckReport, crmhub_store::StoreError> {
    let connections = store.connections(tenant.id);
    let outcome = if connection.kind == ConnectorKind::Unisender {
        // A destination, not a CRM: its own check, and no CRM capabilities.
        match registry.unisender(store, connectors, tenant, connection).await {
            Ok(unisender) => unisender.check().await.map(|check| (Vec::new(), check)),
            Err(AccessError::Crm(e)) => Err(e),
            Err(AccessError::Store(e)) => return Err(e),
        }
    } else {
        match registry.crm(store, connectors, tenant, connection, Lane::Interactive).await {
            Ok(crm) => crm.check().await.map(|check| (crm.capabilities().to_vec(), check)),
            Err(AccessError::Crm(e)) => Err(e),
            Err(AccessError::Store(e)) => return Err(e),
        }
    };
    match outcome {
        // Nothing could be sent: not a pass, and not the CRM's failure either.
        Ok((capabilities, ConnectionCheck { details, unverified: Some(reason) })) => {
            let status = connection.status;
            Ok(CheckReport { ok: false, capabilities, details, status, error: Some(format!("not checked: {reason}")) })
        }
        Ok((capabilities, ConnectionCheck { details, unverified: None })) => {
            if connection.status != ConnectionStatus::Disabled {
                connections.set_status(connection.id, ConnectionStatus::Active, None).await?;
            }
            let status = connections.get(connection.id).await?.status;
            Ok(CheckReport { ok: true, capabilities, details, status, error: None })
        }
        Err(error) => {
            let message = error.to_string();
            match &error {
                CrmError::AuthFailed(_) => {
                    connections.set_status(connection.id, ConnectionStatus::NeedsReauth, Some(&message)).await?
                }
                // Being told to wait says nothing new about the connection, and must not
                // overwrite the reason it is failing (a Kommo IP block names its pause there).
                CrmError::RateLimited { .. } => {}
                _ => connections.record_health(connection.id, Err(&message)).await?,
            }
            let status = connections.get(connection.id).await?.status;
            Ok(CheckReport { ok: false, capabilities: Vec::new(), details: Vec::new(), status, error: Some(message) })
        }
    }
}
