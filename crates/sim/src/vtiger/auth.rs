//! Users, challenge tokens and sessions (contract §2, §3).
//!
//! Faithful points that clients trip over: one live token per user (a new `getchallenge`
//! supersedes the previous token), tokens are not consumed by `login`, every login creates a new
//! session, and sessions never expire on their own.

use std::collections::HashMap;

use md5::{Digest, Md5};

use super::error::{self, WsResult};
use super::json::Out;

pub(crate) const TOKEN_TTL_SECS: i64 = 300;
pub(crate) const ADMIN_USER_ID: u64 = 1;
/// Users and groups share one id sequence; the default install's groups hold ids 2–4.
const FIRST_ADDED_USER_ID: u64 = 5;

#[derive(Debug, Clone)]
pub(crate) struct UserAccount {
    pub(crate) id: u64,
    pub(crate) username: String,
    access_key: String,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    pub(crate) email: String,
    pub(crate) is_admin: bool,
}

impl UserAccount {
    pub(crate) fn ws_id(&self) -> String {
        format!("19x{}", self.id)
    }

    /// The user as a `Users` record (no secrets: the access key is never exposed).
    pub(crate) fn fields(&self) -> HashMap<String, String> {
        let pairs = [
            ("user_name", self.username.as_str()),
            ("is_admin", if self.is_admin { "on" } else { "off" }),
            ("email1", self.email.as_str()),
            ("status", "Active"),
            ("first_name", self.first_name.as_str()),
            ("last_name", self.last_name.as_str()),
            ("roleid", if self.is_admin { "H2" } else { "H3" }),
            ("time_zone", "UTC"),
            ("date_format", "yyyy-mm-dd"),
            ("hour_format", "24"),
        ];
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    }
}

#[derive(Debug)]
struct Challenge {
    token: String,
    expires_at: i64,
}

#[derive(Debug)]
pub(crate) struct Auth {
    users: Vec<UserAccount>,
    next_user_id: u64,
    /// One live token per user id.
    challenges: HashMap<u64, Challenge>,
    /// sessionName → user id.
    sessions: HashMap<String, u64>,
}

impl Auth {
    pub(crate) fn new(admin_access_key: &str) -> Self {
        Auth {
            users: vec![UserAccount {
                id: ADMIN_USER_ID,
                username: "admin".into(),
                access_key: admin_access_key.into(),
                first_name: String::new(),
                last_name: "Administrator".into(),
                email: "admin@example.com".into(),
                is_admin: true,
            }],
            next_user_id: FIRST_ADDED_USER_ID,
            challenges: HashMap::new(),
            sessions: HashMap::new(),
        }
    }

    /// Adds a non-admin user, or replaces the access key of an existing one. Returns `19x<id>`.
    pub(crate) fn add_user(&mut self, username: &str, access_key: &str) -> String {
        if let Some(user) = self.find_mut(username) {
            user.access_key = access_key.into();
            return user.ws_id();
        }
        let user = UserAccount {
            id: self.next_user_id,
            username: username.into(),
            access_key: access_key.into(),
            first_name: username.into(),
            last_name: "User".into(),
            email: format!("{username}@example.com"),
            is_admin: false,
        };
        self.next_user_id += 1;
        let id = user.ws_id();
        self.users.push(user);
        id
    }

    pub(crate) fn users(&self) -> &[UserAccount] {
        &self.users
    }

    pub(crate) fn user_by_id(&self, id: u64) -> Option<&UserAccount> {
        self.users.iter().find(|u| u.id == id)
    }

    /// User names compare case-insensitively, as MySQL's default collation does.
    pub(crate) fn find(&self, username: &str) -> Option<&UserAccount> {
        self.users.iter().find(|u| u.username.eq_ignore_ascii_case(username))
    }

    fn find_mut(&mut self, username: &str) -> Option<&mut UserAccount> {
        self.users.iter_mut().find(|u| u.username.eq_ignore_ascii_case(username))
    }

