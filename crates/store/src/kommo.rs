//! What crmhub keeps for Kommo connections: the OAuth connect flow's single-use `state`s and
//! the codes already seen, the webhook destination registered at the account, and the widget's
//! settings. Secrets are never stored in the clear: states, codes and the webhook's path secret
//! only as SHA-256 hashes, the webhook URL and the Unisender API key sealed with the vault.
//!
//! Everything is reached through a tenant (`store.kommo(tenant)`), except what a public
//! callback must find before it knows the tenant: the state it brings (`Store::consume_oauth_state`)
//! and the connections on one Kommo host (`Store::connections_on_host`).

use std::time::Duration;

use crmhub_core::clock::duration_millis;
use crmhub_core::{ConnectionId, ConnectionStatus, ConnectorKind, Secret, TenantId, UnixMillis};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::connections::Connection;
use crate::db::on_pool;
use crate::rows::parse_id;
use crate::{Result, Store, StoreError};

/// SHA-256 (hex) of a state, code or webhook secret: what is stored and compared.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// How the authorisation window hands back to the page that opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizeMode {
    /// The window closes and the main window is redirected (Kommo's default).
    #[default]
    Popup,
    /// The redirect happens in the opened window, which tells its opener and closes.
    PostMessage,
}

impl AuthorizeMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Popup => "popup",
            Self::PostMessage => "post_message",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "popup" => Some(Self::Popup),
            "post_message" => Some(Self::PostMessage),
            _ => None,
        }
    }
}

/// A started authorisation, as the admin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedState {
    pub connection_id: ConnectionId,
    pub mode: AuthorizeMode,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// What a callback's `state` turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumedState {
    /// Good, and now used: the callback is for this connection.
    Consumed { tenant_id: TenantId, connection_id: ConnectionId, mode: AuthorizeMode },
    /// Never issued (or its connection was deleted since).
    Unknown,
    /// Issued, but past its 20 minutes.
    Expired,
    /// Already used by an earlier callback.
    Used,
}

/// The webhook destination registered for a connection.
#[derive(Debug, Clone)]
pub struct KommoWebhook {
    pub connection_id: ConnectionId,
    /// The full destination URL, secret included; never shown.
    pub destination: Secret,
    pub secret_hash: String,
    pub events: Vec<String>,
    pub registered_at: UnixMillis,
}

/// The settings a Kommo user saved in the widget.
#[derive(Debug, Clone)]
pub struct WidgetSettings {
    pub connection_id: ConnectionId,
    pub unisender_api_key: Secret,
    pub unisender_list_id: String,
    pub kommo_user_id: Option<i64>,
    pub updated_at: UnixMillis,
}

fn webhook_context(id: ConnectionId) -> String {
    format!("kommo_webhook:{id}")
}

fn widget_context(id: ConnectionId) -> String {
    format!("kommo_widget:{id}")
}

fn code_context(id: ConnectionId) -> String {
    format!("kommo_code:{id}")
}

pub struct Kommo<'a> {
    store: &'a Store,
    tenant: TenantId,
}

