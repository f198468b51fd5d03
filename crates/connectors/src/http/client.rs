//! The HTTP client every connector uses.

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use crmhub_core::request_log::{RequestLogEntry, RequestLogSink};
use crmhub_core::{Clock, ConnectionId, Secret, TenantId};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use url::Url;

use super::OutboundPolicy;
use super::address::{AddressPolicy, AddressRefused, PolicyResolver};
use super::budget::{Budgets, Lane, RateSpec, WaitTooLong};
use super::metrics::OutboundMetrics;
use super::redact::Redactor;
use crmhub_core::rate_budget::SharedRateBudget;

/// Who is calling, for budgets, metrics and the request log.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The tenant connection the call belongs to; calls without one (validating a template
    /// before any connection exists) are not logged per connection.
    pub owner: Option<(TenantId, ConnectionId)>,
    /// Metric label: `vtiger`, `kommo`, `template`, …
    pub connector: &'static str,
    pub lane: Lane,
    /// This connection's own budget, when it differs from the policy default (Kommo allows
    /// 7 requests per second, say).
    pub rate: Option<RateSpec>,
    /// Whose budget the calls spend: connections with the same key share one bucket (two
    /// connections to one CRM account must not each get the account's whole limit). The
    /// connector sets it (Vtiger: host and user; a template: its declared account, else the
    /// host); without one, each connection has its own.
    pub budget_key: Option<String>,
    /// Values to mask wherever they appear — in the request log, and in every error that
    /// leaves the connector (credentials, session ids, tokens). Shared by the clones of one
    /// connector's context, so a session learnt on one call is masked on all.
    pub secrets: KnownSecrets,
}

impl CallContext {
    pub fn new(connector: &'static str, lane: Lane) -> Self {
        Self { owner: None, connector, lane, rate: None, budget_key: None, secrets: KnownSecrets::default() }
    }

    pub fn for_connection(mut self, tenant: TenantId, connection: ConnectionId) -> Self {
        self.owner = Some((tenant, connection));
        self
    }

    /// The budget this context's calls spend (see `budget_key`).
    pub fn budget_key(mut self, key: impl Into<String>) -> Self {
        self.budget_key = Some(key.into());
        self
    }

    /// Adds long-lived values (a connection's credentials) to the masked set.
    pub fn redacting(self, values: impl IntoIterator<Item = Secret>) -> Self {
        self.secrets.add_credentials(values);
        self
    }
}

/// How many short-lived values (sessions, tokens) one connector remembers to mask: the current
/// ones and a few before them, which may still appear in a late error.
const REMEMBERED_SESSIONS: usize = 8;

/// The secrets of one connector: its credentials, and the sessions it has used lately.
#[derive(Debug, Clone, Default)]
pub struct KnownSecrets(Arc<std::sync::Mutex<SecretLists>>);

#[derive(Debug, Default)]
struct SecretLists {
    credentials: Vec<Secret>,
    sessions: std::collections::VecDeque<Secret>,
    /// The redactor for these values, built on first use after they change: every call
    /// redacts what it logs, and the values change only at a login.
    redactor: Option<Redactor>,
}

impl KnownSecrets {
    fn lists(&self) -> std::sync::MutexGuard<'_, SecretLists> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_credentials(&self, values: impl IntoIterator<Item = Secret>) {
        let mut lists = self.lists();
        for value in values {
            if !lists.credentials.contains(&value) {
                lists.credentials.push(value);
                lists.redactor = None;
            }
        }
    }

    /// A session or token the connector now uses.
    pub fn remember_session(&self, value: &Secret) {
        let mut lists = self.lists();
        if lists.sessions.contains(value) {
            return;
        }
        if lists.sessions.len() == REMEMBERED_SESSIONS {
            lists.sessions.pop_front();
        }
        lists.sessions.push_back(value.clone());
        lists.redactor = None;
    }

    pub fn redactor(&self) -> Redactor {
        let mut lists = self.lists();
        let SecretLists { credentials, sessions, redactor } = &mut *lists;
        redactor.get_or_insert_with(|| Redactor::new(credentials.iter().chain(sessions.iter()).cloned())).clone()
    }

    /// The error with every known secret masked in its text.
    pub fn redact_error(&self, error: crmhub_core::crm::CrmError) -> crmhub_core::crm::CrmError {
        let redactor = self.redactor();
        error.map_text(|text| redactor.text(text))
    }
}

tokio::task_local! {
    static REQUEST_BUDGET: RequestBudget;
}

