//! Single-flight login. Remote systems such as Vtiger keep one challenge token per user, so
//! two logins for the same user racing each other make one of them fail. Every connector of
//! this process shares one `SharedAuth`: a login for a given remote account runs under an
//! in-process mutex and the store's cross-instance lock, and a caller that waited finds the
//! session the winner stored instead of logging in again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a session unused in this process stays in its memory.
const SESSION_IDLE: Duration = Duration::from_secs(15 * 60);

use crmhub_core::Secret;
use crmhub_core::auth_state::{AuthLock, AuthStateError, AuthStateStore};
use crmhub_core::crm::CrmError;

/// `lock`: who must not log in concurrently (the remote account). `state`: whose session may
/// be shared (the account *and* a hash of its credentials, so that a connection with a wrong
/// key never inherits a session made with the right one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthKey {
    pub lock: String,
    pub state: String,
}

impl AuthKey {
    /// The login lock for one remote account, whichever connector kind speaks to it: a native
    /// and a template connection for the same Vtiger user race the one challenge token Vtiger
    /// keeps per user, so they must serialise on the same key.
    pub fn login_lock(host: &crmhub_core::connection::Host, account: &str) -> String {
        format!("login:{}:{}", host.as_str(), account.trim().to_lowercase())
    }
}

#[derive(Clone)]
pub struct SharedAuth {
    store: Arc<dyn AuthStateStore>,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Sessions in plaintext, for this process, with when each was last used.
    cache: Arc<Mutex<HashMap<String, (Secret, Instant)>>>,
}

impl std::fmt::Debug for SharedAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedAuth").field("store", &self.store).finish_non_exhaustive()
    }
}

fn storage_error(e: AuthStateError) -> CrmError {
    CrmError::Unavailable(e.to_string())
}

impl SharedAuth {
    pub fn new(store: Arc<dyn AuthStateStore>) -> Self {
        Self { store, locks: Arc::default(), cache: Arc::default() }
    }

    /// The durable store behind the shared state, for connectors that keep other small state
    /// there (a template connector's call-id → record-id map).
    pub fn store(&self) -> Arc<dyn AuthStateStore> {
        self.store.clone()
    }

    /// The session to use now, if any: this process's copy, else the shared store's.
    pub async fn current(&self, key: &AuthKey) -> Result<Option<Secret>, CrmError> {
        if let Some(hit) = self.cached(&key.state) {
            return Ok(Some(hit));
        }
        let loaded = self.store.load(&key.state).await.map_err(storage_error)?;
        if let Some(value) = &loaded {
            self.remember(&key.state, value.clone());
        }
        Ok(loaded)
    }

    /// Replaces `stale` (the session that just failed, or `None` when there was none) by
    /// calling `login` — unless another caller, here or on another instance, already did while
    /// we waited for the lock, in which case its session is returned.
    pub async fn renew<F, Fut>(&self, key: &AuthKey, stale: Option<&Secret>, login: F) -> Result<Secret, CrmError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Secret, CrmError>>,
    {
        let local = self.local_lock(&key.lock);
        let _local = local.lock().await;
        let _shared: AuthLock = self.store.lock(&key.lock).await.map_err(storage_error)?;

        if let Some(hit) = self.cached(&key.state).filter(|hit| Some(hit) != stale) {
            return Ok(hit);
        }
        if let Some(stored) = self.store.load(&key.state).await.map_err(storage_error)?.filter(|s| Some(s) != stale) {
            self.remember(&key.state, stored.clone());
            return Ok(stored);
        }
        let fresh = login().await?;
        self.store.save(&key.state, &fresh).await.map_err(storage_error)?;
        self.remember(&key.state, fresh.clone());
        Ok(fresh)
    }

    /// Stores `value` as the session for `key` (a token pair just obtained by a grant only the
    /// caller can make, such as an OAuth code exchange), under the same locks as a renewal, so
    /// that no refresh races it.
    pub async fn replace(&self, key: &AuthKey, value: Secret) -> Result<(), CrmError> {
        let local = self.local_lock(&key.lock);
        let _local = local.lock().await;
        let _shared: AuthLock = self.store.lock(&key.lock).await.map_err(storage_error)?;
        self.store.save(&key.state, &value).await.map_err(storage_error)?;
        self.remember(&key.state, value);
        Ok(())
    }

