//! Fault injection: how ContactBook misbehaves in ways a gateway must survive. A fault replaces
//! (or delays) the answer to any request, login included, before authentication or routing, as a
//! proxy, a rate limiter or a broken deploy would.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::JsonCrmSim;
use super::error::error_json;

/// A failure applied to incoming requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JsonCrmFault {
    /// Requests are handled normally.
    #[default]
    None,
    /// HTTP 500 with `{"error":{"code":"internal_error",…}}`.
    Http500,
    /// HTTP 200, `text/html`, a maintenance page: what a misconfigured proxy or a login wall
    /// serves in place of the API.
    Html,
    /// HTTP 429 with `Retry-After: <secs>` and `{"error":{"code":"rate_limited",…}}`.
    RateLimited { retry_after_secs: u64 },
    /// HTTP 200, `application/json`, no `Content-Length`: a contact list exactly `bytes` long,
    /// streamed in 64 KiB chunks as the client reads, so a client without a response size cap
    /// buffers all of it. Valid JSON from 115 bytes up; smaller sizes are cut short.
    Huge { bytes: usize },
    /// HTTP 200 with `{"error":{"code":"token_expired",…}}`: some CRMs report an expired session
    /// in a successful response, and a gateway must still re-login.
    ExpiredTokenBody,
    /// The request is handled normally after this delay.
    Latency(Duration),
}

/// Counts every request, then applies the current fault.
pub(crate) async fn apply(State(sim): State<JsonCrmSim>, request: Request, next: Next) -> Response {
    sim.count_request();
    match sim.inner.faults.take() {
        JsonCrmFault::None => next.run(request).await,
        JsonCrmFault::Latency(delay) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
        JsonCrmFault::Http500 => json(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "Internal server error"),
        JsonCrmFault::Html => html(),
        JsonCrmFault::RateLimited { retry_after_secs } => rate_limited(retry_after_secs),
        JsonCrmFault::Huge { bytes } => huge(bytes),
        JsonCrmFault::ExpiredTokenBody => json(StatusCode::OK, "token_expired", "The access token has expired"),
    }
}

fn json(status: StatusCode, code: &str, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], error_json(code, message)).into_response()
}

const MAINTENANCE_PAGE: &str = "<html><head><title>ContactBook - Maintenance</title></head>\
<body><h1>We'll be right back</h1><p>ContactBook is down for scheduled maintenance.</p></body></html>";

fn html() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], MAINTENANCE_PAGE).into_response()
}

fn rate_limited(retry_after_secs: u64) -> Response {
    let message = format!("Too many requests; retry in {retry_after_secs} s");
    let mut response = json(StatusCode::TOO_MANY_REQUESTS, "rate_limited", &message);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

const HUGE_HEAD: &[u8] = br#"{"data":[{"id":"c_1","last_name":"Padding","notes":""#;
const HUGE_TAIL: &[u8] = br#""}],"meta":{"page":1,"per_page":25,"total":1,"has_more":false}}"#;
const CHUNK: usize = 64 * 1024;
static PADDING: [u8; CHUNK] = [b'x'; CHUNK];

/// A body of exactly `bytes` bytes, produced chunk by chunk from static data as hyper asks for
/// it (hyper only polls the body when the socket can take more), so neither side's memory grows
/// with `bytes` unless the client buffers.
fn huge(bytes: usize) -> Response {
    let overhead = HUGE_HEAD.len() + HUGE_TAIL.len();
    let (head, tail) = if bytes >= overhead {
        (HUGE_HEAD, HUGE_TAIL)
    } else {
        let head = &HUGE_HEAD[..bytes.min(HUGE_HEAD.len())];
        (head, &HUGE_TAIL[..bytes - head.len()])
    };
    let padding = bytes - head.len() - tail.len();
    let chunks = std::iter::once(head)
        .chain(std::iter::repeat_n(&PADDING[..], padding / CHUNK))
        .chain(std::iter::once(&PADDING[..padding % CHUNK]))
        .chain(std::iter::once(tail))
        .filter(|chunk| !chunk.is_empty())
        .map(|chunk| Ok::<Bytes, Infallible>(Bytes::from_static(chunk)));
    let mut response = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(bytes: usize) -> Vec<u8> {
        let body = huge(bytes).into_body();
        axum::body::to_bytes(body, usize::MAX).await.expect("body").to_vec()
    }

    #[tokio::test]
    async fn huge_bodies_have_the_exact_size_and_are_json_when_large_enough() {
        // The documented threshold.
        assert_eq!(HUGE_HEAD.len() + HUGE_TAIL.len(), 115);
        for size in [0, 1, 50, 114, 115, 116, CHUNK, CHUNK + 100, 3 * CHUNK + 7] {
            let body = body_of(size).await;
            assert_eq!(body.len(), size);
            if size >= HUGE_HEAD.len() + HUGE_TAIL.len() {
                let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
                assert_eq!(v["data"][0]["id"], "c_1");
            }
        }
    }
}
