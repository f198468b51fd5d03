//! Fault injection: what the next requests to `webservice.php` suffer before (or instead of)
//! being handled. Faults model the failures a gateway meets in the field (a PHP fatal error, a slow
//! host, a proxy cutting the connection), so they apply to every operation alike.

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A failure applied to incoming requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Requests are handled normally.
    #[default]
    None,
    /// HTTP 500, `text/html`, empty body: what PHP fatal errors look like.
    Http500Empty,
    /// The request is handled normally after this delay.
    Latency(Duration),
    /// The connection is aborted without a complete HTTP response.
    DropConnection,
}

#[derive(Debug, Default)]
struct Active {
    fault: Fault,
    /// `None`: until cleared. `Some(n)`: for the next `n` requests.
    remaining: Option<u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Faults(Mutex<Active>);

impl Faults {
    pub(crate) fn set(&self, fault: Fault) {
        *self.lock() = Active { fault, remaining: None };
    }

    pub(crate) fn set_for(&self, requests: u64, fault: Fault) {
        *self.lock() = if requests == 0 { Active::default() } else { Active { fault, remaining: Some(requests) } };
    }

    /// The fault for the request being started, counting it against a bounded fault.
    pub(crate) fn take(&self) -> Fault {
        let mut active = self.lock();
        let fault = active.fault;
        if let Some(left) = active.remaining.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                *active = Active::default();
            }
        }
        fault
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Active> {
        // A poisoned lock only means a test panicked while holding it; the data is still usable.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The response PHP gives for a fatal error (and for unknown operations, JSON bodies, …).
pub(crate) fn http_500_empty() -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/html; charset=UTF-8")], "").into_response()
}

/// A response whose body fails before producing a byte. hyper reacts to a body error by closing
/// the connection mid-response, so the client sees a reset/incomplete message rather than any
/// HTTP status it could mistake for an answer from Vtiger.
pub(crate) fn dropped_connection() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<bytes::Bytes, io::Error>(io::Error::new(io::ErrorKind::ConnectionAborted, "simulated connection drop"))
    });
    let mut response = Response::new(Body::from_stream(stream));
    // A declared length the body never delivers keeps the message incomplete even if hyper
    // flushes the head before polling the body.
    response.headers_mut().insert(header::CONTENT_LENGTH, header::HeaderValue::from_static("64"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_fault_expires_after_n_requests() {
        let f = Faults::default();
        f.set_for(2, Fault::Http500Empty);
        assert_eq!(f.take(), Fault::Http500Empty);
        assert_eq!(f.take(), Fault::Http500Empty);
        assert_eq!(f.take(), Fault::None);
    }

    #[test]
    fn unbounded_fault_stays_until_cleared() {
        let f = Faults::default();
        f.set(Fault::DropConnection);
        for _ in 0..5 {
            assert_eq!(f.take(), Fault::DropConnection);
        }
        f.set(Fault::None);
        assert_eq!(f.take(), Fault::None);
    }
}
