//! Secret values: credentials, tokens, keys. They never print (`Debug` and `Display` are
//! redacted), never serialize (there is deliberately no `Serialize` impl) and are wiped from
//! memory when dropped.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRng;
use rand::rngs::SysRng;
use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

pub const REDACTED: &str = "[redacted]";

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// A fresh 256-bit value from the operating system's RNG, as URL-safe base64 (43 chars),
    /// for secrets crmhub makes for itself: webhook path tokens, signing secrets, admin tokens.
    pub fn generate() -> Self {
        Self::new(URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
    }

    /// The only way to read the value. Grep for it to audit every place a secret is used.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// `N` bytes from the operating system's RNG. Panics only if the OS cannot provide
/// randomness, in which case nothing secure can be done anyway.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    SysRng.try_fill_bytes(&mut bytes).expect("the operating system RNG is unavailable");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{:?}", Some(&s)), format!("Some({REDACTED})"));
    }

    #[test]
    fn generated_secrets_are_256_bits_and_distinct() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_eq!(URL_SAFE_NO_PAD.decode(a.expose()).unwrap().len(), 32);
        assert_ne!(a, b);
    }
}

/// A connection's credentials: named secret values (`access_key`, `client_secret`, …). Only the
/// names may be shown; the values leave this type through `get(..).expose()` alone.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Credentials(std::collections::BTreeMap<String, Secret>);

impl Credentials {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, value: Secret) {
        self.0.insert(name.into(), value);
    }

    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.0.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn values(&self) -> impl Iterator<Item = &Secret> {
        self.0.values()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// JSON for sealing in the vault; the result must go straight into `Vault::seal`.
    pub fn to_sealable_json(&self) -> Zeroizing<String> {
        let plain: std::collections::BTreeMap<&str, &str> =
            self.0.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        Zeroizing::new(serde_json::to_string(&plain).unwrap_or_else(|_| "{}".to_owned()))
    }

    pub fn from_sealed_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.keys().map(|k| (k, REDACTED))).finish()
    }
}

impl FromIterator<(String, Secret)> for Credentials {
    fn from_iter<I: IntoIterator<Item = (String, Secret)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}
