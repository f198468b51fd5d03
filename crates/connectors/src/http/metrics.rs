//! Prometheus series for outbound calls, registered by the application.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub connector: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabels {
    pub connector: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartLabels {
    pub connector: String,
    pub part: String,
}

#[derive(Debug, Clone)]
pub struct OutboundMetrics {
    requests: Family<OutcomeLabels, Counter>,
    duration: Family<ConnectorLabels, Histogram, fn() -> Histogram>,
    degraded: Family<PartLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.002, 2.0, 14))
}

impl Default for OutboundMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl OutboundMetrics {
    pub fn new() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            degraded: Family::default(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "crmhub_outbound_requests",
            "Outbound HTTP exchanges by connector and outcome",
            self.requests.clone(),
        );
        registry.register(
            "crmhub_outbound_request_duration_seconds",
            "Latency of outbound HTTP exchanges",
            self.duration.clone(),
        );
        registry.register(
            "crmhub_card_parts_missing",
            "Parts of a contact card left out because their lookup failed (other than for permission)",
            self.degraded.clone(),
        );
    }

    /// A card went out without `part` (its company, say) because looking it up failed.
    pub fn card_part_missing(&self, connector: &str, part: &str) {
        self.degraded.get_or_create(&PartLabels { connector: connector.to_owned(), part: part.to_owned() }).inc();
    }

    pub(crate) fn observe(&self, connector: &str, outcome: &str, seconds: f64) {
        self.requests
            .get_or_create(&OutcomeLabels { connector: connector.to_owned(), outcome: outcome.to_owned() })
            .inc();
        self.duration.get_or_create(&ConnectorLabels { connector: connector.to_owned() }).observe(seconds);
    }
}
