//! One outbound call as it is kept in a connection's request log: already redacted and
//! truncated by the HTTP client before it leaves the connector.

use serde::Serialize;

use crate::{ConnectionId, TenantId, UnixMillis};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestLogEntry {
    pub tenant_id: TenantId,
    pub connection_id: ConnectionId,
    pub at: UnixMillis,
    pub method: String,
    /// The URL with secret-bearing query parameters replaced by `[redacted]`.
    pub url: String,
    pub status: Option<u16>,
    pub latency_ms: i64,
    /// `ok`, `http_error`, `timeout`, `blocked`, `too_large`, `transport_error`, …
    pub outcome: String,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

/// Receives request-log entries from the HTTP client. Implementations must not block the
/// caller (the client records from the request path).
pub trait RequestLogSink: Send + Sync + std::fmt::Debug {
    fn record(&self, entry: RequestLogEntry);
}

/// A sink that keeps nothing, for code paths without a tenant connection (template checks).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardRequestLog;

impl RequestLogSink for DiscardRequestLog {
    fn record(&self, _entry: RequestLogEntry) {}
}
