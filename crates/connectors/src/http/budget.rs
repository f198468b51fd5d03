//! Rate budgets: token buckets per connection and per remote host, each with two lanes.
//! Interactive calls (an agent waiting for a card) go ahead of background work (a backfill):
//! while an interactive caller waits for a token, background callers do not take one.
//!
//! What holds where: the buckets here hold per process. On PostgreSQL (several instances of
//! one installation) the HTTP client also takes every token from a bucket in the database
//! (`SharedRateBudget`), leased a few at a time, so a budget holds across instances too; a
//! lease an instance does not use in time is lost, never reused beyond the budget. On SQLite
//! there is one instance per database, and the in-process buckets are the whole budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmhub_core::rate_budget::SharedRateBudget;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    Interactive,
    Background,
}

/// Sustained requests per second and the burst allowed on top.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSpec {
    pub per_second: f64,
    pub burst: u32,
}

impl RateSpec {
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second: per_second.max(0.001), burst: burst.max(1) }
    }
}

#[derive(Debug)]
pub struct TokenBucket {
    spec: RateSpec,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    refilled_at: Instant,
    interactive_waiting: usize,
}

impl TokenBucket {
    pub fn new(spec: RateSpec) -> Self {
        Self {
            spec,
            state: Mutex::new(BucketState {
                tokens: f64::from(spec.burst),
                refilled_at: Instant::now(),
                interactive_waiting: 0,
            }),
        }
    }

    /// Waits until a token is available for `lane` and takes it.
    pub async fn acquire(&self, lane: Lane) {
        let mut waiting = None::<WaitingGuard<'_>>;
        loop {
            let wait = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let elapsed = now.duration_since(state.refilled_at).as_secs_f64();
                state.tokens = (state.tokens + elapsed * self.spec.per_second).min(f64::from(self.spec.burst));
                state.refilled_at = now;
                let others_first = lane == Lane::Background && state.interactive_waiting > 0;
                if state.tokens >= 1.0 && !others_first {
                    state.tokens -= 1.0;
                    return; // `waiting` drops after the lock is released
                }
                if lane == Lane::Interactive && waiting.is_none() {
                    state.interactive_waiting += 1;
                    waiting = Some(WaitingGuard(self));
                }
                let deficit = (1.0 - state.tokens).max(0.0);
                Duration::from_secs_f64(deficit / self.spec.per_second).max(Duration::from_millis(1))
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Withdraws an interactive waiter's claim however its wait ends (token taken or cancelled).
struct WaitingGuard<'a>(&'a TokenBucket);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        state.interactive_waiting = state.interactive_waiting.saturating_sub(1);
    }
}

/// Tokens this process took from a shared bucket and has not spent yet.
#[derive(Debug, Default)]
pub struct SharedLease {
    /// The tokens left, and when they were taken.
    tokens: Mutex<(u32, Option<Instant>)>,
    /// One refill from the shared store at a time per key.
    refill: tokio::sync::Mutex<()>,
}

impl SharedLease {
    /// How many tokens to take at once: about a tenth of a second's worth, at most a quarter
    /// of the burst, at least one.
    fn size(spec: RateSpec) -> u32 {
        let tenth = (spec.per_second / 10.0).ceil() as u32;
        tenth.min(spec.burst / 4).max(1)
    }

    fn spend(&self) -> bool {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.0 > 0 {
            tokens.0 -= 1;
            true
        } else {
            false
        }
    }

    /// Whether dropping the lease loses nothing worth keeping: no tokens left, or tokens taken
    /// so long ago that the shared bucket has refilled many times over.
    fn is_spent(&self) -> bool {
        let (left, taken_at) = *self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        left == 0 || taken_at.is_none_or(|at| at.elapsed() > Duration::from_secs(60))
    }

