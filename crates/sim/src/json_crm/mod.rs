//! "ContactBook": a JSON REST CRM with password login, bearer tokens and page-numbered lists.
//!
//! ContactBook is crmhub's own reference for the generic template connector: it has no external
//! contract, so **this comment is its API reference**, the one integration templates are written
//! against. It deliberately has the traits template authors meet in real REST CRMs (tokens that
//! expire, string ids, nested objects, 422s naming a field, offset pagination, faults).
//!
//! # Conventions
//! - Endpoints live under `{base_url}/api/v1`. Bodies are JSON both ways.
//! - A POST or PUT must send `Content-Type: application/json` (parameters such as `charset` and
//!   `application/…+json` types are fine); anything else → **415** `unsupported_media_type`. A
//!   JSON body that does not parse, or is not an object → **400** `invalid_json`. Over 2 MiB →
//!   **413** `payload_too_large`. Unknown body fields are ignored.
//! - Errors are always `{"error":{"code":"…","message":"…"}}`; a **422** `validation_failed` adds
//!   `"field":"<name>"`. Match on `code` and `field`; `message` is for humans.
//! - Optional string fields: absent, `null` and blank (`""`, `"  "`) all mean "not given".
//!   Required ones that are blank count as missing.
//! - Times are integer Unix seconds, except activities' `occurred_at` (RFC 3339 UTC,
//!   `YYYY-MM-DDTHH:MM:SSZ`).
//! - Unknown path → **404** `not_found`; known path with another method → **405**
//!   `method_not_allowed`.
//!
//! # Authentication
//! `POST /api/v1/auth/login` `{"username":"…","password":"…"}` → **200**
//! `{"access_token":"<48 hex digits>","token_type":"Bearer","expires_in":3600}`
//! (`expires_in` = the configured TTL in seconds). Wrong user name or password → **401**
//! `invalid_credentials` (user names are case-sensitive); missing/blank `username` or `password`
//! → **422** with that `field`. Every login issues a new token; earlier tokens stay valid until
//! their own expiry.
//!
//! Every other endpoint needs `Authorization: Bearer <token>` (scheme case-insensitive), checked
//! before the body:
//!
//! | situation | status | `code` |
//! |---|---|---|
//! | no `Authorization`, another scheme, or an empty token | 401 | `missing_token` |
//! | a token this server never issued | 401 | `invalid_token` |
//! | a token past its expiry (TTL after login, or [`JsonCrmSim::expire_tokens`]) | 401 | `token_expired` |
//!
//! 401s carry `WWW-Authenticate: Bearer realm="contactbook"` (plus `error="invalid_token"` for
//! the last two). Re-login on `token_expired`; `invalid_token` will not get better by retrying.
//!
//! # Lists and pagination
//! List endpoints answer `{"data":[…],"meta":{"page":n,"per_page":m,"total":t,"has_more":bool}}`.
//! `page` ≥ 1 (default 1), `per_page` 1–100 (default 25). Anything else, including
//! `per_page=101` or a non-number → **422** `validation_failed` with `field` `page` or
//! `per_page`. A page past the end is empty with `has_more:false`. Pages are offsets, so rows
//! shift if contacts are created or changed between page requests, as on most REST CRMs.
//!
//! # Contacts
//! ```json
//! {"id":"c_12","first_name":"Ada","last_name":"Lovelace","email":"ada@acme.example",
//!  "phone":"+84 912 345 678","company":{"name":"Acme Corporation"},"owner":"api",
//!  "updated_at":1700000000}
//! ```
//! `id` is a string `c_<n>`; `first_name`, `email`, `phone` may be `null`; `company` is
//! `{"name"}` or `null`; `owner` is the user name that created it.
//!
//! - `GET /api/v1/contacts?search=<term>&phone=<digits>&page=&per_page=` — contacts in id
//!   order (`c_2` before `c_10`).
//!   - `search`: case-insensitive (Unicode) substring of `"<first_name> <last_name>"`,
//!     `email` or the company name. Blank or absent: no filter.
//!   - `phone`: non-digits are dropped from the parameter and from each contact's `phone`; a
//!     contact matches when its digits **end with the last 9 digits given** (all of them if
//!     fewer than 9), so `+84 912 345 678`, `0912345678` and `84912345678` find each other.
//!     A parameter without digits → 422 `field:"phone"`.
//!   - Both given: a contact must match both.
//! - `GET /api/v1/contacts/{id}` → `{"data":contact}`; unknown → **404** `not_found`.
//! - `POST /api/v1/contacts` `{"first_name"?,"last_name","email"?,"phone"?,"company"?:"<name>"}`
//!   → **201** `{"data":contact}`. Missing `last_name` → 422 `field:"last_name"`; an e-mail
//!   without exactly one `@`, a non-empty local part and a domain of two or more dot-separated
//!   labels (letters, digits, hyphens), or with whitespace → 422 `field:"email"`; a non-string
//!   where a string belongs → 422 naming that field. `phone` is stored as given.
//! - `GET /api/v1/contacts/{id}/activities` → `{"data":[{"type","subject","body","occurred_at"}]}`,
//!   the contact's notes, calls and tickets, newest first (ties: most recently recorded first),
//!   not paginated; unknown contact → 404.
//!   - note: `subject` = first line of the body (≤ 80 characters), `body` = the note.
//!   - call: `subject` = `Inbound call from <from>` / `Outbound call to <to>` (just
//!     `Inbound call` / `Outbound call` without a number), `body` = `<status>[, <duration> s]`
//!     then the notes on a new line; `occurred_at` = `started_at`.
//!   - ticket: `subject` = title, `body` = description (or `""`).
//! - `GET /api/v1/contacts/changes?since=<unix>&page=&per_page=` — contacts with
//!   `updated_at > since` (default `since=0`), ordered by (`updated_at`, id), in the list
//!   envelope plus `meta.next_since`: the greatest `updated_at` among **all** matching contacts
//!   (not just this page), or `since` itself when none match. Read pages until `has_more` is
//!   false, then poll with `since=next_since`. `updated_at` has one-second resolution, so a
//!   contact changed later within that same second is not reported by that next poll; a careful
//!   client overlaps by a second and de-duplicates. Deletions are not reported.
//!   Non-integer `since` → 422 `field:"since"`.
//!
//! # Calls
//! - `POST /api/v1/calls` `{"external_id","contact_id"?,"direction","from"?,"to"?,
//!   "started_at","duration"?,"status","notes"?}` → **201** `{"data":call}` where call is
//!   `{"id":"call_<n>","external_id","contact_id","direction","from","to","started_at",
//!   "duration","status","notes","created_at","updated_at"}` (absent optionals are `null`).
//!   `direction`: `inbound` | `outbound`. `status`: `ringing` | `in_progress` | `answered` |
//!   `completed` | `missed` | `busy` | `failed` | `voicemail`. `started_at` and `duration`
//!   (seconds) are non-negative integers. Each rule broken → 422 naming the field; a
//!   `contact_id` that is not a live contact → 422 `field:"contact_id"`. `external_id` is **not
//!   unique**: posting it twice makes two calls (look it up first to stay idempotent).
//! - `PUT /api/v1/calls/{id}` — partial update: only the fields present change, with the same
//!   rules; `null`/`""` clears an optional field and is a 422 for a required one. → **200**
//!   `{"data":call}`; unknown call → **404** `not_found`.
//! - `GET /api/v1/calls?external_id=<x>&page=&per_page=` → calls with that `external_id` (all
//!   calls without it), id order, list envelope. This lookup is strict, because a filter
//!   quietly ignored would answer with every call: any other query parameter → 422 naming it
//!   (`field` = the parameter), and a blank `external_id` → 422 `field:"external_id"`.
//!
//! # Notes and tickets
//! - `POST /api/v1/notes` `{"contact_id","body"}` → **201**
//!   `{"data":{"id":"n_<n>","contact_id","body","author","created_at"}}`; a missing or unknown
//!   `contact_id` → 422 `field:"contact_id"`; missing `body` → 422 `field:"body"`.
//! - `POST /api/v1/tickets` `{"contact_id"?,"title","description"?,"priority"}` → **201**
//!   `{"data":{"id":"t_<n>","contact_id","title","description","priority","status":"open",
//!   "created_at"}}`; `priority` (required): `low` | `normal` | `high` | `urgent`; each rule
//!   broken → 422 naming the field.
//!
//! # Faults
//! [`JsonCrmSim::set_fault`] / [`set_fault_for`](JsonCrmSim::set_fault_for) replace or delay the
//! answer to any request (login included) before authentication; see [`JsonCrmFault`].
//!
//! ```ignore
//! let sim = crmhub_sim::json_crm::spawn(JsonCrmSimOptions::default()).await;
//! sim.seed_demo_contacts(60);
//! let token = /* POST {sim.api_url()}/auth/login {"username":"api","password":"api-password"} */;
//! sim.set_fault_for(1, JsonCrmFault::RateLimited { retry_after_secs: 2 });
//! assert_eq!(sim.login_count(), 1);
//! ```

