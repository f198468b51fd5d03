//! Periodic housekeeping run by worker instances: request-log and call-map retention.

use std::time::Duration;

use crmhub_store::Store;
use tokio_util::sync::CancellationToken;

use crate::config::{CallMapSettings, RequestLogSettings};

const EVERY: Duration = Duration::from_secs(600);

pub async fn run(store: Store, settings: RequestLogSettings, call_maps: CallMapSettings, stop: CancellationToken) {
    loop {
        let cutoff = store.clock().now_millis() - i64::from(call_maps.retention_days) * 86_400_000;
        match store.prune_call_maps(cutoff).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "call maps pruned"),
            Err(e) => tracing::warn!(error = %e, "call map pruning failed"),
        }
        let cutoff = store.clock().now_millis() - i64::from(settings.retention_days) * 86_400_000;
        match store.prune_request_log(cutoff, settings.max_entries_per_connection).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "request log pruned"),
            Err(e) => tracing::warn!(error = %e, "request log pruning failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}
