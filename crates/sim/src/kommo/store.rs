//! The account's data: custom field definitions, contacts, companies, notes and tasks, their v4
//! JSON (§4) and their webhook items (§5). Times are Unix seconds.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::webhooks::Item;
use super::{Action, SimContact};

/// The admin who granted access (tokens carry their rights, §1).
pub(crate) const USER_ADMIN: i64 = 11_087_123;
pub(crate) const USER_MANAGER: i64 = 11_087_125;
pub(crate) const USERS: &[i64] = &[USER_ADMIN, USER_MANAGER];

pub(crate) const FIELD_PHONE: i64 = 771_906;
pub(crate) const FIELD_EMAIL: i64 = 771_908;
pub(crate) const FIELD_POSITION: i64 = 771_904;
/// A user-defined field: no `field_code`, and no `code` in webhooks (§5).
pub(crate) const FIELD_SOURCE: i64 = 812_345;

/// A custom field of the account. `enum_id`s are per-account numbers (§4); ours are fixed.
#[derive(Debug)]
pub(crate) struct FieldDef {
    pub(crate) id: i64,
    pub(crate) name: &'static str,
    pub(crate) code: Option<&'static str>,
    pub(crate) kind: &'static str,
    pub(crate) enums: &'static [(i64, &'static str)],
}

pub(crate) const FIELDS: &[FieldDef] = &[
    FieldDef { id: FIELD_POSITION, name: "Position", code: Some("POSITION"), kind: "text", enums: &[] },
    FieldDef {
        id: FIELD_PHONE,
        name: "Phone",
        code: Some("PHONE"),
        kind: "multitext",
        enums: &[
            (552_476, "WORK"),
            (552_478, "WORKDD"),
            (552_480, "MOB"),
            (552_482, "FAX"),
            (552_484, "HOME"),
            (552_486, "OTHER"),
        ],
    },
    FieldDef {
        id: FIELD_EMAIL,
        name: "Email",
        code: Some("EMAIL"),
        kind: "multitext",
        enums: &[(552_488, "WORK"), (552_490, "PRIV"), (552_492, "OTHER")],
    },
    FieldDef { id: FIELD_SOURCE, name: "Source", code: None, kind: "text", enums: &[] },
];

pub(crate) fn field(id: i64) -> Option<&'static FieldDef> {
    FIELDS.iter().find(|f| f.id == id)
}

pub(crate) fn field_by_code(code: &str) -> Option<&'static FieldDef> {
    FIELDS.iter().find(|f| f.code == Some(code))
}

impl FieldDef {
    pub(crate) fn enum_id(&self, code: &str) -> Option<i64> {
        self.enums.iter().find(|(_, c)| *c == code).map(|(id, _)| *id)
    }

    fn enum_code(&self, id: i64) -> Option<&'static str> {
        self.enums.iter().find(|(e, _)| *e == id).map(|(_, c)| *c)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldValue {
    pub(crate) field_id: i64,
    /// `(value as stored, enum id)`.
    pub(crate) values: Vec<(String, Option<i64>)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Contact {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    pub(crate) responsible_user_id: i64,
    pub(crate) created_by: i64,
    pub(crate) updated_by: i64,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    /// In the order Kommo stores (and delivers) them: EMAIL/PHONE can sit at any index.
    pub(crate) fields: Vec<FieldValue>,
    pub(crate) tags: Vec<(i64, String)>,
    pub(crate) company_id: Option<i64>,
}

#[derive(Debug, Clone)]
pub(crate) struct Company {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) responsible_user_id: i64,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) fields: Vec<FieldValue>,
    pub(crate) linked_leads: Vec<i64>,
}

#[derive(Debug, Clone)]
pub(crate) struct Note {
    pub(crate) id: i64,
    pub(crate) entity_id: i64,
    pub(crate) note_type: String,
    pub(crate) params: Value,
    /// What [`super::KommoSim::notes`] shows: `params.text`, or a summary for call notes.
    pub(crate) text: String,
    pub(crate) created_at: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub(crate) id: i64,
    pub(crate) entity_id: i64,
    pub(crate) text: String,
    pub(crate) complete_till: i64,
    pub(crate) is_completed: bool,
    pub(crate) responsible_user_id: i64,
    pub(crate) created_at: i64,
}

