//! Connecting a Kommo account: `POST …/oauth/start` makes a single-use `state` and the URL to
//! send the Kommo user to; Kommo then calls the public `GET /oauth/kommo/callback` with a code.
//! The callback checks everything it can without calling out (the state, the account the call
//! names, the integration, that the code is new), enqueues a `kommo.connect` job with the code
//! sealed, and answers at once: Kommo waits about 3 s and never calls again.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use crmhub_connectors::http::Lane;
use crmhub_core::{ConnectionStatus, ConnectorKind, Secret, UnixMillis};
use crmhub_store::connections::Connection;
use crmhub_store::jobs::NewJob;
use crmhub_store::kommo::{AuthorizeMode, ConsumedState};
use crmhub_store::tenants::Tenant;
use crmhub_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::client::{KommoAccount, is_account_domain};
use super::{CONNECT_JOB, not_kommo, page};
use crate::admin::AdminAuth;
use crate::crm_access::AccessError;
use crate::error::{ApiError, ApiResult};
use crate::extract::{PathParams, RawBody, optional_json};
use crate::state::AppState;

/// A state (and the code Kommo sends back) is good for 20 minutes.
pub const STATE_TTL: Duration = Duration::from_secs(20 * 60);

/// The reason a connection whose user declined is marked `needs_reauth` with.
pub const DECLINED: &str = "the Kommo user declined access";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    mode: Option<String>,
}

/// What `oauth/start` answers: where to send the user, and until when the link works.
#[derive(Debug, Serialize)]
pub struct Started {
    pub authorize_url: String,
    pub expires_at: UnixMillis,
}

pub(super) async fn start(
    _: AdminAuth,
    State(state): State<AppState>,
    PathParams((slug, id)): PathParams<(String, String)>,
    RawBody(body): RawBody,
) -> ApiResult<(StatusCode, Json<Started>)> {
    let body: StartBody = optional_json(&body)?;
    let mode = match body.mode.as_deref() {
        None => AuthorizeMode::default(),
        Some(raw) => AuthorizeMode::parse(raw).ok_or_else(|| {
            ApiError::invalid("mode", format!("{raw:?} is not a mode; use \"popup\" or \"post_message\""))
        })?,
    };
    let tenant = crate::admin::tenant(&state, &slug).await?;
    let connection = state.store.connections(tenant.id).get(crate::admin::connection_id(&id)?).await?;
    let started = start_authorization(&state, &tenant, &connection, mode).await?;
    tracing::info!(tenant = %slug, connection = %connection.id, "kommo authorisation started");
    Ok((StatusCode::CREATED, Json(started)))
}

/// Makes a fresh single-use state for `connection` and the Kommo URL that carries it. Refused
/// (422) for a connection that is not an OAuth Kommo one. Shared with `crmhub connection connect`.
pub async fn start_authorization(
    state: &AppState,
    tenant: &Tenant,
    connection: &Connection,
    mode: AuthorizeMode,
) -> ApiResult<Started> {
    if connection.kind != ConnectorKind::Kommo {
        return Err(not_kommo("connecting through OAuth"));
    }
    let account = KommoAccount::build(&state.store, &state.connectors, tenant, connection, Lane::Interactive)
        .await
        .map_err(access_error)?;
    if account.client_id().is_none() {
        return Err(ApiError::Unsupported(
            "this connection uses a long-lived token: it has no client_id to authorise with OAuth".into(),
        ));
    }
    let secret = Secret::generate();
    let started =
        state.store.kommo(tenant.id).start_authorization(connection.id, secret.expose(), mode, STATE_TTL).await?;
    Ok(Started {
        authorize_url: account.authorize_url(secret.expose(), mode).to_string(),
        expires_at: started.expires_at,
    })
}

fn access_error(error: AccessError) -> ApiError {
    match error {
        AccessError::Store(e) => e.into(),
        AccessError::Crm(e) => ApiError::Unsupported(e.to_string()),
    }
}

/// `GET /oauth/kommo/callback`. Every refusal is a 400 page naming the reason; nothing is sent
/// anywhere before the job runs.
pub(super) async fn callback(State(state): State<AppState>, Query(query): Query<HashMap<String, String>>) -> Response {
    match accept(&state, &query).await {
        Ok(response) => response,
        Err(Refusal::Client(reason)) => {
            tracing::info!(%reason, "kommo callback refused");
            page::refused(&reason)
        }
        Err(Refusal::Internal(error)) => {
            tracing::error!(error.cause_chain = ?error, "kommo callback failed");
            page::page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Kommo connection failed",
                "crmhub could not record Kommo's answer; see the server log, then start the connection again.",
                None,
            )
        }
    }
}

enum Refusal {
    Client(String),
    Internal(anyhow::Error),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.into())
    }
}

impl From<AccessError> for Refusal {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Store(e) => e.into(),
            AccessError::Crm(e) => Self::Client(e.to_string()),
        }
    }
}

fn refuse<T>(reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Client(reason.into()))
}

