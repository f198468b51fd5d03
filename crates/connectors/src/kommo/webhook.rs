//! Kommo's account webhooks as they arrive (contract §5): `application/x-www-form-urlencoded`
//! with PHP bracket keys, several actions and several indexes in one body, companies under
//! `contacts[…]` with `type=company`, deletes with only `id` and `type`.
//!
//! The body comes from the internet before anything about it is trusted beyond the URL's
//! secret, so the parser is bounded: every key is a path into a tree of maps (an index such as
//! `contacts[add][99999999][id]` is one map entry, never an allocation of that size), with
//! caps on the number of fields, the nesting depth and the length of a key. A body beyond a
//! cap is refused as a whole, never cut short: a delivery read in part would lose contacts.

use std::collections::BTreeMap;

use url::form_urlencoded;

/// More fields than this in one delivery are refused. Kommo sends about twenty per contact
/// and batches a few dozen contacts; 10,000 fields is no webhook.
pub const MAX_FIELDS: usize = 5_000;

/// Deeper keys than this are refused (`contacts[add][0][custom_fields][0][values][0][value]`
/// is 7 deep).
pub const MAX_DEPTH: usize = 8;

/// Longer keys than this are refused.
pub const MAX_KEY_BYTES: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Add,
    Update,
    Delete,
    Restore,
}

impl Action {
    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "add" => Some(Self::Add),
            "update" => Some(Self::Update),
            "delete" => Some(Self::Delete),
            "restore" => Some(Self::Restore),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Restore => "restore",
        }
    }
}

/// What an item under `contacts[…]` is: Kommo sends companies there too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    Contact,
    Company,
}

/// One item of a delivery. For deletes only `id` and `entity` are known.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContactEvent {
    pub action: Action,
    pub entity: Entity,
    pub id: i64,
    pub name: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    /// Unix seconds, when Kommo says.
    pub updated_at: Option<i64>,
}

/// A parsed delivery: which account sent it, and every item of every action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub account_id: Option<i64>,
    pub subdomain: Option<String>,
    pub events: Vec<ContactEvent>,
}

impl Delivery {
    /// The contact items only: companies are not contacts to mirror.
    pub fn contacts(&self) -> impl Iterator<Item = &ContactEvent> {
        self.events.iter().filter(|e| e.entity == Entity::Contact)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("more than {MAX_FIELDS} fields")]
    TooManyFields,
    #[error("a key nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("a key is longer than {MAX_KEY_BYTES} bytes")]
    KeyTooLong,
    #[error("the body is not a Kommo webhook: {0}")]
    Malformed(String),
}

/// A value or a map of values, as PHP would nest the bracket keys.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Value(String),
    Map(BTreeMap<String, Node>),
}

impl Node {
    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(map) => map.get(key),
            Node::Value(_) => None,
        }
    }

    fn text(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Node::Value(v) => Some(v.trim()).filter(|v| !v.is_empty()),
            Node::Map(_) => None,
        }
    }

    fn entries(&self) -> impl Iterator<Item = (&String, &Node)> {
        let map = match self {
            Node::Map(map) => Some(map),
            Node::Value(_) => None,
        };
        map.into_iter().flatten()
    }
}

/// `a[b][c]` → `["a", "b", "c"]`. `a[]` appends are not part of Kommo's format and are refused.
fn segments(key: &str) -> Result<Vec<&str>, ParseError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(ParseError::KeyTooLong);
    }
    let (head, mut rest) = match key.find('[') {
        Some(at) => (&key[..at], &key[at..]),
        None => (key, ""),
    };
    if head.is_empty() {
        return Err(ParseError::Malformed(format!("a key without a name: {key:?}")));
    }
    let mut out = vec![head];
    while !rest.is_empty() {
        let inner = rest
            .strip_prefix('[')
            .and_then(|r| r.find(']').map(|end| (&r[..end], &r[end + 1..])))
            .ok_or_else(|| ParseError::Malformed(format!("unbalanced brackets in {key:?}")))?;
        if inner.0.is_empty() {
            return Err(ParseError::Malformed(format!("an append key (`[]`) in {key:?}")));
        }
        out.push(inner.0);
        if out.len() > MAX_DEPTH {
            return Err(ParseError::TooDeep);
        }
        rest = inner.1;
    }
    Ok(out)
}

