//! The channel's per-tenant configuration: which connection calls are looked up in and logged
//! to, which SMS connection sends the agent's text messages, and how long a screen pop is
//! reused. Stored in the channel's own settings row (`calls`), reached only through this
//! channel's admin API, the CLI and the demo, which all go through [`configure`].

use crmhub_connectors::http::Lane;
use crmhub_core::crm::Capability;
use crmhub_core::{ConnectionId, ConnectorKind, FieldError};
use crmhub_store::tenants::Tenant;
use crmhub_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crm_access::AccessError;
use crate::state::AppState;

/// The channel kind its settings are stored under.
pub const SETTINGS_KEY: &str = "calls";

/// A screen pop is asked for when the phone rings, often several times for one caller (a
/// queue rings several agents): half a minute of reuse spares the CRM without showing an
/// agent a contact that was renamed long ago.
pub const DEFAULT_SCREEN_POP_CACHE_SECS: u32 = 30;
const MAX_SCREEN_POP_CACHE_SECS: u32 = 3_600;
pub const DEFAULT_MAX_MATCHES: u32 = 5;
const MAX_MAX_MATCHES: u32 = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSettings {
    /// The CRM connection calls are matched against and logged to.
    pub connection_id: ConnectionId,
    /// An `sms` template connection for `POST /t/{tenant}/sms`; none means that route is off.
    #[serde(default)]
    pub sms_connection_id: Option<ConnectionId>,
    #[serde(default = "default_cache")]
    pub screen_pop_cache_secs: u32,
    /// Contacts a screen pop lists at most.
    #[serde(default = "default_max_matches")]
    pub max_matches: u32,
}

fn default_cache() -> u32 {
    DEFAULT_SCREEN_POP_CACHE_SECS
}

fn default_max_matches() -> u32 {
    DEFAULT_MAX_MATCHES
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CallSettings {
    /// The tenant's settings, or `None` when the channel is not configured. A stored row is
    /// validated again, so one written by hand cannot switch the channel on with bad values.
    pub async fn load(store: &Store, tenant: &Tenant) -> Result<Option<Self>, ConfigureError> {
        let Some(raw) = store.channel_settings(tenant.id).get(SETTINGS_KEY).await? else { return Ok(None) };
        let settings: Self = serde_json::from_value(Value::Object(raw))
            .map_err(|e| FieldError::new(SETTINGS_KEY, format!("stored settings are unreadable: {e}")))?;
        settings.validate()?;
        Ok(Some(settings))
    }

    fn validate(&self) -> Result<(), FieldError> {
        if self.screen_pop_cache_secs > MAX_SCREEN_POP_CACHE_SECS {
            return Err(FieldError::new(
                "screen_pop_cache_secs",
                format!("must be between 0 and {MAX_SCREEN_POP_CACHE_SECS}"),
            ));
        }
        if !(1..=MAX_MAX_MATCHES).contains(&self.max_matches) {
            return Err(FieldError::new("max_matches", format!("must be between 1 and {MAX_MAX_MATCHES}")));
        }
        Ok(())
    }
}

/// Validates and stores the settings. The connection must exist and find contacts by phone
/// (every call starts with that); its other capabilities are checked per request, so a CRM that
/// cannot log calls still pops screens and answers `unsupported` where it falls short.
pub async fn configure(
    state: &AppState,
    tenant: &Tenant,
    settings: CallSettings,
) -> Result<CallSettings, ConfigureError> {
    settings.validate()?;
    let store = &state.store;
    let connection = match store.connections(tenant.id).get(settings.connection_id).await {
        Err(StoreError::NotFound { .. }) => {
            return Err(FieldError::new("connection_id", "no connection with this id belongs to the tenant").into());
        }
        other => other?,
    };
    let crm = match state.crms.crm(store, &state.connectors, tenant, &connection, Lane::Interactive).await {
        Ok(crm) => crm,
        Err(AccessError::Store(e)) => return Err(e.into()),
        Err(AccessError::Crm(e)) => return Err(FieldError::new("connection_id", e.to_string()).into()),
    };
    if !crm.supports(Capability::FindByPhone) {
        return Err(FieldError::new(
            "connection_id",
            format!(
                "the connection's connector ({}) does not support {}, which every call needs",
                connection.kind,
                Capability::FindByPhone
            ),
        )
        .into());
    }
    if let Some(sms) = settings.sms_connection_id {
        let connection = match store.connections(tenant.id).get(sms).await {
            Err(StoreError::NotFound { .. }) => {
                return Err(
                    FieldError::new("sms_connection_id", "no connection with this id belongs to the tenant").into()
                );
            }
            other => other?,
        };
        let is_template = matches!(connection.kind, ConnectorKind::Template(_));
        if !is_template || state.crms.sms(store, &state.connectors, tenant, &connection).await.is_err() {
            return Err(
                FieldError::new("sms_connection_id", "must be a connection of an sms integration template").into()
            );
        }
    }
    let json = match serde_json::to_value(&settings) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    store.channel_settings(tenant.id).put(SETTINGS_KEY, &json).await?;
    Ok(settings)
}
