//! Extractors that turn axum's rejections into `ApiError`s with the API's JSON shape.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body: malformed JSON is a 400, a wrong content type a 415, and a well-formed body
/// with a missing, unknown or mistyped field a 422 naming the field.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// A JSON body already read (a route that keeps the raw bytes, for `Idempotency-Key`), with
/// `JsonBody`'s errors; the content type is not checked.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    axum::Json::<T>::from_bytes(body).map(|axum::Json(value)| value).map_err(json_rejection)
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            let detail = e.body_text();
            let detail =
                detail.strip_prefix("Failed to deserialize the JSON body into the target type: ").unwrap_or(&detail);
            let (field, message) = split_serde_path(detail);
            ApiError::invalid(field, message)
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(format!("malformed JSON: {}", e.body_text())),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// serde_path_to_error-style messages read "field.path: problem"; a top-level message
/// ("missing field `slug`") names the field in backticks.
fn split_serde_path(detail: &str) -> (String, String) {
    if let Some((path, message)) = detail.split_once(": ") {
        if !path.contains(' ') && !path.is_empty() {
            return (path.to_owned(), message.to_owned());
        }
    }
    let named = detail.split('`').nth(1).filter(|f| !f.contains(' ')).unwrap_or("body");
    (named.to_owned(), detail.to_owned())
}

/// A body over `server.max_body_bytes` is a 413.
fn too_large() -> ApiError {
    ApiError::PayloadTooLarge("the request body is larger than this server accepts (server.max_body_bytes)".into())
}

/// The raw body, with a 413 for one over the limit and a 400 for one that could not be read.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state).await.map(Self).map_err(|e: BytesRejection| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::BadRequest(format!("the request body could not be read: {}", e.body_text()))
            }
        })
    }
}

/// Path parameters: one that does not decode or parse is a 400 in the API's shape.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(path) => Ok(Self(path.0)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                Err(ApiError::BadRequest(format!("invalid path: {}", e.kind())))
            }
            Err(other) => Err(ApiError::Internal(anyhow::anyhow!("path parameters: {}", other.body_text()))),
        }
    }
}

/// Query parameters with the API's 400.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| ApiError::BadRequest(e.body_text()))
    }
}

/// A body that may be empty (meaning "defaults"), else JSON with the same errors as `JsonBody`.
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            let (field, message) = split_serde_path(&e.to_string());
            ApiError::invalid(field, message)
        } else {
            ApiError::BadRequest(format!("malformed JSON: {e}"))
        }
    })
}

/// The token of an `Authorization: Bearer …` header; 401 when there is none to read.
pub fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or(ApiError::Unauthorized)?;
    let value = header.to_str().map_err(|_| ApiError::Unauthorized)?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthorized)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::Unauthorized);
    }
    Ok(token)
}
