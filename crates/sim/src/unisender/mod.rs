//! A Unisender (classic API, also sold as Selzy) simulator built from
//! `shared/contracts/unisender.md`: `/{lang}/api/{method}?format=json` (§1), the error envelope
//! with HTTP 200 (§2), the per-key limit of 1200 calls a minute (§3), importContacts (§4) and
//! the other contact and list methods (§5, §6).
//!
//! **It models Unisender, never a connector.** Where the contract is silent the simulator is
//! strict and says so here:
//!
//! - Every answer is HTTP 200 JSON except injected faults and an unknown path or `lang` (404
//!   `text/html`). Errors are `{"error","code"}`; the `unspecified` "not found" errors and
//!   `invalid_api_key` also carry `"result":""` (§2, §5), so a client must look at `error`/`code`.
//! - Arguments are read from the query string and then the form body (the body wins), so GET
//!   works as Unisender's does; every request with `api_key` in the **URL** is counted
//!   ([`UnisenderSim::keys_in_url`]), whatever else happens to it.
//! - Order of checks: injected fault, `format=json`, the key present, the per-key rate limit
//!   (every presented key, known or not, has its own window), the key known, the account state
//!   ([`AccountState`]: every method refused), the method name, the method's arguments.
//! - importContacts `log[].index` is the **0-based** row of `data`, as a **string** (`"3"`);
//!   only problem rows are listed. Row codes (undocumented): `invalid_email`, `role_address`,
//!   `invalid_phone`, `no_contact_key`, `unknown_list`.
//! - importContacts `delete=1` deletes the contact account-wide (the contract leaves the scope
//!   open; account-wide is the stricter reading); deleting an unknown contact is neither
//!   counted nor an error. An empty user-field cell clears the field.
//! - E-mails are compared case-insensitively (stored lower-cased); a "malformed" e-mail is one
//!   without exactly one `@`, an empty local part, a domain without a dot, or with blanks.
//! - exportContacts answers `{"result":{"field_names":[…],"data":[[…]]}}` (the shape real
//!   Unisender uses, not in the contract), contacts in the order they were first imported.
//!
//! # What is refused
//! | request | answer (HTTP 200 unless said) |
//! |---|---|
//! | path not `/{en,ru,ua}/api/{method}` | 404 `text/html` |
//! | no `format=json` | `invalid_arg` |
//! | no `api_key`, or one the account does not have | `invalid_api_key` (+ `"result":""`) |
//! | more than `rate_limit` calls with one key within `rate_window` | `api_call_limit_exceeded_for_api_key` |
//! | the account in [`AccountState::NotEnoughMoney`] / [`AccountState::AccessDenied`] | `not_enough_money` / `access_denied` |
//! | a method not in getLists, createList, getFields, importContacts, exclude, getContact, exportContacts | `unknown_method` |
//! | createList: no `title`, or a title another list has | `invalid_arg` |
//! | importContacts: no `field_names`, gaps in the indexes, neither `email` nor `phone`, a duplicate or unknown column, over 500 rows, a row with more cells than columns, `overwrite_*` not 0/1 | `invalid_arg`, nothing imported |
//! | importContacts rows: malformed or role e-mail (`info@`, `sales@`, `no-reply@`, `all@`), malformed phone, no key, an unknown list id | in `log`, counted `invalid` |
//! | exclude: `contact_type` not email/phone, no `contact`, an unknown list id | `invalid_arg` |
//! | exclude: a contact that is not in any of the lists | `{"error":"Contact \"x\" not found","code":"unspecified","result":""}` |
//! | getContact: no `email` / an unknown e-mail | `invalid_arg` / `unspecified` "Contact … not found" (+ `"result":""`) |
//! | exportContacts: `limit` over 1000 or not a number, bad `offset`, an unknown `list_id` or field name | `invalid_arg` |
//!
//! ```ignore
//! let sim = crmhub_sim::unisender::spawn(UnisenderSimOptions::default()).await;
//! let list = sim.create_list("Customers");
//! // POST {base_url}/en/api/importContacts?format=json, api_key=… in the body
//! assert_eq!(sim.list_members(&list), vec!["ann@example.com"]);
//! assert_eq!(sim.keys_in_url(), 0);
//! ```

