//! Calls to Kommo's REST API v4 (contract §3): the bearer token, the answers' status codes and
//! problem+json errors read into `CrmError`s, 204 as "nothing", 403 as an IP block that pauses
//! the host, and the webhook subscription endpoints (§5).

use crmhub_core::Secret;
use crmhub_core::crm::CrmError;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::Kommo;
use super::tokens::problem_detail;
use crate::http::{OutboundRequest, OutboundResponse, RequestBody};

/// A successful answer: a JSON body, or none (HTTP 204, Kommo's "no results").
#[derive(Debug)]
pub(super) enum Answer {
    Json(Value),
    Empty,
}

/// What `GET /api/v4/account` tells (the fields crmhub uses).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Account {
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub subdomain: String,
}

impl Kommo {
    /// `{base}/api/v4/{path}?{query}`.
    pub(super) fn api_url(&self, path: &str, query: &[(&str, String)]) -> Result<Url, CrmError> {
        let mut url = Url::parse(&self.base.join(&format!("api/v4/{path}")))
            .map_err(|e| CrmError::validation("host", format!("is not a usable URL: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    /// One API call with the connection's token, read into an [`Answer`].
    pub(super) async fn call(&self, method: Method, url: Url, body: Option<Value>) -> Result<Answer, CrmError> {
        let answer = self.send(method, url, body).await?;
        self.read(answer)
    }

    /// One API call with the connection's token, its answer unread (for callers that act on a
    /// status themselves, as paging does on a 504).
    pub(super) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<OutboundResponse, CrmError> {
        let host = self.base.as_str().to_owned();
        if let Some(left) = self.shared.pauses.remaining(&host) {
            return Err(CrmError::RateLimited { retry_after: Some(left) });
        }
        let request = OutboundRequest::new(method, url);
        let request = match &body {
            Some(body) => request.body(RequestBody::json(body)),
            None => request,
        };
        let send = |token: Secret| {
            let request = request.clone();
            async move {
                let bearer = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| CrmError::Protocol("the Kommo token cannot be sent in a header".into()))?;
                let mut bearer = bearer;
                bearer.set_sensitive(true);
                Ok(self.http.send(&self.ctx, request.header(AUTHORIZATION, bearer)).await?)
            }
        };
        self.with_token(send).await
    }

    pub(super) fn read(&self, answer: OutboundResponse) -> Result<Answer, CrmError> {
        let status = answer.status;
        match status.as_u16() {
            204 => Ok(Answer::Empty),
            200..=299 if answer.body.iter().all(u8::is_ascii_whitespace) => Ok(Answer::Empty),
            200..=299 => serde_json::from_slice(&answer.body)
                .map(Answer::Json)
                .map_err(|e| CrmError::Protocol(format!("Kommo answered {status} with a body that is not JSON: {e}"))),
            400 => Err(validation_error(&answer)),
            401 => Err(CrmError::AuthFailed(problem_detail(&answer))),
            // Kommo answers 403 to everything from an IP it blocked (contract §3). A 403 for a
            // missing right cannot be told apart from the outside; pausing then costs a pause,
            // while hammering a real block prolongs it, so every 403 is read as a block.
            403 => {
                let pause = self.shared.pauses.block(
                    self.base.as_str(),
                    self.http.clock().now_millis(),
                    &problem_detail(&answer),
                );
                Err(CrmError::RateLimited { retry_after: Some(pause) })
            }
            404 => Err(CrmError::NotFound { what: format!("Kommo {}", answer.url.path()) }),
            // The client turns 429s into `RateLimited` itself; one only arrives here redirected.
            429 => Err(CrmError::RateLimited { retry_after: None }),
            500..=599 => Err(CrmError::Unavailable(format!("Kommo answered {status}: {}", problem_detail(&answer)))),
            _ => Err(CrmError::Remote { code: status.as_u16().to_string(), message: problem_detail(&answer) }),
        }
    }

    pub(super) async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Answer, CrmError> {
        self.call(Method::GET, self.api_url(path, query)?, None).await
    }

    /// The account the token belongs to.
    pub(crate) async fn account(&self) -> Result<Account, CrmError> {
        match self.get("account", &[]).await? {
            Answer::Json(body) => serde_json::from_value(body)
                .map_err(|e| CrmError::Protocol(format!("the Kommo account answer has an unexpected shape: {e}"))),
            Answer::Empty => Err(CrmError::Protocol("Kommo answered the account request with no body".into())),
        }
    }

    /// Subscribes `destination` to `events` (re-subscribing updates the events).
    pub async fn subscribe_webhook(&self, destination: &Url, events: &[&str]) -> Result<(), CrmError> {
        let body = json!({"destination": destination.as_str(), "settings": events, "sort": 10});
        let result = self.call(Method::POST, self.api_url("webhooks", &[])?, Some(body)).await.map(drop);
        result.map_err(|e| self.redact_destination(e, destination))
    }

    /// Removes the subscription of `destination`; one that is already gone is not an error.
    pub async fn unsubscribe_webhook(&self, destination: &Url) -> Result<(), CrmError> {
        let body = json!({"destination": destination.as_str()});
        match self.call(Method::DELETE, self.api_url("webhooks", &[])?, Some(body)).await {
            Ok(_) | Err(CrmError::NotFound { .. }) => Ok(()),
            // What Kommo answers for a destination it does not have is undocumented (the
            // simulator says 400): it is gone if the list no longer shows it.
            Err(e @ (CrmError::Remote { .. } | CrmError::Validation { .. })) => {
                match self.webhook_destinations().await {
                    Ok(known) if !known.iter().any(|d| d == destination.as_str()) => Ok(()),
                    _ => Err(self.redact_destination(e, destination)),
                }
            }
            Err(e) => Err(self.redact_destination(e, destination)),
        }
    }

    /// The destinations Kommo has for this account (for checks and tests).
    pub async fn webhook_destinations(&self) -> Result<Vec<String>, CrmError> {
        let body = match self.get("webhooks", &[]).await? {
            Answer::Json(body) => body,
            Answer::Empty => return Ok(Vec::new()),
        };
        let hooks = body.pointer("/_embedded/webhooks").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(hooks.iter().filter_map(|h| h.get("destination").and_then(Value::as_str).map(str::to_owned)).collect())
    }

    /// A webhook destination carries its secret in the path: it never leaves in an error.
    fn redact_destination(&self, error: CrmError, destination: &Url) -> CrmError {
        let error = self.ctx.secrets.redact_error(error);
        let secret = destination.path().rsplit('/').next().unwrap_or_default().to_owned();
        if secret.len() < 16 {
            return error;
        }
        error.map_text(|text| text.replace(&secret, "***"))
    }
}

/// A 400's `validation-errors` (contract §4) as a `Validation` naming the first failing path.
fn validation_error(answer: &OutboundResponse) -> CrmError {
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    let first = body
        .get("validation-errors")
        .and_then(Value::as_array)
        .and_then(|items| items.iter().find_map(|item| item.get("errors")?.as_array()?.first().cloned()));
    match first {
        Some(error) => CrmError::Validation {
            field: error.get("path").and_then(Value::as_str).unwrap_or("request").to_owned(),
            message: error
                .get("detail")
                .or_else(|| error.get("code"))
                .and_then(Value::as_str)
                .unwrap_or("refused by Kommo")
                .to_owned(),
        },
        None => {
            CrmError::Remote { code: StatusCode::BAD_REQUEST.as_u16().to_string(), message: problem_detail(answer) }
        }
    }
}
