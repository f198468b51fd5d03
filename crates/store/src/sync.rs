//! Contact sync: pipelines (a source connection mirrored into a destination list), the index of
//! what was last sent per source contact, backfill and reconciliation runs with their
//! checkpoints, per-row dead letters, and the webhook deliveries that feed the pipelines.
//!
//! Every write that must hold together is one transaction: a run's page commit writes the
//! index entries, the checkpoint and the progress at once; a delivery is recorded with the
//! jobs it makes; a run is started with its job. The index's address table
//! (`sync_index_emails`) is rewritten with each entry, so "does another contact still have this
//! address" is one indexed read.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crmhub_core::{ConnectionId, TenantId, UnixMillis};
use serde::Serialize;
use serde_json::{Map, Value};
pub use uuid::Uuid;

use crate::db::{Tx, finish, on_pool, on_tx};
use crate::error::on_unique;
use crate::jobs::{Enqueued, NewJob};
use crate::rows::{parse_id, parse_json};
use crate::{Result, Store, StoreError};

/// Rows (or ids) one multi-row statement binds at most: a backfill page (250) fits in one,
/// and six columns of 500 stay far below SQLite's and PostgreSQL's bind limits.
const ROWS_PER_STATEMENT: usize = 500;

/// What a contact gone from the source does to its addresses in the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deletion {
    /// Removed from the pipeline's list only (the default).
    Exclude,
    /// Deleted from the destination account (`delete=1`).
    Delete,
}

impl Deletion {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Exclude => "exclude",
            Self::Delete => "delete",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "exclude" => Some(Self::Exclude),
            "delete" => Some(Self::Delete),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineStatus {
    Active,
    Paused,
}

impl PipelineStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(Self::Active),
            "paused" => Some(Self::Paused),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pipeline {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub name: String,
    pub source_connection_id: ConnectionId,
    pub destination_connection_id: ConnectionId,
    pub list_id: String,
    /// Source field → destination field.
    pub field_map: Map<String, Value>,
    pub deletion: Deletion,
    /// `None`: the source pushes (webhooks); otherwise its change feed is polled this often.
    pub poll_secs: Option<u32>,
    /// Where the polled change feed stands.
    pub change_cursor: Option<String>,
    pub status: PipelineStatus,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

#[derive(Debug, Clone)]
pub struct NewPipeline {
    pub name: String,
    pub source_connection_id: ConnectionId,
    pub destination_connection_id: ConnectionId,
    pub list_id: String,
    pub field_map: Map<String, Value>,
    pub deletion: Deletion,
    pub poll_secs: Option<u32>,
}

/// A partial update: `None` leaves the value as it is (`poll_secs: Some(None)` clears it).
#[derive(Debug, Clone, Default)]
pub struct PipelineUpdate {
    pub list_id: Option<String>,
    pub field_map: Option<Map<String, Value>>,
    pub deletion: Option<Deletion>,
    pub poll_secs: Option<Option<u32>>,
    pub status: Option<PipelineStatus>,
}

/// What the destination holds for one source contact, as last sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexEntry {
    pub contact_id: String,
    pub fingerprint: String,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub sent_at: UnixMillis,
}

/// An index write: `Some` fingerprint upserts the entry, `None` removes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexWrite {
    pub contact_id: String,
    pub sent: Option<SentContact>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentContact {
    pub fingerprint: String,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Backfill,
    Reconcile,
}

impl RunKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Backfill => "backfill",
            Self::Reconcile => "reconcile",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "backfill" => Some(Self::Backfill),
            "reconcile" => Some(Self::Reconcile),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Done,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "running" => Some(Self::Running),
            "done" => Some(Self::Done),
            "failed" => Some(Self::Failed),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncRun {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub pipeline_id: Uuid,
    pub kind: RunKind,
    pub status: RunStatus,
    /// The source cursor after the last committed page.
    pub checkpoint: Option<String>,
    pub done: u64,
    pub total: Option<u64>,
    pub errors: u64,
    pub last_error: Option<String>,
    pub report: Option<Value>,
    pub started_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
}

/// What starting a run did.
#[derive(Debug, Clone)]
pub struct RunStart {
    pub run: SyncRun,
    /// False when a run of that kind was already running: it is returned, and no job is added.
    pub created: bool,
    pub job: Option<Enqueued>,
}

/// One committed page of a run.
#[derive(Debug, Clone, Default)]
pub struct PageCommit {
    pub checkpoint: Option<String>,
    pub done: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    pub total: Option<u64>,
    pub index: Vec<IndexWrite>,
    pub row_errors: Vec<NewRowError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRowError {
    pub contact_id: String,
    pub email: Option<String>,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    pub id: i64,
    pub contact_id: String,
    pub email: Option<String>,
    pub code: String,
    pub message: String,
    pub at: UnixMillis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Accepted,
    Quarantined,
    Redriven,
}

impl DeliveryStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Quarantined => "quarantined",
            Self::Redriven => "redriven",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "accepted" => Some(Self::Accepted),
            "quarantined" => Some(Self::Quarantined),
            "redriven" => Some(Self::Redriven),
            _ => None,
        }
    }
}

