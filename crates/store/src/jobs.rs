//! The durable jobs queue.
//!
//! A job is a row: pending → running (leased to one worker) → deleted when done, or back to
//! pending with a later `run_at` after a failure, or `dead` after its last attempt. A worker
//! that dies keeps its lease until it expires; the next claim then takes the job over (and
//! counts the attempt), so nothing stays stuck. Only the lease holder can finish a job:
//! every transition is conditioned on the claim's unique lease token.
//!
//! A job may name the connection it works for. While that connection `needs_reauth` its
//! jobs are `paused`: never claimed, and resumed (pending again) when the connection is active
//! again. Database triggers keep that rule whichever way the connection's status changes, and
//! keep a per-tenant count of open jobs so that the depth cap costs one row read per enqueue.
//!
//! Claiming: PostgreSQL uses `FOR UPDATE SKIP LOCKED` so concurrent workers on several
//! instances never pick the same row; SQLite runs the claim inside `BEGIN IMMEDIATE`, which
//! serialises writers.

use std::time::Duration;

use crmhub_core::clock::duration_millis;
use crmhub_core::{ConnectionId, JobId, TenantId, UnixMillis};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::db::{Db, Tx, finish, on_pool, on_tx};
use crate::rows::{parse_id, parse_json};
use crate::{Result, Store, StoreError};

/// Work to enqueue. `dedupe_key` names one unit of work (a call to log, say): the enqueue is a
/// no-op while a pending job of the same tenant, kind and key exists (a running one does not
/// count: new information that arrives while a job runs must be able to schedule another
/// run), and a pending job is not claimed while a job of its key runs, so the jobs of one key
/// never run at the same time.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub payload: Value,
    pub dedupe_key: Option<String>,
    pub run_at: Option<UnixMillis>,
    pub max_attempts: Option<u32>,
    /// Higher runs first: interactive work ahead of backfills.
    pub priority: i32,
    /// The connection the job works for: it pauses while the connection needs new credentials.
    pub connection: Option<ConnectionId>,
}

impl NewJob {
    pub fn new(kind: impl Into<String>, payload: Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
            dedupe_key: None,
            run_at: None,
            max_attempts: None,
            priority: 0,
            connection: None,
        }
    }

    pub fn dedupe_key(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    pub fn run_at(mut self, at: UnixMillis) -> Self {
        self.run_at = Some(at);
        self
    }

    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    pub fn connection(mut self, connection: ConnectionId) -> Self {
        self.connection = Some(connection);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Created(JobId),
    /// A pending job with the same dedupe key already existed; nothing was added.
    Duplicate(JobId),
}

impl Enqueued {
    pub fn id(&self) -> JobId {
        match self {
            Self::Created(id) | Self::Duplicate(id) => *id,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    /// Waiting for its connection's credentials to be fixed; not claimed until then.
    Paused,
    Running,
    Dead,
}

impl JobStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paused => "paused",
            Self::Running => "running",
            Self::Dead => "dead",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "pending" => Some(Self::Pending),
            "paused" => Some(Self::Paused),
            "running" => Some(Self::Running),
            "dead" => Some(Self::Dead),
            _ => None,
        }
    }
}

/// A job leased to one worker.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub kind: String,
    pub payload: Value,
    pub connection_id: Option<ConnectionId>,
    /// Attempts so far, including this one.
    pub attempts: u32,
    pub max_attempts: u32,
    lease_token: String,
}

impl ClaimedJob {
    pub fn is_last_attempt(&self) -> bool {
        self.attempts >= self.max_attempts
    }
}

/// A job as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub connection_id: Option<ConnectionId>,
    pub kind: String,
    pub payload: Value,
    pub dedupe_key: Option<String>,
    pub status: JobStatus,
    pub priority: i32,
    pub run_at: UnixMillis,
    pub attempts: u32,
    pub max_attempts: u32,
    pub lease_expires_at: Option<UnixMillis>,
    pub last_error: Option<String>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    /// Waiting to run, paused ones included.
    pub pending: u64,
    pub running: u64,
    pub dead: u64,
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub tenant: Option<TenantId>,
    pub status: Option<JobStatus>,
    pub kind: Option<String>,
    /// The jobs of one unit of work (a call's log jobs, say).
    pub dedupe_key: Option<String>,
    pub limit: Option<u32>,
}

