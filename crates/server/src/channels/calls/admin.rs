//! The channel's admin API: its settings (`/admin/v1/tenants/{slug}/channels/calls`) and the
//! calls it tracks, each with its events and log jobs (`/admin/v1/tenants/{slug}/calls`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use crmhub_core::TenantId;
use crmhub_store::Store;
use crmhub_store::jobs::JobFilter;
use serde::Deserialize;
use serde_json::{Value, json};

use super::LOG_JOB;
use super::events::call_view;
use super::settings::{self, CallSettings, ConfigureError};
use crate::admin::{AdminAuth, tenant};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/tenants/{slug}/channels/calls", put(configure).get(show).delete(remove))
        .route("/admin/v1/tenants/{slug}/calls", get(list))
        .route("/admin/v1/tenants/{slug}/calls/{call_id}", get(one))
}

impl From<ConfigureError> for ApiError {
    fn from(e: ConfigureError) -> Self {
        match e {
            ConfigureError::Invalid(e) => e.into(),
            ConfigureError::Store(e) => e.into(),
        }
    }
}

fn not_configured() -> ApiError {
    ApiError::NotFound("the call-centre channel is not configured for this tenant".into())
}

async fn configure(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
    JsonBody(input): JsonBody<CallSettings>,
) -> ApiResult<Json<CallSettings>> {
    let tenant = tenant(&state, &slug).await?;
    let stored = settings::configure(&state, &tenant, input).await?;
    state.screen_pops.forget(stored.connection_id);
    tracing::info!(tenant = %tenant.slug, connection = %stored.connection_id, "call-centre channel configured");
    Ok(Json(stored))
}

async fn show(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
) -> ApiResult<Json<CallSettings>> {
    let tenant = tenant(&state, &slug).await?;
    CallSettings::load(&state.store, &tenant).await?.map(Json).ok_or_else(not_configured)
}

async fn remove(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
) -> ApiResult<StatusCode> {
    let tenant = tenant(&state, &slug).await?;
    if !state.store.channel_settings(tenant.id).remove(settings::SETTINGS_KEY).await? {
        return Err(not_configured());
    }
    tracing::info!(tenant = %tenant.slug, "call-centre channel removed");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Unix milliseconds: calls changed at or after it.
    since: Option<i64>,
    limit: Option<u32>,
}

const DEFAULT_LIST: u32 = 100;
const MAX_LIST: u32 = 1_000;

/// Calls changed since `since` (default: the last 24 hours), newest first.
async fn list(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = tenant(&state, &slug).await?;
    Ok(Json(list_calls(&state.store, tenant.id, query.since, query.limit).await?))
}

/// `{"calls": […]}`: calls changed at or after `since` (Unix milliseconds; default: the last
/// 24 hours), newest first, at most `limit`. Shared with `crmhub calls list`.
pub async fn list_calls(store: &Store, tenant: TenantId, since: Option<i64>, limit: Option<u32>) -> ApiResult<Value> {
    let limit = limit.unwrap_or(DEFAULT_LIST);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("must be between 1 and {MAX_LIST}")));
    }
    let since = since.unwrap_or_else(|| store.clock().now_millis() - 86_400_000);
    let calls = store.calls(tenant).list(since, limit).await?;
    let calls: Vec<Value> = calls.iter().map(|c| call_view(c, c.screen_pop.clone())).collect();
    Ok(json!({"calls": calls}))
}

/// One call with its events, in arrival order, and its log jobs still in the queue (pending,
/// running, or dead with the reason).
async fn one(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, call_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let tenant = tenant(&state, &slug).await?;
    show_call(&state.store, tenant.id, &call_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("no such call".into()))
}

/// The call as `GET …/calls/{call_id}` shows it, or `None` if the tenant has no such call.
/// Shared with `crmhub calls show`.
pub async fn show_call(store: &Store, tenant: TenantId, call_id: &str) -> ApiResult<Option<Value>> {
    let calls = store.calls(tenant);
    let Some(call) = calls.get(call_id).await? else { return Ok(None) };
    let events = calls.events(call_id).await?;
    let filter = JobFilter {
        tenant: Some(tenant),
        kind: Some(LOG_JOB.into()),
        dedupe_key: Some(call_id.to_owned()),
        ..JobFilter::default()
    };
    let jobs = store.jobs().list(&filter).await?;
    let mut view = call_view(&call, call.screen_pop.clone());
    view["events"] = json!(events);
    view["jobs"] = json!(jobs);
    Ok(Some(view))
}
