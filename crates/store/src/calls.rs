//! The call-centre channel's calls and text messages: each call's merged state, the events that
//! made it, and where its CRM log stands.
//!
//! An event is applied in one transaction with the call row locked (created if missing, so
//! two `call.started` at once make one row), the event recorded, and the log job enqueued when
//! the change is one a log shows. The log job records the version it wrote under the same
//! lock; a change that landed meanwhile makes it schedule another run, so no change is lost
//! however the event and the job interleave.

use crmhub_core::call::{CallFacts, CallId, CallPhase, CallState, EventEffect, SmsMessage};
use crmhub_core::crm::CallStage;
use crmhub_core::{ConnectionId, TenantId, UnixMillis};
use serde::Serialize;
use serde_json::Value;

use crate::db::{Db, Tx, finish, on_pool, on_tx};
use crate::jobs::{Enqueued, NewJob};
use crate::rows::{parse_id, parse_json};
use crate::{Result, Store, StoreError};

/// A call as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredCall {
    pub call_id: CallId,
    pub connection_id: Option<ConnectionId>,
    pub phase: CallPhase,
    pub facts: CallFacts,
    /// The screen pop's answer, once the first `call.started` looked the caller up.
    pub screen_pop: Option<Value>,
    /// The contact the call is logged against.
    pub contact_id: Option<String>,
    /// The CRM record holding the call's log, once it exists.
    pub record_id: Option<String>,
    pub logged_stage: Option<CallStage>,
    pub version: i64,
    pub logged_version: i64,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

impl StoredCall {
    pub fn state(&self) -> CallState {
        CallState { phase: self.phase, facts: self.facts.clone() }
    }

    /// Whether the CRM shows everything the call knows.
    pub fn is_logged(&self) -> bool {
        self.logged_version >= self.version || self.phase.log_stage().is_none()
    }
}

/// An event as recorded on its call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallEventRecord {
    pub kind: String,
    pub effect: EventEffect,
    pub body: Value,
    pub received_at: UnixMillis,
}

/// What recording an event did.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub call: StoredCall,
    pub effect: EventEffect,
    /// The log job, when the change asked for one.
    pub job: Option<Enqueued>,
}

/// An event to record.
pub struct CallEventInput<'a> {
    pub call_id: &'a CallId,
    pub phase: CallPhase,
    pub facts: &'a CallFacts,
    /// The connection a new call is logged through.
    pub connection: Option<ConnectionId>,
    /// The event's type and body, kept for operators.
    pub kind: &'a str,
    pub body: &'a Value,
}

const COLUMNS: &str = "call_id, connection_id, phase, facts, screen_pop, contact_id, record_id, logged_stage, \
                       version, logged_version, created_at, updated_at";

type CallRow = (
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
);

fn stage_name(stage: CallStage) -> &'static str {
    match stage {
        CallStage::Answered => "answered",
        CallStage::Ended => "ended",
    }
}

fn stage_of(name: &str) -> Option<CallStage> {
    match name {
        "answered" => Some(CallStage::Answered),
        "ended" => Some(CallStage::Ended),
        _ => None,
    }
}

fn parse_call(row: CallRow) -> Result<StoredCall> {
    let (call_id, connection_id, phase, facts, screen_pop, contact_id, record_id, logged_stage, version, logged, c, u) =
        row;
    let corrupt = |reason: String| StoreError::corrupt("call", &call_id, reason);
    Ok(StoredCall {
        connection_id: connection_id.as_deref().map(|c| parse_id("call", c)).transpose()?,
        phase: CallPhase::parse(&phase).ok_or_else(|| corrupt(format!("unknown phase {phase:?}")))?,
        facts: parse_json("call", &call_id, &facts)?,
        screen_pop: screen_pop.as_deref().map(|p| parse_json("call", &call_id, p)).transpose()?,
        logged_stage: match logged_stage {
            None => None,
            Some(s) => Some(stage_of(&s).ok_or_else(|| corrupt(format!("unknown logged stage {s:?}")))?),
        },
        call_id: CallId::parse("call_id", &call_id).map_err(|e| corrupt(e.to_string()))?,
        contact_id,
        record_id,
        version,
        logged_version: logged,
        created_at: c,
        updated_at: u,
    })
}

pub struct Calls<'a> {
    store: &'a Store,
    tenant: TenantId,
}

impl Store {
    pub fn calls(&self, tenant: TenantId) -> Calls<'_> {
        Calls { store: self, tenant }
    }
}

