//! Plumbing shared by the simulators: a counted fault slot, seeded random faults, the listener
//! task behind every handle, and the few formatting helpers they need.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Locks a simulator mutex. A poisoned lock only means a test panicked while holding it; the
/// data is still consistent (every mutation completes before the guard drops), so keep serving.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Seeded pseudo-random faults (splitmix64: a failing run can be replayed from its seed, with
/// no dependency on a rand version's seeding API).
#[derive(Debug, Default)]
pub(crate) struct SeededFaults {
    rate: f64,
    state: u64,
}

impl SeededFaults {
    /// Faults for `rate` (0 to 1) of the requests.
    pub(crate) fn new(rate: f64, seed: u64) -> Self {
        Self { rate: rate.clamp(0.0, 1.0), state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// One of `faults` for this request, at the rate; `None` for the others.
    pub(crate) fn draw<F: Copy>(&mut self, faults: &[F]) -> Option<F> {
        if self.rate <= 0.0 || faults.is_empty() {
            return None;
        }
        let roll = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        if roll >= self.rate {
            return None;
        }
        faults.get((self.next() % faults.len() as u64) as usize).copied()
    }
}

#[derive(Debug, Default)]
struct Active<F> {
    fault: F,
    /// `None`: until changed. `Some(n)`: for the next `n` requests.
    remaining: Option<u64>,
}

/// The fault the next requests suffer, either until changed or for a counted number of requests.
#[derive(Debug, Default)]
pub(crate) struct FaultSlot<F>(Mutex<Active<F>>);

impl<F: Copy + Default> FaultSlot<F> {
    pub(crate) fn set(&self, fault: F) {
        *lock(&self.0) = Active { fault, remaining: None };
    }

    pub(crate) fn set_for(&self, requests: u64, fault: F) {
        *lock(&self.0) = if requests == 0 { Active::default() } else { Active { fault, remaining: Some(requests) } };
    }

    /// The fault for the request being started, counting it against a bounded fault.
    pub(crate) fn take(&self) -> F {
        let mut active = lock(&self.0);
        let fault = active.fault;
        if let Some(left) = active.remaining.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                *active = Active::default();
            }
        }
        fault
    }
}

/// A router served on `127.0.0.1:<ephemeral>` until [`shutdown`](Self::shutdown) or drop.
#[derive(Debug)]
pub(crate) struct Served {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Served {
    /// Binds `127.0.0.1:0` and serves `app` on it; `name` labels the log lines.
    pub(crate) async fn start(app: axum::Router, name: &'static str) -> std::io::Result<Served> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, simulator = name, "simulator stopped with an error");
            }
        });
        tracing::info!(%addr, simulator = name, "simulator listening");
        Ok(Served { addr, shutdown: Some(tx), task: Some(task) })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and waits (up to 5 s) for open ones to finish; a connection
    /// still streaming after that (a huge body nobody reads) is cut.
    pub(crate) async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// `len` random lower-case hex digits.
pub(crate) fn random_hex(len: usize) -> String {
    let bytes: Vec<u8> = (0..len.div_ceil(2)).map(|_| rand::random::<u8>()).collect();
    let mut s = hex::encode(bytes);
    s.truncate(len);
    s
}

/// Formats Unix seconds as RFC 3339 in UTC, `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn rfc3339_utc(unix_secs: i64) -> String {
    let (y, m, d) = civil_from_days(unix_secs.div_euclid(86_400));
    let s = unix_secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, (s % 3600) / 60, s % 60)
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (year, month, day). Done by
/// hand rather than pulling a date crate into the workspace for one formatter.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    enum F {
        #[default]
        Off,
        On,
    }

    #[test]
    fn bounded_fault_expires_after_n_requests() {
        let slot = FaultSlot::default();
        slot.set_for(2, F::On);
        assert_eq!(slot.take(), F::On);
        assert_eq!(slot.take(), F::On);
        assert_eq!(slot.take(), F::Off);
        slot.set_for(0, F::On);
        assert_eq!(slot.take(), F::Off);
    }

    #[test]
    fn unbounded_fault_stays_until_changed() {
        let slot = FaultSlot::default();
        slot.set(F::On);
        for _ in 0..5 {
            assert_eq!(slot.take(), F::On);
        }
        slot.set(F::Off);
        assert_eq!(slot.take(), F::Off);
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(951_825_600), "2000-02-29T12:00:00Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn random_hex_has_the_asked_length() {
        assert_eq!(random_hex(7).len(), 7);
        assert!(random_hex(48).chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn seeded_faults_come_at_their_rate_and_replay_from_their_seed() {
        let draws = |rate: f64, seed: u64| {
            let mut faults = SeededFaults::new(rate, seed);
            (0..10_000).map(|_| faults.draw(&['a', 'b', 'c'])).collect::<Vec<_>>()
        };
        assert!(draws(0.0, 1).iter().all(Option::is_none));
        assert!(draws(1.0, 1).iter().all(Option::is_some));
        let fifth = draws(0.2, 7);
        let hits = fifth.iter().flatten().count();
        assert!((1_800..2_200).contains(&hits), "{hits} of 10,000 at 20 %");
        assert!(['a', 'b', 'c'].iter().all(|f| fifth.contains(&Some(*f))), "every fault comes up");
        assert_eq!(fifth, draws(0.2, 7), "the same seed, the same run");
        assert_ne!(fifth, draws(0.2, 8));
    }
}