/// What to redrive: every dead job in scope, or the listed ids.
#[derive(Debug, Clone)]
pub enum Redrive {
    AllDead,
    Ids(Vec<JobId>),
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    id: String,
    tenant_id: String,
    connection_id: Option<String>,
    kind: String,
    payload: String,
    attempts: i32,
    max_attempts: i32,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    tenant_id: String,
    connection_id: Option<String>,
    kind: String,
    payload: String,
    dedupe_key: Option<String>,
    status: String,
    priority: i32,
    run_at: i64,
    attempts: i32,
    max_attempts: i32,
    lease_expires_at: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<JobRow> for JobRecord {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Self> {
        Ok(JobRecord {
            id: parse_id("job", &row.id)?,
            tenant_id: parse_id("job", &row.tenant_id)?,
            connection_id: row.connection_id.as_deref().map(|c| parse_id("job", c)).transpose()?,
            payload: parse_json("job", &row.id, &row.payload)?,
            status: JobStatus::parse(&row.status)
                .ok_or_else(|| StoreError::corrupt("job", &row.id, format!("unknown status {:?}", row.status)))?,
            kind: row.kind,
            dedupe_key: row.dedupe_key,
            priority: row.priority,
            run_at: row.run_at,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            max_attempts: u32::try_from(row.max_attempts).unwrap_or(1),
            lease_expires_at: row.lease_expires_at,
            last_error: row.last_error,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// A job going back to pending races an enqueue of its twin (on PostgreSQL, between the
/// merge check and the update, the enqueue may commit): the update then breaks the one-pending
/// rule and fails, and the next round merges into the twin. One round settles it; three are
/// allowed.
const TWIN_RACE_ROUNDS: usize = 3;

fn is_twin_race<T>(result: &std::result::Result<T, sqlx::Error>) -> bool {
    matches!(result, Err(sqlx::Error::Database(db)) if db.is_unique_violation())
}

const LAST_ATTEMPT_LOST: &str = "the worker running the final attempt stopped renewing its lease (crashed or hung)";

impl Tx {
    /// Enqueues inside the caller's transaction: the job exists iff the transaction commits.
    pub async fn enqueue_job(&mut self, store: &Store, tenant: TenantId, job: NewJob) -> Result<Enqueued> {
        let now = store.now();
        let tenant_s = tenant.to_string();
        let cap = store.limits.max_queue_depth_per_tenant;
        let max_attempts =
            i32::try_from(job.max_attempts.unwrap_or(store.limits.default_max_attempts).max(1)).unwrap_or(i32::MAX);
        let id = JobId::new();
        let payload = job.payload.to_string();
        let run_at = job.run_at.unwrap_or(now);

        if let Some(existing) = find_pending_duplicate(self, &tenant_s, &job).await? {
            return Ok(Enqueued::Duplicate(existing));
        }
        // Kept by triggers on `jobs`: one row to read, however deep the queue.
        let depth: Option<i64> = on_tx!(self, |conn| {
            sqlx::query_scalar("SELECT open FROM job_depth WHERE tenant_id = $1")
                .bind(&tenant_s)
                .fetch_optional(&mut *conn)
                .await
        })?;
        if u64::try_from(depth.unwrap_or(0)).unwrap_or(0) >= cap {
            return Err(StoreError::QueueFull { tenant, cap });
        }
        let inserted: Option<String> = on_tx!(self, |conn| {
            sqlx::query_scalar(
                "INSERT INTO jobs (id, tenant_id, kind, payload, dedupe_key, status, priority, run_at, attempts, \
                 max_attempts, created_at, updated_at, connection_id) \
                 VALUES ($1, $2, $3, $4, $5, \
                 CASE WHEN EXISTS (SELECT 1 FROM connections WHERE id = $10 AND tenant_id = $2 \
                                   AND status = 'needs_reauth') THEN 'paused' ELSE 'pending' END, \
                 $6, $7, 0, $8, $9, $9, $10) \
                 ON CONFLICT (tenant_id, kind, dedupe_key) WHERE dedupe_key IS NOT NULL AND status = 'pending' \
                 DO NOTHING RETURNING id",
            )
            .bind(id.to_string())
            .bind(&tenant_s)
            .bind(&job.kind)
            .bind(&payload)
            .bind(job.dedupe_key.as_deref())
            .bind(job.priority)
            .bind(run_at)
            .bind(max_attempts)
            .bind(now)
            .bind(job.connection.map(|c| c.to_string()))
            .fetch_optional(&mut *conn)
            .await
        })
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound {
                entity: if job.connection.is_some() { "tenant or connection" } else { "tenant" },
            },
            _ => StoreError::Database(e),
        })?;
        match inserted {
            Some(_) => Ok(Enqueued::Created(id)),
            None => find_pending_duplicate(self, &tenant_s, &job)
                .await?
                .map(Enqueued::Duplicate)
                .ok_or_else(|| StoreError::corrupt("job", id.to_string(), "dedupe conflict without a pending twin")),
        }
    }
}

async fn find_pending_duplicate(tx: &mut Tx, tenant: &str, job: &NewJob) -> Result<Option<JobId>> {
    let Some(key) = job.dedupe_key.as_deref() else { return Ok(None) };
    let existing: Option<String> = on_tx!(tx, |conn| {
        sqlx::query_scalar(
            "SELECT id FROM jobs WHERE tenant_id = $1 AND kind = $2 AND dedupe_key = $3 \
             AND status IN ('pending', 'paused')",
        )
        .bind(tenant)
        .bind(&job.kind)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
    })?;
    existing.map(|id| parse_id("job", &id)).transpose()
}

pub struct Jobs<'a> {
    store: &'a Store,
}

impl Store {
    /// The queue. Enqueue and listing are tenant-scoped; claiming is the worker's view across
    /// all tenants.
    pub fn jobs(&self) -> Jobs<'_> {
        Jobs { store: self }
    }
}

impl Jobs<'_> {
    /// Enqueues in a transaction of its own.
    pub async fn enqueue(&self, tenant: TenantId, job: NewJob) -> Result<Enqueued> {
        let mut tx = self.store.begin().await?;
        let result = tx.enqueue_job(self.store, tenant, job).await;
        finish(tx, result).await
    }

