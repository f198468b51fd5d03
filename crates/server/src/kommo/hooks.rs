//! `POST /hooks/kommo/{connection}/{secret}`: Kommo's account webhooks arriving (contract §5).
//!
//! Kommo signs nothing, so the random path secret (kept only as a hash) is the credential: a
//! wrong one, or a connection without a destination, is 404 and nothing is recorded. Kommo
//! waits 2 s, counts any non-2xx answer as a failure and disables a webhook after 100 of them,
//! so an authenticated delivery is always answered 200 once it is durable: read, it is recorded
//! with one `sync.contact` job per pipeline and contact in the same transaction; unreadable, or
//! for another account, or with no pipeline to feed, it is kept quarantined (visible, and
//! redrivable once the cause is fixed) — never dropped.
//!
//! Operators see the quarantine at `GET /admin/v1/tenants/{slug}/sync/deliveries/quarantined`
//! and redrive one with `POST /admin/v1/tenants/{slug}/sync/deliveries/{id}/redrive`, which reads
//! it again as it would arrive now.

use std::collections::BTreeSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crmhub_connectors::kommo::{KommoFields, webhook};
use crmhub_core::{ConnectionId, TenantId};
use crmhub_store::kommo::hash_token;
use crmhub_store::sync::DeliveryStatus;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::admin::AdminAuth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{PathParams, QueryParams};
use crate::state::AppState;

/// The largest delivery read (Kommo batches, but a megabyte is thousands of contacts); larger
/// bodies are refused with 413 before they are read.
pub const MAX_DELIVERY_BYTES: usize = 1024 * 1024;

pub(super) async fn receive(
    State(state): State<AppState>,
    Path((connection, secret)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let (tenant, connection) = authenticate(&state, &connection, &secret).await?;
    let (status, error, jobs) = match read(&state, tenant, connection, &body).await? {
        Ok(jobs) => (DeliveryStatus::Accepted, None, jobs),
        Err(why) => (DeliveryStatus::Quarantined, Some(why), Vec::new()),
    };
    let queued = jobs.len();
    let text = String::from_utf8_lossy(&body);
    let id = state.store.sync(tenant).record_delivery(connection, &text, status, error.as_deref(), jobs).await?;
    match &error {
        Some(why) => tracing::warn!(%connection, delivery = %id, %why, "kommo webhook quarantined"),
        None => tracing::info!(%connection, delivery = %id, jobs = queued, "kommo webhook accepted"),
    }
    Ok((StatusCode::OK, Json(json!({"delivery": id, "status": status.as_str(), "jobs": queued}))).into_response())
}

/// The tenant and connection whose destination this is, if the secret is its secret.
async fn authenticate(state: &AppState, connection: &str, secret: &str) -> ApiResult<(TenantId, ConnectionId)> {
    let unknown = || ApiError::NotFound("no such webhook destination".into());
    let connection: ConnectionId = connection.parse().map_err(|_| unknown())?;
    let (tenant, expected) = state.store.kommo_webhook_owner(connection).await?.ok_or_else(unknown)?;
    let presented = hash_token(secret);
    if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(unknown());
    }
    Ok((tenant, connection))
}

/// The delivery's jobs, or why it is quarantined instead.
async fn read(
    state: &AppState,
    tenant: TenantId,
    connection: ConnectionId,
    body: &[u8],
) -> ApiResult<Result<Vec<crmhub_store::jobs::NewJob>, String>> {
    let delivery = match webhook::parse(body) {
        Ok(delivery) => delivery,
        Err(e) => return Ok(Err(format!("the body is not a readable Kommo webhook: {e}"))),
    };
    let record = state.store.connections(tenant).get(connection).await?;
    let fields = KommoFields::parse(&record.fields).unwrap_or_default();
    if let (Some(sent), Some(ours)) = (delivery.account_id, fields.account_id) {
        if sent != ours {
            return Ok(Err(format!("the delivery is for Kommo account {sent}, not this connection's {ours}")));
        }
    }
    let ours = fields
        .account
        .as_deref()
        .map(str::to_owned)
        .or_else(|| url::Url::parse(record.host.as_str()).ok().and_then(|u| u.host_str().map(str::to_owned)));
    let label = ours.as_deref().and_then(|a| a.split('.').next()).unwrap_or_default();
    if let Some(sent) = &delivery.subdomain {
        if !sent.eq_ignore_ascii_case(label) {
            return Ok(Err(format!("the delivery is for Kommo subdomain {sent:?}, not this connection's {label:?}")));
        }
    }
    let contacts: BTreeSet<String> = delivery.contacts().map(|e| e.id.to_string()).collect();
    let contacts: Vec<String> = contacts.into_iter().collect();
    if contacts.is_empty() {
        // Only companies: nothing to mirror, and nothing wrong either.
        return Ok(Ok(Vec::new()));
    }
    let jobs = crate::sync::jobs_for_contacts(&state.store, tenant, connection, &contacts).await?;
    if jobs.is_empty() {
        return Ok(Err("no active sync pipeline reads from this connection; redrive once one does".into()));
    }
    Ok(Ok(jobs))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    limit: Option<u32>,
}

/// `GET /admin/v1/tenants/{slug}/sync/deliveries/quarantined`: what could not be used, oldest
/// first, with the reason and the body as received.
pub(super) async fn quarantined(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams(slug): PathParams<String>,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let tenant = crate::admin::tenant(&state, &slug).await?;
    let deliveries = state.store.sync(tenant.id).quarantined(query.limit.unwrap_or(100)).await?;
    Ok(Json(json!({"deliveries": deliveries})))
}

/// `POST /admin/v1/tenants/{slug}/sync/deliveries/{id}/redrive`: reads a quarantined delivery
/// again (a pipeline created since, the connection fixed) and enqueues its jobs; one still
/// unusable is 422 with the reason and stays quarantined.
pub(super) async fn redrive(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let tenant = crate::admin::tenant(&state, &slug).await?;
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound("webhook delivery not found".into()))?;
    let delivery = state.store.sync(tenant.id).delivery(id).await?;
    if delivery.status != DeliveryStatus::Quarantined {
        return Err(ApiError::invalid("id", format!("the delivery is {}, not quarantined", delivery.status.as_str())));
    }
    match read(&state, tenant.id, delivery.connection_id, delivery.body.as_bytes()).await? {
        Ok(jobs) => {
            let queued = jobs.len();
            state.store.sync(tenant.id).redrive_delivery(id, jobs).await?;
            Ok(Json(json!({"delivery": id, "status": DeliveryStatus::Redriven.as_str(), "jobs": queued})))
        }
        Err(why) => Err(ApiError::invalid("delivery", why)),
    }
}