/// What one interactive request has waited for rate budget so far, over all its calls.
struct RequestBudget {
    waited: Cell<Duration>,
    calls: Cell<u32>,
}

impl RequestBudget {
    /// How long the next interactive call may wait for budget, of `bound` in all. A request's
    /// first call may wait only half of it: a search is several calls, and one let in at the
    /// back of a full queue would wait out the bound and then be refused its next call, having
    /// spent budget for nothing. The other half is left for the calls that follow. Outside an
    /// [`interactive_request`], each call may wait `bound`.
    fn allowance(bound: Duration) -> Duration {
        REQUEST_BUDGET
            .try_with(|request| {
                let left = bound.saturating_sub(request.waited.get());
                if request.calls.get() == 0 { left.min(bound / 2) } else { left }
            })
            .unwrap_or(bound)
    }

    fn spent(waited: Duration) {
        let _outside_a_request = REQUEST_BUDGET.try_with(|request| {
            request.waited.set(request.waited.get() + waited);
            request.calls.set(request.calls.get() + 1);
        });
    }
}

/// Runs `request` (one request someone is waiting for, such as a social-inbox search) so that
/// all its interactive calls together wait at most `interactive_max_wait` for rate budget,
/// rather than each of them.
pub async fn interactive_request<F: std::future::Future>(request: F) -> F::Output {
    let budget = RequestBudget { waited: Cell::new(Duration::ZERO), calls: Cell::new(0) };
    REQUEST_BUDGET.scope(budget, request).await
}

/// When a failed exchange may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryMode {
    /// Retry idempotent methods (GET, HEAD, PUT, DELETE, OPTIONS); others only when the request
    /// provably never reached the server (connection refused).
    Auto,
    /// The caller knows a repeat is harmless (an upsert, a call carrying its own dedupe key).
    Always,
    Never,
}

#[derive(Debug, Clone)]
pub struct RequestBody {
    pub bytes: Bytes,
    pub content_type: String,
}

impl RequestBody {
    pub fn form<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Self {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
            .finish();
        Self { bytes: Bytes::from(body), content_type: "application/x-www-form-urlencoded".into() }
    }

    pub fn json(value: &serde_json::Value) -> Self {
        Self { bytes: Bytes::from(value.to_string()), content_type: "application/json".into() }
    }
}

#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<RequestBody>,
    pub retry: RetryMode,
    pub timeout: Option<Duration>,
}

impl OutboundRequest {
    pub fn new(method: Method, url: Url) -> Self {
        Self { method, url, headers: HeaderMap::new(), body: None, retry: RetryMode::Auto, timeout: None }
    }

    pub fn get(url: Url) -> Self {
        Self::new(Method::GET, url)
    }

    pub fn post(url: Url, body: RequestBody) -> Self {
        Self::new(Method::POST, url).body(body)
    }

    pub fn body(mut self, body: RequestBody) -> Self {
        self.body = Some(body);
        self
    }

