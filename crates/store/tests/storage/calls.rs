//! Calls, their events and text messages: events merge forward-only under the call's lock, the
//! log job is enqueued only for changes a log shows, `mark_logged` never loses a change that
//! landed while the log was written, and old calls and messages are pruned.

use std::time::Duration;

use crmhub_core::call::{Agent, CallFacts, CallId, CallPhase, CallState, EventEffect, SmsDirection, SmsMessage};
use crmhub_core::crm::CallStage;
use crmhub_core::{ConnectionId, TenantId};
use crmhub_store::calls::{CallEventInput, Recorded};
use crmhub_store::jobs::{Enqueued, JobFilter, JobStatus, NewJob, QueueDepth};
use crmhub_store::{Store, StoreError};
use serde_json::{Value, json};

use crate::harness::{TestDb, Which, connection, tenant};
use crate::on_both_backends;

const LEASE: Duration = Duration::from_secs(30);
const LOG_KIND: &str = "call.log";

on_both_backends!(
    events_merge_forward_only_and_every_event_is_kept,
    concurrent_events_for_a_new_call_make_one_row,
    mark_logged_requeues_only_when_the_call_moved_on,
    the_first_screen_pop_wins,
    a_change_while_the_log_job_runs_waits_for_it_and_is_logged_after,
    a_repeated_text_message_is_stored_and_noted_once,
    prune_removes_old_calls_with_their_events_and_old_messages,
    another_tenants_calls_and_messages_are_invisible,
);

fn call_id(raw: &str) -> CallId {
    CallId::parse("call_id", raw).unwrap()
}

fn phase_of(kind: &str) -> CallPhase {
    match kind {
        "call.started" => CallPhase::Ringing,
        "call.answered" => CallPhase::Answered,
        "call.ended" => CallPhase::Ended,
        "call.finalized" => CallPhase::Finalized,
        other => panic!("not a call event: {other}"),
    }
}

/// The log job the server enqueues for a call: one unit of work per call.
fn log_job(call: &str) -> NewJob {
    NewJob::new(LOG_KIND, json!({"call_id": call})).dedupe_key(format!("call:{call}"))
}

/// The body kept with the event; `facts` rides along so a test can replay the events.
fn body(kind: &str, call: &str, facts: &CallFacts) -> Value {
    json!({"type": kind, "call": {"call_id": call}, "facts": facts})
}

async fn record(store: &Store, tenant: TenantId, call: &str, kind: &str, facts: CallFacts) -> Recorded {
    record_via(store, tenant, call, kind, facts, None).await
}

async fn record_via(
    store: &Store,
    tenant: TenantId,
    call: &str,
    kind: &str,
    facts: CallFacts,
    connection: Option<ConnectionId>,
) -> Recorded {
    let id = call_id(call);
    let body = body(kind, call, &facts);
    let event = CallEventInput { call_id: &id, phase: phase_of(kind), facts: &facts, connection, kind, body: &body };
    store.calls(tenant).record_event(event, log_job(call)).await.unwrap()
}

async fn pending_log_jobs(store: &Store, tenant: TenantId, call: &str) -> usize {
    let filter = JobFilter {
        tenant: Some(tenant),
        status: Some(JobStatus::Pending),
        kind: Some(LOG_KIND.into()),
        ..Default::default()
    };
    let key = format!("call:{call}");
    store.jobs().list(&filter).await.unwrap().iter().filter(|j| j.dedupe_key.as_deref() == Some(&key)).count()
}

fn started() -> CallFacts {
    CallFacts { from: Some("0912345678".into()), started_at: Some(1_000), ..Default::default() }
}

fn answered(at: i64) -> CallFacts {
    CallFacts {
        answered_at: Some(at),
        agent: Some(Agent { id: Some("7".into()), name: Some("Lan".into()), email: None }),
        ..Default::default()
    }
}

fn ended() -> CallFacts {
    CallFacts { ended_at: Some(1_080), duration_secs: Some(60), ..Default::default() }
}

