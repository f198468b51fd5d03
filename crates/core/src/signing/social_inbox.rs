//! Signed `/search` and `/iframe` requests from the social inbox (contract §2–§6, §8).
//!
//! The platform sends `GET …?q=red&expires=1500472622&sig=<hex>`, where
//! `sig = hex(HMAC-SHA256(secret, C))` and C is `http_build_query()` of PHP's `parse_str()` of
//! the query, minus `sig` and minus the eight unsigned `message_*` metadata names. See
//! [`verify`] for the exact order of checks and for where crmhub is stricter than the reference.

use serde::Deserialize;

use super::php_query::{PhpQuery, PhpValue, urlencode};
use super::{TAG_LEN, decode_tag, hmac_sha256, match_secret, usable_secrets};
use crate::Secret;

/// The signature parameter; never part of C.
pub const SIG_PARAM: &str = "sig";

/// The expiry parameter (unix seconds); part of C like any other signed parameter.
pub const EXPIRES_PARAM: &str = "expires";

/// The unsigned metadata parameters that the platform appends to iframe URLs after signing
/// (contract §6). Exactly these names are removed before C is computed; any other
/// `message_…` name is signed like an unknown parameter.
pub const MESSAGE_PARAMS: [&str; 8] = [
    "message_social_network_type",
    "message_social_network_id",
    "message_author_social_network_id",
    "message_sentiment",
    "message_language_code",
    "message_socialsignin_id",
    "message_socialsignin_url",
    "message_author_socialsignin_id",
];

/// How far crmhub trusts the request's own `expires`.
///
/// The reference accepts any future `expires` (a leaked URL then works forever) and no past one.
/// crmhub accepts `now - skew_secs <= expires <= now + max_ttl_secs`. The platform's TTL is not
/// published, hence the generous default maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Tolerated clock difference for requests that have just expired.
    pub skew_secs: u32,
    /// The furthest in the future an `expires` may be.
    pub max_ttl_secs: u32,
}

impl Policy {
    pub const DEFAULT_SKEW_SECS: u32 = 30;
    pub const DEFAULT_MAX_TTL_SECS: u32 = 3600;
}

impl Default for Policy {
    fn default() -> Self {
        Self { skew_secs: Self::DEFAULT_SKEW_SECS, max_ttl_secs: Self::DEFAULT_MAX_TTL_SECS }
    }
}

/// Why a request was refused. [`VerifyError::status`] and [`VerifyError::message`] give the
/// reference's response (`{"status":"error","error":…}`, see [`VerifyError::json_body`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// `sig` or `expires` missing, repeated, an array, or malformed. HTTP 400.
    #[error("missing or invalid sig or expires params")]
    MissingOrInvalidParams,
    /// No configured secret produces the presented `sig`. HTTP 403.
    #[error("Signature mismatch")]
    SignatureMismatch,
    /// `expires` is before `now - skew`. HTTP 403.
    #[error("request expired")]
    Expired,
    /// `expires` is after `now + max_ttl` (crmhub only; the reference has no upper bound).
    /// HTTP 403.
    #[error("request expires too far in the future")]
    ExpiresTooFarInFuture,
    /// No usable (non-empty) secret is configured; the reference answers every request with
    /// 500 in that case. HTTP 500.
    #[error("no signing secret configured")]
    NoSecretConfigured,
}

impl VerifyError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Self::MissingOrInvalidParams => 400,
            Self::SignatureMismatch | Self::Expired | Self::ExpiresTooFarInFuture => 403,
            Self::NoSecretConfigured => 500,
        }
    }

    /// The text of the `error` field, exactly as the reference words it where it has one.
    pub fn message(&self) -> &'static str {
        match self {
            Self::MissingOrInvalidParams => "missing or invalid sig or expires params",
            Self::SignatureMismatch => "Signature mismatch",
            Self::Expired => "request expired",
            Self::ExpiresTooFarInFuture => "request expires too far in the future",
            Self::NoSecretConfigured => "no signing secret configured",
        }
    }

    /// The JSON response body: `{"status":"error","error":"<message>"}`.
    pub fn json_body(&self) -> String {
        error_body(self.message())
    }
}

/// The reference's JSON error shape, `{"status":"error","error":"<message>"}`, with the message
/// JSON-escaped. Also for the route handlers' own errors (`q empty or not specified`).
pub fn error_body(message: &str) -> String {
    // Written by hand so that the key order is the reference's; `serde_json` only escapes.
    let escaped = serde_json::Value::String(message.to_owned()).to_string();
    format!(r#"{{"status":"error","error":{escaped}}}"#)
}

/// The unsigned `message_*` values of a verified request. **Untrusted**: anyone who holds a
/// signed URL can change them. Use them for display or prefill only, HTML-escape them, never
/// authorise anything with them. Values that are arrays are left out; bytes that are not
/// UTF-8 are replaced by U+FFFD (they are only ever shown).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageMetadata {
    pub social_network_type: Option<String>,
    pub social_network_id: Option<String>,
    pub author_social_network_id: Option<String>,
    pub sentiment: Option<String>,
    pub language_code: Option<String>,
    pub socialsignin_id: Option<String>,
    pub socialsignin_url: Option<String>,
    pub author_socialsignin_id: Option<String>,
}

