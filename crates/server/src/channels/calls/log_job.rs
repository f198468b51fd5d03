//! The channel's jobs: a call's CRM log (`call.log`) and a text message's note (`sms.note`).
//!
//! A call's log job does not carry the event that scheduled it: it makes the CRM show the
//! call's stored state, whatever events arrived, in whatever order. Jobs of one call never
//! run at once (the queue holds a call's pending job while another runs), so lookup-then-
//! create cannot race. The CRM record id is stored on the call as soon as the write returns;
//! if crmhub dies before that, the next attempt finds the record by the call id written into
//! it (the connector's lookup), so a crash never makes a second record.

use crmhub_core::call::{CallId, CallPhase, SmsDirection};
use crmhub_core::crm::{CallDirection, CallLog, CrmError, NewNote};
use crmhub_core::time::utc_date_time;
use crmhub_store::jobs::ClaimedJob;
use serde_json::Value;

use super::screen_pop::lookup_number;
use crate::crm_access::AccessError;
use crate::jobs::{JobContext, JobHandler, JobOutcome};

pub struct CallLogJob;

fn payload_id(job: &ClaimedJob, key: &str) -> Result<CallId, JobOutcome> {
    let raw = job.payload.get(key).and_then(Value::as_str).unwrap_or_default();
    CallId::parse(key, raw).map_err(|e| JobOutcome::Fail(format!("the job's payload has no usable {key}: {e}")))
}

fn access_failure(error: AccessError) -> JobOutcome {
    match error {
        AccessError::Crm(e) => JobOutcome::Crm(e),
        AccessError::Store(e) => JobOutcome::Retry(e.to_string()),
    }
}

#[async_trait::async_trait]
impl JobHandler for CallLogJob {
    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> JobOutcome {
        let call_id = match payload_id(job, "call_id") {
            Ok(id) => id,
            Err(outcome) => return outcome,
        };
        let calls = ctx.store.calls(job.tenant_id);
        let call = match calls.get(call_id.as_str()).await {
            Ok(Some(call)) => call,
            // Pruned, or its tenant deleted: nothing left to log.
            Ok(None) => return JobOutcome::Done,
            Err(e) => return JobOutcome::Retry(e.to_string()),
        };
        if call.is_logged() {
            return JobOutcome::Done;
        }
        let Some(stage) = call.phase.log_stage() else { return JobOutcome::Done };
        let crm = match ctx.crm(job).await {
            Ok(crm) => crm,
            Err(e) => return access_failure(e),
        };
        let tenant = match ctx.store.tenants().get(job.tenant_id).await {
            Ok(tenant) => tenant,
            Err(e) => return JobOutcome::Retry(e.to_string()),
        };
        // The screen pop settled the contact when it found exactly one; a call whose pop
        // never ran (it started while the CRM was down, or its first event was a later one)
        // is matched here, by the same rule.
        let contact_id = match (&call.contact_id, &call.screen_pop) {
            (Some(contact), _) => Some(contact.clone()),
            (None, Some(_)) => None,
            (None, None) => match lookup_number(call.facts.counterpart(), tenant.phone_region) {
                None => None,
                Some(number) => match crm.find_by_phone(&number).await {
                    Ok(found) if found.len() == 1 => Some(found[0].id.clone()),
                    Ok(_) => None,
                    Err(e) => return JobOutcome::Crm(e),
                },
            },
        };
        let facts = &call.facts;
        let started_at = facts.started_at.or(facts.answered_at).unwrap_or(call.created_at / 1000);
        let log = CallLog {
            call_id: call.call_id.as_str().to_owned(),
            stage,
            direction: facts.direction.unwrap_or(CallDirection::Inbound),
            contact_id: contact_id.clone(),
            from: facts.from.clone(),
            to: facts.to.clone(),
            started_at,
            duration_secs: (call.phase >= CallPhase::Ended).then(|| facts.duration()).flatten(),
            outcome: facts.end_reason.map(|r| r.outcome()),
            agent: facts.agent.as_ref().and_then(|a| a.label()),
            notes: facts.notes.clone(),
            disposition: facts.disposition.clone(),
            recording_url: facts.recording_url.clone(),
            record_id: call.record_id.clone(),
        };
        let logged = match crm.log_call(&log).await {
            Ok(logged) => logged,
            // The contact was deleted in the CRM since it was matched: the call is still
            // logged, without the link, rather than lost.
            Err(CrmError::NotFound { .. }) if contact_id.is_some() => {
                let unlinked = CallLog { contact_id: None, ..log };
                match crm.log_call(&unlinked).await {
                    Ok(logged) => logged,
                    Err(e) => return JobOutcome::Crm(e),
                }
            }
            Err(e) => return JobOutcome::Crm(e),
        };
        let requeue = crmhub_store::jobs::NewJob::new(super::LOG_JOB, job.payload.clone())
            .dedupe_key(call.call_id.as_str())
            .priority(super::JOB_PRIORITY);
        let requeue = match job.connection_id {
            Some(connection) => requeue.connection(connection),
            None => requeue,
        };
        match calls
            .mark_logged(&call.call_id, call.version, &logged.record_id, stage, contact_id.as_deref(), requeue)
            .await
        {
            Ok(_) => JobOutcome::Done,
            // The record exists and carries the call id: the retry finds it.
            Err(e) => JobOutcome::Retry(e.to_string()),
        }
    }
}

