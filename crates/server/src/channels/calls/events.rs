//! `POST /t/{tenant}/calls/events`: one call or SMS event from the platform, stored durably
//! before the answer. `call.started` also answers the screen pop.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crmhub_core::call::{CallId, CallPhase, Event, EventError};
use crmhub_core::channel_key::ChannelScope;
use crmhub_core::crm::{Capability, ContactSummary};
use crmhub_store::calls::{CallEventInput, StoredCall};
use crmhub_store::jobs::NewJob;
use serde_json::{Value, json};

use super::screen_pop::{Source, lookup_number};
use super::{CallChannel, JOB_PRIORITY, LOG_JOB, SMS_NOTE_JOB, crm_failure};
use crate::channels::keys::ChannelCaller;
use crate::channels::social_inbox::Endpoint;
use crate::channels::social_inbox::links::signed_url;
use crate::error::{ApiError, ApiResult};
use crate::extract::RawBody;
use crate::state::AppState;

/// A card URL in a screen pop lives this long at most (less if the social inbox allows less).
const CARD_URL_TTL_SECS: u32 = 300;

pub async fn post_event(State(state): State<AppState>, caller: ChannelCaller, RawBody(body): RawBody) -> Response {
    let kind = event_kind(&body);
    match accept(&state, caller, &body).await {
        Ok((outcome, response)) => {
            state.metrics.call_event(kind, outcome);
            response
        }
        Err(error) => {
            let outcome = match &error {
                ApiError::Unsupported(_) => "unsupported",
                ApiError::Forbidden | ApiError::Unauthorized => "refused",
                ApiError::Invalid(_) | ApiError::BadRequest(_) | ApiError::PayloadTooLarge(_) => "invalid",
                _ => "failed",
            };
            state.metrics.call_event(kind, outcome);
            error.into_response()
        }
    }
}

/// The event's type as a metric label: one of the known types or `unknown`, never the raw text.
fn event_kind(body: &[u8]) -> &'static str {
    let kind = serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("type")?.as_str().map(str::to_owned));
    crmhub_core::call::EVENT_TYPES.iter().find(|t| Some(**t) == kind.as_deref()).copied().unwrap_or("unknown")
}

async fn accept(state: &AppState, caller: ChannelCaller, body: &[u8]) -> ApiResult<(&'static str, Response)> {
    caller.require(ChannelScope::Calls)?;
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    let event = Event::parse(&value, caller.tenant.phone_region).map_err(|e| match e {
        EventError::UnknownType(_) => ApiError::invalid("type", e.to_string()),
        EventError::Field(e) => ApiError::Invalid(e),
    })?;
    let channel = CallChannel::load(state, caller.tenant).await?;
    match event {
        Event::Call { call_id, phase, facts } => {
            channel.require(match phase {
                CallPhase::Ringing => Capability::FindByPhone,
                _ => Capability::LogCall,
            })?;
            let kind = value.get("type").and_then(Value::as_str).unwrap_or_default();
            let input = CallEventInput {
                call_id: &call_id,
                phase,
                facts: &facts,
                connection: Some(channel.connection.id),
                kind,
                body: &value,
            };
            let recorded =
                state.store.calls(channel.tenant.id).record_event(input, log_job(&channel, &call_id)).await?;
            if recorded.job.is_some() {
                state.jobs_wake.notify_waiters();
            }
            let mut call = recorded.call;
            let mut pop = call.screen_pop.clone();
            if phase == CallPhase::Ringing && pop.is_none() {
                let (answer, kept) = screen_pop(state, &channel, &call).await;
                if let Some((stored, contact)) = kept {
                    call = state
                        .store
                        .calls(channel.tenant.id)
                        .keep_screen_pop(&call_id, &stored, contact.as_deref())
                        .await?;
                }
                pop = Some(answer);
            }
            let body = json!({"effect": recorded.effect, "call": call_view(&call, pop)});
            Ok((recorded.effect.as_str(), (StatusCode::ACCEPTED, Json(body)).into_response()))
        }
        Event::Sms(message) => {
            channel.require(Capability::AddNote)?;
            let job = NewJob::new(SMS_NOTE_JOB, json!({"message_id": message.message_id}))
                .dedupe_key(message.message_id.as_str())
                .connection(channel.connection.id)
                .priority(JOB_PRIORITY);
            let (stored, job) =
                state.store.sms_messages(channel.tenant.id).record(&message, Some(channel.connection.id), job).await?;
            let effect = if job.is_some() {
                state.jobs_wake.notify_waiters();
                "applied"
            } else {
                "duplicate"
            };
            Ok((effect, (StatusCode::ACCEPTED, Json(json!({"effect": effect, "sms": stored}))).into_response()))
        }
    }
}

pub fn log_job(channel: &CallChannel, call_id: &CallId) -> NewJob {
    NewJob::new(LOG_JOB, json!({"call_id": call_id}))
        .dedupe_key(call_id.as_str())
        .connection(channel.connection.id)
        .priority(JOB_PRIORITY)
}

