//! From `/t/{tenant}/…` to the tenant's channel: its settings, signing secrets and connection.
//!
//! Every signed request needs all of them, and reading them costs several database queries
//! and a vault decryption per secret, so they are kept for [`CACHE_TTL`] (real time). Changes
//! through this instance's admin API take effect at once (the entry is dropped); changes from
//! the CLI or another instance within [`CACHE_TTL`]. A superseded secret's `retires_at` is
//! checked on every request, so the end of a rotation grace period is exact.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crmhub_connectors::http::Lane;
use crmhub_core::crm::{Crm, CrmError};
use crmhub_core::{ConnectionStatus, TenantSlug};
use crmhub_store::connections::Connection;
use crmhub_store::secrets::StoredSecret;
use crmhub_store::tenants::Tenant;
use crmhub_store::{Store, StoreError};

use super::Endpoint;
use super::settings::{ChannelSettings, ConfigureError};
use crate::crm_access::AccessError;
use crate::state::AppState;

/// How long a looked-up channel is reused: the longest a change made elsewhere (a revoked
/// secret, a new setting) goes unnoticed by this instance.
pub const CACHE_TTL: Duration = Duration::from_secs(2);

/// Slugs remembered at most, unknown ones included (so probing random slugs cannot grow the
/// map without bound).
const MAX_CACHED: usize = 10_000;

/// A tenant whose social-inbox channel is configured.
#[derive(Debug)]
pub struct Channel {
    pub tenant: Tenant,
    pub settings: ChannelSettings,
    search_secrets: Vec<StoredSecret>,
    iframe_secrets: Vec<StoredSecret>,
    /// `None` when the configured connection has been deleted since.
    connection: Option<Connection>,
}

impl Channel {
    /// The endpoint's secrets that were valid when loaded, the current one first.
    pub fn secrets(&self, endpoint: Endpoint) -> &[StoredSecret] {
        match endpoint {
            Endpoint::Search => &self.search_secrets,
            Endpoint::Iframe => &self.iframe_secrets,
        }
    }

    /// The CRM behind the channel's connection, in the interactive lane (an agent is waiting).
    pub async fn crm(&self, state: &AppState) -> Result<Arc<dyn Crm>, CrmError> {
        let connection = self
            .connection
            .as_ref()
            .ok_or_else(|| CrmError::Unavailable("the channel's connection no longer exists".into()))?;
        if connection.status == ConnectionStatus::Disabled {
            return Err(CrmError::Unavailable("the channel's connection is disabled".into()));
        }
        state.crms.crm(&state.store, &state.connectors, &self.tenant, connection, Lane::Interactive).await.map_err(
            |e| match e {
                AccessError::Crm(e) => e,
                AccessError::Store(e) => CrmError::Unavailable(format!("reading the connection: {e}")),
            },
        )
    }
}

struct Cached {
    loaded: Instant,
    /// `None`: no such tenant, or its channel is not configured.
    channel: Option<Arc<Channel>>,
}

/// Channels by slug, kept for [`CACHE_TTL`].
#[derive(Clone, Default)]
pub struct ChannelCache {
    entries: Arc<Mutex<HashMap<String, Cached>>>,
}

impl ChannelCache {
    /// The channel of the tenant with this slug, or `None` when there is no such tenant or
    /// its channel is not configured (the caller must not tell these apart to the client).
    pub async fn get(&self, store: &Store, slug: &str) -> Result<Option<Arc<Channel>>, StoreError> {
        if let Some(cached) = self.lock().get(slug).filter(|c| c.loaded.elapsed() < CACHE_TTL) {
            return Ok(cached.channel.clone());
        }
        let channel = load(store, slug).await?.map(Arc::new);
        let mut entries = self.lock();
        if entries.len() >= MAX_CACHED {
            entries.retain(|_, cached| cached.loaded.elapsed() < CACHE_TTL);
        }
        if entries.len() < MAX_CACHED {
            entries.insert(slug.to_owned(), Cached { loaded: Instant::now(), channel: channel.clone() });
        }
        Ok(channel)
    }

    /// Drops what is known about a tenant, after its channel changed through this instance.
    pub fn forget(&self, slug: &str) {
        self.lock().remove(slug);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Cached>> {
        // Nothing can be left half-updated by a panic while the map is held.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn load(store: &Store, slug: &str) -> Result<Option<Channel>, StoreError> {
    let Ok(slug) = TenantSlug::parse(slug) else { return Ok(None) };
    let Some(tenant) = store.tenants().find_by_slug(&slug).await? else { return Ok(None) };
    let settings = match ChannelSettings::load(store, &tenant).await {
        Ok(Some(settings)) => settings,
        Ok(None) => return Ok(None),
        Err(ConfigureError::Store(e)) => return Err(e),
        Err(ConfigureError::Invalid(e)) => {
            tracing::warn!(tenant = %slug, error = %e, "the social inbox settings are invalid; the channel is off");
            return Ok(None);
        }
    };
    let secrets = store.secrets(tenant.id);
    let search_secrets = secrets.valid(Endpoint::Search.purpose()).await?;
    let iframe_secrets = secrets.valid(Endpoint::Iframe.purpose()).await?;
    let connection = match store.connections(tenant.id).get(settings.connection_id).await {
        Ok(connection) => Some(connection),
        Err(StoreError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    Ok(Some(Channel { tenant, settings, search_secrets, iframe_secrets, connection }))
}
