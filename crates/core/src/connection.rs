//! A connection is a tenant's instance of a connector: which CRM or destination, where it
//! lives, and the field values it needs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::FieldError;
use crate::tenant::display_text;

/// Which connector a connection uses. Native connectors have a fixed name; a connection built
/// from a declarative integration template is `template:<template name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConnectorKind {
    Vtiger,
    Kommo,
    Unisender,
    Template(String),
}

impl ConnectorKind {
    const TEMPLATE_PREFIX: &'static str = "template:";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "vtiger" => Ok(Self::Vtiger),
            "kommo" => Ok(Self::Kommo),
            "unisender" => Ok(Self::Unisender),
            other => match other.strip_prefix(Self::TEMPLATE_PREFIX) {
                Some(name) if is_identifier(name) => Ok(Self::Template(name.to_owned())),
                _ => Err(FieldError::new(
                    "kind",
                    format!(
                        "unknown connector {raw:?}; expected \"vtiger\", \"kommo\", \"unisender\" or \"template:<name>\""
                    ),
                )),
            },
        }
    }

    /// The label used in metrics and logs; bounded in cardinality (templates share one).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Vtiger => "vtiger",
            Self::Kommo => "kommo",
            Self::Unisender => "unisender",
            Self::Template(_) => "template",
        }
    }
}

impl fmt::Display for ConnectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Template(name) => write!(f, "{}{name}", Self::TEMPLATE_PREFIX),
            native => f.write_str(native.metric_label()),
        }
    }
}

impl FromStr for ConnectorKind {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ConnectorKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConnectorKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Lowercase identifier: `[a-z0-9_-]`, 1–63 characters, starting with a letter.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// A connection's label, unique within its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ConnectionName(String);

impl ConnectionName {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        display_text("name", raw, 100).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The base URL of a remote installation. A host given without a scheme is taken as `https://`
/// (the seed's integrators store bare hosts such as `app.example.com`). Credentials, query
/// strings and fragments are refused: they would end up in logs and URLs built from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Host(String);

impl Host {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let err = |why: String| FieldError::new("host", why);
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(err("must not be empty".into()));
        }
        let with_scheme = if trimmed.contains("://") { trimmed.to_owned() } else { format!("https://{trimmed}") };
        let url = Url::parse(&with_scheme).map_err(|e| err(format!("is not a valid URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err(format!("scheme must be http or https (got {:?})", url.scheme())));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(err("must name a host".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err("must not contain credentials; put them in \"credentials\"".into()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(err("must not contain a query string or fragment".into()));
        }
        let normalised = url.as_str().trim_end_matches('/').to_owned();
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `{host}/{path}` with exactly one slash between them.
    pub fn join(&self, path: &str) -> String {
        format!("{}/{}", self.0, path.trim_start_matches('/'))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lifecycle of a connection as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    /// Usable; the last call (if any) worked.
    Active,
    /// Switched off by an operator; channels treat it as absent.
    Disabled,
    /// Recent calls failed; `last_error` says why. Still tried.
    Failing,
    /// Credentials were refused; an operator must supply new ones.
    NeedsReauth,
}

impl ConnectionStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Failing => "failing",
            Self::NeedsReauth => "needs_reauth",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "active" => Ok(Self::Active),
            "disabled" => Ok(Self::Disabled),
            "failing" => Ok(Self::Failing),
            "needs_reauth" => Ok(Self::NeedsReauth),
            other => Err(FieldError::new(
                "status",
                format!("unknown status {other:?}; expected active, disabled, failing or needs_reauth"),
            )),
        }
    }
}

impl fmt::Display for ConnectionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for raw in ["vtiger", "kommo", "unisender", "template:json-crm"] {
            assert_eq!(ConnectorKind::parse(raw).unwrap().to_string(), raw);
        }
        assert_eq!(ConnectorKind::parse("salesforce").unwrap_err().field, "kind");
        assert!(ConnectorKind::parse("template:").is_err());
        assert!(ConnectorKind::parse("template:Bad Name").is_err());
    }

    #[test]
    fn host_defaults_to_https_and_drops_trailing_slash() {
        assert_eq!(Host::parse("app.example.com").unwrap().as_str(), "https://app.example.com");
        assert_eq!(Host::parse("http://crm.local:8080/vtiger/").unwrap().as_str(), "http://crm.local:8080/vtiger");
        assert_eq!(Host::parse("https://x.io").unwrap().join("/webservice.php"), "https://x.io/webservice.php");
    }

    #[test]
    fn host_refuses_credentials_queries_and_other_schemes() {
        for bad in ["https://u:p@x.io", "https://x.io/?a=1", "ftp://x.io", "", "https://x.io#f"] {
            assert_eq!(Host::parse(bad).unwrap_err().field, "host", "{bad}");
        }
    }
}
