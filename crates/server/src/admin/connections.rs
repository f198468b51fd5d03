//! `/admin/v1/tenants/{slug}/connections`

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use crmhub_core::crm::CrmError;
use crmhub_core::{ConnectionId, ConnectionName, ConnectionStatus, ConnectorKind, Host};
use crmhub_store::connections::{Connection, ConnectionUpdate};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{AdminAuth, tenant_id};
use crate::connection_input::{ConnectionInput, check_fields, check_for_kind, parse_credentials};
use crate::crm_access::{self, CheckReport};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::state::AppState;
use crate::templates::prepare_connection;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/tenants/{slug}/connections", get(list).post(create))
        .route("/admin/v1/tenants/{slug}/connections/{id}", get(show).patch(update).delete(remove))
        .route("/admin/v1/tenants/{slug}/connections/{id}/credentials", put(rotate_credentials))
        .route("/admin/v1/tenants/{slug}/connections/{id}/requests", get(request_log))
        .route("/admin/v1/tenants/{slug}/connections/{id}/test", post(test))
        .route("/admin/v1/tenants/{slug}/connections/{id}/endpoints/{endpoint}", post(run_endpoint))
        .route("/admin/v1/tenants/{slug}/connections/{id}/sms", post(send_sms))
}

pub(crate) fn connection_id(raw: &str) -> Result<ConnectionId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("connection not found".into()))
}

async fn create(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
    JsonBody(body): JsonBody<ConnectionInput>,
) -> ApiResult<impl IntoResponse> {
    let mut new = body.try_into()?;
    let tenant = tenant_id(&state, &slug).await?;
    prepare_connection(&state.templates, &state.store, &state.address_policy(), tenant, &mut new).await?;
    let connection = state.store.connections(tenant).create(new).await?;
    tracing::info!(tenant = %slug, connection = %connection.id, kind = %connection.kind, "connection created");
    Ok((StatusCode::CREATED, Json(connection)))
}

async fn list(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let tenant = tenant_id(&state, &slug).await?;
    Ok(Json(json!({"connections": state.store.connections(tenant).list().await?})))
}

async fn show(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
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
    /// Moves a template connection to another version of its template, after checking its
    /// fields against that version.
    template_version: Option<u32>,
}

async fn update(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<UpdateConnection>,
) -> ApiResult<Json<Connection>> {
    let update = ConnectionUpdate {
        name: body.name.as_deref().map(ConnectionName::parse).transpose()?,
        host: body.host.as_deref().map(Host::parse).transpose()?,
        fields: body.fields.map(check_fields).transpose()?,
        status: body.status.as_deref().map(ConnectionStatus::parse).transpose()?,
        ..Default::default()
    };
    let tenant = tenant_id(&state, &slug).await?;
    let id = connection_id(&id)?;
    let connections = state.store.connections(tenant);
    let mut update = update;
    update.template_version = body.template_version;
    if update.fields.is_some() || update.host.is_some() || update.template_version.is_some() {
        let current = connections.get(id).await?;
        let fields = update.fields.as_ref().unwrap_or(&current.fields);
        let host = update.host.as_ref().unwrap_or(&current.host);
        let credentials = connections.credentials(id).await?;
        check_for_kind(&current.kind, host, fields, &credentials)?;
        if let ConnectorKind::Template(name) = &current.kind {
            let version = update.template_version.or(current.template_version);
            let (template, _) =
                state.templates.resolve(&state.store, &state.address_policy(), tenant, name, version).await.map_err(
                    |_| ApiError::invalid("template_version", format!("template {name:?} has no such version")),
                )?;
            crate::templates::check_values(&template, fields, &credentials)?;
        } else if update.template_version.is_some() {
            return Err(ApiError::invalid("template_version", "only connections made from templates have one"));
        }
    }
    Ok(Json(connections.update(id, update).await?))
}