impl Store {
    pub fn kommo(&self, tenant: TenantId) -> Kommo<'_> {
        Kommo { store: self, tenant }
    }

    /// Checks and uses a callback's state in one statement: of concurrent callbacks with one
    /// state, exactly one gets `Consumed`. Looked up by hash alone: the callback names no tenant.
    pub async fn consume_oauth_state(&self, state: &str) -> Result<ConsumedState> {
        let hash = hash_token(state);
        let now = self.now();
        let row: Option<(String, String, String)> = on_pool!(&self.db, |pool| {
            sqlx::query_as(
                "UPDATE oauth_states SET used_at = $2 WHERE state_hash = $1 AND used_at IS NULL AND expires_at > $2 \
                 RETURNING tenant_id, connection_id, mode",
            )
            .bind(&hash)
            .bind(now)
            .fetch_optional(pool)
            .await
        })?;
        if let Some((tenant, connection, mode)) = row {
            let mode = AuthorizeMode::parse(&mode)
                .ok_or_else(|| StoreError::corrupt("oauth state", &hash, format!("mode {mode:?}")))?;
            return Ok(ConsumedState::Consumed {
                tenant_id: parse_id("oauth state", &tenant)?,
                connection_id: parse_id("oauth state", &connection)?,
                mode,
            });
        }
        let found: Option<(Option<i64>, i64)> = on_pool!(&self.db, |pool| {
            sqlx::query_as("SELECT used_at, expires_at FROM oauth_states WHERE state_hash = $1")
                .bind(&hash)
                .fetch_optional(pool)
                .await
        })?;
        Ok(match found {
            None => ConsumedState::Unknown,
            Some((Some(_), _)) => ConsumedState::Used,
            Some((None, _)) => ConsumedState::Expired,
        })
    }

    /// Connections of `kind` on `host`, in every tenant. `host` is a connection's host
    /// (`https://demo.kommo.com`) or a bare host name with an optional port (`demo.kommo.com`),
    /// which matches it under either scheme.
    pub async fn connections_on_host(&self, kind: &ConnectorKind, host: &str) -> Result<Vec<Connection>> {
        let host = host.trim().trim_end_matches('/');
        let bare = host.split_once("://").map_or(host, |(_, rest)| rest);
        let ids: Vec<(String, String)> = on_pool!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT tenant_id, id FROM connections WHERE kind = $1 \
                 AND (host = $2 OR host = $3 OR host = $4) ORDER BY tenant_id, id",
            )
            .bind(kind.to_string())
            .bind(host)
            .bind(format!("https://{bare}"))
            .bind(format!("http://{bare}"))
            .fetch_all(pool)
            .await
        })?;
        self.load_connections(ids).await
    }

    /// The tenant and secret hash of the webhook destination of `connection`: a delivery's path
    /// names only the connection (Kommo knows nothing of tenants), so this one lookup is across
    /// tenants; every read after it is scoped by the tenant it returns.
    pub async fn kommo_webhook_owner(&self, connection: ConnectionId) -> Result<Option<(TenantId, String)>> {
        let row: Option<(String, String)> = on_pool!(&self.db, |pool| {
            sqlx::query_as("SELECT tenant_id, secret_hash FROM kommo_webhooks WHERE connection_id = $1")
                .bind(connection.to_string())
                .fetch_optional(pool)
                .await
        })?;
        row.map(|(tenant, hash)| {
            let tenant = tenant.parse().map_err(|e| StoreError::corrupt("kommo webhook", connection.to_string(), e))?;
            Ok((tenant, hash))
        })
        .transpose()
    }

    /// Connections of `kind` in every tenant (Kommo keeps few: refreshes, widget installs).
    pub async fn connections_of_kind(&self, kind: &ConnectorKind) -> Result<Vec<Connection>> {
        let ids: Vec<(String, String)> = on_pool!(&self.db, |pool| {
            sqlx::query_as("SELECT tenant_id, id FROM connections WHERE kind = $1 ORDER BY tenant_id, id")
                .bind(kind.to_string())
                .fetch_all(pool)
                .await
        })?;
        self.load_connections(ids).await
    }

    async fn load_connections(&self, ids: Vec<(String, String)>) -> Result<Vec<Connection>> {
        let mut found = Vec::with_capacity(ids.len());
        for (tenant, id) in ids {
            let tenant: TenantId = parse_id("connection", &tenant)?;
            match self.connections(tenant).get(parse_id("connection", &id)?).await {
                Ok(connection) => found.push(connection),
                // Deleted in between.
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    /// Marks every connection of `kind` on `host` that is active or failing as `failing` with
    /// `reason`, in every tenant; returns them. Disabled and `needs_reauth` ones keep their status.
    pub async fn fail_connections_on_host(
        &self,
        kind: &ConnectorKind,
        host: &str,
        reason: &str,
    ) -> Result<Vec<Connection>> {
        let mut failed = Vec::new();
        for connection in self.connections_on_host(kind, host).await? {
            if matches!(connection.status, ConnectionStatus::Active | ConnectionStatus::Failing) {
                self.connections(connection.tenant_id).record_health(connection.id, Err(reason)).await?;
                failed.push(connection);
            }
        }
        Ok(failed)
    }

    /// Makes the connections of `kind` on `host` that are still `failing` with exactly
    /// `reason` active again; returns how many. One failing for another reason since is left.
    pub async fn restore_connections_on_host(&self, kind: &ConnectorKind, host: &str, reason: &str) -> Result<u64> {
        let mut restored = 0;
        for connection in self.connections_on_host(kind, host).await? {
            let done = on_pool!(&self.db, |pool| {
                sqlx::query(
                    "UPDATE connections SET status = 'active', last_error = NULL, updated_at = $4 \
                     WHERE tenant_id = $1 AND id = $2 AND status = 'failing' AND last_error = $3",
                )
                .bind(connection.tenant_id.to_string())
                .bind(connection.id.to_string())
                .bind(reason.chars().take(1000).collect::<String>())
                .bind(self.now())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
            })?;
            restored += done;
        }
        Ok(restored)
    }
}

impl Kommo<'_> {
    /// Records a new authorisation for `connection` under `state` (kept as a hash), good for
    /// `ttl`. `NotFound` for a connection that is not this tenant's.
    pub async fn start_authorization(
        &self,
        connection: ConnectionId,
        state: &str,
        mode: AuthorizeMode,
        ttl: Duration,
    ) -> Result<StartedState> {
        let now = self.store.now();
        let expires_at = now.saturating_add(duration_millis(ttl));
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "INSERT INTO oauth_states (state_hash, tenant_id, connection_id, mode, created_at, expires_at) \
                 SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS \
                 (SELECT 1 FROM connections WHERE tenant_id = $2 AND id = $3)",
            )
            .bind(hash_token(state))
            .bind(self.tenant.to_string())
            .bind(connection.to_string())
            .bind(mode.as_str())
            .bind(now)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        if done == 0 {
            return Err(StoreError::NotFound { entity: "connection" });
        }
        Ok(StartedState { connection_id: connection, mode, created_at: now, expires_at })
    }

    /// Records that a callback brought `code` for `connection`; `false` when the code was seen
    /// before (a replay), in which case nothing changes.
    pub async fn record_code(&self, connection: ConnectionId, code: &str) -> Result<bool> {
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "INSERT INTO oauth_codes (code_hash, tenant_id, connection_id, seen_at) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM connections WHERE tenant_id = $2 AND id = $3) \
                 ON CONFLICT (code_hash) DO NOTHING",
            )
            .bind(hash_token(code))
            .bind(self.tenant.to_string())
            .bind(connection.to_string())
            .bind(self.store.now())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        if done == 1 {
            return Ok(true);
        }
        // Not inserted: a replay, or a connection that is not this tenant's.
        self.store.connections(self.tenant).get(connection).await?;
        Ok(false)
    }

    /// Deletes the codes seen before `before` and the states that expired before it.
    pub async fn prune(&self, before: UnixMillis) -> Result<u64> {
        let codes = on_pool!(&self.store.db, |pool| {
            sqlx::query("DELETE FROM oauth_codes WHERE tenant_id = $1 AND seen_at < $2")
                .bind(self.tenant.to_string())
                .bind(before)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        let states = on_pool!(&self.store.db, |pool| {
            sqlx::query("DELETE FROM oauth_states WHERE tenant_id = $1 AND expires_at < $2")
                .bind(self.tenant.to_string())
                .bind(before)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(codes + states)
    }

    /// Seals a callback's code for a job's payload, bound to the connection.
    pub fn seal_code(&self, connection: ConnectionId, code: &str) -> String {
        self.store.vault.seal(code.as_bytes(), &code_context(connection))
    }

    pub fn open_code(&self, connection: ConnectionId, sealed: &str) -> Result<Secret> {
        Ok(Secret::new(self.store.vault.open_string(sealed, &code_context(connection))?.as_str()))
    }

    /// Stores (or replaces) the connection's webhook destination.
    pub async fn save_webhook(
        &self,
        connection: ConnectionId,
        destination: &Secret,
        secret_hash: &str,
        events: &[&str],
    ) -> Result<KommoWebhook> {
        let now = self.store.now();
        let sealed = self.store.vault.seal(destination.expose().as_bytes(), &webhook_context(connection));
        let events_json = serde_json::to_string(events).unwrap_or_else(|_| "[]".into());
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "INSERT INTO kommo_webhooks (connection_id, tenant_id, secret_hash, destination_sealed, events, registered_at) \
                 SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM connections WHERE tenant_id = $2 AND id = $1) \
                 ON CONFLICT (connection_id) DO UPDATE SET secret_hash = excluded.secret_hash, \
                 destination_sealed = excluded.destination_sealed, events = excluded.events, \
                 registered_at = excluded.registered_at WHERE kommo_webhooks.tenant_id = excluded.tenant_id",
            )
            .bind(connection.to_string())
            .bind(self.tenant.to_string())
            .bind(secret_hash)
            .bind(&sealed)
            .bind(&events_json)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        if done == 0 {
            return Err(StoreError::NotFound { entity: "connection" });
        }
        Ok(KommoWebhook {
            connection_id: connection,
            destination: destination.clone(),
            secret_hash: secret_hash.to_owned(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            registered_at: now,
        })
    }

    pub async fn webhook(&self, connection: ConnectionId) -> Result<Option<KommoWebhook>> {
        let row: Option<(String, String, String, i64)> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(
                "SELECT secret_hash, destination_sealed, events, registered_at FROM kommo_webhooks \
                 WHERE tenant_id = $1 AND connection_id = $2",
            )
            .bind(self.tenant.to_string())
            .bind(connection.to_string())
            .fetch_optional(pool)
            .await
        })?;
        let Some((secret_hash, sealed, events, registered_at)) = row else { return Ok(None) };
        let destination = self.store.vault.open_string(&sealed, &webhook_context(connection))?;
        let events: Vec<String> = serde_json::from_str(&events)
            .map_err(|e| StoreError::corrupt("kommo webhook", connection.to_string(), e))?;
        Ok(Some(KommoWebhook {
            connection_id: connection,
            destination: Secret::new(destination.as_str()),
            secret_hash,
            events,
            registered_at,
        }))
    }

    /// Forgets the connection's webhook; `false` when it had none.
    pub async fn delete_webhook(&self, connection: ConnectionId) -> Result<bool> {
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query("DELETE FROM kommo_webhooks WHERE tenant_id = $1 AND connection_id = $2")
                .bind(self.tenant.to_string())
                .bind(connection.to_string())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done == 1)
    }

    /// Stores (or replaces) the widget's settings for the connection.
    pub async fn save_widget_settings(
        &self,
        connection: ConnectionId,
        api_key: &Secret,
        list_id: &str,
        kommo_user_id: Option<i64>,
    ) -> Result<()> {
        let sealed = self.store.vault.seal(api_key.expose().as_bytes(), &widget_context(connection));
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "INSERT INTO kommo_widget_settings (connection_id, tenant_id, unisender_api_key_sealed, \
                 unisender_list_id, kommo_user_id, updated_at) \
                 SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM connections WHERE tenant_id = $2 AND id = $1) \
                 ON CONFLICT (connection_id) DO UPDATE SET unisender_api_key_sealed = excluded.unisender_api_key_sealed, \
                 unisender_list_id = excluded.unisender_list_id, kommo_user_id = excluded.kommo_user_id, \
                 updated_at = excluded.updated_at WHERE kommo_widget_settings.tenant_id = excluded.tenant_id",
            )
            .bind(connection.to_string())
            .bind(self.tenant.to_string())
            .bind(&sealed)
            .bind(list_id)
            .bind(kommo_user_id)
            .bind(self.store.now())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        if done == 0 {
            return Err(StoreError::NotFound { entity: "connection" });
        }
        Ok(())
    }

    pub async fn widget_settings(&self, connection: ConnectionId) -> Result<Option<WidgetSettings>> {
        let row: Option<(String, String, Option<i64>, i64)> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(
                "SELECT unisender_api_key_sealed, unisender_list_id, kommo_user_id, updated_at \
                 FROM kommo_widget_settings WHERE tenant_id = $1 AND connection_id = $2",
            )
            .bind(self.tenant.to_string())
            .bind(connection.to_string())
            .fetch_optional(pool)
            .await
        })?;
        let Some((sealed, unisender_list_id, kommo_user_id, updated_at)) = row else { return Ok(None) };
        let key = self.store.vault.open_string(&sealed, &widget_context(connection))?;
        Ok(Some(WidgetSettings {
            connection_id: connection,
            unisender_api_key: Secret::new(key.as_str()),
            unisender_list_id,
            kommo_user_id,
            updated_at,
        }))
    }
}
