//! The social inbox's "Custom CRM" integration (Orlo, formerly SocialSignIn; contract
//! `shared/contracts/social-inbox.md`): the platform calls a signed `/search` (JSON) and a
//! signed `/iframe` (an HTML contact card) per tenant, and crmhub answers them from the
//! tenant's CRM connection.
//!
//! * [`verification`]: the `Signed<E>` extractor (signature, expiry, unknown tenants).
//! * [`lookup`]: the tenant's channel (settings, secrets, connection), briefly cached.
//! * [`search`] and [`iframe`]: the two endpoints; [`card`] renders the card with [`html`].
//! * [`respond`]: responses and their security headers; [`failure`]: CRM errors.
//! * [`settings`], [`admin`] and [`links`]: configuration, its admin API, and URLs.

mod admin;
mod card;
mod failure;
mod html;
mod iframe;
pub mod links;
mod lookup;
mod respond;
mod search;
pub mod settings;
mod verification;

use axum::Router;
use axum::routing::get;

pub use lookup::ChannelCache;

use crate::state::AppState;

/// The two signed endpoints. Only GET (and so HEAD) is routed; anything else is 405.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}/social/search", get(search::search))
        .route("/t/{tenant}/social/iframe", get(iframe::iframe))
        .layer(axum::middleware::map_response(respond::security_headers))
        .merge(admin::router())
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
