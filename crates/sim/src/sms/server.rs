//! The send endpoint: reading a request, checking it in the documented order, recording the
//! outcome. Checking is a pure function of the request, the key's secret and the time, so the
//! order of checks is visible in one place.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use md5::{Digest, Md5};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{MAX_TEXT_CHARS, RejectReason, SmsFault, SmsMessage, SmsRejection, SmsSim};

pub(crate) fn router(sim: SmsSim) -> Router {
    Router::new()
        .route("/api/sms/send", post(send))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "No such endpoint") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "Use POST /api/sms/send")
        })
        // Outermost, so faults and the request counter also cover unknown routes.
        .layer(middleware::from_fn_with_state(sim.clone(), apply_faults))
        .with_state(sim)
}

async fn apply_faults(State(sim): State<SmsSim>, request: Request, next: Next) -> Response {
    sim.lock().requests += 1;
    match sim.inner.faults.take() {
        SmsFault::None => next.run(request).await,
        SmsFault::Latency(delay) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
        SmsFault::Http500 => error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "Internal server error"),
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    status: &'static str,
    code: &'a str,
    message: &'a str,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(ErrorBody { status: "error", code, message })).into_response()
}

#[derive(Serialize)]
struct Queued<'a> {
    status: &'static str,
    message_id: &'a str,
}

async fn send(State(sim): State<SmsSim>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let now = sim.inner.clock.now_secs();
    let request = SendRequest::read(&headers, body);
    let secret = request.api_key.as_ref().and_then(|key| sim.lock().keys.get(key).cloned());
    let max_skew = sim.inner.max_clock_skew.as_secs();
    match check(&request, secret.as_deref(), now, max_skew) {
        Ok(accepted) => {
            let mut state = sim.lock();
            let message_id = format!("m_{}", state.messages.len() + 1);
            let api_key = request.api_key.unwrap_or_default();
            let Accepted { to, text, sender, timestamp } = accepted;
            let message = SmsMessage { message_id, api_key, to, text, sender, timestamp, received_at: now };
            let response = Json(Queued { status: "queued", message_id: &message.message_id }).into_response();
            state.messages.push(message);
            response
        }
        Err(reason) => {
            tracing::debug!(code = reason.code(), "sms sim: send refused");
            sim.lock().rejections.push(request.into_rejection(reason, now));
            let status = StatusCode::from_u16(reason.status()).unwrap_or(StatusCode::BAD_REQUEST);
            error(status, reason.code(), message(reason))
        }
    }
}

fn message(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::UnknownKey => "Unknown or missing X-Api-Key",
        RejectReason::UnsupportedMediaType => "The request body must be application/json",
        RejectReason::PayloadTooLarge => "The request body is too large",
        RejectReason::InvalidJson => "The request body must be a JSON object",
        RejectReason::BadSignature => "X-Signature does not match md5(secret + to + text + timestamp)",
        RejectReason::StaleTimestamp => "X-Timestamp must be Unix seconds close to the server clock",
        RejectReason::InvalidNumber => "`to` must be an E.164 number such as +84912345678",
        RejectReason::InvalidText => "`text` must be 1 to 1600 characters",
        RejectReason::InvalidSender => "`sender` must be a string",
    }
}

/// What a send request carried, read without judging it.
struct SendRequest {
    api_key: Option<String>,
    timestamp: Option<String>,
    signature: Option<String>,
    json_content: bool,
    body: Result<Map<String, Value>, RejectReason>,
}

/// A header as text; one that is not visible ASCII counts as absent.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

impl SendRequest {
    fn read(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Self {
        let json_content = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
        let body = match body {
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(RejectReason::PayloadTooLarge),
            Err(_) => Err(RejectReason::InvalidJson),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => Ok(map),
                _ => Err(RejectReason::InvalidJson),
            },
        };
        SendRequest {
            api_key: header_text(headers, "x-api-key"),
            timestamp: header_text(headers, "x-timestamp"),
            signature: header_text(headers, "x-signature"),
            json_content,
            body,
        }
    }