mod auth;
mod error;
mod faults;
mod input;
mod records;
mod seed;
mod server;
mod store;
mod wire;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crmhub_core::clock::{Clock, SystemClock};

use crate::support::{FaultSlot, Served, lock};

pub use faults::JsonCrmFault;
pub use records::{Call, CallDirection, CallStatus, Contact, NewContact, Note, Ticket, TicketPriority};

use error::ApiError;
use input::Credentials;
use store::Store;
use wire::LoginOut;

/// The user that exists from the start.
pub const DEFAULT_USERNAME: &str = "api";
/// [`DEFAULT_USERNAME`]'s password.
pub const DEFAULT_PASSWORD: &str = "api-password";
/// How long an access token lives unless [`JsonCrmSimOptions::token_ttl`] says otherwise.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct JsonCrmSimOptions {
    /// Time source for token expiry and record timestamps. Default: the system clock.
    pub clock: Arc<dyn Clock>,
    /// Lifetime of an access token (millisecond precision; `expires_in` reports whole
    /// seconds). Default [`DEFAULT_TOKEN_TTL`].
    pub token_ttl: Duration,
}

impl Default for JsonCrmSimOptions {
    fn default() -> Self {
        JsonCrmSimOptions { clock: Arc::new(SystemClock), token_ttl: DEFAULT_TOKEN_TTL }
    }
}