    /// The session to use now: the current one if `usable` accepts it (a token about to expire
    /// is not), else a renewed one.
    pub async fn session<U, L, LF>(&self, key: &AuthKey, usable: U, login: L) -> Result<Secret, CrmError>
    where
        U: Fn(&Secret) -> bool,
        L: FnOnce() -> LF,
        LF: Future<Output = Result<Secret, CrmError>>,
    {
        match self.current(key).await? {
            Some(current) if usable(&current) => Ok(current),
            Some(stale) => self.renew(key, Some(&stale), login).await,
            None => self.renew(key, None, login).await,
        }
    }

    /// The session loop every connector with a login runs: take the current session (logging
    /// in if there is none), `send` with it, and if `expired` says the remote refused the
    /// session, renew it once (single flight, as `renew`) and replay once. A fresh session
    /// refused too is `AuthFailed`; there is never a third send.
    ///
    /// `expired` reads an answer and says why it means "log in again" (`None`: it does not).
    /// Replaying is only right where a refused session means nothing ran.
    pub async fn with_session<R, L, LF, S, SF, E>(
        &self,
        key: &AuthKey,
        login: L,
        send: S,
        expired: E,
    ) -> Result<R, CrmError>
    where
        L: Fn() -> LF,
        LF: Future<Output = Result<Secret, CrmError>>,
        S: Fn(Secret) -> SF,
        SF: Future<Output = Result<R, CrmError>>,
        E: Fn(&R) -> Option<String>,
    {
        self.with_usable_session(key, |_| true, login, send, expired).await
    }

    /// `with_session`, where a stored session that `usable` refuses (one about to expire) is
    /// renewed before it is sent at all.
    pub async fn with_usable_session<R, U, L, LF, S, SF, E>(
        &self,
        key: &AuthKey,
        usable: U,
        login: L,
        send: S,
        expired: E,
    ) -> Result<R, CrmError>
    where
        U: Fn(&Secret) -> bool,
        L: Fn() -> LF,
        LF: Future<Output = Result<Secret, CrmError>>,
        S: Fn(Secret) -> SF,
        SF: Future<Output = Result<R, CrmError>>,
        E: Fn(&R) -> Option<String>,
    {
        let session = self.session(key, usable, &login).await?;
        let answer = send(session.clone()).await?;
        let Some(why) = expired(&answer) else { return Ok(answer) };
        tracing::debug!(%why, "session refused; logging in again");
        let fresh = self.renew(key, Some(&session), &login).await?;
        let answer = send(fresh).await?;
        match expired(&answer) {
            None => Ok(answer),
            Some(why) => Err(CrmError::AuthFailed(format!("a fresh session was refused too ({why})"))),
        }
    }

    /// The in-process login lock for `key`. Locks nobody holds or waits for are dropped as new
    /// keys arrive, so one per remote account ever logged into does not pile up.
    fn local_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if !locks.contains_key(key) {
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        locks.entry(key.to_owned()).or_default().clone()
    }

    fn cached(&self, key: &str) -> Option<Secret> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get_mut(key).map(|(value, used)| {
            *used = Instant::now();
            value.clone()
        })
    }

    /// Keeps `value` in memory. Sessions unused for `SESSION_IDLE` leave memory (a deleted
    /// connection's, a rotated key's); they stay sealed in the store, which serves them again
    /// if they are still wanted.
    fn remember(&self, key: &str, value: Secret) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, (_, used)| used.elapsed() < SESSION_IDLE);
        cache.insert(key.to_owned(), (value, Instant::now()));
    }

    /// Sessions and locks held in memory (for tests).
    pub fn kept(&self) -> (usize, usize) {
        let sessions = self.cache.lock().unwrap_or_else(|p| p.into_inner()).len();
        (sessions, self.locks.lock().unwrap_or_else(|p| p.into_inner()).len())
    }
}

