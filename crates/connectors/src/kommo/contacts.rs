//! Kommo's contact as the REST API v4 returns it (contract §4), and what crmhub reads from it.
//! E-mails and phones live in `custom_fields_values`, found by `field_code` at whatever index
//! they sit (a contact may list PHONE before EMAIL, or several of each).

use crmhub_core::crm::{ContactRecord, ContactSummary, CrmError, LabeledValue};
use serde::Deserialize;
use serde_json::Value;

/// At most this many contacts per page (`limit` above it is a 422, contract §4).
pub(super) const MAX_PAGE: usize = 250;

#[derive(Debug, Clone, Deserialize)]
pub(super) struct V4Contact {
    pub id: i64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub updated_at: Option<i64>,
    #[serde(default)]
    pub custom_fields_values: Option<Vec<CustomField>>,
    #[serde(default, rename = "_embedded")]
    pub embedded: Option<Embedded>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Embedded {
    #[serde(default)]
    pub companies: Vec<Linked>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Linked {
    pub id: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct CustomField {
    #[serde(default)]
    pub field_name: Option<String>,
    #[serde(default)]
    pub field_code: Option<String>,
    #[serde(default)]
    pub values: Vec<FieldValue>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct FieldValue {
    #[serde(default)]
    pub value: Value,
    #[serde(default)]
    pub enum_code: Option<String>,
}

impl FieldValue {
    fn text(&self) -> Option<String> {
        match &self.value {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// A label for an enum code (contract §4's codes), as a card shows it.
fn enum_label(code: Option<&str>) -> &'static str {
    match code.unwrap_or_default() {
        "WORK" => "Work",
        "WORKDD" => "Work direct",
        "MOB" => "Mobile",
        "FAX" => "Fax",
        "HOME" => "Home",
        "PRIV" => "Private",
        _ => "Other",
    }
}

impl V4Contact {
    fn fields(&self, code: &str) -> impl Iterator<Item = &FieldValue> {
        self.custom_fields_values
            .iter()
            .flatten()
            .filter(move |f| f.field_code.as_deref() == Some(code))
            .flat_map(|f| f.values.iter())
    }

    fn texts(&self, code: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for value in self.fields(code).filter_map(FieldValue::text) {
            if !out.contains(&value) {
                out.push(value);
            }
        }
        out
    }

    pub fn emails(&self) -> Vec<String> {
        self.texts("EMAIL")
    }

    pub fn phones(&self) -> Vec<String> {
        self.texts("PHONE")
    }

    pub fn labeled(&self, code: &str) -> Vec<LabeledValue> {
        self.fields(code)
            .filter_map(|v| v.text().map(|text| LabeledValue::new(enum_label(v.enum_code.as_deref()), text)))
            .collect()
    }

    /// User-defined fields with their names (neither EMAIL nor PHONE), for a card.
    pub fn other_fields(&self) -> Vec<LabeledValue> {
        self.custom_fields_values
            .iter()
            .flatten()
            .filter(|f| !matches!(f.field_code.as_deref(), Some("EMAIL" | "PHONE")))
            .filter_map(|f| {
                let values: Vec<String> = f.values.iter().filter_map(FieldValue::text).collect();
                let name = f.field_name.clone().filter(|n| !n.is_empty())?;
                (!values.is_empty()).then(|| LabeledValue::new(name, values.join(", ")))
            })
            .collect()
    }

    pub fn display_name(&self) -> String {
        let trimmed = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        if let Some(name) = trimmed(&self.name) {
            return name;
        }
        let parts: Vec<String> = [trimmed(&self.first_name), trimmed(&self.last_name)].into_iter().flatten().collect();
        if parts.is_empty() { format!("Contact {}", self.id) } else { parts.join(" ") }
    }

    pub fn company_id(&self) -> Option<i64> {
        self.embedded.as_ref()?.companies.first().map(|c| c.id)
    }

    pub fn summary(&self, company: Option<String>) -> ContactSummary {
        ContactSummary {
            id: self.id.to_string(),
            display_name: self.display_name(),
            company,
            emails: self.emails(),
            phones: self.phones(),
        }
    }

    pub fn record(&self) -> ContactRecord {
        let trimmed = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        ContactRecord {
            id: self.id.to_string(),
            display_name: self.display_name(),
            first_name: trimmed(&self.first_name),
            last_name: trimmed(&self.last_name),
            emails: self.emails(),
            phones: self.phones(),
            company: None,
            modified_at: self.updated_at,
        }
    }
}

/// One page of a list: its contacts, and the page `_links.next` points to, if any.
pub(super) fn page(body: &Value) -> Result<(Vec<V4Contact>, Option<u32>), CrmError> {
    let contacts = body
        .pointer("/_embedded/contacts")
        .cloned()
        .ok_or_else(|| CrmError::Protocol("a Kommo contact list without _embedded.contacts".into()))?;
    let contacts: Vec<V4Contact> = serde_json::from_value(contacts)
        .map_err(|e| CrmError::Protocol(format!("a Kommo contact has an unexpected shape: {e}")))?;
    let next = match body.pointer("/_links/next/href").and_then(Value::as_str) {
        None => None,
        Some(href) => Some(next_page(href)?),
    };
    Ok((contacts, next))
}

/// The page number in a `_links.next` href. Only the number is taken from it: crmhub builds
/// the next request itself, so a link to another host can never receive the token.
fn next_page(href: &str) -> Result<u32, CrmError> {
    let url = url::Url::parse(href)
        .or_else(|_| url::Url::parse("https://kommo.invalid/").and_then(|base| base.join(href)))
        .map_err(|e| CrmError::Protocol(format!("Kommo's next-page link {href:?} is not a URL: {e}")))?;
    url.query_pairs()
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| CrmError::Protocol(format!("Kommo's next-page link {href:?} names no page")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn emails_and_phones_are_found_by_code_at_any_index() {
        let contact: V4Contact = serde_json::from_value(json!({
            "id": 7, "name": "Иван Петров", "first_name": "Иван", "last_name": "Петров",
            "custom_fields_values": [
                {"field_id": 3, "field_name": "Position", "field_code": "POSITION", "values": [{"value": "CEO"}]},
                {"field_id": 1, "field_name": "Phone", "field_code": "PHONE",
                 "values": [{"value": "+7 912 345-67-89", "enum_code": "MOB"}, {"value": 74951234567_i64, "enum_code": "WORK"}]},
                {"field_id": 9, "field_name": "Birthday", "values": [{"value": "1990-01-01"}]},
                {"field_id": 2, "field_name": "Email", "field_code": "EMAIL",
                 "values": [{"value": "ivan@example.ru", "enum_code": "WORK"}, {"value": "i@example.com", "enum_code": "PRIV"}]}
            ],
            "_embedded": {"tags": [], "companies": [{"id": 55}]}
        }))
        .unwrap();
        assert_eq!(contact.emails(), ["ivan@example.ru", "i@example.com"]);
        assert_eq!(contact.phones(), ["+7 912 345-67-89", "74951234567"]);
        assert_eq!(contact.labeled("EMAIL")[1], LabeledValue::new("Private", "i@example.com"));
        assert_eq!(contact.display_name(), "Иван Петров");
        assert_eq!(contact.company_id(), Some(55));
        let others = contact.other_fields();
        assert_eq!(others, [LabeledValue::new("Position", "CEO"), LabeledValue::new("Birthday", "1990-01-01")]);
    }

    #[test]
    fn a_contact_without_custom_fields_has_none() {
        let contact: V4Contact = serde_json::from_value(
            json!({"id": 8, "name": "", "first_name": "Ann", "last_name": null, "custom_fields_values": null}),
        )
        .unwrap();
        assert!(contact.emails().is_empty() && contact.phones().is_empty());
        assert_eq!(contact.display_name(), "Ann");
    }

    #[test]
    fn the_next_page_is_read_from_the_link_query() {
        let body = json!({"_page": 1, "_links": {"self": {"href": "https://x.kommo.com/api/v4/contacts?page=1&limit=250"},
            "next": {"href": "https://x.kommo.com/api/v4/contacts?limit=250&page=2"}}, "_embedded": {"contacts": []}});
        assert_eq!(page(&body).unwrap().1, Some(2));
        let last = json!({"_links": {"self": {"href": "/api/v4/contacts?page=3"}}, "_embedded": {"contacts": []}});
        assert_eq!(page(&last).unwrap().1, None);
        let broken = json!({"_links": {"next": {"href": "https://x.kommo.com/api/v4/contacts?limit=250"}}, "_embedded": {"contacts": []}});
        assert!(matches!(page(&broken), Err(CrmError::Protocol(_))));
    }
}
