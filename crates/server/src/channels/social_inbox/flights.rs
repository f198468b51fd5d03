//! Identical lookups share one CRM call. The platform fires a search per keystroke pause and
//! several agents open the same conversation, so concurrent searches for one (tenant,
//! connection, term, limit) wait for a single CRM search (single flight), and so do concurrent
//! cards for one (tenant, connection, id, card options). A search's results are then reused for
//! the channel's `search_cache_secs` (0 by default: not at all); a card is never reused once
//! answered, so its activities are always fresh.
//!
//! What is shared is the CRM's answer only: every caller renders its own response (a card
//! with its own message metadata). A failure reaches every caller that waited for it and is
//! not kept: the next caller asks the CRM again. A caller that gives up (its own time limit,
//! a dropped connection) does not fail the others: should it be the one running the call, the
//! next waiter runs it instead.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crmhub_core::crm::{CardOptions, ContactCard, ContactSummary, CrmError};
use crmhub_core::{Clock, ConnectionId, TenantId, UnixMillis};
use tokio::sync::OnceCell;

/// Lookups remembered at most (finished and in flight); beyond it, those no longer usable are
/// dropped, then everything (callers in flight keep their own handle and are not disturbed).
const MAX_ENTRIES: usize = 10_000;

/// (tenant, connection, term, result limit).
pub type SearchKey = (TenantId, ConnectionId, String, usize);
/// (tenant, connection, record id, what the card fetches).
pub type CardKey = (TenantId, ConnectionId, String, CardOptions);

/// The channel's shared lookups.
#[derive(Clone, Default)]
pub struct Lookups {
    pub searches: Flights<SearchKey, Vec<ContactSummary>>,
    pub cards: Flights<CardKey, ContactCard>,
}

/// One lookup: running until its cell is set, then its answer and when it came.
struct Flight<V> {
    outcome: OnceCell<(UnixMillis, Result<Arc<V>, CrmError>)>,
}

impl<V> Flight<V> {
    /// Whether a new caller may join it: still running, or answered successfully less than
    /// `ttl` ago by `clock`.
    fn usable(&self, ttl: Duration, now: UnixMillis) -> bool {
        self.outcome.get().is_none_or(|(at, result)| {
            result.is_ok() && now.saturating_sub(*at) < i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
        })
    }
}

/// Lookups of one kind by key.
pub struct Flights<K, V> {
    entries: Arc<Mutex<HashMap<K, Arc<Flight<V>>>>>,
}

impl<K, V> Clone for Flights<K, V> {
    fn clone(&self) -> Self {
        Self { entries: self.entries.clone() }
    }
}

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Self { entries: Arc::default() }
    }
}

impl<K: Hash + Eq + Clone, V> Flights<K, V> {
    /// The answer for `key`: a running lookup's, an answer younger than `ttl` (by `clock`, so
    /// tests can move time), or `call`'s, which this caller then runs for everyone who joins.
    pub async fn get<F, Fut>(&self, key: K, ttl: Duration, clock: &dyn Clock, call: F) -> Result<Arc<V>, CrmError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, CrmError>>,
    {
        let flight = {
            let now = clock.now_millis();
            let mut entries = self.lock();
            match entries.get(&key).filter(|f| f.usable(ttl, now)) {
                Some(flight) => flight.clone(),
                None => {
                    if entries.len() >= MAX_ENTRIES {
                        entries.retain(|_, f| f.usable(ttl, now));
                        if entries.len() >= MAX_ENTRIES {
                            entries.clear();
                        }
                    }
                    let flight = Arc::new(Flight { outcome: OnceCell::new() });
                    entries.insert(key.clone(), flight.clone());
                    flight
                }
            }
        };
        // `get_or_init`, not `get_or_try_init`: a failure is kept in the cell, so the callers
        // waiting for it get it too instead of each trying the CRM again in turn.
        let (_, result) =
            flight.outcome.get_or_init(|| async { (clock.now_millis(), call().await.map(Arc::new)) }).await;
        if !flight.usable(ttl, clock.now_millis()) {
            // A failure, or an answer not to be reused: whoever comes next asks the CRM.
            let mut entries = self.lock();
            if entries.get(&key).is_some_and(|current| Arc::ptr_eq(current, &flight)) {
                entries.remove(&key);
            }
        }
        result.clone()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Arc<Flight<V>>>> {
        // Nothing can be left half-updated by a panic while the map is held.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crmhub_core::clock::ManualClock;

    use super::*;

    type Searches = Flights<&'static str, String>;

    async fn counted(calls: &AtomicUsize, answer: Result<&str, CrmError>) -> Result<String, CrmError> {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        answer.map(str::to_owned)
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_call_and_its_failure() {
        let (flights, clock, calls) = (Searches::default(), ManualClock::new(0), AtomicUsize::new(0));
        let lookups = (0..10).map(|_| flights.get("red", Duration::ZERO, &clock, || counted(&calls, Ok("Susan"))));
        let answers = futures_util::future::join_all(lookups).await;
        assert!(answers.iter().all(|a| a.as_deref().map(String::as_str) == Ok("Susan")), "{answers:?}");
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1);

        let down = || CrmError::Unavailable("down".into());
        let lookups =
            (0..10).map(|_| flights.get("red", Duration::from_secs(60), &clock, || counted(&calls, Err(down()))));
        let answers = futures_util::future::join_all(lookups).await;
        assert!(answers.iter().all(|a| *a == Err(down())), "{answers:?}");
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1, "the waiters got the failure, they did not retry");
        // Not kept, although the channel caches answers.
        flights.get("red", Duration::from_secs(60), &clock, || counted(&calls, Ok("Susan"))).await.unwrap();
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn answers_are_reused_for_the_ttl_by_the_clock() {
        let (flights, clock, calls) = (Searches::default(), ManualClock::new(0), AtomicUsize::new(0));
        let ttl = Duration::from_secs(5);
        for _ in 0..3 {
            flights.get("red", ttl, &clock, || counted(&calls, Ok("Susan"))).await.unwrap();
        }
        flights.get("frank", ttl, &clock, || counted(&calls, Ok("Frank"))).await.unwrap();
        assert_eq!(calls.swap(0, Ordering::SeqCst), 2, "one call per term");
        clock.advance(Duration::from_millis(4_999));
        flights.get("red", ttl, &clock, || counted(&calls, Ok("Susan"))).await.unwrap();
        assert_eq!(calls.swap(0, Ordering::SeqCst), 0);
        clock.advance(Duration::from_millis(1));
        flights.get("red", ttl, &clock, || counted(&calls, Ok("Susan"))).await.unwrap();
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1, "expired");
    }

    #[tokio::test]
    async fn a_leader_that_gives_up_hands_the_call_to_the_next_waiter() {
        let (flights, clock, calls) = (Searches::default(), ManualClock::new(0), AtomicUsize::new(0));
        let leader = flights.get("red", Duration::ZERO, &clock, || counted(&calls, Ok("Susan")));
        let waiter = flights.get("red", Duration::ZERO, &clock, || counted(&calls, Ok("Susan")));
        let (gave_up, answer) = tokio::join!(tokio::time::timeout(Duration::from_millis(10), leader), waiter);
        assert!(gave_up.is_err(), "the leader timed out");
        assert_eq!(answer.unwrap().as_str(), "Susan", "the waiter ran the call itself");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
