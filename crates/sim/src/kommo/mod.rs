//! A Kommo (amoCRM) simulator built from `shared/contracts/kommo.md`: OAuth 2.0 with rotating
//! refresh tokens and the grace rule (§1), long-lived tokens (§2), the API basics (§3: problem
//! JSON, 7 requests per second, IP blocks), contacts v4 (§4) and account webhooks with
//! PHP-bracket form deliveries (§5).
//!
//! **It models Kommo, never a connector.** Where the contract is silent the simulator is strict
//! and says so where the choice is made. The choices a connector meets most:
//!
//! - Errors are `application/problem+json` `{"title","type":"https://httpstatus.es/<status>",
//!   "status","detail"}`; successes `application/hal+json`.
//! - `GET /api/v4/contacts/{id}` and `GET /api/v4/companies/{id}` of a missing entity → **204**
//!   (what Kommo does per community reports); a non-numeric id → 404.
//! - API and token calls whose `Host` starts with `www.` → **404** (§3: "never `www.kommo.com`").
//! - Links (`_links.*.href`) point at this simulator's own `base_url`, so `_links.next` can be
//!   followed as the contract says; real Kommo writes `https://{subdomain}.kommo.com`.
//! - After a refresh the *previous access token* is dead at once (§1 calls the old pair
//!   "obsolete"); only the previous *refresh* token has the grace.
//! - Webhook deliveries go over plain `http://` only (the simulator has no TLS client): an
//!   `https://` destination is accepted on subscribe, but every delivery to it fails (`None`).
//!
//! # What is refused
//! | request | answer |
//! |---|---|
//! | `/oauth` with an unknown `client_id`, or `mode` not `popup`/`post_message` | 400 `text/html` |
//! | token: `grant_type` other than `authorization_code`/`refresh_token`, a missing parameter | 400 problem + `hint` |
//! | token: wrong `client_id`/`client_secret` | 401 problem |
//! | token: `redirect_uri` ≠ the registered one | 400 problem + `hint` |
//! | token: code unknown / used / expired (20 min) | 400 problem, `hint` `Cannot decrypt the authorization code` / `Authorization code has been revoked` / `Authorization code has expired` |
//! | token: refresh token unknown / superseded / revoked / expired (90 days) | 401 problem |
//! | API without a bearer token, or with an expired, superseded or revoked one | 401 problem |
//! | API or token endpoint with `Host: www.…` | 404 problem |
//! | over `rate_limit` per rolling second (API + token) | 429 problem with `retry_after` |
//! | more than `block_after` 429s within 60 s, or [`KommoSim::block_ip`] | 403 problem on everything |
//! | `limit` > 250 | 422 `"detail":"Limit 250 per page"` |
//! | bad `page`/`limit`, `order[…]` other than `updated_at`/`id`/`created_at` or not `asc`/`desc`, unknown `with` | 400 problem |
//! | a write body that is not `application/json` | 415 problem |
//! | POST/PATCH contacts: not an array, empty, over 250 | 400 problem |
//! | contact entity errors (unknown `field_id`/`field_code`/`enum_code`, no name on create, unknown `id`, user or company) | 400 `validation-errors`, nothing written |
//! | notes: unknown contact | 404; bad `note_type` or missing `params.text` → 400 `validation-errors` |
//! | webhooks: destination not absolute http(s), unknown or no `settings`, a 101st destination | 400 problem |
//! | `DELETE /api/v4/webhooks` of an unknown destination | 400 problem |
//! | tasks: unknown `filter[entity_type]`, `filter[entity_id]` without a type | 400 problem |
//!
//! ```ignore
//! let sim = crmhub_sim::kommo::spawn(KommoSimOptions::default()).await;
//! sim.set_redirect_uri("http://127.0.0.1:4000/oauth/kommo/callback");
//! // browser: GET {base_url}/oauth?client_id=…&state=… → 302 to the redirect URI with a code
//! // server:  POST {base_url}/oauth2/access_token {grant_type: authorization_code, …}
//! assert_eq!(sim.token_calls("authorization_code"), 1);
//! ```