mod server;
mod store;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crmhub_core::clock::{Clock, SystemClock};

use crate::support::{FaultSlot, SeededFaults, Served, lock};

/// importContacts takes at most this many rows (§3, §4).
pub const MAX_IMPORT_ROWS: usize = 500;
/// exportContacts returns at most this many rows (§6).
pub const MAX_EXPORT_ROWS: usize = 1000;

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct UnisenderSimOptions {
    /// `added_at` stamps. Default: the system clock.
    pub clock: Arc<dyn Clock>,
    /// The account's API key. Default: 48 random hex digits (real keys are 48 characters).
    pub api_key: String,
    /// Calls per key within `rate_window` (§3: 1200 a minute). `None` turns limiting off.
    pub rate_limit: Option<u32>,
    /// Default 60 s; tests scale it down (60 calls per second, say).
    pub rate_window: Duration,
}

impl Default for UnisenderSimOptions {
    fn default() -> Self {
        UnisenderSimOptions {
            clock: Arc::new(SystemClock),
            api_key: crate::support::random_hex(48),
            rate_limit: Some(1200),
            rate_window: Duration::from_secs(60),
        }
    }
}

/// A misbehaviour of the next requests, applied before anything else is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// `{"error":"Temporary failure, retry later","code":"retry_later"}` with HTTP 200.
    RetryLater,
    /// `{"error":…,"code":"api_call_limit_exceeded_for_ip"}` with HTTP 200.
    IpLimit,
    /// This status with an nginx HTML page.
    Status(u16),
    /// Never answers; nothing is processed.
    Hang,
    /// The request is processed (an import is applied), then never answered: a lost answer.
    LostAnswer,
    /// HTTP 200 with an HTML body.
    NonJson,
}

/// What the account allows (an admin's or the billing's doing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccountState {
    #[default]
    Active,
    /// Every call → `not_enough_money`.
    NotEnoughMoney,
    /// Every call → `access_denied` (API disabled for the account).
    AccessDenied,
}

/// A contact as the handle shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SimContact {
    pub email: Option<String>,
    pub phone: Option<String>,
    /// `new` for an imported address.
    pub status: String,
    /// Ids of the lists the contact is in, ascending.
    pub list_ids: Vec<String>,
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct Counters {
    requests: u64,
    keys_in_url: u64,
    by_method: HashMap<String, u64>,
    /// Accepted calls per presented key, for the rate limit.
    windows: HashMap<String, VecDeque<tokio::time::Instant>>,
    limited: u64,
}

#[derive(Debug)]
struct Inner {
    clock: Arc<dyn Clock>,
    api_key: String,
    rate_limit: Option<u32>,
    rate_window: Duration,
    state: Mutex<store::Store>,
    account: Mutex<AccountState>,
    counters: Mutex<Counters>,
    fault: FaultSlot<Fault>,
    random: Mutex<SeededFaults>,
    base_url: OnceLock<String>,
}

impl Inner {
    fn store(&self) -> MutexGuard<'_, store::Store> {
        lock(&self.state)
    }
}

/// A running Unisender simulator; dropping it stops the server.
#[derive(Debug)]
pub struct UnisenderSim {
    inner: Arc<Inner>,
    served: Served,
}

/// Binds `127.0.0.1:0` and serves a new, empty account (one user field, `Name`).
///
/// # Panics
/// If no loopback port can be bound.
pub async fn spawn(options: UnisenderSimOptions) -> UnisenderSim {
    let inner = Arc::new(Inner {
        clock: options.clock,
        api_key: options.api_key,
        rate_limit: options.rate_limit,
        rate_window: options.rate_window,
        state: Mutex::new(store::Store::new()),
        account: Mutex::new(AccountState::Active),
        counters: Mutex::new(Counters::default()),
        fault: FaultSlot::default(),
        random: Mutex::new(SeededFaults::default()),
        base_url: OnceLock::new(),
    });
    let served = match Served::start(server::router(inner.clone()), "unisender").await {
        Ok(served) => served,
        Err(e) => panic!("unisender simulator: cannot bind 127.0.0.1:0: {e}"),
    };
    let _ = inner.base_url.set(format!("http://{}", served.addr()));
    UnisenderSim { inner, served }
}