/// The call as the API shows it: its state, the screen pop, and where its CRM log stands.
pub fn call_view(call: &StoredCall, screen_pop: Option<Value>) -> Value {
    json!({
        "call_id": call.call_id,
        "phase": call.phase,
        "facts": call.facts,
        "contact_id": call.contact_id,
        "screen_pop": screen_pop,
        "crm": {
            "record_id": call.record_id,
            "logged_stage": call.logged_stage,
            "up_to_date": call.is_logged(),
        },
        "created_at": call.created_at,
        "updated_at": call.updated_at,
    })
}

/// Looks the caller up. Returns the answer for the platform and, when the lookup settled who
/// is calling, what to keep on the call (the answer and the contact it matched); a failed
/// lookup is answered but not kept, so a repeated `call.started` or the log job tries again.
async fn screen_pop(
    state: &AppState,
    channel: &CallChannel,
    call: &StoredCall,
) -> (Value, Option<(Value, Option<String>)>) {
    let started = Instant::now();
    let number = lookup_number(call.facts.counterpart(), channel.tenant.phone_region);
    let Some(number) = number else {
        state.metrics.screen_pop_duration.get_or_create(&source_label(Source::Withheld)).observe(0.0);
        let answer = json!({"match": "none", "number": null, "contacts": [], "create_contact": null});
        return (answer.clone(), Some((answer, None)));
    };
    let ttl = Duration::from_secs(u64::from(channel.settings.screen_pop_cache_secs));
    let owner = (channel.tenant.id, channel.connection.id);
    let looked_up = state.screen_pops.lookup(owner, &number, ttl, channel.crm.as_ref()).await;
    let elapsed = started.elapsed().as_secs_f64();
    let contacts = match looked_up {
        Ok((contacts, source)) => {
            state.metrics.screen_pop_duration.get_or_create(&source_label(source)).observe(elapsed);
            contacts
        }
        Err(error) => {
            state
                .metrics
                .screen_pop_duration
                .get_or_create(&crate::metrics::ScreenPopLabels { source: "failed".into() })
                .observe(elapsed);
            tracing::warn!(tenant = %channel.tenant.slug, call_id = %call.call_id, error = %error, "screen pop lookup failed");
            let failure = crm_failure(&error).to_string();
            return (json!({"match": "unknown", "number": number.as_str(), "contacts": [], "error": failure}), None);
        }
    };
    let shown: Vec<&ContactSummary> = contacts.iter().take(channel.settings.max_matches as usize).collect();
    let card = card_signer(state, channel).await;
    let listed: Vec<Value> = shown
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "name": c.display_name,
                "company": c.company,
                "phones": c.phones,
                "card_url": card.as_ref().map(|sign| sign(&c.id)),
            })
        })
        .collect();
    let matched = match contacts.len() {
        0 => "none",
        1 => "one",
        _ => "many",
    };
    let create_contact = (contacts.is_empty())
        .then(|| json!({"method": "POST", "url": contacts_url(state, channel), "phone": number.as_str()}));
    let answer = json!({
        "match": matched,
        "number": number.as_str(),
        "total": contacts.len(),
        "contacts": listed,
        "create_contact": create_contact,
    });
    // Only a single match says who is calling; with several, the agent picks.
    let contact = (contacts.len() == 1).then(|| contacts[0].id.clone());
    (answer.clone(), Some((answer, contact)))
}

fn source_label(source: Source) -> crate::metrics::ScreenPopLabels {
    crate::metrics::ScreenPopLabels { source: source.as_str().to_owned() }
}

fn contacts_url(state: &AppState, channel: &CallChannel) -> Option<String> {
    let base = state.settings.public_url().ok()?;
    Some(format!("{}/t/{}/contacts", base.as_str().trim_end_matches('/'), channel.tenant.slug))
}

/// Signs card URLs the way the social inbox's platform does, when the tenant's social inbox
/// shows cards of the same connection: the agent opens the same card either way. Without it
/// there is no card secret, and pops carry no card URL.
async fn card_signer(state: &AppState, channel: &CallChannel) -> Option<impl Fn(&str) -> String> {
    let inbox = state.social_inbox.get(&state.store, channel.tenant.slug.as_str()).await.ok()??;
    if inbox.settings.connection_id != channel.connection.id {
        return None;
    }
    let secret = inbox.secrets(Endpoint::Iframe).iter().find(|s| s.retires_at.is_none())?.secret.clone();
    let public_url = state.settings.public_url().ok()?;
    let ttl = i64::from(CARD_URL_TTL_SECS.min(inbox.settings.max_ttl_secs));
    let expires = state.store.clock().now_millis() / 1000 + ttl;
    let slug = channel.tenant.slug.clone();
    Some(move |id: &str| signed_url(&public_url, &slug, Endpoint::Iframe, &[("id", id)], &secret, expires))
}