mod deliver;
mod oauth;
mod problem;
mod seed;
mod server;
mod store;
mod webhooks;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crmhub_core::clock::{Clock, SystemClock};
use tokio::sync::mpsc;

use crate::support::{FaultSlot, SeededFaults, Served, lock};

/// Kommo's own documented example of an account webhook body (contract §5), field for field:
/// an added contact of the account `test` (32720107). crmhub is checked against it, not against
/// the simulator's own deliveries alone.
pub const DOCUMENTED_WEBHOOK_EXAMPLE: &str = "contacts[add][0][id]=17611273&contacts[add][0][name]=Name&contacts[add][0][responsible_user_id]=11087123\
&contacts[add][0][date_create]=1726573127&contacts[add][0][last_modified]=1726573127\
&contacts[add][0][created_user_id]=11087123&contacts[add][0][modified_user_id]=11087123\
&contacts[add][0][account_id]=32720107&contacts[add][0][created_at]=1726573127&contacts[add][0][updated_at]=1726573127\
&contacts[add][0][custom_fields][0][id]=771906&contacts[add][0][custom_fields][0][name]=Phone\
&contacts[add][0][custom_fields][0][code]=PHONE\
&contacts[add][0][custom_fields][0][values][0][value]=1234567890&contacts[add][0][custom_fields][0][values][0][enum]=552476\
&contacts[add][0][type]=contact\
&account[subdomain]=test&account[id]=32720107&account[_links][self]=https://test.kommo.com";

/// The integration registered in the simulated account (the "Keys and scopes" tab).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integration {
    pub client_id: String,
    pub client_secret: String,
    /// The only redirect URI of the integration: `/oauth` has no `redirect_uri` parameter (§1).
    pub redirect_uri: String,
}

impl Default for Integration {
    fn default() -> Self {
        Integration {
            // Kommo integration ids are UUIDs, secrets 64 alphanumerics.
            client_id: "5b2f6d1e-3c4a-4e8b-9f70-1a2b3c4d5e6f".to_owned(),
            client_secret: "kS9vQ2mX7rT4wZ1yB6nH3jL8pD5fG0cA2eR7uI4oP9sV1xK6qW3zM8tY5bN0hJ2g".to_owned(),
            redirect_uri: "https://crmhub.example/oauth/kommo/callback".to_owned(),
        }
    }
}

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct KommoSimOptions {
    /// Token lifetimes, code expiry and record timestamps. Default: the system clock.
    pub clock: Arc<dyn Clock>,
    /// Default `"demo"` → account domain `demo.kommo.com`.
    pub subdomain: String,
    /// Default 31 000 001.
    pub account_id: i64,
    pub integration: Integration,
    /// Requests per rolling second per account, API and token endpoint together (§3). Default
    /// `Some(7)`; `None` turns limiting off.
    pub rate_limit: Option<u32>,
    /// `retry_after` in the 429 body. Default 1 (the contract's example says 300).
    pub retry_after_secs: u64,
    /// More than this many 429s within 60 s block the IP (403 on everything). Default 20.
    pub block_after: u32,
    /// How long an IP block lasts, in real time. Default 60 s.
    pub block_for: Duration,
    /// Realistic seeded contacts. Default 40.
    pub seed_contacts: usize,
}

impl Default for KommoSimOptions {
    fn default() -> Self {
        KommoSimOptions {
            clock: Arc::new(SystemClock),
            subdomain: "demo".to_owned(),
            account_id: 31_000_001,
            integration: Integration::default(),
            rate_limit: Some(7),
            retry_after_secs: 1,
            block_after: 20,
            block_for: Duration::from_secs(60),
            seed_contacts: 40,
        }
    }
}

