//! Fault injection: what the next requests to `webservice.php` suffer before (or instead of)
//! being handled. Faults model the failures a gateway meets in the field (a PHP fatal error, a slow
//! host, a proxy cutting the connection), so they apply to every operation alike, except
//! [`Fault::HoldReplyAfter`], which models a write whose answer was lost and so names the
//! operation it hits.

use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A failure applied to incoming requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Requests are handled normally.
    #[default]
    None,
    /// HTTP 500, `text/html`, empty body: what PHP fatal errors look like.
    Http500Empty,
    /// The request is handled normally after this delay. A client that gives up first closes
    /// the connection, and the request is then never handled (the handler is dropped).
    Latency(Duration),
    /// The connection is aborted without a complete HTTP response.
    DropConnection,
    /// A request for `operation` (case-insensitive, e.g. `"create"`) is handled (whatever it
    /// writes is written) and only then is its reply held for `hold` before it is sent: the
    /// CRM committed, the answer never reached the client (a proxy timing out, a network cut
    /// after the commit). A client that gives up meanwhile never sees the answer, but the
    /// write stays. Requests for other operations are handled normally and do not count
    /// against a bounded fault ([`set_fault_for`](super::VtigerSim::set_fault_for)).
    HoldReplyAfter { operation: &'static str, hold: Duration },
    /// Each request suffers, with probability `percent` %, one of `faults` (picked uniformly),
    /// drawn from a random generator seeded with `seed` when the fault is set, so the same
    /// sequence of requests meets the same faults. A drawn [`Fault::HoldReplyAfter`] for
    /// another operation leaves the request alone. Every request counts against a bounded
    /// fault, faulted or not.
    ///
    /// # Panics
    ///
    /// Setting it panics when `percent` exceeds 100, `faults` is empty, or one of them is
    /// `None` or `Random` itself: a test asking for that is wrong.
    Random { percent: u8, seed: u64, faults: &'static [Fault] },
}

impl Fault {
    /// The variant's name, e.g. `"HoldReplyAfter"`.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::None => "None",
            Fault::Http500Empty => "Http500Empty",
            Fault::Latency(_) => "Latency",
            Fault::DropConnection => "DropConnection",
            Fault::HoldReplyAfter { .. } => "HoldReplyAfter",
            Fault::Random { .. } => "Random",
        }
    }

    fn check(&self) {
        if let Fault::Random { percent, faults, .. } = self {
            assert!(*percent <= 100, "Fault::Random: percent {percent} is over 100");
            assert!(!faults.is_empty(), "Fault::Random: no faults to pick from");
            for fault in *faults {
                assert!(
                    !matches!(fault, Fault::None | Fault::Random { .. }),
                    "Fault::Random: {fault:?} cannot be one of its faults"
                );
            }
        }
    }
}

#[derive(Debug, Default)]
struct Active {
    fault: Fault,
    /// `None`: until cleared. `Some(n)`: for the next `n` requests.
    remaining: Option<u64>,
    /// Seeded from [`Fault::Random`]'s seed when it is set.
    rng: Option<StdRng>,
}

impl Active {
    fn new(fault: Fault, remaining: Option<u64>) -> Self {
        fault.check();
        let rng = match fault {
            Fault::Random { seed, .. } => Some(StdRng::seed_from_u64(seed)),
            _ => None,
        };
        Self { fault, remaining, rng }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    active: Mutex<Active>,
    /// Requests that met a fault since the simulator started, by the fault's name.
    injected: Mutex<BTreeMap<&'static str, u64>>,
}

impl Faults {
    pub(crate) fn set(&self, fault: Fault) {
        *self.lock() = Active::new(fault, None);
    }

    pub(crate) fn set_for(&self, requests: u64, fault: Fault) {
        *self.lock() = if requests == 0 { Active::default() } else { Active::new(fault, Some(requests)) };
    }

    /// The fault for a request being started for `operation` (as the request names it, if it
    /// does), counting it against a bounded fault. Never `Random`: that is resolved here into
    /// the fault drawn, or `None`.
    pub(crate) fn take(&self, operation: Option<&str>) -> Fault {
        let hits = |fault: &Fault| match fault {
            Fault::HoldReplyAfter { operation: wanted, .. } => {
                operation.is_some_and(|op| op.eq_ignore_ascii_case(wanted))
            }
            _ => true,
        };
        let mut active = self.lock();
        if !hits(&active.fault) {
            return Fault::None;
        }
        let fault = match active.fault {
            Fault::Random { percent, faults, .. } => {
                let rng = active.rng.get_or_insert_with(|| StdRng::seed_from_u64(0));
                let drawn = rng.random_range(0..100u8) < percent;
                let pick = rng.random_range(0..faults.len());
                match faults[pick] {
                    fault if drawn && hits(&fault) => fault,
                    _ => Fault::None,
                }
            }
            fault => fault,
        };
        if let Some(left) = active.remaining.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                *active = Active::default();
            }
        }
        drop(active);
        if fault != Fault::None {
            let mut injected = self.injected.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *injected.entry(fault.name()).or_default() += 1;
        }
        fault
    }

    /// Requests that met a fault so far, by the fault's name.
    pub(crate) fn injected(&self) -> BTreeMap<&'static str, u64> {
        self.injected.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Active> {
        // A poisoned lock only means a test panicked while holding it; the data is still usable.
        self.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The response PHP gives for a fatal error (and for unknown operations, JSON bodies, …).
pub(crate) fn http_500_empty() -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/html; charset=UTF-8")], "").into_response()
}

