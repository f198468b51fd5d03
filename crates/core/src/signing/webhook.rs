//! Webhooks pushed by the social inbox (contract §7, `orlo/webhook-sample-client`).
//!
//! The platform sends `SocialSignIn-Hash: hex(HMAC-SHA256(secret, raw body))` and expects the
//! receiver to answer `200 {"verification-hash": hex(HMAC-SHA256(secret, H))}`, where H is that
//! header's text. Without a correct acknowledgement it retries, on an unpublished schedule.
//! There is no timestamp in the signature, so a replayed body verifies: callers dedupe on
//! (`SocialSignIn-HookId`, `SocialSignIn-Hash`).

use super::{decode_tag, hmac_sha256, match_secret, usable_secrets};
use crate::Secret;

/// The header that carries the body's HMAC.
pub const HASH_HEADER: &str = "SocialSignIn-Hash";

/// The header that carries the subscription's UUID.
pub const HOOK_ID_HEADER: &str = "SocialSignIn-HookId";

/// Why a webhook delivery was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// No (or an empty) `SocialSignIn-Hash` header. HTTP 400.
    #[error("missing SocialSignIn-Hash header")]
    MissingHash,
    /// The header is not 64 hex digits, or no configured secret produces it. HTTP 400, as in
    /// the sample client (`{"error":"hash mismatch"}`).
    #[error("hash mismatch")]
    HashMismatch,
    /// No usable (non-empty) secret is configured. HTTP 500.
    #[error("no webhook secret configured")]
    NoSecretConfigured,
}

impl WebhookError {
    pub fn status(&self) -> u16 {
        match self {
            Self::MissingHash | Self::HashMismatch => 400,
            Self::NoSecretConfigured => 500,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Self::MissingHash => "missing SocialSignIn-Hash header",
            Self::HashMismatch => "hash mismatch",
            Self::NoSecretConfigured => "no webhook secret configured",
        }
    }
}

/// A delivery whose hash checked out, with the acknowledgement to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedWebhook {
    secret_index: usize,
    verification_hash: String,
}

impl VerifiedWebhook {
    /// Position, in the list given to [`verify`], of the secret that matched (log its id).
    pub fn secret_index(&self) -> usize {
        self.secret_index
    }

    /// `hex(HMAC-SHA256(secret, H))`, with the secret that verified the body.
    pub fn verification_hash(&self) -> &str {
        &self.verification_hash
    }

    /// The 200 response body the platform expects: `{"verification-hash":"<hex>"}`.
    pub fn ack_body(&self) -> String {
        ack_body(&self.verification_hash)
    }
}

/// `SocialSignIn-Hash` for `body`: lowercase hex HMAC-SHA256 of the raw bytes. For tests and
/// for simulating the platform.
pub fn body_hash(secret: &Secret, body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret.expose().as_bytes(), body))
}

/// The acknowledgement hash: lowercase hex HMAC-SHA256 of the `SocialSignIn-Hash` header's
/// text (the 64 ASCII characters as received, not the 32 bytes they encode).
pub fn verification_hash(secret: &Secret, hash_header: &str) -> String {
    hex::encode(hmac_sha256(secret.expose().as_bytes(), hash_header.as_bytes()))
}

/// `{"verification-hash":"<hash>"}`.
pub fn ack_body(verification_hash: &str) -> String {
    serde_json::json!({ "verification-hash": verification_hash }).to_string()
}

