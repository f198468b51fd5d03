//! `/admin/v1/tenants/{slug}/channels/social-inbox`: configure, show and remove the channel.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json, Router};

use super::settings::{self, ChannelInput, ChannelView, ConfigureError};
use crate::admin::{AdminAuth, tenant};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/v1/tenants/{slug}/channels/social-inbox", put(configure).get(show).delete(remove))
}

impl From<ConfigureError> for ApiError {
    fn from(e: ConfigureError) -> Self {
        match e {
            ConfigureError::Invalid(e) => e.into(),
            ConfigureError::Store(e) => e.into(),
        }
    }
}

/// Stores the settings and rotates the secrets that change; generated secrets are in this
/// response and nowhere else.
async fn configure(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
    JsonBody(input): JsonBody<ChannelInput>,
) -> ApiResult<Json<ChannelView>> {
    let tenant = tenant(&state, &slug).await?;
    let view = settings::configure(&state, &tenant, input, &public_url(&state)?).await?;
    state.social_inbox.forget(tenant.slug.as_str());
    tracing::info!(tenant = %tenant.slug, connection = %view.settings.connection_id, "social inbox configured");
    Ok(Json(view))
}

async fn show(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
) -> ApiResult<Json<ChannelView>> {
    let tenant = tenant(&state, &slug).await?;
    let view = settings::show(&state.store, &tenant, &public_url(&state)?).await?;
    view.map(Json).ok_or_else(|| ApiError::NotFound("the social inbox is not configured for this tenant".into()))
}

/// Turns the channel off: settings removed, every secret revoked at once.
async fn remove(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
) -> ApiResult<StatusCode> {
    let tenant = tenant(&state, &slug).await?;
    let removed = settings::remove(&state.store, &tenant).await?;
    state.social_inbox.forget(tenant.slug.as_str());
    if !removed {
        return Err(ApiError::NotFound("the social inbox is not configured for this tenant".into()));
    }
    tracing::info!(tenant = %tenant.slug, "social inbox removed");
    Ok(StatusCode::NO_CONTENT)
}

fn public_url(state: &AppState) -> ApiResult<url::Url> {
    // Validated at start, so this only fails if the settings were changed under us.
    state.settings.public_url().map_err(|e| ApiError::Internal(anyhow::Error::new(e)))
}
