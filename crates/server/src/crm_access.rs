//! Reaching a tenant's CRM: building (and keeping) the connector for a connection, and testing
//! a connection. Channels, jobs, the admin API and the CLI all come through here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crmhub_connectors::http::Lane;
use crmhub_connectors::{ConnectionSpec, Connectors};
use crmhub_core::crm::{Capability, Crm, CrmError, LabeledValue};
use crmhub_core::{ConnectionId, ConnectionStatus, UnixMillis};
use crmhub_store::Store;
use crmhub_store::connections::Connection;
use crmhub_store::tenants::Tenant;
use serde::Serialize;

/// Connectors kept per connection and lane, so that caches inside them (Vtiger's describe,
/// the sync probe) outlive one request. An entry is rebuilt when the connection changes.
#[derive(Default, Clone)]
pub struct CrmRegistry {
    built: Arc<Mutex<HashMap<BuiltKey, Built>>>,
}

/// A connection, and whether its calls go in the interactive lane.
type BuiltKey = (ConnectionId, bool);

/// A connector and the connection version (`updated_at`) it was built from.
type Built = (UnixMillis, Arc<dyn Crm>);

impl CrmRegistry {
    pub async fn crm(
        &self,
        store: &Store,
        connectors: &Connectors,
        tenant: &Tenant,
        connection: &Connection,
        lane: Lane,
    ) -> Result<Arc<dyn Crm>, AccessError> {
        let key = (connection.id, lane == Lane::Interactive);
        if let Some((version, crm)) = self.built.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            if *version == connection.updated_at {
                return Ok(crm.clone());
            }
        }
        let credentials = store.connections(tenant.id).credentials(connection.id).await?;
        let spec = ConnectionSpec {
            tenant: tenant.id,
            id: connection.id,
            kind: &connection.kind,
            host: &connection.host,
            fields: &connection.fields,
            credentials: &credentials,
            region: tenant.phone_region,
        };
        let crm = connectors.crm(spec, lane)?;
        self.built.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (connection.updated_at, crm.clone()));
        Ok(crm)
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
    let outcome = match registry.crm(store, connectors, tenant, connection, Lane::Interactive).await {
        Ok(crm) => crm.check().await.map(|check| (crm.capabilities().to_vec(), check.details)),
        Err(AccessError::Crm(e)) => Err(e),
        Err(AccessError::Store(e)) => return Err(e),
    };
    match outcome {
        Ok((capabilities, details)) => {
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
                _ => connections.record_health(connection.id, Err(&message)).await?,
            }
            let status = connections.get(connection.id).await?.status;
            Ok(CheckReport { ok: false, capabilities: Vec::new(), details: Vec::new(), status, error: Some(message) })
        }
    }
}
