//! One call to the classic API (contract §1, §2): the form POST with the key in the body, and
//! the answer read into a `result` or a `CrmError`.

use std::time::Duration;

use crmhub_core::crm::CrmError;
use reqwest::Method;
use serde_json::Value;
use url::Url;

use super::{LIMIT_BACKOFF, Unisender};
use crate::http::{OutboundRequest, OutboundResponse, RequestBody, RetryMode};

/// How a call may be repeated.
#[derive(Debug, Clone, Copy)]
pub(super) enum Repeat {
    /// Only when it never reached Unisender (the client's rule for a POST).
    Unsafe,
    /// An upsert: an attempt unanswered within `timeout` (or answered 502–504) is sent again.
    Idempotent { timeout: Duration },
}

impl Unisender {
    fn url(&self, method: &str) -> Result<Url, CrmError> {
        let mut url = Url::parse(&self.host.join(&format!("{}/api/{method}", self.lang)))
            .map_err(|e| CrmError::validation("host", format!("is not a usable URL: {e}")))?;
        url.query_pairs_mut().append_pair("format", "json");
        Ok(url)
    }

    /// Calls `method` with `args`; its `result`. Errors carry no secret.
    pub(super) async fn call(
        &self,
        method: &str,
        args: &[(String, String)],
        repeat: Repeat,
    ) -> Result<Value, CrmError> {
        let result = async {
            let mut form: Vec<(&str, &str)> = Vec::with_capacity(args.len() + 1);
            form.push(("api_key", self.api_key.expose()));
            form.extend(args.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let request = OutboundRequest::new(Method::POST, self.url(method)?).body(RequestBody::form(&form));
            let request = match repeat {
                Repeat::Unsafe => request.retry(RetryMode::Auto),
                Repeat::Idempotent { timeout } => request.retry(RetryMode::Always).timeout(timeout),
            };
            let answer = self.http.send(&self.ctx, request).await?;
            read(method, &answer)
        }
        .await;
        result.map_err(|e| self.ctx.secrets.redact_error(e))
    }
}

/// §2: failed iff `error` or `code` is present; a non-200 or non-JSON answer is a transport
/// failure.
pub(super) fn read(method: &str, answer: &OutboundResponse) -> Result<Value, CrmError> {
    if answer.status.as_u16() != 200 {
        return Err(CrmError::Unavailable(format!("Unisender answered {method} with HTTP {}", answer.status)));
    }
    let body: Value = serde_json::from_slice(&answer.body).map_err(|_| {
        CrmError::Unavailable(format!(
            "Unisender answered {method} with {} bytes that are not JSON ({})",
            answer.body.len(),
            answer.content_type().unwrap_or("no content type")
        ))
    })?;
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    let (error, code) = (text(body.get("error")), text(body.get("code")));
    if error.is_some() || code.is_some() {
        let message = unescape(error.as_deref().unwrap_or("(no message)"));
        return Err(map_error(method, code.as_deref().unwrap_or("unspecified"), message));
    }
    match body {
        Value::Object(mut map) => map
            .remove("result")
            .ok_or_else(|| CrmError::Protocol(format!("Unisender answered {method} with neither result nor error"))),
        _ => Err(CrmError::Protocol(format!("Unisender answered {method} with JSON that is not an object"))),
    }
}

/// The gateway action for each code (§2's table).
pub(super) fn map_error(method: &str, code: &str, message: String) -> CrmError {
    match code {
        "retry_later" => CrmError::Unavailable(format!("Unisender asked to retry later ({method}): {message}")),
        "api_call_limit_exceeded_for_api_key" | "api_call_limit_exceeded_for_ip" => {
            CrmError::RateLimited { retry_after: Some(LIMIT_BACKOFF) }
        }
        "invalid_api_key" => CrmError::AuthFailed(format!(
            "Unisender refused the API key (invalid_api_key: {message}); enter the account's current API key \
             (Account → Integration and API) in the connection's credentials"
        )),
        "access_denied" => CrmError::AuthFailed(format!(
            "Unisender denied access (access_denied: {message}); enable API access for the account or the \
             method in Unisender, then re-enable the connection"
        )),
        "not_enough_money" => CrmError::AuthFailed(format!(
            "the Unisender account's balance is too low (not_enough_money: {message}); top up the balance, \
             then re-enable the connection"
        )),
        "invalid_arg" => CrmError::Validation { field: format!("unisender.{method}"), message },
        "unknown_method" => CrmError::Protocol(format!("Unisender does not know the method {method}: {message}")),
        other => CrmError::Remote { code: other.to_owned(), message },
    }
}

/// Whether an `unspecified` error says that the contact does not exist (§5: `Contact "x" not
/// found`): the only way Unisender tells it.
pub(super) fn is_not_found(error: &CrmError) -> bool {
    matches!(error, CrmError::Remote { code, message } if code == "unspecified" && message.to_ascii_lowercase().contains("not found"))
}

/// Messages "may be HTML-escaped" (§2).
fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#039;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use reqwest::StatusCode;
    use reqwest::header::HeaderMap;

    fn answer(status: u16, body: &str) -> OutboundResponse {
        OutboundResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
            url: Url::parse("https://api.unisender.com/en/api/getLists?format=json").unwrap(),
        }
    }

    #[test]
    fn codes_map_to_their_gateway_action() {
        let map = |code: &str| map_error("importContacts", code, "why".into());
        assert!(matches!(map("unknown_method"), CrmError::Protocol(_)));
        assert!(
            matches!(map("invalid_arg"), CrmError::Validation { field, .. } if field == "unisender.importContacts")
        );
        assert!(matches!(map("retry_later"), CrmError::Unavailable(_)));
        assert!(matches!(map("api_call_limit_exceeded_for_api_key"), CrmError::RateLimited { retry_after: Some(_) }));
        for code in ["invalid_api_key", "access_denied", "not_enough_money"] {
            assert!(matches!(map(code), CrmError::AuthFailed(m) if m.contains(code)), "{code}");
        }
        assert!(
            matches!(map("unspecified"), CrmError::Remote { code, message } if code == "unspecified" && message == "why")
        );
        assert!(matches!(map("something_new"), CrmError::Remote { code, .. } if code == "something_new"));
        assert!(!is_not_found(&map("unspecified")));
    }

    #[test]
    fn errors_are_read_whatever_the_status_and_result() {
        assert_eq!(read("getLists", &answer(200, r#"{"result":[]}"#)).unwrap(), serde_json::json!([]));
        let not_found = read(
            "exclude",
            &answer(200, r#"{"error":"Contact &quot;x&quot; not found","code":"unspecified","result":""}"#),
        );
        let e = not_found.unwrap_err();
        assert!(is_not_found(&e), "{e:?}");
        assert!(matches!(&e, CrmError::Remote { message, .. } if message == "Contact \"x\" not found"));
        assert!(matches!(read("m", &answer(200, r#"{"code":"retry_later"}"#)), Err(CrmError::Unavailable(_))));
        assert!(matches!(read("m", &answer(500, r#"{"result":[]}"#)), Err(CrmError::Unavailable(_))));
        assert!(matches!(read("m", &answer(200, "<html>")), Err(CrmError::Unavailable(_))));
        assert!(matches!(read("m", &answer(200, "{}")), Err(CrmError::Protocol(_))));
        assert!(matches!(
            read("m", &answer(200, r#"{"error":"x","code":"api_call_limit_exceeded_for_ip"}"#)),
            Err(CrmError::RateLimited { retry_after: Some(d) }) if d >= Duration::from_secs(60)
        ));
    }
}
