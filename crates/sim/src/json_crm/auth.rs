//! Users and bearer tokens. Every login issues a fresh token and earlier ones keep working until
//! they expire, as with most OAuth-style password grants; expired tokens are remembered so that
//! they are reported as `token_expired` rather than `invalid_token` (clients re-login on the
//! first, and must not on the second).

use std::collections::HashMap;

use crate::support::random_hex;

/// Length of an access token: 48 hex digits (192 random bits).
const TOKEN_LEN: usize = 48;

#[derive(Debug)]
struct Token {
    username: String,
    expires_at_millis: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    Unknown,
    Expired,
}

#[derive(Debug, Default)]
pub(crate) struct Auth {
    /// username → password. User names are case-sensitive.
    users: HashMap<String, String>,
    tokens: HashMap<String, Token>,
}

impl Auth {
    pub(crate) fn add_user(&mut self, username: &str, password: &str) {
        self.users.insert(username.to_owned(), password.to_owned());
    }

    /// A new token for valid credentials, valid until `expires_at_millis` (exclusive).
    pub(crate) fn login(&mut self, username: &str, password: &str, expires_at_millis: i64) -> Option<String> {
        if self.users.get(username).is_none_or(|p| p != password) {
            return None;
        }
        let token = loop {
            let candidate = random_hex(TOKEN_LEN);
            if !self.tokens.contains_key(&candidate) {
                break candidate;
            }
        };
        self.tokens.insert(token.clone(), Token { username: username.to_owned(), expires_at_millis });
        Some(token)
    }

    /// The user a token belongs to, if it is known and not expired at `now_millis`.
    pub(crate) fn user_for(&self, token: &str, now_millis: i64) -> Result<&str, TokenError> {
        let t = self.tokens.get(token).ok_or(TokenError::Unknown)?;
        if now_millis >= t.expires_at_millis {
            return Err(TokenError::Expired);
        }
        Ok(&t.username)
    }

    /// Makes every issued token expire at `now_millis`.
    pub(crate) fn expire_all(&mut self, now_millis: i64) {
        for t in self.tokens.values_mut() {
            t.expires_at_millis = t.expires_at_millis.min(now_millis);
        }
    }

    /// Tokens that are neither expired nor unknown at `now_millis`.
    pub(crate) fn live_tokens(&self, now_millis: i64) -> usize {
        self.tokens.values().filter(|t| now_millis < t.expires_at_millis).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_live_until_their_expiry_and_are_then_expired_not_unknown() {
        let mut auth = Auth::default();
        auth.add_user("api", "pw");
        assert_eq!(auth.login("api", "wrong", 1000), None);
        assert_eq!(auth.login("API", "pw", 1000), None);
        let token = auth.login("api", "pw", 1000).expect("token");
        assert_eq!(token.len(), TOKEN_LEN);
        assert_eq!(auth.user_for(&token, 999), Ok("api"));
        assert_eq!(auth.user_for(&token, 1000), Err(TokenError::Expired));
        assert_eq!(auth.user_for("nope", 0), Err(TokenError::Unknown));
    }

    #[test]
    fn expire_all_only_shortens() {
        let mut auth = Auth::default();
        auth.add_user("api", "pw");
        let token = auth.login("api", "pw", 1000).expect("token");
        assert_eq!(auth.live_tokens(500), 1);
        auth.expire_all(500);
        assert_eq!(auth.user_for(&token, 500), Err(TokenError::Expired));
        assert_eq!(auth.live_tokens(500), 0);
    }
}
