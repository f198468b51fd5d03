//! The outbound HTTP policy every connector goes through: timeouts, a response size cap, an
//! address policy, rate budgets with priority lanes, safe retries and a redacted request log.

mod address;
mod budget;
mod client;
mod metrics;
mod redact;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use address::{AddressPolicy, AddressRefused};
pub use budget::{Lane, RateSpec, Reservation, TokenBucket, WaitTooLong};
pub use client::{
    CallContext, HttpClient, KnownSecrets, OutboundError, OutboundRequest, OutboundResponse, RequestBody, RetryMode,
    interactive_request,
};
pub use metrics::OutboundMetrics;
pub use redact::{Redactor, is_sensitive_name};
pub use reqwest::header::{self, HeaderMap, HeaderValue};
pub use reqwest::{Method, StatusCode};

/// The knobs of the policy, filled from the `[outbound]` configuration section.
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    pub connect_timeout: Duration,
    /// Whole exchange, from connecting to the last body byte.
    pub request_timeout: Duration,
    pub max_response_bytes: u64,
    pub max_redirects: u32,
    /// Non-public networks that may be reached anyway.
    pub allow_private: Vec<ipnet::IpNet>,
    /// Extra attempts after the first, where retrying is safe.
    pub max_retries: u32,
    /// A `Retry-After` up to this long is waited out in place; a longer one is returned to the
    /// caller (a job then reschedules itself instead of holding a worker).
    pub retry_after_max_wait: Duration,
    /// The longest an interactive call waits for rate budget (or for a `Retry-After`) before it
    /// is refused as rate limited: someone is waiting for the answer, and being told at once to
    /// come back beats queueing until the request times out. Within an [`interactive_request`]
    /// the bound holds for all the request's calls together.
    pub interactive_max_wait: Duration,
    pub per_host: RateSpec,
    pub per_connection: RateSpec,
    /// How much of each request and response body the request log keeps.
    pub log_body_bytes: usize,
}

impl Default for OutboundPolicy {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 10 * 1024 * 1024,
            max_redirects: 5,
            allow_private: Vec::new(),
            max_retries: 2,
            retry_after_max_wait: Duration::from_secs(10),
            interactive_max_wait: Duration::from_secs(1),
            per_host: RateSpec::new(50.0, 100),
            per_connection: RateSpec::new(25.0, 50),
            log_body_bytes: 2048,
        }
    }
}