    /// Leases the most urgent runnable job to `worker` for `lease`. Jobs whose worker vanished
    /// during their final attempt are declared dead first.
    pub async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<ClaimedJob>> {
        let now = self.store.now();
        let lease_token = format!("{worker}/{}", Uuid::new_v4());
        let lease_until = now.saturating_add(duration_millis(lease));
        let mut tx = self.store.begin().await?;
        on_tx!(&mut tx, |conn| {
            sqlx::query(
                "UPDATE jobs SET status = 'dead', last_error = $2, lease_owner = NULL, lease_expires_at = NULL, \
                 updated_at = $1 WHERE status = 'running' AND lease_expires_at < $1 AND attempts >= max_attempts",
            )
            .bind(now)
            .bind(LAST_ATTEMPT_LOST)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
        })?;
        let pick = match &self.store.db {
            Db::Sqlite(_) => "",
            Db::Postgres(_) => "FOR UPDATE SKIP LOCKED",
        };
        // Two index walks, each stopping at its first row: an abandoned lease (`jobs_lease`), else
        // the most urgent runnable job (`jobs_claim`, in the order of the ORDER BY, so no sort
        // however many jobs wait). COALESCE evaluates the second only when the first is empty.
        // A pending job whose key has a running job is passed over (`jobs_running_key`).
        let sql = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $2, \
             lease_expires_at = $3, updated_at = $1 \
             WHERE id = COALESCE( \
                 (SELECT id FROM jobs WHERE status = 'running' AND lease_expires_at < $1 \
                  ORDER BY lease_expires_at LIMIT 1 {pick}), \
                 (SELECT id FROM jobs p WHERE status = 'pending' AND run_at <= $1 \
                  AND (dedupe_key IS NULL OR NOT EXISTS (SELECT 1 FROM jobs r WHERE r.status = 'running' \
                       AND r.tenant_id = p.tenant_id AND r.kind = p.kind AND r.dedupe_key = p.dedupe_key)) \
                  ORDER BY priority DESC, run_at, created_at LIMIT 1 {pick})) \
             RETURNING id, tenant_id, connection_id, kind, payload, attempts, max_attempts"
        );
        let row: Option<ClaimRow> = on_tx!(&mut tx, |conn| {
            sqlx::query_as(&sql).bind(now).bind(&lease_token).bind(lease_until).fetch_optional(&mut *conn).await
        })?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ClaimedJob {
            id: parse_id("job", &row.id)?,
            tenant_id: parse_id("job", &row.tenant_id)?,
            connection_id: row.connection_id.as_deref().map(|c| parse_id("job", c)).transpose()?,
            payload: parse_json("job", &row.id, &row.payload)?,
            kind: row.kind,
            attempts: u32::try_from(row.attempts).unwrap_or(1),
            max_attempts: u32::try_from(row.max_attempts).unwrap_or(1),
            lease_token,
        }))
    }

    /// Extends the lease while the job runs. `false` means the lease was lost (it expired and
    /// another worker took the job): the caller must stop and not report a result.
    pub async fn heartbeat(&self, job: &ClaimedJob, lease: Duration) -> Result<bool> {
        let now = self.store.now();
        let until = now.saturating_add(duration_millis(lease));
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "UPDATE jobs SET lease_expires_at = $3, updated_at = $4 \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
            )
            .bind(job.id.to_string())
            .bind(&job.lease_token)
            .bind(until)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(done == 1)
    }

    /// The job succeeded: it is removed.
    pub async fn complete(&self, job: &ClaimedJob) -> Result<()> {
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query("DELETE FROM jobs WHERE id = $1 AND lease_owner = $2")
                .bind(job.id.to_string())
                .bind(&job.lease_token)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        if done == 1 { Ok(()) } else { Err(StoreError::LeaseLost) }
    }

    /// The attempt failed. Unless it was the last, the job runs again at `retry_at`; after the
    /// last it is dead with `error`. Returns the resulting status.
    pub async fn fail(&self, job: &ClaimedJob, error: &str, retry_at: UnixMillis) -> Result<JobStatus> {
        let status = self
            .unless_merged(job, || async {
                on_pool!(&self.store.db, |pool| {
                    sqlx::query_scalar::<_, String>(
                        "UPDATE jobs SET status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' END, \
                         run_at = $3, last_error = $4, lease_owner = NULL, lease_expires_at = NULL, updated_at = $5 \
                         WHERE id = $1 AND lease_owner = $2 RETURNING status",
                    )
                    .bind(job.id.to_string())
                    .bind(&job.lease_token)
                    .bind(retry_at)
                    .bind(truncate(error))
                    .bind(self.store.now())
                    .fetch_optional(pool)
                    .await
                })
            })
            .await?;
        match status {
            None => Ok(JobStatus::Pending),
            Some(status) => {
                let status = status.ok_or(StoreError::LeaseLost)?;
                JobStatus::parse(&status).ok_or_else(|| StoreError::corrupt("job", job.id.to_string(), "bad status"))
            }
        }
    }

    /// A permanent failure: no retry will help, so the job is dead now, with `error` kept.
    pub async fn kill(&self, job: &ClaimedJob, error: &str) -> Result<()> {
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "UPDATE jobs SET status = 'dead', last_error = $3, lease_owner = NULL, lease_expires_at = NULL, \
                 updated_at = $4 WHERE id = $1 AND lease_owner = $2",
            )
            .bind(job.id.to_string())
            .bind(&job.lease_token)
            .bind(truncate(error))
            .bind(self.store.now())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        if done == 1 { Ok(()) } else { Err(StoreError::LeaseLost) }
    }

    /// Puts the job back without counting the attempt: it asked to run later (a remote's
    /// `Retry-After`), or the worker is shutting down.
    pub async fn defer(&self, job: &ClaimedJob, run_at: UnixMillis, reason: Option<&str>) -> Result<()> {
        self.put_back_uncounted(job, "'pending'", run_at, reason).await
    }

    /// Its connection's credentials were refused: the job waits, without counting the attempt,
    /// until the connection is active again (then it resumes with the connection's other jobs).
    /// Should the connection have been fixed meanwhile, the job is simply pending again.
    pub async fn park(&self, job: &ClaimedJob, reason: &str) -> Result<()> {
        const PAUSED_WHILE_REFUSED: &str = "CASE WHEN EXISTS (SELECT 1 FROM connections c \
             WHERE c.id = jobs.connection_id AND c.status = 'needs_reauth') THEN 'paused' ELSE 'pending' END";
        self.put_back_uncounted(job, PAUSED_WHILE_REFUSED, self.store.now(), Some(reason)).await
    }

    /// Ends `job`'s lease without counting its attempt: it becomes `status` (an SQL expression:
    /// pending, or paused), due at `run_at`, with `reason` as its last error when given. A
    /// pending twin takes its work instead; one exists only while the job's connection is
    /// usable (a refused connection's twin is paused), so a parked job merges into it too.
    async fn put_back_uncounted(
        &self,
        job: &ClaimedJob,
        status: &str,
        run_at: UnixMillis,
        reason: Option<&str>,
    ) -> Result<()> {
        let sql = format!(
            "UPDATE jobs SET status = {status}, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, \
             run_at = $3, last_error = COALESCE($4, last_error), lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = $5 WHERE id = $1 AND lease_owner = $2"
        );
        let done = self
            .unless_merged(job, || async {
                on_pool!(&self.store.db, |pool| {
                    sqlx::query(&sql)
                        .bind(job.id.to_string())
                        .bind(&job.lease_token)
                        .bind(run_at)
                        .bind(reason.map(truncate))
                        .bind(self.store.now())
                        .execute(pool)
                        .await
                        .map(|r| r.rows_affected())
                })
            })
            .await?;
        if done.is_none_or(|n| n == 1) { Ok(()) } else { Err(StoreError::LeaseLost) }
    }

    /// Runs `put_back`, the statement that takes `job` out of its lease (back to pending, or to
    /// its outcome), unless a pending twin takes its work first: `None` then. The two race with
    /// enqueues of the key, hence a few rounds.
    async fn unless_merged<T, Back>(&self, job: &ClaimedJob, put_back: impl Fn() -> Back) -> Result<Option<T>>
    where
        Back: Future<Output = std::result::Result<T, sqlx::Error>>,
    {
        for _ in 0..TWIN_RACE_ROUNDS {
            if self.merge_into_pending_twin(job).await? {
                return Ok(None);
            }
            let result = put_back().await;
            if !is_twin_race(&result) {
                return Ok(Some(result?));
            }
        }
        Err(StoreError::corrupt("job", job.id.to_string(), "its pending twin kept changing"))
    }

    /// A job going back to pending while a newer pending job with the same dedupe key waits
    /// (enqueued while this one ran) is merged into it: the twin does the work, and the unique
    /// pending-dedupe rule holds. Returns whether this job was removed.
    async fn merge_into_pending_twin(&self, job: &ClaimedJob) -> Result<bool> {
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "DELETE FROM jobs WHERE id = $1 AND lease_owner = $2 AND dedupe_key IS NOT NULL AND EXISTS \
                 (SELECT 1 FROM jobs p WHERE p.status = 'pending' AND p.tenant_id = jobs.tenant_id \
                  AND p.kind = jobs.kind AND p.dedupe_key = jobs.dedupe_key)",
            )
            .bind(job.id.to_string())
            .bind(&job.lease_token)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(done == 1)
    }

    pub async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        let limit = i64::from(filter.limit.unwrap_or(100).clamp(1, 1000));
        let rows: Vec<JobRow> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(
                "SELECT id, tenant_id, connection_id, kind, payload, dedupe_key, status, priority, run_at, attempts, \
                 max_attempts, \
                 lease_expires_at, last_error, created_at, updated_at FROM jobs \
                 WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR kind = $3) \
                 AND ($5 IS NULL OR dedupe_key = $5) ORDER BY created_at, id LIMIT $4",
            )
            .bind(filter.tenant.map(|t| t.to_string()))
            .bind(filter.status.map(|s| s.as_str()))
            .bind(filter.kind.as_deref())
            .bind(limit)
            .bind(filter.dedupe_key.as_deref())
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter().map(JobRecord::try_from).collect()
    }

    /// Gives dead jobs a fresh set of attempts, to run now. A dead job whose dedupe key is
    /// already covered by a pending job is removed instead (the pending one does its work).
    /// Returns how many dead jobs were redriven or merged.
    pub async fn redrive(&self, tenant: Option<TenantId>, which: Redrive) -> Result<u64> {
        let now = self.store.now();
        let tenant = tenant.map(|t| t.to_string());
        let ids: Option<Vec<String>> = match which {
            Redrive::AllDead => None,
            Redrive::Ids(ids) => Some(ids.iter().map(JobId::to_string).collect()),
        };
        // An id list becomes a JSON array so one statement text serves both backends.
        let ids_json = ids.map(|ids| serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()));
        let in_ids = match &self.store.db {
            Db::Sqlite(_) => "($2 IS NULL OR id IN (SELECT value FROM json_each($2)))",
            Db::Postgres(_) => "($2::text IS NULL OR id IN (SELECT jsonb_array_elements_text($2::jsonb)))",
        };
        let twin = "EXISTS (SELECT 1 FROM jobs p WHERE p.status = 'pending' AND p.dedupe_key IS NOT NULL \
                    AND p.tenant_id = jobs.tenant_id AND p.kind = jobs.kind AND p.dedupe_key = jobs.dedupe_key)";
        let scope = format!("status = 'dead' AND ($1 IS NULL OR tenant_id = $1) AND {in_ids}");
        let merge_sql = format!("DELETE FROM jobs WHERE {scope} AND {twin}");
        // Of several dead jobs sharing a dedupe key, one is revived and the others merged into it.
        // (The subquery counts pending rows too: SQLite sees the statement's own earlier updates,
        // and must not revive a second twin after the first.)
        let revive_sql = format!(
            "UPDATE jobs SET status = 'pending', attempts = 0, run_at = $3, updated_at = $3 WHERE {scope} \
             AND (dedupe_key IS NULL OR id = (SELECT MIN(d.id) FROM jobs d WHERE d.status IN ('dead', 'pending') \
             AND d.tenant_id = jobs.tenant_id AND d.kind = jobs.kind AND d.dedupe_key = jobs.dedupe_key AND {in_ids}))"
        );
        let mut tx = self.store.begin().await?;
        let mut changed = 0;
        // Merge dead jobs into pending twins, revive one per key, then merge the rest into it.
        for (sql, with_now) in [(&merge_sql, false), (&revive_sql, true), (&merge_sql, false)] {
            changed += on_tx!(&mut tx, |conn| {
                let query = sqlx::query(sql).bind(tenant.as_deref()).bind(ids_json.as_deref());
                let query = if with_now { query.bind(now) } else { query };
                query.execute(&mut *conn).await.map(|r| r.rows_affected())
            })?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Removes dead jobs for good (after an operator decided they are not worth redriving).
    pub async fn discard_dead(&self, tenant: TenantId, id: JobId) -> Result<()> {
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query("DELETE FROM jobs WHERE tenant_id = $1 AND id = $2 AND status = 'dead'")
                .bind(tenant.to_string())
                .bind(id.to_string())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        if done == 1 { Ok(()) } else { Err(StoreError::NotFound { entity: "dead job" }) }
    }

    /// Queue depth by status, for metrics and the drain helpers in tests.
    pub async fn depth(&self, tenant: Option<TenantId>) -> Result<QueueDepth> {
        let rows: Vec<(String, i64)> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as("SELECT status, COUNT(*) FROM jobs WHERE ($1 IS NULL OR tenant_id = $1) GROUP BY status")
                .bind(tenant.map(|t| t.to_string()))
                .fetch_all(pool)
                .await
        })?;
        let mut depth = QueueDepth::default();
        for (status, count) in rows {
            let count = u64::try_from(count).unwrap_or(0);
            match JobStatus::parse(&status) {
                Some(JobStatus::Pending | JobStatus::Paused) => depth.pending += count,
                Some(JobStatus::Running) => depth.running = count,
                Some(JobStatus::Dead) => depth.dead = count,
                None => {}
            }
        }
        Ok(depth)
    }

    /// When the next pending job becomes runnable, so an idle worker knows how long to sleep.
    pub async fn next_run_at(&self) -> Result<Option<UnixMillis>> {
        Ok(on_pool!(&self.store.db, |pool| {
            sqlx::query_scalar("SELECT MIN(run_at) FROM jobs WHERE status = 'pending'").fetch_one(pool).await
        })?)
    }
}

fn truncate(error: &str) -> String {
    error.chars().take(2000).collect()
}

/// Exponential backoff with equal jitter: half of `base · 2^(attempt-1)` fixed, the other half
/// random, capped at `max`. Retries from many jobs that failed together spread out.
pub fn backoff_delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << exp).min(max);
    let half = ceiling / 2;
    let jitter = rand::random_range(0..=duration_millis(half).max(0) as u64);
    half + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(5);
        let max = Duration::from_secs(3600);
        for _ in 0..50 {
            let first = backoff_delay(1, base, max);
            assert!(first >= Duration::from_millis(2500) && first <= base, "{first:?}");
            let fourth = backoff_delay(4, base, max);
            assert!(fourth >= Duration::from_secs(20) && fourth <= Duration::from_secs(40), "{fourth:?}");
            let late = backoff_delay(40, base, max);
            assert!(late >= max / 2 && late <= max, "{late:?}");
        }
    }
}
