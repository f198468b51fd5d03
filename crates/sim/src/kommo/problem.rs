//! Kommo's two body types (§3): `application/hal+json` for successes and
//! `application/problem+json` `{"title","type","status","detail"}` for errors.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An error answer. Handlers return `Result<Response, Problem>`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Problem {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
}

impl Problem {
    pub(crate) fn new(status: u16, detail: impl Into<String>) -> Problem {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = status.as_u16();
        let title = status.canonical_reason().unwrap_or("Error");
        Problem {
            status,
            body: json!({"title": title, "type": format!("https://httpstatus.es/{code}"), "status": code,
                         "detail": detail.into()}),
        }
    }

    /// Adds a member next to the standard ones (`hint`, `validation-errors`, `retry_after`).
    pub(crate) fn with(mut self, key: &str, value: Value) -> Problem {
        if let Some(map) = self.body.as_object_mut() {
            map.insert(key.to_owned(), value);
        }
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body.to_string()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response
    }
}

pub(crate) fn unauthorized(detail: &str) -> Problem {
    Problem::new(401, detail)
}

/// 400 `Request validation failed` with the contract's `validation-errors` (§4): one entry per
/// refused entity, `(request_id, [(code, path, detail)])`.
pub(crate) fn validation(errors: Vec<(String, Vec<FieldError>)>) -> Problem {
    let list: Vec<Value> = errors
        .into_iter()
        .map(|(request_id, errors)| {
            let errors: Vec<Value> =
                errors.into_iter().map(|e| json!({"code": e.code, "path": e.path, "detail": e.detail})).collect();
            json!({"request_id": request_id, "errors": errors})
        })
        .collect();
    Problem::new(400, "Request validation failed").with("validation-errors", Value::Array(list))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub(crate) code: &'static str,
    pub(crate) path: String,
    pub(crate) detail: String,
}

impl FieldError {
    pub(crate) fn new(code: &'static str, path: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError { code, path: path.into(), detail: detail.into() }
    }
}

/// 200 `application/hal+json`.
pub(crate) fn hal(body: &Value) -> Response {
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/hal+json"));
    response
}

/// 204 with an empty body: Kommo's "nothing found" (§4).
pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
