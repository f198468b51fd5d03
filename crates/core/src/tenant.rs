//! Tenant identity and settings, parsed at the edge.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::FieldError;

/// The URL-safe handle of a tenant: 1–63 characters of `a-z`, `0-9` and `-`, starting with a
/// letter or digit. It appears in channel URLs (`/t/{slug}/...`), so anything that would need
/// escaping there is refused rather than encoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantSlug(String);

impl TenantSlug {
    pub const MAX_LEN: usize = 63;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let err = |why: &str| FieldError::new("slug", why);
        if raw.is_empty() {
            return Err(err("must not be empty"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(err(&format!("must be at most {} characters (got {})", Self::MAX_LEN, raw.len())));
        }
        if let Some(bad) = raw.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
            return Err(err(&format!("may contain only lowercase letters, digits and '-' (found {bad:?})")));
        }
        if raw.starts_with('-') || raw.ends_with('-') {
            return Err(err("must start and end with a letter or digit"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A human display name: trimmed, 1–200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TenantName(String);

impl TenantName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        display_text("name", raw, Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// ISO 3166-1 alpha-2 region used to read phone numbers written without a country code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneRegion([u8; 2]);

impl PhoneRegion {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let upper = raw.trim().to_ascii_uppercase();
        match upper.as_bytes() {
            [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Ok(Self([*a, *b])),
            _ => Err(FieldError::new(
                "phone_region",
                format!("must be a two-letter ISO 3166 country code such as \"US\" or \"VN\" (got {raw:?})"),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII uppercase letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("ZZ")
    }
}

impl TryFrom<String> for PhoneRegion {
    type Error = FieldError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PhoneRegion> for String {
    fn from(value: PhoneRegion) -> Self {
        value.as_str().to_owned()
    }
}

impl fmt::Display for PhoneRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shared rule for short human-readable labels.
pub(crate) fn display_text(field: &str, raw: &str, max_chars: usize) -> Result<String, FieldError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    let chars = trimmed.chars().count();
    if chars > max_chars {
        return Err(FieldError::new(field, format!("must be at most {max_chars} characters (got {chars})")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_accepts_lowercase_digits_and_inner_dashes() {
        assert_eq!(TenantSlug::parse("acme-2").unwrap().as_str(), "acme-2");
        assert!(TenantSlug::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn slug_refuses_separators_spaces_and_long_values() {
        for bad in ["a/b", "a b", "", "-a", "a-", "Acme", "a.b", "é"] {
            let e = TenantSlug::parse(bad).unwrap_err();
            assert_eq!(e.field, "slug", "{bad:?}");
        }
        let e = TenantSlug::parse(&"a".repeat(200)).unwrap_err();
        assert!(e.message.contains("at most 63"), "{e}");
    }

    #[test]
    fn name_is_trimmed_and_bounded() {
        assert_eq!(TenantName::parse("  Acme  ").unwrap().as_str(), "Acme");
        assert!(TenantName::parse("   ").is_err());
        assert!(TenantName::parse(&"x".repeat(201)).is_err());
        assert!(TenantName::parse("a\u{7}b").is_err());
    }

    #[test]
    fn phone_region_is_two_letters() {
        assert_eq!(PhoneRegion::parse("vn").unwrap().as_str(), "VN");
        assert!(PhoneRegion::parse("VNM").is_err());
        assert!(PhoneRegion::parse("1A").is_err());
    }
}