/// `FOR UPDATE` where the backend has row locks; SQLite's `BEGIN IMMEDIATE` already holds
/// the database's one write lock.
fn lock_clause(db: &Db) -> &'static str {
    match db {
        Db::Sqlite(_) => "",
        Db::Postgres(_) => " FOR UPDATE",
    }
}

impl Calls<'_> {
    async fn locked(&self, tx: &mut Tx, call_id: &str) -> Result<Option<StoredCall>> {
        let sql =
            format!("SELECT {COLUMNS} FROM calls WHERE tenant_id = $1 AND call_id = $2{}", lock_clause(&self.store.db));
        let row: Option<CallRow> = on_tx!(tx, |conn| {
            sqlx::query_as(&sql).bind(self.tenant.to_string()).bind(call_id).fetch_optional(&mut *conn).await
        })?;
        row.map(parse_call).transpose()
    }

    /// Applies an event to its call, records it, and enqueues `log_job` when the call changed
    /// in a way its log shows. All or nothing.
    pub async fn record_event(&self, event: CallEventInput<'_>, log_job: NewJob) -> Result<Recorded> {
        let mut tx = self.store.begin().await?;
        let result = self.record_in(&mut tx, event, log_job).await;
        finish(tx, result).await
    }

    async fn record_in(&self, tx: &mut Tx, event: CallEventInput<'_>, log_job: NewJob) -> Result<Recorded> {
        let now = self.store.now();
        let tenant = self.tenant.to_string();
        let id = event.call_id.as_str();
        let fresh = CallState::apply(None, event.phase, event.facts).0;
        let inserted = on_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO calls (tenant_id, call_id, connection_id, phase, facts, version, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 1, $6, $6) ON CONFLICT (tenant_id, call_id) DO NOTHING",
            )
            .bind(&tenant)
            .bind(id)
            .bind(event.connection.map(|c| c.to_string()))
            .bind(fresh.phase.as_str())
            .bind(json(&fresh.facts))
            .bind(now)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound { entity: "tenant" },
            _ => StoreError::Database(e),
        })?;
        let (effect, changed) = if inserted == 1 {
            (EventEffect::Applied, true)
        } else {
            let current = self.locked(tx, id).await?.ok_or(StoreError::NotFound { entity: "call" })?;
            let (next, effect, changed) = CallState::apply(Some(&current.state()), event.phase, event.facts);
            if changed {
                on_tx!(tx, |conn| {
                    sqlx::query(
                        "UPDATE calls SET phase = $3, facts = $4, version = version + 1, updated_at = $5 \
                         WHERE tenant_id = $1 AND call_id = $2",
                    )
                    .bind(&tenant)
                    .bind(id)
                    .bind(next.phase.as_str())
                    .bind(json(&next.facts))
                    .bind(now)
                    .execute(&mut *conn)
                    .await
                    .map(|r| r.rows_affected())
                })?;
            }
            (effect, changed)
        };
        on_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO call_events (tenant_id, call_id, kind, effect, body, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&tenant)
            .bind(id)
            .bind(event.kind)
            .bind(effect.as_str())
            .bind(event.body.to_string())
            .bind(now)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
        })?;
        let call = self.locked(tx, id).await?.ok_or(StoreError::NotFound { entity: "call" })?;
        let job = if changed && !call.is_logged() {
            Some(tx.enqueue_job(self.store, self.tenant, log_job).await?)
        } else {
            None
        };
        Ok(Recorded { call, effect, job })
    }

    /// Keeps the screen pop's answer on the call (the first one wins: a repeated
    /// `call.started` shows what the agent saw first) and the contact it matched, and returns
    /// the call as it now stands.
    pub async fn keep_screen_pop(&self, call_id: &CallId, pop: &Value, contact_id: Option<&str>) -> Result<StoredCall> {
        on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "UPDATE calls SET screen_pop = COALESCE(screen_pop, $3), contact_id = COALESCE(contact_id, $4) \
                 WHERE tenant_id = $1 AND call_id = $2",
            )
            .bind(self.tenant.to_string())
            .bind(call_id.as_str())
            .bind(pop.to_string())
            .bind(contact_id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        self.get(call_id.as_str()).await?.ok_or(StoreError::NotFound { entity: "call" })
    }

    /// Keeps something done on the call's behalf (a ticket the agent created, say) among its
    /// events, for operators. The call itself is left as it is: its log does not show it.
    pub async fn record_note_event(&self, call_id: &CallId, kind: &str, body: &Value) -> Result<()> {
        on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "INSERT INTO call_events (tenant_id, call_id, kind, effect, body, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(self.tenant.to_string())
            .bind(call_id.as_str())
            .bind(kind)
            .bind(EventEffect::Applied.as_str())
            .bind(body.to_string())
            .bind(self.store.now())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound { entity: "call" },
            _ => StoreError::Database(e),
        })?;
        Ok(())
    }

    /// Makes `contact_id` the call's contact unless it has one, and then, in the same
    /// transaction, enqueues `log_job` when the call has a log to update (it is past ringing).
    /// Returns whether the contact was set, and the job when one was enqueued.
    pub async fn link_contact(
        &self,
        call_id: &CallId,
        contact_id: &str,
        log_job: NewJob,
    ) -> Result<(bool, Option<Enqueued>)> {
        let mut tx = self.store.begin().await?;
        let result = async {
            let id = call_id.as_str();
            let current = self.locked(&mut tx, id).await?.ok_or(StoreError::NotFound { entity: "call" })?;
            if current.contact_id.is_some() {
                return Ok((false, None));
            }
            on_tx!(&mut tx, |conn| {
                sqlx::query(
                    "UPDATE calls SET contact_id = $3, version = version + 1, updated_at = $4 \
                     WHERE tenant_id = $1 AND call_id = $2",
                )
                .bind(self.tenant.to_string())
                .bind(id)
                .bind(contact_id)
                .bind(self.store.now())
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected())
            })?;
            let call = self.locked(&mut tx, id).await?.ok_or(StoreError::NotFound { entity: "call" })?;
            let job =
                if call.is_logged() { None } else { Some(tx.enqueue_job(self.store, self.tenant, log_job).await?) };
            Ok((true, job))
        }
        .await;
        finish(tx, result).await
    }

    /// Records that the CRM shows the call as of `version`: its record, stage and contact.
    /// When the call changed since `version` was read, `requeue` is enqueued in the same
    /// transaction, so the newer state gets logged too. Returns whether it was.
    pub async fn mark_logged(
        &self,
        call_id: &CallId,
        version: i64,
        record_id: &str,
        stage: CallStage,
        contact_id: Option<&str>,
        requeue: NewJob,
    ) -> Result<bool> {
        let mut tx = self.store.begin().await?;
        let result = self.mark_logged_in(&mut tx, call_id, version, record_id, stage, contact_id, requeue).await;
        finish(tx, result).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn mark_logged_in(
        &self,
        tx: &mut Tx,
        call_id: &CallId,
        version: i64,
        record_id: &str,
        stage: CallStage,
        contact_id: Option<&str>,
        requeue: NewJob,
    ) -> Result<bool> {
        let current = self.locked(tx, call_id.as_str()).await?.ok_or(StoreError::NotFound { entity: "call" })?;
        let stage = current.logged_stage.map_or(stage, |s| s.max(stage));
        on_tx!(tx, |conn| {
            sqlx::query(
                "UPDATE calls SET record_id = $3, logged_stage = $4, contact_id = COALESCE(contact_id, $5), \
                 logged_version = CASE WHEN logged_version > $6 THEN logged_version ELSE $6 END, updated_at = $7 \
                 WHERE tenant_id = $1 AND call_id = $2",
            )
            .bind(self.tenant.to_string())
            .bind(call_id.as_str())
            .bind(record_id)
            .bind(stage_name(stage))
            .bind(contact_id)
            .bind(version)
            .bind(self.store.now())
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
        })?;
        if current.version > version {
            tx.enqueue_job(self.store, self.tenant, requeue).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Records that the call needs no log as of `version` (it never got past ringing).
    pub async fn mark_unlogged(&self, call_id: &CallId, version: i64) -> Result<()> {
        on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "UPDATE calls SET logged_version = $3 WHERE tenant_id = $1 AND call_id = $2 AND logged_version < $3",
            )
            .bind(self.tenant.to_string())
            .bind(call_id.as_str())
            .bind(version)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    pub async fn get(&self, call_id: &str) -> Result<Option<StoredCall>> {
        let sql = format!("SELECT {COLUMNS} FROM calls WHERE tenant_id = $1 AND call_id = $2");
        let row: Option<CallRow> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(&sql).bind(self.tenant.to_string()).bind(call_id).fetch_optional(pool).await
        })?;
        row.map(parse_call).transpose()
    }

    /// Calls changed at or after `since`, newest first.
    pub async fn list(&self, since: UnixMillis, limit: u32) -> Result<Vec<StoredCall>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM calls WHERE tenant_id = $1 AND updated_at >= $2 \
             ORDER BY updated_at DESC, call_id LIMIT $3"
        );
        let rows: Vec<CallRow> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(&sql).bind(self.tenant.to_string()).bind(since).bind(i64::from(limit)).fetch_all(pool).await
        })?;
        rows.into_iter().map(parse_call).collect()
    }

    /// The call's events in the order they arrived.
    pub async fn events(&self, call_id: &str) -> Result<Vec<CallEventRecord>> {
        let rows: Vec<(String, String, String, i64)> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(
                "SELECT kind, effect, body, received_at FROM call_events WHERE tenant_id = $1 AND call_id = $2 \
                 ORDER BY id",
            )
            .bind(self.tenant.to_string())
            .bind(call_id)
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter()
            .map(|(kind, effect, body, received_at)| {
                Ok(CallEventRecord {
                    effect: EventEffect::parse(&effect)
                        .ok_or_else(|| StoreError::corrupt("call event", call_id, format!("effect {effect:?}")))?,
                    body: parse_json("call event", call_id, &body)?,
                    kind,
                    received_at,
                })
            })
            .collect()
    }

    /// Removes calls (with their events) and text messages untouched since `cutoff`.
    pub async fn prune(&self, cutoff: UnixMillis) -> Result<u64> {
        let tenant = self.tenant.to_string();
        let calls = on_pool!(&self.store.db, |pool| {
            sqlx::query("DELETE FROM calls WHERE tenant_id = $1 AND updated_at < $2")
                .bind(&tenant)
                .bind(cutoff)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        let messages = on_pool!(&self.store.db, |pool| {
            sqlx::query("DELETE FROM sms_messages WHERE tenant_id = $1 AND updated_at < $2")
                .bind(&tenant)
                .bind(cutoff)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(calls + messages)
    }
}

/// A text message as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredSms {
    pub message: SmsMessage,
    pub connection_id: Option<ConnectionId>,
    pub contact_id: Option<String>,
    /// The CRM note, once written.
    pub note_id: Option<String>,
    pub created_at: UnixMillis,
}

pub struct SmsMessages<'a> {
    store: &'a Store,
    tenant: TenantId,
}

impl Store {
    pub fn sms_messages(&self, tenant: TenantId) -> SmsMessages<'_> {
        SmsMessages { store: self, tenant }
    }
}

