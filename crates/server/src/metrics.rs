//! Prometheus metrics: HTTP requests by route template and status, latency, outbound calls,
//! jobs, and queue depth (read from the database at scrape time, so every instance reports
//! the same installation-wide figure).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use crmhub_connectors::http::OutboundMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub kind: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallEventLabels {
    /// One of the event types, or `unknown`.
    pub kind: String,
    /// `applied`, `duplicate`, `stale`, or why it was refused (`invalid`, `unsupported`).
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScreenPopLabels {
    /// `crm`, `cache`, `withheld` or `failed`.
    pub source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub status: String,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub outbound: OutboundMetrics,
    pub jobs_processed: Family<JobLabels, Counter>,
    pub queue_depth: Family<QueueLabels, Gauge>,
    pub request_log_dropped: Counter,
    pub call_events: Family<CallEventLabels, Counter>,
    pub screen_pop_duration: Family<ScreenPopLabels, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let outbound = OutboundMetrics::new();
        let jobs_processed = Family::<JobLabels, Counter>::default();
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        let request_log_dropped = Counter::default();
        let call_events = Family::<CallEventLabels, Counter>::default();
        let screen_pop_duration =
            Family::<ScreenPopLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register("crmhub_http_requests", "HTTP requests by route template and status", http_requests.clone());
        registry.register("crmhub_http_request_duration_seconds", "HTTP request latency", http_duration.clone());
        outbound.register(&mut registry);
        registry.register("crmhub_jobs_processed", "Job attempts by kind and outcome", jobs_processed.clone());
        registry.register("crmhub_queue_depth", "Jobs in the queue by status (installation-wide)", queue_depth.clone());
        registry.register(
            "crmhub_request_log_dropped",
            "Request-log entries dropped because the writer fell behind",
            request_log_dropped.clone(),
        );
        registry.register("crmhub_call_events", "Call-centre events by type and outcome", call_events.clone());
        registry.register(
            "crmhub_screen_pop_duration_seconds",
            "Screen-pop lookups by where the answer came from",
            screen_pop_duration.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            outbound,
            jobs_processed,
            queue_depth,
            request_log_dropped,
            call_events,
            screen_pop_duration,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn call_event(&self, kind: &str, outcome: &str) {
        self.call_events.get_or_create(&CallEventLabels { kind: kind.to_owned(), outcome: outcome.to_owned() }).inc();
    }

    pub fn job_finished(&self, kind: &str, outcome: &str) {
        self.jobs_processed.get_or_create(&JobLabels { kind: kind.to_owned(), outcome: outcome.to_owned() }).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The standard methods by name; any other (`curl -X FOO1`) under one label, so that callers
/// cannot add a metric series per invented method.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Records every request under its route template (`/t/{tenant}/social/search`), never the
/// raw path: paths can carry secrets (webhook tokens) and unbounded ids.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method()).to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics.http_requests.get_or_create(&HttpLabels { method: method.clone(), route: route.clone(), status }).inc();
    metrics.http_duration.get_or_create(&RouteLabels { route: route.clone() }).observe(elapsed.as_secs_f64());
    tracing::info!(%method, %route, status, latency_ms = elapsed.as_secs_f64() * 1000.0, "request");
    response
}