impl MessageMetadata {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `message_socialsignin_url` if, and only if, it is an absolute `https:` URL with a host:
    /// the only form that may be rendered as a link (no `javascript:`, `data:` or `http:`).
    pub fn https_socialsignin_url(&self) -> Option<url::Url> {
        let url = url::Url::parse(self.socialsignin_url.as_deref()?).ok()?;
        (url.scheme() == "https" && url.host().is_some()).then_some(url)
    }

    fn field_mut(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "message_social_network_type" => &mut self.social_network_type,
            "message_social_network_id" => &mut self.social_network_id,
            "message_author_social_network_id" => &mut self.author_social_network_id,
            "message_sentiment" => &mut self.sentiment,
            "message_language_code" => &mut self.language_code,
            "message_socialsignin_id" => &mut self.socialsignin_id,
            "message_socialsignin_url" => &mut self.socialsignin_url,
            "message_author_socialsignin_id" => &mut self.author_socialsignin_id,
            _ => return None,
        })
    }
}

/// A request whose signature and expiry checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRequest {
    /// The signed parameters other than `expires`, decoded, in the order of the URL.
    params: PhpQuery,
    expires: i64,
    secret_index: usize,
    metadata: MessageMetadata,
}

impl VerifiedRequest {
    /// A signed parameter (e.g. `q`, `id`, or any unknown one), possibly an array (`q[]=x`).
    pub fn get(&self, name: &str) -> Option<&PhpValue> {
        self.params.get(name)
    }

    /// A signed parameter as text: `None` when it is absent, an array, or not UTF-8, so that a
    /// handler can refuse all three the same way.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(PhpValue::as_str)
    }

    /// All signed parameters except `expires`, in the order of the URL.
    pub fn params(&self) -> &PhpQuery {
        &self.params
    }

    /// The request's `expires` (unix seconds).
    pub fn expires(&self) -> i64 {
        self.expires
    }

    /// Position, in the list given to [`verify`], of the secret that matched: for logging the
    /// secret's id (never the secret) and for noticing when the old one of a rotation is
    /// still in use.
    pub fn secret_index(&self) -> usize {
        self.secret_index
    }

    /// The unsigned, untrusted `message_*` values.
    pub fn metadata(&self) -> &MessageMetadata {
        &self.metadata
    }
}

/// Verifies a signed social-inbox request.
///
/// `query` is the raw query string (after `?`, still percent-encoded as received). `secrets`
/// are the acceptable secrets: normally one, the old and the new one during a rotation grace
/// period. Empty secrets are never used as keys. `now` is the current unix time in seconds.
///
/// Checks, in this order (the reference's order, contract §4):
///
/// 0. At least one non-empty secret, else [`VerifyError::NoSecretConfigured`] (500), as the
///    reference answers every request with 500 when it has no secret.
/// 1. `sig` and `expires` each present exactly once and scalar; `expires` matches
///    `^[1-9][0-9]*$` and fits in an `i64`; `sig` is 64 hex digits in either case. Otherwise
///    [`VerifyError::MissingOrInvalidParams`] (400). Stricter than the reference, which takes
///    the last of repeated parameters and accepts leading zeros in `expires`: a genuine signer
///    produces neither, and refusing them leaves one reading of every accepted URL.
/// 2. `sig` and the eight [`MESSAGE_PARAMS`] are removed, the rest keeps its order, and C is
///    rebuilt the way PHP does ([`PhpQuery`]). The presented `sig` is decoded and compared as
///    32 bytes, in constant time, with the HMAC under each secret; none equal →
///    [`VerifyError::SignatureMismatch`] (403). The reference compares hex text with PHP's
///    loose `!=`, which refuses uppercase hex and is not constant-time.
/// 3. Only then the expiry, so a stale URL with a bad signature reports the signature:
///    `expires < now - skew` → [`VerifyError::Expired`], `expires > now + max_ttl` →
///    [`VerifyError::ExpiresTooFarInFuture`] (both 403). `expires == now` is valid.
pub fn verify<'a>(
    query: &str,
    secrets: impl IntoIterator<Item = &'a Secret>,
    now: i64,
    policy: &Policy,
) -> Result<VerifiedRequest, VerifyError> {
    let candidates = usable_secrets(secrets);
    if candidates.is_empty() {
        return Err(VerifyError::NoSecretConfigured);
    }

    let mut params = PhpQuery::parse(query);
    let (presented, expires) = required_params(&params).ok_or(VerifyError::MissingOrInvalidParams)?;

    params.remove(SIG_PARAM);
    let metadata = take_metadata(&mut params);
    let signed = params.build();
    let (secret_index, _) =
        match_secret(&candidates, signed.as_bytes(), &presented).ok_or(VerifyError::SignatureMismatch)?;

    // Widened so that neither bound can overflow, whatever `now` and the policy are.
    let (expires_wide, now_wide) = (i128::from(expires), i128::from(now));
    if expires_wide < now_wide - i128::from(policy.skew_secs) {
        return Err(VerifyError::Expired);
    }
    if expires_wide > now_wide + i128::from(policy.max_ttl_secs) {
        return Err(VerifyError::ExpiresTooFarInFuture);
    }

    params.remove(EXPIRES_PARAM);
    Ok(VerifiedRequest { params, expires, secret_index, metadata })
}