async fn events_merge_forward_only_and_every_event_is_kept(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let conn = connection(&store, &t, "Vtiger", "k1").await;
    let calls = store.calls(t.id);

    // A new call: one row, version 1, ringing, and no log job (a ringing call logs nothing).
    let first = record_via(&store, t.id, "c-1", "call.started", started(), Some(conn.id)).await;
    assert_eq!((first.effect, first.job), (EventEffect::Applied, None));
    assert_eq!((first.call.phase, first.call.version, first.call.logged_version), (CallPhase::Ringing, 1, 0));
    assert_eq!(first.call.connection_id, Some(conn.id));
    assert_eq!(first.call.created_at, store.clock().now_millis());
    assert!(first.call.is_logged(), "nothing to log while ringing");
    assert_eq!(store.jobs().depth(None).await.unwrap(), QueueDepth::default());

    // Answered: the stage moves and the pre-log is enqueued.
    db.clock.advance(Duration::from_secs(1));
    let answer = record(&store, t.id, "c-1", "call.answered", answered(1_010)).await;
    let Some(Enqueued::Created(log)) = answer.job else { panic!("answered enqueues the log: {:?}", answer.job) };
    assert_eq!((answer.effect, answer.call.phase, answer.call.version), (EventEffect::Applied, CallPhase::Answered, 2));
    assert_eq!(answer.call.facts.from.as_deref(), Some("0912345678"), "earlier facts kept");
    assert_eq!(answer.call.facts.answered_at, Some(1_010));
    assert_eq!(answer.call.connection_id, Some(conn.id), "a later event keeps the call's connection");
    assert!(!answer.call.is_logged());
    assert_eq!(answer.call.updated_at, store.clock().now_millis());

    // The platform's retry of the same event: nothing changes, nothing is enqueued.
    let again = record(&store, t.id, "c-1", "call.answered", answered(1_010)).await;
    assert_eq!((again.effect, again.job, again.call.version), (EventEffect::Duplicate, None, 2));
    assert_eq!(again.call.state(), answer.call.state());

    // Ended: the change joins the log job still pending for the call.
    let end = record(&store, t.id, "c-1", "call.ended", ended()).await;
    assert_eq!((end.effect, end.call.phase, end.call.version), (EventEffect::Applied, CallPhase::Ended, 3));
    assert_eq!(end.job, Some(Enqueued::Duplicate(log)));

    // A late answer: stale, the phase stays, only missing facts are taken.
    let late_facts = CallFacts { answered_at: Some(1_030), notes: Some("called back".into()), ..answered(1_030) };
    let late = record(&store, t.id, "c-1", "call.answered", late_facts).await;
    assert_eq!((late.effect, late.call.phase, late.call.version), (EventEffect::Stale, CallPhase::Ended, 4));
    assert_eq!(late.call.facts.answered_at, Some(1_010), "a stale event overwrites nothing");
    assert_eq!(late.call.facts.notes.as_deref(), Some("called back"), "but fills what was missing");
    assert_eq!(late.call.facts.duration_secs, Some(60));
    assert_eq!(late.job, Some(Enqueued::Duplicate(log)));

    // A stale event that brings nothing new changes nothing.
    let stale = record(&store, t.id, "c-1", "call.started", CallFacts { started_at: Some(999), ..started() }).await;
    assert_eq!((stale.effect, stale.job, stale.call.version), (EventEffect::Stale, None, 4));
    assert_eq!((stale.call.phase, stale.call.facts.started_at), (CallPhase::Ended, Some(1_000)));
    assert_eq!(calls.get("c-1").await.unwrap(), Some(stale.call.clone()), "get reads what record returned");

    let events = calls.events("c-1").await.unwrap();
    let seen: Vec<(&str, EventEffect)> = events.iter().map(|e| (e.kind.as_str(), e.effect)).collect();
    assert_eq!(
        seen,
        [
            ("call.started", EventEffect::Applied),
            ("call.answered", EventEffect::Applied),
            ("call.answered", EventEffect::Duplicate),
            ("call.ended", EventEffect::Applied),
            ("call.answered", EventEffect::Stale),
            ("call.started", EventEffect::Stale),
        ],
        "every event, in arrival order, with what it did"
    );
    assert_eq!(events[3].body, body("call.ended", "c-1", &ended()), "the body as posted");
    assert_eq!(events[0].received_at + 1_000, events[1].received_at);
    assert_eq!(pending_log_jobs(&store, t.id, "c-1").await, 1, "one log job for the call");
    assert_eq!(store.jobs().depth(None).await.unwrap(), QueueDepth { pending: 1, running: 0, dead: 0 });

    // Listed newest first; `since` bounds it.
    db.clock.advance(Duration::from_secs(5));
    let since = store.clock().now_millis();
    record(&store, t.id, "c-2", "call.started", started()).await;
    let listed: Vec<String> =
        calls.list(0, 10).await.unwrap().into_iter().map(|c| c.call_id.as_str().to_owned()).collect();
    assert_eq!(listed, ["c-2", "c-1"]);
    assert_eq!(calls.list(since, 10).await.unwrap().len(), 1);
    assert_eq!(calls.list(0, 1).await.unwrap().len(), 1);
    assert!(calls.get("c-3").await.unwrap().is_none());
    assert!(calls.events("c-3").await.unwrap().is_empty());
}

