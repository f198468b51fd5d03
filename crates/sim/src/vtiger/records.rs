//! The record store and the record operations (contract §4, §5, §10): create, retrieve, update
//! (full replace), revise (merge), delete, with Vtiger's weak validation — picklists and e-mails
//! are stored as given, a reference to a record that is not there becomes `""` — and its habit of
//! answering "not found" with `ACCESS_DENIED`.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::auth::{Auth, UserAccount};
use super::error::{self, WsResult};
use super::json::Out;
use super::modules::{self, FieldType, Schema};
use super::timefmt;

pub(crate) type Fields = HashMap<String, String>;

#[derive(Debug, Clone)]
pub(crate) struct StoredRecord {
    pub(crate) schema: &'static Schema,
    /// Every schema field, always present (`""` when unset). `id` is not stored here.
    pub(crate) fields: Fields,
    pub(crate) deleted: bool,
    /// Unix seconds of the last change (deletion included), for `sync`.
    pub(crate) modified_at: i64,
}

/// Who writes and when.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Writer<'a> {
    pub(crate) auth: &'a Auth,
    pub(crate) user_id: u64,
    pub(crate) now: i64,
}

#[derive(Debug, Default)]
pub(crate) struct Store {
    last_crmid: u64,
    /// By crmid, so iteration is creation order.
    records: BTreeMap<u64, StoredRecord>,
    /// Last generated number per numbering prefix (`CON`, `TT`, `ACC`).
    numbers: HashMap<&'static str, u64>,
    /// Fields an administrator made mandatory (Settings → Layout Editor), per module, beyond
    /// the stock ones.
    pub(crate) made_mandatory: std::collections::BTreeSet<(&'static str, String)>,
}

/// `<prefix>x<crmid>`, both decimal. Anything else is malformed.
pub(crate) fn parse_ws_id(id: &str) -> Option<(u32, u64)> {
    let (prefix, crmid) = id.split_once('x')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(prefix) || !all_digits(crmid) {
        return None;
    }
    Some((prefix.parse().ok()?, crmid.parse().ok()?))
}

/// How Vtiger resolves a record id: malformed or unknown prefix → "denied for id"; a well-formed
/// id whose record is missing, deleted or of another module → plain "denied".
enum Target {
    Record(&'static Schema, u64),
    User(u64),
}

fn resolve_target(id: Option<&str>) -> WsResult<Target> {
    let (prefix, crmid) = id.and_then(parse_ws_id).ok_or_else(error::denied_for_id)?;
    match modules::by_prefix(prefix) {
        Some(schema) if schema.name == "Users" => Ok(Target::User(crmid)),
        Some(schema) => Ok(Target::Record(schema, crmid)),
        None if modules::is_known_unsimulated_prefix(prefix) => Err(error::denied()),
        None => Err(error::denied_for_id()),
    }
}

/// PHP's string conversion of a decoded JSON value; `None` for null (unset).
fn php_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(true) => Some("1".into()),
        Value::Bool(false) => Some(String::new()),
        Value::Number(n) => Some(match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            // PHP prints whole floats without a fraction.
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
            _ => n.to_string(),
        }),
        Value::Array(_) | Value::Object(_) => Some("Array".into()),
    }
}

/// The decoded `element`, as PHP sees it: anything but a JSON object is an empty row.
pub(crate) fn element_map(element: Option<&str>) -> HashMap<String, String> {
    let decoded: Option<Value> = element.and_then(|e| serde_json::from_str(e).ok());
    match decoded {
        Some(Value::Object(map)) => map.iter().filter_map(|(k, v)| php_string(v).map(|s| (k.clone(), s))).collect(),
        _ => HashMap::new(),
    }
}

fn default_value(ty: FieldType) -> &'static str {
    match ty {
        // Checkbox columns default to 0 in the database.
        FieldType::Boolean => "0",
        _ => "",
    }
}

fn normalize_boolean(v: &str) -> &'static str {
    let v = v.trim();
    if v == "1" || ["true", "on", "yes"].iter().any(|t| v.eq_ignore_ascii_case(t)) { "1" } else { "0" }
}

pub(crate) fn record_label(schema: &Schema, fields: &Fields) -> String {
    schema
        .label_from
        .iter()
        .filter_map(|f| fields.get(*f))
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_owned()
}

