//! Account webhooks (§5): the subscriptions of `/api/v4/webhooks`, the PHP-bracket form bodies
//! Kommo posts, and the rule that disables a failing destination.

use std::collections::VecDeque;

use url::form_urlencoded::Serializer;

use super::store::{Company, Contact, FieldValue, field};
use super::{Action, SimWebhook};

/// §5: "use analogous names; take them from `reference/webhook-events`". Anything else is
/// refused on subscribe.
pub(crate) const EVENTS: &[&str] = &[
    "add_lead",
    "update_lead",
    "delete_lead",
    "restore_lead",
    "status_lead",
    "responsible_lead",
    "note_lead",
    "add_contact",
    "update_contact",
    "delete_contact",
    "restore_contact",
    "responsible_contact",
    "note_contact",
    "add_company",
    "update_company",
    "delete_company",
    "restore_company",
    "responsible_company",
    "note_company",
    "add_customer",
    "update_customer",
    "delete_customer",
    "responsible_customer",
    "note_customer",
    "add_task",
    "update_task",
    "delete_task",
    "responsible_task",
    "add_talk",
    "update_talk",
    "add_message",
];

/// §3: "100 webhooks per account".
pub(crate) const MAX_WEBHOOKS: usize = 100;
/// §5: disabled after more than 100 failures in 2 h, when the latest failed too.
const FAILURE_LIMIT: usize = 100;
const FAILURE_WINDOW_MS: i64 = 2 * 3600 * 1000;

#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    pub(crate) id: i64,
    pub(crate) destination: String,
    pub(crate) settings: Vec<String>,
    pub(crate) sort: i64,
    pub(crate) disabled: bool,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    failures: VecDeque<i64>,
}

#[derive(Debug)]
pub(crate) struct Hooks {
    next_id: i64,
    pub(crate) hooks: Vec<Webhook>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks { next_id: 4_100_001, hooks: Vec::new() }
    }
}

pub(crate) struct AccountInfo<'a> {
    pub(crate) subdomain: &'a str,
    pub(crate) account_id: i64,
}

/// One entity in a delivery: its action, the event it belongs to, and its `[…]` sub-keys
/// (everything after `contacts[action][i]`).
#[derive(Debug, Clone)]
pub(crate) struct Item {
    action: Action,
    event: String,
    pairs: Vec<(String, String)>,
}

fn custom_field_pairs(pairs: &mut Vec<(String, String)>, fields: &[FieldValue]) {
    for (j, f) in fields.iter().enumerate() {
        let Some(def) = field(f.field_id) else { continue };
        pairs.push((format!("[custom_fields][{j}][id]"), def.id.to_string()));
        pairs.push((format!("[custom_fields][{j}][name]"), def.name.to_owned()));
        if let Some(code) = def.code {
            pairs.push((format!("[custom_fields][{j}][code]"), code.to_owned()));
        }
        for (k, (value, enum_id)) in f.values.iter().enumerate() {
            pairs.push((format!("[custom_fields][{j}][values][{k}][value]"), value.clone()));
            if let Some(e) = enum_id {
                pairs.push((format!("[custom_fields][{j}][values][{k}][enum]"), e.to_string()));
            }
        }
    }
}

fn common_pairs(
    id: i64,
    name: &str,
    responsible: i64,
    created: i64,
    updated: i64,
    by: (i64, i64),
) -> Vec<(String, String)> {
    vec![
        ("[id]".to_owned(), id.to_string()),
        ("[name]".to_owned(), name.to_owned()),
        ("[responsible_user_id]".to_owned(), responsible.to_string()),
        ("[date_create]".to_owned(), created.to_string()),
        ("[last_modified]".to_owned(), updated.to_string()),
        ("[created_user_id]".to_owned(), by.0.to_string()),
        ("[modified_user_id]".to_owned(), by.1.to_string()),
    ]
}

impl Item {
    pub(crate) fn contact(action: Action, c: &Contact) -> Item {
        let event = format!("{}_contact", action.key());
        if action == Action::Delete {
            let pairs = vec![("[id]".to_owned(), c.id.to_string()), ("[type]".to_owned(), "contact".to_owned())];
            return Item { action, event, pairs };
        }
        let mut pairs = common_pairs(
            c.id,
            &c.name,
            c.responsible_user_id,
            c.created_at,
            c.updated_at,
            (c.created_by, c.updated_by),
        );
        pairs.push(("[account_id]".to_owned(), String::new())); // filled per account in `body`
        pairs.push(("[created_at]".to_owned(), c.created_at.to_string()));
        pairs.push(("[updated_at]".to_owned(), c.updated_at.to_string()));
        if let Some(company) = c.company_id {
            pairs.push(("[linked_company_id]".to_owned(), company.to_string()));
        }
        custom_field_pairs(&mut pairs, &c.fields);
        pairs.push(("[type]".to_owned(), "contact".to_owned()));
        Item { action, event, pairs }
    }

