//! The call-centre channel: a softphone, PBX or contact-centre platform posts its call events
//! (`POST /t/{tenant}/calls/events`), the agent gets the caller's card when the phone rings,
//! and every call and text message lands in the tenant's CRM once, through durable jobs.
//! The agent UI's own requests (a ticket, a contact, an SMS) come through the same channel.
//! Every route needs a channel key with the `calls` scope.

pub mod admin;
pub mod events;
pub mod log_job;
pub mod requests;
pub mod screen_pop;
pub mod settings;

use std::sync::Arc;

use axum::Router;
use axum::routing::post;
use crmhub_connectors::http::Lane;
use crmhub_core::ConnectionStatus;
use crmhub_core::crm::{Capability, Crm, CrmError};
use crmhub_store::connections::Connection;
use crmhub_store::tenants::Tenant;

use self::settings::CallSettings;
use crate::crm_access::AccessError;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The log job of a call: one per call id at a time (its dedupe key), reconciling the CRM
/// record with the call's stored state.
pub const LOG_JOB: &str = "call.log";
/// The note of a text message.
pub const SMS_NOTE_JOB: &str = "sms.note";
/// Call logs run before backfills and housekeeping: an agent may be looking for the record.
const JOB_PRIORITY: i32 = 10;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}/calls/events", post(events::post_event))
        .route("/t/{tenant}/calls/{call_id}/ticket", post(requests::create_ticket))
        .route("/t/{tenant}/contacts", post(requests::create_contact))
        .route("/t/{tenant}/sms", post(requests::send_sms))
}

pub fn admin_router() -> Router<AppState> {
    admin::router()
}

pub fn register_jobs(registry: &mut crate::jobs::JobRegistry) {
    registry.register(LOG_JOB, Arc::new(log_job::CallLogJob));
    registry.register(SMS_NOTE_JOB, Arc::new(log_job::SmsNoteJob));
}

/// A tenant's configured channel and its connection's CRM, for one request.
pub struct CallChannel {
    pub tenant: Tenant,
    pub settings: CallSettings,
    pub connection: Connection,
    pub crm: Arc<dyn Crm>,
}

impl CallChannel {
    pub async fn load(state: &AppState, tenant: Tenant) -> ApiResult<Self> {
        let settings = settings::CallSettings::load(&state.store, &tenant).await.map_err(|e| match e {
            settings::ConfigureError::Store(e) => ApiError::from(e),
            settings::ConfigureError::Invalid(e) => ApiError::Internal(anyhow::anyhow!("stored calls settings: {e}")),
        })?;
        let Some(settings) = settings else {
            return Err(ApiError::NotFound(format!(
                "the call-centre channel is not configured for this tenant (PUT /admin/v1/tenants/{}/channels/calls)",
                tenant.slug
            )));
        };
        let connection = match state.store.connections(tenant.id).get(settings.connection_id).await {
            Ok(connection) => connection,
            Err(crmhub_store::StoreError::NotFound { .. }) => {
                return Err(ApiError::Unavailable("the call-centre channel's connection no longer exists".into()));
            }
            Err(e) => return Err(e.into()),
        };
        if connection.status == ConnectionStatus::Disabled {
            return Err(ApiError::Unavailable("the call-centre channel's connection is disabled".into()));
        }
        let crm =
            state.crms.crm(&state.store, &state.connectors, &tenant, &connection, Lane::Interactive).await.map_err(
                |e| match e {
                    AccessError::Store(e) => ApiError::from(e),
                    AccessError::Crm(e) => crm_failure(&e),
                },
            )?;
        Ok(Self { tenant, settings, connection, crm })
    }

    /// Refuses now, with `unsupported`, what the connector could never do: a job that could
    /// only die later is worse than a clear answer to the platform.
    pub fn require(&self, capability: Capability) -> ApiResult<()> {
        if self.crm.supports(capability) {
            return Ok(());
        }
        Err(ApiError::Unsupported(format!(
            "the tenant's connection ({}) does not support {capability}",
            self.connection.kind
        )))
    }
}

/// A CRM failure during a request, as the API answers it.
pub fn crm_failure(error: &CrmError) -> ApiError {
    match error {
        CrmError::Unsupported { capability } => {
            ApiError::Unsupported(format!("the connector does not support {capability}"))
        }
        CrmError::Validation { field, message } => ApiError::invalid(field.clone(), message.clone()),
        CrmError::NotFound { what } => ApiError::NotFound(format!("{what} not found in the CRM")),
        CrmError::RateLimited { .. } => ApiError::TooManyRequests(error.to_string()),
        CrmError::Unavailable(_) => ApiError::Unavailable(error.to_string()),
        CrmError::AuthFailed(_) | CrmError::Remote { .. } | CrmError::Protocol(_) | CrmError::Blocked(_) => {
            ApiError::BadGateway(error.to_string())
        }
    }
}