    pub fn header(mut self, name: reqwest::header::HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    pub fn retry(mut self, mode: RetryMode) -> Self {
        self.retry = mode;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn retry_after_sending(&self) -> bool {
        match self.retry {
            RetryMode::Always => true,
            RetryMode::Never => false,
            RetryMode::Auto => {
                matches!(self.method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct OutboundResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The URL that answered, after redirects.
    pub url: Url,
}

impl OutboundResponse {
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (`T` may borrow from it); the error describes the body's shape, never
    /// its contents.
    pub fn json<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, OutboundError> {
        serde_json::from_slice(&self.body).map_err(|e| OutboundError::Decode {
            reason: format!(
                "expected JSON, got {} bytes of {} ({e})",
                self.body.len(),
                self.content_type().unwrap_or("no content type")
            ),
        })
    }
}

/// Why an outbound call produced no usable response. Messages never contain URLs or bodies
/// (they may carry secrets); the request log has the redacted details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("refused by the outbound address policy: {0}")]
    Blocked(AddressRefused),
    #[error("invalid outbound URL: {0}")]
    InvalidUrl(String),
    #[error("the remote did not answer in time")]
    Timeout,
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("the response exceeded the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("more than {limit} redirects")]
    TooManyRedirects { limit: u32 },
    #[error("the remote is rate limiting us{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("transport error: {0}")]
    Transport(String),
    #[error("unexpected response: {reason}")]
    Decode { reason: String },
}

impl OutboundError {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Blocked(_) => "blocked",
            Self::InvalidUrl(_) => "invalid_url",
            Self::Timeout => "timeout",
            Self::Connect(_) => "connect_error",
            Self::TooLarge { .. } => "too_large",
            Self::TooManyRedirects { .. } => "too_many_redirects",
            Self::RateLimited { .. } => "rate_limited",
            Self::Transport(_) => "transport_error",
            Self::Decode { .. } => "decode_error",
        }
    }
}

#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    policy: Arc<OutboundPolicy>,
    address: Arc<AddressPolicy>,
    budgets: Arc<Budgets>,
    /// Where budgets are shared with the installation's other instances (PostgreSQL).
    shared_budget: Option<Arc<dyn SharedRateBudget>>,
    metrics: OutboundMetrics,
    log: Arc<dyn RequestLogSink>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl HttpClient {
    pub fn new(
        policy: OutboundPolicy,
        metrics: OutboundMetrics,
        log: Arc<dyn RequestLogSink>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, OutboundError> {
        let address = Arc::new(AddressPolicy::new(policy.allow_private.clone()));
        let inner = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver::new(address.clone())))
            .connect_timeout(policy.connect_timeout)
            .timeout(policy.request_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("crmhub/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OutboundError::Transport(error_chain(&e.without_url())))?;
        Ok(Self {
            inner,
            policy: Arc::new(policy),
            address,
            budgets: Arc::default(),
            shared_budget: None,
            metrics,
            log,
            clock,
        })
    }

    /// Takes every budget token from `shared` too (leased a few at a time), so that budgets
    /// hold across the instances that share it, not only within this process.
    pub fn with_shared_budget(mut self, shared: Arc<dyn SharedRateBudget>) -> Self {
        self.shared_budget = Some(shared);
        self
    }

    pub fn metrics(&self) -> &OutboundMetrics {
        &self.metrics
    }

    /// The clock the client stamps its calls with (tokens' expiries are read on it too).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn policy(&self) -> &OutboundPolicy {
        &self.policy
    }

    /// Sends `request` under the policy: redirects are followed by hand so that every hop is
    /// checked, and safe failures are retried (honouring `Retry-After`).
    pub async fn send(&self, ctx: &CallContext, request: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        let redactor = ctx.secrets.redactor();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let can_retry = attempt <= self.policy.max_retries && request.retry != RetryMode::Never;
            // Someone waiting for an interactive call is told to come back rather than kept
            // waiting out a long `Retry-After`.
            let max_wait = match ctx.lane {
                Lane::Interactive => self.policy.retry_after_max_wait.min(self.policy.interactive_max_wait),
                Lane::Background => self.policy.retry_after_max_wait,
            };
            let result = self.follow_redirects(ctx, &request, &redactor).await;
            let wait = match &result {
                Ok(resp) if resp.status == StatusCode::TOO_MANY_REQUESTS => {
                    // A 429 means the request was turned away unprocessed, so repeating it is
                    // safe whatever the method.
                    let retry_after = retry_after(&resp.headers).or_else(|| retry_after_in_body(resp));
                    let wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
                    if !can_retry || wait > max_wait {
                        return Err(OutboundError::RateLimited { retry_after });
                    }
                    wait
                }
                Ok(resp) if can_retry && request.retry_after_sending() && matches!(resp.status.as_u16(), 502..=504) => {
                    match retry_after(&resp.headers) {
                        Some(wait) if wait > max_wait => return result,
                        Some(wait) => wait,
                        None => self.backoff(attempt),
                    }
                }
                Err(OutboundError::Connect(_)) if can_retry => self.backoff(attempt),
                Err(OutboundError::Timeout) if can_retry && request.retry_after_sending() => self.backoff(attempt),
                _ => return result,
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = 200u64.saturating_mul(1 << attempt.min(6));
        Duration::from_millis(base / 2 + rand::random_range(0..=base / 2))
    }

    async fn follow_redirects(
        &self,
        ctx: &CallContext,
        request: &OutboundRequest,
        redactor: &Redactor,
    ) -> Result<OutboundResponse, OutboundError> {
        let mut method = request.method.clone();
        let mut url = request.url.clone();
        let mut headers = request.headers.clone();
        let mut body = request.body.clone();
        for hop in 0..=self.policy.max_redirects {
            self.check_target(&url)?;
            self.take_budget(ctx, &url).await?;
            let response =
                self.exchange(ctx, &method, &url, &headers, body.as_ref(), request.timeout, redactor).await?;
            let location = response.headers.get(LOCATION).and_then(|l| l.to_str().ok());
            let Some(location) = location.filter(|_| response.status.is_redirection()) else {
                return Ok(response);
            };
            if hop == self.policy.max_redirects {
                break;
            }
            let next = url.join(location).map_err(|e| OutboundError::InvalidUrl(format!("redirect target: {e}")))?;
            if matches!(response.status.as_u16(), 301..=303) && method != Method::HEAD {
                method = Method::GET;
                body = None;
                headers.remove(CONTENT_TYPE);
            }
            if next.origin() != url.origin() {
                // Connectors put credentials in headers of every name (Authorization, API keys,
                // signatures) and in bodies (a login form): none of it may follow the request to
                // another origin, and nothing may continue over plain http once it was https.
                if url.scheme() == "https" && next.scheme() != "https" {
                    return Err(OutboundError::InvalidUrl("redirect from https to http refused".into()));
                }
                if body.is_some() {
                    return Err(OutboundError::InvalidUrl(
                        "redirect to another origin would resend the request body; refused".into(),
                    ));
                }
                headers = HeaderMap::new();
            }
            url = next;
        }
        Err(OutboundError::TooManyRedirects { limit: self.policy.max_redirects })
    }

    /// Scheme and literal-IP checks; names are checked by the resolver at connect time.
    fn check_target(&self, url: &Url) -> Result<(), OutboundError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OutboundError::InvalidUrl(format!("scheme {:?} is not allowed", url.scheme())));
        }
        let ip: Option<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(v4.into()),
            Some(url::Host::Ipv6(v6)) => Some(v6.into()),
            Some(url::Host::Domain(_)) => None,
            None => return Err(OutboundError::InvalidUrl("URL has no host".into())),
        };
        if let Some(ip) = ip {
            let host = url.host_str().unwrap_or_default();
            self.address.check(host, ip).map_err(OutboundError::Blocked)?;
        }
        Ok(())
    }

    /// Waits for the connection's and the host's budgets. An interactive call waits at most
    /// `interactive_max_wait`, and is refused at once when the buckets tell it would wait
    /// longer; background work waits at most the request timeout. Either is told it is rate
    /// limited instead of hanging.
    async fn take_budget(&self, ctx: &CallContext, url: &Url) -> Result<(), OutboundError> {
        let own = match (&ctx.budget_key, ctx.owner) {
            (Some(key), _) => Some(format!("account:{key}")),
            (None, Some((_, connection))) => Some(format!("connection:{connection}")),
            (None, None) => None,
        };
        let own = own.map(|key| (key, ctx.rate.unwrap_or(self.policy.per_connection)));
        let host = (format!("host:{}", url.host_str().unwrap_or_default()), self.policy.per_host);
        let budgets: Vec<(String, RateSpec)> = own.into_iter().chain([host]).collect();
        match ctx.lane {
            Lane::Interactive => self
                .spend_interactive(&budgets)
                .await
                .map_err(|too_long| OutboundError::RateLimited { retry_after: Some(too_long.retry_after) }),
            Lane::Background => {
                let wait = async {
                    for (key, spec) in &budgets {
                        self.budgets.bucket(key, *spec).acquire(Lane::Background).await;
                        if let Some(shared) = &self.shared_budget {
                            // Without a deadline the lease waits; it cannot be cut off.
                            let _ = self.budgets.lease(key).acquire(shared.as_ref(), key, *spec, None).await;
                        }
                    }
                };
                tokio::time::timeout(self.policy.request_timeout, wait)
                    .await
                    .map_err(|_| OutboundError::RateLimited { retry_after: None })
            }
        }
    }

    /// One token of each budget within what the interactive request may still wait (see
    /// [`interactive_request`]): this process's buckets are reserved together (so the wait is
    /// the longest of theirs, not the sum, and a refusal by one gives the others' tokens back),
    /// then the shared ones within what is left.
    async fn spend_interactive(&self, budgets: &[(String, RateSpec)]) -> Result<(), WaitTooLong> {
        let started = tokio::time::Instant::now();
        let allowance = RequestBudget::allowance(self.policy.interactive_max_wait);
        let deadline = started + allowance;
        let buckets: Vec<_> = budgets.iter().map(|(key, spec)| self.budgets.bucket(key, *spec)).collect();
        let reservations = buckets.iter().map(|bucket| bucket.reserve(allowance)).collect::<Result<Vec<_>, _>>()?;
        for reservation in reservations {
            reservation.wait().await;
        }
        if let Some(shared) = &self.shared_budget {
            for (key, spec) in budgets {
                self.budgets.lease(key).acquire(shared.as_ref(), key, *spec, Some(deadline)).await?;
            }
        }
        RequestBudget::spent(started.elapsed());
        Ok(())
    }

    /// One HTTP exchange, measured and logged.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        ctx: &CallContext,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: Option<&RequestBody>,
        timeout: Option<Duration>,
        redactor: &Redactor,
    ) -> Result<OutboundResponse, OutboundError> {
        let at = self.clock.now_millis();
        let started = Instant::now();
        let mut builder = self.inner.request(method.clone(), url.clone()).headers(headers.clone());
        if let Some(timeout) = timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(body) = body {
            builder = builder.header(CONTENT_TYPE, &body.content_type).body(body.bytes.clone());
        }
        let mut status = None;
        let result = async {
            let response = builder.send().await.map_err(classify)?;
            status = Some(response.status());
            read_capped(response, self.policy.max_response_bytes).await
        }
        .await;
        let elapsed = started.elapsed();

        let outcome = match &result {
            Ok(resp) if resp.status.is_success() || resp.status.is_redirection() => "ok",
            Ok(resp) if resp.status.is_client_error() => "http_4xx",
            Ok(_) => "http_5xx",
            Err(e) => e.outcome(),
        };
        self.metrics.observe(ctx.connector, outcome, elapsed.as_secs_f64());
        if let Some((tenant_id, connection_id)) = ctx.owner {
            let limit = self.policy.log_body_bytes;
            self.log.record(RequestLogEntry {
                tenant_id,
                connection_id,
                at,
                method: method.to_string(),
                url: redactor.url(url),
                status: status.map(|s| s.as_u16()),
                latency_ms: i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
                outcome: outcome.to_owned(),
                request_body: body.and_then(|b| redactor.body(&b.bytes, Some(&b.content_type), limit)),
                response_body: result.as_ref().ok().and_then(|r| redactor.body(&r.body, r.content_type(), limit)),
                error: result.as_ref().err().map(|e| redactor.text(&e.to_string())),
            });
        }
        tracing::debug!(connector = ctx.connector, %method, status = ?status.map(|s| s.as_u16()), outcome,
            latency_ms = elapsed.as_millis() as u64, "outbound call");
        result
    }
}

