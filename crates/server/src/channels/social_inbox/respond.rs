//! The channel's responses and the headers every one of them carries.
//!
//! Search results and cards are personal data fetched with a one-off signed URL: nothing may
//! cache them, sniff them into another type, or learn the signed URL from a `Referer`. JSON is
//! never to be framed; the card only by the tenant's allowed origins.

use std::sync::LazyLock;

use axum::body::Body;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use crmhub_core::signing::social_inbox::error_body;
use sha2::{Digest, Sha256};

use super::card::STYLE;

/// Who may frame the card when the tenant names no origins: the platform's web app, the one
/// origin its public documentation names (`https://app.socialsignin.net`). Anything else must
/// be listed in `allowed_origins`.
pub const DEFAULT_FRAME_ANCESTORS: &str = "https://app.socialsignin.net";

/// For JSON, errors and anything without its own policy: load nothing, never be framed.
fn locked_down_csp() -> HeaderValue {
    HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'")
}

/// The card's policy up to its `frame-ancestors`: nothing may load, no script may run, and the
/// only style is the card's own stylesheet, allowed by its hash (so an injected `style`
/// attribute or element would not apply even if escaping failed).
static CARD_CSP_PREFIX: LazyLock<String> = LazyLock::new(|| {
    let hash = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    format!("default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; frame-ancestors ")
});

/// The card's `Content-Security-Policy` for these allowed origins (already validated as bare
/// `scheme://host[:port]` origins).
pub fn card_csp(allowed_origins: &[String]) -> HeaderValue {
    let ancestors =
        if allowed_origins.is_empty() { DEFAULT_FRAME_ANCESTORS.to_owned() } else { allowed_origins.join(" ") };
    HeaderValue::from_str(&format!("{}{ancestors}", *CARD_CSP_PREFIX)).unwrap_or_else(|_| locked_down_csp())
}

/// Middleware for every channel route, rejections and 405s included.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.entry(CONTENT_SECURITY_POLICY).or_insert_with(locked_down_csp);
    response
}

/// `application/json` with the given body.
pub fn json(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// The reference's error shape, `{"status":"error","error":"<message>"}`.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    json(status, error_body(message))
}

/// A complete HTML document under the card's policy.
pub fn html(status: StatusCode, document: String, csp: HeaderValue) -> Response {
    let content_type = HeaderValue::from_static("text/html; charset=UTF-8");
    (status, [(CONTENT_TYPE, content_type), (CONTENT_SECURITY_POLICY, csp)], document).into_response()
}

/// A status with an empty body, as the reference answers a bad or unknown card id.
pub fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_policy_names_the_origins_or_the_default() {
        let csp = card_csp(&[]);
        let csp = csp.to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
        assert!(csp.ends_with("frame-ancestors https://app.socialsignin.net"), "{csp}");
        let origins = ["https://a.example".to_owned(), "https://b.example:8443".to_owned()];
        let csp = card_csp(&origins);
        assert!(csp.to_str().unwrap().ends_with("frame-ancestors https://a.example https://b.example:8443"));
    }

    #[test]
    fn the_style_hash_is_the_sha256_of_the_stylesheet() {
        let expected = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
        assert!(CARD_CSP_PREFIX.contains(&format!("'sha256-{expected}'")));
        assert_eq!(STANDARD.decode(expected).unwrap().len(), 32);
    }
}