/// Verifies a delivery: `body` exactly as received (before any JSON parsing), `hash_header`
/// the `SocialSignIn-Hash` value if present, `secrets` the acceptable secrets (several during
/// a rotation; empty ones are never used as keys).
///
/// The header is compared as 32 bytes, in constant time, so its hex may be in either case; the
/// acknowledgement is computed over the header text as received, with the secret that matched.
pub fn verify<'a>(
    body: &[u8],
    hash_header: Option<&str>,
    secrets: impl IntoIterator<Item = &'a Secret>,
) -> Result<VerifiedWebhook, WebhookError> {
    let candidates = usable_secrets(secrets);
    if candidates.is_empty() {
        return Err(WebhookError::NoSecretConfigured);
    }
    let header = hash_header.filter(|h| !h.is_empty()).ok_or(WebhookError::MissingHash)?;
    let presented = decode_tag(header.as_bytes()).ok_or(WebhookError::HashMismatch)?;
    let (secret_index, secret) = match_secret(&candidates, body, &presented).ok_or(WebhookError::HashMismatch)?;
    Ok(VerifiedWebhook { secret_index, verification_hash: verification_hash(secret, header) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BODY: &[u8] = br#"{"test":"data"}"#;
    const HASH: &str = "e123f721ae689ad2a06b5eed0838238f27e5c71d2159c258e73c651c98f17bdf";
    const ACK: &str = "70d57128a1047c499ce30b3d518341aa4fc9e9200e30d9bb9152f99955ba081d";

    fn testsecret() -> Secret {
        Secret::new("testsecret")
    }

    #[test]
    fn contract_vector() {
        assert_eq!(BODY.len(), 15);
        assert_eq!(body_hash(&testsecret(), BODY), HASH);
        assert_eq!(verification_hash(&testsecret(), HASH), ACK);
        let verified = verify(BODY, Some(HASH), [&testsecret()]).unwrap();
        assert_eq!(verified.secret_index(), 0);
        assert_eq!(verified.verification_hash(), ACK);
        assert_eq!(verified.ack_body(), format!(r#"{{"verification-hash":"{ACK}"}}"#));
    }

    #[test]
    fn uppercase_header_verifies_and_is_acknowledged_as_sent() {
        let upper = HASH.to_ascii_uppercase();
        let verified = verify(BODY, Some(&upper), [&testsecret()]).unwrap();
        assert_eq!(verified.verification_hash(), verification_hash(&testsecret(), &upper));
    }

    #[test]
    fn refusals() {
        let s = testsecret();
        assert_eq!(verify(BODY, None, [&s]).unwrap_err(), WebhookError::MissingHash);
        assert_eq!(verify(BODY, Some(""), [&s]).unwrap_err(), WebhookError::MissingHash);
        for bad in [&HASH[..63], "zz", &format!("{HASH}0"), &HASH.replacen('e', "0", 1)] {
            assert_eq!(verify(BODY, Some(bad), [&s]).unwrap_err(), WebhookError::HashMismatch, "{bad}");
        }
        // The raw body counts, byte for byte: re-serialised JSON does not verify.
        assert_eq!(verify(br#"{"test": "data"}"#, Some(HASH), [&s]).unwrap_err(), WebhookError::HashMismatch);
        assert_eq!(verify(b"{\"test\":\"data\"}\n", Some(HASH), [&s]).unwrap_err(), WebhookError::HashMismatch);
        assert_eq!(verify(BODY, Some(HASH), [&Secret::new("other")]).unwrap_err(), WebhookError::HashMismatch);
        let none: [&Secret; 0] = [];
        assert_eq!(verify(BODY, Some(HASH), none).unwrap_err(), WebhookError::NoSecretConfigured);
        assert_eq!(verify(BODY, Some(HASH), [&Secret::new("")]).unwrap_err(), WebhookError::NoSecretConfigured);
    }

    #[test]
    fn rotation_acknowledges_with_the_matching_secret() {
        let old = Secret::new("old");
        let new = testsecret();
        let verified = verify(BODY, Some(HASH), [&old, &new]).unwrap();
        assert_eq!(verified.secret_index(), 1);
        assert_eq!(verified.verification_hash(), ACK);
        let by_old = body_hash(&old, BODY);
        let verified = verify(BODY, Some(&by_old), [&old, &new]).unwrap();
        assert_eq!(verified.secret_index(), 0);
        assert_eq!(verified.verification_hash(), verification_hash(&old, &by_old));
    }

    #[test]
    fn error_statuses() {
        assert_eq!(WebhookError::MissingHash.status(), 400);
        assert_eq!(WebhookError::HashMismatch.status(), 400);
        assert_eq!(WebhookError::HashMismatch.message(), "hash mismatch");
        assert_eq!(WebhookError::NoSecretConfigured.status(), 500);
    }

    proptest! {
        #[test]
        fn any_body_round_trips_and_any_byte_change_fails(
            body in prop::collection::vec(any::<u8>(), 1..256),
            position in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let s = testsecret();
            let hash = body_hash(&s, &body);
            prop_assert!(verify(&body, Some(&hash), [&s]).is_ok());
            let mut changed = body.clone();
            changed[position.index(body.len())] ^= flip;
            let refused = verify(&changed, Some(&hash), [&s]).unwrap_err();
            prop_assert_eq!(refused, WebhookError::HashMismatch);
        }

        #[test]
        fn verify_never_panics(
            body in prop::collection::vec(any::<u8>(), 0..64),
            header in any::<Option<String>>(),
        ) {
            let _ = verify(&body, header.as_deref(), [&testsecret()]);
        }
    }
}
