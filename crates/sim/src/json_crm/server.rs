//! Routes, extractors and handlers. Extractors do authentication and body parsing, so that every
//! rejection, including axum's own (bad path, unreadable body), comes out in ContactBook's error
//! shape instead of axum's plain-text defaults.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router, middleware};
use serde::Serialize;

use super::JsonCrmSim;
use super::error::{self, ApiError};
use super::faults;
use super::input::{CallInput, CallPatch, ContactInput, Credentials, NoteInput, Object, Query, TicketInput};
use super::wire::{ActivityOut, CallOut, ContactOut, Data, NoteOut, TicketOut, paginate};

pub(crate) fn router(sim: JsonCrmSim) -> Router {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/contacts", get(list_contacts).post(create_contact))
        // A static segment outranks `{id}`, so `changes` is never read as a contact id.
        .route("/api/v1/contacts/changes", get(contact_changes))
        .route("/api/v1/contacts/{id}", get(get_contact))
        .route("/api/v1/contacts/{id}/activities", get(contact_activities))
        .route("/api/v1/calls", get(list_calls).post(create_call))
        .route("/api/v1/calls/{id}", put(update_call))
        .route("/api/v1/notes", post(create_note))
        .route("/api/v1/tickets", post(create_ticket))
        .fallback(|| async { error::not_found("endpoint") })
        .method_not_allowed_fallback(|| async { error::method_not_allowed() })
        // Outermost, so faults and the request counter also cover unknown routes.
        .layer(middleware::from_fn_with_state(sim.clone(), faults::apply))
        .with_state(sim)
}

/// The user behind a valid bearer token.
pub(crate) struct Caller(String);

impl FromRequestParts<JsonCrmSim> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, sim: &JsonCrmSim) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers).ok_or_else(error::missing_token)?;
        sim.authenticate(token).map(Caller)
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive, RFC 7235).
/// Any other scheme, or an empty token, counts as no token at all.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A path id. A segment axum cannot decode cannot name a record either, hence 404.
pub(crate) struct Id(String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) =
            Path::<String>::from_request_parts(parts, state).await.map_err(|_| error::not_found("record"))?;
        Ok(Id(id))
    }
}

/// A JSON object body; the media type is checked before the body is read.
pub(crate) struct JsonBody(Object);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(error::unsupported_media_type());
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                error::payload_too_large()
            } else {
                error::invalid_json("the body could not be read")
            }
        })?;
        Object::parse(&bytes).map(JsonBody)
    }
}

/// `application/json` or any `application/…+json`, whatever the parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(essence) =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next())
    else {
        return false;
    };
    let essence = essence.trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn ok(body: impl Serialize) -> Response {
    Json(body).into_response()
}

fn created(body: impl Serialize) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

// Login attempts are counted before the body is judged, so a malformed login still counts.
async fn login(State(sim): State<JsonCrmSim>, body: Result<JsonBody, ApiError>) -> Result<Response, ApiError> {
    sim.count_login();
    let JsonBody(body) = body?;
    let credentials = Credentials::try_from(&body)?;
    sim.login(&credentials).map(ok)
}

async fn list_contacts(
    State(sim): State<JsonCrmSim>,
    _: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref());
    let (page, phone_key) = (query.page()?, query.phone_key()?);
    Ok(sim.with_store(|store, _| {
        let found = store.find_contacts(query.get("search"), phone_key.as_deref());
        ok(paginate(found, page, ContactOut::from))
    }))
}

async fn contact_changes(
    State(sim): State<JsonCrmSim>,
    _: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref());
    let (page, since) = (query.page()?, query.since()?);
    Ok(sim.with_store(|store, _| {
        let changed = store.changed_since(since);
        // The cursor for the next poll covers every matching contact, not just this page.
        let next_since = changed.last().map_or(since, |c| c.updated_at);
        let mut list = paginate(changed, page, ContactOut::from);
        list.meta.next_since = Some(next_since);
        ok(list)
    }))
}

