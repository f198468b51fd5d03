//! Authorization codes, token pairs and the rotation/grace rule of §1, and long-lived tokens
//! (§2). Times are clock milliseconds.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use crate::support::random_hex;

/// §1: codes live 20 minutes.
pub(crate) const CODE_TTL_MS: i64 = 20 * 60 * 1000;
/// §1: access tokens live 24 h (`expires_in` 86400).
pub(crate) const ACCESS_TTL_SECS: i64 = 86_400;
/// §1: refresh tokens live "3 months"; we read that as 90 days.
pub(crate) const REFRESH_TTL_MS: i64 = 90 * 86_400 * 1000;

/// What goes into an access token's claims.
#[derive(Debug, Clone)]
pub(crate) struct Minter {
    pub(crate) account_id: i64,
    pub(crate) client_id: String,
    pub(crate) user_id: i64,
}

impl Minter {
    /// A JWT-shaped token: three base64url parts, claims incl. `account_id`, `jti`, `exp`. The
    /// signature is random bytes: nobody outside Kommo can verify it, crmhub never needs to.
    pub(crate) fn jwt(&self, now_ms: i64, expires_ms: i64) -> String {
        let header = json!({"typ": "JWT", "alg": "RS256"});
        let now = now_ms.div_euclid(1000);
        let claims = json!({
            "aud": self.client_id, "jti": random_hex(40), "iat": now, "nbf": now,
            "exp": expires_ms.div_euclid(1000), "sub": self.user_id.to_string(), "grant_type": "",
            "account_id": self.account_id, "base_domain": "kommo.com", "version": 2,
            "scopes": ["crm", "files", "files_delete", "notifications", "push_notifications"],
        });
        let signature: Vec<u8> = (0..256).map(|_| rand::random::<u8>()).collect();
        format!(
            "{}.{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes()),
            base64url(&signature)
        )
    }
}

/// Unpadded base64url (RFC 4648 §5), by hand rather than a dependency for one encoder.
pub(crate) fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Kommo's refresh tokens and codes are long opaque strings starting `def50200`.
fn opaque(len: usize) -> String {
    format!("def50200{}", random_hex(len))
}

#[derive(Debug)]
struct Code {
    expires_at: i64,
    used: bool,
}

#[derive(Debug)]
struct Pair {
    access: String,
    access_expires: i64,
    refresh: String,
    refresh_expires: i64,
    /// Whether the pair has been used (its access token on the API, or its refresh token here).
    used: bool,
}

impl Pair {
    fn mint(minter: &Minter, now: i64) -> Pair {
        let access_expires = now + ACCESS_TTL_SECS * 1000;
        Pair {
            access: minter.jwt(now, access_expires),
            access_expires,
            refresh: opaque(560),
            refresh_expires: now + REFRESH_TTL_MS,
            used: false,
        }
    }
}

/// One user's consent: the live pair, and the refresh token it replaced while in grace.
#[derive(Debug)]
struct Grant {
    current: Pair,
    /// The previous refresh token and its expiry: usable until `current` is used (§1 grace).
    previous: Option<(String, i64)>,
}

#[derive(Debug)]
struct LongLived {
    expires_at: i64,
}

/// A freshly issued pair, for the token response.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub(crate) access: String,
    pub(crate) refresh: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeError {
    Unknown,
    Used,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    Unknown,
    Expired,
    Revoked,
}