/// A webhook delivery as received. `body` is the opened plaintext.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookDelivery {
    pub id: Uuid,
    pub connection_id: ConnectionId,
    pub received_at: UnixMillis,
    pub status: DeliveryStatus,
    pub events: u64,
    pub body: String,
    pub error: Option<String>,
}

const PIPELINE_COLUMNS: &str = "id, tenant_id, name, source_connection_id, destination_connection_id, list_id, \
                                field_map, deletion, poll_secs, change_cursor, status, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct PipelineRow {
    id: String,
    tenant_id: String,
    name: String,
    source_connection_id: String,
    destination_connection_id: String,
    list_id: String,
    field_map: String,
    deletion: String,
    poll_secs: Option<i64>,
    change_cursor: Option<String>,
    status: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<PipelineRow> for Pipeline {
    type Error = StoreError;

    fn try_from(row: PipelineRow) -> Result<Self> {
        let corrupt = |reason: String| StoreError::corrupt("sync pipeline", &row.id, reason);
        Ok(Pipeline {
            id: parse_id("sync pipeline", &row.id)?,
            tenant_id: parse_id("sync pipeline", &row.tenant_id)?,
            source_connection_id: parse_id("sync pipeline", &row.source_connection_id)?,
            destination_connection_id: parse_id("sync pipeline", &row.destination_connection_id)?,
            field_map: parse_json("sync pipeline", &row.id, &row.field_map)?,
            deletion: Deletion::parse(&row.deletion).ok_or_else(|| corrupt(format!("deletion {:?}", row.deletion)))?,
            status: PipelineStatus::parse(&row.status).ok_or_else(|| corrupt(format!("status {:?}", row.status)))?,
            poll_secs: row.poll_secs.map(|s| u32::try_from(s).unwrap_or(u32::MAX)),
            name: row.name,
            list_id: row.list_id,
            change_cursor: row.change_cursor,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

const RUN_COLUMNS: &str = "id, tenant_id, pipeline_id, kind, status, checkpoint, done, total, errors, last_error, \
                           report, started_at, updated_at, finished_at";

#[derive(sqlx::FromRow)]
struct RunRow {
    id: String,
    tenant_id: String,
    pipeline_id: String,
    kind: String,
    status: String,
    checkpoint: Option<String>,
    done: i64,
    total: Option<i64>,
    errors: i64,
    last_error: Option<String>,
    report: Option<String>,
    started_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
}

impl TryFrom<RunRow> for SyncRun {
    type Error = StoreError;

    fn try_from(row: RunRow) -> Result<Self> {
        let corrupt = |reason: String| StoreError::corrupt("sync run", &row.id, reason);
        Ok(SyncRun {
            id: parse_id("sync run", &row.id)?,
            tenant_id: parse_id("sync run", &row.tenant_id)?,
            pipeline_id: parse_id("sync run", &row.pipeline_id)?,
            kind: RunKind::parse(&row.kind).ok_or_else(|| corrupt(format!("kind {:?}", row.kind)))?,
            status: RunStatus::parse(&row.status).ok_or_else(|| corrupt(format!("status {:?}", row.status)))?,
            report: row.report.as_deref().map(|r| parse_json("sync run", &row.id, r)).transpose()?,
            checkpoint: row.checkpoint,
            done: u64::try_from(row.done).unwrap_or(0),
            total: row.total.map(|t| u64::try_from(t).unwrap_or(0)),
            errors: u64::try_from(row.errors).unwrap_or(0),
            last_error: row.last_error,
            started_at: row.started_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
        })
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `{head} WHERE pipeline_id = ? AND {column} IN (?, …)`, bound; `values` must not be empty
/// (callers pass one chunk of at most [`ROWS_PER_STATEMENT`]).
fn in_pipeline<'a, DB: sqlx::Database>(
    head: &str,
    pipeline: &'a str,
    column: &str,
    values: impl IntoIterator<Item = &'a str>,
) -> sqlx::QueryBuilder<'a, DB>
where
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut query = sqlx::QueryBuilder::new(format!("{head} WHERE pipeline_id = "));
    query.push_bind(pipeline).push(format!(" AND {column} IN ("));
    let mut list = query.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    list.push_unseparated(")");
    query
}

fn json_list(values: &[String]) -> String {
    Value::from(values.to_vec()).to_string()
}

fn fk_not_found(entity: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound { entity },
        _ => StoreError::Database(e),
    }
}

/// A tenant's sync pipelines, their index, runs and dead letters, and its webhook deliveries.
pub struct Sync<'a> {
    store: &'a Store,
    tenant: TenantId,
}

impl Store {
    pub fn sync(&self, tenant: TenantId) -> Sync<'_> {
        Sync { store: self, tenant }
    }

    /// Every active pipeline of every tenant (for the scheduler: polls and reconciliations).
    pub async fn active_sync_pipelines(&self) -> Result<Vec<Pipeline>> {
        let sql = format!("SELECT {PIPELINE_COLUMNS} FROM sync_pipelines WHERE status = 'active' ORDER BY created_at");
        let rows: Vec<PipelineRow> = on_pool!(&self.db, |pool| sqlx::query_as(&sql).fetch_all(pool).await)?;
        rows.into_iter().map(Pipeline::try_from).collect()
    }
}

impl Sync<'_> {
    fn tenant_s(&self) -> String {
        self.tenant.to_string()
    }

    // ---- pipelines ----

    /// Creates a pipeline.
    pub async fn create_pipeline(&self, new: NewPipeline) -> Result<Pipeline> {
        let mut tx = self.store.begin().await?;
        let result = self.insert_pipeline(&mut tx, &new).await;
        finish(tx, result).await
    }

    /// Creates a pipeline and starts its first run in the same transaction: `job` makes the
    /// run's job from the new pipeline and run.
    pub async fn create_pipeline_with_run(
        &self,
        new: NewPipeline,
        kind: RunKind,
        job: impl FnOnce(&Pipeline, &SyncRun) -> NewJob,
    ) -> Result<(Pipeline, RunStart)> {
        let mut tx = self.store.begin().await?;
        let result = async {
            let pipeline = self.insert_pipeline(&mut tx, &new).await?;
            let start = self.start_run_in(&mut tx, pipeline.id, kind, |run| job(&pipeline, run)).await?;
            Ok((pipeline, start))
        }
        .await;
        finish(tx, result).await
    }

    async fn insert_pipeline(&self, tx: &mut Tx, new: &NewPipeline) -> Result<Pipeline> {
        let now = self.store.now();
        let id = Uuid::new_v4();
        let tenant = self.tenant_s();
        // Both connections must be this tenant's.
        let owned: i64 = on_tx!(tx, |conn| {
            sqlx::query_scalar("SELECT COUNT(*) FROM connections WHERE tenant_id = $1 AND id IN ($2, $3)")
                .bind(&tenant)
                .bind(new.source_connection_id.to_string())
                .bind(new.destination_connection_id.to_string())
                .fetch_one(&mut *conn)
                .await
        })?;
        let wanted = if new.source_connection_id == new.destination_connection_id { 1 } else { 2 };
        if owned < wanted {
            return Err(StoreError::NotFound { entity: "connection" });
        }
        on_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO sync_pipelines (id, tenant_id, name, source_connection_id, destination_connection_id, \
                 list_id, field_map, deletion, poll_secs, change_cursor, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, 'active', $10, $10)",
            )
            .bind(id.to_string())
            .bind(&tenant)
            .bind(&new.name)
            .bind(new.source_connection_id.to_string())
            .bind(new.destination_connection_id.to_string())
            .bind(&new.list_id)
            .bind(Value::Object(new.field_map.clone()).to_string())
            .bind(new.deletion.as_str())
            .bind(new.poll_secs.map(i64::from))
            .bind(now)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(|e| on_unique(e, "name", || format!("a pipeline named {:?} exists", new.name)))?;
        self.pipeline_in(tx, id).await
    }

    async fn pipeline_in(&self, tx: &mut Tx, id: Uuid) -> Result<Pipeline> {
        let sql = format!("SELECT {PIPELINE_COLUMNS} FROM sync_pipelines WHERE tenant_id = $1 AND id = $2");
        let row: Option<PipelineRow> = on_tx!(tx, |conn| {
            sqlx::query_as(&sql).bind(self.tenant_s()).bind(id.to_string()).fetch_optional(&mut *conn).await
        })?;
        row.ok_or(StoreError::NotFound { entity: "sync pipeline" })?.try_into()
    }

    pub async fn pipeline(&self, id: Uuid) -> Result<Pipeline> {
        let sql = format!("SELECT {PIPELINE_COLUMNS} FROM sync_pipelines WHERE tenant_id = $1 AND id = $2");
        let row: Option<PipelineRow> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(&sql).bind(self.tenant_s()).bind(id.to_string()).fetch_optional(pool).await
        })?;
        row.ok_or(StoreError::NotFound { entity: "sync pipeline" })?.try_into()
    }

    pub async fn pipeline_by_name(&self, name: &str) -> Result<Pipeline> {
        let sql = format!("SELECT {PIPELINE_COLUMNS} FROM sync_pipelines WHERE tenant_id = $1 AND name = $2");
        let row: Option<PipelineRow> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(&sql).bind(self.tenant_s()).bind(name).fetch_optional(pool).await
        })?;
        row.ok_or(StoreError::NotFound { entity: "sync pipeline" })?.try_into()
    }

    pub async fn pipelines(&self) -> Result<Vec<Pipeline>> {
        let sql = format!("SELECT {PIPELINE_COLUMNS} FROM sync_pipelines WHERE tenant_id = $1 ORDER BY name");
        let rows: Vec<PipelineRow> =
            on_pool!(&self.store.db, |pool| sqlx::query_as(&sql).bind(self.tenant_s()).fetch_all(pool).await)?;
        rows.into_iter().map(Pipeline::try_from).collect()
    }

    /// The active pipelines reading from `source` (the webhook intake's fan-out).
    pub async fn pipelines_from(&self, source: ConnectionId) -> Result<Vec<Pipeline>> {
        let sql = format!(
            "SELECT {PIPELINE_COLUMNS} FROM sync_pipelines WHERE tenant_id = $1 AND source_connection_id = $2 \
             AND status = 'active' ORDER BY name"
        );
        let rows: Vec<PipelineRow> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(&sql).bind(self.tenant_s()).bind(source.to_string()).fetch_all(pool).await
        })?;
        rows.into_iter().map(Pipeline::try_from).collect()
    }

    pub async fn update_pipeline(&self, id: Uuid, update: PipelineUpdate) -> Result<Pipeline> {
        let current = self.pipeline(id).await?;
        let field_map = update.field_map.unwrap_or(current.field_map);
        let poll = update.poll_secs.unwrap_or(current.poll_secs);
        on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "UPDATE sync_pipelines SET list_id = $3, field_map = $4, deletion = $5, poll_secs = $6, status = $7, \
                 updated_at = $8 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(self.tenant_s())
            .bind(id.to_string())
            .bind(update.list_id.unwrap_or(current.list_id))
            .bind(Value::Object(field_map).to_string())
            .bind(update.deletion.unwrap_or(current.deletion).as_str())
            .bind(poll.map(i64::from))
            .bind(update.status.unwrap_or(current.status).as_str())
            .bind(self.store.now())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        self.pipeline(id).await
    }

    /// Deletes a pipeline with its index, runs and dead letters.
    pub async fn delete_pipeline(&self, id: Uuid) -> Result<()> {
        let deleted = on_pool!(&self.store.db, |pool| {
            sqlx::query("DELETE FROM sync_pipelines WHERE tenant_id = $1 AND id = $2")
                .bind(self.tenant_s())
                .bind(id.to_string())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        if deleted == 0 { Err(StoreError::NotFound { entity: "sync pipeline" }) } else { Ok(()) }
    }

    /// Where the polled change feed stands, written after what it brought was mirrored.
    pub async fn set_change_cursor(&self, id: Uuid, cursor: &str) -> Result<()> {
        on_pool!(&self.store.db, |pool| {
            sqlx::query("UPDATE sync_pipelines SET change_cursor = $3 WHERE tenant_id = $1 AND id = $2")
                .bind(self.tenant_s())
                .bind(id.to_string())
                .bind(cursor)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    // ---- index ----

    pub async fn index_entry(&self, pipeline: Uuid, contact: &str) -> Result<Option<IndexEntry>> {
        Ok(self.index_entries(pipeline, &[contact.to_owned()]).await?.remove(contact))
    }

    /// The index entries of those of `contacts` that have one, by contact id: one read per
    /// [`ROWS_PER_STATEMENT`] ids, so a page of contacts costs one round trip, not one each.
    pub async fn index_entries(&self, pipeline: Uuid, contacts: &[String]) -> Result<HashMap<String, IndexEntry>> {
        let pipeline = pipeline.to_string();
        let mut entries = HashMap::with_capacity(contacts.len());
        for chunk in contacts.chunks(ROWS_PER_STATEMENT) {
            let rows: Vec<(String, String, String, String, i64)> = on_pool!(&self.store.db, |pool| {
                let ids = chunk.iter().map(String::as_str);
                in_pipeline(
                    "SELECT contact_id, fingerprint, emails, phones, sent_at FROM sync_index",
                    &pipeline,
                    "contact_id",
                    ids,
                )
                .build_query_as()
                .fetch_all(pool)
                .await
            })?;
            for (contact_id, fingerprint, emails, phones, sent_at) in rows {
                let entry = IndexEntry {
                    emails: parse_json("sync index", &contact_id, &emails)?,
                    phones: parse_json("sync index", &contact_id, &phones)?,
                    contact_id,
                    fingerprint,
                    sent_at,
                };
                entries.insert(entry.contact_id.clone(), entry);
            }
        }
        Ok(entries)
    }

    /// The ids of every indexed contact.
    pub async fn indexed_contacts(&self, pipeline: Uuid) -> Result<Vec<String>> {
        Ok(on_pool!(&self.store.db, |pool| {
            sqlx::query_scalar("SELECT contact_id FROM sync_index WHERE pipeline_id = $1 ORDER BY contact_id")
                .bind(pipeline.to_string())
                .fetch_all(pool)
                .await
        })?)
    }

    /// Every address an indexed contact has.
    pub async fn indexed_emails(&self, pipeline: Uuid) -> Result<BTreeSet<String>> {
        let all: Vec<String> = on_pool!(&self.store.db, |pool| {
            sqlx::query_scalar("SELECT DISTINCT email FROM sync_index_emails WHERE pipeline_id = $1")
                .bind(pipeline.to_string())
                .fetch_all(pool)
                .await
        })?;
        Ok(all.into_iter().collect())
    }

    /// For each of `emails` that an indexed contact has, the contacts whose last-sent addresses
    /// include it (sorted); addresses nobody has are absent.
    pub async fn email_holders(&self, pipeline: Uuid, emails: &[String]) -> Result<BTreeMap<String, Vec<String>>> {
        let pipeline = pipeline.to_string();
        let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for chunk in emails.chunks(ROWS_PER_STATEMENT) {
            let rows: Vec<(String, String)> = on_pool!(&self.store.db, |pool| {
                let emails = chunk.iter().map(String::as_str);
                let mut query =
                    in_pipeline("SELECT email, contact_id FROM sync_index_emails", &pipeline, "email", emails);
                query.push(" ORDER BY email, contact_id");
                query.build_query_as().fetch_all(pool).await
            })?;
            for (email, contact) in rows {
                holders.entry(email).or_default().push(contact);
            }
        }
        Ok(holders)
    }

    /// Writes index entries (upserts and removals) in one transaction.
    pub async fn write_index(&self, pipeline: Uuid, writes: &[IndexWrite]) -> Result<()> {
        let mut tx = self.store.begin().await?;
        let result = self.write_index_in(&mut tx, pipeline, writes).await;
        finish(tx, result).await
    }

    /// The writes as if made one after the other (the last one for a contact wins), in a few
    /// multi-row statements: a backfill page's 250 entries cost four statements, not 750.
    async fn write_index_in(&self, tx: &mut Tx, pipeline: Uuid, writes: &[IndexWrite]) -> Result<()> {
        let now = self.store.now();
        let pipeline = pipeline.to_string();
        let mut last: BTreeMap<&str, Option<&SentContact>> = BTreeMap::new();
        for write in writes {
            last.insert(&write.contact_id, write.sent.as_ref());
        }
        let ids: Vec<&str> = last.keys().copied().collect();
        let removed: Vec<&str> = last.iter().filter(|(_, sent)| sent.is_none()).map(|(id, _)| *id).collect();
        let upserts: Vec<(&str, &SentContact)> =
            last.iter().filter_map(|(id, sent)| sent.map(|sent| (*id, sent))).collect();
        let addresses: Vec<(&str, &String)> = upserts
            .iter()
            .flat_map(|(id, sent)| {
                sent.emails.iter().collect::<BTreeSet<_>>().into_iter().map(move |email| (*id, email))
            })
            .collect();

        for (table, chunk) in ids
            .chunks(ROWS_PER_STATEMENT)
            .map(|c| ("sync_index_emails", c))
            .chain(removed.chunks(ROWS_PER_STATEMENT).map(|c| ("sync_index", c)))
        {
            let head = format!("DELETE FROM {table}");
            on_tx!(tx, |conn| {
                in_pipeline(&head, &pipeline, "contact_id", chunk.iter().copied())
                    .build()
                    .execute(&mut *conn)
                    .await
                    .map(|r| r.rows_affected())
            })?;
        }
        for chunk in upserts.chunks(ROWS_PER_STATEMENT) {
            on_tx!(tx, |conn| {
                let mut query = sqlx::QueryBuilder::new(
                    "INSERT INTO sync_index (pipeline_id, contact_id, fingerprint, emails, phones, sent_at) ",
                );
                query.push_values(chunk, |mut row, (id, sent)| {
                    row.push_bind(&pipeline)
                        .push_bind(*id)
                        .push_bind(&sent.fingerprint)
                        .push_bind(json_list(&sent.emails))
                        .push_bind(json_list(&sent.phones))
                        .push_bind(now);
                });
                query.push(
                    " ON CONFLICT (pipeline_id, contact_id) DO UPDATE SET fingerprint = excluded.fingerprint, \
                     emails = excluded.emails, phones = excluded.phones, sent_at = excluded.sent_at",
                );
                query.build().execute(&mut *conn).await.map(|r| r.rows_affected())
            })
            .map_err(fk_not_found("sync pipeline"))?;
        }
        for chunk in addresses.chunks(ROWS_PER_STATEMENT) {
            on_tx!(tx, |conn| {
                let mut query =
                    sqlx::QueryBuilder::new("INSERT INTO sync_index_emails (pipeline_id, email, contact_id) ");
                query.push_values(chunk, |mut row, (id, email)| {
                    row.push_bind(&pipeline).push_bind(*email).push_bind(*id);
                });
                query.build().execute(&mut *conn).await.map(|r| r.rows_affected())
            })?;
        }
        Ok(())
    }

    // ---- runs ----

    /// Starts a run of `kind` with its job, in one transaction. A run of that kind already
    /// running is returned instead (`created: false`), and no job is added.
    pub async fn start_run(&self, pipeline: Uuid, kind: RunKind, job: impl Fn(&SyncRun) -> NewJob) -> Result<RunStart> {
        for _ in 0..3 {
            let mut tx = self.store.begin().await?;
            let result = self.start_run_in(&mut tx, pipeline, kind, &job).await;
            match finish(tx, result).await {
                // Two starts at once on PostgreSQL: the loser sees the winner's run next round.
                Err(StoreError::Conflict { field: "kind", .. }) => continue,
                other => return other,
            }
        }
        Err(StoreError::Conflict { field: "kind", message: format!("a {} run is starting", kind.as_str()) })
    }

    async fn start_run_in(
        &self,
        tx: &mut Tx,
        pipeline: Uuid,
        kind: RunKind,
        job: impl FnOnce(&SyncRun) -> NewJob,
    ) -> Result<RunStart> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs WHERE tenant_id = $1 AND pipeline_id = $2 AND kind = $3 \
             AND status = 'running'"
        );
        let running: Option<RunRow> = on_tx!(tx, |conn| {
            sqlx::query_as(&sql)
                .bind(self.tenant_s())
                .bind(pipeline.to_string())
                .bind(kind.as_str())
                .fetch_optional(&mut *conn)
                .await
        })?;
        if let Some(row) = running {
            return Ok(RunStart { run: row.try_into()?, created: false, job: None });
        }
        self.pipeline_in(tx, pipeline).await?;
        let id = Uuid::new_v4();
        let now = self.store.now();
        on_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO sync_runs (id, tenant_id, pipeline_id, kind, status, done, errors, started_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 'running', 0, 0, $5, $5)",
            )
            .bind(id.to_string())
            .bind(self.tenant_s())
            .bind(pipeline.to_string())
            .bind(kind.as_str())
            .bind(now)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(|e| on_unique(e, "kind", || format!("a {} run is already running", kind.as_str())))?;
        let run = self.run_in(tx, id).await?;
        let enqueued = tx.enqueue_job(self.store, self.tenant, job(&run)).await?;
        Ok(RunStart { run, created: true, job: Some(enqueued) })
    }

    async fn run_in(&self, tx: &mut Tx, id: Uuid) -> Result<SyncRun> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM sync_runs WHERE tenant_id = $1 AND id = $2");
        let row: Option<RunRow> = on_tx!(tx, |conn| {
            sqlx::query_as(&sql).bind(self.tenant_s()).bind(id.to_string()).fetch_optional(&mut *conn).await
        })?;
        row.ok_or(StoreError::NotFound { entity: "sync run" })?.try_into()
    }

    pub async fn run(&self, id: Uuid) -> Result<SyncRun> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM sync_runs WHERE tenant_id = $1 AND id = $2");
        let row: Option<RunRow> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(&sql).bind(self.tenant_s()).bind(id.to_string()).fetch_optional(pool).await
        })?;
        row.ok_or(StoreError::NotFound { entity: "sync run" })?.try_into()
    }

    /// A pipeline's runs, newest first.
    pub async fn runs(&self, pipeline: Uuid, limit: u32) -> Result<Vec<SyncRun>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs WHERE tenant_id = $1 AND pipeline_id = $2 \
             ORDER BY started_at DESC, id LIMIT $3"
        );
        let rows: Vec<RunRow> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(&sql)
                .bind(self.tenant_s())
                .bind(pipeline.to_string())
                .bind(i64::from(limit.clamp(1, 500)))
                .fetch_all(pool)
                .await
        })?;
        rows.into_iter().map(SyncRun::try_from).collect()
    }

    /// Commits one page of a running run: its index writes, dead letters, checkpoint and
    /// progress, all at once. `NotFound` when the run is no longer running.
    pub async fn commit_page(&self, run: Uuid, page: PageCommit) -> Result<SyncRun> {
        let mut tx = self.store.begin().await?;
        let result = async {
            let current = self.run_in(&mut tx, run).await?;
            if current.status != RunStatus::Running {
                return Err(StoreError::NotFound { entity: "running sync run" });
            }
            self.write_index_in(&mut tx, current.pipeline_id, &page.index).await?;
            self.add_row_errors_in(&mut tx, current.pipeline_id, &page.row_errors).await?;
            on_tx!(&mut tx, |conn| {
                sqlx::query(
                    "UPDATE sync_runs SET checkpoint = COALESCE($3, checkpoint), done = done + $4, \
                     errors = errors + $5, last_error = COALESCE($6, last_error), total = COALESCE($7, total), \
                     updated_at = $8 WHERE tenant_id = $1 AND id = $2",
                )
                .bind(self.tenant_s())
                .bind(run.to_string())
                .bind(page.checkpoint.as_deref())
                .bind(to_i64(page.done))
                .bind(to_i64(page.errors))
                .bind(page.last_error.as_deref())
                .bind(page.total.map(to_i64))
                .bind(self.store.now())
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected())
            })?;
            self.run_in(&mut tx, run).await
        }
        .await;
        finish(tx, result).await
    }

    /// Records a failure of a running run that it will retry (the last error, counted).
    pub async fn note_run_error(&self, run: Uuid, error: &str) -> Result<()> {
        on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "UPDATE sync_runs SET errors = errors + 1, last_error = $3, updated_at = $4 \
                 WHERE tenant_id = $1 AND id = $2 AND status = 'running'",
            )
            .bind(self.tenant_s())
            .bind(run.to_string())
            .bind(error)
            .bind(self.store.now())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Ends a running run with `status` (not `Running`), its report and last error.
    pub async fn finish_run(
        &self,
        run: Uuid,
        status: RunStatus,
        report: Option<Value>,
        error: Option<&str>,
    ) -> Result<SyncRun> {
        let now = self.store.now();
        on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "UPDATE sync_runs SET status = $3, report = COALESCE($4, report), last_error = COALESCE($5, last_error), \
                 updated_at = $6, finished_at = $6 WHERE tenant_id = $1 AND id = $2 AND status = 'running'",
            )
            .bind(self.tenant_s())
            .bind(run.to_string())
            .bind(status.as_str())
            .bind(report.map(|r| r.to_string()))
            .bind(error)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        self.run(run).await
    }

    // ---- row errors ----

    pub async fn add_row_errors(&self, pipeline: Uuid, errors: &[NewRowError]) -> Result<()> {
        if errors.is_empty() {
            return Ok(());
        }
        let mut tx = self.store.begin().await?;
        let result = self.add_row_errors_in(&mut tx, pipeline, errors).await;
        finish(tx, result).await
    }

    async fn add_row_errors_in(&self, tx: &mut Tx, pipeline: Uuid, errors: &[NewRowError]) -> Result<()> {
        let now = self.store.now();
        for error in errors {
            on_tx!(tx, |conn| {
                sqlx::query(
                    "INSERT INTO sync_row_errors (pipeline_id, contact_id, email, code, message, at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(pipeline.to_string())
                .bind(&error.contact_id)
                .bind(error.email.as_deref())
                .bind(&error.code)
                .bind(&error.message)
                .bind(now)
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected())
            })
            .map_err(fk_not_found("sync pipeline"))?;
        }
        Ok(())
    }

    /// A pipeline's row dead letters, newest first.
    pub async fn row_errors(&self, pipeline: Uuid, limit: u32) -> Result<Vec<RowError>> {
        self.pipeline(pipeline).await?;
        let rows: Vec<(i64, String, Option<String>, String, String, i64)> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(
                "SELECT id, contact_id, email, code, message, at FROM sync_row_errors WHERE pipeline_id = $1 \
                 ORDER BY id DESC LIMIT $2",
            )
            .bind(pipeline.to_string())
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(pool)
            .await
        })?;
        Ok(rows
            .into_iter()
            .map(|(id, contact_id, email, code, message, at)| RowError { id, contact_id, email, code, message, at })
            .collect())
    }

    // ---- webhook deliveries ----

    /// Records a webhook delivery (its body sealed) and enqueues its jobs, in one transaction:
    /// the delivery is kept iff its jobs are. Answer the webhook only after this returned.
    pub async fn record_delivery(
        &self,
        connection: ConnectionId,
        body: &str,
        status: DeliveryStatus,
        error: Option<&str>,
        jobs: Vec<NewJob>,
    ) -> Result<Uuid> {
        let id = Uuid::new_v4();
        let sealed = self.store.vault.seal(body.as_bytes(), &delivery_context(id));
        let events = jobs.len() as u64;
        let mut tx = self.store.begin().await?;
        let result = async {
            on_tx!(&mut tx, |conn| {
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, tenant_id, connection_id, received_at, status, events, \
                     body_sealed, error) \
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
                     WHERE EXISTS (SELECT 1 FROM connections WHERE id = $3 AND tenant_id = $2)",
                )
                .bind(id.to_string())
                .bind(self.tenant_s())
                .bind(connection.to_string())
                .bind(self.store.now())
                .bind(status.as_str())
                .bind(to_i64(events))
                .bind(&sealed)
                .bind(error)
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected())
            })
            .map_err(StoreError::Database)
            .and_then(|n| if n == 0 { Err(StoreError::NotFound { entity: "connection" }) } else { Ok(()) })?;
            for job in jobs {
                tx.enqueue_job(self.store, self.tenant, job.connection(connection)).await?;
            }
            Ok(id)
        }
        .await;
        finish(tx, result).await
    }

    pub async fn delivery(&self, id: Uuid) -> Result<WebhookDelivery> {
        let row: Option<DeliveryRow> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(
                "SELECT id, connection_id, received_at, status, events, body_sealed, error FROM webhook_deliveries \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(self.tenant_s())
            .bind(id.to_string())
            .fetch_optional(pool)
            .await
        })?;
        self.open_delivery(row.ok_or(StoreError::NotFound { entity: "webhook delivery" })?)
    }

    /// Quarantined deliveries, oldest first.
    pub async fn quarantined(&self, limit: u32) -> Result<Vec<WebhookDelivery>> {
        let rows: Vec<DeliveryRow> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(
                "SELECT id, connection_id, received_at, status, events, body_sealed, error FROM webhook_deliveries \
                 WHERE tenant_id = $1 AND status = 'quarantined' ORDER BY received_at, id LIMIT $2",
            )
            .bind(self.tenant_s())
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter().map(|row| self.open_delivery(row)).collect()
    }

    /// Marks a quarantined delivery redriven and enqueues the jobs it makes now, in one
    /// transaction. `NotFound` when it is not quarantined (already redriven, say).
    pub async fn redrive_delivery(&self, id: Uuid, jobs: Vec<NewJob>) -> Result<()> {
        let mut tx = self.store.begin().await?;
        let result = async {
            let connection: Option<String> = on_tx!(&mut tx, |conn| {
                sqlx::query_scalar(
                    "UPDATE webhook_deliveries SET status = 'redriven', events = $3, error = NULL \
                     WHERE tenant_id = $1 AND id = $2 AND status = 'quarantined' RETURNING connection_id",
                )
                .bind(self.tenant_s())
                .bind(id.to_string())
                .bind(to_i64(jobs.len() as u64))
                .fetch_optional(&mut *conn)
                .await
            })?;
            let connection: ConnectionId = parse_id(
                "webhook delivery",
                &connection.ok_or(StoreError::NotFound { entity: "quarantined webhook delivery" })?,
            )?;
            for job in jobs {
                tx.enqueue_job(self.store, self.tenant, job.connection(connection)).await?;
            }
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    fn open_delivery(&self, row: DeliveryRow) -> Result<WebhookDelivery> {
        let id: Uuid = parse_id("webhook delivery", &row.id)?;
        let body = self.store.vault.open_string(&row.body_sealed, &delivery_context(id))?;
        Ok(WebhookDelivery {
            id,
            connection_id: parse_id("webhook delivery", &row.connection_id)?,
            received_at: row.received_at,
            status: DeliveryStatus::parse(&row.status)
                .ok_or_else(|| StoreError::corrupt("webhook delivery", &row.id, format!("status {:?}", row.status)))?,
            events: u64::try_from(row.events).unwrap_or(0),
            body: body.as_str().to_owned(),
            error: row.error,
        })
    }
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: String,
    connection_id: String,
    received_at: i64,
    status: String,
    events: i64,
    body_sealed: String,
    error: Option<String>,
}

fn delivery_context(id: Uuid) -> String {
    format!("webhook_delivery:{id}")
}
