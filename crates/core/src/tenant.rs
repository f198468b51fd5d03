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

/// A tenant's `settings`: only documented keys, within a size bound. Channel configuration is
/// not among them — each channel keeps its own, behind its own API — so a tenant update can
/// never switch a channel off or slip past its validation.
///
/// Documented keys: `metadata`, an object of the operator's own labels (string values: an
/// account manager, a contract number), at most 32 of them.
pub fn tenant_settings(
    settings: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, FieldError> {
    const MAX_BYTES: usize = 8 * 1024;
    const MAX_LABELS: usize = 32;
    for (key, value) in &settings {
        match key.as_str() {
            "metadata" => {
                let serde_json::Value::Object(labels) = value else {
                    return Err(FieldError::new("settings.metadata", "must be an object of text labels"));
                };
                if labels.len() > MAX_LABELS {
                    return Err(FieldError::new("settings.metadata", format!("holds at most {MAX_LABELS} labels")));
                }
                for (label, text) in labels {
                    if label.is_empty() || label.chars().count() > 64 || !text.is_string() {
                        return Err(FieldError::new(
                            format!("settings.metadata.{label}"),
                            "labels are 1–64 characters with a text value",
                        ));
                    }
                }
            }
            "social_inbox" => {
                return Err(FieldError::new(
                    "settings.social_inbox",
                    "channel settings are not tenant settings: use PUT /admin/v1/tenants/{slug}/channels/social-inbox",
                ));
            }
            other => {
                return Err(FieldError::new(
                    format!("settings.{other}"),
                    "is not a tenant setting (documented keys: metadata)",
                ));
            }
        }
    }
    if serde_json::to_string(&settings).map_or(0, |json| json.len()) > MAX_BYTES {
        return Err(FieldError::new("settings", format!("must be at most {MAX_BYTES} bytes of JSON")));
    }
    Ok(settings)
}

/// ISO 3166-1 alpha-2 region used to read phone numbers written without a country code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneRegion([u8; 2]);

/// The officially assigned ISO 3166-1 alpha-2 codes, sorted, plus `XK` (Kosovo), which phone
/// numbering plans use although ISO has not assigned it.
const REGION_CODES: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA", "BB", "BD",
    "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY", "BZ", "CA",
    "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE",
    "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA",
    "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK",
    "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM", "JO", "JP",
    "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT",
    "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS",
    "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ",
    "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS",
    "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST",
    "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW",
    "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "YE", "YT", "ZA",
    "ZM", "ZW",
];

impl PhoneRegion {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let upper = raw.trim().to_ascii_uppercase();
        let known = upper == "XK" || REGION_CODES.binary_search(&upper.as_str()).is_ok();
        match upper.as_bytes() {
            [a, b] if known => Ok(Self([*a, *b])),
            _ => Err(FieldError::new(
                "phone_region",
                format!("must be an ISO 3166 country code such as \"US\" or \"VN\" (got {raw:?})"),
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
        // Two letters are not enough: the code must be a real region.
        assert!(PhoneRegion::parse("XX").is_err());
        assert!(PhoneRegion::parse("ZZ").is_err());
        assert_eq!(PhoneRegion::parse("xk").unwrap().as_str(), "XK");
        assert!(REGION_CODES.windows(2).all(|w| w[0] < w[1]), "sorted, for the binary search");
    }

    #[test]
    fn tenant_settings_take_documented_keys_only() {
        let settings = |v: serde_json::Value| tenant_settings(v.as_object().unwrap().clone());
        assert!(settings(serde_json::json!({"metadata": {"account manager": "Lan"}})).is_ok());
        assert_eq!(settings(serde_json::json!({"social_inbox": {}})).unwrap_err().field, "settings.social_inbox");
        assert_eq!(settings(serde_json::json!({"colour": "red"})).unwrap_err().field, "settings.colour");
        assert_eq!(settings(serde_json::json!({"metadata": {"n": 1}})).unwrap_err().field, "settings.metadata.n");
        let big: serde_json::Map<String, serde_json::Value> =
            (0..20).map(|i| (format!("k{i}"), serde_json::Value::String("x".repeat(500)))).collect();
        assert_eq!(settings(serde_json::json!({"metadata": big})).unwrap_err().field, "settings");
    }
}
