//! `/admin/v1/tenants/{slug}/channel-keys`: the keys machine channels present. A key is shown
//! once, in the answer that creates it; afterwards only its name, scopes and prefix.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use crmhub_core::channel_key::{self, ChannelScope};
use crmhub_core::{FieldError, TenantId};
use crmhub_store::Store;
use crmhub_store::channel_keys::ChannelKey;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{AdminAuth, tenant_id};
use crate::error::ApiResult;
use crate::extract::{JsonBody, PathParams};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/tenants/{slug}/channel-keys", get(list).post(create))
        .route("/admin/v1/tenants/{slug}/channel-keys/{id}", delete(revoke))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKeyBody {
    name: String,
    scopes: Vec<String>,
}

/// A created key: the key itself, this once.
#[derive(Serialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub stored: ChannelKey,
    pub key: String,
}

/// Validates and stores a new key; shared with `crmhub channel-key create`.
pub async fn create_key(store: &Store, tenant: TenantId, name: &str, scopes: &[String]) -> ApiResult<CreatedKey> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(FieldError::new("name", "must be 1–100 characters").into());
    }
    let scopes = ChannelScope::parse_list(scopes)?;
    let new = channel_key::generate();
    let stored = store.channel_keys(tenant).create(name, &scopes, &new.prefix, &new.hash).await?;
    Ok(CreatedKey { stored, key: new.key.expose().to_owned() })
}

async fn create(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
    JsonBody(body): JsonBody<NewKeyBody>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let tenant = tenant_id(&state, &slug).await?;
    let created = create_key(&state.store, tenant, &body.name, &body.scopes).await?;
    tracing::info!(tenant = %slug, key = %created.stored.id, prefix = %created.stored.prefix, "channel key created");
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let tenant = tenant_id(&state, &slug).await?;
    Ok(Json(json!({"channel_keys": state.store.channel_keys(tenant).list().await?})))
}

async fn revoke(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
) -> ApiResult<Json<ChannelKey>> {
    let tenant = tenant_id(&state, &slug).await?;
    let revoked = state.store.channel_keys(tenant).revoke(&id).await?;
    tracing::info!(tenant = %slug, key = %revoked.id, "channel key revoked");
    Ok(Json(revoked))
}
