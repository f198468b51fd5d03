//! Request signing for the social-inbox "Custom CRM" protocol (Orlo, formerly SocialSignIn), as
//! specified in `shared/contracts/social-inbox.md`.
//!
//! * [`php_query`]: PHP 8.2 `parse_str` / `http_build_query`, because the platform's signature
//!   is defined in terms of what PHP makes of the query string, quirks included.
//! * [`social_inbox`]: verification (and, for tests and `crmhub sign`, creation) of the signed
//!   `/search` and `/iframe` requests.
//! * [`webhook`]: the `SocialSignIn-Hash` over webhook bodies and the acknowledgement hash.
//!
//! Everything here is a pure function: no I/O and no clock reads (`now` is always a parameter).

pub mod php_query;
pub mod social_inbox;
pub mod webhook;

pub use php_query::{PhpArray, PhpKey, PhpQuery, PhpValue};
pub use social_inbox::{MessageMetadata, Policy, VerifiedRequest, VerifyError};
pub use webhook::{VerifiedWebhook, WebhookError};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Length in bytes of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// HMAC-SHA256 with the secret's raw UTF-8 bytes as the key, as PHP's
/// `hash_hmac('sha256', $msg, $secret)` does.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; TAG_LEN] {
    // HMAC is defined for keys of every length (long keys are hashed, short ones padded), so
    // `new_from_slice` cannot fail; the `expect` documents that rather than guarding input.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Decodes exactly 64 hex digits, upper or lower case, into a tag. Anything else is `None`.
/// The reference compares lowercase hex text with PHP's loose `!=`; comparing the decoded bytes
/// instead is both case-insensitive and immune to PHP's numeric-string ("0e…") equality.
fn decode_tag(text: &[u8]) -> Option<[u8; TAG_LEN]> {
    if text.len() != 2 * TAG_LEN {
        return None;
    }
    let mut tag = [0u8; TAG_LEN];
    hex::decode_to_slice(text, &mut tag).ok()?;
    Some(tag)
}

/// The secrets that may be used, each with its position in the caller's list (so that the
/// caller can log which secret id matched). Empty secrets are left out: a blank key would let
/// anyone sign, so it is treated as "not configured" rather than as a key.
fn usable_secrets<'a>(secrets: impl IntoIterator<Item = &'a crate::Secret>) -> Vec<(usize, &'a crate::Secret)> {
    secrets.into_iter().enumerate().filter(|(_, secret)| !secret.is_empty()).collect()
}

/// Which candidate (with its index in the caller's list), if any, produced `presented` for
/// `msg`.
///
/// Every candidate is computed and compared, with a constant-time comparison, whether or not an
/// earlier one matched, so the response time depends neither on how many leading bytes of a
/// forged tag are right nor on which secret matched.
fn match_secret<'a>(
    candidates: &[(usize, &'a crate::Secret)],
    msg: &[u8],
    presented: &[u8; TAG_LEN],
) -> Option<(usize, &'a crate::Secret)> {
    let mut matched = None;
    for &(index, secret) in candidates {
        let expected = hmac_sha256(secret.expose().as_bytes(), msg);
        let equal: bool = expected.ct_eq(presented).into();
        if equal && matched.is_none() {
            matched = Some((index, secret));
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;

    #[test]
    fn decode_tag_accepts_both_cases_and_nothing_else() {
        let lower = "7c9a0a55dc2d1542ec736b8021f048da114fcba11ca1fb0219c122dfd789e48c";
        let upper = lower.to_ascii_uppercase();
        assert_eq!(decode_tag(lower.as_bytes()), decode_tag(upper.as_bytes()));
        assert!(decode_tag(lower.as_bytes()).is_some());
        assert_eq!(decode_tag(&lower.as_bytes()[..62]), None);
        assert_eq!(decode_tag(format!("{lower}00").as_bytes()), None);
        assert_eq!(decode_tag(lower.replace('c', "g").as_bytes()), None);
        assert_eq!(decode_tag(b""), None);
    }

    #[test]
    fn match_secret_reports_the_first_matching_index_and_skips_empty_secrets() {
        let old = Secret::new("old");
        let new = Secret::new("new");
        let empty = Secret::new("");
        let candidates = usable_secrets([&empty, &old, &new, &new]);
        assert_eq!(candidates.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 2, 3]);
        let index = |tag: [u8; TAG_LEN]| match_secret(&candidates, b"msg", &tag).map(|(i, _)| i);
        assert_eq!(index(hmac_sha256(b"new", b"msg")), Some(2));
        assert_eq!(index(hmac_sha256(b"old", b"msg")), Some(1));
        assert_eq!(index(hmac_sha256(b"other", b"msg")), None);
        assert!(usable_secrets([&empty]).is_empty());
        assert!(usable_secrets([]).is_empty());
    }

    #[test]
    fn hmac_matches_the_contract_vectors() {
        assert_eq!(
            hex::encode(hmac_sha256(b"changeme!", b"q=red&expires=1500472622")),
            "7c9a0a55dc2d1542ec736b8021f048da114fcba11ca1fb0219c122dfd789e48c"
        );
        assert_eq!(
            hex::encode(hmac_sha256(b"testsecret", br#"{"test":"data"}"#)),
            "e123f721ae689ad2a06b5eed0838238f27e5c71d2159c258e73c651c98f17bdf"
        );
    }
}