async fn accept(state: &AppState, query: &HashMap<String, String>) -> Result<Response, Refusal> {
    let param = |name: &str| query.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let store = &state.store;
    let (tenant, connection, account, mode) = match param("state") {
        Some(raw) => {
            let (tenant, connection, mode) = match store.consume_oauth_state(raw).await? {
                ConsumedState::Consumed { tenant_id, connection_id, mode } => {
                    match store.connections(tenant_id).get(connection_id).await {
                        Ok(connection) => (store.tenants().get(tenant_id).await?, connection, mode),
                        Err(StoreError::NotFound { .. }) => return refuse("the connection no longer exists"),
                        Err(e) => return Err(e.into()),
                    }
                }
                ConsumedState::Unknown => return refuse("the state is unknown: start the connection from crmhub"),
                ConsumedState::Expired => {
                    return refuse("the state has expired (it is good for 20 minutes): start the connection again");
                }
                ConsumedState::Used => {
                    return refuse("the state was already used: start the connection again");
                }
            };
            let account =
                KommoAccount::build(store, &state.connectors, &tenant, &connection, Lane::Interactive).await?;
            (tenant, connection, account, mode)
        }
        None if param("from_widget").is_some() => {
            let Some((tenant, connection, account)) =
                widget_install(state, param("referer"), param("client_id")).await?
            else {
                return refuse("no Kommo connection in crmhub is for this integration and account");
            };
            (tenant, connection, account, AuthorizeMode::Popup)
        }
        None => return refuse("the callback has no state: start the connection from crmhub"),
    };
    let connections = store.connections(tenant.id);

    if let Some(client_id) = param("client_id") {
        if !account.has_client_id(client_id) {
            return refuse("the callback is for another Kommo integration (client_id)");
        }
    }
    if let Some(error) = param("error") {
        let reason = if error == "access_denied" {
            DECLINED.to_owned()
        } else {
            let error: String = error.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
            format!("Kommo refused the authorisation: {error}")
        };
        connections.set_status(connection.id, ConnectionStatus::NeedsReauth, Some(&reason)).await?;
        tracing::info!(connection = %connection.id, %reason, "kommo authorisation declined");
        return Ok(page::declined(mode));
    }
    let Some(referer) = param("referer") else { return refuse("the callback names no Kommo account (referer)") };
    let referer = referer.to_ascii_lowercase();
    if !is_account_domain(&referer) || referer != account.account_domain() {
        return refuse(format!(
            "the callback names another Kommo account than this connection's ({}); nothing was sent",
            account.account_domain()
        ));
    }
    // Kommo's callback names the integration; a widget install may not (matched above).
    if param("client_id").is_none() && param("state").is_some() {
        return refuse("the callback names no Kommo integration (client_id)");
    }
    let Some(code) = param("code") else { return refuse("the callback carries no authorisation code") };
    let kommo = store.kommo(tenant.id);
    if !kommo.record_code(connection.id, code).await? {
        return refuse("this authorisation code was already used (a replay); start the connection again");
    }
    let payload = json!({
        "connection_id": connection.id.to_string(),
        "code_sealed": kommo.seal_code(connection.id, code),
        "received_at": store.clock().now_millis(),
    });
    let job = NewJob::new(CONNECT_JOB, payload).priority(10).max_attempts(8);
    match store.jobs().enqueue(tenant.id, job).await {
        Ok(_) => {}
        Err(e @ StoreError::QueueFull { .. }) => return refuse(format!("crmhub is too busy to connect now: {e}")),
        Err(e) => return Err(e.into()),
    }
    state.jobs_wake.notify_waiters();
    tracing::info!(tenant = %tenant.slug, connection = %connection.id, widget = param("from_widget").is_some(), "kommo code received; connecting");
    Ok(page::accepted(mode))
}

/// A widget install carries no state: the connection is the one OAuth kommo connection whose
/// account (`referer`) and, when the callback names one, integration (`client_id`, compared
/// in constant time) match. The exchange itself proves the code.
async fn widget_install(
    state: &AppState,
    referer: Option<&str>,
    client_id: Option<&str>,
) -> Result<Option<(Tenant, Connection, KommoAccount)>, Refusal> {
    let Some(referer) = referer.map(str::to_ascii_lowercase) else {
        return refuse("the widget install names no Kommo account (referer)");
    };
    if !is_account_domain(&referer) {
        return refuse("the widget install names no Kommo account domain (referer); nothing was sent");
    }
    let mut found = Vec::new();
    for connection in candidates(&state.store).await? {
        let tenant = state.store.tenants().get(connection.tenant_id).await?;
        let account =
            match KommoAccount::build(&state.store, &state.connectors, &tenant, &connection, Lane::Interactive).await {
                Ok(account) => account,
                Err(AccessError::Store(e)) => return Err(e.into()),
                Err(AccessError::Crm(_)) => continue,
            };
        // Kommo's widget install may name no client_id: the account then decides, and the
        // exchange (with that connection's secret) proves the code.
        if account.account_domain() == referer && client_id.is_none_or(|id| account.has_client_id(id)) {
            found.push((tenant, connection, account));
        }
    }
    if found.len() > 1 {
        return refuse(
            "several crmhub connections are for this integration and account; start the connection from crmhub",
        );
    }
    Ok(found.pop())
}

async fn candidates(store: &Store) -> Result<Vec<Connection>, StoreError> {
    Ok(store
        .connections_of_kind(&ConnectorKind::Kommo)
        .await?
        .into_iter()
        .filter(|c| c.credential_names.iter().any(|n| n == "client_id"))
        .collect())
}
