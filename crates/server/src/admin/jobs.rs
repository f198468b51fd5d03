//! `/admin/v1/jobs` (installation-wide) and `/admin/v1/tenants/{slug}/jobs`: inspect the queue,
//! redrive dead jobs, discard them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use crmhub_core::{JobId, TenantId};
use crmhub_store::jobs::{JobFilter, JobStatus, Redrive};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminAuth, tenant_id};
use crate::error::{ApiError, ApiResult};
use crate::extract::{PathParams, QueryParams, RawBody, optional_json};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/jobs", get(list_all))
        .route("/admin/v1/jobs/redrive", post(redrive_all))
        .route("/admin/v1/tenants/{slug}/jobs", get(list_tenant))
        .route("/admin/v1/tenants/{slug}/jobs/redrive", post(redrive_tenant))
        .route("/admin/v1/tenants/{slug}/jobs/{id}", delete(discard))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    kind: Option<String>,
    limit: Option<u32>,
}

impl ListQuery {
    fn filter(self, tenant: Option<TenantId>) -> Result<JobFilter, ApiError> {
        let status = match self.status.as_deref() {
            None => None,
            Some(raw) => Some(JobStatus::parse(raw).ok_or_else(|| {
                ApiError::invalid("status", format!("unknown status {raw:?}; expected pending, running or dead"))
            })?),
        };
        Ok(JobFilter { tenant, status, kind: self.kind, dedupe_key: None, limit: self.limit })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    /// Specific dead jobs; absent means every dead job in scope.
    ids: Option<Vec<String>>,
}

impl RedriveBody {
    fn which(self) -> Result<Redrive, ApiError> {
        match self.ids {
            None => Ok(Redrive::AllDead),
            Some(ids) => ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    id.parse::<JobId>().map_err(|_| ApiError::invalid(format!("ids[{i}]"), "is not a job id"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Redrive::Ids),
        }
    }
}

async fn list_all(
    _: AdminAuth,
    State(state): State<AppState>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!({"jobs": state.store.jobs().list(&q.filter(None)?).await?})))
}

async fn list_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = tenant_id(&state, &slug).await?;
    Ok(Json(json!({"jobs": state.store.jobs().list(&q.filter(Some(tenant))?).await?})))
}

async fn redrive_all(_: AdminAuth, State(state): State<AppState>, RawBody(body): RawBody) -> ApiResult<Json<Value>> {
    let which = optional_json::<RedriveBody>(&body)?.which()?;
    let redriven = state.store.jobs().redrive(None, which).await?;
    state.jobs_wake.notify_waiters();
    Ok(Json(json!({"redriven": redriven})))
}

async fn redrive_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
    RawBody(body): RawBody,
) -> ApiResult<Json<Value>> {
    let tenant = tenant_id(&state, &slug).await?;
    let which = optional_json::<RedriveBody>(&body)?.which()?;
    let redriven = state.store.jobs().redrive(Some(tenant), which).await?;
    state.jobs_wake.notify_waiters();
    Ok(Json(json!({"redriven": redriven})))
}

async fn discard(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    let tenant = tenant_id(&state, &slug).await?;
    let id: JobId = id.parse().map_err(|_| ApiError::NotFound("dead job not found".into()))?;
    state.store.jobs().discard_dead(tenant, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
