//! Where a pipeline writes: exactly the calls the engine needs of a mailing list, so that the
//! engine does not depend on one provider, and its tests use an in-memory list.

use std::collections::BTreeMap;
use std::sync::Arc;

use crmhub_connectors::http::Lane;
use crmhub_connectors::unisender::{ContactType, ImportRow, Unisender};
use crmhub_connectors::{ConnectionSpec, Connectors};
use crmhub_core::crm::CrmError;
use crmhub_store::Store;
use crmhub_store::connections::Connection;
use crmhub_store::tenants::Tenant;

use crate::crm_access::AccessError;

/// One row to import: keyed by `email`; `delete` removes the address account-wide.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct DestinationRow {
    pub email: String,
    pub phone: Option<String>,
    pub fields: BTreeMap<String, String>,
    pub delete: bool,
}

/// A row the destination refused (a role address, a spam trap): `row` indexes the rows given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRefusal {
    pub row: usize,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    pub refused: Vec<RowRefusal>,
}

#[async_trait::async_trait]
pub trait SyncDestination: Send + Sync {
    /// Upserts (or, with `delete`, deletes) the rows, adding upserted ones to `list_id`. Rows
    /// the destination refused one by one are reported, not failed.
    async fn import(&self, list_id: &str, rows: &[DestinationRow]) -> Result<ImportOutcome, CrmError>;

    /// Removes the address from `list_id` only; an address not in it is not an error.
    async fn exclude(&self, list_id: &str, email: &str) -> Result<(), CrmError>;

    /// The members of `list_id`, `limit` from `offset`: each one's address (`None` for a
    /// member without one, so that a short page means the end).
    async fn export(&self, list_id: &str, offset: u64, limit: u64) -> Result<Vec<Option<String>>, CrmError>;
}

/// Builds the destination of a connection.
#[async_trait::async_trait]
pub trait DestinationResolver: Send + Sync {
    async fn destination(
        &self,
        store: &Store,
        connectors: &Connectors,
        tenant: &Tenant,
        connection: &Connection,
    ) -> Result<Arc<dyn SyncDestination>, AccessError>;
}

/// The product's resolver: a `unisender` connection's list.
#[derive(Debug, Default)]
pub struct UnisenderDestinations;

/// The Unisender connector of a connection (its own errors are masked by it).
pub async fn unisender_of(
    store: &Store,
    connectors: &Connectors,
    tenant: &Tenant,
    connection: &Connection,
    lane: Lane,
) -> Result<Arc<Unisender>, AccessError> {
    let credentials = store.connections(tenant.id).credentials(connection.id).await?;
    let spec = ConnectionSpec {
        tenant: tenant.id,
        id: connection.id,
        kind: &connection.kind,
        host: &connection.host,
        fields: &connection.fields,
        credentials: &credentials,
        region: tenant.phone_region,
        template: None,
    };
    Ok(connectors.unisender(spec, lane)?)
}

#[async_trait::async_trait]
impl DestinationResolver for UnisenderDestinations {
    async fn destination(
        &self,
        store: &Store,
        connectors: &Connectors,
        tenant: &Tenant,
        connection: &Connection,
    ) -> Result<Arc<dyn SyncDestination>, AccessError> {
        let unisender = unisender_of(store, connectors, tenant, connection, Lane::Background).await?;
        Ok(Arc::new(UnisenderList(unisender)))
    }
}

/// A Unisender list as a sync destination.
pub struct UnisenderList(pub Arc<Unisender>);

#[async_trait::async_trait]
impl SyncDestination for UnisenderList {
    async fn import(&self, list_id: &str, rows: &[DestinationRow]) -> Result<ImportOutcome, CrmError> {
        let rows: Vec<ImportRow> = rows
            .iter()
            .map(|r| ImportRow {
                email: Some(r.email.clone()),
                phone: r.phone.clone(),
                fields: r.fields.clone(),
                delete: r.delete,
            })
            .collect();
        let report = self.0.import_contacts(list_id, &rows).await?;
        Ok(ImportOutcome {
            refused: report
                .row_errors
                .into_iter()
                .map(|e| RowRefusal { row: e.row, code: e.code, message: e.message })
                .collect(),
        })
    }

    async fn exclude(&self, list_id: &str, email: &str) -> Result<(), CrmError> {
        self.0.exclude(ContactType::Email, email, &[list_id]).await
    }

    async fn export(&self, list_id: &str, offset: u64, limit: u64) -> Result<Vec<Option<String>>, CrmError> {
        let rows = self.0.export_contacts(list_id, offset, limit).await?;
        Ok(rows.into_iter().map(|c| c.email).collect())
    }
}