/// A record as the API returns it: schema order, `id` last, then `label` when asked for.
pub(crate) fn render(schema: &Schema, crmid: u64, fields: &Fields, with_label: bool) -> Out {
    let mut pairs: Vec<(String, Out)> = schema
        .fields
        .iter()
        .map(|f| {
            let v = fields.get(f.name).cloned().unwrap_or_default();
            (f.name.to_owned(), Out::Str(v))
        })
        .collect();
    pairs.push(("id".into(), Out::Str(format!("{}x{crmid}", schema.prefix))));
    if with_label {
        pairs.push(("label".into(), Out::Str(record_label(schema, fields))));
    }
    Out::Obj(pairs)
}

pub(crate) fn render_user(user: &UserAccount, with_label: bool) -> Out {
    render(&modules::USERS, user.id, &user.fields(), with_label)
}

impl Store {
    fn next_crmid(&mut self) -> u64 {
        self.last_crmid += 1;
        self.last_crmid
    }

    fn next_number(&mut self, prefix: &'static str) -> String {
        let n = self.numbers.entry(prefix).or_insert(0);
        *n += 1;
        format!("{prefix}{n}")
    }

    pub(crate) fn get(&self, crmid: u64) -> Option<&StoredRecord> {
        self.records.get(&crmid)
    }

    /// Live records of a module, in creation order.
    pub(crate) fn live(&self, schema: &Schema) -> impl Iterator<Item = (u64, &StoredRecord)> {
        self.records.iter().filter(move |(_, r)| !r.deleted && r.schema.name == schema.name).map(|(id, r)| (*id, r))
    }

    /// Every record of a module, deleted ones included (for `sync`).
    pub(crate) fn all_of(&self, schema: &Schema) -> impl Iterator<Item = (u64, &StoredRecord)> {
        self.records.iter().filter(move |(_, r)| r.schema.name == schema.name).map(|(id, r)| (*id, r))
    }

    fn live_record(&self, schema: &Schema, crmid: u64) -> WsResult<&StoredRecord> {
        self.records.get(&crmid).filter(|r| !r.deleted && r.schema.name == schema.name).ok_or_else(error::denied)
    }

    /// Checks the reference and owner values a client sends, the way `vtws_create` does before
    /// the mandatory check: malformed → "denied for id", a module the field cannot point to →
    /// `REFERENCE_INVALID`, an owner that is no user or group → "Cannot assign".
    fn check_references(&self, schema: &Schema, element: &HashMap<String, String>, w: Writer<'_>) -> WsResult<()> {
        for field in schema.fields {
            if !matches!(field.ty, FieldType::Reference | FieldType::Owner) {
                continue;
            }
            let Some(value) = element.get(field.name).filter(|v| !v.is_empty()) else {
                continue;
            };
            let (prefix, id) = parse_ws_id(value).ok_or_else(error::denied_for_id)?;
            let target = modules::module_for_known_prefix(prefix).ok_or_else(error::denied_for_id)?;
            if !field.refers_to.contains(&target) {
                return Err(error::reference_invalid(field.name));
            }
            if field.ty == FieldType::Owner {
                let assignable = match target {
                    "Users" => w.auth.user_by_id(id).is_some(),
                    _ => modules::DEFAULT_GROUP_IDS.contains(&id),
                };
                if !assignable {
                    return Err(error::cannot_assign());
                }
            }
        }
        Ok(())
    }

    /// A checked reference value as stored: canonical id when the record exists (deleted ones
    /// still resolve, as their crmentity row remains), `""` when it does not.
    fn resolve_reference(&self, value: &str, auth: &Auth) -> String {
        let Some((prefix, id)) = parse_ws_id(value) else {
            return String::new();
        };
        let exists = match prefix {
            19 => auth.user_by_id(id).is_some(),
            modules::GROUPS_PREFIX => modules::DEFAULT_GROUP_IDS.contains(&id),
            _ => self.records.get(&id).is_some_and(|r| r.schema.prefix == prefix),
        };
        if exists { format!("{prefix}x{id}") } else { String::new() }
    }

    fn check_mandatory(&self, schema: &Schema, values: &HashMap<String, String>) -> WsResult<()> {
        let custom = self.made_mandatory.iter().filter(|(module, _)| *module == schema.name).map(|(_, f)| f.as_str());
        for field in schema.mandatory.iter().copied().chain(custom) {
            if values.get(field).is_none_or(|v| v.is_empty()) {
                return Err(error::mandatory_missing(field));
            }
        }
        Ok(())
    }

    /// Whether `field` of `schema` must have a value, stock or made so by an administrator.
    pub(crate) fn is_mandatory(&self, schema: &Schema, field: &str) -> bool {
        schema.is_mandatory(field) || self.made_mandatory.contains(&(schema.name, field.to_owned()))
    }