async fn remove(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    let tenant = super::tenant(&state, &slug).await?;
    let id = connection_id(&id)?;
    let connection = state.store.connections(tenant.id).get(id).await?;
    crate::kommo::unregister_on_delete(&state, &tenant, &connection).await;
    state.store.connections(tenant.id).delete(id).await?;
    state.crms.forget(id);
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
    PathParams((slug, id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<NewCredentials>,
) -> ApiResult<Json<Connection>> {
    let credentials = parse_credentials(body.credentials)?;
    if credentials.is_empty() {
        return Err(ApiError::invalid("credentials", "must name at least one credential"));
    }
    let tenant = tenant_id(&state, &slug).await?;
    let id = connection_id(&id)?;
    let current = state.store.connections(tenant).get(id).await?;
    check_for_kind(&current.kind, &current.host, &current.fields, &credentials)?;
    if let ConnectorKind::Template(name) = &current.kind {
        let (template, _) = state
            .templates
            .resolve(&state.store, &state.address_policy(), tenant, name, current.template_version)
            .await?;
        crate::templates::check_values(&template, &current.fields, &credentials)?;
    }
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
    PathParams((slug, id)): PathParams<(String, String)>,
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
    PathParams((slug, id)): PathParams<(String, String)>,
) -> ApiResult<Json<CheckReport>> {
    let tenant = tenant_id(&state, &slug).await?;
    let tenant = state.store.tenants().get(tenant).await?;
    let connection = state.store.connections(tenant.id).get(connection_id(&id)?).await?;
    let report = crm_access::check(&state.crms, &state.store, &state.connectors, &tenant, &connection).await?;
    tracing::info!(tenant = %slug, connection = %connection.id, ok = report.ok, "connection tested");
    Ok(Json(report))
}

async fn load(state: &AppState, slug: &str, id: &str) -> ApiResult<(crmhub_store::tenants::Tenant, Connection)> {
    let tenant = tenant_id(state, slug).await?;
    let tenant = state.store.tenants().get(tenant).await?;
    let connection = state.store.connections(tenant.id).get(connection_id(id)?).await?;
    Ok((tenant, connection))
}

fn crm_failure(error: crm_access::AccessError) -> ApiError {
    match error {
        crm_access::AccessError::Store(e) => e.into(),
        crm_access::AccessError::Crm(e) => crm_error(e),
    }
}

/// A CRM's refusal as an API error: bad values are the caller's (422), an absent record 404,
/// anything else a 502 from the remote side.
fn crm_error(error: CrmError) -> ApiError {
    match error {
        CrmError::Validation { field, message } => ApiError::invalid(field, message),
        CrmError::NotFound { what } => ApiError::NotFound(format!("{what} not found")),
        other => ApiError::BadGateway(other.to_string()),
    }
}

/// Runs one of a template connection's endpoints by name with the given values (operations the
/// template describes beyond the standard capabilities, such as Vtiger's registered ones).
async fn run_endpoint(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id, endpoint)): PathParams<(String, String, String)>,
    JsonBody(inputs): JsonBody<std::collections::BTreeMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let (tenant, connection) = load(&state, &slug, &id).await?;
    if !matches!(connection.kind, ConnectorKind::Template(_)) {
        return Err(ApiError::NotFound("only template connections have named endpoints".into()));
    }
    let connector = state
        .crms
        .template_connector(&state.store, &state.connectors, &tenant, &connection)
        .await
        .map_err(crm_failure)?;
    let result = connector.invoke(&endpoint, &inputs).await.map_err(crm_error)?;
    Ok(Json(json!({"result": result})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SmsBody {
    to: String,
    text: String,
    sender: Option<String>,
}

/// Sends a text message through an SMS-template connection.
async fn send_sms(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<SmsBody>,
) -> ApiResult<Json<Value>> {
    let (tenant, connection) = load(&state, &slug, &id).await?;
    let to = crmhub_core::phone::PhoneNumber::parse(&body.to, tenant.phone_region)
        .map_err(|e| ApiError::invalid("to", e.to_string()))?;
    let sender = state.crms.sms(&state.store, &state.connectors, &tenant, &connection).await.map_err(crm_failure)?;
    let receipt = sender.send_sms(&to, &body.text, body.sender.as_deref()).await.map_err(crm_error)?;
    Ok(Json(json!({"sent": true, "to": to.to_string(), "message_id": receipt.message_id})))
}