impl TokenError {
    pub(crate) fn detail(self) -> &'static str {
        match self {
            TokenError::Unknown => "Token is invalid",
            TokenError::Expired => "Token has expired",
            TokenError::Revoked => "Token has been revoked",
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct OAuth {
    codes: HashMap<String, Code>,
    grants: Vec<Grant>,
    long_lived: HashMap<String, LongLived>,
    /// Tokens that once worked and no longer do, so their 401 says "revoked" rather than
    /// "invalid".
    retired: HashSet<String>,
}

impl OAuth {
    pub(crate) fn new_code(&mut self, now: i64) -> String {
        let code = opaque(400);
        self.codes.insert(code.clone(), Code { expires_at: now + CODE_TTL_MS, used: false });
        code
    }

    /// Exchanges a code for a new grant's first pair. A code is single use: a second exchange
    /// fails even if the first one's answer was lost.
    pub(crate) fn exchange(&mut self, code: &str, minter: &Minter, now: i64) -> Result<Issued, CodeError> {
        let entry = self.codes.get_mut(code).ok_or(CodeError::Unknown)?;
        if entry.used {
            return Err(CodeError::Used);
        }
        if now >= entry.expires_at {
            return Err(CodeError::Expired);
        }
        entry.used = true;
        let pair = Pair::mint(minter, now);
        let issued = Issued { access: pair.access.clone(), refresh: pair.refresh.clone() };
        self.grants.push(Grant { current: pair, previous: None });
        Ok(issued)
    }

    /// §1 rotation: every refresh issues a new pair. The refresh token just replaced keeps
    /// working until the new pair is used; using the *current* refresh token counts as using
    /// the pair, so it retires the one before. Re-using the previous token during grace
    /// replaces the still-unused pair (its tokens die: only one pair per grant is live).
    pub(crate) fn refresh(&mut self, token: &str, minter: &Minter, now: i64) -> Result<Issued, TokenError> {
        let mut retired = Vec::new();
        let mut outcome = Err(TokenError::Unknown);
        for grant in &mut self.grants {
            if grant.current.refresh == token {
                if now >= grant.current.refresh_expires {
                    outcome = Err(TokenError::Expired);
                    break;
                }
                let new = Pair::mint(minter, now);
                let old = std::mem::replace(&mut grant.current, new);
                retired.push(old.access);
                if let Some((previous, _)) = grant.previous.replace((old.refresh, old.refresh_expires)) {
                    retired.push(previous);
                }
                outcome = Ok(Issued { access: grant.current.access.clone(), refresh: grant.current.refresh.clone() });
                break;
            }
            if grant.previous.as_ref().is_some_and(|(previous, _)| previous == token) {
                let expires = grant.previous.as_ref().map_or(0, |(_, e)| *e);
                if now >= expires {
                    outcome = Err(TokenError::Expired);
                    break;
                }
                let old = std::mem::replace(&mut grant.current, Pair::mint(minter, now));
                retired.push(old.access);
                retired.push(old.refresh);
                outcome = Ok(Issued { access: grant.current.access.clone(), refresh: grant.current.refresh.clone() });
                break;
            }
        }
        self.retired.extend(retired);
        if matches!(outcome, Err(TokenError::Unknown)) && self.retired.contains(token) {
            return Err(TokenError::Revoked);
        }
        outcome
    }

    /// Checks a bearer token; an access token's first use ends its grant's grace.
    pub(crate) fn authenticate(&mut self, token: &str, now: i64) -> Result<(), TokenError> {
        for grant in &mut self.grants {
            if grant.current.access == token {
                if now >= grant.current.access_expires {
                    return Err(TokenError::Expired);
                }
                grant.current.used = true;
                if let Some((previous, _)) = grant.previous.take() {
                    self.retired.insert(previous);
                }
                return Ok(());
            }
        }
        if let Some(long_lived) = self.long_lived.get(token) {
            return if now >= long_lived.expires_at { Err(TokenError::Expired) } else { Ok(()) };
        }
        Err(if self.retired.contains(token) { TokenError::Revoked } else { TokenError::Unknown })
    }

    pub(crate) fn issue_long_lived(&mut self, minter: &Minter, now: i64, expires_at: i64) -> String {
        let token = minter.jwt(now, expires_at);
        self.long_lived.insert(token.clone(), LongLived { expires_at });
        token
    }

    /// Every token and pending code dies.
    pub(crate) fn revoke_all(&mut self) {
        for grant in self.grants.drain(..) {
            self.retired.insert(grant.current.access);
            self.retired.insert(grant.current.refresh);
            if let Some((previous, _)) = grant.previous {
                self.retired.insert(previous);
            }
        }
        self.retired.extend(self.long_lived.drain().map(|(token, _)| token));
        for code in self.codes.values_mut() {
            code.used = true;
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
