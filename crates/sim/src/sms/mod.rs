//! "SignedSMS": an SMS provider whose send requests carry an MD5 signature in a header.
//!
//! SignedSMS is crmhub's own reference for `send_sms` templates with an `md5` parameter: it has
//! no external contract, so **this comment is its API reference**, the one integration templates
//! are written against.
//!
//! # `POST {base_url}/api/sms/send`
//! Headers:
//! - `X-Api-Key: <api key>`
//! - `X-Timestamp: <Unix seconds>`
//! - `X-Signature: <md5 hex>` where the digest is
//!   `md5(api_secret + to + text + timestamp)` over the UTF-8 bytes of the four strings joined
//!   with no separator: `to` and `text` exactly as they appear (decoded) in the JSON body, and
//!   `timestamp` exactly as sent in `X-Timestamp`. The digest is compared case-insensitively.
//! - `Content-Type: application/json`
//!
//! Body: `{"to":"+84912345678","text":"…","sender"?:"…"}`. Unknown fields are ignored.
//!
//! Success → **200** `{"status":"queued","message_id":"m_<n>"}` (`n` counts from 1).
//!
//! Checks run in this order; the first that fails answers
//! `{"status":"error","code":"<code>","message":"…"}`:
//!
//! | # | check | status | `code` |
//! |---|---|---|---|
//! | 1 | `X-Api-Key` present and known | 401 | `unknown_key` |
//! | 2 | `Content-Type` is `application/json` (parameters allowed) | 415 | `unsupported_media_type` |
//! | 3 | body ≤ 2 MiB | 413 | `payload_too_large` |
//! | 4 | body is a JSON object | 400 | `invalid_json` |
//! | 5 | `X-Signature` matches (a missing one does not) | 401 | `bad_signature` |
//! | 6 | `X-Timestamp` is an integer within ±300 s of the provider's clock | 401 | `stale_timestamp` |
//! | 7 | `to` is E.164: `+`, then 7–15 digits, the first not `0`, nothing else | 422 | `invalid_number` |
//! | 8 | `text` is a string, not empty or only whitespace, at most 1600 characters (Unicode scalar values) | 422 | `invalid_text` |
//! | 9 | `sender`, if present and not `null`/`""`, is a string | 422 | `invalid_sender` |
//!
//! For the signature, a `to` or `text` that is a JSON number counts as its JSON text and any
//! other non-string as `""`, so that a correctly signed but mistyped field is reported by checks
//! 7–8 rather than as a bad signature. A signature is checked before the timestamp, so a
//! forged request learns nothing about the clock.
//!
//! Anything other than `POST /api/sms/send` → **404** `not_found` (**405**
//! `method_not_allowed` for another method on that path), same error shape.
//!
//! ```ignore
//! let sms = crmhub_sim::sms::spawn(SmsSimOptions::default()).await;
//! // POST {sms.send_url()} with X-Api-Key: sms-key, signed with sms-secret …
//! assert_eq!(sms.messages()[0].to, "+84912345678");
//! assert!(sms.rejections().is_empty());
//! ```

mod server;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crmhub_core::clock::{Clock, SystemClock};

use crate::support::{FaultSlot, Served, lock};

/// The key pair that exists from the start.
pub const DEFAULT_API_KEY: &str = "sms-key";
/// [`DEFAULT_API_KEY`]'s secret.
pub const DEFAULT_API_SECRET: &str = "sms-secret";
/// How far `X-Timestamp` may be from the provider's clock unless
/// [`SmsSimOptions::max_clock_skew`] says otherwise.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Longest accepted text, in characters.
pub const MAX_TEXT_CHARS: usize = 1600;

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct SmsSimOptions {
    /// Time source for timestamp checks and receipt times. Default: the system clock.
    pub clock: Arc<dyn Clock>,
    /// Largest accepted difference (either way, whole seconds) between `X-Timestamp` and the
    /// clock. Default [`DEFAULT_MAX_CLOCK_SKEW`].
    pub max_clock_skew: Duration,
}

impl Default for SmsSimOptions {
    fn default() -> Self {
        SmsSimOptions { clock: Arc::new(SystemClock), max_clock_skew: DEFAULT_MAX_CLOCK_SKEW }
    }
}

/// A failure applied to incoming requests, before any check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmsFault {
    /// Requests are handled normally.
    #[default]
    None,
    /// HTTP 500 with `{"status":"error","code":"internal_error",…}`; nothing is sent or recorded.
    Http500,
    /// The request is handled normally after this delay.
    Latency(Duration),
}

/// An accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsMessage {
    /// `m_<n>`.
    pub message_id: String,
    /// The key it was sent with.
    pub api_key: String,
    pub to: String,
    pub text: String,
    pub sender: Option<String>,
    /// `X-Timestamp`.
    pub timestamp: i64,
    /// The provider's clock when it was accepted (Unix seconds).
    pub received_at: i64,
}

/// Why a send request was refused; [`code`](Self::code) is the wire code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    UnknownKey,
    UnsupportedMediaType,
    PayloadTooLarge,
    InvalidJson,
    BadSignature,
    StaleTimestamp,
    InvalidNumber,
    InvalidText,
    InvalidSender,
}