/// What the "user" answers on the consent screen of `/oauth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consent {
    #[default]
    Approve,
    Deny,
}

/// A misbehaviour of `POST /oauth2/access_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenFault {
    #[default]
    None,
    /// The request is processed (a refresh rotates the pair), then the connection is dropped
    /// without an answer: the lost response the grace rule exists for (§1).
    DropAfterRotate,
    /// This status with a problem JSON body, before anything is processed.
    Status(u16),
    /// Never answers (nothing is processed).
    Hang,
}

/// A misbehaviour of `/api/v4/…`, applied after the rate limit and before authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiFault {
    #[default]
    None,
    /// This status. 502/503/504 come as nginx's HTML page (what a gateway in front of the API
    /// serves), any other status as problem JSON.
    Status(u16),
    /// Never answers.
    Hang,
    /// A 429 with a `text/html` body (§3: "the 429 body may also be non-JSON"). Not counted in
    /// [`KommoSim::rejected_429`] and not towards an IP block.
    NonJson429,
}

/// A contact as a Kommo user types it in the UI.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SimContact {
    pub first_name: String,
    pub last_name: String,
    /// `(value, enum_code)`, enum codes `WORK`, `PRIV`, `OTHER`.
    pub emails: Vec<(String, String)>,
    /// `(value, enum_code)`, enum codes `WORK`, `WORKDD`, `MOB`, `FAX`, `HOME`, `OTHER`; stored as typed.
    pub phones: Vec<(String, String)>,
    pub company_id: Option<i64>,
}

/// A registered webhook as the handle shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimWebhook {
    pub destination: String,
    pub settings: Vec<String>,
    pub disabled: bool,
}

/// One POST the simulator made (or tried) to a webhook destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub destination: String,
    /// The raw `application/x-www-form-urlencoded` body.
    pub body: String,
    /// The answer's status; `None` on a timeout (2 s) or a connection error.
    pub status: Option<u16>,
}

/// A webhook action, `contacts[add|update|delete|restore]` (§5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Add,
    Update,
    Delete,
    Restore,
}

impl Action {
    pub(crate) fn key(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Restore => "restore",
        }
    }
}

#[derive(Debug)]
struct State {
    integration: Integration,
    consent: Consent,
    oauth: oauth::OAuth,
    store: store::Store,
    hooks: webhooks::Hooks,
    token_calls: HashMap<String, u64>,
    deliveries: Vec<Delivery>,
}

/// The rate limiter and IP block (§3), on real time.
#[derive(Debug, Default)]
struct Gate {
    accepted: VecDeque<tokio::time::Instant>,
    violations: VecDeque<tokio::time::Instant>,
    blocked_until: Option<tokio::time::Instant>,
    api_times: Vec<std::time::Instant>,
    rejected_429: u64,
}

#[derive(Debug)]
struct Inner {
    clock: Arc<dyn Clock>,
    subdomain: String,
    account_id: i64,
    rate_limit: Option<u32>,
    retry_after_secs: u64,
    block_after: u32,
    block_for: Duration,
    base_url: OnceLock<String>,
    state: Mutex<State>,
    gate: Mutex<Gate>,
    token_fault: FaultSlot<TokenFault>,
    api_fault: FaultSlot<ApiFault>,
    random_api_faults: Mutex<SeededFaults>,
    outbox: mpsc::UnboundedSender<deliver::Outgoing>,
    /// Deliveries queued or in flight.
    pending: AtomicUsize,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn now_millis(&self) -> i64 {
        self.clock.now_millis()
    }

    fn base_url(&self) -> &str {
        self.base_url.get().map_or("http://127.0.0.1", String::as_str)
    }

    fn account_domain(&self) -> String {
        format!("{}.kommo.com", self.subdomain)
    }

    fn minter(&self, client_id: &str) -> oauth::Minter {
        oauth::Minter { account_id: self.account_id, client_id: client_id.to_owned(), user_id: store::USER_ADMIN }
    }

