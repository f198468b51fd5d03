//! The admin API under `/admin/v1`: tenants, connections, jobs. Every route requires the admin
//! bearer token.

mod auth;
pub mod channel_keys;
mod connections;
mod jobs;
mod sync;
mod templates;
mod tenants;

use axum::Router;
use crmhub_core::{TenantId, TenantSlug};

pub use auth::AdminAuth;
pub(crate) use connections::connection_id;

use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(tenants::router())
        .merge(connections::router())
        .merge(channel_keys::router())
        .merge(jobs::router())
        .merge(templates::router())
        .merge(sync::router())
}

/// Resolves a tenant slug from a path. A slug that cannot exist is simply not found.
pub(crate) async fn tenant_id(state: &AppState, slug: &str) -> Result<TenantId, ApiError> {
    Ok(tenant(state, slug).await?.id)
}

/// The tenant a path's slug names, read once.
pub(crate) async fn tenant(state: &AppState, slug: &str) -> Result<crmhub_store::tenants::Tenant, ApiError> {
    let slug = TenantSlug::parse(slug).map_err(|_| ApiError::NotFound("tenant not found".into()))?;
    Ok(state.store.tenants().by_slug(&slug).await?)
}