    /// Stores one client-supplied value the way its type is stored.
    fn stored_value(&self, ty: FieldType, value: &str, auth: &Auth) -> String {
        match ty {
            FieldType::Boolean => normalize_boolean(value).to_owned(),
            FieldType::Reference | FieldType::Owner => self.resolve_reference(value, auth),
            _ => value.to_owned(),
        }
    }

    /// Editable fields from `element` (or their defaults); server-owned fields from `existing`.
    fn build_fields(
        &self,
        schema: &Schema,
        element: &HashMap<String, String>,
        existing: Option<&Fields>,
        auth: &Auth,
    ) -> Fields {
        schema
            .fields
            .iter()
            .map(|f| {
                let value = if f.editable {
                    match element.get(f.name) {
                        Some(v) if !v.is_empty() => self.stored_value(f.ty, v, auth),
                        _ => default_value(f.ty).to_owned(),
                    }
                } else {
                    existing.and_then(|e| e.get(f.name).cloned()).unwrap_or_else(|| default_value(f.ty).to_owned())
                };
                (f.name.to_owned(), value)
            })
            .collect()
    }

    fn stamp_modified(fields: &mut Fields, w: Writer<'_>) {
        fields.insert("modifiedtime".into(), timefmt::datetime(w.now));
        fields.insert("modifiedby".into(), format!("19x{}", w.user_id));
    }

    /// Server-filled values of a new record.
    fn stamp_created(&mut self, schema: &Schema, fields: &mut Fields, w: Writer<'_>, source: &str) {
        if let Some((field, prefix)) = schema.numbering {
            let number = self.next_number(prefix);
            fields.insert(field.into(), number);
        }
        fields.insert("createdtime".into(), timefmt::datetime(w.now));
        Self::stamp_modified(fields, w);
        fields.insert("source".into(), source.into());
        match schema.name {
            "ModComments" => {
                fields.insert("creator".into(), format!("19x{}", w.user_id));
            }
            "Calendar" => {
                fields.insert("activitytype".into(), "Task".into());
            }
            _ => {}
        }
    }

    pub(crate) fn create(&mut self, element_type: Option<&str>, element: Option<&str>, w: Writer<'_>) -> WsResult<Out> {
        let schema = element_type.and_then(modules::by_name).filter(|s| s.writable).ok_or_else(error::denied)?;
        let element = element_map(element);
        self.check_references(schema, &element, w)?;
        self.check_mandatory(schema, &element)?;
        let mut fields = self.build_fields(schema, &element, None, w.auth);
        self.stamp_created(schema, &mut fields, w, "WEBSERVICE");
        let crmid = self.next_crmid();
        let out = render(schema, crmid, &fields, true);
        self.records.insert(crmid, StoredRecord { schema, fields, deleted: false, modified_at: w.now });
        Ok(out)
    }

    pub(crate) fn retrieve(&self, id: Option<&str>, auth: &Auth) -> WsResult<Out> {
        match resolve_target(id)? {
            Target::User(uid) => auth.user_by_id(uid).map(|u| render_user(u, true)).ok_or_else(error::denied),
            Target::Record(schema, crmid) => {
                let record = self.live_record(schema, crmid)?;
                Ok(render(schema, crmid, &record.fields, true))
            }
        }
    }

    fn writable_target(&self, id: Option<&str>) -> WsResult<(&'static Schema, u64)> {
        match resolve_target(id)? {
            Target::User(_) => Err(error::denied()),
            Target::Record(schema, crmid) => {
                self.live_record(schema, crmid)?;
                Ok((schema, crmid))
            }
        }
    }

    /// `update`: the element is the whole record; what it leaves out is cleared.
    pub(crate) fn update(&mut self, element: Option<&str>, w: Writer<'_>) -> WsResult<Out> {
        let element = element_map(element);
        let (schema, crmid) = self.writable_target(element.get("id").map(String::as_str))?;
        self.check_references(schema, &element, w)?;
        self.check_mandatory(schema, &element)?;
        self.replace(schema, crmid, &element, w)
    }

    /// `revise`: the element holds only the changes, merged over the stored record.
    pub(crate) fn revise(&mut self, element: Option<&str>, w: Writer<'_>) -> WsResult<Out> {
        let element = element_map(element);
        let (schema, crmid) = self.writable_target(element.get("id").map(String::as_str))?;
        self.check_references(schema, &element, w)?;
        let mut merged = self.live_record(schema, crmid)?.fields.clone();
        merged.extend(element);
        self.check_mandatory(schema, &merged)?;
        self.replace(schema, crmid, &merged, w)
    }