async fn get_contact(State(sim): State<JsonCrmSim>, _: Caller, Id(id): Id) -> Result<Response, ApiError> {
    sim.with_store(|store, _| {
        let contact = store.contact(&id).ok_or_else(|| error::not_found("contact"))?;
        Ok(ok(Data { data: ContactOut::from(contact) }))
    })
}

async fn contact_activities(State(sim): State<JsonCrmSim>, _: Caller, Id(id): Id) -> Result<Response, ApiError> {
    let activities = sim.with_store(|store, _| store.activities(&id)).ok_or_else(|| error::not_found("contact"))?;
    Ok(ok(Data { data: activities.into_iter().map(ActivityOut::from).collect::<Vec<_>>() }))
}

async fn create_contact(
    State(sim): State<JsonCrmSim>,
    Caller(user): Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = ContactInput::try_from(&body)?;
    let contact = sim.with_store(|store, now| store.create_contact(input, &user, now));
    Ok(created(Data { data: ContactOut::from(&contact) }))
}

async fn list_calls(State(sim): State<JsonCrmSim>, _: Caller, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref());
    query.only(&["external_id", "page", "per_page"])?;
    let (page, external_id) = (query.page()?, query.filter("external_id")?);
    Ok(sim.with_store(|store, _| ok(paginate(store.find_calls(external_id), page, CallOut::from))))
}

async fn create_call(State(sim): State<JsonCrmSim>, _: Caller, JsonBody(body): JsonBody) -> Result<Response, ApiError> {
    let input = CallInput::try_from(&body)?;
    let call = sim.with_store(|store, now| store.create_call(input, now))?;
    Ok(created(Data { data: CallOut::from(&call) }))
}

async fn update_call(
    State(sim): State<JsonCrmSim>,
    _: Caller,
    Id(id): Id,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let patch = CallPatch::try_from(&body)?;
    let call = sim.with_store(|store, now| store.update_call(&id, patch, now))?;
    Ok(ok(Data { data: CallOut::from(&call) }))
}

async fn create_note(
    State(sim): State<JsonCrmSim>,
    Caller(user): Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = NoteInput::try_from(&body)?;
    let note = sim.with_store(|store, now| store.create_note(input, &user, now))?;
    Ok(created(Data { data: NoteOut::from(&note) }))
}

async fn create_ticket(
    State(sim): State<JsonCrmSim>,
    _: Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = TicketInput::try_from(&body)?;
    let ticket = sim.with_store(|store, now| store.create_ticket(input, now))?;
    Ok(created(Data { data: TicketOut::from(&ticket) }))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(name: header::HeaderName, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn bearer_tokens_are_read_leniently_but_only_from_the_bearer_scheme() {
        assert_eq!(bearer_token(&headers(header::AUTHORIZATION, "Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers(header::AUTHORIZATION, "bearer   abc ")), Some("abc"));
        assert_eq!(bearer_token(&headers(header::AUTHORIZATION, "Basic YTpi")), None);
        assert_eq!(bearer_token(&headers(header::AUTHORIZATION, "Bearer ")), None);
        assert_eq!(bearer_token(&headers(header::AUTHORIZATION, "abc")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn oversized_bodies_are_413_in_the_error_shape() {
        // Over a socket the server may answer before the client finishes sending, so this is
        // checked in process.
        let body = format!(r#"{{"last_name":"{}"}}"#, "x".repeat(3 * 1024 * 1024));
        let request = axum::http::Request::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(body))
            .expect("request");
        let rejection = JsonBody::from_request(request, &()).await.err().map(|e| e.code);
        assert_eq!(rejection, Some("payload_too_large"));
    }

    #[test]
    fn json_media_types() {
        assert!(is_json(&headers(header::CONTENT_TYPE, "application/json")));
        assert!(is_json(&headers(header::CONTENT_TYPE, "Application/JSON; charset=utf-8")));
        assert!(is_json(&headers(header::CONTENT_TYPE, "application/merge-patch+json")));
        assert!(!is_json(&headers(header::CONTENT_TYPE, "text/plain")));
        assert!(!is_json(&headers(header::CONTENT_TYPE, "application/x-www-form-urlencoded")));
        assert!(!is_json(&HeaderMap::new()));
    }
}
