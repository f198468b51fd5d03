//! What every handler can reach. Cheap to clone: everything inside is shared.

use std::sync::Arc;

use crmhub_connectors::http::HttpClient;
use crmhub_store::Store;
use tokio::sync::Notify;

use crate::config::Settings;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub http: HttpClient,
    pub metrics: Arc<Metrics>,
    /// Wakes idle workers of this instance when work is enqueued here.
    pub jobs_wake: Arc<Notify>,
}

impl axum::extract::FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}