async fn read_capped(mut response: reqwest::Response, limit: u64) -> Result<OutboundResponse, OutboundError> {
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(OutboundError::TooLarge { limit });
    }
    let status = response.status();
    let headers = response.headers().clone();
    let url = response.url().clone();
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(OutboundError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(OutboundResponse { status, headers, body: body.freeze(), url })
}

fn classify(error: reqwest::Error) -> OutboundError {
    let error = error.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<AddressRefused>() {
            return OutboundError::Blocked(refused.clone());
        }
        source = current.source();
    }
    if error.is_timeout() {
        OutboundError::Timeout
    } else if error.is_connect() {
        OutboundError::Connect(error_chain(&error))
    } else {
        OutboundError::Transport(error_chain(&error))
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(current) = source {
        let text = current.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = current.source();
    }
    parts.join(": ")
}

/// `Retry-After` as delay-seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate_to_system_time(value)?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// A JSON body's `retry_after` in seconds, where a 429 carries no header but says it in its
/// body (Kommo's problem+json does, contract §3; its unit is undocumented, read as seconds).
/// A body that is not JSON, or has no such number, says nothing.
fn retry_after_in_body(response: &OutboundResponse) -> Option<Duration> {
    let body: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
    let secs = body.get("retry_after")?.as_u64()?;
    Some(Duration::from_secs(secs.min(24 * 3600)))
}

/// Parses the IMF-fixdate form (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form RFC 9110
/// requires senders to use.
fn httpdate_to_system_time(value: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| m == month)? as i64
        + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else { return None };
    // A remote's header: only plausible dates are computed with.
    if !(1..=31).contains(&day)
        || !(1970..=9999).contains(&year)
        || !(0..24).contains(h)
        || !(0..60).contains(m)
        || !(0..=60).contains(s)
    {
        return None;
    }
    let days = crmhub_core::time::days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(120)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert_eq!(retry_after(&headers), Some(Duration::ZERO), "a past date means now");
        assert_eq!(
            httpdate_to_system_time("Sun, 06 Nov 1994 08:49:37 GMT"),
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(784_111_777))
        );
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
        headers
            .insert(RETRY_AFTER, HeaderValue::from_static("Sun, 99999999999999 Nov 9223372036854775807 08:49:37 GMT"));
        assert_eq!(retry_after(&headers), None, "absurd dates are ignored, not overflowed");
    }
}
