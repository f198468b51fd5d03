//! `/admin/v1/tenants/{slug}/sync/…`: contact sync pipelines, their runs and dead letters; and
//! under a connection, its source contacts and (for Unisender) single contacts by e-mail.
//! See docs/sync.md.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use crmhub_connectors::http::Lane;
use crmhub_connectors::unisender::{ContactType, ImportRow};
use crmhub_core::ConnectorKind;
use crmhub_core::crm::{ChangeCursor, CrmError};
use crmhub_store::connections::Connection;
use crmhub_store::sync::{Pipeline, PipelineStatus, PipelineUpdate, RunKind};
use crmhub_store::tenants::Tenant;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::connections::connection_id;
use super::{AdminAuth, tenant};
use crate::crm_access::AccessError;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams, QueryParams, RawBody};
use crate::state::AppState;
use crate::sync::{self, pipeline};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/tenants/{slug}/sync/pipelines", get(list).post(create))
        .route("/admin/v1/tenants/{slug}/sync/pipelines/{id}", get(show).patch(update).delete(remove))
        .route("/admin/v1/tenants/{slug}/sync/pipelines/{id}/runs", get(runs).post(start))
        .route("/admin/v1/tenants/{slug}/sync/pipelines/{id}/errors", get(row_errors))
        .route("/admin/v1/tenants/{slug}/sync/runs/{id}", get(run))
        .route("/admin/v1/tenants/{slug}/connections/{id}/contacts", get(source_contacts))
        .route("/admin/v1/tenants/{slug}/connections/{id}/unisender/contacts", post(add_contact))
        .route(
            "/admin/v1/tenants/{slug}/connections/{id}/unisender/contacts/{email}",
            get(get_contact).delete(exclude_contact),
        )
}

fn access_error(error: AccessError) -> ApiError {
    match error {
        AccessError::Store(e) => e.into(),
        AccessError::Crm(e) => crate::channels::calls::crm_failure(&e),
    }
}

fn crm_error(error: CrmError) -> ApiError {
    crate::channels::calls::crm_failure(&error)
}

/// A pipeline by id, or by name (the CLI passes either).
async fn find_pipeline(state: &AppState, tenant: &Tenant, raw: &str) -> ApiResult<Pipeline> {
    let sync = state.store.sync(tenant.id);
    match raw.parse::<Uuid>() {
        Ok(id) => Ok(sync.pipeline(id).await?),
        Err(_) => Ok(sync.pipeline_by_name(raw).await?),
    }
}

use crate::sync::run_view;

async fn create(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
    JsonBody(input): JsonBody<pipeline::PipelineInput>,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant(&state, &slug).await?;
    let (pipeline, start) = sync::create_pipeline(&state, &tenant, input).await?;
    state.jobs_wake.notify_waiters();
    tracing::info!(tenant = %slug, pipeline = %pipeline.id, "sync pipeline created; backfill started");
    let mut body = serde_json::to_value(&pipeline).unwrap_or_default();
    body["backfill"] = run_view(&start.run);
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let tenant = tenant(&state, &slug).await?;
    Ok(Json(json!({"pipelines": state.store.sync(tenant.id).pipelines().await?})))
}

async fn show(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let tenant = tenant(&state, &slug).await?;
    let pipeline = find_pipeline(&state, &tenant, &id).await?;
    let runs = state.store.sync(tenant.id).runs(pipeline.id, 5).await?;
    let mut body = serde_json::to_value(&pipeline).unwrap_or_default();
    body["runs"] = Value::Array(runs.iter().map(run_view).collect());
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    list_id: Option<String>,
    field_map: Option<Map<String, Value>>,
    deletion: Option<String>,
    /// `null` makes the pipeline webhook-driven again.
    #[serde(default, with = "double_option")]
    poll_secs: Option<Option<u32>>,
    status: Option<String>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
        Option::<u32>::deserialize(d).map(Some)
    }
}