    fn body_str(&self, name: &str) -> Option<String> {
        self.body.as_ref().ok()?.get(name)?.as_str().map(str::to_owned)
    }

    fn into_rejection(self, reason: RejectReason, now: i64) -> SmsRejection {
        SmsRejection {
            reason,
            to: self.body_str("to"),
            text: self.body_str("text"),
            api_key: self.api_key,
            timestamp: self.timestamp,
            received_at: now,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Accepted {
    to: String,
    text: String,
    sender: Option<String>,
    timestamp: i64,
}

/// The documented checks, in the documented order.
fn check(req: &SendRequest, secret: Option<&str>, now: i64, max_skew_secs: u64) -> Result<Accepted, RejectReason> {
    let secret = secret.ok_or(RejectReason::UnknownKey)?;
    if !req.json_content {
        return Err(RejectReason::UnsupportedMediaType);
    }
    let body = req.body.as_ref().map_err(|reason| *reason)?;
    let timestamp = req.timestamp.as_deref().unwrap_or("");
    let expected = signature(secret, &signed_text(body.get("to")), &signed_text(body.get("text")), timestamp);
    if !req.signature.as_deref().is_some_and(|given| given.trim().eq_ignore_ascii_case(&expected)) {
        return Err(RejectReason::BadSignature);
    }
    let timestamp: i64 = timestamp.trim().parse().map_err(|_| RejectReason::StaleTimestamp)?;
    if now.abs_diff(timestamp) > max_skew_secs {
        return Err(RejectReason::StaleTimestamp);
    }
    let to = body.get("to").and_then(Value::as_str).filter(|to| is_e164(to)).ok_or(RejectReason::InvalidNumber)?;
    let text = body
        .get("text")
        .and_then(Value::as_str)
        .filter(|text| !text.trim().is_empty() && text.chars().count() <= MAX_TEXT_CHARS)
        .ok_or(RejectReason::InvalidText)?;
    let sender = match body.get("sender") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(RejectReason::InvalidSender),
    };
    let (to, text) = (to.to_owned(), text.to_owned());
    Ok(Accepted { to, text, sender, timestamp })
}

/// The text a field contributes to the signature: a string as is, a number as its JSON text
/// (what a client that mistyped it would have concatenated), anything else nothing.
fn signed_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Lower-case hex `md5(secret + to + text + timestamp)`.
fn signature(secret: &str, to: &str, text: &str, timestamp: &str) -> String {
    hex::encode(Md5::digest(format!("{secret}{to}{text}{timestamp}").as_bytes()))
}

/// `+`, then 7–15 digits with no leading zero (ITU-T E.164), and nothing else.
fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_rule() {
        for ok in ["+84912345678", "+14155550100", "+6831234", "+123456789012345"] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in ["84912345678", "0912345678", "+84 912 345 678", "+0912345678", "+123456", "+1234567890123456", "+"]
        {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused_after_the_key() {
        use axum::extract::FromRequest;
        let request =
            axum::http::Request::builder().body(axum::body::Body::from(vec![b' '; 3 * 1024 * 1024])).expect("request");
        let body = Bytes::from_request(request, &()).await;
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
        let request = SendRequest::read(&headers, body);
        assert_eq!(check(&request, None, 0, 300), Err(RejectReason::UnknownKey));
        assert_eq!(check(&request, Some("secret"), 0, 300), Err(RejectReason::PayloadTooLarge));
    }

    #[test]
    fn signature_is_md5_of_the_plain_concatenation() {
        // md5("sms-secret+84912345678hi1700000000"), computed with coreutils' md5sum.
        assert_eq!(signature("sms-secret", "+84912345678", "hi", "1700000000"), "0ee387e84941d0e48563a2faf6b4a5d8");
    }

    #[test]
    fn mistyped_fields_still_contribute_to_the_signature() {
        assert_eq!(signed_text(Some(&serde_json::json!(84912345678u64))), "84912345678");
        assert_eq!(signed_text(Some(&serde_json::json!(["x"]))), "");
        assert_eq!(signed_text(None), "");
    }
}
