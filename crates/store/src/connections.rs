//! Connections, always reached through a tenant: `store.connections(tenant).get(id)` cannot
//! return another tenant's row because every statement filters on `tenant_id`.

use crmhub_core::{
    ConnectionId, ConnectionName, ConnectionStatus, ConnectorKind, Credentials, Host, TenantId, UnixMillis,
};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::db::{on_pool, on_tx};
use crate::error::on_unique;
use crate::rows::{parse_id, parse_json};
use crate::{Result, Store, StoreError};

/// A connection as the API shows it: credential *names* only, never values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connection {
    pub id: ConnectionId,
    pub tenant_id: TenantId,
    pub name: ConnectionName,
    pub kind: ConnectorKind,
    pub host: Host,
    pub fields: Map<String, Value>,
    pub credential_names: Vec<String>,
    pub status: ConnectionStatus,
    pub last_error: Option<String>,
    /// For `template:NAME` connections: the template version this connection runs.
    pub template_version: Option<u32>,
    /// The integrator's data: call-centre id, description, info and iframe JSON.
    pub details: Map<String, Value>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

#[derive(Debug, Clone)]
pub struct NewConnection {
    pub name: ConnectionName,
    pub kind: ConnectorKind,
    pub host: Host,
    pub fields: Map<String, Value>,
    pub credentials: Credentials,
    pub template_version: Option<u32>,
    pub details: Map<String, Value>,
}

/// A partial update: `None` leaves the value as it is. Credentials change only through
/// `replace_credentials`, so an update can never wipe them by omission.
#[derive(Debug, Clone, Default)]
pub struct ConnectionUpdate {
    pub name: Option<ConnectionName>,
    pub host: Option<Host>,
    pub fields: Option<Map<String, Value>>,
    pub status: Option<ConnectionStatus>,
    pub template_version: Option<u32>,
    pub details: Option<Map<String, Value>>,
}

