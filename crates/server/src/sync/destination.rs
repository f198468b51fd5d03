//! Where a pipeline writes: exactly the calls the engine needs of a mailing list, so that the
//! engine does not depend on one provider, and its tests use an in-memory list.

use std::collections::BTreeMap;
use std::sync::Arc;

use crmhub_connectors::Connectors;
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

    /// The addresses in `list_id`, `limit` from `offset`.
    async fn export(&self, list_id: &str, offset: u64, limit: u64) -> Result<Vec<String>, CrmError>;
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

#[async_trait::async_trait]
impl DestinationResolver for UnisenderDestinations {
    async fn destination(
        &self,
        _store: &Store,
        _connectors: &Connectors,
        _tenant: &Tenant,
        connection: &Connection,
    ) -> Result<Arc<dyn SyncDestination>, AccessError> {
        Err(AccessError::Crm(CrmError::validation(
            "destination_connection_id",
            format!("the {} connector is not available in this version of crmhub", connection.kind),
        )))
    }
}