impl RejectReason {
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::UnknownKey => "unknown_key",
            RejectReason::UnsupportedMediaType => "unsupported_media_type",
            RejectReason::PayloadTooLarge => "payload_too_large",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::StaleTimestamp => "stale_timestamp",
            RejectReason::InvalidNumber => "invalid_number",
            RejectReason::InvalidText => "invalid_text",
            RejectReason::InvalidSender => "invalid_sender",
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(self) -> u16 {
        match self {
            RejectReason::UnknownKey | RejectReason::BadSignature | RejectReason::StaleTimestamp => 401,
            RejectReason::UnsupportedMediaType => 415,
            RejectReason::PayloadTooLarge => 413,
            RejectReason::InvalidJson => 400,
            RejectReason::InvalidNumber | RejectReason::InvalidText | RejectReason::InvalidSender => 422,
        }
    }
}

/// A refused send request, with whatever could be read from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsRejection {
    pub reason: RejectReason,
    /// `X-Api-Key`, if sent.
    pub api_key: Option<String>,
    /// `to` and `text`, when the body was a JSON object and they were strings.
    pub to: Option<String>,
    pub text: Option<String>,
    /// `X-Timestamp` as sent.
    pub timestamp: Option<String>,
    /// The provider's clock when it was refused (Unix seconds).
    pub received_at: i64,
}

#[derive(Debug, Default)]
struct State {
    /// api key → secret.
    keys: HashMap<String, String>,
    messages: Vec<SmsMessage>,
    rejections: Vec<SmsRejection>,
    requests: u64,
}

#[derive(Debug)]
struct Inner {
    clock: Arc<dyn Clock>,
    max_clock_skew: Duration,
    state: Mutex<State>,
    faults: FaultSlot<SmsFault>,
}

/// The simulator's shared state: cheap to clone, all clones see the same provider.
#[derive(Debug, Clone)]
pub struct SmsSim {
    inner: Arc<Inner>,
}

impl Default for SmsSim {
    fn default() -> Self {
        Self::new(SmsSimOptions::default())
    }
}

impl SmsSim {
    pub fn new(options: SmsSimOptions) -> Self {
        let mut state = State::default();
        state.keys.insert(DEFAULT_API_KEY.to_owned(), DEFAULT_API_SECRET.to_owned());
        SmsSim {
            inner: Arc::new(Inner {
                clock: options.clock,
                max_clock_skew: options.max_clock_skew,
                state: Mutex::new(state),
                faults: FaultSlot::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    pub fn clock(&self) -> &dyn Clock {
        self.inner.clock.as_ref()
    }

    /// Adds a key pair, or changes an existing key's secret.
    pub fn add_key(&self, api_key: &str, api_secret: &str) {
        self.lock().keys.insert(api_key.to_owned(), api_secret.to_owned());
    }

    /// Accepted messages, oldest first.
    pub fn messages(&self) -> Vec<SmsMessage> {
        self.lock().messages.clone()
    }

    /// Refused send requests, oldest first.
    pub fn rejections(&self) -> Vec<SmsRejection> {
        self.lock().rejections.clone()
    }

    /// Every request received, faulted and unroutable ones included.
    pub fn request_count(&self) -> u64 {
        self.lock().requests
    }

    pub fn message_count(&self) -> usize {
        self.lock().messages.len()
    }

    pub fn rejection_count(&self) -> usize {
        self.lock().rejections.len()
    }

    /// Applies `fault` to every following request until changed or cleared.
    pub fn set_fault(&self, fault: SmsFault) {
        self.inner.faults.set(fault);
    }

    /// Applies `fault` to the next `requests` requests only.
    pub fn set_fault_for(&self, requests: u64, fault: SmsFault) {
        self.inner.faults.set_for(requests, fault);
    }

    pub fn clear_fault(&self) {
        self.inner.faults.set(SmsFault::None);
    }
}

/// The simulator's axum router, serving `/api/sms/send`, for mounting on a listener of one's
/// own (`crmhub demo`).
pub fn router(sim: SmsSim) -> axum::Router {
    server::router(sim)
}

/// A running simulator. Dereferences to [`SmsSim`] for keys, records, counters and faults.
/// Dropping it stops the server.
#[derive(Debug)]
pub struct SmsSimHandle {
    sim: SmsSim,
    served: Served,
}

impl SmsSimHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.served.addr())
    }

    /// `{base_url}/api/sms/send`.
    pub fn send_url(&self) -> String {
        format!("{}/api/sms/send", self.base_url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.served.addr()
    }

    pub fn sim(&self) -> &SmsSim {
        &self.sim
    }

    /// Stops accepting connections and waits (up to 5 s) for open ones to finish.
    pub async fn shutdown(self) {
        self.served.shutdown().await;
    }
}

impl Deref for SmsSimHandle {
    type Target = SmsSim;

    fn deref(&self) -> &SmsSim {
        &self.sim
    }
}

/// Binds `127.0.0.1:0` and serves a new simulator on it.
pub async fn try_spawn(options: SmsSimOptions) -> std::io::Result<SmsSimHandle> {
    let sim = SmsSim::new(options);
    let served = Served::start(router(sim.clone()), "sms").await?;
    Ok(SmsSimHandle { sim, served })
}

/// Binds `127.0.0.1:0` and serves a new simulator on it.
///
/// # Panics
/// If no loopback port can be bound (use [`try_spawn`] to handle that).
pub async fn spawn(options: SmsSimOptions) -> SmsSimHandle {
    match try_spawn(options).await {
        Ok(handle) => handle,
        Err(e) => panic!("sms simulator: cannot bind 127.0.0.1:0: {e}"),
    }
}
