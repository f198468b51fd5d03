//! The channel's URLs: the endpoints to paste into the platform, and signed requests made the
//! way the platform makes them (for `crmhub sign`, the demo and tests).

use crmhub_core::signing::social_inbox::{EXPIRES_PARAM, sign};
use crmhub_core::{Secret, TenantSlug};

use super::Endpoint;

/// `{public_url}/t/{slug}/social/{search|iframe}`. A path in `public_url` (crmhub behind a
/// prefix) is kept. Slugs are URL-safe by construction, so nothing needs encoding.
pub fn endpoint_url(public_url: &url::Url, slug: &TenantSlug, endpoint: Endpoint) -> String {
    let base = public_url.as_str().trim_end_matches('/');
    format!("{base}/t/{slug}/social/{}", endpoint.name())
}

/// A request as the platform would send it: `params` in order, then `expires`, then `sig`,
/// then any `message_*` metadata (which `params` may contain; it stays unsigned).
pub fn signed_url(
    public_url: &url::Url,
    slug: &TenantSlug,
    endpoint: Endpoint,
    params: &[(&str, &str)],
    secret: &Secret,
    expires: i64,
) -> String {
    let expires = expires.to_string();
    let mut all = params.to_vec();
    all.push((EXPIRES_PARAM, &expires));
    format!("{}?{}", endpoint_url(public_url, slug, endpoint), sign(&all, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_keep_a_path_prefix() {
        let slug = TenantSlug::parse("acme").unwrap();
        let plain = url::Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(endpoint_url(&plain, &slug, Endpoint::Search), "http://127.0.0.1:8080/t/acme/social/search");
        let prefixed = url::Url::parse("https://gw.example.com/crmhub/").unwrap();
        assert_eq!(
            endpoint_url(&prefixed, &slug, Endpoint::Iframe),
            "https://gw.example.com/crmhub/t/acme/social/iframe"
        );
    }

    #[test]
    fn signed_urls_reproduce_the_contract_vector() {
        let slug = TenantSlug::parse("demo").unwrap();
        let base = url::Url::parse("http://127.0.0.1:8080").unwrap();
        let url = signed_url(&base, &slug, Endpoint::Search, &[("q", "red")], &Secret::new("changeme!"), 1_500_472_622);
        assert_eq!(
            url,
            "http://127.0.0.1:8080/t/demo/social/search?q=red&expires=1500472622\
             &sig=7c9a0a55dc2d1542ec736b8021f048da114fcba11ca1fb0219c122dfd789e48c"
        );
        let with_message = signed_url(
            &base,
            &slug,
            Endpoint::Iframe,
            &[("id", "12x5"), ("message_socialsignin_url", "https://app.example/m/1")],
            &Secret::new("changeme!"),
            1_500_472_622,
        );
        assert!(
            with_message.ends_with("&message_socialsignin_url=https%3A%2F%2Fapp.example%2Fm%2F1"),
            "{with_message}"
        );
    }
}