fn insert(root: &mut BTreeMap<String, Node>, path: &[&str], value: String) -> Result<(), ParseError> {
    let (last, parents) = path.split_last().expect("a key has at least its name");
    let mut map = root;
    for segment in parents {
        let node = map.entry((*segment).to_owned()).or_insert_with(|| Node::Map(BTreeMap::new()));
        map = match node {
            Node::Map(inner) => inner,
            Node::Value(_) => {
                return Err(ParseError::Malformed(format!("{segment:?} is both a value and a list")));
            }
        };
    }
    if matches!(map.get(*last), Some(Node::Map(_))) {
        return Err(ParseError::Malformed(format!("{last:?} is both a list and a value")));
    }
    map.insert((*last).to_owned(), Node::Value(value));
    Ok(())
}

fn tree(body: &[u8]) -> Result<Node, ParseError> {
    let mut root = BTreeMap::new();
    for (count, (key, value)) in form_urlencoded::parse(body).enumerate() {
        if count == MAX_FIELDS {
            return Err(ParseError::TooManyFields);
        }
        insert(&mut root, &segments(&key)?, value.into_owned())?;
    }
    Ok(Node::Map(root))
}

/// Values of custom fields with this code (at whatever index the field sits).
fn coded_values(item: &Node, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(fields) = item.get("custom_fields") else { return out };
    for (_, field) in fields.entries() {
        if field.text("code") != Some(code) {
            continue;
        }
        let Some(values) = field.get("values") else { continue };
        for (_, value) in values.entries() {
            if let Some(v) = value.text("value") {
                if !out.iter().any(|seen| seen == v) {
                    out.push(v.to_owned());
                }
            }
        }
    }
    out
}

