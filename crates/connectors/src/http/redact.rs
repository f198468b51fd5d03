//! Redaction for the request log and error messages: secret-bearing parameters by name, and
//! known secret values (credentials, session ids) wherever they appear, raw or URL-encoded.

use crmhub_core::Secret;
use crmhub_core::secret::REDACTED;
use serde_json::Value;
use url::Url;

/// Whether a parameter or JSON key by this name carries a secret.
///
/// `code` is not such a name: it is how CRMs name their error (Vtiger's `"code":
/// "INVALID_SESSIONID"`), the one field that says what went wrong. A secret that travels as
/// `code` (an OAuth authorization code) is masked by value, through the call's `redact` list.
pub fn is_sensitive_name(name: &str) -> bool {
    let folded: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    const EXACT: &[&str] = &["sig", "key", "auth", "hash"];
    const CONTAINS: &[&str] =
        &["pass", "secret", "token", "apikey", "accesskey", "session", "signature", "authorization", "credential"];
    EXACT.contains(&folded.as_str()) || CONTAINS.iter().any(|needle| folded.contains(needle))
}

/// Values to mask wherever they appear, plus the name-based rules.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Vec<Secret>,
}

impl Redactor {
    /// Values shorter than 4 characters are not masked by value (they would mask unrelated
    /// text); parameters named like secrets are masked whatever their length.
    pub fn new(values: impl IntoIterator<Item = Secret>) -> Self {
        Self { values: values.into_iter().filter(|s| s.expose().chars().count() >= 4).collect() }
    }

    pub fn text(&self, input: &str) -> String {
        let mut out = input.to_owned();
        for secret in &self.values {
            let raw = secret.expose();
            out = out.replace(raw, REDACTED);
            let encoded: String = url::form_urlencoded::byte_serialize(raw.as_bytes()).collect();
            if encoded != raw {
                out = out.replace(&encoded, REDACTED);
            }
        }
        out
    }

    /// The URL with secret-named query parameters replaced and known values masked.
    pub fn url(&self, url: &Url) -> String {
        let mut clean = url.clone();
        let _ = clean.set_password(None);
        let _ = clean.set_username("");
        if url.query().is_some() {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if is_sensitive_name(&k) { REDACTED.to_owned() } else { v.into_owned() };
                    (k.into_owned(), v)
                })
                .collect();
            clean.query_pairs_mut().clear().extend_pairs(pairs);
        }
        self.text(clean.as_str())
    }

    /// A request or response body for the log: form and JSON bodies are redacted by key; any
    /// body has known values masked and is cut to `limit` bytes (on a character boundary).
    pub fn body(&self, body: &[u8], content_type: Option<&str>, limit: usize) -> Option<String> {
        if body.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(body);
        let content_type = content_type.unwrap_or_default();
        let structured = if content_type.contains("x-www-form-urlencoded") {
            Some(self.form(&text))
        } else if content_type.contains("json") || text.trim_start().starts_with(['{', '[']) {
            serde_json::from_str::<Value>(&text).ok().map(|mut value| {
                redact_json(&mut value);
                value.to_string()
            })
        } else {
            None
        };
        let masked = self.text(structured.as_deref().unwrap_or(&text));
        Some(truncate(&masked, limit))
    }

    fn form(&self, body: &str) -> String {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
            .map(|(k, v)| {
                let v = if is_sensitive_name(&k) { REDACTED.to_owned() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
    }
}

fn redact_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_sensitive_name(key) && !v.is_object() && !v.is_array() {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    redact_json(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

pub fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} bytes cut]", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_carry_secrets() {
        for name in [
            "sessionName",
            "accessKey",
            "api_key",
            "access_token",
            "refresh_token",
            "client_secret",
            "sig",
            "password",
            "Authorization",
            "X-Api-Key",
        ] {
            assert!(is_sensitive_name(name), "{name}");
        }
        for name in ["operation", "query", "username", "elementType", "id", "q", "expires", "code"] {
            assert!(!is_sensitive_name(name), "{name}");
        }
    }

    #[test]
    fn urls_lose_secret_parameters_and_known_values() {
        let r = Redactor::new([Secret::new("5c1ad80d610a7a7aabe2e")]);
        let url = Url::parse(
            "https://crm.example.com/webservice.php?operation=query&sessionName=5c1ad80d610a7a7aabe2e&query=SELECT",
        )
        .unwrap();
        let logged = r.url(&url);
        assert!(!logged.contains("5c1ad80d610a7a7aabe2e"), "{logged}");
        assert!(logged.contains("operation=query"));
        let in_path = Url::parse("https://x.io/hooks/5c1ad80d610a7a7aabe2e/in").unwrap();
        assert!(!r.url(&in_path).contains("5c1ad80d610a7a7aabe2e"));
    }

    #[test]
    fn bodies_are_redacted_by_key_and_value_and_cut() {
        let r = Redactor::new([Secret::new("topsecret-value")]);
        let form = b"operation=login&username=admin&accessKey=abc123";
        let logged = r.body(form, Some("application/x-www-form-urlencoded"), 1000).unwrap();
        assert!(logged.contains("username=admin") && !logged.contains("abc123"), "{logged}");

        let json = br#"{"success":true,"result":{"sessionName":"s-1","userId":"19x1","note":"topsecret-value"}}"#;
        let logged = r.body(json, Some("application/json"), 1000).unwrap();
        assert!(!logged.contains("s-1") && !logged.contains("topsecret-value") && logged.contains("19x1"), "{logged}");

        // An error's code names the problem and stays; a secret echoed in its message does not.
        let json = br#"{"success":false,"error":{"code":"INVALID_SESSIONID","message":"bad topsecret-value"}}"#;
        let logged = r.body(json, Some("application/json"), 1000).unwrap();
        assert!(logged.contains(r#""code":"INVALID_SESSIONID""#) && !logged.contains("topsecret-value"), "{logged}");

        let long = "é".repeat(100);
        let cut = r.body(long.as_bytes(), Some("text/plain"), 11).unwrap();
        assert!(cut.starts_with("ééééé") && cut.contains("bytes cut"), "{cut}");
    }
}
