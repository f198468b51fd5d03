//! `POST /kommo/widget/settings`: crmhub's Kommo widget saves the Unisender API key and list.
//!
//! The widget authenticates with Kommo's `X-Auth-Token`: a JWT signed HS256 with the
//! integration's client secret. Checked in this order, each failure a 401 naming the check
//! (never the token): the header is there; the algorithm is HS256 (no other, never `none`);
//! `client_uuid` names a kommo connection's integration; the signature verifies with its
//! client secret; `exp` and `nbf` hold (30 s leeway); `iss` is `https://{account domain}`;
//! `aud` is crmhub's public URL origin (our reading: the widget's backend is crmhub); and
//! `account_id` is the Kommo account the connection was connected to.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crmhub_connectors::http::Lane;
use crmhub_core::{ConnectorKind, FieldError, Secret};
use crmhub_store::connections::Connection;
use crmhub_store::tenants::Tenant;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};

use super::client::KommoAccount;
use crate::crm_access::AccessError;
use crate::error::{ApiError, ApiResult};
use crate::extract::{RawBody, parse_json};
use crate::state::AppState;

pub const LEEWAY_SECS: i64 = 30;

#[derive(Debug, Deserialize)]
struct Claims {
    iss: Option<String>,
    aud: Option<Value>,
    exp: Option<i64>,
    nbf: Option<i64>,
    account_id: Option<i64>,
    user_id: Option<i64>,
    client_uuid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    unisender_api_key: String,
    unisender_list_id: String,
}

/// A failed check, as a 401 naming it.
fn refused(check: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::Refused(format!("X-Auth-Token refused: {check}: {why}"))
}

pub(super) async fn save_settings(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Json<Value>> {
    let (tenant, connection, claims) = authenticate(&state, &headers).await?;
    let body: SettingsBody = parse_json(&body)?;
    let api_key = body.unisender_api_key.trim();
    if api_key.is_empty() || api_key.len() > 200 || !api_key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(FieldError::new("unisender_api_key", "must be 1 to 200 printable characters without spaces").into());
    }
    let list_id = body.unisender_list_id.trim();
    if list_id.is_empty() || list_id.len() > 20 || !list_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(FieldError::new("unisender_list_id", "must be a Unisender list id (digits)").into());
    }
    state
        .store
        .kommo(tenant.id)
        .save_widget_settings(connection.id, &Secret::new(api_key), list_id, claims.user_id)
        .await?;
    tracing::info!(tenant = %tenant.slug, connection = %connection.id, user = ?claims.user_id, "kommo widget settings saved");
    Ok(Json(json!({"saved": true, "connection_id": connection.id, "unisender_list_id": list_id})))
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<(Tenant, Connection, Claims)> {
    let token = headers
        .get("x-auth-token")
        .ok_or_else(|| refused("header", "the X-Auth-Token header is missing"))?
        .to_str()
        .map_err(|_| refused("header", "the X-Auth-Token header is not text"))?
        .trim();
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| refused("alg", "the token's header is not a JWT header with an allowed algorithm (HS256)"))?;
    if header.alg != Algorithm::HS256 {
        return Err(refused("alg", format!("the token is signed {:?}; only HS256 is accepted", header.alg)));
    }
    // The claims before verifying, only to find whose secret verifies them.
    let unverified = token
        .split('.')
        .nth(1)
        .and_then(|part| URL_SAFE_NO_PAD.decode(part).ok())
        .and_then(|json| serde_json::from_slice::<Claims>(&json).ok())
        .ok_or_else(|| refused("claims", "the token's claims are not JSON"))?;
    let client_uuid = unverified.client_uuid.ok_or_else(|| refused("client_uuid", "the claim is missing"))?;
    let (tenant, connection, account) = find_connection(state, &client_uuid)
        .await?
        .ok_or_else(|| refused("client_uuid", "no kommo connection in crmhub is for this integration"))?;
    let secret =
        account.client_secret().ok_or_else(|| refused("client_uuid", "the connection has no client secret"))?;

    let mut validation = Validation::new(Algorithm::HS256);
    // Times are checked below against crmhub's clock; the audience and issuer too, to name them.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims =
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret.expose().as_bytes()), &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    refused("signature", "it does not verify with the integration's secret")
                }
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => refused("alg", "only HS256 is accepted"),
                _ => refused("token", "it is not a well-formed JWT"),
            })?
            .claims;

    let now = state.store.clock().now_millis().div_euclid(1000);
    match claims.exp {
        None => return Err(refused("exp", "the claim is missing")),
        Some(exp) if now > exp + LEEWAY_SECS => return Err(refused("exp", "the token has expired")),
        Some(_) => {}
    }
    match claims.nbf {
        None => return Err(refused("nbf", "the claim is missing")),
        Some(nbf) if now + LEEWAY_SECS < nbf => return Err(refused("nbf", "the token is not valid yet")),
        Some(_) => {}
    }
    let issuer = format!("https://{}", account.account_domain());
    if claims.iss.as_deref() != Some(issuer.as_str()) {
        return Err(refused("iss", format!("the token was not issued by this connection's account ({issuer})")));
    }
    let origin = state.settings.public_url().map_err(|e| ApiError::Internal(e.into()))?.origin().ascii_serialization();
    let audience_ok = match &claims.aud {
        Some(Value::String(aud)) => aud.trim_end_matches('/') == origin,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str().is_some_and(|a| a.trim_end_matches('/') == origin)),
        _ => false,
    };
    if !audience_ok {
        return Err(refused("aud", format!("the token is not for this crmhub ({origin})")));
    }
    let connected = connection.fields.get("account_id").and_then(Value::as_i64);
    match (claims.account_id, connected) {
        (_, None) => return Err(refused("account_id", "the connection is not connected to a Kommo account yet")),
        (Some(presented), Some(stored)) if presented == stored => {}
        _ => return Err(refused("account_id", "the token is for another Kommo account")),
    }
    Ok((tenant, connection, claims))
}

/// The kommo connection whose client id is `client_uuid` (compared in constant time).
async fn find_connection(state: &AppState, client_uuid: &str) -> ApiResult<Option<(Tenant, Connection, KommoAccount)>> {
    for connection in state.store.connections_of_kind(&ConnectorKind::Kommo).await? {
        if !connection.credential_names.iter().any(|n| n == "client_id") {
            continue;
        }
        let tenant = state.store.tenants().get(connection.tenant_id).await?;
        match KommoAccount::build(&state.store, &state.connectors, &tenant, &connection, Lane::Interactive).await {
            Ok(account) if account.has_client_id(client_uuid) => return Ok(Some((tenant, connection, account))),
            Ok(_) | Err(AccessError::Crm(_)) => {}
            Err(AccessError::Store(e)) => return Err(e.into()),
        }
    }
    Ok(None)
}