    /// Companies arrive under `contacts[…]` with `type=company` and `linked_leads_id` (§5).
    /// Our reading of `linked_leads_id`: indexed ids, or one empty value when there are none.
    pub(crate) fn company(action: Action, c: &Company) -> Item {
        let event = format!("{}_company", action.key());
        if action == Action::Delete {
            let pairs = vec![("[id]".to_owned(), c.id.to_string()), ("[type]".to_owned(), "company".to_owned())];
            return Item { action, event, pairs };
        }
        let by = (super::store::USER_ADMIN, super::store::USER_ADMIN);
        let mut pairs = common_pairs(c.id, &c.name, c.responsible_user_id, c.created_at, c.updated_at, by);
        pairs.push(("[account_id]".to_owned(), String::new()));
        pairs.push(("[created_at]".to_owned(), c.created_at.to_string()));
        pairs.push(("[updated_at]".to_owned(), c.updated_at.to_string()));
        custom_field_pairs(&mut pairs, &c.fields);
        if c.linked_leads.is_empty() {
            pairs.push(("[linked_leads_id]".to_owned(), String::new()));
        }
        for (i, lead) in c.linked_leads.iter().enumerate() {
            pairs.push((format!("[linked_leads_id][{i}]"), lead.to_string()));
        }
        pairs.push(("[type]".to_owned(), "company".to_owned()));
        Item { action, event, pairs }
    }
}

/// The form body for these items: `contacts[<action>][<i>]…` with `i` counted per action,
/// then `account[…]`. Brackets are percent-encoded as PHP's `http_build_query` does.
pub(crate) fn body(items: &[&Item], account: &AccountInfo<'_>) -> String {
    let mut form = Serializer::new(String::new());
    let mut index: Vec<(Action, usize)> = Vec::new();
    for item in items {
        let i = match index.iter_mut().find(|(a, _)| *a == item.action) {
            Some((_, n)) => {
                *n += 1;
                *n - 1
            }
            None => {
                index.push((item.action, 1));
                0
            }
        };
        for (key, value) in &item.pairs {
            let value = if key == "[account_id]" { account.account_id.to_string() } else { value.clone() };
            form.append_pair(&format!("contacts[{}][{i}]{key}", item.action.key()), &value);
        }
    }
    form.append_pair("account[subdomain]", account.subdomain);
    form.append_pair("account[id]", &account.account_id.to_string());
    form.append_pair("account[_links][self]", &format!("https://{}.kommo.com", account.subdomain));
    form.finish()
}

impl Hooks {
    /// Subscribes, or (same destination) saves new settings, which also re-enables it (§5).
    /// `Err` when the account already has [`MAX_WEBHOOKS`].
    pub(crate) fn upsert(
        &mut self,
        destination: &str,
        settings: Vec<String>,
        sort: i64,
        now: i64,
    ) -> Result<&Webhook, ()> {
        if let Some(at) = self.hooks.iter().position(|h| h.destination == destination) {
            let hook = &mut self.hooks[at];
            hook.settings = settings;
            hook.sort = sort;
            hook.disabled = false;
            hook.failures.clear();
            hook.updated_at = now;
            return Ok(&self.hooks[at]);
        }
        if self.hooks.len() >= MAX_WEBHOOKS {
            return Err(());
        }
        let id = self.next_id;
        self.next_id += 1;
        self.hooks.push(Webhook {
            id,
            destination: destination.to_owned(),
            settings,
            sort,
            disabled: false,
            created_at: now,
            updated_at: now,
            failures: VecDeque::new(),
        });
        Ok(&self.hooks[self.hooks.len() - 1])
    }

    pub(crate) fn remove(&mut self, destination: &str) -> bool {
        let before = self.hooks.len();
        self.hooks.retain(|h| h.destination != destination);
        self.hooks.len() != before
    }

    pub(crate) fn list(&self) -> Vec<SimWebhook> {
        self.hooks
            .iter()
            .map(|h| SimWebhook {
                destination: h.destination.clone(),
                settings: h.settings.clone(),
                disabled: h.disabled,
            })
            .collect()
    }

    /// One body per enabled webhook subscribed to at least one item's event, holding only the
    /// items it subscribed to; hooks in `sort` order.
    pub(crate) fn bodies(&self, items: &[Item], account: &AccountInfo<'_>) -> Vec<(String, String)> {
        let mut hooks: Vec<&Webhook> = self.hooks.iter().filter(|h| !h.disabled).collect();
        hooks.sort_by_key(|h| h.sort);
        hooks
            .into_iter()
            .filter_map(|hook| {
                let wanted: Vec<&Item> = items.iter().filter(|i| hook.settings.contains(&i.event)).collect();
                (!wanted.is_empty()).then(|| (hook.destination.clone(), body(&wanted, account)))
            })
            .collect()
    }

    /// Records a delivery's outcome (§5: 100–299 succeeds).
    pub(crate) fn record(&mut self, destination: &str, status: Option<u16>, now: i64) {
        let Some(hook) = self.hooks.iter_mut().find(|h| h.destination == destination) else { return };
        let ok = status.is_some_and(|s| (100..300).contains(&s));
        while hook.failures.front().is_some_and(|t| *t <= now - FAILURE_WINDOW_MS) {
            hook.failures.pop_front();
        }
        if ok {
            return;
        }
        hook.failures.push_back(now);
        if hook.failures.len() > FAILURE_LIMIT {
            hook.disabled = true;
        }
    }
}