type SmsRow = (String, String, Option<String>, Option<String>, Option<String>, i64);

impl SmsMessages<'_> {
    /// Stores a message and enqueues `note_job` for it, unless the message id is known already
    /// (a repeated event). Returns the stored message and whether it was new.
    pub async fn record(
        &self,
        message: &SmsMessage,
        connection: Option<ConnectionId>,
        note_job: NewJob,
    ) -> Result<(StoredSms, Option<Enqueued>)> {
        let mut tx = self.store.begin().await?;
        let result = async {
            let now = self.store.now();
            let inserted = on_tx!(&mut tx, |conn| {
                sqlx::query(
                    "INSERT INTO sms_messages (tenant_id, message_id, connection_id, message, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (tenant_id, message_id) DO NOTHING",
                )
                .bind(self.tenant.to_string())
                .bind(message.message_id.as_str())
                .bind(connection.map(|c| c.to_string()))
                .bind(json(message))
                .bind(now)
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected())
            })?;
            let job = if inserted == 1 { Some(tx.enqueue_job(self.store, self.tenant, note_job).await?) } else { None };
            Ok(job)
        }
        .await;
        let job = finish(tx, result).await?;
        let stored = self.get(message.message_id.as_str()).await?.ok_or(StoreError::NotFound { entity: "message" })?;
        Ok((stored, job))
    }

    pub async fn get(&self, message_id: &str) -> Result<Option<StoredSms>> {
        let row: Option<SmsRow> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(
                "SELECT message_id, message, connection_id, contact_id, note_id, created_at FROM sms_messages \
                 WHERE tenant_id = $1 AND message_id = $2",
            )
            .bind(self.tenant.to_string())
            .bind(message_id)
            .fetch_optional(pool)
            .await
        })?;
        row.map(|(id, message, connection_id, contact_id, note_id, created_at)| {
            Ok(StoredSms {
                message: parse_json("message", &id, &message)?,
                connection_id: connection_id.as_deref().map(|c| parse_id("message", c)).transpose()?,
                contact_id,
                note_id,
                created_at,
            })
        })
        .transpose()
    }

    /// Records the note written for the message.
    pub async fn mark_noted(&self, message_id: &str, contact_id: &str, note_id: &str) -> Result<()> {
        on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "UPDATE sms_messages SET contact_id = $3, note_id = $4, updated_at = $5 \
                 WHERE tenant_id = $1 AND message_id = $2",
            )
            .bind(self.tenant.to_string())
            .bind(message_id)
            .bind(contact_id)
            .bind(note_id)
            .bind(self.store.now())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}