/// Step 1 of [`verify`]: the decoded `sig` and `expires`, if both are acceptable.
fn required_params(params: &PhpQuery) -> Option<([u8; TAG_LEN], i64)> {
    let scalar_once = |name: &str| match params.get(name) {
        Some(PhpValue::Str(bytes)) if params.occurrences(name) == 1 => Some(bytes.as_slice()),
        _ => None,
    };
    let sig = decode_tag(scalar_once(SIG_PARAM)?)?;
    let expires = scalar_once(EXPIRES_PARAM)?;
    let canonical = matches!(expires.split_first(), Some((first, rest))
        if (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit));
    if !canonical {
        return None;
    }
    // Digits only, so UTF-8; `parse` then only fails on overflow.
    let expires = std::str::from_utf8(expires).ok()?.parse::<i64>().ok()?;
    Some((sig, expires))
}

/// Removes the §6 names from `params`, keeping their values for display.
fn take_metadata(params: &mut PhpQuery) -> MessageMetadata {
    let mut metadata = MessageMetadata::default();
    for name in MESSAGE_PARAMS {
        let value = params.remove(name);
        if let (Some(PhpValue::Str(bytes)), Some(field)) = (value, metadata.field_mut(name)) {
            *field = Some(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    metadata
}

/// Signs `params` the way the platform does, returning the query string to append after `?`.
///
/// Each pair is `urlencode`d as `k=v`, in the given order (the platform's order is the request
/// parameters, then `expires`; pass `expires` yourself, e.g. `("expires", "1500472622")`),
/// then `sig=<lowercase hex>` follows. As on the platform, the [`MESSAGE_PARAMS`] are not
/// signed and go after `sig`. The signature is computed over exactly the C that [`verify`]
/// will rebuild from the result, so every input whose names PHP does not resolve to `sig`,
/// `expires` or a §6 name verifies (a property test checks this for arbitrary UTF-8, including
/// names PHP mangles such as `a.b`). The input is not checked, so this can also produce the
/// malformed requests tests need (no `expires`, a repeated `sig`, …).
///
/// ```text
/// sign(&[("q", "red"), ("expires", "1500472622")], &Secret::new("changeme!"))
///   == "q=red&expires=1500472622&sig=7c9a0a55…e48c"
/// ```
pub fn sign(params: &[(&str, &str)], secret: &Secret) -> String {
    let is_metadata = |pair: &&(&str, &str)| MESSAGE_PARAMS.contains(&pair.0);
    let signed_part = encode_pairs(params.iter().filter(|pair| !is_metadata(pair)));
    let metadata_part = encode_pairs(params.iter().filter(is_metadata));

    // C is derived from the final layout (with an empty `sig` in its place) so that PHP's
    // field limit and name resolution see exactly what the verifier will see.
    let layout = |sig: &str| {
        let mut query = signed_part.clone();
        for part in [format!("{SIG_PARAM}={sig}"), metadata_part.clone()] {
            if !part.is_empty() {
                if !query.is_empty() {
                    query.push('&');
                }
                query.push_str(&part);
            }
        }
        query
    };
    let mut canonical = PhpQuery::parse(&layout(""));
    canonical.remove(SIG_PARAM);
    take_metadata(&mut canonical);
    let tag = hmac_sha256(secret.expose().as_bytes(), canonical.build().as_bytes());
    layout(&hex::encode(tag))
}

/// `k=v&…` with PHP `urlencode` on both sides, as `http_build_query` writes scalar pairs.
fn encode_pairs<'a, 'b: 'a>(pairs: impl Iterator<Item = &'a (&'b str, &'b str)>) -> String {
    let encoded: Vec<String> =
        pairs.map(|(key, value)| format!("{}={}", urlencode(key.as_bytes()), urlencode(value.as_bytes()))).collect();
    encoded.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VECTOR_SIG: &str = "7c9a0a55dc2d1542ec736b8021f048da114fcba11ca1fb0219c122dfd789e48c";
    const VECTOR_EXPIRES: i64 = 1_500_472_622;
    const NOW: i64 = 1_700_000_000;

    fn changeme() -> Secret {
        Secret::new("changeme!")
    }

    fn secret() -> Secret {
        Secret::new("s3cret")
    }

    /// Lowercase hex HMAC of an explicit C, to build requests by hand.
    fn sig_over(secret: &Secret, c: &str) -> String {
        hex::encode(hmac_sha256(secret.expose().as_bytes(), c.as_bytes()))
    }

    fn check(query: &str) -> Result<VerifiedRequest, VerifyError> {
        verify(query, [&secret()], NOW, &Policy::default())
    }

    fn check_at(query: &str, now: i64) -> Result<VerifiedRequest, VerifyError> {
        verify(query, [&secret()], now, &Policy::default())
    }

    #[test]
    fn contract_search_vector_verifies() {
        let query = format!("q=red&expires={VECTOR_EXPIRES}&sig={VECTOR_SIG}");
        let request = verify(&query, [&changeme()], VECTOR_EXPIRES, &Policy::default()).unwrap();
        assert_eq!(request.text("q"), Some("red"));
        assert_eq!(request.expires(), VECTOR_EXPIRES);
        assert_eq!(request.secret_index(), 0);
        assert!(request.metadata().is_empty());
        // `expires` and `sig` are not among the handler's params.
        assert_eq!(request.params().build(), "q=red");
    }

    #[test]
    fn sign_reproduces_the_contract_vector() {
        let signed = sign(&[("q", "red"), ("expires", "1500472622")], &changeme());
        assert_eq!(signed, format!("q=red&expires={VECTOR_EXPIRES}&sig={VECTOR_SIG}"));
    }

    /// A signature computed by PHP 8.2.36 itself (`parse_str`, `unset` of `sig` and the §6
    /// names, `hash_hmac('sha256', http_build_query($p), 's3cret')`) over a query that uses
    /// `+`, a dotted name, `%7e`, an array, `%2B` and a `message_*` between signed params.
    #[test]
    fn php_signed_query_with_quirks_verifies() {
        let query = "q=john+s&a.b=%7e&x[]=1&message_sentiment=neg&expires=1700000000&zz=%2B\
                     &sig=aabf09eb94b474a235f5704aa00571d461f7f60eff6617f39c64e137f747246b";
        let request = check(query).unwrap();
        assert_eq!(request.params().build(), "q=john+s&a_b=%7E&x%5B0%5D=1&zz=%2B");
        assert_eq!(request.text("zz"), Some("+"));
        assert_eq!(request.metadata().sentiment.as_deref(), Some("neg"));
    }

    #[test]
    fn uppercase_sig_is_accepted() {
        let query = format!("q=red&expires={VECTOR_EXPIRES}&sig={}", VECTOR_SIG.to_ascii_uppercase());
        assert!(verify(&query, [&changeme()], VECTOR_EXPIRES, &Policy::default()).is_ok());
    }

    #[test]
    fn wrong_sig_is_a_mismatch() {
        let mut sig = VECTOR_SIG.to_owned();
        sig.replace_range(0..1, "8");
        let query = format!("q=red&expires={VECTOR_EXPIRES}&sig={sig}");
        let err = verify(&query, [&changeme()], VECTOR_EXPIRES, &Policy::default()).unwrap_err();
        assert_eq!(err, VerifyError::SignatureMismatch);
        // Right sig, other secret.
        let query = format!("q=red&expires={VECTOR_EXPIRES}&sig={VECTOR_SIG}");
        assert_eq!(check_at(&query, VECTOR_EXPIRES).unwrap_err(), VerifyError::SignatureMismatch);
        // Right sig, different (decoded) value.
        let query = format!("q=Red&expires={VECTOR_EXPIRES}&sig={VECTOR_SIG}");
        let err = verify(&query, [&changeme()], VECTOR_EXPIRES, &Policy::default()).unwrap_err();
        assert_eq!(err, VerifyError::SignatureMismatch);
    }

    #[test]
    fn reserved_characters_are_signed_in_php_urlencode_form() {
        let value = "a~b*c d+e/é";
        let query = sign(&[("q", value), ("expires", &NOW.to_string())], &secret());
        assert!(query.starts_with("q=a%7Eb%2Ac+d%2Be%2F%C3%A9&expires="), "{query}");
        assert_eq!(check(&query).unwrap().text("q"), Some(value));

        // A client that leaves `~`, `*`, `/` and UTF-8 unencoded sends the same decoded value,
        // which PHP re-encodes, so the same signature holds.
        let sig = sig_over(&secret(), &format!("q=a%7Eb%2A%2F%C3%A9&expires={NOW}"));
        for wire in ["a~b*/é", "a%7Eb%2A%2F%C3%A9", "a%7eb%2a%2f%c3%a9"] {
            let query = format!("q={wire}&expires={NOW}&sig={sig}");
            assert_eq!(check(&query).unwrap().text("q"), Some("a~b*/é"), "{wire}");
        }
    }

    #[test]
    fn space_and_plus() {
        // `+` and `%20` both mean space and both verify against a sig over `q=john+s`.
        let space_sig = sig_over(&secret(), &format!("q=john+s&expires={NOW}"));
        for wire in ["john%20s", "john+s"] {
            let request = check(&format!("q={wire}&expires={NOW}&sig={space_sig}")).unwrap();
            assert_eq!(request.text("q"), Some("john s"));
        }
        // A literal plus is `%2B` on the wire and in C; it is not a space.
        let plus_sig = sig_over(&secret(), &format!("q=john%2Bs&expires={NOW}"));
        let request = check(&format!("q=john%2Bs&expires={NOW}&sig={plus_sig}")).unwrap();
        assert_eq!(request.text("q"), Some("john+s"));
        assert_eq!(
            check(&format!("q=john+s&expires={NOW}&sig={plus_sig}")).unwrap_err(),
            VerifyError::SignatureMismatch
        );
        assert_eq!(
            check(&format!("q=john%2Bs&expires={NOW}&sig={space_sig}")).unwrap_err(),
            VerifyError::SignatureMismatch
        );
    }

    #[test]
    fn duplicate_params_sign_the_last_value_at_the_first_position() {
        let sig = sig_over(&secret(), &format!("q=jo&expires={NOW}"));
        let request = check(&format!("q=zzz&expires={NOW}&q=jo&sig={sig}")).unwrap();
        assert_eq!(request.text("q"), Some("jo"));
    }

    #[test]
    fn dotted_names_are_signed_with_underscores() {
        let sig = sig_over(&secret(), &format!("a_b=1&expires={NOW}"));
        let request = check(&format!("a.b=1&expires={NOW}&sig={sig}")).unwrap();
        assert_eq!(request.text("a_b"), Some("1"));
        assert_eq!(request.text("a.b"), None);
        // Signing `a.b` literally does not match what PHP verifies.
        let literal = sig_over(&secret(), &format!("a.b=1&expires={NOW}"));
        assert_eq!(check(&format!("a.b=1&expires={NOW}&sig={literal}")).unwrap_err(), VerifyError::SignatureMismatch);
    }

    #[test]
    fn message_params_are_unsigned_wherever_they_appear() {
        let sig = sig_over(&secret(), &format!("id=12345&expires={NOW}"));
        // Absent.
        let request = check(&format!("id=12345&expires={NOW}&sig={sig}")).unwrap();
        assert!(request.metadata().is_empty());
        // Between the signed params, after `sig`, everywhere.
        let query = format!(
            "message_social_network_type=twitter&id=12345&message_sentiment=positive\
             &expires={NOW}&message_socialsignin_url=https%3A%2F%2Fapp.example%2Fm%2F1\
             &sig={sig}&message_language_code=en&message_social_network_id=1\
             &message_author_social_network_id=2&message_socialsignin_id=3\
             &message_author_socialsignin_id=4"
        );
        let request = check(&query).unwrap();
        assert_eq!(request.text("id"), Some("12345"));
        assert_eq!(request.params().build(), "id=12345");
        let m = request.metadata();
        assert_eq!(m.social_network_type.as_deref(), Some("twitter"));
        assert_eq!(m.sentiment.as_deref(), Some("positive"));
        assert_eq!(m.language_code.as_deref(), Some("en"));
        assert_eq!(m.social_network_id.as_deref(), Some("1"));
        assert_eq!(m.author_social_network_id.as_deref(), Some("2"));
        assert_eq!(m.socialsignin_id.as_deref(), Some("3"));
        assert_eq!(m.author_socialsignin_id.as_deref(), Some("4"));
        assert_eq!(m.socialsignin_url.as_deref(), Some("https://app.example/m/1"));
        assert_eq!(m.https_socialsignin_url().map(String::from).as_deref(), Some("https://app.example/m/1"));
        // Only the eight names: another `message_…` is an ordinary signed param.
        assert_eq!(
            check(&format!("id=12345&message_other=x&expires={NOW}&sig={sig}")).unwrap_err(),
            VerifyError::SignatureMismatch
        );
    }

    #[test]
    fn only_https_message_urls_are_linkable() {
        let with_url = |url: &str| MessageMetadata { socialsignin_url: Some(url.to_owned()), ..Default::default() };
        assert!(with_url("https://app.example/x").https_socialsignin_url().is_some());
        for bad in ["http://app.example/x", "javascript:alert(1)", "data:text/html,x", "/relative", "https:"] {
            assert_eq!(with_url(bad).https_socialsignin_url(), None, "{bad}");
        }
        assert_eq!(MessageMetadata::default().https_socialsignin_url(), None);
    }

    #[test]
    fn unknown_params_are_signed() {
        let without = sig_over(&secret(), &format!("q=red&expires={NOW}"));
        assert_eq!(
            check(&format!("q=red&extra=1&expires={NOW}&sig={without}")).unwrap_err(),
            VerifyError::SignatureMismatch
        );
        let with = sig_over(&secret(), &format!("q=red&extra=1&expires={NOW}"));
        let request = check(&format!("q=red&extra=1&expires={NOW}&sig={with}")).unwrap();
        assert_eq!(request.text("extra"), Some("1"));
    }

    #[test]
    fn array_values_verify_and_can_be_refused_by_the_handler() {
        let sig = sig_over(&secret(), &format!("q%5B0%5D=x&expires={NOW}"));
        let request = check(&format!("q[]=x&expires={NOW}&sig={sig}")).unwrap();
        assert!(request.get("q").is_some_and(PhpValue::is_array));
        assert_eq!(request.text("q"), None);
    }

    #[test]
    fn expiry_bounds() {
        let policy = Policy::default();
        let at = |expires: i64| {
            let query = sign(&[("q", "red"), ("expires", &expires.to_string())], &secret());
            verify(&query, [&secret()], NOW, &policy)
        };
        assert!(at(NOW).is_ok(), "expires == now");
        assert!(at(NOW - 30).is_ok(), "now - skew");
        assert_eq!(at(NOW - 31).unwrap_err(), VerifyError::Expired);
        assert_eq!(at(1).unwrap_err(), VerifyError::Expired);
        assert!(at(NOW + 3600).is_ok(), "now + max_ttl");
        assert_eq!(at(NOW + 3601).unwrap_err(), VerifyError::ExpiresTooFarInFuture);
        assert_eq!(at(99_999_999_999).unwrap_err(), VerifyError::ExpiresTooFarInFuture);
        assert_eq!(at(i64::MAX).unwrap_err(), VerifyError::ExpiresTooFarInFuture);

        let strict = Policy { skew_secs: 0, max_ttl_secs: 0 };
        let query = sign(&[("expires", &NOW.to_string())], &secret());
        assert!(verify(&query, [&secret()], NOW, &strict).is_ok());
        assert_eq!(verify(&query, [&secret()], NOW + 1, &strict).unwrap_err(), VerifyError::Expired);
        assert_eq!(verify(&query, [&secret()], NOW - 1, &strict).unwrap_err(), VerifyError::ExpiresTooFarInFuture);
        // Extreme clocks do not overflow.
        assert_eq!(verify(&query, [&secret()], i64::MAX, &policy).unwrap_err(), VerifyError::Expired);
        assert_eq!(verify(&query, [&secret()], i64::MIN, &policy).unwrap_err(), VerifyError::ExpiresTooFarInFuture);
    }

    #[test]
    fn signature_is_checked_before_expiry() {
        let expired = NOW - 3600;
        let bad_sig = "0".repeat(64);
        assert_eq!(
            check(&format!("q=red&expires={expired}&sig={bad_sig}")).unwrap_err(),
            VerifyError::SignatureMismatch
        );
        let too_far = NOW + 100_000;
        assert_eq!(
            check(&format!("q=red&expires={too_far}&sig={bad_sig}")).unwrap_err(),
            VerifyError::SignatureMismatch
        );
    }

    #[test]
    fn malformed_sig_or_expires_is_a_400() {
        let good_sig = sig_over(&secret(), &format!("q=red&expires={NOW}"));
        let cases = [
            format!("q=red&expires={NOW}"),
            format!("q=red&sig={good_sig}"),
            "q=red".to_owned(),
            String::new(),
            format!("q=red&expires={NOW}&sig="),
            format!("q=red&expires={NOW}&sig"),
            format!("q=red&expires={NOW}&sig={}", &good_sig[..63]),
            format!("q=red&expires={NOW}&sig={good_sig}0"),
            format!("q=red&expires={NOW}&sig={}", good_sig.replacen(|c: char| c.is_ascii_digit(), "g", 1)),
            format!("q=red&expires={NOW}&sig=0x{}", &good_sig[2..]),
            format!("q=red&expires={NOW}&sig={good_sig}&sig={good_sig}"),
            format!("q=red&expires={NOW}&sig[]={good_sig}"),
            format!("q=red&expires={NOW}&sig[a]={good_sig}"),
            format!("q=red&expires={NOW}&expires={NOW}&sig={good_sig}"),
            format!("q=red&expires={NOW}&+expires={NOW}&sig={good_sig}"),
            format!("q=red&expires[]={NOW}&sig={good_sig}"),
            format!("q=red&expires=&sig={good_sig}"),
            format!("q=red&expires&sig={good_sig}"),
            format!("q=red&expires=0{NOW}&sig={good_sig}"),
            format!("q=red&expires=0&sig={good_sig}"),
            format!("q=red&expires=-{NOW}&sig={good_sig}"),
            format!("q=red&expires=%2B{NOW}&sig={good_sig}"),
            format!("q=red&expires={NOW}.0&sig={good_sig}"),
            format!("q=red&expires={NOW}+&sig={good_sig}"),
            format!("q=red&expires=1e9&sig={good_sig}"),
            format!("q=red&expires=abc&sig={good_sig}"),
            format!("q=red&expires=9223372036854775808&sig={good_sig}"),
            format!("q=red&expires=99999999999999999999999&sig={good_sig}"),
        ];
        for query in cases {
            assert_eq!(check(&query).unwrap_err(), VerifyError::MissingOrInvalidParams, "{query}");
        }
        // i64::MAX itself is well-formed; it fails later, on the signature.
        let query = format!("q=red&expires={}&sig={good_sig}", i64::MAX);
        assert_eq!(check(&query).unwrap_err(), VerifyError::SignatureMismatch);
        // `%31` decodes to a digit: the decoded value is what counts, as in PHP.
        let query = format!("q=red&expires=%3{NOW}&sig={good_sig}");
        assert_eq!(check(&query).unwrap().expires(), NOW);
    }

    #[test]
    fn rotation_accepts_old_and_new_and_reports_which() {
        let old = Secret::new("old-secret");
        let new = Secret::new("new-secret");
        let other = Secret::new("someone-else");
        let params = [("q", "red"), ("expires", "1700000000")];
        let by_old = sign(&params, &old);
        let by_new = sign(&params, &new);
        let by_other = sign(&params, &other);
        let both = [&old, &new];
        assert_eq!(verify(&by_old, both, NOW, &Policy::default()).unwrap().secret_index(), 0);
        assert_eq!(verify(&by_new, both, NOW, &Policy::default()).unwrap().secret_index(), 1);
        assert_eq!(verify(&by_other, both, NOW, &Policy::default()).unwrap_err(), VerifyError::SignatureMismatch);
        // A `Vec<Secret>` works too.
        let owned = vec![old.clone(), new.clone()];
        assert_eq!(verify(&by_new, &owned, NOW, &Policy::default()).unwrap().secret_index(), 1);
    }

    #[test]
    fn without_a_usable_secret_every_request_is_a_500() {
        let query = sign(&[("q", "red"), ("expires", "1700000000")], &Secret::new(""));
        let none: [&Secret; 0] = [];
        assert_eq!(verify(&query, none, NOW, &Policy::default()).unwrap_err(), VerifyError::NoSecretConfigured);
        // An empty secret is not a key, even though the query was "signed" with it.
        assert_eq!(
            verify(&query, [&Secret::new("")], NOW, &Policy::default()).unwrap_err(),
            VerifyError::NoSecretConfigured
        );
        assert_eq!(
            verify("garbage", [&Secret::new("")], NOW, &Policy::default()).unwrap_err(),
            VerifyError::NoSecretConfigured
        );
    }

    #[test]
    fn errors_carry_the_reference_status_and_body() {
        let cases = [
            (VerifyError::MissingOrInvalidParams, 400, "missing or invalid sig or expires params"),
            (VerifyError::SignatureMismatch, 403, "Signature mismatch"),
            (VerifyError::Expired, 403, "request expired"),
            (VerifyError::ExpiresTooFarInFuture, 403, "request expires too far in the future"),
            (VerifyError::NoSecretConfigured, 500, "no signing secret configured"),
        ];
        for (err, status, message) in cases {
            assert_eq!(err.status(), status);
            assert_eq!(err.message(), message);
            assert_eq!(err.to_string(), message);
            assert_eq!(err.json_body(), format!(r#"{{"status":"error","error":"{message}"}}"#));
        }
        assert_eq!(VerifyError::SignatureMismatch.json_body(), r#"{"status":"error","error":"Signature mismatch"}"#);
        let body: serde_json::Value = serde_json::from_str(&error_body("a \"quoted\" \\ </script>")).unwrap();
        assert_eq!(body["status"], "error");
        assert_eq!(body["error"], "a \"quoted\" \\ </script>");
    }

    #[test]
    fn policy_defaults_and_config() {
        assert_eq!(Policy::default(), Policy { skew_secs: 30, max_ttl_secs: 3600 });
        let partial: Policy = serde_json::from_str(r#"{"max_ttl_secs": 900}"#).unwrap();
        assert_eq!(partial, Policy { skew_secs: 30, max_ttl_secs: 900 });
        assert!(serde_json::from_str::<Policy>(r#"{"max_ttl": 900}"#).is_err());
    }

    #[test]
    fn sign_puts_message_params_after_sig_and_leaves_them_unsigned() {
        let signed = sign(&[("id", "1"), ("message_sentiment", "neg ative"), ("expires", "1700000000")], &secret());
        let sig = sig_over(&secret(), "id=1&expires=1700000000");
        assert_eq!(signed, format!("id=1&expires=1700000000&sig={sig}&message_sentiment=neg+ative"));
        assert_eq!(check(&signed).unwrap().metadata().sentiment.as_deref(), Some("neg ative"));
        assert_eq!(sign(&[], &secret()), format!("sig={}", sig_over(&secret(), "")));
    }

    /// Names that are, or that PHP resolves to, `sig`, `expires` or a §6 name.
    fn is_reserved(key: &str) -> bool {
        let parsed = PhpQuery::parse(&format!("{}=x", urlencode(key.as_bytes())));
        [SIG_PARAM, EXPIRES_PARAM].iter().chain(MESSAGE_PARAMS.iter()).any(|name| parsed.occurrences(name) > 0)
    }

    fn with_expires<'a>(params: &'a [(String, String)], expires: &'a str) -> Vec<(&'a str, &'a str)> {
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain([(EXPIRES_PARAM, expires)]).collect()
    }

    /// C and the presented tag of a query, for comparing what two queries actually sign.
    fn signed_content(query: &str) -> (String, Option<[u8; TAG_LEN]>) {
        let mut parsed = PhpQuery::parse(query);
        let tag = required_params(&parsed).map(|(tag, _)| tag);
        parsed.remove(SIG_PARAM);
        take_metadata(&mut parsed);
        (parsed.build(), tag)
    }

    proptest! {
        #[test]
        fn sign_then_verify_round_trips_for_any_utf8(
            params in prop::collection::vec((any::<String>(), any::<String>()), 0..6)
                .prop_filter("reserved names", |ps| ps.iter().all(|(k, _)| !is_reserved(k))),
        ) {
            let expires = NOW.to_string();
            let query = sign(&with_expires(&params, &expires), &secret());
            let request = check(&query);
            prop_assert!(request.is_ok(), "{query}: {request:?}");
            let request = request.unwrap();
            // The handler sees exactly what PHP would have parsed, minus sig and expires.
            let mut expected = PhpQuery::parse(&query);
            expected.remove(SIG_PARAM);
            expected.remove(EXPIRES_PARAM);
            prop_assert_eq!(request.params(), &expected);
        }

        #[test]
        fn sign_then_verify_preserves_plain_params(
            params in prop::collection::vec(("[a-zA-Z][a-zA-Z0-9_-]{0,7}", any::<String>()), 0..6)
                .prop_filter("reserved names", |ps| ps.iter().all(|(k, _)| !is_reserved(k))),
        ) {
            let expires = NOW.to_string();
            let query = sign(&with_expires(&params, &expires), &secret());
            let request = check(&query).unwrap();
            // Last value wins, first position kept.
            let mut expected: Vec<(&str, &str)> = Vec::new();
            for (k, v) in &params {
                match expected.iter_mut().find(|(ek, _)| ek == k) {
                    Some(slot) => slot.1 = v,
                    None => expected.push((k, v)),
                }
            }
            let actual: Vec<(String, Option<&str>)> =
                request.params().iter().map(|(k, v)| (k.to_string(), v.as_str())).collect();
            let expected: Vec<(String, Option<&str>)> =
                expected.into_iter().map(|(k, v)| (k.to_owned(), Some(v))).collect();
            prop_assert_eq!(actual, expected);
            prop_assert_eq!(request.expires(), NOW);
        }

        #[test]
        fn any_single_byte_change_fails_unless_it_changes_nothing_signed(
            // Distinct names: a value that a later duplicate overwrites is not signed, so
            // changing it is (rightly) accepted, which the second assertion would not expect.
            params in prop::collection::btree_map("[a-z]{1,6}", any::<String>(), 0..4)
                .prop_map(|ps| ps.into_iter().collect::<Vec<_>>())
                .prop_filter("reserved names", |ps| ps.iter().all(|(k, _)| !is_reserved(k))),
            position in any::<prop::sample::Index>(),
            replacement in 0x20u8..0x7f,
        ) {
            let expires = NOW.to_string();
            let query = sign(&with_expires(&params, &expires), &secret());
            // Everything `sign` emits is ASCII, so replacing one byte keeps a valid `&str`.
            prop_assert!(query.is_ascii());
            let at = position.index(query.len());
            let original = query.as_bytes()[at];
            prop_assume!(original != replacement);
            let mut mutated = query.clone().into_bytes();
            mutated[at] = replacement;
            let mutated = String::from_utf8(mutated).unwrap();

            // Some changes are encodings of the same thing (`+` and a raw space, `%2b` and
            // `%2B`, `a` and `A` in the hex sig…): accepted only if C and the tag are the same,
            // i.e. nothing the signature covers changed.
            if let Ok(request) = check(&mutated) {
                prop_assert_eq!(signed_content(&mutated), signed_content(&query));
                let original = check(&query).unwrap();
                prop_assert_eq!(request.params(), original.params());
            }
            // A letter or digit replaced by one that is not the same letter in another case
            // always changes something that is signed (or breaks sig/expires).
            if original.is_ascii_alphanumeric()
                && replacement.is_ascii_alphanumeric()
                && !original.eq_ignore_ascii_case(&replacement)
            {
                prop_assert!(check(&mutated).is_err(), "{mutated} was accepted");
            }
        }

        #[test]
        fn verify_never_panics(query in any::<String>(), now in any::<i64>()) {
            let _ = verify(&query, [&secret()], now, &Policy::default());
        }
    }
}
