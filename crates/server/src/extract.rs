//! Extractors that turn axum's rejections into `ApiError`s with the API's JSON shape.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
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
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => {
                    let detail = e.body_text();
                    let detail = detail
                        .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                        .unwrap_or(&detail);
                    let (field, message) = split_serde_path(detail);
                    ApiError::invalid(field, message)
                }
                JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(format!("malformed JSON: {}", e.body_text())),
                JsonRejection::MissingJsonContentType(_) => {
                    ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
                }
                other => ApiError::BadRequest(other.body_text()),
            }),
        }
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
