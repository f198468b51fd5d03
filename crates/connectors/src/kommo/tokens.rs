//! Kommo's OAuth tokens (contract §1–2): exchanging the callback's code, refreshing ahead of
//! expiry and on a 401, and the session loop every API call runs in.
//!
//! Every refresh returns a new refresh token and the old one dies once the new pair is used,
//! so two refreshes racing each other would leave one of them holding a dead token. Refreshes
//! therefore run single-flight per connection, in this process and (through the auth state's
//! lock, on PostgreSQL) across instances, and the new pair is stored, sealed, before anything
//! uses it. A refresh whose answer was lost is sent once more with the old token: Kommo keeps
//! the old refresh token working until the new pair is used, precisely for that recovery.

use std::time::Duration;

use crmhub_core::Secret;
use crmhub_core::crm::CrmError;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use super::{Grant, Kommo};
use crate::http::{OutboundRequest, OutboundResponse, RequestBody, RetryMode};

/// A token is refreshed this long before Kommo would refuse it, so that a call never races the
/// expiry.
const EXPIRY_MARGIN_SECS: i64 = 5 * 60;

/// The shortest and longest `expires_in` believed. Kommo issues 24 h; an answer outside these
/// bounds is a broken or hostile answer, not a token to keep.
const MIN_LIFETIME_SECS: i64 = 60;
const MAX_LIFETIME_SECS: i64 = 366 * 24 * 3600;

/// The token pair as kept (sealed) in the shared auth state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Kommo's numeric account id, learnt right after the code exchange.
    #[serde(default)]
    pub account_id: Option<i64>,
}

impl TokenPair {
    fn seal(&self) -> Secret {
        Secret::new(serde_json::to_string(self).expect("a token pair serializes"))
    }

    pub(crate) fn open(secret: &Secret) -> Result<Self, CrmError> {
        serde_json::from_str(secret.expose())
            .map_err(|e| CrmError::Protocol(format!("the stored Kommo tokens are unreadable ({e}); connect again")))
    }
}

/// What a successful connect learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Connected {
    pub account_id: i64,
    /// When the access token expires (unix seconds); it is refreshed ahead of that.
    pub expires_at: i64,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    token_type: Option<String>,
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<Value>,
}

/// Reads a token endpoint answer into a pair, refusing anything incomplete or implausible:
/// a pair stored with a missing refresh token or an absurd lifetime would fail later, far from
/// its cause.
fn pair_from(answer: &OutboundResponse, now_secs: i64) -> Result<TokenPair, CrmError> {
    let parsed: TokenAnswer = answer.json().map_err(|e| {
        CrmError::Protocol(format!("the Kommo token endpoint answered something that is not a token: {e}"))
    })?;
    let missing = |field: &str| CrmError::Protocol(format!("the Kommo token answer has no {field}"));
    let present = |v: Option<String>, field: &str| v.filter(|s| !s.trim().is_empty()).ok_or_else(|| missing(field));
    if let Some(kind) = &parsed.token_type {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(CrmError::Protocol(format!("the Kommo token answer has token_type {kind:?}, not Bearer")));
        }
    }
    let access_token = present(parsed.access_token, "access_token")?;
    let refresh_token = present(parsed.refresh_token, "refresh_token")?;
    let expires_in = match parsed.expires_in {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| missing("expires_in (a whole number of seconds)"))?;
    if !(MIN_LIFETIME_SECS..=MAX_LIFETIME_SECS).contains(&expires_in) {
        return Err(CrmError::Protocol(format!(
            "the Kommo token answer says expires_in {expires_in}, outside {MIN_LIFETIME_SECS}..{MAX_LIFETIME_SECS} s; not stored"
        )));
    }
    Ok(TokenPair { access_token, refresh_token, expires_at: now_secs + expires_in, account_id: None })
}

