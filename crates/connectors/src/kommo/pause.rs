//! Pausing a Kommo host after an IP block. Kommo answers 403 to every request once it has
//! blocked the caller's IP for repeated limit violations (contract §3); every further request
//! only prolongs the block. So the first 403 pauses all of this process's connections to that
//! host for a configurable time, and tells whoever listens (the server marks the connections'
//! status) — nothing is sent there until the pause is over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmhub_core::UnixMillis;
use tokio::time::Instant;

/// A host Kommo blocked, and until when crmhub leaves it alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBlock {
    pub host: String,
    pub until: UnixMillis,
    pub reason: String,
}

pub type HostBlockListener = Arc<dyn Fn(HostBlock) + Send + Sync>;

#[derive(Clone)]
pub struct HostPauses {
    pause: Duration,
    paused: Arc<Mutex<HashMap<String, Instant>>>,
    listener: Option<HostBlockListener>,
}

impl std::fmt::Debug for HostPauses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPauses").field("pause", &self.pause).finish_non_exhaustive()
    }
}

impl HostPauses {
    pub fn new(pause: Duration) -> Self {
        Self { pause, paused: Arc::default(), listener: None }
    }

    pub fn with_listener(mut self, listener: HostBlockListener) -> Self {
        self.listener = Some(listener);
        self
    }

    pub fn listener(&self) -> Option<HostBlockListener> {
        self.listener.clone()
    }

    pub fn pause(&self) -> Duration {
        self.pause
    }

    /// How long calls to `host` must still wait, if it is paused.
    pub fn remaining(&self, host: &str) -> Option<Duration> {
        let mut paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        let until = *paused.get(host)?;
        let now = Instant::now();
        if until <= now {
            paused.remove(host);
            return None;
        }
        Some(until - now)
    }

    /// Pauses `host` (unless it already is) and tells the listener. Returns the pause left.
    pub fn block(&self, host: &str, now: UnixMillis, detail: &str) -> Duration {
        if let Some(left) = self.remaining(host) {
            return left;
        }
        self.paused.lock().unwrap_or_else(|p| p.into_inner()).insert(host.to_owned(), Instant::now() + self.pause);
        let until = now.saturating_add(i64::try_from(self.pause.as_millis()).unwrap_or(i64::MAX));
        let reason = format!(
            "Kommo refused every request from this server (HTTP 403, an IP block: {detail}); calls to {host} are paused for {} s",
            self.pause.as_secs()
        );
        tracing::warn!(host, pause_secs = self.pause.as_secs(), "Kommo blocked this server's IP; pausing the host");
        if let Some(listener) = &self.listener {
            listener(HostBlock { host: host.to_owned(), until, reason });
        }
        self.pause
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_block_pauses_the_host_once_and_ends_by_itself() {
        let told = Arc::new(AtomicUsize::new(0));
        let counter = told.clone();
        let pauses = HostPauses::new(Duration::from_secs(60)).with_listener(Arc::new(move |block: HostBlock| {
            assert_eq!(block.host, "demo.kommo.com");
            assert_eq!(block.until, 1_000 + 60_000);
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(pauses.remaining("demo.kommo.com"), None);
        pauses.block("demo.kommo.com", 1_000, "blocked");
        pauses.block("demo.kommo.com", 2_000, "blocked again");
        assert_eq!(told.load(Ordering::SeqCst), 1, "one pause, one notice");
        assert!(pauses.remaining("demo.kommo.com").is_some());
        assert_eq!(pauses.remaining("other.kommo.com"), None, "other hosts go on");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(pauses.remaining("demo.kommo.com"), None);
    }
}