async fn concurrent_events_for_a_new_call_make_one_row(which: Which) {
    let db = TestDb::new(which).await;
    // Two stores = two pools, as two crmhub instances receiving the platform's retries.
    let first = db.open().await;
    let second = db.open().await;
    let t = tenant(&first, "acme").await;
    const EVENTS: usize = 20;
    let mut tasks = Vec::new();
    for i in 0..EVENTS {
        let store = if i % 2 == 0 { first.clone() } else { second.clone() };
        tasks.push(tokio::spawn(async move {
            // Five carry notes of their own, fifteen the same notes: whatever the order, at most
            // 1 + 2 × 5 events change the call and the rest are duplicates.
            let notes = if i % 4 == 0 { format!("own {i}") } else { "same".to_owned() };
            let facts = CallFacts { notes: Some(notes), ..started() };
            record(&store, t.id, "c-1", "call.started", facts).await
        }));
    }
    let mut recorded = Vec::new();
    for task in tasks {
        recorded.push(task.await.unwrap());
    }
    let call = first.calls(t.id).get("c-1").await.unwrap().expect("the call");
    assert_eq!(first.calls(t.id).list(0, 100).await.unwrap().len(), 1, "exactly one call row");
    assert!(recorded.iter().all(|r| r.job.is_none()), "a ringing call enqueues nothing");
    assert_eq!(recorded.iter().map(|r| r.call.version).max(), Some(call.version));

    // Replaying the events in the order they were recorded gives each recorded effect and the
    // stored state: every event saw the one before it (none was applied to a stale copy).
    let events = first.calls(t.id).events("c-1").await.unwrap();
    assert_eq!(events.len(), EVENTS, "every event kept");
    let mut state: Option<CallState> = None;
    let mut changes = 0;
    for event in &events {
        let facts: CallFacts = serde_json::from_value(event.body["facts"].clone()).unwrap();
        let (next, effect, changed) = CallState::apply(state.as_ref(), CallPhase::Ringing, &facts);
        assert_eq!(effect, event.effect, "effect of {:?}", event.body);
        changes += usize::from(changed);
        state = Some(next);
    }
    assert_eq!(state, Some(call.state()));
    assert_eq!(call.version, i64::try_from(changes).unwrap(), "the version counts changes only");
    assert_eq!(events.iter().filter(|e| e.effect == EventEffect::Applied).count(), changes);
    assert!((2..=11).contains(&changes), "{changes} of {EVENTS} changed the call");
    assert_eq!(events[0].effect, EventEffect::Applied);
}