    /// Waits for a token of the shared bucket `key`. Should the shared store fail, the call
    /// goes ahead under the in-process bucket alone (logged): a database hiccup must not stop
    /// every outbound call.
    pub async fn acquire(&self, shared: &dyn SharedRateBudget, key: &str, spec: RateSpec) {
        loop {
            if self.spend() {
                return;
            }
            let _refill = self.refill.lock().await;
            if self.spend() {
                return;
            }
            match shared.take(key, spec.per_second, spec.burst, Self::size(spec)).await {
                Ok(grant) if grant.granted > 0 => {
                    *self.tokens.lock().unwrap_or_else(|p| p.into_inner()) = (grant.granted - 1, Some(Instant::now()));
                    return;
                }
                Ok(grant) => {
                    tokio::time::sleep(grant.retry_in.clamp(Duration::from_millis(1), Duration::from_secs(1))).await
                }
                Err(e) => {
                    tracing::warn!(error = %e, key, "shared rate budget unavailable; using this instance's only");
                    return;
                }
            }
        }
    }
}

/// Buckets by key, created on first use.
#[derive(Debug, Default)]
pub struct Budgets {
    buckets: Mutex<HashMap<String, Arc<TokenBucket>>>,
    leases: Mutex<HashMap<String, Arc<SharedLease>>>,
}

impl TokenBucket {
    /// Whether a fresh bucket would behave the same: full again, and nobody waiting. Such a
    /// bucket can be dropped without changing any budget.
    fn is_at_rest(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = state.refilled_at.elapsed().as_secs_f64();
        state.interactive_waiting == 0 && state.tokens + elapsed * self.spec.per_second >= f64::from(self.spec.burst)
    }
}

/// Buckets by key (a connection, a host, a CRM account), created on first use. Keys come from
/// outside — every host ever called, every connection ever made — so a new key first drops the
/// buckets at rest that no call holds: recreated, they would start full anyway.
impl Budgets {
    pub fn lease(&self, key: &str) -> Arc<SharedLease> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if !leases.contains_key(key) {
            leases.retain(|_, lease| Arc::strong_count(lease) > 1 || !lease.is_spent());
        }
        leases.entry(key.to_owned()).or_default().clone()
    }

    pub fn bucket(&self, key: &str, spec: RateSpec) -> Arc<TokenBucket> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match buckets.get(key) {
            Some(bucket) if bucket.spec == spec => bucket.clone(),
            _ => {
                buckets.retain(|_, bucket| Arc::strong_count(bucket) > 1 || !bucket.is_at_rest());
                let bucket = Arc::new(TokenBucket::new(spec));
                buckets.insert(key.to_owned(), bucket.clone());
                bucket
            }
        }
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buckets_at_rest_make_way_for_new_keys() {
        let budgets = Budgets::default();
        let spec = RateSpec::new(1000.0, 2);
        for host in 0..100 {
            budgets.bucket(&format!("host-{host}"), spec).acquire(Lane::Background).await;
            // Refilled within a few milliseconds: at rest before the next key arrives.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        assert!(budgets.kept() <= 2, "{} buckets kept for 100 hosts called once", budgets.kept());

        // A bucket still spending (not refilled) or held by a caller is kept.
        let slow = RateSpec::new(0.01, 1);
        let drained = budgets.bucket("drained", slow);
        drained.acquire(Lane::Background).await;
        drop(drained);
        let held = budgets.bucket("held", spec);
        budgets.bucket("new", spec);
        budgets.bucket("newer", spec);
        assert!(budgets.buckets.lock().unwrap().contains_key("drained"), "its budget is still being enforced");
        assert!(budgets.buckets.lock().unwrap().contains_key("held"));
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_sustained_rate() {
        let bucket = TokenBucket::new(RateSpec::new(10.0, 5));
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            bucket.acquire(Lane::Background).await;
        }
        assert!(start.elapsed() < Duration::from_millis(5), "burst is immediate");
        for _ in 0..10 {
            bucket.acquire(Lane::Background).await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(950) && elapsed <= Duration::from_millis(1100), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn interactive_goes_ahead_of_background() {
        let bucket = Arc::new(TokenBucket::new(RateSpec::new(10.0, 1)));
        bucket.acquire(Lane::Background).await; // empty the bucket
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (bucket, order) = (bucket.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                bucket.acquire(Lane::Background).await;
                order.lock().unwrap().push(format!("bg{i}"));
            }));
        }
        tokio::task::yield_now().await;
        let (b, o) = (bucket.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            b.acquire(Lane::Interactive).await;
            o.lock().unwrap().push("live".to_owned());
        }));
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(order.lock().unwrap()[0], "live", "{:?}", order.lock().unwrap());
    }
}
