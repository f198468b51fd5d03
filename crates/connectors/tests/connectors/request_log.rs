//! A request log the tests can read: every outbound call a connector made, redacted as stored.

use std::sync::Mutex;

use crmhub_core::request_log::{RequestLogEntry, RequestLogSink};

#[derive(Debug, Default)]
pub struct Log(pub Mutex<Vec<RequestLogEntry>>);

impl RequestLogSink for Log {
    fn record(&self, entry: RequestLogEntry) {
        self.0.lock().unwrap().push(entry);
    }
}