/// Auth state kept in memory only: for tests, and for tools that run without a database.
#[derive(Debug, Default)]
pub struct MemoryAuthState {
    values: Mutex<HashMap<String, Secret>>,
}

#[async_trait::async_trait]
impl AuthStateStore for MemoryAuthState {
    async fn load(&self, key: &str) -> Result<Option<Secret>, AuthStateError> {
        Ok(self.values.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned())
    }

    async fn save(&self, key: &str, value: &Secret) -> Result<(), AuthStateError> {
        self.values.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_owned(), value.clone());
        Ok(())
    }

    async fn lock(&self, _key: &str) -> Result<AuthLock, AuthStateError> {
        Ok(AuthLock::new(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn key() -> AuthKey {
        AuthKey { lock: "crm:admin".into(), state: "crm:admin:k1".into() }
    }

    #[tokio::test]
    async fn login_locks_and_idle_sessions_do_not_pile_up() {
        let auth = SharedAuth::new(Arc::new(MemoryAuthState::default()));
        for account in 0..50 {
            let key = AuthKey { lock: format!("host-{account}:admin"), state: format!("host-{account}:admin:k") };
            auth.renew(&key, None, || async { Ok(Secret::new(format!("session-{account}"))) }).await.unwrap();
        }
        let (sessions, locks) = auth.kept();
        assert_eq!(locks, 1, "only the lock of the latest login is left");
        assert_eq!(sessions, 50, "sessions in use stay in memory");
        // A session unused for the idle time leaves memory, and comes back from the store.
        for (_, used) in auth.cache.lock().unwrap().values_mut() {
            *used -= SESSION_IDLE;
        }
        let key = AuthKey { lock: "host-x:admin".into(), state: "host-x:admin:k".into() };
        auth.renew(&key, None, || async { Ok(Secret::new("session-x")) }).await.unwrap();
        assert_eq!(auth.kept().0, 1);
        let old = AuthKey { lock: "host-3:admin".into(), state: "host-3:admin:k".into() };
        assert_eq!(auth.current(&old).await.unwrap().unwrap().expose(), "session-3");
    }

    #[tokio::test]
    async fn concurrent_renewals_of_one_stale_session_log_in_once() {
        let auth = SharedAuth::new(Arc::new(MemoryAuthState::default()));
        let logins = Arc::new(AtomicUsize::new(0));
        let first = auth
            .renew(&key(), None, || async {
                logins.fetch_add(1, Ordering::SeqCst);
                Ok(Secret::new("s1"))
            })
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (auth, logins, stale) = (auth.clone(), logins.clone(), first.clone());
            tasks.push(tokio::spawn(async move {
                auth.renew(&key(), Some(&stale), || async move {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    let n = logins.fetch_add(1, Ordering::SeqCst);
                    Ok(Secret::new(format!("s{}", n + 1)))
                })
                .await
                .unwrap()
            }));
        }
        let mut seen = Vec::new();
        for task in tasks {
            seen.push(task.await.unwrap());
        }
        assert_eq!(logins.load(Ordering::SeqCst), 2, "one initial login and one renewal");
        assert!(seen.iter().all(|s| s.expose() == "s2"));
        assert_eq!(auth.current(&key()).await.unwrap().unwrap().expose(), "s2");
    }

    /// A fake remote for the session loop: it refuses the first `expire` sends as expired.
    struct Remote {
        logins: AtomicUsize,
        sends: AtomicUsize,
        expire: usize,
    }

    impl Remote {
        fn new(expire: usize) -> Arc<Self> {
            Arc::new(Self { logins: AtomicUsize::new(0), sends: AtomicUsize::new(0), expire })
        }

        async fn call(&self, auth: &SharedAuth) -> Result<String, CrmError> {
            auth.with_session(
                &key(),
                || async {
                    let n = self.logins.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    Ok(Secret::new(format!("s{}", n + 1)))
                },
                |session| async move {
                    let n = self.sends.fetch_add(1, Ordering::SeqCst);
                    Ok(if n < self.expire { "EXPIRED".to_owned() } else { format!("ok with {}", session.expose()) })
                },
                |answer: &String| (answer == "EXPIRED").then(|| "EXPIRED".to_owned()),
            )
            .await
        }

        fn counts(&self) -> (usize, usize) {
            (self.logins.load(Ordering::SeqCst), self.sends.load(Ordering::SeqCst))
        }
    }

    #[tokio::test]
    async fn with_session_logs_in_when_there_is_no_session_and_reuses_it() {
        let auth = SharedAuth::new(Arc::new(MemoryAuthState::default()));
        let remote = Remote::new(0);
        assert_eq!(remote.call(&auth).await.unwrap(), "ok with s1");
        assert_eq!(remote.call(&auth).await.unwrap(), "ok with s1");
        assert_eq!(remote.counts(), (1, 2), "one login, no replay");
    }

    #[tokio::test]
    async fn with_session_renews_an_expired_session_once_and_replays_once() {
        let auth = SharedAuth::new(Arc::new(MemoryAuthState::default()));
        auth.renew(&key(), None, || async { Ok(Secret::new("s0")) }).await.unwrap();
        let remote = Remote::new(1);
        assert_eq!(remote.call(&auth).await.unwrap(), "ok with s1");
        assert_eq!(remote.counts(), (1, 2), "one renewal, one replay");
    }

    #[tokio::test]
    async fn with_session_gives_up_when_a_fresh_session_is_refused_too() {
        let auth = SharedAuth::new(Arc::new(MemoryAuthState::default()));
        auth.renew(&key(), None, || async { Ok(Secret::new("s0")) }).await.unwrap();
        let remote = Remote::new(usize::MAX);
        let err = remote.call(&auth).await.unwrap_err();
        assert!(matches!(&err, CrmError::AuthFailed(m) if m.contains("EXPIRED")), "{err:?}");
        assert_eq!(remote.counts(), (1, 2), "one renewal, one replay, no loop");
    }

    #[tokio::test]
    async fn with_session_errors_are_not_replayed() {
        let auth = SharedAuth::new(Arc::new(MemoryAuthState::default()));
        let sends = AtomicUsize::new(0);
        let err = auth
            .with_session(
                &key(),
                || async { Ok(Secret::new("s1")) },
                |_| async {
                    sends.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>(CrmError::Unavailable("down".into()))
                },
                |_| Some("never asked".into()),
            )
            .await
            .unwrap_err();
        assert_eq!(err, CrmError::Unavailable("down".into()));
        assert_eq!(sends.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_callers_of_an_expired_session_renew_it_once() {
        let auth = SharedAuth::new(Arc::new(MemoryAuthState::default()));
        auth.renew(&key(), None, || async { Ok(Secret::new("s0")) }).await.unwrap();
        // The remote refuses s0 only: every caller's first send fails, and all of them replay
        // with the one session the first renewal made.
        let logins = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (auth, logins) = (auth.clone(), logins.clone());
            tasks.push(tokio::spawn(async move {
                auth.with_session(
                    &key(),
                    || async {
                        let n = logins.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        Ok(Secret::new(format!("s{}", n + 1)))
                    },
                    |session| async move { Ok(session.expose().to_owned()) },
                    |answer: &String| (answer == "s0").then(|| "s0 is gone".to_owned()),
                )
                .await
                .unwrap()
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), "s1");
        }
        assert_eq!(logins.load(Ordering::SeqCst), 1, "one login for all eight callers");
    }

    #[tokio::test]
    async fn a_failed_login_is_reported_and_not_stored() {
        let auth = SharedAuth::new(Arc::new(MemoryAuthState::default()));
        let err = auth.renew(&key(), None, || async { Err(CrmError::AuthFailed("no".into())) }).await.unwrap_err();
        assert_eq!(err, CrmError::AuthFailed("no".into()));
        assert!(auth.current(&key()).await.unwrap().is_none());
    }
}
