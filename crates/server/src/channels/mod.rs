//! Front-office channels: the systems that call crmhub to find a person and show a card.
//! Each channel has its own module with its router; all are served by the API role.

pub mod social_inbox;

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().merge(social_inbox::router())
}
