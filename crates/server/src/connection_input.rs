//! Turning an admin's description of a connection (API body or CLI flags) into a validated
//! `NewConnection`. Shared by the admin API and the CLI so both refuse the same things.

use crmhub_connectors::http::is_sensitive_name;
use crmhub_core::connection::is_identifier;
use crmhub_core::{ConnectionName, ConnectorKind, Credentials, FieldError, Host, Secret};
use crmhub_store::connections::NewConnection;
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionInput {
    pub name: String,
    pub kind: String,
    pub host: String,
    #[serde(default)]
    pub fields: Map<String, Value>,
    #[serde(default)]
    pub credentials: Map<String, Value>,
    /// For `template:NAME` connections: the version to use (default: the latest).
    pub template_version: Option<u32>,
    /// The integrator's data kept with the connection (seed: ID Callcenter, Description, Info,
    /// Iframe).
    pub call_centre_id: Option<String>,
    pub description: Option<String>,
    pub info: Option<Value>,
    pub iframe: Option<Value>,
}

impl TryFrom<ConnectionInput> for NewConnection {
    type Error = FieldError;

    fn try_from(input: ConnectionInput) -> Result<Self, Self::Error> {
        let connection = NewConnection {
            name: ConnectionName::parse(&input.name)?,
            kind: ConnectorKind::parse(&input.kind)?,
            host: Host::parse(&input.host)?,
            fields: check_fields(input.fields)?,
            credentials: parse_credentials(input.credentials)?,
            template_version: input.template_version,
            details: details(input.call_centre_id, input.description, input.info, input.iframe)?,
        };
        check_for_kind(&connection.kind, &connection.host, &connection.fields, &connection.credentials)?;
        Ok(connection)
    }
}

/// The integrator's data as stored in a connection's `details`.
pub fn details(
    call_centre_id: Option<String>,
    description: Option<String>,
    info: Option<Value>,
    iframe: Option<Value>,
) -> Result<Map<String, Value>, FieldError> {
    let mut details = Map::new();
    if let Some(id) = call_centre_id {
        if id.len() > 100 {
            return Err(FieldError::new("call_centre_id", "must be at most 100 characters"));
        }
        details.insert("call_centre_id".into(), Value::String(id));
    }
    if let Some(description) = description {
        details.insert("description".into(), Value::String(description));
    }
    for (name, value) in [("info", info), ("iframe", iframe)] {
        match value {
            None => {}
            Some(v @ (Value::Object(_) | Value::Array(_))) => {
                details.insert(name.into(), v);
            }
            Some(_) => return Err(FieldError::new(name, "must be a JSON object or list")),
        }
    }
    Ok(details)
}

/// What the connector itself requires (Vtiger: `fields.username`, `credentials.access_key`).
pub fn check_for_kind(
    kind: &ConnectorKind,
    host: &Host,
    fields: &Map<String, Value>,
    credentials: &Credentials,
) -> Result<(), FieldError> {
    crmhub_connectors::validate(kind, host, fields, credentials).map_err(|e| match e {
        crmhub_core::crm::CrmError::Validation { field, message } => FieldError::new(field, message),
        other => FieldError::new("kind", other.to_string()),
    })
}

/// Non-secret settings. A key named like a secret is refused, so a password cannot end up in
/// plain text by being put in the wrong object.
pub fn check_fields(fields: Map<String, Value>) -> Result<Map<String, Value>, FieldError> {
    for key in fields.keys() {
        if is_sensitive_name(key) {
            return Err(FieldError::new(
                format!("fields.{key}"),
                "looks like a secret; send it in \"credentials\", which are encrypted and never shown",
            ));
        }
        if key.is_empty() || key.len() > 100 {
            return Err(FieldError::new("fields", "keys must be 1 to 100 characters"));
        }
    }
    Ok(fields)
}

/// Credentials: an object of non-empty strings with identifier-like names.
pub fn parse_credentials(raw: Map<String, Value>) -> Result<Credentials, FieldError> {
    let mut credentials = Credentials::new();
    for (name, value) in raw {
        let field = format!("credentials.{name}");
        if !is_identifier(&name.to_ascii_lowercase()) {
            return Err(FieldError::new(field, "names may contain only letters, digits, '_' and '-'"));
        }
        match value {
            Value::String(s) if !s.is_empty() => credentials.insert(name, Secret::new(s)),
            Value::String(_) => return Err(FieldError::new(field, "must not be empty")),
            _ => return Err(FieldError::new(field, "must be a string")),
        }
    }
    Ok(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: Value) -> Result<NewConnection, FieldError> {
        NewConnection::try_from(serde_json::from_value::<ConnectionInput>(v).unwrap())
    }

    #[test]
    fn a_valid_connection_parses() {
        let c = input(json!({"name": "Main", "kind": "vtiger", "host": "crm.example.com",
            "fields": {"username": "admin"}, "credentials": {"access_key": "k"}}))
        .unwrap();
        assert_eq!(c.host.as_str(), "https://crm.example.com");
        assert_eq!(c.credentials.names().collect::<Vec<_>>(), ["access_key"]);
    }

    #[test]
    fn secrets_in_fields_and_bad_credentials_are_named() {
        let e = input(json!({"name": "M", "kind": "vtiger", "host": "x.io", "fields": {"password": "p"}})).unwrap_err();
        assert_eq!(e.field, "fields.password");
        let e = input(json!({"name": "M", "kind": "vtiger", "host": "x.io", "credentials": {"access_key": 5}}))
            .unwrap_err();
        assert_eq!(e.field, "credentials.access_key");
        let e = input(json!({"name": "M", "kind": "nope", "host": "x.io"})).unwrap_err();
        assert_eq!(e.field, "kind");
    }
}
