//! `GET /t/{tenant}/social/iframe?id=…`: the contact card, as HTML for the platform's iframe
//! (contract §5): 400 with an empty body for a missing id, 404 for an unknown one.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use crmhub_core::crm::CardOptions;
use crmhub_core::signing::social_inbox::VerifiedRequest;

use super::card::{render, unavailable};
use super::failure::Failure;
use super::respond::{card_csp, empty, html};
use super::verification::{ForIframe, Signed};
use crate::state::AppState;

/// Longest record id accepted; CRM ids are short (`12x345`, a UUID, a number).
const MAX_ID_CHARS: usize = 128;

pub async fn iframe(State(state): State<AppState>, signed: Signed<ForIframe>) -> Response {
    let Some(id) = record_id(&signed.request) else { return empty(StatusCode::BAD_REQUEST) };
    let channel = &signed.channel;
    let settings = &channel.settings;
    let options = CardOptions { max_activities: settings.card.max_activities as usize };
    let key = (channel.tenant.id, settings.connection_id, id.to_owned(), options.clone());
    // Shared while in flight only (no reuse afterwards); rendered per caller, with its message.
    let card = state
        .social_lookups
        .cards
        .get(key, Duration::ZERO, state.store.clock().as_ref(), || async {
            channel.crm(&state).await?.contact_card(id, &options).await
        })
        .await;
    let csp = card_csp(&settings.allowed_origins);
    match card {
        Ok(card) => html(StatusCode::OK, render(&card, signed.request.metadata(), &settings.card), csp),
        Err(error) => match Failure::of(&error, channel.tenant.slug.as_str(), "contact card") {
            // An id the CRM refuses outright is as unknown to it as a missing one.
            Failure::NotFound | Failure::Refused => empty(StatusCode::NOT_FOUND),
            failure => failure.with_retry_after(html(failure.status(), unavailable(), csp)),
        },
    }
}

/// `id` as the reference reads it (PHP `empty()`: absent, `""` and `"0"` are missing); arrays,
/// non-UTF-8 bytes, control characters and overlong ids are refused the same way.
fn record_id(request: &VerifiedRequest) -> Option<&str> {
    let id = request.text("id")?;
    let plausible = !id.is_empty() && id != "0" && id.chars().count() <= MAX_ID_CHARS && !id.contains(char::is_control);
    plausible.then_some(id)
}

#[cfg(test)]
mod tests {
    use crmhub_core::Secret;
    use crmhub_core::signing::social_inbox::{Policy, sign, verify};

    use super::*;

    fn id_of(params: &[(&str, &str)]) -> Option<String> {
        let secret = Secret::new("s3cret");
        let mut all = params.to_vec();
        all.push(("expires", "1700000000"));
        let request = verify(&sign(&all, &secret), [&secret], 1_700_000_000, &Policy::default()).unwrap();
        record_id(&request).map(str::to_owned)
    }

    #[test]
    fn ids() {
        assert_eq!(id_of(&[("id", "12x5")]).as_deref(), Some("12x5"));
        for missing in [&[][..], &[("id", "")], &[("id", "0")], &[("id[]", "1")], &[("id", "a\nb")]] {
            assert_eq!(id_of(missing), None, "{missing:?}");
        }
        assert_eq!(id_of(&[("id", &"1".repeat(MAX_ID_CHARS + 1))]), None);
    }
}
