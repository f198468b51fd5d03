//! Call maps in memory: for tests, for tools without a database, and for template connectors
//! that belong to no connection yet (a template check).

use std::collections::HashMap;
use std::sync::Mutex;

use crmhub_core::call_map::{CallMapError, CallMapStore, CallRecord};
use crmhub_core::{ConnectionId, TenantId};

type Key = (TenantId, ConnectionId, String);

#[derive(Debug, Default)]
pub struct MemoryCallMaps(Mutex<HashMap<Key, CallRecord>>);

/// Entries kept at most; older ones are dropped wholesale (this store is never the durable one).
const MAX_ENTRIES: usize = 10_000;

#[async_trait::async_trait]
impl CallMapStore for MemoryCallMaps {
    async fn get(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
        call_id: &str,
    ) -> Result<Option<CallRecord>, CallMapError> {
        let maps = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(maps.get(&(tenant, connection, call_id.to_owned())).cloned())
    }

    async fn put(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
        call_id: &str,
        record: &CallRecord,
    ) -> Result<(), CallMapError> {
        let mut maps = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if maps.len() >= MAX_ENTRIES {
            maps.clear();
        }
        maps.insert((tenant, connection, call_id.to_owned()), record.clone());
        Ok(())
    }
}
