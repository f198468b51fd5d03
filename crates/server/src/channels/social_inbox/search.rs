//! `GET /t/{tenant}/social/search?q=…`: contacts matching `q` in the tenant's CRM, as
//! `{"results":[{"id":"…","name":"…"}]}` with string ids (contract §5).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crmhub_core::crm::ContactSummary;
use crmhub_core::signing::PhpValue;
use crmhub_core::signing::social_inbox::VerifiedRequest;
use serde::Serialize;

use super::failure::Failure;
use super::respond::json_error;
use super::verification::{ForSearch, Signed};
use crate::state::AppState;

/// Longest search term, in characters. A person types a name, an e-mail or a number; a longer
/// term is a mistake or an attack on the CRM's search.
pub const MAX_TERM_CHARS: usize = 256;

const EMPTY: &str = "q empty or not specified";
const ARRAY: &str = "q must be a single value, not an array";
const NOT_TEXT: &str = "q must be UTF-8 text";
const TOO_LONG: &str = "q is too long (at most 256 characters)";

#[derive(Serialize)]
struct Results {
    results: Vec<Hit>,
}

#[derive(Serialize)]
struct Hit {
    id: String,
    name: String,
}

pub async fn search(State(state): State<AppState>, signed: Signed<ForSearch>) -> Response {
    let term = match search_term(&signed.request) {
        Ok(term) => term,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, message),
    };
    let channel = &signed.channel;
    let limit = channel.settings.result_limit as usize;
    let key = (channel.tenant.id, channel.settings.connection_id, term.to_owned(), limit);
    let ttl = channel.settings.search_cache_ttl();
    let found = state
        .social_lookups
        .searches
        .get(key, ttl, state.store.clock().as_ref(), || async {
            channel.crm(&state).await?.search_contacts(term, limit).await
        })
        .await;
    match found {
        Ok(found) => Json(Results { results: found.iter().map(hit).collect() }).into_response(),
        Err(error) => {
            let failure = Failure::of(&error, channel.tenant.slug.as_str(), "search");
            let message = match failure {
                Failure::Refused => "q is not a valid search term",
                Failure::Busy(_) => "the CRM is busy; try again shortly",
                Failure::NotFound | Failure::Unavailable => "the CRM is unavailable; try again later",
            };
            let status = if failure == Failure::NotFound { StatusCode::BAD_GATEWAY } else { failure.status() };
            failure.with_retry_after(json_error(status, message))
        }
    }
}

fn hit(contact: &ContactSummary) -> Hit {
    Hit { id: contact.id.clone(), name: contact.display_name.clone() }
}

/// `q` as the reference reads it (PHP `empty()`: absent, `""` and `"0"` are empty), plus what
/// crmhub refuses on top: arrays, bytes that are not UTF-8, overlong terms. All are 400.
fn search_term(request: &VerifiedRequest) -> Result<&str, &'static str> {
    let term = match request.get("q") {
        None => return Err(EMPTY),
        Some(PhpValue::Array(_)) => return Err(ARRAY),
        Some(value) => value.as_str().ok_or(NOT_TEXT)?,
    };
    if term.is_empty() || term == "0" {
        return Err(EMPTY);
    }
    if term.chars().count() > MAX_TERM_CHARS {
        return Err(TOO_LONG);
    }
    Ok(term)
}

#[cfg(test)]
mod tests {
    use crmhub_core::Secret;
    use crmhub_core::signing::social_inbox::{Policy, sign, verify};

    use super::*;

    fn term_of(params: &[(&str, &str)]) -> Result<String, &'static str> {
        let secret = Secret::new("s3cret");
        let mut all = params.to_vec();
        all.push(("expires", "1700000000"));
        let request = verify(&sign(&all, &secret), [&secret], 1_700_000_000, &Policy::default()).unwrap();
        search_term(&request).map(str::to_owned)
    }

    #[test]
    fn empty_terms_the_way_php_empty_sees_them() {
        assert_eq!(term_of(&[]), Err(EMPTY));
        assert_eq!(term_of(&[("q", "")]), Err(EMPTY));
        assert_eq!(term_of(&[("q", "0")]), Err(EMPTY));
        assert_eq!(term_of(&[("q", "00")]).as_deref(), Ok("00"));
        assert_eq!(term_of(&[("q", " ")]).as_deref(), Ok(" "));
    }

    #[test]
    fn arrays_and_overlong_terms_are_refused() {
        assert_eq!(term_of(&[("q[]", "x")]), Err(ARRAY));
        assert_eq!(term_of(&[("q", &"é".repeat(MAX_TERM_CHARS))]).map(|t| t.chars().count()), Ok(MAX_TERM_CHARS));
        assert_eq!(term_of(&[("q", &"a".repeat(MAX_TERM_CHARS + 1))]), Err(TOO_LONG));
        assert!(TOO_LONG.contains(&MAX_TERM_CHARS.to_string()));
    }
}