/// Kommo's `detail` (or `hint`, or `title`) from a problem+json body, for error messages.
pub(super) fn problem_detail(answer: &OutboundResponse) -> String {
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    ["detail", "hint", "title"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP {}", answer.status.as_u16()))
}

impl Kommo {
    pub(super) fn now_secs(&self) -> i64 {
        self.http.clock().now_millis() / 1000
    }

    fn oauth(&self) -> Result<(&str, &Secret), CrmError> {
        match &self.grant {
            Grant::OAuth { client_id, client_secret } => Ok((client_id, client_secret)),
            Grant::LongLived(_) => Err(CrmError::validation(
                "credentials",
                "this connection uses a long-lived token: there is no OAuth flow to run",
            )),
        }
    }

    fn redirect_uri(&self) -> Result<&Url, CrmError> {
        self.shared.redirect_uri.as_ref().ok_or_else(|| {
            CrmError::validation(
                "server.public_url",
                "is needed to build the OAuth redirect URI; set it in the configuration",
            )
        })
    }

    /// One POST to the token endpoint. Never retried by the client: a code is single use, and a
    /// refresh is replayed only by `refresh` itself, deliberately.
    async fn token_request(&self, grant: &str, secret_field: (&str, &Secret)) -> Result<OutboundResponse, CrmError> {
        let (client_id, client_secret) = self.oauth()?;
        let body = json!({
            "client_id": client_id,
            "client_secret": client_secret.expose(),
            "grant_type": grant,
            secret_field.0: secret_field.1.expose(),
            "redirect_uri": self.redirect_uri()?.as_str(),
        });
        let url = Url::parse(&self.base.join("oauth2/access_token"))
            .map_err(|e| CrmError::validation("host", format!("is not a usable URL: {e}")))?;
        let request = OutboundRequest::post(url, RequestBody::json(&body)).retry(RetryMode::Never);
        Ok(self.http.send(&self.ctx, request).await?)
    }

    /// Exchanges the OAuth callback's code for a token pair, stores it, and reads the account
    /// it is for (which must be this connection's). The code is single use: it is sent once.
    pub async fn exchange_code(&self, code: &Secret) -> Result<Connected, CrmError> {
        self.ctx.secrets.remember_session(code);
        let result = async {
            let answer = self.token_request("authorization_code", ("code", code)).await?;
            if !answer.status.is_success() {
                return Err(match answer.status.as_u16() {
                    500..=599 => CrmError::Unavailable(format!("the Kommo token endpoint answered {}", answer.status)),
                    _ => CrmError::AuthFailed(format!(
                        "Kommo refused the authorization code ({}); start the connect flow again",
                        problem_detail(&answer)
                    )),
                });
            }
            let pair = pair_from(&answer, self.now_secs())?;
            self.remember_pair(&pair);
            self.auth.replace(&self.token_key, pair.seal()).await?;
            let account = self.account_after_exchange().await?;
            let subdomain = self.account.split('.').next().unwrap_or_default();
            if !account.subdomain.eq_ignore_ascii_case(subdomain) {
                return Err(CrmError::AuthFailed(format!(
                    "the tokens are for the Kommo account {:?}, not {:?}; connect from the right account",
                    account.subdomain, self.account
                )));
            }
            let pair = TokenPair { account_id: Some(account.id), ..pair };
            self.auth.replace(&self.token_key, pair.seal()).await?;
            Ok(Connected { account_id: account.id, expires_at: pair.expires_at })
        }
        .await;
        result.map_err(|e| self.ctx.secrets.redact_error(e))
    }

    /// The account the new tokens are for. The code is spent by now, so an exchange that fails
    /// here could not be retried: a transient failure (a rate limit, a timeout) is waited out a
    /// few times, within about half a minute, rather than handed back.
    async fn account_after_exchange(&self) -> Result<super::api::Account, CrmError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.account().await {
                Err(e) if e.is_transient() && attempt < 6 => {
                    let wait = match &e {
                        CrmError::RateLimited { retry_after: Some(wait) } => (*wait).min(Duration::from_secs(5)),
                        _ => Duration::from_secs(1),
                    };
                    tracing::warn!(error = %e, attempt, "reading the Kommo account after the code exchange failed; trying again");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// Refreshes the token pair if it expires within `within`: `Ok(None)` when it does not,
    /// else the new expiry. Concurrent callers (here or on other instances) refresh once.
    pub async fn refresh_if_expiring(&self, within: Duration) -> Result<Option<i64>, CrmError> {
        self.oauth()?;
        let result = async {
            let current = self.auth.current(&self.token_key).await?.ok_or_else(not_connected)?;
            let pair = TokenPair::open(&current)?;
            let within = i64::try_from(within.as_secs()).unwrap_or(i64::MAX);
            if pair.expires_at - self.now_secs() > within {
                return Ok(None);
            }
            let fresh = self.auth.renew(&self.token_key, Some(&current), || self.refresh_stored()).await?;
            Ok(Some(TokenPair::open(&fresh)?.expires_at))
        }
        .await;
        result.map_err(|e| self.ctx.secrets.redact_error(e))
    }

    /// The stored pair, if the connection was ever connected (for status pages and tests).
    pub async fn stored_expiry(&self) -> Result<Option<i64>, CrmError> {
        match self.auth.current(&self.token_key).await? {
            Some(secret) => Ok(Some(TokenPair::open(&secret)?.expires_at)),
            None => Ok(None),
        }
    }

    /// The refresh `SharedAuth::renew` runs under the lock: the stored pair is the stale one.
    async fn refresh_stored(&self) -> Result<Secret, CrmError> {
        let stored =
            self.auth.store().load(&self.token_key.state).await.map_err(|e| CrmError::Unavailable(e.to_string()))?;
        let stale = TokenPair::open(&stored.ok_or_else(not_connected)?)?;
        let fresh = self.refresh(&stale).await?;
        self.remember_pair(&fresh);
        Ok(fresh.seal())
    }

    async fn refresh(&self, stale: &TokenPair) -> Result<TokenPair, CrmError> {
        let old = Secret::new(stale.refresh_token.clone());
        let answer = match self.token_request("refresh_token", ("refresh_token", &old)).await {
            // The request may have reached Kommo and rotated the pair: the old token still
            // works until the new one is used, so sending it once more recovers the pair.
            Err(CrmError::Unavailable(why)) => {
                tracing::warn!(%why, "the answer to a Kommo token refresh was lost; sending the old refresh token once more");
                self.token_request("refresh_token", ("refresh_token", &old)).await?
            }
            Ok(answer) if answer.status.is_server_error() => {
                tracing::warn!(
                    status = answer.status.as_u16(),
                    "Kommo's token endpoint failed; sending the old refresh token once more"
                );
                self.token_request("refresh_token", ("refresh_token", &old)).await?
            }
            other => other?,
        };
        match answer.status {
            status if status.is_success() => {
                let pair = pair_from(&answer, self.now_secs())?;
                Ok(TokenPair { account_id: stale.account_id, ..pair })
            }
            StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN => {
                Err(CrmError::AuthFailed(format!(
                    "Kommo refused the refresh token: the access was revoked or has expired ({}); connect again",
                    problem_detail(&answer)
                )))
            }
            status if status.is_server_error() => {
                Err(CrmError::Unavailable(format!("the Kommo token endpoint answered {status}")))
            }
            status => Err(CrmError::Remote { code: status.as_u16().to_string(), message: problem_detail(&answer) }),
        }
    }

    fn remember_pair(&self, pair: &TokenPair) {
        self.ctx.secrets.remember_session(&Secret::new(pair.access_token.clone()));
        self.ctx.secrets.remember_session(&Secret::new(pair.refresh_token.clone()));
    }

    /// Runs `send` with a bearer token: the long-lived one, or the current access token
    /// (refreshed first when it is about to expire, and once more if Kommo answers 401).
    pub(super) async fn with_token<S, SF>(&self, send: S) -> Result<OutboundResponse, CrmError>
    where
        S: Fn(Secret) -> SF,
        SF: std::future::Future<Output = Result<OutboundResponse, CrmError>>,
    {
        let refused =
            |answer: &OutboundResponse| (answer.status == StatusCode::UNAUTHORIZED).then(|| problem_detail(answer));
        match &self.grant {
            Grant::LongLived(token) => {
                let answer = send(token.clone()).await?;
                match refused(&answer) {
                    Some(why) => Err(CrmError::AuthFailed(format!(
                        "Kommo refused the long-lived token, which cannot be refreshed ({why}); create a new one"
                    ))),
                    None => Ok(answer),
                }
            }
            Grant::OAuth { .. } => {
                let now = self.now_secs();
                let usable = |secret: &Secret| {
                    TokenPair::open(secret).is_ok_and(|pair| pair.expires_at - EXPIRY_MARGIN_SECS > now)
                };
                self.auth
                    .with_usable_session(
                        &self.token_key,
                        usable,
                        || self.refresh_stored(),
                        |session| {
                            let token = TokenPair::open(&session).map(|pair| {
                                self.remember_pair(&pair);
                                Secret::new(pair.access_token)
                            });
                            let send = &send;
                            async move { send(token?).await }
                        },
                        refused,
                    )
                    .await
            }
        }
    }
}

fn not_connected() -> CrmError {
    CrmError::AuthFailed("this Kommo connection has not been connected yet: run the connect flow".into())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use reqwest::header::HeaderMap;

    use super::*;

    fn answer(body: &str) -> OutboundResponse {
        OutboundResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
            url: Url::parse("https://demo.kommo.com/oauth2/access_token").unwrap(),
        }
    }

    #[test]
    fn a_complete_answer_becomes_a_pair() {
        let pair = pair_from(
            &answer(r#"{"token_type":"Bearer","expires_in":86400,"access_token":"a.b.c","refresh_token":"r1","server_time":1}"#),
            1000,
        )
        .unwrap();
        assert_eq!(
            pair,
            TokenPair {
                access_token: "a.b.c".into(),
                refresh_token: "r1".into(),
                expires_at: 87_400,
                account_id: None
            }
        );
    }

    #[test]
    fn incomplete_or_absurd_answers_are_refused() {
        for (body, why) in [
            (r#"{"token_type":"Bearer","expires_in":86400,"refresh_token":"r"}"#, "access_token"),
            (r#"{"token_type":"Bearer","expires_in":86400,"access_token":"a"}"#, "refresh_token"),
            (r#"{"token_type":"Bearer","expires_in":86400,"access_token":"a","refresh_token":""}"#, "refresh_token"),
            (r#"{"token_type":"Bearer","access_token":"a","refresh_token":"r"}"#, "expires_in"),
            (r#"{"token_type":"Bearer","expires_in":-5,"access_token":"a","refresh_token":"r"}"#, "expires_in -5"),
            (r#"{"token_type":"Bearer","expires_in":0,"access_token":"a","refresh_token":"r"}"#, "expires_in 0"),
            (
                r#"{"token_type":"Bearer","expires_in":99999999999,"access_token":"a","refresh_token":"r"}"#,
                "expires_in 99999999999",
            ),
            (r#"{"token_type":"Bearer","expires_in":"soon","access_token":"a","refresh_token":"r"}"#, "expires_in"),
            (r#"{"token_type":"MAC","expires_in":86400,"access_token":"a","refresh_token":"r"}"#, "MAC"),
            ("<html>oops</html>", "not a token"),
        ] {
            match pair_from(&answer(body), 0) {
                Err(CrmError::Protocol(message)) => assert!(message.contains(why), "{body}: {message}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
