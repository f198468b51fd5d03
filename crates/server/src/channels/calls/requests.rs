//! What an agent's UI asks for during a call: a ticket (`POST /t/{tenant}/calls/{call_id}/ticket`),
//! a contact (`POST /t/{tenant}/contacts`) and a text message (`POST /t/{tenant}/sms`).
//!
//! Each takes an `Idempotency-Key` (see [`crate::idempotency`]): an agent's double click or a
//! UI's retry after a timeout gets the first answer back instead of a second ticket, contact or
//! SMS. Bodies are read and checked before the key is looked at, so a refused body never
//! reaches the key store; everything that depends on stored state (the channel, the call)
//! runs inside the idempotent work, so a repeat is answered from the key alone.
//!
//! Once the CRM or the SMS provider has accepted the write, a failure to record it locally
//! is logged, not answered as an error: an error would release the key, and the client's
//! retry would write a second ticket, contact or message.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use crmhub_core::call::{CallId, SmsDirection, SmsMessage};
use crmhub_core::channel_key::ChannelScope;
use crmhub_core::crm::{Capability, NewContact, NewTicket, TicketPriority};
use crmhub_core::phone::PhoneNumber;
use crmhub_core::tenant::PhoneRegion;
use crmhub_core::{ConnectionStatus, FieldError};
use crmhub_store::StoreError;
use crmhub_store::calls::StoredCall;
use crmhub_store::jobs::NewJob;
use crmhub_store::tenants::Tenant;
use serde::Deserialize;
use serde_json::json;

use super::events::log_job;
use super::{CallChannel, JOB_PRIORITY, SMS_NOTE_JOB, crm_failure};
use crate::channels::keys::ChannelCaller;
use crate::crm_access::AccessError;
use crate::error::{ApiError, ApiResult};
use crate::extract::{PathParams, RawBody, parse_json};
use crate::idempotency::{self, IdempotencyKey};
use crate::state::AppState;

const TICKET_ROUTE: &str = "POST /t/{tenant}/calls/{call_id}/ticket";
const CONTACT_ROUTE: &str = "POST /t/{tenant}/contacts";
const SMS_ROUTE: &str = "POST /t/{tenant}/sms";

/// Vtiger's `ticket_title` is a varchar(255); other CRMs allow as much.
const MAX_TITLE_CHARS: usize = 255;

/// The call event kind a created ticket is kept under.
pub const TICKET_EVENT: &str = "ticket.created";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketBody {
    title: String,
    description: Option<String>,
    priority: Option<TicketPriority>,
    contact_id: Option<String>,
}

