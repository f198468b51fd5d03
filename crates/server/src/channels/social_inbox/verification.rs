//! [`Signed<E>`]: the extractor that turns `/t/{tenant}/social/…?…&expires=…&sig=…` into a
//! verified request for one endpoint, or into the reference's JSON error (contract §4, §8).
//!
//! An unknown tenant, or one whose channel is not configured, is verified against random
//! decoy secrets: it passes the same parameter check (400) and then fails the same signature
//! check (403 `Signature mismatch`), with the same body and, as far as the work done is
//! concerned, the same cost (at least [`MIN_CANDIDATES`] HMACs either way). So the endpoints
//! do not reveal which tenants exist.

use std::marker::PhantomData;
use std::sync::{Arc, LazyLock};

use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use crmhub_core::signing::social_inbox::{Policy, VerifiedRequest, VerifyError, verify};
use crmhub_core::{Secret, UnixMillis};
use crmhub_store::secrets::StoredSecret;

use super::Endpoint;
use super::lookup::Channel;
use super::respond::json_error;
use crate::state::AppState;

/// Secrets tried per request at least: the current and the previous secret of a rotation.
/// Fewer real ones are padded with decoys.
const MIN_CANDIDATES: usize = 2;

/// Random per process, never stored or shown, so nothing can be signed with them.
static DECOYS: LazyLock<[Secret; MIN_CANDIDATES]> = LazyLock::new(|| [Secret::generate(), Secret::generate()]);

/// Which endpoint's secrets a [`Signed`] request is checked against.
pub trait SignedEndpoint {
    const ENDPOINT: Endpoint;
}

pub struct ForSearch;
pub struct ForIframe;

impl SignedEndpoint for ForSearch {
    const ENDPOINT: Endpoint = Endpoint::Search;
}

impl SignedEndpoint for ForIframe {
    const ENDPOINT: Endpoint = Endpoint::Iframe;
}

/// A request whose signature and expiry checked out, with the tenant's channel.
pub struct Signed<E> {
    pub channel: Arc<Channel>,
    pub request: VerifiedRequest,
    endpoint: PhantomData<E>,
}

/// The secret that matched, for the log.
struct Matched {
    id: String,
    /// An old secret, still inside its rotation grace period: the platform has not been
    /// given the new one yet.
    superseded: bool,
}

impl<E: SignedEndpoint + Send> FromRequestParts<AppState> for Signed<E> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        // A path that does not decode names no tenant; it is answered like any unknown one.
        let slug = Path::<String>::from_request_parts(parts, state).await.map(|p| p.0).unwrap_or_default();
        let channel = state.social_inbox.get(&state.store, &slug).await.map_err(|e| {
            tracing::error!(error.cause_chain = ?e, "social inbox: reading the channel failed");
            json_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable; try again")
        })?;
        let query = parts.uri.query().unwrap_or_default();
        let now = state.store.clock().now_millis();
        match (check(channel.as_deref(), E::ENDPOINT, query, now), channel) {
            (Ok((request, matched)), Some(channel)) => {
                tracing::info!(tenant = %channel.tenant.slug, endpoint = E::ENDPOINT.name(), secret_id = %matched.id,
                    superseded_secret = matched.superseded, "social inbox request verified");
                Ok(Self { channel, request, endpoint: PhantomData })
            }
            // Without a channel only decoys are tried, which never match.
            (Ok(_), None) => Err(reject(&slug, E::ENDPOINT, VerifyError::SignatureMismatch)),
            (Err(e), _) => Err(reject(&slug, E::ENDPOINT, e)),
        }
    }
}

/// Verifies `query` against the endpoint's secrets that are valid `now` (padded with decoys),
/// under the tenant's expiry policy.
fn check(
    channel: Option<&Channel>,
    endpoint: Endpoint,
    query: &str,
    now: UnixMillis,
) -> Result<(VerifiedRequest, Matched), VerifyError> {
    // An empty secret would let anyone sign; the input validation refuses them, and so does this.
    let usable = |s: &&StoredSecret| s.retires_at.is_none_or(|at| at > now) && !s.secret.is_empty();
    let live: Vec<&StoredSecret> =
        channel.map(|c| c.secrets(endpoint).iter().filter(usable).collect()).unwrap_or_default();
    let decoys = DECOYS.iter().take(MIN_CANDIDATES.saturating_sub(live.len()));
    let keys = live.iter().map(|s| &s.secret).chain(decoys);
    let policy = channel.map_or_else(Policy::default, |c| c.settings.policy());
    let request = verify(query, keys, now.div_euclid(1000), &policy)?;
    // Decoys come after the real secrets, so an index past them is no match.
    let secret = live.get(request.secret_index()).ok_or(VerifyError::SignatureMismatch)?;
    Ok((request, Matched { id: secret.id.clone(), superseded: secret.retires_at.is_some() }))
}

/// The reference's response for a refused request.
fn reject(slug: &str, endpoint: Endpoint, error: VerifyError) -> Response {
    tracing::debug!(tenant = ?slug, endpoint = endpoint.name(), reason = error.message(), "social inbox request refused");
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::FORBIDDEN);
    json_error(status, error.message())
}
