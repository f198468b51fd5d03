//! `/admin/v1/templates` (published) and `/admin/v1/tenants/{slug}/templates` (private).
//! A request body is the template itself, YAML or JSON (by Content-Type, else detected).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use crmhub_connectors::template::{JSON_SCHEMA, SourceFormat};
use crmhub_core::TenantId;
use crmhub_store::templates::TemplateRecord;
use serde_json::{Value, json};

use super::{AdminAuth, tenant_id};
use crate::error::{ApiError, ApiResult};
use crate::extract::{PathParams, RawBody};
use crate::state::AppState;
use crate::templates::{check_source, store_version};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/templates", get(list_published).post(publish))
        .route("/admin/v1/templates/check", post(check))
        .route("/admin/v1/templates/schema", get(schema))
        .route("/admin/v1/templates/{name}", get(show_published))
        .route("/admin/v1/templates/{name}/versions/{version}", get(show_published_version))
        .route("/admin/v1/tenants/{slug}/templates", get(list_for_tenant).post(create_private))
        .route("/admin/v1/tenants/{slug}/templates/{name}", get(show_for_tenant))
}

/// A version without its source, for lists.
fn summary(record: &TemplateRecord) -> Value {
    json!({
        "name": record.name,
        "version": record.version,
        "type": record.kind,
        "label": record.label,
        "scope": if record.tenant_id.is_some() { "private" } else { "published" },
        "format": record.format,
        "created_at": record.created_at,
    })
}

fn with_source(record: &TemplateRecord) -> Value {
    let mut value = summary(record);
    value["source"] = Value::String(record.source.clone());
    value
}

fn source_of(headers: &HeaderMap, body: &Bytes) -> Result<(String, Option<SourceFormat>), ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::BadRequest("the template must be UTF-8 text".into()))?;
    if text.trim().is_empty() {
        return Err(ApiError::BadRequest("send the template (YAML or JSON) as the request body".into()));
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let hint = if content_type.contains("json") {
        Some(SourceFormat::Json)
    } else if content_type.contains("yaml") {
        Some(SourceFormat::Yaml)
    } else {
        None
    };
    Ok((text.to_owned(), hint))
}

async fn publish(
    _: AdminAuth,
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<impl IntoResponse> {
    let (source, hint) = source_of(&headers, &body)?;
    let record = store_version(&state.store, &state.address_policy(), None, &source, hint).await?;
    tracing::info!(template = %record.name, version = record.version, "template published");
    Ok((StatusCode::CREATED, Json(summary(&record))))
}

async fn create_private(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_id(&state, &slug).await?;
    let (source, hint) = source_of(&headers, &body)?;
    let record = store_version(&state.store, &state.address_policy(), Some(tenant), &source, hint).await?;
    tracing::info!(tenant = %slug, template = %record.name, version = record.version, "private template stored");
    Ok((StatusCode::CREATED, Json(summary(&record))))
}

/// Validates without storing: 200 with what the template offers, or 422 listing every problem.
async fn check(
    _: AdminAuth,
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Json<Value>> {
    let (source, hint) = source_of(&headers, &body)?;
    let (template, _) = check_source(&source, hint, &state.address_policy()).map_err(ApiError::InvalidTemplate)?;
    let triggers: Vec<&str> = template.endpoints.iter().filter_map(|e| e.trigger.map(|t| t.as_str())).collect();
    // What parses but will likely fail at the CRM (a VTQL query with grouping parentheses).
    let warnings: Vec<Value> = crmhub_connectors::template::warnings(&template)
        .into_iter()
        .map(|w| json!({"path": w.path, "message": w.message}))
        .collect();
    Ok(Json(json!({"ok": true, "name": template.name, "type": template.kind, "triggers": triggers,
                   "fields": template.fields, "warnings": warnings})))
}

async fn schema(_: AdminAuth) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/schema+json")], JSON_SCHEMA)
}

async fn list_published(_: AdminAuth, State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let list = state.store.templates().list(None).await?;
    Ok(Json(json!({"templates": list.iter().map(summary).collect::<Vec<_>>()})))
}

async fn list_for_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let tenant = tenant_id(&state, &slug).await?;
    let list = state.store.templates().list(Some(tenant)).await?;
    Ok(Json(json!({"templates": list.iter().map(summary).collect::<Vec<_>>()})))
}

async fn versions(state: &AppState, tenant: Option<TenantId>, name: &str) -> ApiResult<Json<Value>> {
    let versions = state.store.templates().versions(tenant, name).await?;
    let Some(latest) = versions.first() else { return Err(ApiError::NotFound("template not found".into())) };
    Ok(Json(json!({"latest": with_source(latest), "versions": versions.iter().map(summary).collect::<Vec<_>>()})))
}

async fn show_published(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> ApiResult<Json<Value>> {
    versions(&state, None, &name).await
}

async fn show_for_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, name)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let tenant = tenant_id(&state, &slug).await?;
    versions(&state, Some(tenant), &name).await
}

async fn show_published_version(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((name, version)): PathParams<(String, u32)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(with_source(&state.store.templates().published(&name, Some(version)).await?)))
}
