//! Background work: what a job kind does (`JobHandler`), what it can reach (`JobContext`), and
//! the workers that run them.

mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crmhub_connectors::Connectors;
use crmhub_connectors::http::Lane;
use crmhub_core::crm::{Crm, CrmError};
use crmhub_core::{Clock, UnixMillis};
use crmhub_store::Store;
use crmhub_store::jobs::{ClaimedJob, backoff_delay};

pub use worker::{DrainReport, WorkerConfig, WorkerPool, drain};

use crate::crm_access::{AccessError, CrmRegistry};
use crate::state::AppState;

/// What one attempt of a job came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Done,
    /// A failure worth retrying after the usual backoff; the attempt counts.
    Retry(String),
    /// The remote asked us to come back later (`Retry-After`); the attempt does not count.
    RetryAt {
        at: UnixMillis,
        reason: String,
    },
    /// No retry can help (bad data, a refused permission): the job is dead now.
    Fail(String),
    /// The connection's credentials were refused: it is marked `needs_reauth`, and this job and
    /// the connection's other jobs wait (uncounted) until it is active again.
    Reauth(String),
    /// A CRM call failed: the worker decides what that means for the job, in one place for
    /// every kind (`JobOutcome::of_crm_error`).
    Crm(CrmError),
}

impl From<CrmError> for JobOutcome {
    fn from(error: CrmError) -> Self {
        Self::Crm(error)
    }
}

impl<E: Into<JobOutcome>> From<Result<(), E>> for JobOutcome {
    fn from(result: Result<(), E>) -> Self {
        result.map_or_else(Into::into, |()| Self::Done)
    }
}

impl JobOutcome {
    /// What a CRM error means for a job: a rate limit with a time to come back is waited out
    /// without counting the attempt (without one, the usual backoff, still uncounted); a
    /// transient failure backs off and counts; refused credentials pause the connection's jobs;
    /// anything else (a refused value, a remote error, an unexpected answer) will not get
    /// better by itself, so the job is dead with the reason.
    /// `attempts`: the job's attempts so far, this one included; `has_connection`: whether the
    /// job names a connection (whose jobs can be paused).
    pub fn of_crm_error(
        error: CrmError,
        attempts: u32,
        has_connection: bool,
        now: UnixMillis,
        config: &WorkerConfig,
    ) -> Self {
        let later = |delay: Duration| now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        match error {
            CrmError::RateLimited { retry_after } => {
                let delay =
                    retry_after.unwrap_or_else(|| backoff_delay(attempts, config.backoff_base, config.backoff_max));
                Self::RetryAt { at: later(delay), reason: CrmError::RateLimited { retry_after }.to_string() }
            }
            error @ CrmError::Unavailable(_) => Self::Retry(error.to_string()),
            error @ CrmError::AuthFailed(_) if has_connection => Self::Reauth(error.to_string()),
            error => Self::Fail(error.to_string()),
        }
    }
}

/// What a handler can reach: the application's store, connectors and CRM registry, and its
/// clock. Cheap to clone.
#[derive(Clone)]
pub struct JobContext {
    pub store: Store,
    pub connectors: Connectors,
    pub crms: CrmRegistry,
    pub clock: Arc<dyn Clock>,
}

impl JobContext {
    pub fn new(state: &AppState) -> Self {
        Self {
            store: state.store.clone(),
            connectors: state.connectors.clone(),
            crms: state.crms.clone(),
            clock: state.store.clock().clone(),
        }
    }

    /// The CRM of the connection the job works for (background lane).
    pub async fn crm(&self, job: &ClaimedJob) -> Result<Arc<dyn Crm>, AccessError> {
        let id = job.connection_id.ok_or_else(|| {
            AccessError::Crm(CrmError::validation("connection", format!("a {} job names no connection", job.kind)))
        })?;
        let tenant = self.store.tenants().get(job.tenant_id).await?;
        let connection = self.store.connections(job.tenant_id).get(id).await?;
        self.crms.crm(&self.store, &self.connectors, &tenant, &connection, Lane::Background).await
    }
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext").field("store", &self.store).finish_non_exhaustive()
    }
}

/// Runs jobs of one kind. Handlers must be idempotent: a job can run again after a crash or a
/// lost lease, and its effects must not double.
#[async_trait::async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> JobOutcome;
}

/// Job kinds this installation can run, with the application they run in.
#[derive(Clone)]
pub struct JobRegistry {
    handlers: HashMap<String, Arc<dyn JobHandler>>,
    context: JobContext,
}

impl std::fmt::Debug for JobRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.handlers.keys()).finish()
    }
}

impl JobRegistry {
    pub fn new(context: JobContext) -> Self {
        Self { handlers: HashMap::new(), context }
    }

    pub fn register(&mut self, kind: &str, handler: Arc<dyn JobHandler>) {
        self.handlers.insert(kind.to_owned(), handler);
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn JobHandler>> {
        self.handlers.get(kind)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    pub fn context(&self) -> &JobContext {
        &self.context
    }
}

#[cfg(test)]
mod tests;
