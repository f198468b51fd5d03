//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use crmhub_store::jobs::QueueDepth;
use serde_json::json;

use crate::metrics::QueueLabels;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

/// The process is up and serving.
async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// The database answers and its schema is current.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.check_ready().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready", "database": state.store.backend().as_str()}))),
        // The reason (a database error) is for the operator's logs, not for anonymous callers.
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not_ready"})))
        }
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.jobs().depth(None).await {
        Ok(QueueDepth { pending, running, dead }) => {
            for (status, count) in [("pending", pending), ("running", running), ("dead", dead)] {
                let gauge = state.metrics.queue_depth.get_or_create(&QueueLabels { status: status.to_owned() });
                gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the queue depth for /metrics"),
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}