/// `with=` on contact reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct With {
    pub(crate) leads: bool,
    pub(crate) customers: bool,
    pub(crate) catalog_elements: bool,
}

#[derive(Debug)]
pub(crate) struct Store {
    /// One sequence for contacts and companies, so a webhook id names one entity.
    next_id: i64,
    next_note: i64,
    next_task: i64,
    next_tag: i64,
    pub(crate) contacts: BTreeMap<i64, Contact>,
    deleted: BTreeMap<i64, Contact>,
    pub(crate) companies: BTreeMap<i64, Company>,
    notes: Vec<Note>,
    pub(crate) tasks: Vec<Task>,
    tags: Vec<(i64, String)>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            next_id: 17_611_273,
            next_note: 88_100_001,
            next_task: 5_400_001,
            next_tag: 301_001,
            contacts: BTreeMap::new(),
            deleted: BTreeMap::new(),
            companies: BTreeMap::new(),
            notes: Vec::new(),
            tasks: Vec::new(),
            tags: Vec::new(),
        }
    }
}

pub(crate) fn full_name(first: &str, last: &str) -> String {
    format!("{first} {last}").trim().to_owned()
}

fn multitext(field_id: i64, values: &[(String, String)]) -> Option<FieldValue> {
    let def = field(field_id)?;
    let values: Vec<(String, Option<i64>)> = values
        .iter()
        .map(|(value, code)| (value.clone(), def.enum_id(code).or_else(|| def.enum_id("OTHER"))))
        .collect();
    (!values.is_empty()).then_some(FieldValue { field_id, values })
}

fn multitext_pairs(fields: &[FieldValue], field_id: i64) -> Vec<(String, String)> {
    let Some(def) = field(field_id) else { return Vec::new() };
    fields
        .iter()
        .filter(|f| f.field_id == field_id)
        .flat_map(|f| f.values.iter())
        .map(|(value, e)| (value.clone(), e.and_then(|e| def.enum_code(e)).unwrap_or("OTHER").to_owned()))
        .collect()
}

impl Store {
    pub(crate) fn next_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(crate) fn insert_contact(&mut self, contact: Contact) {
        self.contacts.insert(contact.id, contact);
    }

    pub(crate) fn insert_company(&mut self, company: Company) {
        self.companies.insert(company.id, company);
    }

    pub(crate) fn add_task(&mut self, entity_id: i64, text: &str, complete_till: i64, done: bool, now: i64) {
        let id = self.next_task;
        self.next_task += 1;
        self.tasks.push(Task {
            id,
            entity_id,
            text: text.to_owned(),
            complete_till,
            is_completed: done,
            responsible_user_id: USER_ADMIN,
            created_at: now,
        });
    }

    pub(crate) fn tag_id(&mut self, name: &str) -> i64 {
        if let Some((id, _)) = self.tags.iter().find(|(_, n)| n.eq_ignore_ascii_case(name)) {
            return *id;
        }
        let id = self.next_tag;
        self.next_tag += 1;
        self.tags.push((id, name.to_owned()));
        id
    }

    pub(crate) fn add_sim_contact(&mut self, sim: &SimContact, now: i64) -> i64 {
        let id = self.next_id();
        let fields = [multitext(FIELD_PHONE, &sim.phones), multitext(FIELD_EMAIL, &sim.emails)];
        self.contacts.insert(
            id,
            Contact {
                id,
                name: full_name(&sim.first_name, &sim.last_name),
                first_name: sim.first_name.clone(),
                last_name: sim.last_name.clone(),
                responsible_user_id: USER_ADMIN,
                created_by: USER_ADMIN,
                updated_by: USER_ADMIN,
                created_at: now,
                updated_at: now,
                fields: fields.into_iter().flatten().collect(),
                tags: Vec::new(),
                company_id: sim.company_id,
            },
        );
        id
    }

