//! Rate budgets: token buckets per connection and per remote host, each with two lanes.
//!
//! Interactive calls (an agent waiting for a card) reserve their token: the bucket may go into
//! debt for them, each reservation is served in turn at the bucket's rate, and so the bucket
//! knows up front how long a caller would wait ([`TokenBucket::reserve`]), which lets a caller
//! that may not wait long be told to come back instead of queueing. Background work (a
//! backfill) reserves nothing: it takes a token only when the bucket holds more than
//! [`TokenBucket::interactive_reserve`] of them, so it never spends tokens an interactive
//! caller reserved, and a backlog of jobs leaves the last quarter of the burst to agents.
//!
//! What holds where: the buckets here hold per process. On PostgreSQL (several instances of
//! one installation) the HTTP client also takes every token from a bucket in the database
//! (`SharedRateBudget`), leased a few at a time, so a budget holds across instances too; a
//! lease an instance does not use in time is lost, never reused beyond the budget. On SQLite
//! there is one instance per database, and the in-process buckets are the whole budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
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

/// A caller would wait longer for a token than it may; `retry_after` is how long it would have
/// waited, the earliest a retry can be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTooLong {
    pub retry_after: Duration,
}

#[derive(Debug)]
pub struct TokenBucket {
    spec: RateSpec,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// Below zero while interactive reservations are outstanding.
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    pub fn new(spec: RateSpec) -> Self {
        Self { spec, state: Mutex::new(BucketState { tokens: f64::from(spec.burst), refilled_at: Instant::now() }) }
    }

    /// Tokens background work leaves for interactive callers: a quarter of the burst (none for a
    /// burst under 4, where background work would otherwise never get a token). Background
    /// work still gets the whole sustained rate when nobody interactive is calling.
    pub fn interactive_reserve(&self) -> f64 {
        f64::from(self.spec.burst / 4)
    }

    /// The state refilled up to now.
    fn refilled(&self) -> MutexGuard<'_, BucketState> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let elapsed = now.duration_since(state.refilled_at).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.spec.per_second).min(f64::from(self.spec.burst));
        state.refilled_at = now;
        state
    }

    /// How long until the bucket holds `level` tokens.
    fn time_to(&self, tokens: f64, level: f64) -> Duration {
        Duration::from_secs_f64(((level - tokens) / self.spec.per_second).max(0.0))
    }

    /// Reserves a token for an interactive caller if it can be had within `max_wait`: the
    /// reservation says when it is ready ([`Reservation::wait`]); dropped unused, it gives
    /// the token back. Refused, nothing is taken and the caller learns how long it would have
    /// waited.
    pub fn reserve(&self, max_wait: Duration) -> Result<Reservation<'_>, WaitTooLong> {
        let mut state = self.refilled();
        let wait = self.time_to(state.tokens, 1.0);
        if wait > max_wait {
            return Err(WaitTooLong { retry_after: wait });
        }
        state.tokens -= 1.0;
        Ok(Reservation { bucket: self, ready_at: state.refilled_at + wait, used: false })
    }

    /// Waits until a token is available for `lane` and takes it.
    pub async fn acquire(&self, lane: Lane) {
        match lane {
            Lane::Interactive => {
                if let Ok(reservation) = self.reserve(Duration::MAX) {
                    reservation.wait().await;
                }
            }
            Lane::Background => loop {
                let wait = {
                    let mut state = self.refilled();
                    // Outstanding reservations hold the bucket below zero, so they are served
                    // before any background call gets a token.
                    let level = 1.0 + self.interactive_reserve();
                    if state.tokens >= level {
                        state.tokens -= 1.0;
                        return;
                    }
                    self.time_to(state.tokens, level).max(Duration::from_millis(1))
                };
                tokio::time::sleep(wait).await;
            },
        }
    }

    /// Whether a fresh bucket would behave the same: full again, so nothing is reserved either.
    /// Such a bucket can be dropped without changing any budget.
    fn is_at_rest(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = state.refilled_at.elapsed().as_secs_f64();
        state.tokens + elapsed * self.spec.per_second >= f64::from(self.spec.burst)
    }
}

/// An interactive caller's token, ready at a known time.
#[derive(Debug)]
#[must_use = "a reservation dropped unused gives its token back"]
pub struct Reservation<'a> {
    bucket: &'a TokenBucket,
    ready_at: Instant,
    used: bool,
}

impl Reservation<'_> {
    /// Waits until the token is due, and spends it.
    pub async fn wait(mut self) {
        // A token due now is spent now: the timer rounds up to its next millisecond tick, so
        // sleeping until a deadline already past would still cost about a millisecond a call.
        if self.ready_at > Instant::now() {
            tokio::time::sleep_until(self.ready_at).await;
        }
        self.used = true;
    }
}

