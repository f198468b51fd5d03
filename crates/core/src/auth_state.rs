//! Where connectors keep their login state (a Vtiger session, an OAuth token) so that every
//! crmhub instance shares it, and the lock that makes re-login happen once at a time per remote
//! account across instances.

use crate::Secret;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth state storage failed: {0}")]
pub struct AuthStateError(pub String);

/// Held while one instance logs in; dropping it releases the lock.
pub struct AuthLock(#[allow(dead_code)] Box<dyn Send>);

impl AuthLock {
    pub fn new(guard: impl Send + 'static) -> Self {
        Self(Box::new(guard))
    }
}

impl std::fmt::Debug for AuthLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthLock")
    }
}

/// Shared, durable auth state. Keys are chosen by connectors and include a hash of the
/// credentials, so only holders of the same credentials share a session.
#[async_trait::async_trait]
pub trait AuthStateStore: Send + Sync + std::fmt::Debug {
    async fn load(&self, key: &str) -> Result<Option<Secret>, AuthStateError>;
    /// Stored before the value is used, so a crash cannot leave a session only in memory.
    async fn save(&self, key: &str, value: &Secret) -> Result<(), AuthStateError>;
    /// Exclusive across instances sharing the store, until the returned lock is dropped.
    async fn lock(&self, key: &str) -> Result<AuthLock, AuthStateError>;
}