    pub(crate) fn update_sim_contact(&mut self, id: i64, f: impl FnOnce(&mut SimContact), now: i64) -> bool {
        let Some(contact) = self.contacts.get_mut(&id) else { return false };
        let mut sim = SimContact {
            first_name: contact.first_name.clone(),
            last_name: contact.last_name.clone(),
            emails: multitext_pairs(&contact.fields, FIELD_EMAIL),
            phones: multitext_pairs(&contact.fields, FIELD_PHONE),
            company_id: contact.company_id,
        };
        f(&mut sim);
        if sim.first_name != contact.first_name || sim.last_name != contact.last_name {
            contact.name = full_name(&sim.first_name, &sim.last_name);
        }
        contact.first_name = sim.first_name;
        contact.last_name = sim.last_name;
        contact.company_id = sim.company_id;
        replace_field(&mut contact.fields, multitext(FIELD_PHONE, &sim.phones), FIELD_PHONE);
        replace_field(&mut contact.fields, multitext(FIELD_EMAIL, &sim.emails), FIELD_EMAIL);
        contact.updated_at = now;
        contact.updated_by = USER_ADMIN;
        true
    }

    pub(crate) fn delete_contact(&mut self, id: i64) -> bool {
        match self.contacts.remove(&id) {
            Some(contact) => {
                self.deleted.insert(id, contact);
                true
            }
            None => false,
        }
    }

    pub(crate) fn restore_contact(&mut self, id: i64, now: i64) -> bool {
        match self.deleted.remove(&id) {
            Some(mut contact) => {
                contact.updated_at = now;
                self.contacts.insert(id, contact);
                true
            }
            None => false,
        }
    }

    pub(crate) fn add_company(&mut self, name: &str, emails: &[&str], now: i64) -> i64 {
        let id = self.next_id();
        let emails: Vec<(String, String)> = emails.iter().map(|e| ((*e).to_owned(), "WORK".to_owned())).collect();
        self.companies.insert(
            id,
            Company {
                id,
                name: name.to_owned(),
                responsible_user_id: USER_ADMIN,
                created_at: now,
                updated_at: now,
                fields: multitext(FIELD_EMAIL, &emails).into_iter().collect(),
                linked_leads: Vec::new(),
            },
        );
        id
    }

    pub(crate) fn contact(&self, id: i64) -> Option<&Contact> {
        self.contacts.get(&id)
    }

    pub(crate) fn contact_count(&self) -> usize {
        self.contacts.len()
    }

    pub(crate) fn contact_ids(&self) -> Vec<i64> {
        self.contacts.keys().copied().collect()
    }

    pub(crate) fn add_note(&mut self, entity_id: i64, note_type: &str, params: Value, text: String, now: i64) -> i64 {
        let id = self.next_note;
        self.next_note += 1;
        self.notes.push(Note { id, entity_id, note_type: note_type.to_owned(), params, text, created_at: now });
        id
    }

    pub(crate) fn notes_of(&self, contact_id: i64) -> Vec<&Note> {
        self.notes.iter().filter(|n| n.entity_id == contact_id).collect()
    }

    pub(crate) fn note_texts(&self, contact_id: i64) -> Vec<String> {
        self.notes_of(contact_id).into_iter().map(|n| n.text.clone()).collect()
    }

    /// The earliest open task's deadline.
    fn closest_task_at(&self, entity_id: i64) -> Option<i64> {
        self.tasks.iter().filter(|t| t.entity_id == entity_id && !t.is_completed).map(|t| t.complete_till).min()
    }

    pub(crate) fn contact_json(&self, c: &Contact, base: &str, account_id: i64, with: &With) -> Value {
        let tags: Vec<Value> = c.tags.iter().map(|(id, name)| json!({"id": id, "name": name, "color": null})).collect();
        let companies: Vec<Value> = c
            .company_id
            .iter()
            .map(|id| json!({"id": id, "_links": {"self": {"href": format!("{base}/api/v4/companies/{id}")}}}))
            .collect();
        let mut embedded = json!({"tags": tags, "companies": companies});
        for (wanted, key) in
            [(with.leads, "leads"), (with.customers, "customers"), (with.catalog_elements, "catalog_elements")]
        {
            if wanted {
                embedded[key] = json!([]);
            }
        }
        json!({
            "id": c.id, "name": c.name, "first_name": c.first_name, "last_name": c.last_name,
            "responsible_user_id": c.responsible_user_id, "group_id": 0, "created_by": c.created_by,
            "updated_by": c.updated_by, "created_at": c.created_at, "updated_at": c.updated_at,
            "closest_task_at": self.closest_task_at(c.id), "is_deleted": false, "is_unsorted": false,
            "custom_fields_values": fields_json(&c.fields), "account_id": account_id,
            "_links": {"self": {"href": format!("{base}/api/v4/contacts/{}", c.id)}},
            "_embedded": embedded,
        })
    }

