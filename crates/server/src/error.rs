//! The one error type of the HTTP API. Client errors carry a message that says what to fix;
//! internal errors are logged with their cause chain and answered with an opaque 500.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crmhub_core::FieldError;
use crmhub_store::StoreError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request could not be read (malformed JSON, bad query string).
    #[error("{0}")]
    BadRequest(String),
    #[error("missing bearer token")]
    Unauthorized,
    /// A credential other than the bearer token (Kommo's `X-Auth-Token`) was refused; the
    /// message names the check that failed, never the credential.
    #[error("{0}")]
    Refused(String),
    #[error("the token is not valid for this resource")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{message}")]
    Conflict { field: String, message: String },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A field's value is unacceptable; the message names the field.
    #[error("{0}")]
    Invalid(FieldError),
    /// The tenant's connector cannot do what the request asks (a CRM without tickets, say).
    #[error("{0}")]
    Unsupported(String),
    /// A template with problems; every one is listed with its path.
    #[error("the template has {} problem(s)", .0.0.len())]
    InvalidTemplate(crmhub_connectors::template::TemplateErrors),
    #[error("{0}")]
    TooManyRequests(String),
    /// The remote system (a CRM) failed; the message is safe to show.
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    Unavailable(String),
    /// The request ran past its route's time limit and was stopped.
    #[error("{0}")]
    Timeout(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(FieldError::new(field, message))
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized | Self::Refused(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            Self::Unsupported(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unsupported"),
            Self::InvalidTemplate(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_template"),
            Self::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::BadGateway(_) => (StatusCode::BAD_GATEWAY, "bad_gateway"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::Invalid(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { entity } => Self::NotFound(format!("{entity} not found")),
            StoreError::Conflict { field, message } => Self::Conflict { field: field.to_owned(), message },
            StoreError::QueueFull { .. } => Self::TooManyRequests(e.to_string()),
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = match &self {
            Self::Internal(cause) => {
                tracing::error!(error.cause_chain = ?cause, "internal error");
                json!({"error": {"code": code, "message": "internal error; see the server log"}})
            }
            Self::Invalid(e) => json!({"error": {"code": code, "message": e.to_string(), "field": e.field}}),
            Self::Conflict { field, message } => json!({"error": {"code": code, "message": message, "field": field}}),
            Self::InvalidTemplate(errors) => {
                let details: Vec<_> = errors.0.iter().map(|e| json!({"path": e.path, "message": e.message})).collect();
                json!({"error": {"code": code, "message": self.to_string(), "details": details}})
            }
            other => json!({"error": {"code": code, "message": other.to_string()}}),
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(self, Self::Unauthorized) {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