pub async fn create_ticket(
    State(state): State<AppState>,
    caller: ChannelCaller,
    PathParams((_, call_id)): PathParams<(String, String)>,
    key: Option<IdempotencyKey>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    caller.require(ChannelScope::Calls)?;
    let input: TicketBody = parse_json(&body)?;
    let title = input.title.trim();
    if title.is_empty() {
        return Err(ApiError::invalid("title", "is required"));
    }
    let chars = title.chars().count();
    if chars > MAX_TITLE_CHARS {
        return Err(ApiError::invalid("title", format!("must be at most {MAX_TITLE_CHARS} characters (got {chars})")));
    }
    let ticket = NewTicket {
        contact_id: non_empty(input.contact_id),
        title: title.to_owned(),
        description: non_empty(input.description),
        priority: input.priority,
    };
    // The key's scope is the route, not the path: the call id is part of what a repeat must
    // match, so the same key on another call is a mismatch rather than the first call's ticket.
    let fingerprint = [call_id.as_bytes(), &[0], &body].concat();
    let store = state.store.clone();
    let tenant = caller.tenant.id;
    Ok(idempotency::once(&store, tenant, TICKET_ROUTE, key.as_ref(), &fingerprint, async move {
        let channel = CallChannel::load(&state, caller.tenant).await?;
        channel.require(Capability::CreateTicket)?;
        let call = existing_call(&state, &channel.tenant, &call_id).await?;
        let ticket = NewTicket { contact_id: ticket.contact_id.or_else(|| call.contact_id.clone()), ..ticket };
        let ticket_id = channel.crm.create_ticket(&ticket).await.map_err(|e| crm_failure(&e))?;
        let event = json!({"ticket_id": ticket_id, "contact_id": ticket.contact_id, "title": ticket.title});
        if let Err(e) =
            state.store.calls(channel.tenant.id).record_note_event(&call.call_id, TICKET_EVENT, &event).await
        {
            tracing::warn!(tenant = %channel.tenant.slug, call_id = %call.call_id, ticket_id, error = %e,
                "the ticket was created but could not be kept on the call");
        }
        let answer = json!({"ticket_id": ticket_id, "contact_id": ticket.contact_id, "call_id": call.call_id});
        Ok::<_, ApiError>((StatusCode::CREATED, Json(answer)))
    })
    .await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactBody {
    first_name: Option<String>,
    last_name: String,
    email: Option<String>,
    phone: Option<String>,
    mobile: Option<String>,
    title: Option<String>,
    description: Option<String>,
    call_id: Option<String>,
}

pub async fn create_contact(
    State(state): State<AppState>,
    caller: ChannelCaller,
    key: Option<IdempotencyKey>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    caller.require(ChannelScope::Calls)?;
    let input: ContactBody = parse_json(&body)?;
    let region = caller.tenant.phone_region;
    let contact = NewContact {
        first_name: non_empty(input.first_name),
        last_name: input.last_name.trim().to_owned(),
        email: non_empty(input.email),
        phone: phone_field("phone", input.phone, region)?,
        mobile: phone_field("mobile", input.mobile, region)?,
        title: non_empty(input.title),
        description: non_empty(input.description),
    };
    contact.validate().map_err(|e| crm_failure(&e))?;
    let call_id = input.call_id.map(|raw| CallId::parse("call_id", &raw)).transpose()?;
    let store = state.store.clone();
    let tenant = caller.tenant.id;
    Ok(idempotency::once(&store, tenant, CONTACT_ROUTE, key.as_ref(), &body, async move {
        let channel = CallChannel::load(&state, caller.tenant).await?;
        channel.require(Capability::CreateContact)?;
        let call = match &call_id {
            Some(id) => Some(existing_call(&state, &channel.tenant, id.as_str()).await?),
            None => None,
        };
        let created = channel.crm.create_contact(&contact).await.map_err(|e| crm_failure(&e))?;
        let linked = match &call {
            None => false,
            Some(call) => {
                let calls = state.store.calls(channel.tenant.id);
                match calls.link_contact(&call.call_id, &created.id, log_job(&channel, &call.call_id)).await {
                    Ok((linked, job)) => {
                        if job.is_some() {
                            state.jobs_wake.notify_waiters();
                        }
                        linked
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %channel.tenant.slug, call_id = %call.call_id, contact_id = created.id,
                            error = %e, "the contact was created but could not be linked to the call");
                        false
                    }
                }
            }
        };
        let answer = json!({"contact": created, "call_id": call_id, "linked": linked});
        Ok::<_, ApiError>((StatusCode::CREATED, Json(answer)))
    })
    .await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SmsBody {
    to: String,
    text: String,
    sender: Option<String>,
    call_id: Option<String>,
}

pub async fn send_sms(
    State(state): State<AppState>,
    caller: ChannelCaller,
    key: Option<IdempotencyKey>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    caller.require(ChannelScope::Calls)?;
    let input: SmsBody = parse_json(&body)?;
    let to = PhoneNumber::parse(&input.to, caller.tenant.phone_region)
        .map_err(|e| ApiError::invalid("to", format!("{:?} is not a phone number: {e}", input.to)))?;
    if input.text.trim().is_empty() {
        return Err(ApiError::invalid("text", "is required"));
    }
    let call_id = input.call_id.map(|raw| CallId::parse("call_id", &raw)).transpose()?;
    let sender = non_empty(input.sender);
    let text = input.text;
    let store = state.store.clone();
    let tenant = caller.tenant.id;
    Ok(idempotency::once(&store, tenant, SMS_ROUTE, key.as_ref(), &body, async move {
        let channel = CallChannel::load(&state, caller.tenant).await?;
        // The note lands on the contact through `sms.note`: a CRM without notes would only
        // make that job die after the message went out.
        channel.require(Capability::AddNote)?;
        let Some(sms_connection) = channel.settings.sms_connection_id else {
            return Err(ApiError::Unsupported(format!(
                "the call-centre channel has no SMS connection: set sms_connection_id \
                 (PUT /admin/v1/tenants/{}/channels/calls)",
                channel.tenant.slug
            )));
        };
        if let Some(id) = &call_id {
            existing_call(&state, &channel.tenant, id.as_str()).await?;
        }
        let connection = match state.store.connections(channel.tenant.id).get(sms_connection).await {
            Ok(connection) => connection,
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::Unavailable("the call-centre channel's SMS connection no longer exists".into()));
            }
            Err(e) => return Err(e.into()),
        };
        if connection.status == ConnectionStatus::Disabled {
            return Err(ApiError::Unavailable("the call-centre channel's SMS connection is disabled".into()));
        }
        let provider = state.crms.sms(&state.store, &state.connectors, &channel.tenant, &connection).await.map_err(
            |e| match e {
                AccessError::Store(e) => ApiError::from(e),
                AccessError::Crm(e) => crm_failure(&e),
            },
        )?;
        let receipt = provider.send_sms(&to, &text, sender.as_deref()).await.map_err(|e| crm_failure(&e))?;
        let message_id = receipt
            .message_id
            .and_then(|id| CallId::parse("message_id", &id).ok())
            .unwrap_or_else(generated_message_id);
        let message = SmsMessage {
            message_id: message_id.clone(),
            direction: SmsDirection::Sent,
            from: None,
            to: Some(to.as_str().to_owned()),
            text,
            at: Some(state.store.clock().now_millis() / 1000),
            agent: None,
            call_id,
        };
        let job = NewJob::new(SMS_NOTE_JOB, json!({"message_id": message_id}))
            .dedupe_key(message_id.as_str())
            .connection(channel.connection.id)
            .priority(JOB_PRIORITY);
        let note = match state
            .store
            .sms_messages(channel.tenant.id)
            .record(&message, Some(channel.connection.id), job)
            .await
        {
            Ok((_, job)) => {
                if job.is_some() {
                    state.jobs_wake.notify_waiters();
                }
                "queued"
            }
            Err(e) => {
                tracing::warn!(tenant = %channel.tenant.slug, message_id = %message_id, error = %e,
                    "the SMS was sent but could not be recorded for its note");
                "failed"
            }
        };
        let answer = json!({"message_id": message_id, "to": to.as_str(), "note": note});
        Ok((StatusCode::CREATED, Json(answer)))
    })
    .await)
}

/// A message id when the provider returns none (or one too odd to store).
fn generated_message_id() -> CallId {
    CallId::parse("message_id", &format!("crmhub-{}", uuid::Uuid::new_v4())).expect("a uuid is a valid id")
}

/// The call a request names; 404 before anything is written when it is unknown (its first
/// event may still be on its way, so a retry may find it).
async fn existing_call(state: &AppState, tenant: &Tenant, call_id: &str) -> ApiResult<StoredCall> {
    state.store.calls(tenant.id).get(call_id).await?.ok_or_else(|| ApiError::NotFound(format!("no call {call_id:?}")))
}

/// A trimmed text; empty counts as absent.
fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// A phone number as typed, once it parses in the tenant's region: the CRM keeps what the
/// agent wrote, and lookups match it in any format.
fn phone_field(field: &str, value: Option<String>, region: Option<PhoneRegion>) -> Result<Option<String>, FieldError> {
    let Some(raw) = non_empty(value) else { return Ok(None) };
    match PhoneNumber::parse(&raw, region) {
        Ok(_) => Ok(Some(raw)),
        Err(e) => Err(FieldError::new(field, format!("{raw:?} is not a phone number: {e}"))),
    }
}
