//! The small HTML pages the OAuth callback answers with: the user's browser shows them.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use crmhub_store::kommo::AuthorizeMode;

use crate::channels::social_inbox::html::escape_into;

/// A page with a title and one sentence, both escaped.
pub fn page(status: StatusCode, title: &str, message: &str, notify_opener: Option<&'static str>) -> Response {
    let mut html = String::with_capacity(1024);
    html.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
    escape_into(&mut html, title);
    html.push_str("</title></head><body><h1>");
    escape_into(&mut html, title);
    html.push_str("</h1><p>");
    escape_into(&mut html, message);
    html.push_str("</p>");
    if let Some(outcome) = notify_opener {
        // `outcome` is one of this module's literals; the message says nothing secret, so any
        // opener may read it.
        html.push_str("<script>if (window.opener) { window.opener.postMessage({source: \"crmhub\", kommo: \"");
        html.push_str(outcome);
        html.push_str("\"}, \"*\"); } window.close();</script>");
    }
    html.push_str("</body></html>");
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=UTF-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// A refused callback: 400 with the reason.
pub fn refused(reason: &str) -> Response {
    page(StatusCode::BAD_REQUEST, "Kommo connection refused", reason, None)
}

/// The callback was accepted: the exchange runs in the background.
pub fn accepted(mode: AuthorizeMode) -> Response {
    page(
        StatusCode::OK,
        "Connecting your Kommo account",
        "crmhub received Kommo's authorisation and is finishing the connection. You can close this window.",
        (mode == AuthorizeMode::PostMessage).then_some("accepted"),
    )
}

pub fn declined(mode: AuthorizeMode) -> Response {
    page(
        StatusCode::OK,
        "Kommo access declined",
        "The Kommo user declined access, so crmhub is not connected. Start the connection again to retry.",
        (mode == AuthorizeMode::PostMessage).then_some("declined"),
    )
}
