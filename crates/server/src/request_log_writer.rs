//! Moves request-log entries from the HTTP client's hot path to the database in batches. The
//! client never waits: if the writer falls behind, entries are dropped and counted.

use std::sync::Arc;
use std::time::Duration;

use crmhub_core::request_log::{RequestLogEntry, RequestLogSink};
use crmhub_store::Store;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

const CAPACITY: usize = 10_000;
const BATCH: usize = 200;

#[derive(Debug, Clone)]
pub struct ChannelSink {
    tx: mpsc::Sender<RequestLogEntry>,
    metrics: Arc<Metrics>,
}

impl RequestLogSink for ChannelSink {
    fn record(&self, entry: RequestLogEntry) {
        if self.tx.try_send(entry).is_err() {
            self.metrics.request_log_dropped.inc();
        }
    }
}

/// The running writer. `finish` writes what is already queued and stops it; call it only
/// once requests and jobs have finished.
pub struct RequestLogWriter {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl RequestLogWriter {
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.handle.await;
    }
}

pub fn start(store: Store, metrics: Arc<Metrics>) -> (ChannelSink, RequestLogWriter) {
    let (tx, mut rx) = mpsc::channel::<RequestLogEntry>(CAPACITY);
    let stop = CancellationToken::new();
    let writer_stop = stop.clone();
    let writer_metrics = metrics.clone();
    let handle = tokio::spawn(async move {
        let metrics = writer_metrics;
        let stop = writer_stop;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let received = tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => n,
                () = stop.cancelled() => {
                    while let Ok(entry) = rx.try_recv() {
                        batch.push(entry);
                    }
                    write(&store, &metrics, &batch).await;
                    break;
                }
            };
            if received == 0 {
                break;
            }
            // Let a burst accumulate briefly so one transaction carries many entries.
            if batch.len() < BATCH {
                tokio::time::sleep(Duration::from_millis(20)).await;
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(entry) => batch.push(entry),
                        Err(_) => break,
                    }
                }
            }
            write(&store, &metrics, &batch).await;
            batch.clear();
        }
    });
    (ChannelSink { tx, metrics }, RequestLogWriter { stop, handle })
}

/// A batch the store refuses is lost like an entry the full channel refused, and counted the
/// same way.
async fn write(store: &Store, metrics: &Metrics, batch: &[RequestLogEntry]) {
    if let Err(e) = store.append_request_log(batch).await {
        tracing::warn!(error = %e, entries = batch.len(), "could not write the request log");
        metrics.request_log_dropped.inc_by(batch.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use crmhub_core::request_log::RequestLogSink;
    use crmhub_core::{ConnectionId, TenantId};
    use crmhub_store::{DatabaseUrl, MasterKeySource, StoreOptions};

    use super::*;

    fn entry() -> RequestLogEntry {
        RequestLogEntry {
            tenant_id: TenantId::new(),
            connection_id: ConnectionId::new(),
            at: 0,
            method: "GET".into(),
            url: "https://crm.example.com/".into(),
            status: Some(200),
            latency_ms: 1,
            outcome: "ok".into(),
            request_body: None,
            response_body: None,
            error: None,
        }
    }

    #[tokio::test]
    async fn entries_of_a_batch_the_store_refuses_count_as_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions::new(
            DatabaseUrl::sqlite_file(dir.path().join("crmhub.db")),
            MasterKeySource::File(dir.path().join("master.key")),
        );
        let store = Store::open(options).await.unwrap();
        let metrics = Arc::new(Metrics::new());
        let (sink, writer) = start(store.clone(), metrics.clone());
        store.close().await;
        for _ in 0..3 {
            sink.record(entry());
        }
        writer.finish().await;
        assert_eq!(metrics.request_log_dropped.get(), 3);
    }
}
