//! The HTTP stack every route shares: a request id (taken from `X-Request-Id` when it is
//! usable, else generated, and echoed back), a tracing span per request carrying it, per
//! route-class timeouts, and the uniform answers for unknown routes and wrong methods.

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::error::ApiError;

/// `X-Request-Id`, in both directions.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a client; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client's request id may be used as it is: 1 to [`MAX_REQUEST_ID_LEN`] characters
/// from `A–Z a–z 0–9 - _ . : + = /` (UUIDs, ULIDs, hex and base64 ids, AWS-style `Root=1-…`
/// prefixes). Anything else (spaces, quotes, control characters, non-ASCII) could forge or
/// break a log line, so it is replaced by a generated one.
pub fn usable_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len())
        && value.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:+=/".contains(b))
}

/// Removes an unusable `X-Request-Id` (or more than one) before the id is set, so that a
/// generated one takes its place. The refused value is not logged.
pub async fn drop_unusable_request_id(mut request: Request) -> Request {
    let headers = request.headers_mut();
    let mut given = headers.get_all(&REQUEST_ID).iter();
    let keep = matches!((given.next(), given.next()), (Some(id), None) if usable_request_id(id.as_bytes()));
    if !keep && headers.contains_key(&REQUEST_ID) {
        headers.remove(&REQUEST_ID);
        tracing::debug!("replacing an unusable X-Request-Id");
    }
    request
}

/// A random UUID (v4, hyphenated) for requests that bring no usable id.
#[derive(Debug, Clone, Copy, Default)]
pub struct GenerateRequestId;

impl MakeRequestId for GenerateRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).ok().map(RequestId::new)
    }
}

/// The span every log line of a request is written in: its id, method and route template
/// (never the raw path, which can hold personal data).
pub fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
    tracing::info_span!("request", request_id = %id, method = %request.method(), route)
}

/// A route class's time limit and what it answers when the limit passes.
#[derive(Clone, Copy)]
pub struct RouteTimeout {
    pub after: Duration,
    pub answer: fn(Duration) -> Response,
}

/// Stops a request that takes longer than its class allows (dropping the handler's work, as a
/// client that gave up would) and answers in the class's error shape.
pub async fn timeout(State(limit): State<RouteTimeout>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit.after, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_ms = limit.after.as_millis() as u64, "request timed out");
            (limit.answer)(limit.after)
        }
    }
}

/// The admin API's (and operations') answer to a timeout.
pub fn admin_timeout(after: Duration) -> Response {
    ApiError::Timeout(format!("no answer within {} ms (server.admin_timeout_ms); try again later", after.as_millis()))
        .into_response()
}

/// Unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// A known route asked with a method it does not serve (`Allow` lists the ones it does).
pub async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on this route"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_that_are_used_as_given() {
        for id in ["7b03c785-5da6-422a-9426-10638484709e", "01HZX3", "Root=1-67891233-abcdef", "a+b/c=", "x"] {
            assert!(usable_request_id(id.as_bytes()), "{id}");
        }
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for id in ["", "a b", "a\"b", "a\nb", "ünï", "{\"x\":1}", "a;b", long.as_str()] {
            assert!(!usable_request_id(id.as_bytes()), "{id:?}");
        }
        assert!(usable_request_id("a".repeat(MAX_REQUEST_ID_LEN).as_bytes()));
    }
}