#[derive(Debug, Default)]
struct Counters {
    requests: u64,
    logins: u64,
}

#[derive(Debug)]
struct State {
    auth: auth::Auth,
    store: Store,
    counters: Counters,
}

#[derive(Debug)]
struct Inner {
    clock: Arc<dyn Clock>,
    token_ttl: Duration,
    state: Mutex<State>,
    faults: FaultSlot<JsonCrmFault>,
}

/// The simulator's shared state: cheap to clone, all clones see the same CRM.
#[derive(Debug, Clone)]
pub struct JsonCrmSim {
    inner: Arc<Inner>,
}

impl Default for JsonCrmSim {
    fn default() -> Self {
        Self::new(JsonCrmSimOptions::default())
    }
}

impl JsonCrmSim {
    pub fn new(options: JsonCrmSimOptions) -> Self {
        let mut auth = auth::Auth::default();
        auth.add_user(DEFAULT_USERNAME, DEFAULT_PASSWORD);
        JsonCrmSim {
            inner: Arc::new(Inner {
                clock: options.clock,
                token_ttl: options.token_ttl,
                state: Mutex::new(State { auth, store: Store::default(), counters: Counters::default() }),
                faults: FaultSlot::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    fn now_secs(&self) -> i64 {
        self.inner.clock.now_secs()
    }

    /// Runs `f` on the store under the lock, with the clock's current Unix seconds.
    fn with_store<R>(&self, f: impl FnOnce(&mut Store, i64) -> R) -> R {
        let now = self.now_secs();
        f(&mut self.lock().store, now)
    }

    fn count_request(&self) {
        self.lock().counters.requests += 1;
    }

    fn count_login(&self) {
        self.lock().counters.logins += 1;
    }

    fn login(&self, credentials: &Credentials) -> Result<LoginOut, ApiError> {
        let ttl_millis = crmhub_core::clock::duration_millis(self.inner.token_ttl);
        let expires_at = self.inner.clock.now_millis().saturating_add(ttl_millis);
        let token = self.lock().auth.login(&credentials.username, &credentials.password, expires_at);
        let access_token = token.ok_or_else(error::invalid_credentials)?;
        Ok(LoginOut { access_token, token_type: "Bearer", expires_in: self.inner.token_ttl.as_secs() })
    }

    /// The user name a bearer token belongs to.
    fn authenticate(&self, token: &str) -> Result<String, ApiError> {
        let now = self.inner.clock.now_millis();
        match self.lock().auth.user_for(token, now) {
            Ok(user) => Ok(user.to_owned()),
            Err(auth::TokenError::Unknown) => Err(error::invalid_token()),
            Err(auth::TokenError::Expired) => Err(error::token_expired()),
        }
    }

    pub fn clock(&self) -> &dyn Clock {
        self.inner.clock.as_ref()
    }

    // --- users and tokens ---------------------------------------------------------------

    /// Adds a user, or changes an existing user's password. Existing tokens are unaffected.
    pub fn add_user(&self, username: &str, password: &str) {
        self.lock().auth.add_user(username, password);
    }

    /// Expires every token issued so far; the next request with any of them gets 401
    /// `token_expired`. Tokens issued afterwards are unaffected.
    pub fn expire_tokens(&self) {
        let now = self.inner.clock.now_millis();
        self.lock().auth.expire_all(now);
    }

    /// Tokens that would be accepted right now.
    pub fn live_token_count(&self) -> usize {
        let now = self.inner.clock.now_millis();
        self.lock().auth.live_tokens(now)
    }

    // --- counters -----------------------------------------------------------------------

    /// Every request received, faulted and unroutable ones included.
    pub fn request_count(&self) -> u64 {
        self.lock().counters.requests
    }

    /// `POST /api/v1/auth/login` requests that got past the fault layer, successful or not.
    pub fn login_count(&self) -> u64 {
        self.lock().counters.logins
    }

    // --- faults -------------------------------------------------------------------------

    /// Applies `fault` to every following request until changed or cleared.
    pub fn set_fault(&self, fault: JsonCrmFault) {
        self.inner.faults.set(fault);
    }

    /// Applies `fault` to the next `requests` requests only.
    pub fn set_fault_for(&self, requests: u64, fault: JsonCrmFault) {
        self.inner.faults.set_for(requests, fault);
    }

    pub fn clear_fault(&self) {
        self.inner.faults.set(JsonCrmFault::None);
    }

    // --- records ------------------------------------------------------------------------

    /// Inserts a contact as if typed into ContactBook's UI (no validation) and returns its id.
    pub fn insert_contact(&self, contact: NewContact) -> String {
        self.with_store(|store, now| store.insert_contact(contact, now))
    }

    /// Changes a contact as a CRM user would: applies `change`, then sets `updated_at` to the
    /// clock's now (so the change shows in the changes feed). The id cannot be changed. Returns
    /// whether the contact exists. `change` runs under the simulator's lock, so it must not call
    /// back into the simulator.
    pub fn update_contact(&self, id: &str, change: impl FnOnce(&mut Contact)) -> bool {
        self.with_store(|store, now| store.update_contact(id, change, now))
    }

    /// Deletes a contact. Its calls, notes and tickets are kept. Returns whether it existed.
    pub fn delete_contact(&self, id: &str) -> bool {
        self.with_store(|store, _| store.delete_contact(id))
    }

    pub fn contact(&self, id: &str) -> Option<Contact> {
        self.with_store(|store, _| store.contact(id).cloned())
    }

    /// Live contacts in id order.
    pub fn contacts(&self) -> Vec<Contact> {
        self.with_store(|store, _| store.contacts().cloned().collect())
    }

    /// Calls in id order.
    pub fn calls(&self) -> Vec<Call> {
        self.with_store(|store, _| store.calls().cloned().collect())
    }

    /// Notes in id order.
    pub fn notes(&self) -> Vec<Note> {
        self.with_store(|store, _| store.notes().cloned().collect())
    }

    /// Tickets in id order.
    pub fn tickets(&self) -> Vec<Ticket> {
        self.with_store(|store, _| store.tickets().cloned().collect())
    }

    /// Seeds `n` realistic contacts: Vietnamese and foreign names (accents included), phones in
    /// national, international and punctuated forms (distinct on their last nine digits), some
    /// contacts without phone, e-mail or company, owners among a few users, `updated_at` spread
    /// over the last ten days, and per contact 0–2 notes, 1–2 calls (`external_id`
    /// `pbx-<1000+i>-<k>`) and sometimes a ticket. Deterministic for a given `n`, clock and
    /// starting state. Returns the contact ids.
    pub fn seed_demo_contacts(&self, n: usize) -> Vec<String> {
        self.with_store(|store, now| seed::demo_contacts(store, n, now))
    }
}

/// The simulator's axum router, serving `/api/v1/…`, for mounting on a listener of one's own
/// (`crmhub demo`).
pub fn router(sim: JsonCrmSim) -> axum::Router {
    server::router(sim)
}

/// A running simulator. Dereferences to [`JsonCrmSim`] for seeding, counters and faults.
/// Dropping it stops the server.
#[derive(Debug)]
pub struct JsonCrmSimHandle {
    sim: JsonCrmSim,
    served: Served,
}

impl JsonCrmSimHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.served.addr())
    }

    /// `{base_url}/api/v1`.
    pub fn api_url(&self) -> String {
        format!("{}/api/v1", self.base_url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.served.addr()
    }

    pub fn sim(&self) -> &JsonCrmSim {
        &self.sim
    }

    /// Stops accepting connections and waits (up to 5 s) for open ones to finish.
    pub async fn shutdown(self) {
        self.served.shutdown().await;
    }
}

impl Deref for JsonCrmSimHandle {
    type Target = JsonCrmSim;

    fn deref(&self) -> &JsonCrmSim {
        &self.sim
    }
}

/// Binds `127.0.0.1:0` and serves a new simulator on it.
pub async fn try_spawn(options: JsonCrmSimOptions) -> std::io::Result<JsonCrmSimHandle> {
    let sim = JsonCrmSim::new(options);
    let served = Served::start(router(sim.clone()), "json_crm").await?;
    Ok(JsonCrmSimHandle { sim, served })
}

/// Binds `127.0.0.1:0` and serves a new simulator on it.
///
/// # Panics
/// If no loopback port can be bound (use [`try_spawn`] to handle that).
pub async fn spawn(options: JsonCrmSimOptions) -> JsonCrmSimHandle {
    match try_spawn(options).await {
        Ok(handle) => handle,
        Err(e) => panic!("json_crm simulator: cannot bind 127.0.0.1:0: {e}"),
    }
}
