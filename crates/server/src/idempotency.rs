//! `Idempotency-Key` for the routes an agent UI writes through (tickets, contacts, SMS): a
//! request repeated with the same key and body gets the first answer again, marked
//! `Idempotent-Replayed: true`, and writes nothing. The same key with another body is a 422; a
//! repeat while the first still runs waits for its answer (up to `WAIT`), else is a 409. Keys
//! are scoped by tenant and route and kept for `TTL`.
//!
//! A route reads the header with the `Option<IdempotencyKey>` extractor and wraps its work in
//! `once`:
//!
//! ```ignore
//! const ROUTE: &str = "POST /t/{tenant}/contacts";
//!
//! async fn create_contact(
//!     State(state): State<AppState>,
//!     caller: ChannelCaller,
//!     key: Option<IdempotencyKey>,
//!     RawBody(body): RawBody,
//! ) -> ApiResult<Response> {
//!     let input: NewContact = parse(&body)?; // a refused body never reaches the key store
//!     let store = state.store.clone();
//!     Ok(idempotency::once(&store, caller.tenant.id, ROUTE, key.as_ref(), &body, async move {
//!         let id = write_contact(&state, input).await?;
//!         Ok::<_, ApiError>((StatusCode::CREATED, Json(json!({"id": id}))))
//!     })
//!     .await)
//! }
//! ```

use std::time::Duration;

use axum::body::Body;
use axum::extract::OptionalFromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use crmhub_core::TenantId;
use crmhub_store::Store;
use crmhub_store::idempotency::Begin;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

pub const HEADER: &str = "Idempotency-Key";
/// Set on an answer that was stored by an earlier request rather than produced now.
pub const REPLAYED: &str = "Idempotent-Replayed";
/// How long a key is remembered: a repeat a day later is a new request.
pub const TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a repeat waits for the first request with its key to answer.
pub const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);
const MAX_LEN: usize = 255;

/// A valid `Idempotency-Key`: 1–255 visible ASCII characters (a UUID, typically).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        let visible = (1..=MAX_LEN).contains(&raw.len()) && raw.iter().all(u8::is_ascii_graphic);
        match std::str::from_utf8(raw) {
            Ok(key) if visible => Ok(Self(key.to_owned())),
            _ => Err(ApiError::BadRequest(format!(
                "the {HEADER} header must be 1 to {MAX_LEN} visible ASCII characters (a UUID, for example)"
            ))),
        }
    }

    /// The key of a request, if it sent one; a malformed or repeated header is refused.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let mut values = headers.get_all(HEADER).iter();
        let Some(first) = values.next() else { return Ok(None) };
        if values.next().is_some() {
            return Err(ApiError::BadRequest(format!("send one {HEADER} header, not several")));
        }
        Self::parse(first.as_bytes()).map(Some)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `Option<IdempotencyKey>` in a handler: `None` without the header, a 400 for a bad one.
impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Self::from_headers(&parts.headers)
    }
}

/// What tells a true repeat from a key reused for other content. `route` names the method and
/// path template, so the method is part of it.
pub fn request_hash(route: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(route.as_bytes());
    hash.update([0]);
    hash.update(body);
    hex::encode(hash.finalize())
}

/// Runs `run` at most once per key: without a key it just runs; with one it runs only for the
/// first request, whose answer is then replayed to repeats (see the module docs). `route` is
/// the method and path template (`"POST /t/{tenant}/contacts"`); `body` the raw request body.
///
/// The work runs in a task of its own, so a client that gives up (or a route time limit that
/// fires) does not cut it short: the answer is still stored, and the client's retry gets it.
/// Answers are kept when they are final (a success, or a refusal a repeat cannot change); after
/// a failure worth retrying the key is released, and a retry with it runs again.
pub async fn once<R>(
    store: &Store,
    tenant: TenantId,
    route: &'static str,
    key: Option<&IdempotencyKey>,
    body: &[u8],
    run: impl Future<Output = R> + Send + 'static,
) -> Response
where
    R: IntoResponse + 'static,
{
    once_waiting(WAIT, store, tenant, route, key, body, run).await
}

/// `once` with the time a repeat waits for the first request as a parameter.
async fn once_waiting<R>(
    wait: Duration,
    store: &Store,
    tenant: TenantId,
    route: &'static str,
    key: Option<&IdempotencyKey>,
    body: &[u8],
    run: impl Future<Output = R> + Send + 'static,
) -> Response
where
    R: IntoResponse + 'static,
{
    let Some(key) = key else { return run.await.into_response() };
    let hash = request_hash(route, body);
    let keys = store.idempotency(tenant);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match keys.begin(route, key.as_str(), &hash, TTL).await {
            Err(e) => return ApiError::from(e).into_response(),
            Ok(Begin::Fresh) => {
                let owned = tokio::spawn(run_and_record(store.clone(), tenant, route, key.0.clone(), run));
                return match owned.await {
                    Ok(response) => response,
                    Err(panicked) => {
                        // The work died with nothing recorded; a retry may run it again.
                        if let Err(e) = keys.abandon(route, key.as_str()).await {
                            tracing::warn!(error = %e, route, "could not release an idempotency key");
                        }
                        ApiError::Internal(anyhow::Error::new(panicked).context(route)).into_response()
                    }
                };
            }
            Ok(Begin::Replay { status, body }) => return replay(status, body),
            Ok(Begin::Mismatch) => {
                return ApiError::invalid(
                    HEADER,
                    "this key was already used for a request with a different body; use a new key for a new request",
                )
                .into_response();
            }
            Ok(Begin::InFlight) if tokio::time::Instant::now() + POLL > deadline => {
                return ApiError::Conflict {
                    field: HEADER.to_owned(),
                    message: format!(
                        "a request with this {HEADER} is still being processed; retry with the same key later"
                    ),
                }
                .into_response();
            }
            Ok(Begin::InFlight) => tokio::time::sleep(POLL).await,
        }
    }
}

async fn run_and_record<R: IntoResponse>(
    store: Store,
    tenant: TenantId,
    route: &'static str,
    key: String,
    run: impl Future<Output = R>,
) -> Response {
    let (parts, body) = run.await.into_response().into_parts();
    let keys = store.idempotency(tenant);
    // The routes answer JSON built in memory, so reading it back cannot run long.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => {
            if let Err(e) = keys.abandon(route, &key).await {
                tracing::warn!(error = %e, route, "could not release an idempotency key");
            }
            return ApiError::Internal(anyhow::Error::new(e).context("reading the answer to store")).into_response();
        }
    };
    let recorded = match std::str::from_utf8(&bytes) {
        Ok(text) if is_final(parts.status) => keys.finish(route, &key, parts.status.as_u16(), text).await,
        _ => keys.abandon(route, &key).await,
    };
    if let Err(e) = recorded {
        // The client still gets its answer; the key stays `running` until it goes stale.
        tracing::warn!(error = %e, route, "could not record an idempotency key's answer");
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Whether a repeat must get this answer again. Not: server errors and unavailability (a retry
/// may succeed), 409/429/408/425 (they say "later"), and 404 (what was missing, such as a call
/// whose event has not arrived yet, may exist by the retry). A refusal of the request itself
/// (400, 422, …) stays one.
fn is_final(status: StatusCode) -> bool {
    !(status.is_server_error()
        || matches!(
            status,
            StatusCode::NOT_FOUND
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::CONFLICT
                | StatusCode::TOO_EARLY
                | StatusCode::TOO_MANY_REQUESTS
        ))
}

fn replay(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let json = !body.is_empty();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    if json {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    } else {
        headers.remove(header::CONTENT_TYPE);
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests;
