//! The social inbox's "Custom CRM" integration (Orlo, formerly SocialSignIn; contract
//! `shared/contracts/social-inbox.md`): the platform calls a signed `/search` (JSON) and a
//! signed `/iframe` (an HTML contact card) per tenant, and crmhub answers them from the
//! tenant's CRM connection.
//!
//! * [`verification`]: the `Signed<E>` extractor (signature, expiry, unknown tenants).
//! * [`lookup`]: the tenant's channel (settings, secrets, connection), briefly cached.
//! * [`search`] and [`iframe`]: the two endpoints; [`card`] renders the card with [`html`].
//! * [`flights`]: concurrent identical lookups share one CRM call; searches may be cached.
//! * [`respond`]: responses and their security headers; [`failure`]: CRM errors.
//! * [`settings`], [`admin`] and [`links`]: configuration, its admin API, and URLs.

mod admin;
mod card;
mod failure;
mod flights;
pub(crate) mod html;
mod iframe;
pub mod links;
mod lookup;
mod respond;
mod search;
pub mod settings;
mod verification;

use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{MethodRouter, get};

use crmhub_connectors::http::interactive_request;
pub use flights::Lookups;
pub use lookup::ChannelCache;

use crate::middleware::{RouteTimeout, timeout};
use crate::state::AppState;

/// The two signed endpoints, each stopped after `limit` with its own kind of answer. Only GET
/// (and so HEAD) is routed; anything else is 405 in the reference's JSON error shape.
pub fn router(limit: Duration) -> Router<AppState> {
    let limited = |route: MethodRouter<AppState>, answer: fn(Duration) -> Response| {
        route.layer(axum::middleware::from_fn_with_state(RouteTimeout { after: limit, answer }, timeout))
    };
    Router::new()
        .route("/t/{tenant}/social/search", limited(get(search::search), search_timed_out))
        .route("/t/{tenant}/social/iframe", limited(get(iframe::iframe), card_timed_out))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(one_interactive_request))
        .layer(axum::middleware::map_response(respond::security_headers))
}

/// The channel's configuration under the admin API.
pub fn admin_router() -> Router<AppState> {
    admin::router()
}

/// An agent is waiting: all of a request's CRM calls together wait at most
/// `outbound.interactive_max_wait_ms` for rate budget, then it is answered 503.
async fn one_interactive_request(request: Request, next: Next) -> Response {
    interactive_request(next.run(request)).await
}

/// The platform asked with another method than GET or HEAD.
async fn method_not_allowed() -> Response {
    respond::json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed; only GET is served")
}

/// Search ran past `server.social_inbox_timeout_ms` (a slow CRM): 504 in the reference's shape.
fn search_timed_out(_: Duration) -> Response {
    respond::json_error(StatusCode::GATEWAY_TIMEOUT, "the CRM did not answer in time; try again later")
}

/// The card ran past the limit: 504 with the card's "not available" page. The tenant's
/// `allowed_origins` are not known here, so the page may be framed by the default origin only.
fn card_timed_out(_: Duration) -> Response {
    let csp = respond::card_csp(&[]);
    respond::html(StatusCode::GATEWAY_TIMEOUT, card::unavailable(), csp)
}

/// One of the two endpoints; each has its own secret (they may be equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Search,
    Iframe,
}

impl Endpoint {
    pub const ALL: [Endpoint; 2] = [Self::Search, Self::Iframe];

    /// The tenant-secret purpose holding this endpoint's signing secrets.
    pub fn purpose(self) -> &'static str {
        match self {
            Self::Search => "social_inbox.search",
            Self::Iframe => "social_inbox.iframe",
        }
    }

    /// As in the path (`/t/{tenant}/social/{name}`) and the log.
    pub fn name(self) -> &'static str {
        match self {
            Self::Search => "search",
            Self::Iframe => "iframe",
        }
    }
}
