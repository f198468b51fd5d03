//! Rate budgets shared by every crmhub instance of one installation: a token bucket per key
//! (a CRM account, a remote host) kept where all instances see it. The HTTP client takes
//! tokens from it in small leases, so the shared store is asked once per few requests.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shared rate budget failed: {0}")]
pub struct RateBudgetError(pub String);

/// What a take came to: `granted` tokens (at most the `want` asked for, possibly none), and
/// when none were, how long until one will have refilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetGrant {
    pub granted: u32,
    pub retry_in: Duration,
}

#[async_trait::async_trait]
pub trait SharedRateBudget: Send + Sync + std::fmt::Debug {
    /// Takes up to `want` whole tokens from the bucket `key`, which refills at `per_second`
    /// up to `burst` (a new bucket starts full).
    async fn take(&self, key: &str, per_second: f64, burst: u32, want: u32) -> Result<BudgetGrant, RateBudgetError>;
}