    pub(crate) fn getchallenge(&mut self, username: Option<&str>, now: i64) -> WsResult<Out> {
        let username = username.ok_or_else(error::no_username)?;
        let user_id = self.find(username).ok_or_else(error::unknown_username)?.id;
        let previous = self.challenges.get(&user_id).map(|c| c.token.clone());
        let token = loop {
            let candidate = new_token(now);
            // A superseded token must stop working, so never hand out the same one twice in a row.
            if previous.as_deref() != Some(candidate.as_str()) {
                break candidate;
            }
        };
        let expires_at = now + TOKEN_TTL_SECS;
        self.challenges.insert(user_id, Challenge { token: token.clone(), expires_at });
        Ok(Out::obj([("token", Out::Str(token)), ("serverTime", Out::Int(now)), ("expireTime", Out::Int(expires_at))]))
    }

    pub(crate) fn login(&mut self, username: Option<&str>, access_key: Option<&str>, now: i64) -> WsResult<Out> {
        // Vtiger looks up the user's active token first: an unknown user has none.
        let user = username.and_then(|u| self.find(u)).ok_or_else(error::invalid_token)?.clone();
        let challenge =
            self.challenges.get(&user.id).filter(|c| c.expires_at >= now).ok_or_else(error::invalid_token)?;
        let expected = hex::encode(Md5::digest(format!("{}{}", challenge.token, user.access_key).as_bytes()));
        // Exact comparison, like PHP's strcmp: an upper-case digest is rejected.
        if access_key != Some(expected.as_str()) {
            return Err(error::invalid_credentials());
        }
        let session_name = loop {
            let candidate = random_hex(21);
            if !self.sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        self.sessions.insert(session_name.clone(), user.id);
        Ok(Out::obj([
            ("username", Out::str(user.username.clone())),
            ("first_name", Out::str(user.first_name.clone())),
            ("last_name", Out::str(user.last_name.clone())),
            ("email", Out::str(user.email.clone())),
            ("time_zone", Out::str("UTC")),
            ("hour_format", Out::str("24")),
            ("date_format", Out::str("yyyy-mm-dd")),
            ("is_admin", Out::str(if user.is_admin { "on" } else { "off" })),
            ("call_duration", Out::str("5")),
            ("other_event_duration", Out::str("5")),
            ("sessionName", Out::Str(session_name)),
            ("userId", Out::Str(user.ws_id())),
            ("version", Out::str("0.22")),
            ("vtigerVersion", Out::str("8.2.0")),
        ]))
    }

    pub(crate) fn session_user(&self, session_name: &str) -> Option<u64> {
        self.sessions.get(session_name).copied()
    }

    pub(crate) fn end_session(&mut self, session_name: &str) -> bool {
        self.sessions.remove(session_name).is_some()
    }

    pub(crate) fn end_all_sessions(&mut self) {
        self.sessions.clear();
    }

    pub(crate) fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Canonical user name for counters, so `ADMIN` and `admin` count as the same user.
    pub(crate) fn canonical_username(&self, username: &str) -> String {
        self.find(username).map(|u| u.username.clone()).unwrap_or_else(|| username.to_owned())
    }
}

/// Shaped like PHP's `uniqid()` (8 hex digits of seconds + 5 of sub-second noise), which is what
/// Vtiger uses. The tail is random rather than microseconds so that tests on a manual clock still
/// get distinct tokens.
fn new_token(now: i64) -> String {
    let secs = u32::try_from(now.rem_euclid(1 << 32)).unwrap_or(0);
    format!("{secs:08x}{}", random_hex(5))
}

pub(crate) fn random_hex(len: usize) -> String {
    let bytes: Vec<u8> = (0..len.div_ceil(2)).map(|_| rand::random::<u8>()).collect();
    let mut s = hex::encode(bytes);
    s.truncate(len);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_session_names_have_the_documented_shape() {
        let token = new_token(1_700_000_000);
        assert_eq!(token.len(), 13);
        assert!(token.starts_with("6553f100"));
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        let session = random_hex(21);
        assert_eq!(session.len(), 21);
    }

    #[test]
    fn added_users_continue_the_shared_sequence() {
        let mut auth = Auth::new("k");
        assert_eq!(auth.add_user("jdoe", "key1"), "19x5");
        assert_eq!(auth.add_user("asmith", "key2"), "19x6");
        assert_eq!(auth.add_user("JDOE", "key3"), "19x5");
    }
}