    pub(crate) fn company_json(&self, c: &Company, base: &str, account_id: i64) -> Value {
        json!({
            "id": c.id, "name": c.name, "responsible_user_id": c.responsible_user_id, "group_id": 0,
            "created_by": USER_ADMIN, "updated_by": USER_ADMIN, "created_at": c.created_at,
            "updated_at": c.updated_at, "closest_task_at": self.closest_task_at(c.id), "is_deleted": false,
            "custom_fields_values": fields_json(&c.fields), "account_id": account_id,
            "_links": {"self": {"href": format!("{base}/api/v4/companies/{}", c.id)}},
            "_embedded": {"tags": []},
        })
    }

    /// Webhook items for these actions, skipping ids that name nothing (§5). Deletes carry
    /// only `id` and `type`.
    pub(crate) fn items(&self, actions: &[(Action, i64)]) -> Vec<Item> {
        actions
            .iter()
            .filter_map(|&(action, id)| {
                if let Some(contact) = self.contacts.get(&id).or_else(|| self.deleted.get(&id)) {
                    Some(Item::contact(action, contact))
                } else {
                    self.companies.get(&id).map(|company| Item::company(action, company))
                }
            })
            .collect()
    }
}

/// Replaces a field's values where it sits, appends it if new, drops it if now empty.
pub(crate) fn replace_field(fields: &mut Vec<FieldValue>, new: Option<FieldValue>, field_id: i64) {
    match (fields.iter().position(|f| f.field_id == field_id), new) {
        (Some(at), Some(new)) => fields[at] = new,
        (Some(at), None) => {
            fields.remove(at);
        }
        (None, Some(new)) => fields.push(new),
        (None, None) => {}
    }
}

/// `custom_fields_values` in read form (§4), `null` when there are none.
fn fields_json(fields: &[FieldValue]) -> Value {
    if fields.is_empty() {
        return Value::Null;
    }
    fields
        .iter()
        .filter_map(|f| {
            let def = field(f.field_id)?;
            let values: Vec<Value> = f
                .values
                .iter()
                .map(|(value, e)| match e {
                    Some(e) => json!({"value": value, "enum_id": e, "enum_code": def.enum_code(*e)}),
                    None => json!({"value": value}),
                })
                .collect();
            Some(json!({"field_id": def.id, "field_name": def.name, "field_code": def.code,
                        "field_type": def.kind, "values": values}))
        })
        .collect::<Vec<_>>()
        .into()
}

impl Contact {
    /// §4 `query`: a case-insensitive substring of the name, first or last name, or any custom
    /// field value as stored. Phone fields are also matched by their digits: a query that is a
    /// phone number (only digits, spaces, `+-().`, at least five digits) finds a phone whose
    /// digits contain the query's, so `9123456789` finds `+7 912 345-67-89`. That reading is
    /// **[secondary]**: the contract only says "searches filled fields", and Kommo clients
    /// widely search a caller by the last ten digits of the number, which only works if Kommo
    /// matches phones by digits. Nothing else is normalised.
    pub(crate) fn matches(&self, query: &str) -> bool {
        let needle = query.to_lowercase();
        let as_stored = [&self.name, &self.first_name, &self.last_name]
            .into_iter()
            .chain(self.fields.iter().flat_map(|f| f.values.iter().map(|(v, _)| v)))
            .any(|hay| hay.to_lowercase().contains(&needle));
        as_stored || self.phone_digits_match(query)
    }

    fn phone_digits_match(&self, query: &str) -> bool {
        let is_phone_text = query.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c));
        let digits: String = query.chars().filter(char::is_ascii_digit).collect();
        if !is_phone_text || digits.len() < 5 {
            return false;
        }
        self.fields
            .iter()
            .filter(|f| f.field_id == FIELD_PHONE)
            .flat_map(|f| f.values.iter())
            .any(|(stored, _)| stored.chars().filter(char::is_ascii_digit).collect::<String>().contains(&digits))
    }
}