#[derive(sqlx::FromRow)]
struct ConnectionRow {
    id: String,
    tenant_id: String,
    name: String,
    kind: String,
    host: String,
    fields: String,
    credential_names: String,
    status: String,
    last_error: Option<String>,
    template_version: Option<i32>,
    details: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<ConnectionRow> for Connection {
    type Error = StoreError;

    fn try_from(row: ConnectionRow) -> Result<Self> {
        let corrupt = |e: crmhub_core::FieldError| StoreError::corrupt("connection", &row.id, e);
        Ok(Connection {
            id: parse_id("connection", &row.id)?,
            tenant_id: parse_id("connection", &row.tenant_id)?,
            name: ConnectionName::parse(&row.name).map_err(corrupt)?,
            kind: ConnectorKind::parse(&row.kind).map_err(corrupt)?,
            host: Host::parse(&row.host).map_err(corrupt)?,
            fields: parse_json("connection", &row.id, &row.fields)?,
            credential_names: parse_json("connection", &row.id, &row.credential_names)?,
            status: ConnectionStatus::parse(&row.status).map_err(corrupt)?,
            last_error: row.last_error,
            template_version: row.template_version.and_then(|v| u32::try_from(v).ok()),
            details: parse_json("connection", &row.id, &row.details)?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

const COLUMNS: &str = "id, tenant_id, name, kind, host, fields, credential_names, status, last_error, template_version, details, \
     created_at, updated_at";

/// Associated data binding sealed credentials to their row.
fn seal_context(id: ConnectionId) -> String {
    format!("connection:{id}")
}

pub struct Connections<'a> {
    store: &'a Store,
    tenant: TenantId,
}

impl Store {
    pub fn connections(&self, tenant: TenantId) -> Connections<'_> {
        Connections { store: self, tenant }
    }
}

impl Connections<'_> {
    pub async fn create(&self, new: NewConnection) -> Result<Connection> {
        let now = self.store.now();
        let id = ConnectionId::new();
        let names: Vec<String> = new.credentials.names().map(str::to_owned).collect();
        let sealed = (!new.credentials.is_empty())
            .then(|| self.store.vault.seal(new.credentials.to_sealable_json().as_bytes(), &seal_context(id)));
        let connection = Connection {
            id,
            tenant_id: self.tenant,
            name: new.name,
            kind: new.kind,
            host: new.host,
            fields: new.fields,
            credential_names: names,
            status: ConnectionStatus::Active,
            last_error: None,
            template_version: new.template_version,
            details: new.details,
            created_at: now,
            updated_at: now,
        };
        let fields = Value::Object(connection.fields.clone()).to_string();
        let details = Value::Object(connection.details.clone()).to_string();
        let names = serde_json::to_string(&connection.credential_names).unwrap_or_else(|_| "[]".into());
        let result = on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "INSERT INTO connections (id, tenant_id, name, kind, host, fields, credential_names, \
                 credentials_sealed, status, last_error, template_version, details, created_at, updated_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $11, $12, $10, $10 \
                 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $2)",
            )
            .bind(id.to_string())
            .bind(self.tenant.to_string())
            .bind(connection.name.as_str())
            .bind(connection.kind.to_string())
            .bind(connection.host.as_str())
            .bind(&fields)
            .bind(&names)
            .bind(sealed.as_deref())
            .bind(connection.status.as_str())
            .bind(now)
            .bind(connection.template_version.map(i64::from))
            .bind(&details)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(|e| {
            on_unique(e, "name", || {
                format!("this tenant already has a connection named {:?}", connection.name.as_str())
            })
        })?;
        if result == 0 {
            return Err(StoreError::NotFound { entity: "tenant" });
        }
        Ok(connection)
    }

    pub async fn list(&self) -> Result<Vec<Connection>> {
        let sql = format!("SELECT {COLUMNS} FROM connections WHERE tenant_id = $1 ORDER BY name");
        let rows: Vec<ConnectionRow> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(&sql).bind(self.tenant.to_string()).fetch_all(pool).await
        })?;
        rows.into_iter().map(Connection::try_from).collect()
    }

    pub async fn get(&self, id: ConnectionId) -> Result<Connection> {
        let sql = format!("SELECT {COLUMNS} FROM connections WHERE tenant_id = $1 AND id = $2");
        let row: Option<ConnectionRow> = on_pool!(&self.store.db, |pool| {
            sqlx::query_as(&sql).bind(self.tenant.to_string()).bind(id.to_string()).fetch_optional(pool).await
        })?;
        row.ok_or(StoreError::NotFound { entity: "connection" })?.try_into()
    }

    /// Changes only the given columns, in one statement: two concurrent updates of different
    /// columns both land (a read-modify-write in Rust would lose one of them).
    pub async fn update(&self, id: ConnectionId, update: ConnectionUpdate) -> Result<Connection> {
        let fields = update.fields.map(|f| Value::Object(f).to_string());
        let details = update.details.map(|d| Value::Object(d).to_string());
        let name = update.name.as_ref().map(|n| n.as_str().to_owned());
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "UPDATE connections SET name = COALESCE($3, name), host = COALESCE($4, host), \
                 fields = COALESCE($5, fields), status = COALESCE($6, status), \
                 last_error = CASE WHEN $6 = 'active' THEN NULL ELSE last_error END, updated_at = $7, \
                 template_version = COALESCE($8, template_version), details = COALESCE($9, details) \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(self.tenant.to_string())
            .bind(id.to_string())
            .bind(name.as_deref())
            .bind(update.host.as_ref().map(|h| h.as_str().to_owned()))
            .bind(fields.as_deref())
            .bind(update.status.map(|s| s.as_str()))
            .bind(self.store.now())
            .bind(update.template_version.map(i64::from))
            .bind(details.as_deref())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(|e| {
            on_unique(e, "name", || {
                format!("this tenant already has a connection named {:?}", name.as_deref().unwrap_or_default())
            })
        })?;
        if done == 0 {
            return Err(StoreError::NotFound { entity: "connection" });
        }
        self.get(id).await
    }

    /// Deletes the connection and its request log.
    pub async fn delete(&self, id: ConnectionId) -> Result<()> {
        let mut tx = self.store.begin().await?;
        let done = on_tx!(&mut tx, |conn| {
            sqlx::query("DELETE FROM request_log WHERE tenant_id = $1 AND connection_id = $2")
                .bind(self.tenant.to_string())
                .bind(id.to_string())
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected())?;
            sqlx::query("DELETE FROM connections WHERE tenant_id = $1 AND id = $2")
                .bind(self.tenant.to_string())
                .bind(id.to_string())
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        if done == 0 {
            tx.rollback().await?;
            return Err(StoreError::NotFound { entity: "connection" });
        }
        tx.commit().await
    }

    /// The decrypted credentials, for a connector about to call out.
    pub async fn credentials(&self, id: ConnectionId) -> Result<Credentials> {
        let sealed: Option<Option<String>> = on_pool!(&self.store.db, |pool| {
            sqlx::query_scalar("SELECT credentials_sealed FROM connections WHERE tenant_id = $1 AND id = $2")
                .bind(self.tenant.to_string())
                .bind(id.to_string())
                .fetch_optional(pool)
                .await
        })?;
        let Some(sealed) = sealed.ok_or(StoreError::NotFound { entity: "connection" })? else {
            return Ok(Credentials::new());
        };
        let json = self.store.vault.open_string(&sealed, &seal_context(id))?;
        Credentials::from_sealed_json(&json).map_err(|e| StoreError::corrupt("connection", id.to_string(), e))
    }

    /// Replaces every credential at once (rotation). The old values are gone afterwards.
    pub async fn replace_credentials(&self, id: ConnectionId, credentials: Credentials) -> Result<Connection> {
        let names: Vec<String> = credentials.names().map(str::to_owned).collect();
        let sealed = (!credentials.is_empty())
            .then(|| self.store.vault.seal(credentials.to_sealable_json().as_bytes(), &seal_context(id)));
        let names_json = serde_json::to_string(&names).unwrap_or_else(|_| "[]".into());
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "UPDATE connections SET credentials_sealed = $3, credential_names = $4, updated_at = $5 \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(self.tenant.to_string())
            .bind(id.to_string())
            .bind(sealed.as_deref())
            .bind(&names_json)
            .bind(self.store.now())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        if done == 0 {
            return Err(StoreError::NotFound { entity: "connection" });
        }
        self.get(id).await
    }

    /// Records the outcome of the latest use: `Ok` makes a failing connection active again,
    /// `Err` marks it failing with the (already redacted) message. An operator's `disabled` and
    /// a `needs_reauth` are kept until changed on purpose.
    pub async fn record_health(&self, id: ConnectionId, outcome: Result<(), &str>) -> Result<()> {
        let (status, error) = match outcome {
            Ok(()) => (ConnectionStatus::Active, None),
            Err(message) => (ConnectionStatus::Failing, Some(truncate(message, 1000))),
        };
        on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "UPDATE connections SET status = $3, last_error = $4, updated_at = $5 \
                 WHERE tenant_id = $1 AND id = $2 AND status IN ('active', 'failing')",
            )
            .bind(self.tenant.to_string())
            .bind(id.to_string())
            .bind(status.as_str())
            .bind(error)
            .bind(self.store.now())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Sets the status explicitly (e.g. `needs_reauth` after refused credentials).
    pub async fn set_status(&self, id: ConnectionId, status: ConnectionStatus, error: Option<&str>) -> Result<()> {
        let done = on_pool!(&self.store.db, |pool| {
            sqlx::query(
                "UPDATE connections SET status = $3, last_error = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(self.tenant.to_string())
            .bind(id.to_string())
            .bind(status.as_str())
            .bind(error.map(|e| truncate(e, 1000)))
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
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}
