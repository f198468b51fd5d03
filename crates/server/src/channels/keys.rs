//! Who is calling a machine channel: the tenant in the path and a channel key of that tenant
//! (`Authorization: Bearer crmhub_…`). A missing key is 401; a wrong, revoked or other tenant's
//! key, and an unknown tenant, are the same 403 with the same body, so a caller learns nothing
//! about which it was. Nothing is recorded for a refused call.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};
use crmhub_core::TenantSlug;
use crmhub_core::channel_key::{self, ChannelScope, KEY_PREFIX};
use crmhub_store::channel_keys::ChannelKey;
use crmhub_store::tenants::Tenant;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::extract::bearer_token;
use crate::state::AppState;

/// A call made with a live key of the tenant named in the path.
pub struct ChannelCaller {
    pub tenant: Tenant,
    pub key: ChannelKey,
}

impl ChannelCaller {
    /// Refuses a key without `scope`, with the same 403 as a wrong key.
    pub fn require(&self, scope: ChannelScope) -> ApiResult<()> {
        if self.key.scopes.contains(&scope) { Ok(()) } else { Err(ApiError::Forbidden) }
    }
}

impl FromRequestParts<AppState> for ChannelCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = bearer_token(parts)?;
        if !key.starts_with(KEY_PREFIX) {
            return Err(ApiError::Forbidden);
        }
        let slug = parts.uri.path().strip_prefix("/t/").and_then(|rest| rest.split('/').next()).unwrap_or_default();
        let Ok(slug) = TenantSlug::parse(slug) else { return Err(ApiError::Forbidden) };
        let Some(tenant) = state.store.tenants().find_by_slug(&slug).await? else { return Err(ApiError::Forbidden) };
        match state.store.channel_keys(tenant.id).verify(&channel_key::hash(key)).await? {
            Some(key) => Ok(Self { tenant, key }),
            None => Err(ApiError::Forbidden),
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/t/{tenant}/channel-key", get(whoami))
}

#[derive(serde::Deserialize)]
struct WhoAmI {
    scope: Option<String>,
}

/// What the presented key is, for an integrator checking its setup; `?scope=calls` also checks
/// that the key may be used for that.
async fn whoami(_: State<AppState>, caller: ChannelCaller, Query(ask): Query<WhoAmI>) -> ApiResult<Json<Value>> {
    if let Some(scope) = ask.scope {
        caller.require(ChannelScope::parse(&scope)?)?;
    }
    Ok(Json(json!({
        "tenant": caller.tenant.slug,
        "name": caller.key.name,
        "scopes": caller.key.scopes,
        "prefix": caller.key.prefix,
    })))
}