impl UnisenderSim {
    /// `http://127.0.0.1:PORT`; the API is under `/{lang}/api/{method}`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.served.addr())
    }

    pub fn api_key(&self) -> String {
        self.inner.api_key.clone()
    }

    /// Requests received, every path and outcome included.
    pub fn requests(&self) -> u64 {
        lock(&self.inner.counters).requests
    }

    /// Requests to `/{lang}/api/{method}` for this method name, every outcome included.
    pub fn calls(&self, method: &str) -> u64 {
        lock(&self.inner.counters).by_method.get(method).copied().unwrap_or(0)
    }

    /// Requests that carried `api_key` in the URL's query string.
    pub fn keys_in_url(&self) -> u64 {
        lock(&self.inner.counters).keys_in_url
    }

    /// Calls refused with `api_call_limit_exceeded_for_api_key`.
    pub fn rate_limited(&self) -> u64 {
        lock(&self.inner.counters).limited
    }

    /// Applies `fault` to the next `requests` requests (0 clears it).
    pub fn set_fault(&self, fault: Fault, requests: u64) {
        self.inner.fault.set_for(requests, fault);
    }

    /// From now on each request (without a counted fault) suffers a random fault with
    /// probability `rate`: `retry_later`, HTTP 503 or a non-JSON body, drawn from `seed`.
    /// A rate of 0 turns it off.
    pub fn set_random_faults(&self, rate: f64, seed: u64) {
        *lock(&self.inner.random) = SeededFaults::new(rate, seed);
    }

    pub fn set_account_state(&self, state: AccountState) {
        *lock(&self.inner.account) = state;
    }

    /// Creates a list as a user would in the UI; returns its id.
    ///
    /// # Panics
    /// If a list has this title already.
    pub fn create_list(&self, title: &str) -> String {
        match self.inner.store().create_list(title) {
            Ok(id) => id.to_string(),
            Err(e) => panic!("unisender simulator: {}", e.message),
        }
    }

    /// Adds a user field (`getFields`), so importContacts accepts it as a column.
    pub fn add_field(&self, name: &str) {
        self.inner.store().add_field(name);
    }

    /// Adds (or updates) an e-mail contact in these lists, as the UI would.
    pub fn add_contact(&self, email: &str, list_ids: &[&str]) {
        let now = self.inner.clock.now_millis().div_euclid(1000);
        let ids: Vec<i64> = list_ids.iter().filter_map(|id| id.parse().ok()).collect();
        self.inner.store().seed_contact(email, &ids, now);
    }

    /// E-mails (or, for phone-only contacts, phones) in a list, in the order they joined.
    pub fn list_members(&self, list_id: &str) -> Vec<String> {
        list_id.parse().map(|id| self.inner.store().members(id)).unwrap_or_default()
    }

    /// The contact with this e-mail (any case).
    pub fn contact(&self, email: &str) -> Option<SimContact> {
        self.inner.store().sim_contact(email)
    }

    /// importContacts rows received carrying this e-mail (any case) in calls that were not
    /// refused as a whole: Unisender upserts, so only this shows a row sent twice.
    pub fn rows_received(&self, email: &str) -> u64 {
        self.inner.store().rows_received(email)
    }

    /// Contacts in the account.
    pub fn contact_count(&self) -> usize {
        self.inner.store().contact_count()
    }

    /// Stops accepting connections and waits (up to 5 s) for open ones to finish.
    pub async fn shutdown(self) {
        self.served.shutdown().await;
    }
}