/// Reads a delivery: every action under `contacts`, every index of each, and the account.
pub fn parse(body: &[u8]) -> Result<Delivery, ParseError> {
    let root = tree(body)?;
    let account = root.get("account");
    let account_id = match account.and_then(|a| a.text("id")) {
        Some(raw) => {
            Some(raw.parse().map_err(|_| ParseError::Malformed(format!("account[id] {raw:?} is not a number")))?)
        }
        None => None,
    };
    let subdomain = account.and_then(|a| a.text("subdomain")).map(str::to_owned);
    let contacts = root.get("contacts").ok_or_else(|| ParseError::Malformed("no contacts[…] in the body".into()))?;
    let mut events = Vec::new();
    for (action, items) in contacts.entries() {
        let action =
            Action::parse(action).ok_or_else(|| ParseError::Malformed(format!("unknown action contacts[{action}]")))?;
        for (index, item) in items.entries() {
            let id = item.text("id").and_then(|id| id.parse::<i64>().ok()).filter(|id| *id > 0).ok_or_else(|| {
                ParseError::Malformed(format!("contacts[{}][{index}] has no usable id", action.as_str()))
            })?;
            let entity = match item.text("type") {
                Some("company") => Entity::Company,
                Some("contact") | None => Entity::Contact,
                Some(other) => {
                    return Err(ParseError::Malformed(format!(
                        "contacts[{}][{index}] has type {other:?}",
                        action.as_str()
                    )));
                }
            };
            events.push(ContactEvent {
                action,
                entity,
                id,
                name: item.text("name").map(str::to_owned),
                emails: coded_values(item, "EMAIL"),
                phones: coded_values(item, "PHONE"),
                updated_at: item.text("updated_at").or_else(|| item.text("last_modified")).and_then(|t| t.parse().ok()),
            });
        }
    }
    if events.is_empty() {
        return Err(ParseError::Malformed("no items under contacts[…]".into()));
    }
    Ok(Delivery { account_id, subdomain, events })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crmhub_sim::kommo::DOCUMENTED_WEBHOOK_EXAMPLE as EXAMPLE;

    #[test]
    fn the_documented_example_reads_as_one_added_contact() {
        let delivery = parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(delivery.account_id, Some(32_720_107));
        assert_eq!(delivery.subdomain.as_deref(), Some("test"));
        assert_eq!(
            delivery.events,
            [ContactEvent {
                action: Action::Add,
                entity: Entity::Contact,
                id: 17_611_273,
                name: Some("Name".into()),
                emails: vec![],
                phones: vec!["1234567890".into()],
                updated_at: Some(1_726_573_127),
            }]
        );
    }

    #[test]
    fn every_action_and_index_is_read_emails_at_any_index_and_companies_told_apart() {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("contacts[update][0][id]", "1"),
                ("contacts[update][0][custom_fields][0][code]", "PHONE"),
                ("contacts[update][0][custom_fields][0][values][0][value]", "+7 912 345-67-89"),
                ("contacts[update][0][custom_fields][1][code]", "EMAIL"),
                ("contacts[update][0][custom_fields][1][values][0][value]", "a@example.com"),
                ("contacts[update][0][custom_fields][1][values][1][value]", "b@example.com"),
                ("contacts[update][7][id]", "2"),
                ("contacts[update][7][type]", "contact"),
                ("contacts[delete][0][id]", "3"),
                ("contacts[delete][0][type]", "contact"),
                ("contacts[add][0][id]", "4"),
                ("contacts[add][0][type]", "company"),
                ("contacts[add][0][linked_leads_id]", ""),
                ("account[id]", "32720107"),
                ("account[subdomain]", "test"),
            ])
            .finish();
        let delivery = parse(body.as_bytes()).unwrap();
        let summary: Vec<(Action, i64, Entity)> = delivery.events.iter().map(|e| (e.action, e.id, e.entity)).collect();
        assert_eq!(
            summary,
            [
                (Action::Add, 4, Entity::Company),
                (Action::Delete, 3, Entity::Contact),
                (Action::Update, 1, Entity::Contact),
                (Action::Update, 2, Entity::Contact),
            ]
        );
        let first = delivery.events.iter().find(|e| e.id == 1).unwrap();
        assert_eq!(first.emails, ["a@example.com", "b@example.com"]);
        assert_eq!(first.phones, ["+7 912 345-67-89"]);
        assert_eq!(delivery.contacts().count(), 3);
    }

    #[test]
    fn a_huge_index_is_one_entry() {
        let delivery = parse(b"contacts[add][99999999][id]=5&account[id]=1").unwrap();
        assert_eq!(delivery.events.len(), 1);
        assert_eq!(delivery.events[0].id, 5);
    }

    #[test]
    fn bodies_beyond_the_caps_are_refused_whole() {
        let many: String = (0..10_000).map(|i| format!("contacts[add][{i}][id]={}&", i + 1)).collect();
        assert_eq!(parse(many.as_bytes()), Err(ParseError::TooManyFields));
        let deep = format!("contacts{}=1", "[a]".repeat(50));
        assert_eq!(parse(deep.as_bytes()), Err(ParseError::TooDeep));
        let long = format!("contacts[add][0][{}]=1", "x".repeat(600));
        assert_eq!(parse(long.as_bytes()), Err(ParseError::KeyTooLong));
    }

    #[test]
    fn malformed_bodies_say_why() {
        for body in [
            "",
            "hello",
            "account[id]=1",
            "contacts[add][0][name]=no id",
            "contacts[add][0][id]=x",
            "contacts[move][0][id]=1",
            "contacts[add][0][id]=1&contacts[add][0][id][x]=2",
            "contacts[add][0]=1&contacts[add][0][id]=2",
            "contacts[add][]=1",
            "contacts[add=1",
            "[x]=1",
            "contacts[add][0][id]=1&account[id]=abc",
            "contacts[add][0][id]=1&contacts[add][0][type]=lead",
        ] {
            assert!(
                matches!(parse(body.as_bytes()), Err(ParseError::Malformed(_))),
                "{body:?}: {:?}",
                parse(body.as_bytes())
            );
        }
    }
}
