//! ContactBook's one error shape, `{"error":{"code","message"[,"field"]}}`, with the status that
//! goes with each code. Templates match on `code` (and `field` for 422), never on `message`.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) field: Option<Cow<'static, str>>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

/// The body of an error, for responses built outside [`ApiError`] (faults).
pub(crate) fn error_json(code: &str, message: &str) -> String {
    let body = ErrorBody { error: ErrorDetail { code, message, field: None } };
    // Only strings inside: serializing cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            ErrorBody { error: ErrorDetail { code: self.code, message: &self.message, field: self.field.as_deref() } };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: a 401 names the scheme, and says why a presented token was refused.
            let challenge = match self.code {
                "invalid_token" | "token_expired" => r#"Bearer realm="contactbook", error="invalid_token""#,
                _ => r#"Bearer realm="contactbook""#,
            };
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError { status, code, message: message.into(), field: None }
}

pub(crate) fn invalid_credentials() -> ApiError {
    err(StatusCode::UNAUTHORIZED, "invalid_credentials", "Invalid username or password")
}

pub(crate) fn missing_token() -> ApiError {
    err(StatusCode::UNAUTHORIZED, "missing_token", "An `Authorization: Bearer <token>` header is required")
}

pub(crate) fn invalid_token() -> ApiError {
    err(StatusCode::UNAUTHORIZED, "invalid_token", "The access token is not valid")
}

pub(crate) fn token_expired() -> ApiError {
    err(StatusCode::UNAUTHORIZED, "token_expired", "The access token has expired")
}

pub(crate) fn not_found(what: &str) -> ApiError {
    err(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
}

pub(crate) fn method_not_allowed() -> ApiError {
    err(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed on this resource")
}

pub(crate) fn unsupported_media_type() -> ApiError {
    err(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "The request body must be application/json")
}

pub(crate) fn invalid_json(detail: impl std::fmt::Display) -> ApiError {
    err(StatusCode::BAD_REQUEST, "invalid_json", format!("The request body is not valid JSON: {detail}"))
}

pub(crate) fn not_an_object() -> ApiError {
    err(StatusCode::BAD_REQUEST, "invalid_json", "The request body must be a JSON object")
}

pub(crate) fn payload_too_large() -> ApiError {
    err(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "The request body is too large")
}

/// 422 `validation_failed` naming the offending field.
pub(crate) fn invalid_field(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> ApiError {
    ApiError { field: Some(field.into()), ..err(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", message) }
}
