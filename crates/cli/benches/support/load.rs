//! The benches' closed-loop load generator (shared through `#[path]`): N keep-alive HTTP/1.1
//! connections to one address, each sending its next request when the previous answer is in,
//! for a fixed time and at most a fixed number of requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::wire::read_response;

/// A row's requests: the `n`th turn's (numbered across connections and runs, so that what must
/// not repeat, a call id, does not) as one or more requests sent one after the other.
pub type Requests = Arc<dyn Fn(u64) -> Vec<Arc<[u8]>> + Send + Sync>;

/// Where a row sends what.
#[derive(Clone)]
pub struct Row {
    pub addr: SocketAddr,
    pub requests: Requests,
    /// Turns handed out so far.
    pub turns: Arc<AtomicU64>,
}

impl Row {
    pub fn new(addr: SocketAddr, requests: impl Fn(u64) -> Vec<Arc<[u8]>> + Send + Sync + 'static) -> Self {
        Self { addr, requests: Arc::new(requests), turns: Arc::default() }
    }

    /// The same requests in turn, from every connection.
    pub fn cycling(addr: SocketAddr, requests: Arc<[Arc<[u8]>]>) -> Self {
        Self::new(addr, move |n| vec![requests[n as usize % requests.len()].clone()])
    }
}

/// Limits of one measurement.
#[derive(Clone, Copy)]
pub struct Limits {
    pub duration: Duration,
    /// Requests at most, whatever the speed.
    pub max_requests: i64,
    /// An answer later than this is a time-out; its connection is opened again.
    pub patience: Duration,
}

/// What the connections got.
#[derive(Default)]
pub struct Load {
    /// Latencies of the answers, sorted.
    latencies: Vec<Duration>,
    /// Answers by status.
    statuses: HashMap<u16, usize>,
    pub timeouts: usize,
    pub elapsed: Duration,
}

impl Load {
    pub fn answered(&self) -> usize {
        self.latencies.len()
    }

    pub fn per_second(&self) -> f64 {
        self.answered() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn with_status(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or_default()
    }

    /// Answers with none of these statuses.
    pub fn other_than(&self, expected: &[u16]) -> usize {
        self.statuses.iter().filter(|(s, _)| !expected.contains(s)).map(|(_, n)| n).sum()
    }

    /// The latency at `pct` per cent (`p(99)`).
    pub fn p(&self, pct: usize) -> Duration {
        self.latencies.get(self.latencies.len() * pct / 100).copied().unwrap_or_default()
    }
}

/// Runs `connections` closed-loop clients against `row` within `limits`.
pub async fn closed_loop(row: &Row, connections: usize, limits: Limits) -> anyhow::Result<Load> {
    let budget = Arc::new(AtomicI64::new(limits.max_requests));
    let started = Instant::now();
    let deadline = started + limits.duration;
    let clients: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(client(row.clone(), deadline, limits.patience, budget.clone())))
        .collect();
    let mut load = Load::default();
    for client in clients {
        let mine = client.await.context("load client")??;
        load.latencies.extend(mine.latencies);
        for (status, n) in mine.statuses {
            *load.statuses.entry(status).or_default() += n;
        }
        load.timeouts += mine.timeouts;
    }
    load.elapsed = started.elapsed();
    load.latencies.sort_unstable();
    Ok(load)
}

/// One keep-alive connection taking turns until `deadline` or the budget is spent.
async fn client(row: Row, deadline: Instant, patience: Duration, budget: Arc<AtomicI64>) -> anyhow::Result<Load> {
    let connect = || async move {
        let stream = TcpStream::connect(row.addr).await?;
        stream.set_nodelay(true)?;
        anyhow::Ok(stream)
    };
    let mut stream = connect().await?;
    let mut buf = Vec::with_capacity(4096);
    let mut load = Load { latencies: Vec::with_capacity(16_384), ..Load::default() };
    while Instant::now() < deadline && budget.fetch_sub(1, Ordering::Relaxed) > 0 {
        for request in (row.requests)(row.turns.fetch_add(1, Ordering::Relaxed)) {
            let sent = Instant::now();
            let answered = tokio::time::timeout(patience, async {
                stream.write_all(&request).await?;
                read_response(&mut stream, &mut buf).await
            })
            .await;
            match answered {
                Ok(answer) => {
                    let (status, _) = answer?;
                    load.latencies.push(sent.elapsed());
                    *load.statuses.entry(status).or_default() += 1;
                }
                Err(_) => {
                    load.timeouts += 1;
                    stream = connect().await?;
                }
            }
        }
    }
    Ok(load)
}