/// A response whose body fails before producing a byte. hyper reacts to a body error by closing
/// the connection mid-response, so the client sees a reset/incomplete message rather than any
/// HTTP status it could mistake for an answer from Vtiger.
pub(crate) fn dropped_connection() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<bytes::Bytes, io::Error>(io::Error::new(io::ErrorKind::ConnectionAborted, "simulated connection drop"))
    });
    let mut response = Response::new(Body::from_stream(stream));
    // A declared length the body never delivers keeps the message incomplete even if hyper
    // flushes the head before polling the body.
    response.headers_mut().insert(header::CONTENT_LENGTH, header::HeaderValue::from_static("64"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_fault_expires_after_n_requests() {
        let f = Faults::default();
        f.set_for(2, Fault::Http500Empty);
        assert_eq!(f.take(Some("getchallenge")), Fault::Http500Empty);
        assert_eq!(f.take(Some("getchallenge")), Fault::Http500Empty);
        assert_eq!(f.take(Some("getchallenge")), Fault::None);
    }

    #[test]
    fn unbounded_fault_stays_until_cleared() {
        let f = Faults::default();
        f.set(Fault::DropConnection);
        for _ in 0..5 {
            assert_eq!(f.take(Some("getchallenge")), Fault::DropConnection);
        }
        f.set(Fault::None);
        assert_eq!(f.take(Some("getchallenge")), Fault::None);
    }

    #[test]
    fn a_held_reply_hits_only_its_operation_and_only_those_count() {
        let f = Faults::default();
        let hold = Fault::HoldReplyAfter { operation: "create", hold: Duration::from_secs(60) };
        f.set_for(2, hold);
        assert_eq!(f.take(Some("query")), Fault::None);
        assert_eq!(f.take(None), Fault::None, "a request naming no operation is not a create");
        assert_eq!(f.take(Some("CREATE")), hold, "operation names are case-insensitive");
        assert_eq!(f.take(Some("retrieve")), Fault::None);
        assert_eq!(f.take(Some("create")), hold);
        assert_eq!(f.take(Some("create")), Fault::None, "two creates held, then none");
        assert_eq!(f.injected(), BTreeMap::from([("HoldReplyAfter", 2)]));
    }

    const MIX: &[Fault] = &[
        Fault::Http500Empty,
        Fault::DropConnection,
        Fault::HoldReplyAfter { operation: "create", hold: Duration::from_secs(1) },
    ];

    fn draws(f: &Faults, n: usize, operation: &str) -> Vec<Fault> {
        (0..n).map(|_| f.take(Some(operation))).collect()
    }

    #[test]
    fn random_faults_are_reproducible_from_their_seed_at_about_their_rate() {
        let f = Faults::default();
        let random = Fault::Random { percent: 20, seed: 7, faults: MIX };
        f.set(random);
        let first = draws(&f, 2000, "create");
        f.set(random);
        assert_eq!(draws(&f, 2000, "create"), first, "the same seed, the same faults");
        f.set(Fault::Random { percent: 20, seed: 8, faults: MIX });
        assert_ne!(draws(&f, 2000, "create"), first, "another seed, other faults");
        let hit = first.iter().filter(|x| **x != Fault::None).count();
        assert!((300..500).contains(&hit), "20 % of 2000: {hit}");
        for fault in MIX {
            assert!(first.contains(fault), "{fault:?} is drawn too");
        }
        assert!(!first.iter().any(|x| matches!(x, Fault::Random { .. })), "resolved, never Random");
        // A held reply drawn for another operation leaves the request alone.
        f.set(random);
        let queries = draws(&f, 2000, "query");
        assert!(!queries.iter().any(|x| matches!(x, Fault::HoldReplyAfter { .. })));
        assert!(queries.iter().filter(|x| **x != Fault::None).count() < hit);
    }

    #[test]
    fn bounded_random_faults_count_every_request() {
        let f = Faults::default();
        f.set_for(10, Fault::Random { percent: 100, seed: 1, faults: &[Fault::Http500Empty] });
        assert_eq!(draws(&f, 10, "query"), vec![Fault::Http500Empty; 10]);
        assert_eq!(f.take(Some("query")), Fault::None);
        f.set(Fault::Random { percent: 0, seed: 1, faults: &[Fault::Http500Empty] });
        assert!(draws(&f, 100, "query").iter().all(|x| *x == Fault::None));
    }

    #[test]
    #[should_panic(expected = "over 100")]
    fn a_rate_over_100_percent_is_refused() {
        Faults::default().set(Fault::Random { percent: 101, seed: 1, faults: MIX });
    }

    #[test]
    #[should_panic(expected = "cannot be one of its faults")]
    fn random_cannot_nest() {
        const NESTED: &[Fault] = &[Fault::Random { percent: 1, seed: 1, faults: &[Fault::Http500Empty] }];
        Faults::default().set_for(3, Fault::Random { percent: 10, seed: 1, faults: NESTED });
    }

    #[test]
    #[should_panic(expected = "no faults")]
    fn random_needs_faults_to_pick_from() {
        Faults::default().set(Fault::Random { percent: 10, seed: 1, faults: &[] });
    }
}