async fn mark_logged_requeues_only_when_the_call_moved_on(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let calls = store.calls(t.id);
    let id = call_id("c-1");
    record(&store, t.id, "c-1", "call.started", started()).await;
    record(&store, t.id, "c-1", "call.answered", answered(1_010)).await;

    // The log job reads the call, writes the log, and records the version it wrote.
    let job = store.jobs().claim("w", LEASE).await.unwrap().expect("the log job");
    let read = calls.get("c-1").await.unwrap().unwrap();
    assert_eq!(read.version, 2);
    let requeued =
        calls.mark_logged(&id, read.version, "rec-1", CallStage::Answered, Some("contact-1"), log_job("c-1")).await;
    assert!(!requeued.unwrap(), "nothing changed since the read: no requeue");
    store.jobs().complete(&job).await.unwrap();
    let logged = calls.get("c-1").await.unwrap().unwrap();
    assert_eq!(logged.record_id.as_deref(), Some("rec-1"));
    assert_eq!((logged.logged_stage, logged.logged_version), (Some(CallStage::Answered), 2));
    assert_eq!(logged.contact_id.as_deref(), Some("contact-1"));
    assert!(logged.is_logged());
    assert_eq!(store.jobs().depth(None).await.unwrap(), QueueDepth::default());

    // The version was read, then an event landed: the job's mark asks for another run.
    let read = calls.get("c-1").await.unwrap().unwrap();
    let end = record(&store, t.id, "c-1", "call.ended", ended()).await;
    assert!(matches!(end.job, Some(Enqueued::Created(_))));
    let job = store.jobs().claim("w", LEASE).await.unwrap().expect("the ended log job");
    store.jobs().complete(&job).await.unwrap(); // say it logged what it read before the event
    assert_eq!(pending_log_jobs(&store, t.id, "c-1").await, 0);
    let requeued =
        calls.mark_logged(&id, read.version, "rec-1", CallStage::Answered, Some("contact-2"), log_job("c-1")).await;
    assert!(requeued.unwrap(), "the call moved on after the read");
    assert_eq!(pending_log_jobs(&store, t.id, "c-1").await, 1, "the newer state gets logged");
    let call = calls.get("c-1").await.unwrap().unwrap();
    assert_eq!((call.version, call.logged_version), (3, 2));
    assert!(!call.is_logged());
    assert_eq!(call.contact_id.as_deref(), Some("contact-1"), "the contact is only set while empty");

    // The requeued run logs the end.
    let job = store.jobs().claim("w", LEASE).await.unwrap().expect("the requeued job");
    assert!(!calls.mark_logged(&id, 3, "rec-1", CallStage::Ended, None, log_job("c-1")).await.unwrap());
    store.jobs().complete(&job).await.unwrap();
    let call = calls.get("c-1").await.unwrap().unwrap();
    assert_eq!((call.logged_stage, call.logged_version), (Some(CallStage::Ended), 3));
    assert!(call.is_logged());

    // A slow job reporting an earlier stage and version moves neither back.
    calls.mark_logged(&id, 2, "rec-1", CallStage::Answered, None, log_job("c-1")).await.unwrap();
    let call = calls.get("c-1").await.unwrap().unwrap();
    assert_eq!((call.logged_stage, call.logged_version), (Some(CallStage::Ended), 3));
    assert!(call.is_logged());

    // A call that never got past ringing is marked as needing no log, and that never goes back.
    let ringing = record(&store, t.id, "c-2", "call.started", started()).await.call;
    calls.mark_unlogged(&call_id("c-2"), ringing.version).await.unwrap();
    calls.mark_unlogged(&call_id("c-2"), 0).await.unwrap();
    assert_eq!(calls.get("c-2").await.unwrap().unwrap().logged_version, 1);
    // A log written without a contact leaves it open for a later mark that found one.
    let c3 = call_id("c-3");
    record(&store, t.id, "c-3", "call.answered", answered(5)).await;
    calls.mark_logged(&c3, 1, "rec-3", CallStage::Answered, None, log_job("c-3")).await.unwrap();
    assert_eq!(calls.get("c-3").await.unwrap().unwrap().contact_id, None);
    calls.mark_logged(&c3, 1, "rec-3", CallStage::Answered, Some("contact-3"), log_job("c-3")).await.unwrap();
    assert_eq!(calls.get("c-3").await.unwrap().unwrap().contact_id.as_deref(), Some("contact-3"));

    let missing = calls.mark_logged(&call_id("nope"), 1, "r", CallStage::Ended, None, log_job("nope")).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
    assert_eq!(pending_log_jobs(&store, t.id, "nope").await, 0, "nothing enqueued for an unknown call");
}