    fn replace(
        &mut self,
        schema: &'static Schema,
        crmid: u64,
        values: &HashMap<String, String>,
        w: Writer<'_>,
    ) -> WsResult<Out> {
        let existing = self.live_record(schema, crmid)?.fields.clone();
        let mut fields = self.build_fields(schema, values, Some(&existing), w.auth);
        Self::stamp_modified(&mut fields, w);
        let out = render(schema, crmid, &fields, true);
        if let Some(record) = self.records.get_mut(&crmid) {
            record.fields = fields;
            record.modified_at = w.now;
        }
        Ok(out)
    }

    pub(crate) fn delete(&mut self, id: Option<&str>, w: Writer<'_>) -> WsResult<Out> {
        let (_, crmid) = self.writable_target(id)?;
        self.mark_deleted(crmid, w);
        Ok(Out::obj([("status", Out::str("successful"))]))
    }

    fn mark_deleted(&mut self, crmid: u64, w: Writer<'_>) {
        if let Some(record) = self.records.get_mut(&crmid) {
            record.deleted = true;
            record.modified_at = w.now;
            Self::stamp_modified(&mut record.fields, w);
        }
    }

    /// Test/demo seeding: no validation beyond dropping unknown fields, like a record entered in
    /// the CRM's own UI (`source` = `CRM`). Server-owned fields may be given (e.g. an old
    /// `modifiedtime`) and are then kept.
    pub(crate) fn insert_seed(
        &mut self,
        schema: &'static Schema,
        given: &HashMap<String, String>,
        w: Writer<'_>,
    ) -> u64 {
        let mut fields = self.build_fields(schema, given, None, w.auth);
        self.stamp_created(schema, &mut fields, w, "CRM");
        if !given.contains_key("assigned_user_id") {
            fields.insert("assigned_user_id".into(), format!("19x{}", w.user_id));
        }
        let mut modified_at = w.now;
        for f in schema.fields.iter().filter(|f| !f.editable) {
            if let Some(v) = given.get(f.name) {
                fields.insert(f.name.to_owned(), v.clone());
                if f.name == "modifiedtime" {
                    modified_at = timefmt::parse(v).unwrap_or(w.now);
                }
            }
        }
        let crmid = self.next_crmid();
        self.records.insert(crmid, StoredRecord { schema, fields, deleted: false, modified_at });
        crmid
    }

    /// Test hook: changes fields as a CRM user would (no validation), bumping `modifiedtime`.
    pub(crate) fn edit_seed(&mut self, crmid: u64, given: &HashMap<String, String>, w: Writer<'_>) -> bool {
        let Some(record) = self.records.get_mut(&crmid).filter(|r| !r.deleted) else {
            return false;
        };
        let schema = record.schema;
        for (k, v) in given {
            if schema.field(k).is_some() {
                record.fields.insert(k.clone(), v.clone());
            }
        }
        record.modified_at = w.now;
        Self::stamp_modified(&mut record.fields, w);
        true
    }

    /// Test hook: deletes as a CRM user would.
    pub(crate) fn delete_seed(&mut self, crmid: u64, w: Writer<'_>) -> bool {
        if self.records.get(&crmid).is_none_or(|r| r.deleted) {
            return false;
        }
        self.mark_deleted(crmid, w);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_ids_parse_strictly() {
        assert_eq!(parse_ws_id("12x5"), Some((12, 5)));
        assert_eq!(parse_ws_id("abc"), None);
        assert_eq!(parse_ws_id("12x"), None);
        assert_eq!(parse_ws_id("x5"), None);
        assert_eq!(parse_ws_id("12x5x"), None);
        assert_eq!(parse_ws_id("-1x5"), None);
    }

    #[test]
    fn element_values_convert_like_php() {
        let m = element_map(Some(r#"{"a":"x","b":5,"c":true,"d":false,"e":null,"f":2.0,"g":[1]}"#));
        assert_eq!(m["a"], "x");
        assert_eq!(m["b"], "5");
        assert_eq!(m["c"], "1");
        assert_eq!(m["d"], "");
        assert!(!m.contains_key("e"));
        assert_eq!(m["f"], "2");
        assert_eq!(m["g"], "Array");
        assert!(element_map(Some("{not json")).is_empty());
        assert!(element_map(Some("[1,2]")).is_empty());
    }
}