impl Drop for Reservation<'_> {
    /// A caller that gave up (cancelled, or refused by another bucket) returns its token, so
    /// the callers reserved after it are not held back by a call that never happens.
    fn drop(&mut self) {
        if !self.used {
            let mut state = self.bucket.state.lock().unwrap_or_else(|p| p.into_inner());
            state.tokens = (state.tokens + 1.0).min(f64::from(self.bucket.spec.burst));
        }
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

    /// Waits for a token of the shared bucket `key`, giving up at `deadline` when there is one
    /// (an interactive caller that may not wait longer). Should the shared store fail, the call
    /// goes ahead under the in-process bucket alone (logged): a database hiccup must not stop
    /// every outbound call.
    pub async fn acquire(
        &self,
        shared: &dyn SharedRateBudget,
        key: &str,
        spec: RateSpec,
        deadline: Option<Instant>,
    ) -> Result<(), WaitTooLong> {
        // Until the deadline, or forever; what a caller cut off by it is told to wait. The
        // store's refill or answer did not come in time, so about a refill's wait.
        let within = |deadline: Option<Instant>| async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let cut_off = WaitTooLong { retry_after: Duration::from_secs(1) };
        loop {
            if self.spend() {
                return Ok(());
            }
            let _refill = tokio::select! {
                refill = self.refill.lock() => refill,
                () = within(deadline) => return Err(cut_off),
            };
            if self.spend() {
                return Ok(());
            }
            let taken = tokio::select! {
                taken = shared.take(key, spec.per_second, spec.burst, Self::size(spec)) => taken,
                () = within(deadline) => return Err(cut_off),
            };
            match taken {
                Ok(grant) if grant.granted > 0 => {
                    *self.tokens.lock().unwrap_or_else(|p| p.into_inner()) = (grant.granted - 1, Some(Instant::now()));
                    return Ok(());
                }
                Ok(grant) => {
                    let wait = grant.retry_in.clamp(Duration::from_millis(1), Duration::from_secs(1));
                    if deadline.is_some_and(|at| Instant::now() + wait > at) {
                        return Err(WaitTooLong { retry_after: grant.retry_in });
                    }
                    tokio::time::sleep(wait).await
                }
                Err(e) => {
                    tracing::warn!(error = %e, key, "shared rate budget unavailable; using this instance's only");
                    return Ok(());
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
            bucket.acquire(Lane::Interactive).await;
        }
        assert!(start.elapsed() < Duration::from_millis(5), "burst is immediate");
        for _ in 0..10 {
            bucket.acquire(Lane::Interactive).await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(950) && elapsed <= Duration::from_millis(1100), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_tells_the_wait_up_front_and_keeps_it() {
        let bucket = TokenBucket::new(RateSpec::new(10.0, 2));
        let start = Instant::now();
        bucket.reserve(Duration::ZERO).unwrap().wait().await;
        bucket.reserve(Duration::ZERO).unwrap().wait().await;
        // Empty: the next token is 100 ms away, the one after it 200 ms.
        assert_eq!(
            bucket.reserve(Duration::from_millis(99)).unwrap_err(),
            WaitTooLong { retry_after: Duration::from_millis(100) }
        );
        let first = bucket.reserve(Duration::from_millis(100)).unwrap();
        let second = bucket.reserve(Duration::from_millis(200)).unwrap();
        assert!(bucket.reserve(Duration::from_millis(299)).unwrap_err().retry_after >= Duration::from_millis(299));
        first.wait().await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        second.wait().await;
        assert_eq!(start.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_given_up_returns_its_token() {
        let bucket = TokenBucket::new(RateSpec::new(1.0, 1));
        let held = bucket.reserve(Duration::ZERO).unwrap();
        assert!(bucket.reserve(Duration::from_millis(500)).is_err(), "the only token is reserved");
        drop(held);
        let start = Instant::now();
        bucket.reserve(Duration::ZERO).expect("given back").wait().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    /// Jobs that want far more than the budget: `jobs` tasks taking background tokens in a loop.
    fn background_backlog(bucket: &Arc<TokenBucket>, jobs: usize) -> Vec<tokio::task::JoinHandle<()>> {
        (0..jobs)
            .map(|_| {
                let bucket = bucket.clone();
                tokio::spawn(async move {
                    loop {
                        bucket.acquire(Lane::Background).await;
                    }
                })
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_background_backlog_leaves_interactive_calls_their_reserve() {
        let bucket = Arc::new(TokenBucket::new(RateSpec::new(25.0, 50)));
        let jobs = background_backlog(&bucket, 100);
        tokio::time::sleep(Duration::from_secs(10)).await;
        // The jobs spent everything they may: the burst less the interactive reserve, then the
        // sustained rate. A burst of agents' searches still goes through at once.
        for _ in 0..12 {
            bucket.reserve(Duration::ZERO).expect("the reserve is untouched by jobs").wait().await;
        }
        // Past the reserve, an agent waits for one refill, not behind the jobs' backlog.
        let start = Instant::now();
        bucket.reserve(Duration::from_millis(100)).expect("next in line").wait().await;
        assert!(start.elapsed() <= Duration::from_millis(40), "{:?}", start.elapsed());
        jobs.iter().for_each(|job| job.abort());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_reserve_background_work_still_cannot_queue_ahead_of_interactive() {
        // A burst of 1 reserves nothing: the jobs take every token that refills, but an agent's
        // reservation is served at the next refill, before any of the waiting jobs.
        let bucket = Arc::new(TokenBucket::new(RateSpec::new(2.0, 1)));
        let jobs = background_backlog(&bucket, 50);
        tokio::time::sleep(Duration::from_millis(2_250)).await;
        let start = Instant::now();
        for _ in 0..3 {
            bucket.reserve(Duration::from_millis(500)).expect("within one refill").wait().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(1_250), "three refills at 2/s from a quarter in");
        jobs.iter().for_each(|job| job.abort());
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