async fn update(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> ApiResult<Json<Pipeline>> {
    let tenant = tenant(&state, &slug).await?;
    let current = find_pipeline(&state, &tenant, &id).await?;
    if let Some(map) = &body.field_map {
        pipeline::validate_field_map(map)?;
    }
    if let Some(list) = &body.list_id {
        if list.trim().is_empty() {
            return Err(ApiError::invalid("list_id", "must not be empty"));
        }
    }
    if let Some(poll) = body.poll_secs {
        pipeline::check_poll_secs(poll)?;
    }
    let status = match body.status.as_deref() {
        None => None,
        Some(raw) => Some(
            PipelineStatus::parse(raw)
                .ok_or_else(|| ApiError::invalid("status", format!("{raw:?} is not active or paused")))?,
        ),
    };
    let update = PipelineUpdate {
        list_id: body.list_id.map(|l| l.trim().to_owned()),
        field_map: body.field_map,
        deletion: body.deletion.as_deref().map(|d| pipeline::parse_deletion(Some(d))).transpose()?,
        poll_secs: body.poll_secs,
        status,
    };
    Ok(Json(state.store.sync(tenant.id).update_pipeline(current.id, update).await?))
}

async fn remove(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    let tenant = tenant(&state, &slug).await?;
    let pipeline = find_pipeline(&state, &tenant, &id).await?;
    state.store.sync(tenant.id).delete_pipeline(pipeline.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    kind: Option<String>,
}

async fn start(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
    RawBody(body): RawBody,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant(&state, &slug).await?;
    let pipeline = find_pipeline(&state, &tenant, &id).await?;
    // The body is optional: none starts a backfill.
    let body: StartBody = if body.iter().all(u8::is_ascii_whitespace) {
        StartBody { kind: None }
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let raw = body.kind.unwrap_or_else(|| "backfill".into());
    let kind = RunKind::parse(&raw).ok_or_else(|| {
        ApiError::invalid("kind", format!("{raw:?} is not a run kind; expected backfill or reconcile"))
    })?;
    let started = sync::start_run(&state.store, &pipeline, kind).await?;
    state.jobs_wake.notify_waiters();
    let mut body = run_view(&started.run);
    body["started"] = json!(started.created);
    Ok((StatusCode::ACCEPTED, Json(body)))
}

async fn runs(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let tenant = tenant(&state, &slug).await?;
    let pipeline = find_pipeline(&state, &tenant, &id).await?;
    let runs = state.store.sync(tenant.id).runs(pipeline.id, 50).await?;
    Ok(Json(json!({"runs": runs.iter().map(run_view).collect::<Vec<_>>()})))
}

async fn run(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let tenant = tenant(&state, &slug).await?;
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound("sync run not found".into()))?;
    Ok(Json(run_view(&state.store.sync(tenant.id).run(id).await?)))
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<u32>,
}

async fn row_errors(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<LimitQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = tenant(&state, &slug).await?;
    let pipeline = find_pipeline(&state, &tenant, &id).await?;
    let errors = state.store.sync(tenant.id).row_errors(pipeline.id, query.limit.unwrap_or(100)).await?;
    Ok(Json(json!({"errors": errors})))
}

async fn load_connection(state: &AppState, slug: &str, id: &str) -> ApiResult<(Tenant, Connection)> {
    let tenant = tenant(state, slug).await?;
    let connection = state.store.connections(tenant.id).get(connection_id(id)?).await?;
    Ok((tenant, connection))
}

#[derive(Deserialize)]
struct ContactsQuery {
    query: Option<String>,
    /// The change-feed cursor a previous page returned as `next_page`.
    page: Option<String>,
    limit: Option<usize>,
}

/// A source's contacts: a search when `query` is given, else its change feed page by page.
async fn source_contacts(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<ContactsQuery>,
) -> ApiResult<Json<Value>> {
    let (tenant, connection) = load_connection(&state, &slug, &id).await?;
    let crm = state
        .crms
        .crm(&state.store, &state.connectors, &tenant, &connection, Lane::Interactive)
        .await
        .map_err(access_error)?;
    match query.query.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        Some(q) => {
            let found = crm.search_contacts(q, query.limit.unwrap_or(50).clamp(1, 250)).await.map_err(crm_error)?;
            Ok(Json(json!({"contacts": found, "next_page": null})))
        }
        None => {
            let cursor = query.page.map(ChangeCursor);
            let page = crm.list_changes(cursor.as_ref()).await.map_err(crm_error)?;
            let next = page.more.then_some(page.next.0);
            Ok(Json(json!({"contacts": page.updated, "next_page": next})))
        }
    }
}

async fn unisender(
    state: &AppState,
    slug: &str,
    id: &str,
) -> ApiResult<std::sync::Arc<crmhub_connectors::unisender::Unisender>> {
    let (tenant, connection) = load_connection(state, slug, id).await?;
    if connection.kind != ConnectorKind::Unisender {
        return Err(ApiError::Unsupported("this needs a unisender connection".into()));
    }
    sync::unisender_of(&state.store, &state.connectors, &tenant, &connection, Lane::Interactive)
        .await
        .map_err(access_error)
}

async fn get_contact(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id, email)): PathParams<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let unisender = unisender(&state, &slug, &id).await?;
    match unisender.get_contact(email.trim()).await.map_err(crm_error)? {
        Some(c) => Ok(Json(json!({"email": c.email, "status": c.status, "list_ids": c.list_ids, "fields": c.fields}))),
        None => Err(ApiError::NotFound(format!("{email} not found in Unisender"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    list_id: String,
    email: String,
    name: Option<String>,
}

async fn add_contact(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<AddBody>,
) -> ApiResult<impl IntoResponse> {
    if body.list_id.trim().is_empty() {
        return Err(ApiError::invalid("list_id", "is required"));
    }
    if !crmhub_core::crm::email_is_plausible(body.email.trim()) {
        return Err(ApiError::invalid("email", format!("{:?} is not an e-mail address", body.email)));
    }
    let unisender = unisender(&state, &slug, &id).await?;
    let mut fields = std::collections::BTreeMap::new();
    if let Some(name) = body.name.filter(|n| !n.trim().is_empty()) {
        fields.insert("Name".to_owned(), name);
    }
    let row = ImportRow { email: Some(body.email.trim().to_owned()), phone: None, fields, delete: false };
    let report = unisender.import_contacts(body.list_id.trim(), &[row]).await.map_err(crm_error)?;
    if let Some(refused) = report.row_errors.first() {
        return Err(ApiError::invalid(
            "email",
            format!("Unisender refused it: {} ({})", refused.message, refused.code),
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"email": body.email.trim(), "list_id": body.list_id.trim(), "inserted": report.inserted, "updated": report.updated}),
        ),
    ))
}

#[derive(Deserialize)]
struct ExcludeQuery {
    list_id: Option<String>,
}

async fn exclude_contact(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id, email)): PathParams<(String, String, String)>,
    QueryParams(query): QueryParams<ExcludeQuery>,
) -> ApiResult<StatusCode> {
    let list =
        query.list_id.filter(|l| !l.trim().is_empty()).ok_or_else(|| ApiError::invalid("list_id", "is required"))?;
    let unisender = unisender(&state, &slug, &id).await?;
    unisender.exclude(ContactType::Email, email.trim(), &[list.trim()]).await.map_err(crm_error)?;
    Ok(StatusCode::NO_CONTENT)
}
