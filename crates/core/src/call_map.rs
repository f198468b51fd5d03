//! Which CRM record crmhub made for an external call id, for CRMs that have nowhere to keep our
//! id (a template's CRM, typically): so that a call is logged once whatever the order, retries
//! or duplicates of its events. Kept per connection, deleted with it, and pruned by age.

use serde::{Deserialize, Serialize};

use crate::crm::CallStage;
use crate::{ConnectionId, TenantId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub record_id: String,
    /// The furthest stage logged so far.
    pub stage: CallStage,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("call map storage failed: {0}")]
pub struct CallMapError(pub String);

#[async_trait::async_trait]
pub trait CallMapStore: Send + Sync + std::fmt::Debug {
    async fn get(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
        call_id: &str,
    ) -> Result<Option<CallRecord>, CallMapError>;
    async fn put(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
        call_id: &str,
        record: &CallRecord,
    ) -> Result<(), CallMapError>;
}
