//! Channel keys: the bearer credentials machine channels (a PBX posting call events, a widget's
//! backend) present to crmhub, per tenant, each with the scopes it may use. A key is
//! `crmhub_` plus 43 URL-safe characters (256 random bits); crmhub keeps only its SHA-256.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{FieldError, Secret};

pub const KEY_PREFIX: &str = "crmhub_";
/// Characters after `crmhub_` shown to tell keys apart; not enough to guess the rest.
const SHOWN: usize = 6;

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelScope {
    /// Call-centre events and the agent UI's requests (`/t/{tenant}/calls…`).
    Calls,
    /// The embeddable widget's backend requests.
    Widget,
}

impl ChannelScope {
    pub const ALL: [Self; 2] = [Self::Calls, Self::Widget];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Calls => "calls",
            Self::Widget => "widget",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw.trim()).ok_or_else(|| {
            FieldError::new("scopes", format!("unknown scope {raw:?}; scopes are {}", names(&Self::ALL).join(", ")))
        })
    }

    /// A non-empty list of known scopes, without repeats.
    pub fn parse_list<S: AsRef<str>>(raw: &[S]) -> Result<Vec<Self>, FieldError> {
        let mut scopes = raw.iter().map(|s| Self::parse(s.as_ref())).collect::<Result<Vec<_>, _>>()?;
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            return Err(FieldError::new("scopes", "name at least one scope (calls, widget)"));
        }
        Ok(scopes)
    }
}

pub fn names(scopes: &[ChannelScope]) -> Vec<&'static str> {
    scopes.iter().map(|s| s.as_str()).collect()
}

impl fmt::Display for ChannelScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A new key: the secret (shown once), the part shown afterwards, and the hash to store.
pub struct NewKey {
    pub key: Secret,
    pub prefix: String,
    pub hash: String,
}

pub fn generate() -> NewKey {
    let key = Secret::new(format!("{KEY_PREFIX}{}", Secret::generate().expose()));
    let prefix = key.expose()[..KEY_PREFIX.len() + SHOWN].to_owned();
    let hash = hash(key.expose());
    NewKey { key, prefix, hash }
}

/// The stored form of a presented key. The key carries 256 random bits, so a plain hash is
/// enough: there is nothing to brute-force.
pub fn hash(presented: &str) -> String {
    hex::encode(Sha256::digest(presented.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_stored_as_hashes() {
        let (a, b) = (generate(), generate());
        assert!(a.key.expose().starts_with("crmhub_") && a.key.expose().len() == 50, "{}", a.prefix);
        assert_ne!(a.key, b.key);
        assert_eq!(a.hash, hash(a.key.expose()));
        assert!(a.key.expose().starts_with(&a.prefix) && a.prefix.len() == 13);
        assert!(!a.hash.contains(&a.key.expose()[7..]));
    }

    #[test]
    fn scopes_are_known_and_listed_once() {
        assert_eq!(
            ChannelScope::parse_list(&["widget", "calls", "calls"]).unwrap(),
            [ChannelScope::Calls, ChannelScope::Widget]
        );
        assert_eq!(ChannelScope::parse_list(&["admin"]).unwrap_err().field, "scopes");
        assert!(ChannelScope::parse_list::<&str>(&[]).is_err());
    }
}
