//! What a pipeline may be: a source whose connector lists changes, a Unisender destination, a
//! list, and a field map from known source fields to destination fields.

use crmhub_core::crm::Capability;
use crmhub_core::{ConnectorKind, FieldError};
use crmhub_store::connections::Connection;
use crmhub_store::sync::{Deletion, NewPipeline};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Source fields every contact has.
pub(crate) const BUILTIN_FIELDS: [&str; 4] = ["name", "first_name", "last_name", "phone"];

/// The source fields a map may name, besides custom field codes (`POSITION`, `BIRTHDAY`, …).
pub const SOURCE_FIELDS: &[&str] = &BUILTIN_FIELDS;

/// A pipeline as the admin API receives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineInput {
    pub name: String,
    pub source_connection_id: String,
    pub destination_connection_id: String,
    pub list_id: String,
    #[serde(default)]
    pub field_map: Option<Map<String, Value>>,
    #[serde(default)]
    pub deletion: Option<String>,
    #[serde(default)]
    pub poll_secs: Option<u32>,
}

/// The default map: the contact's name into Unisender's `Name` field.
pub fn default_field_map() -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("name".into(), Value::String("Name".into()));
    map
}

/// A custom field code: upper-case letters, digits and `_`, starting with a letter.
fn is_custom_code(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Checks a field map: known source fields (or custom field codes) to non-empty destination
/// names; `email` is the key and is never mapped.
pub fn validate_field_map(map: &Map<String, Value>) -> Result<(), FieldError> {
    for (source, target) in map {
        let field = format!("field_map.{source}");
        if !BUILTIN_FIELDS.contains(&source.as_str()) && !is_custom_code(source) {
            return Err(FieldError::new(
                field,
                format!(
                    "unknown source field {source:?}; expected one of {} or a custom field code (e.g. POSITION)",
                    BUILTIN_FIELDS.join(", ")
                ),
            ));
        }
        match target.as_str().map(str::trim) {
            Some(t) if !t.is_empty() && t.len() <= 64 && t != "email" && t != "delete" => {}
            _ => return Err(FieldError::new(field, "must name a destination field (not email or delete)")),
        }
    }
    Ok(())
}

pub fn parse_deletion(raw: Option<&str>) -> Result<Deletion, FieldError> {
    match raw {
        None => Ok(Deletion::Exclude),
        Some(raw) => Deletion::parse(raw)
            .ok_or_else(|| FieldError::new("deletion", format!("{raw:?} is not a policy; expected exclude or delete"))),
    }
}

pub fn check_poll_secs(poll: Option<u32>) -> Result<(), FieldError> {
    match poll {
        Some(secs) if !(10..=86_400).contains(&secs) => {
            Err(FieldError::new("poll_secs", "must be between 10 and 86400 seconds"))
        }
        _ => Ok(()),
    }
}

/// A checked pipeline, ready to store.
#[derive(Debug, Clone)]
pub struct ValidatedPipeline(pub NewPipeline);

/// Checks a pipeline against its two connections: the source must list changes
/// (`source_capabilities`), the destination must be a Unisender connection.
pub fn validate(
    input: PipelineInput,
    source: &Connection,
    source_capabilities: &[Capability],
    destination: &Connection,
) -> Result<ValidatedPipeline, FieldError> {
    let name = input.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(FieldError::new("name", "must be 1 to 100 characters"));
    }
    if !source_capabilities.contains(&Capability::ListChanges) {
        return Err(FieldError::new(
            "source_connection_id",
            format!(
                "a {} connection cannot be a source: its connector does not list changes (contact.changes)",
                source.kind
            ),
        ));
    }
    if destination.kind != ConnectorKind::Unisender {
        return Err(FieldError::new(
            "destination_connection_id",
            format!("must be a unisender connection, not {}", destination.kind),
        ));
    }
    let list_id = input.list_id.trim();
    if list_id.is_empty() {
        return Err(FieldError::new("list_id", "is required: the Unisender list to mirror into"));
    }
    let field_map = input.field_map.unwrap_or_else(default_field_map);
    validate_field_map(&field_map)?;
    check_poll_secs(input.poll_secs)?;
    Ok(ValidatedPipeline(NewPipeline {
        name: name.to_owned(),
        source_connection_id: source.id,
        destination_connection_id: destination.id,
        list_id: list_id.to_owned(),
        field_map,
        deletion: parse_deletion(input.deletion.as_deref())?,
        poll_secs: input.poll_secs,
    }))
}
