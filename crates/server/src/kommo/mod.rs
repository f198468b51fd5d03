//! Kommo (amoCRM) connections, the parts beyond the connector: connecting an account through
//! Kommo's OAuth (`oauth/start` and the public callback, then a durable `kommo.connect` job
//! that exchanges the code), refreshing tokens ahead of expiry, pausing the connections of a
//! host Kommo has blocked, the webhook destination registered at the account, and the
//! settings endpoint of crmhub's Kommo widget. See docs/kommo.md.

pub mod client;
mod connect;
mod hooks;
mod jobs;
mod page;
mod webhook;
mod widget;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post, put};

pub use connect::{Started, start_authorization};
pub use jobs::{host_blocked, schedule_refreshes};

use crate::error::ApiError;
use crate::state::AppState;

/// Exchanges a callback's code (sealed in the payload) for the connection's tokens.
pub const CONNECT_JOB: &str = crmhub_store::settings::KOMMO_CONNECT_JOB;
/// Refreshes one OAuth connection's tokens when they expire within two hours.
pub const REFRESH_JOB: &str = "kommo.refresh";
/// Makes the connections of a host Kommo had blocked active again once the block ends.
pub const UNBLOCK_JOB: &str = "kommo.unblock";

/// The routes Kommo and its widget call: no admin token.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/oauth/kommo/callback", get(connect::callback))
        .route("/kommo/widget/settings", post(widget::save_settings))
        .route(
            "/hooks/kommo/{connection}/{secret}",
            post(hooks::receive).layer(axum::extract::DefaultBodyLimit::max(hooks::MAX_DELIVERY_BYTES)),
        )
}

/// The admin API's Kommo routes, under a connection.
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/tenants/{slug}/connections/{id}/oauth/start", post(connect::start))
        .route(
            "/admin/v1/tenants/{slug}/connections/{id}/kommo/webhook",
            put(webhook::register).delete(webhook::remove),
        )
        .route("/admin/v1/tenants/{slug}/connections/{id}/kommo/webhook/rotate", post(webhook::rotate))
        .route("/admin/v1/tenants/{slug}/sync/deliveries/quarantined", get(hooks::quarantined))
        .route("/admin/v1/tenants/{slug}/sync/deliveries/{id}/redrive", post(hooks::redrive))
}

pub fn register_jobs(registry: &mut crate::jobs::JobRegistry) {
    registry.register(CONNECT_JOB, Arc::new(jobs::ConnectJob));
    registry.register(REFRESH_JOB, Arc::new(jobs::RefreshJob));
    registry.register(UNBLOCK_JOB, Arc::new(jobs::UnblockJob));
}

pub use webhook::unregister_on_delete;

/// A request for a Kommo feature on a connection of another kind (or without OAuth).
fn not_kommo(what: &str) -> ApiError {
    ApiError::Unsupported(format!("{what} needs a kommo connection"))
}
