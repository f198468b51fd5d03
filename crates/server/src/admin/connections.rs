//! `/admin/v1/tenants/{slug}/connections`

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use crmhub_core::{ConnectionId, ConnectionName, ConnectionStatus, Host};
use crmhub_store::connections::{Connection, ConnectionUpdate};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{AdminAuth, tenant_id};
use crate::connection_input::{ConnectionInput, check_fields, check_for_kind, parse_credentials};
use crate::crm_access::{self, CheckReport};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, QueryParams};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/tenants/{slug}/connections", get(list).post(create))
        .route("/admin/v1/tenants/{slug}/connections/{id}", get(show).patch(update).delete(remove))
        .route("/admin/v1/tenants/{slug}/connections/{id}/credentials", put(rotate_credentials))
        .route("/admin/v1/tenants/{slug}/connections/{id}/requests", get(request_log))
        .route("/admin/v1/tenants/{slug}/connections/{id}/test", post(test))
}

pub(crate) fn connection_id(raw: &str) -> Result<ConnectionId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("connection not found".into()))
}

async fn create(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(slug): Path<String>,
    JsonBody(body): JsonBody<ConnectionInput>,
) -> ApiResult<impl IntoResponse> {
    let new = body.try_into()?;
    let tenant = tenant_id(&state, &slug).await?;
    let connection = state.store.connections(tenant).create(new).await?;
    tracing::info!(tenant = %slug, connection = %connection.id, kind = %connection.kind, "connection created");
    Ok((StatusCode::CREATED, Json(connection)))
}

async fn list(_: AdminAuth, State(state): State<AppState>, Path(slug): Path<String>) -> ApiResult<Json<Value>> {
    let tenant = tenant_id(&state, &slug).await?;
    Ok(Json(json!({"connections": state.store.connections(tenant).list().await?})))
}

async fn show(
    _: AdminAuth,
    State(state): State<AppState>,
    Path((slug, id)): Path<(String, String)>,
) -> ApiResult<Json<Connection>> {
    let tenant = tenant_id(&state, &slug).await?;
    Ok(Json(state.store.connections(tenant).get(connection_id(&id)?).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateConnection {
    name: Option<String>,
    host: Option<String>,
    fields: Option<Map<String, Value>>,
    status: Option<String>,
}

async fn update(
    _: AdminAuth,
    State(state): State<AppState>,
    Path((slug, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<UpdateConnection>,
) -> ApiResult<Json<Connection>> {
    let update = ConnectionUpdate {
        name: body.name.as_deref().map(ConnectionName::parse).transpose()?,
        host: body.host.as_deref().map(Host::parse).transpose()?,
        fields: body.fields.map(check_fields).transpose()?,
        status: body.status.as_deref().map(ConnectionStatus::parse).transpose()?,
    };
    let tenant = tenant_id(&state, &slug).await?;
    let id = connection_id(&id)?;
    let connections = state.store.connections(tenant);
    if let Some(fields) = &update.fields {
        let current = connections.get(id).await?;
        check_for_kind(&current.kind, fields, &connections.credentials(id).await?)?;
    }
    Ok(Json(connections.update(id, update).await?))
}

async fn remove(
    _: AdminAuth,
    State(state): State<AppState>,
    Path((slug, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let tenant = tenant_id(&state, &slug).await?;
    state.store.connections(tenant).delete(connection_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCredentials {
    credentials: Map<String, Value>,
}

/// Replaces all credentials at once; the response, like every other, shows only their names.
async fn rotate_credentials(
    _: AdminAuth,
    State(state): State<AppState>,
    Path((slug, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<NewCredentials>,
) -> ApiResult<Json<Connection>> {
    let credentials = parse_credentials(body.credentials)?;
    if credentials.is_empty() {
        return Err(ApiError::invalid("credentials", "must name at least one credential"));
    }
    let tenant = tenant_id(&state, &slug).await?;
    let id = connection_id(&id)?;
    let current = state.store.connections(tenant).get(id).await?;
    check_for_kind(&current.kind, &current.fields, &credentials)?;
    let connection = state.store.connections(tenant).replace_credentials(id, credentials).await?;
    tracing::info!(tenant = %slug, connection = %connection.id, "credentials rotated");
    Ok(Json(connection))
}

#[derive(Deserialize)]
struct LogQuery {
    limit: Option<u32>,
    before: Option<i64>,
}

async fn request_log(
    _: AdminAuth,
    State(state): State<AppState>,
    Path((slug, id)): Path<(String, String)>,
    QueryParams(query): QueryParams<LogQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = tenant_id(&state, &slug).await?;
    let id = connection_id(&id)?;
    state.store.connections(tenant).get(id).await?;
    let entries = state.store.request_log(tenant).list(id, query.limit.unwrap_or(50), query.before).await?;
    Ok(Json(json!({"requests": entries})))
}

/// Logs in to the CRM and reads its metadata; the connection's status records the outcome.
async fn test(
    _: AdminAuth,
    State(state): State<AppState>,
    Path((slug, id)): Path<(String, String)>,
) -> ApiResult<Json<CheckReport>> {
    let tenant = tenant_id(&state, &slug).await?;
    let tenant = state.store.tenants().get(tenant).await?;
    let connection = state.store.connections(tenant.id).get(connection_id(&id)?).await?;
    let report = crm_access::check(&state.crms, &state.store, &state.connectors, &tenant, &connection).await?;
    tracing::info!(tenant = %slug, connection = %connection.id, ok = report.ok, "connection tested");
    Ok(Json(report))
}