async fn the_first_screen_pop_wins(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let calls = store.calls(t.id);
    let id = call_id("c-1");
    record(&store, t.id, "c-1", "call.started", started()).await;

    let first_pop = json!({"contact": {"id": "12x1", "name": "Mai"}});
    let call = calls.keep_screen_pop(&id, &first_pop, Some("12x1")).await.unwrap();
    assert_eq!((call.screen_pop.as_ref(), call.contact_id.as_deref()), (Some(&first_pop), Some("12x1")));

    // A repeated call.started looks the caller up again: the agent keeps what it saw first.
    let call = calls.keep_screen_pop(&id, &json!({"contact": null}), Some("12x2")).await.unwrap();
    assert_eq!((call.screen_pop.as_ref(), call.contact_id.as_deref()), (Some(&first_pop), Some("12x1")));
    assert_eq!(calls.get("c-1").await.unwrap().unwrap(), call);

    // A pop that matched nobody leaves the contact for a later match.
    record(&store, t.id, "c-2", "call.started", started()).await;
    let call = calls.keep_screen_pop(&call_id("c-2"), &json!({"contact": null}), None).await.unwrap();
    assert_eq!((call.screen_pop, call.contact_id), (Some(json!({"contact": null})), None));
    calls.mark_logged(&call_id("c-2"), 1, "rec-2", CallStage::Answered, Some("12x9"), log_job("c-2")).await.unwrap();
    assert_eq!(calls.get("c-2").await.unwrap().unwrap().contact_id.as_deref(), Some("12x9"));

    let missing = calls.keep_screen_pop(&call_id("nope"), &first_pop, None).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
    assert!(calls.get("nope").await.unwrap().is_none(), "no call made up for a pop");
}

/// The interleaving that loses an update if the queue lets two log jobs of one call overlap:
/// job 1 reads the call, an event lands, job 2 would read the same call and both write.
async fn a_change_while_the_log_job_runs_waits_for_it_and_is_logged_after(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let calls = store.calls(t.id);
    let id = call_id("x");
    record(&store, t.id, "x", "call.started", started()).await;
    let first_job = record(&store, t.id, "x", "call.answered", answered(1_010)).await.job.unwrap().id();

    let running = store.jobs().claim("worker-1", LEASE).await.unwrap().expect("the log job");
    assert_eq!(running.id, first_job);
    let read = calls.get("x").await.unwrap().unwrap();

    // The hang-up lands while worker-1 writes the pre-log: a new run is scheduled (the running
    // job does not count for dedupe)…
    let end = record(&store, t.id, "x", "call.ended", ended()).await;
    let Some(Enqueued::Created(second_job)) = end.job else { panic!("a new log job: {:?}", end.job) };
    assert_ne!(second_job, first_job);
    // …but not started while worker-1 runs. Other work is not held back.
    record(&store, t.id, "y", "call.started", started()).await;
    let other = record(&store, t.id, "y", "call.answered", answered(1_020)).await.job.unwrap().id();
    let claimed = store.jobs().claim("worker-2", LEASE).await.unwrap().expect("another call's job");
    assert_eq!(claimed.id, other);
    store.jobs().complete(&claimed).await.unwrap();
    assert!(store.jobs().claim("worker-2", LEASE).await.unwrap().is_none(), "x's second job waits for the first");

    // worker-1 finishes with what it read; the mark sees the newer version.
    let requeued = calls.mark_logged(&id, read.version, "rec-x", CallStage::Answered, Some("c1"), log_job("x")).await;
    assert!(requeued.unwrap());
    assert_eq!(pending_log_jobs(&store, t.id, "x").await, 1, "the requeue joined the waiting job");
    store.jobs().complete(&running).await.unwrap();

    let next = store.jobs().claim("worker-2", LEASE).await.unwrap().expect("claimable once the first is done");
    assert_eq!(next.id, second_job);
    let read = calls.get("x").await.unwrap().unwrap();
    assert_eq!(read.phase, CallPhase::Ended);
    assert!(!calls.mark_logged(&id, read.version, "rec-x", CallStage::Ended, None, log_job("x")).await.unwrap());
    store.jobs().complete(&next).await.unwrap();
    let call = calls.get("x").await.unwrap().unwrap();
    assert!(call.is_logged());
    assert_eq!((call.logged_stage, call.record_id.as_deref()), (Some(CallStage::Ended), Some("rec-x")));
    assert_eq!(store.jobs().depth(None).await.unwrap(), QueueDepth::default());
}