pub struct SmsNoteJob;

#[async_trait::async_trait]
impl JobHandler for SmsNoteJob {
    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> JobOutcome {
        let message_id = match payload_id(job, "message_id") {
            Ok(id) => id,
            Err(outcome) => return outcome,
        };
        let messages = ctx.store.sms_messages(job.tenant_id);
        let stored = match messages.get(message_id.as_str()).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return JobOutcome::Done,
            Err(e) => return JobOutcome::Retry(e.to_string()),
        };
        if stored.note_id.is_some() {
            return JobOutcome::Done;
        }
        let crm = match ctx.crm(job).await {
            Ok(crm) => crm,
            Err(e) => return access_failure(e),
        };
        let message = &stored.message;
        // The call's contact when the message belongs to a matched call, else the one
        // contact with the number.
        let from_call = match &message.call_id {
            Some(call) => match ctx.store.calls(job.tenant_id).get(call.as_str()).await {
                Ok(call) => call.and_then(|c| c.contact_id),
                Err(e) => return JobOutcome::Retry(e.to_string()),
            },
            None => None,
        };
        let contact = match from_call {
            Some(contact) => contact,
            None => {
                let tenant = match ctx.store.tenants().get(job.tenant_id).await {
                    Ok(tenant) => tenant,
                    Err(e) => return JobOutcome::Retry(e.to_string()),
                };
                let Some(number) = lookup_number(message.counterpart(), tenant.phone_region) else {
                    return JobOutcome::Fail("the message's number is withheld: no contact to keep it on".into());
                };
                match crm.find_by_phone(&number).await {
                    Ok(found) if found.len() == 1 => found[0].id.clone(),
                    Ok(found) if found.is_empty() => {
                        return JobOutcome::Fail(format!("no contact has the number {}", number.as_str()));
                    }
                    Ok(found) => {
                        return JobOutcome::Fail(format!(
                            "{} contacts have the number {}; the note needs one",
                            found.len(),
                            number.as_str()
                        ));
                    }
                    Err(e) => return JobOutcome::Crm(e),
                }
            }
        };
        let note = NewNote { contact_id: contact.clone(), body: note_body(message) };
        let note_id = match crm.add_note(&note).await {
            Ok(id) => id,
            Err(e) => return JobOutcome::Crm(e),
        };
        match messages.mark_noted(message_id.as_str(), &contact, &note_id).await {
            Ok(()) => JobOutcome::Done,
            Err(e) => JobOutcome::Retry(e.to_string()),
        }
    }
}

/// `SMS sent to +84… by Lan (2026-12-01 09:30:00 UTC):` and the text.
fn note_body(message: &crmhub_core::call::SmsMessage) -> String {
    let (verb, party) = match message.direction {
        SmsDirection::Sent => ("sent to", message.to.as_deref()),
        SmsDirection::Received => ("received from", message.from.as_deref()),
    };
    let mut head = format!("SMS {verb} {}", party.unwrap_or("?"));
    if let Some(agent) = message.agent.as_ref().and_then(|a| a.label()) {
        head.push_str(&format!(" by {agent}"));
    }
    if let Some(at) = message.at {
        let (date, time) = utc_date_time(at);
        head.push_str(&format!(" ({date} {time} UTC)"));
    }
    format!("{head}:\n{}", message.text)
}