    /// Queues one delivery per subscribed, enabled webhook for these changes (one body each,
    /// several actions and indexes in it, as Kommo batches).
    fn fire(&self, state: &mut State, items: &[webhooks::Item]) {
        if items.is_empty() {
            return;
        }
        let account = webhooks::AccountInfo { subdomain: &self.subdomain, account_id: self.account_id };
        for (destination, body) in state.hooks.bodies(items, &account) {
            self.pending.fetch_add(1, Ordering::SeqCst);
            if self.outbox.send(deliver::Outgoing { destination, body }).is_err() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// A running Kommo simulator; dropping it stops the server.
#[derive(Debug)]
pub struct KommoSim {
    inner: Arc<Inner>,
    served: Served,
}

/// Binds `127.0.0.1:0` and serves a new simulator, seeded with `options.seed_contacts` contacts.
///
/// # Panics
/// If no loopback port can be bound.
pub async fn spawn(options: KommoSimOptions) -> KommoSim {
    let now = options.clock.now_millis();
    let mut store = store::Store::default();
    seed::seed(&mut store, options.seed_contacts, now.div_euclid(1000));
    let (outbox, queue) = mpsc::unbounded_channel();
    let inner = Arc::new(Inner {
        clock: options.clock,
        subdomain: options.subdomain,
        account_id: options.account_id,
        rate_limit: options.rate_limit,
        retry_after_secs: options.retry_after_secs,
        block_after: options.block_after,
        block_for: options.block_for,
        base_url: OnceLock::new(),
        state: Mutex::new(State {
            integration: options.integration,
            consent: Consent::default(),
            oauth: oauth::OAuth::default(),
            store,
            hooks: webhooks::Hooks::default(),
            token_calls: HashMap::new(),
            deliveries: Vec::new(),
        }),
        gate: Mutex::new(Gate::default()),
        token_fault: FaultSlot::default(),
        api_fault: FaultSlot::default(),
        random_api_faults: Mutex::new(SeededFaults::default()),
        outbox,
        pending: AtomicUsize::new(0),
    });
    tokio::spawn(deliver::run(Arc::downgrade(&inner), queue));
    let served = match Served::start(server::router(inner.clone()), "kommo").await {
        Ok(served) => served,
        Err(e) => panic!("kommo simulator: cannot bind 127.0.0.1:0: {e}"),
    };
    let _ = inner.base_url.set(format!("http://{}", served.addr()));
    KommoSim { inner, served }
}

impl KommoSim {
    /// `http://127.0.0.1:PORT`: the API, token endpoint and `/oauth` all live here.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.served.addr())
    }

    /// `{subdomain}.kommo.com`, as sent in the callback's `referer`.
    pub fn account_domain(&self) -> String {
        self.inner.account_domain()
    }

    pub fn account_id(&self) -> i64 {
        self.inner.account_id
    }

    /// The integration as currently registered.
    pub fn integration(&self) -> Integration {
        self.inner.lock().integration.clone()
    }

    /// What the user answers on the next `/oauth` consent screens.
    pub fn set_consent(&self, consent: Consent) {
        self.inner.lock().consent = consent;
    }

    /// Re-registers the integration's redirect URI (tests learn crmhub's port late).
    pub fn set_redirect_uri(&self, uri: &str) {
        uri.clone_into(&mut self.inner.lock().integration.redirect_uri);
    }

    /// A fresh authorization code as a widget install produces it (§1: delivered with
    /// `code`, `referer`, `from_widget`, no `state`); valid 20 minutes, single use.
    pub fn widget_install_code(&self) -> String {
        let now = self.inner.now_millis();
        self.inner.lock().oauth.new_code(now)
    }

    /// The callback URL a widget install makes Kommo GET (§1), with a fresh code.
    pub fn widget_install_callback(&self) -> String {
        let code = self.widget_install_code();
        let state = self.inner.lock();
        let mut url = state.integration.redirect_uri.clone();
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("code", &code)
            .append_pair("referer", &self.inner.account_domain())
            .append_pair("from_widget", "1")
            .finish();
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&query);
        url
    }

    /// POSTs to `/oauth2/access_token` with this `grant_type` (faulted ones included; requests
    /// refused by the rate limit or an IP block never reach the endpoint).
    pub fn token_calls(&self, grant_type: &str) -> u64 {
        self.inner.lock().token_calls.get(grant_type).copied().unwrap_or(0)
    }

    /// An admin revoked the integration's access: every access, refresh and long-lived token
    /// issued so far dies (401). Codes not yet exchanged die too.
    pub fn revoke_grant(&self) {
        self.inner.lock().oauth.revoke_all();
    }

    /// A long-lived token (§2) as an admin creates it; the UI allows 1 day – 5 years.
    ///
    /// # Panics
    /// If `valid_for` is outside 1 day – 5 years (the UI would not offer it).
    pub fn issue_long_lived_token(&self, valid_for: Duration) -> String {
        const DAY: u64 = 86_400;
        assert!(
            (DAY..=5 * 366 * DAY).contains(&valid_for.as_secs()),
            "Kommo long-lived tokens live 1 day to 5 years, not {valid_for:?}"
        );
        let now = self.inner.now_millis();
        let client_id = self.inner.lock().integration.client_id.clone();
        let minter = self.inner.minter(&client_id);
        let expires = now.saturating_add(crmhub_core::clock::duration_millis(valid_for));
        self.inner.lock().oauth.issue_long_lived(&minter, now, expires)
    }

    /// Applies `fault` to the next `requests` token requests (0 clears it).
    pub fn set_token_fault(&self, fault: TokenFault, requests: u64) {
        self.inner.token_fault.set_for(requests, fault);
    }

    /// Applies `fault` to the next `requests` API requests (0 clears it).
    pub fn set_api_fault(&self, fault: ApiFault, requests: u64) {
        self.inner.api_fault.set_for(requests, fault);
    }

    /// From now on each API request without a counted fault suffers, with probability `rate`
    /// (0 turns it off), a 500, a 503, a non-JSON 429 or no answer at all (a timeout for the
    /// client), drawn from `seed`. The token endpoint is left alone.
    pub fn set_random_api_faults(&self, rate: f64, seed: u64) {
        *lock(&self.inner.random_api_faults) = SeededFaults::new(rate, seed);
    }

    /// Blocks "the IP" (every client: they all share loopback): 403 on every request.
    pub fn block_ip(&self, for_: Duration) {
        lock(&self.inner.gate).blocked_until = Some(tokio::time::Instant::now() + for_);
    }

    pub fn unblock_ip(&self) {
        let mut gate = lock(&self.inner.gate);
        gate.blocked_until = None;
        gate.violations.clear();
    }

    pub fn is_blocked(&self) -> bool {
        lock(&self.inner.gate).blocked_until.is_some_and(|until| tokio::time::Instant::now() < until)
    }

    /// When each `/api/v4` request arrived, refused ones included.
    pub fn api_request_times(&self) -> Vec<std::time::Instant> {
        lock(&self.inner.gate).api_times.clone()
    }

    /// Requests refused with the rate limit's JSON 429.
    pub fn rejected_429(&self) -> u64 {
        lock(&self.inner.gate).rejected_429
    }

    /// Adds a contact as a Kommo user would in the UI (PHONE before EMAIL in its custom
    /// fields); fires `add_contact`. Returns its id.
    pub fn add_contact(&self, contact: SimContact) -> i64 {
        let now = self.inner.now_millis().div_euclid(1000);
        let mut state = self.inner.lock();
        let id = state.store.add_sim_contact(&contact, now);
        let items = state.store.items(&[(Action::Add, id)]);
        self.inner.fire(&mut state, &items);
        id
    }

    /// Changes a contact as a user would; its PHONE/EMAIL fields keep their places. Fires
    /// `update_contact`. `f` runs under the simulator's lock: it must not call the handle.
    ///
    /// # Panics
    /// If there is no such contact.
    pub fn update_contact(&self, id: i64, f: impl FnOnce(&mut SimContact)) {
        let now = self.inner.now_millis().div_euclid(1000);
        let mut state = self.inner.lock();
        assert!(state.store.update_sim_contact(id, f, now), "kommo simulator: no contact {id}");
        let items = state.store.items(&[(Action::Update, id)]);
        self.inner.fire(&mut state, &items);
    }

    /// Deletes a contact; fires `delete_contact` (only `id` and `type`). Unknown ids are ignored.
    pub fn delete_contact(&self, id: i64) {
        let mut state = self.inner.lock();
        if state.store.delete_contact(id) {
            let items = state.store.items(&[(Action::Delete, id)]);
            self.inner.fire(&mut state, &items);
        }
    }

    /// Restores a deleted contact; fires `restore_contact`. Returns whether it was deleted.
    pub fn restore_contact(&self, id: i64) -> bool {
        let now = self.inner.now_millis().div_euclid(1000);
        let mut state = self.inner.lock();
        let restored = state.store.restore_contact(id, now);
        if restored {
            let items = state.store.items(&[(Action::Restore, id)]);
            self.inner.fire(&mut state, &items);
        }
        restored
    }

    /// Adds a company with these work e-mails; fires `add_company` (delivered under
    /// `contacts[add]` with `type=company`, §5).
    pub fn add_company(&self, name: &str, emails: &[&str]) -> i64 {
        let now = self.inner.now_millis().div_euclid(1000);
        let mut state = self.inner.lock();
        let id = state.store.add_company(name, emails, now);
        let items = state.store.items(&[(Action::Add, id)]);
        self.inner.fire(&mut state, &items);
        id
    }

    /// Fires one webhook body holding all these actions (ids of contacts or companies, in
    /// order, several per action), as real Kommo batches. Nothing is changed; ids that are not
    /// known (or, for `Delete`, never existed) are skipped. Deleting is not done for you: call
    /// [`delete_contact`](Self::delete_contact) first if the state should match.
    pub fn fire_batch(&self, actions: Vec<(Action, i64)>) {
        let mut state = self.inner.lock();
        let items = state.store.items(&actions);
        self.inner.fire(&mut state, &items);
    }

    /// The v4 JSON of one live contact, as `GET /api/v4/contacts/{id}` returns it.
    pub fn contact(&self, id: i64) -> Option<serde_json::Value> {
        let state = self.inner.lock();
        let contact = state.store.contact(id)?;
        Some(state.store.contact_json(contact, self.inner.base_url(), self.inner.account_id, &store::With::default()))
    }

    /// Live contacts.
    pub fn contact_count(&self) -> usize {
        self.inner.lock().store.contact_count()
    }

    /// Ids of live contacts in id order.
    pub fn contact_ids(&self) -> Vec<i64> {
        self.inner.lock().store.contact_ids()
    }

    /// Texts of a contact's notes, oldest first.
    pub fn notes(&self, contact_id: i64) -> Vec<String> {
        self.inner.lock().store.note_texts(contact_id)
    }

    pub fn webhooks(&self) -> Vec<SimWebhook> {
        self.inner.lock().hooks.list()
    }

    /// Deliveries finished so far, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.lock().deliveries.clone()
    }

    /// Waits until no delivery is queued or in flight, at most `within`; returns whether that
    /// happened.
    pub async fn settle_deliveries(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.inner.pending.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops accepting connections and waits (up to 5 s) for open ones to finish.
    pub async fn shutdown(self) {
        self.served.shutdown().await;
    }
}
