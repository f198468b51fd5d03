//! Background work: what a job kind does (`JobHandler`), and the workers that run them.

mod worker;

use std::collections::HashMap;
use std::sync::Arc;

use crmhub_core::UnixMillis;
use crmhub_store::jobs::ClaimedJob;

pub use worker::{DrainReport, WorkerConfig, WorkerPool, drain};

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
}

/// Runs jobs of one kind. Handlers must be idempotent: a job can run again after a crash or a
/// lost lease, and its effects must not double.
#[async_trait::async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn run(&self, job: &ClaimedJob) -> JobOutcome;
}

/// Job kinds this installation can run.
#[derive(Default, Clone)]
pub struct JobRegistry {
    handlers: HashMap<String, Arc<dyn JobHandler>>,
}

impl std::fmt::Debug for JobRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.handlers.keys()).finish()
    }
}

impl JobRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, kind: &str, handler: Arc<dyn JobHandler>) {
        self.handlers.insert(kind.to_owned(), handler);
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn JobHandler>> {
        self.handlers.get(kind)
    }
}
