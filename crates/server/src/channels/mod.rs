//! Front-office channels: the systems that call crmhub to find a person and show a card.
//! Each channel has its own module with its router; all are served by the API role.

pub mod calls;
pub mod keys;
pub mod social_inbox;

use axum::Router;

use crate::config::ServerSettings;
use crate::state::AppState;

/// The endpoints the channels' platforms call, each with its channel's time limit.
pub fn router(server: &ServerSettings) -> Router<AppState> {
    let social_inbox = std::time::Duration::from_millis(server.social_inbox_timeout_ms);
    Router::new().merge(social_inbox::router(social_inbox)).merge(keys::router()).merge(calls::router())
}

/// The channels' configuration, served as part of the admin API.
pub fn admin_router() -> Router<AppState> {
    Router::new().merge(social_inbox::admin_router()).merge(calls::admin_router())
}
