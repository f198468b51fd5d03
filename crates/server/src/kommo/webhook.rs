//! The webhook destination registered at a connection's Kommo account:
//! `{public_url}/hooks/kommo/{connection_id}/{secret}`. Kommo's account webhooks are not
//! signed, so the random path secret is what authenticates a delivery; crmhub keeps only its
//! hash (and the whole URL sealed, to unregister it), and never shows it.
//! Receiving the deliveries is a later issue.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use crmhub_connectors::http::Lane;
use crmhub_core::crm::CrmError;
use crmhub_core::{ConnectorKind, Secret};
use crmhub_store::connections::Connection;
use crmhub_store::kommo::{KommoWebhook, hash_token};
use crmhub_store::tenants::Tenant;
use serde_json::{Value, json};

use super::client::{KommoAccount, WEBHOOK_EVENTS};
use super::not_kommo;
use crate::admin::AdminAuth;
use crate::crm_access::AccessError;
use crate::error::{ApiError, ApiResult};
use crate::extract::PathParams;
use crate::state::AppState;

async fn load(state: &AppState, slug: &str, id: &str) -> ApiResult<(Tenant, Connection, KommoAccount)> {
    let tenant = crate::admin::tenant(state, slug).await?;
    let connection = state.store.connections(tenant.id).get(crate::admin::connection_id(id)?).await?;
    if connection.kind != ConnectorKind::Kommo {
        return Err(not_kommo("a Kommo webhook"));
    }
    let account = KommoAccount::build(&state.store, &state.connectors, &tenant, &connection, Lane::Interactive)
        .await
        .map_err(|e| match e {
        AccessError::Store(e) => e.into(),
        AccessError::Crm(e) => crm_error(e),
    })?;
    Ok((tenant, connection, account))
}

fn crm_error(error: CrmError) -> ApiError {
    crate::channels::calls::crm_failure(&error)
}

/// A new destination for the connection, with its secret.
fn new_destination(state: &AppState, connection: &Connection) -> ApiResult<(url::Url, Secret)> {
    let secret = Secret::generate();
    let mut url = state.settings.public_url().map_err(|e| ApiError::Internal(e.into()))?;
    url.path_segments_mut()
        .map_err(|()| ApiError::Internal(anyhow::anyhow!("server.public_url cannot take a path")))?
        .pop_if_empty()
        .extend(["hooks", "kommo", &connection.id.to_string(), secret.expose()]);
    Ok((url, secret))
}

fn parse_destination(webhook: &KommoWebhook) -> ApiResult<url::Url> {
    url::Url::parse(webhook.destination.expose())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("a stored kommo webhook destination is not a URL: {e}")))
}

/// The destination as shown: its last segment, the secret, masked.
fn masked(destination: &url::Url) -> String {
    let shown = destination.as_str();
    match shown.rfind('/') {
        Some(i) => format!("{}/********", &shown[..i]),
        None => "********".into(),
    }
}

fn shown(webhook: &KommoWebhook, destination: &url::Url) -> Value {
    json!({
        "connection_id": webhook.connection_id,
        "destination": masked(destination),
        "events": webhook.events,
        "registered_at": webhook.registered_at,
    })
}

/// `PUT …/kommo/webhook`: registers the destination (201), or registers the existing one again
/// and shows it (200): repeating the call changes nothing.
pub(super) async fn register(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (tenant, connection, account) = load(&state, &slug, &id).await?;
    let kommo = state.store.kommo(tenant.id);
    if let Some(existing) = kommo.webhook(connection.id).await? {
        let destination = parse_destination(&existing)?;
        account.subscribe_webhook(&destination, &WEBHOOK_EVENTS).await.map_err(crm_error)?;
        return Ok((StatusCode::OK, Json(shown(&existing, &destination))));
    }
    let (destination, secret) = new_destination(&state, &connection)?;
    account.subscribe_webhook(&destination, &WEBHOOK_EVENTS).await.map_err(crm_error)?;
    let saved = kommo
        .save_webhook(connection.id, &Secret::new(destination.as_str()), &hash_token(secret.expose()), &WEBHOOK_EVENTS)
        .await?;
    tracing::info!(tenant = %slug, connection = %connection.id, "kommo webhook registered");
    Ok((StatusCode::CREATED, Json(shown(&saved, &destination))))
}

/// `POST …/kommo/webhook/rotate`: registers a destination with a new secret, then unregisters
/// the old one (so no delivery is lost in between).
pub(super) async fn rotate(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (tenant, connection, account) = load(&state, &slug, &id).await?;
    let kommo = state.store.kommo(tenant.id);
    let Some(old) = kommo.webhook(connection.id).await? else {
        return Err(ApiError::NotFound("this connection has no Kommo webhook; register one first (PUT)".into()));
    };
    let old_destination = parse_destination(&old)?;
    let (destination, secret) = new_destination(&state, &connection)?;
    account.subscribe_webhook(&destination, &WEBHOOK_EVENTS).await.map_err(crm_error)?;
    let saved = kommo
        .save_webhook(connection.id, &Secret::new(destination.as_str()), &hash_token(secret.expose()), &WEBHOOK_EVENTS)
        .await?;
    let old_unregistered = match account.unsubscribe_webhook(&old_destination).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(connection = %connection.id, error = %e, "the old kommo webhook could not be unregistered");
            false
        }
    };
    tracing::info!(tenant = %slug, connection = %connection.id, "kommo webhook rotated");
    let mut answer = shown(&saved, &destination);
    answer["old_unregistered"] = old_unregistered.into();
    Ok(Json(answer))
}

/// `DELETE …/kommo/webhook`: unregisters at Kommo, then forgets it.
pub(super) async fn remove(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    let (tenant, connection, account) = load(&state, &slug, &id).await?;
    let kommo = state.store.kommo(tenant.id);
    let Some(existing) = kommo.webhook(connection.id).await? else {
        return Err(ApiError::NotFound("this connection has no Kommo webhook".into()));
    };
    account.unsubscribe_webhook(&parse_destination(&existing)?).await.map_err(crm_error)?;
    kommo.delete_webhook(connection.id).await?;
    tracing::info!(tenant = %slug, connection = %connection.id, "kommo webhook unregistered");
    Ok(StatusCode::NO_CONTENT)
}

/// Before a kommo connection is deleted: unregisters its webhook at Kommo, best effort (the
/// deletion goes ahead whatever Kommo answers; a failure is logged).
pub async fn unregister_on_delete(state: &AppState, tenant: &Tenant, connection: &Connection) {
    if connection.kind != ConnectorKind::Kommo {
        return;
    }
    let webhook = match state.store.kommo(tenant.id).webhook(connection.id).await {
        Ok(Some(webhook)) => webhook,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(connection = %connection.id, error = %e, "could not read the kommo webhook to unregister it");
            return;
        }
    };
    let outcome = async {
        let account = KommoAccount::build(&state.store, &state.connectors, tenant, connection, Lane::Interactive)
            .await
            .map_err(|e| e.to_string())?;
        let destination = url::Url::parse(webhook.destination.expose()).map_err(|e| e.to_string())?;
        account.unsubscribe_webhook(&destination).await.map_err(|e| e.to_string())
    };
    match outcome.await {
        Ok(()) => tracing::info!(connection = %connection.id, "kommo webhook unregistered with its connection"),
        Err(error) => {
            tracing::warn!(connection = %connection.id, %error, "could not unregister the kommo webhook; deleting anyway")
        }
    }
}