fn sms(id: &str, text: &str) -> SmsMessage {
    SmsMessage {
        message_id: call_id(id),
        direction: SmsDirection::Received,
        from: Some("0912345678".into()),
        to: None,
        text: text.into(),
        at: Some(1_000),
        agent: None,
        call_id: Some(call_id("c-1")),
    }
}

fn note_job(id: &str) -> NewJob {
    NewJob::new("sms.note", json!({"message_id": id}))
}

async fn a_repeated_text_message_is_stored_and_noted_once(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let conn = connection(&store, &t, "Vtiger", "k1").await;
    let messages = store.sms_messages(t.id);

    let (stored, job) = messages.record(&sms("m-1", "hello"), Some(conn.id), note_job("m-1")).await.unwrap();
    assert!(matches!(job, Some(Enqueued::Created(_))), "{job:?}");
    assert_eq!((stored.message.clone(), stored.connection_id), (sms("m-1", "hello"), Some(conn.id)));
    assert_eq!((stored.contact_id.as_deref(), stored.note_id.as_deref()), (None, None));
    assert_eq!(stored.created_at, store.clock().now_millis());

    // The platform's retry: the first message stands and no second note is enqueued.
    db.clock.advance(Duration::from_secs(1));
    let (again, job) = messages.record(&sms("m-1", "hello again"), None, note_job("m-1")).await.unwrap();
    assert_eq!((job, again.clone()), (None, stored.clone()));
    assert_eq!(store.jobs().depth(None).await.unwrap(), QueueDepth { pending: 1, running: 0, dead: 0 });

    messages.mark_noted("m-1", "12x1", "note-1").await.unwrap();
    let noted = messages.get("m-1").await.unwrap().unwrap();
    assert_eq!((noted.contact_id.as_deref(), noted.note_id.as_deref()), (Some("12x1"), Some("note-1")));
    assert_eq!(noted.message, stored.message);
    assert!(messages.get("m-2").await.unwrap().is_none());
}

async fn prune_removes_old_calls_with_their_events_and_old_messages(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let calls = store.calls(t.id);
    let messages = store.sms_messages(t.id);
    record(&store, t.id, "old", "call.started", started()).await;
    record(&store, t.id, "old", "call.answered", answered(1_010)).await;
    record(&store, t.id, "touched", "call.started", started()).await;
    messages.record(&sms("m-old", "hi"), None, note_job("m-old")).await.unwrap();
    messages.record(&sms("m-noted", "hi"), None, note_job("m-noted")).await.unwrap();

    db.clock.advance(Duration::from_secs(3600));
    let cutoff = store.clock().now_millis();
    record(&store, t.id, "new", "call.started", started()).await;
    record(&store, t.id, "touched", "call.answered", answered(1_010)).await; // changed since
    messages.record(&sms("m-new", "hi"), None, note_job("m-new")).await.unwrap();
    messages.mark_noted("m-noted", "12x1", "note-1").await.unwrap(); // noted since

    let other = tenant(&store, "other").await;
    assert_eq!(store.calls(other.id).prune(cutoff).await.unwrap(), 0, "another tenant's prune");
    assert_eq!(calls.prune(cutoff).await.unwrap(), 2, "one call and one message");

    assert!(calls.get("old").await.unwrap().is_none());
    assert!(calls.events("old").await.unwrap().is_empty(), "its events went with it");
    assert!(messages.get("m-old").await.unwrap().is_none());
    for kept in ["new", "touched"] {
        assert!(calls.get(kept).await.unwrap().is_some(), "{kept}");
    }
    assert_eq!(calls.events("touched").await.unwrap().len(), 2, "a kept call keeps all its events");
    assert!(messages.get("m-new").await.unwrap().is_some());
    assert!(messages.get("m-noted").await.unwrap().is_some());

    // The same id again is a new call with only its own event.
    let again = record(&store, t.id, "old", "call.started", started()).await;
    assert_eq!((again.call.version, again.effect), (1, EventEffect::Applied));
    assert_eq!(calls.events("old").await.unwrap().len(), 1);
    // What changed at or after the cutoff stays.
    assert_eq!(calls.prune(cutoff).await.unwrap(), 0);
}

async fn another_tenants_calls_and_messages_are_invisible(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let a = tenant(&store, "tenant-a").await;
    let b = tenant(&store, "tenant-b").await;
    record(&store, a.id, "x", "call.started", started()).await;
    record(&store, a.id, "x", "call.answered", answered(1_010)).await;
    store.calls(a.id).keep_screen_pop(&call_id("x"), &json!({"contact": "a"}), Some("a-1")).await.unwrap();
    store.sms_messages(a.id).record(&sms("m", "for a"), None, note_job("m")).await.unwrap();
    let a_before = store.calls(a.id).get("x").await.unwrap().unwrap();

    let as_b = store.calls(b.id);
    assert!(as_b.get("x").await.unwrap().is_none());
    assert!(as_b.events("x").await.unwrap().is_empty());
    assert!(as_b.list(0, 100).await.unwrap().is_empty());
    assert!(matches!(
        as_b.keep_screen_pop(&call_id("x"), &json!({}), Some("b")).await,
        Err(StoreError::NotFound { .. })
    ));
    let mark = as_b.mark_logged(&call_id("x"), 1, "b-rec", CallStage::Ended, Some("b"), log_job("x")).await;
    assert!(matches!(mark, Err(StoreError::NotFound { .. })), "{mark:?}");
    as_b.mark_unlogged(&call_id("x"), 99).await.unwrap(); // silently affects nothing
    assert!(store.sms_messages(b.id).get("m").await.unwrap().is_none());
    store.sms_messages(b.id).mark_noted("m", "b", "b-note").await.unwrap(); // nothing either

    // The same platform ids under tenant B are B's own call and message.
    let b_call = record(&store, b.id, "x", "call.started", started()).await;
    assert_eq!((b_call.effect, b_call.call.version), (EventEffect::Applied, 1));
    assert_eq!(as_b.events("x").await.unwrap().len(), 1);
    let (_, job) = store.sms_messages(b.id).record(&sms("m", "for b"), None, note_job("m")).await.unwrap();
    assert!(job.is_some(), "B's message is new to B");
    db.clock.advance(Duration::from_secs(60));
    assert_eq!(as_b.prune(store.clock().now_millis()).await.unwrap(), 2);

    assert_eq!(store.calls(a.id).get("x").await.unwrap(), Some(a_before), "A's call untouched");
    assert_eq!(store.calls(a.id).events("x").await.unwrap().len(), 2);
    let a_msg = store.sms_messages(a.id).get("m").await.unwrap().unwrap();
    assert_eq!((a_msg.message.text.as_str(), a_msg.note_id), ("for a", None));

    // Events for a tenant that does not exist are refused, not stored.
    let ghost = TenantId::new();
    let id = call_id("g");
    let facts = started();
    let body = body("call.started", "g", &facts);
    let event = CallEventInput {
        call_id: &id,
        phase: CallPhase::Ringing,
        facts: &facts,
        connection: None,
        kind: "call.started",
        body: &body,
    };
    let refused = store.calls(ghost).record_event(event, log_job("g")).await;
    assert!(matches!(refused, Err(StoreError::NotFound { entity: "tenant" })), "{:?}", refused.map(|r| r.effect));
}
