//! A Vtiger CRM 8.2 webservice simulator, built from `shared/contracts/vtiger.md`.
//!
//! It serves `{base}/webservice.php` with Vtiger's transport rules, auth flow, record operations,
//! VTQL, error codes (typos included) and the stock-PHP-8 defects, so that crmhub is tested
//! against the contract rather than against a convenient fake.
//!
//! ```ignore
//! let sim = crmhub_sim::vtiger::spawn(VtigerSimOptions::default()).await;
//! let url = format!("{}/webservice.php", sim.base_url());
//! sim.seed_demo_contacts(20);
//! assert_eq!(sim.login_count("admin"), 0);
//! ```

mod auth;
mod error;
mod faults;
mod json;
mod modules;
mod records;
mod seed;
mod server;
mod sync;
mod timefmt;
mod translate;
mod vtql;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crmhub_core::clock::{Clock, SystemClock};

use crate::support::Served;

pub use faults::Fault;

use auth::Auth;
use records::{Store, Writer};

/// The admin user's access key unless [`VtigerSimOptions::admin_access_key`] says otherwise.
/// Real keys are 16 alphanumeric characters too.
pub const DEFAULT_ADMIN_ACCESS_KEY: &str = "crmhubSimAdmin01";

/// Whether an operation broken on stock Vtiger 8.2 under PHP 8 has been patched locally
/// (contract §9: named-argument binding, and `sync`'s missing `syncType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Install {
    /// Stock 8.2.0 on PHP 8: the operation answers HTTP 500 with an empty body.
    #[default]
    Stock,
    /// Locally fixed: the operation behaves as documented.
    Patched,
}

/// How the simulator is set up. `Default` is a stock 8.2.0 install on PHP 8.
#[derive(Debug, Clone)]
pub struct VtigerSimOptions {
    /// Access key of the built-in `admin` user (`19x1`). Default [`DEFAULT_ADMIN_ACCESS_KEY`].
    pub admin_access_key: String,
    /// Time source for token expiry and record timestamps. Default: the system clock.
    pub clock: Arc<dyn Clock>,
    /// Path prefix before `/webservice.php`, e.g. `"/vtigercrm"`. Default `""` (root).
    pub base_path: String,
    /// `logout`: stock → HTTP 500 and the session stays valid; patched → `successfull` and
    /// the session ends. Default [`Install::Stock`].
    pub logout: Install,
    /// `sync`: stock → HTTP 500; patched → §7 semantics. Default [`Install::Stock`].
    pub sync: Install,
    /// Whether the custom `gettranslation` operation is registered. Default `true`.
    pub gettranslation: bool,
    /// Whether rows with equal `ORDER BY` keys come back in arbitrary order, as on MySQL.
    /// Default `true`.
    pub shuffle_ties: bool,
    /// Longest request line (`GET /webservice.php?… HTTP/1.1`) accepted; longer ones get
    /// HTTP 414 as from Apache's `LimitRequestLine`. Default 8190.
    pub max_request_line: usize,
}

impl Default for VtigerSimOptions {
    fn default() -> Self {
        VtigerSimOptions {
            admin_access_key: DEFAULT_ADMIN_ACCESS_KEY.to_owned(),
            clock: Arc::new(SystemClock),
            base_path: String::new(),
            logout: Install::Stock,
            sync: Install::Stock,
            gettranslation: true,
            shuffle_ties: true,
            max_request_line: 8190,
        }
    }
}

/// Per-operation and per-user request counters, for tests.
#[derive(Debug, Default)]
struct Counters {
    requests: u64,
    operations: HashMap<String, u64>,
    logins: HashMap<String, u64>,
    challenges: HashMap<String, u64>,
}

impl Counters {
    fn count_operation(&mut self, op: &str) {
        *self.operations.entry(op.to_owned()).or_default() += 1;
    }

    fn count_user(&mut self, login: bool, username: &str) {
        let map = if login { &mut self.logins } else { &mut self.challenges };
        *map.entry(username.to_ascii_lowercase()).or_default() += 1;
    }
}

#[derive(Debug)]
struct State {
    auth: Auth,
    store: Store,
    counters: Counters,
}

#[derive(Debug)]
struct Inner {
    clock: Arc<dyn Clock>,
    base_path: String,
    logout: Install,
    sync: Install,
    gettranslation: bool,
    shuffle_ties: bool,
    max_request_line: usize,
    admin_access_key: String,
    state: Mutex<State>,
    faults: faults::Faults,
}

/// The simulator's shared state: cheap to clone, all clones see the same CRM.
#[derive(Debug, Clone)]
pub struct VtigerSim {
    inner: Arc<Inner>,
}

impl Default for VtigerSim {
    fn default() -> Self {
        Self::new(VtigerSimOptions::default())
    }
}

impl VtigerSim {
    pub fn new(options: VtigerSimOptions) -> Self {
        let base_path = options.base_path.trim_end_matches('/');
        let base_path = if base_path.is_empty() || base_path.starts_with('/') {
            base_path.to_owned()
        } else {
            format!("/{base_path}")
        };
        VtigerSim {
            inner: Arc::new(Inner {
                clock: options.clock,
                base_path,
                logout: options.logout,
                sync: options.sync,
                gettranslation: options.gettranslation,
                shuffle_ties: options.shuffle_ties,
                max_request_line: options.max_request_line,
                state: Mutex::new(State {
                    auth: Auth::new(&options.admin_access_key),
                    store: Store::default(),
                    counters: Counters::default(),
                }),
                admin_access_key: options.admin_access_key,
                faults: faults::Faults::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a test panicked while holding it; keep serving.
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count_request(&self) {
        self.lock().counters.requests += 1;
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_secs()
    }

    /// The path prefix the webservice is served under (`""` or e.g. `"/vtigercrm"`).
    pub fn base_path(&self) -> &str {
        &self.inner.base_path
    }

    pub fn admin_access_key(&self) -> &str {
        &self.inner.admin_access_key
    }

    pub fn clock(&self) -> &dyn Clock {
        self.inner.clock.as_ref()
    }

    // --- users and sessions -------------------------------------------------------------

    /// Adds a (non-admin) user, or changes an existing user's access key. Returns its id
    /// (`19x5`, `19x6`, …: users share a sequence with the default groups 2–4).
    pub fn add_user(&self, username: &str, access_key: &str) -> String {
        self.lock().auth.add_user(username, access_key)
    }

    /// Ends every session, as PHP's session GC would; later calls get `INVALID_SESSIONID`.
    pub fn invalidate_sessions(&self) {
        self.lock().auth.end_all_sessions();
    }

    /// Ends one session. Returns whether it existed.
    pub fn invalidate_session(&self, session_name: &str) -> bool {
        self.lock().auth.end_session(session_name)
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.lock().auth.session_count()
    }

    // --- counters -----------------------------------------------------------------------

    /// Every request that reached `webservice.php`, faulted ones included.
    pub fn request_count(&self) -> u64 {
        self.lock().counters.requests
    }

    /// Requests for a known operation (lower-case name, e.g. `"query"`), whatever their outcome.
    pub fn operation_count(&self, operation: &str) -> u64 {
        let key = operation.to_ascii_lowercase();
        self.lock().counters.operations.get(&key).copied().unwrap_or(0)
    }

    /// `login` requests naming this user (case-insensitive), successful or not.
    pub fn login_count(&self, username: &str) -> u64 {
        let key = username.to_ascii_lowercase();
        self.lock().counters.logins.get(&key).copied().unwrap_or(0)
    }

    /// `getchallenge` requests naming this user (case-insensitive), successful or not.
    pub fn challenge_count(&self, username: &str) -> u64 {
        let key = username.to_ascii_lowercase();
        self.lock().counters.challenges.get(&key).copied().unwrap_or(0)
    }

    // --- faults -------------------------------------------------------------------------

    /// Applies `fault` to every following request until changed or cleared.
    pub fn set_fault(&self, fault: Fault) {
        self.inner.faults.set(fault);
    }

    /// Applies `fault` to the next `requests` requests only.
    pub fn set_fault_for(&self, requests: u64, fault: Fault) {
        self.inner.faults.set_for(requests, fault);
    }

    pub fn clear_fault(&self) {
        self.inner.faults.set(Fault::None);
    }

    // --- records ------------------------------------------------------------------------

    /// Inserts a record as if entered in the CRM (no mandatory check, `source` = `CRM`,
    /// owner `19x1` unless given) and returns its id, e.g. `"12x7"`. Unknown field names are
    /// ignored; server-owned fields such as `modifiedtime` may be given to backdate a record.
    ///
    /// # Panics
    /// If `module` is not a writable simulated module (a test bug, not request data).
    pub fn insert_record<K, V>(&self, module: &str, fields: impl IntoIterator<Item = (K, V)>) -> String
    where
        K: Into<String>,
        V: Into<String>,
    {
        let schema = modules::by_name(module)
            .filter(|s| s.writable)
            .unwrap_or_else(|| panic!("vtiger sim: cannot insert into module {module:?}"));
        let given: HashMap<String, String> = fields.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let now = self.now();
        let mut state = self.lock();
        let state = &mut *state;
        let w = Writer { auth: &state.auth, user_id: auth::ADMIN_USER_ID, now };
        let crmid = state.store.insert_seed(schema, &given, w);
        format!("{}x{crmid}", schema.prefix)
    }

    /// Changes a live record as a CRM user would (no validation) and bumps its
    /// `modifiedtime`. Returns whether the record exists.
    pub fn update_record<K, V>(&self, id: &str, fields: impl IntoIterator<Item = (K, V)>) -> bool
    where
        K: Into<String>,
        V: Into<String>,
    {
        let Some((_, crmid)) = records::parse_ws_id(id) else {
            return false;
        };
        let given: HashMap<String, String> = fields.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let now = self.now();
        let mut state = self.lock();
        let state = &mut *state;
        let w = Writer { auth: &state.auth, user_id: auth::ADMIN_USER_ID, now };
        state.store.edit_seed(crmid, &given, w)
    }

    /// Makes `field` of `module` mandatory, as an administrator does in the Layout Editor:
    /// `create`/`update`/`revise` without a value are refused with `MANDATORY_FIELDS_MISSING`
    /// and `describe` reports it. Returns whether the module has such a field.
    pub fn make_mandatory(&self, module: &str, field: &str) -> bool {
        let Some(schema) = modules::by_name(module).filter(|s| s.field(field).is_some()) else { return false };
        self.lock().store.made_mandatory.insert((schema.name, field.to_owned()));
        true
    }

    /// Undoes [`make_mandatory`](Self::make_mandatory) (stock mandatory fields stay).
    pub fn make_optional(&self, module: &str, field: &str) {
        self.lock().store.made_mandatory.retain(|(m, f)| !(*m == module && f == field));
    }

    /// Deletes a live record as a CRM user would. Returns whether it existed.
    pub fn delete_record(&self, id: &str) -> bool {
        let Some((_, crmid)) = records::parse_ws_id(id) else {
            return false;
        };
        let now = self.now();
        let mut state = self.lock();
        let state = &mut *state;
        let w = Writer { auth: &state.auth, user_id: auth::ADMIN_USER_ID, now };
        state.store.delete_seed(crmid, w)
    }

    /// Live records of a module in creation order, each with every field and its `id`
    /// (no `label`). Unknown modules give an empty list.
    pub fn records(&self, module: &str) -> Vec<BTreeMap<String, String>> {
        let Some(schema) = modules::by_name(module) else {
            return Vec::new();
        };
        let state = self.lock();
        if schema.name == "Users" {
            return state.auth.users().iter().map(|u| with_id(u.fields(), &u.ws_id())).collect();
        }
        state
            .store
            .live(schema)
            .map(|(crmid, r)| with_id(r.fields.clone(), &format!("{}x{crmid}", schema.prefix)))
            .collect()
    }

    /// One live record by id, as [`records`](Self::records) returns them.
    pub fn record(&self, id: &str) -> Option<BTreeMap<String, String>> {
        let (prefix, crmid) = records::parse_ws_id(id)?;
        let state = self.lock();
        let r = state.store.get(crmid).filter(|r| !r.deleted && r.schema.prefix == prefix)?;
        Some(with_id(r.fields.clone(), id))
    }

    /// Seeds `n` realistic contacts: organisations they belong to, phones in several national
    /// and international formats, e-mails, and per contact one to three notes (ModComments)
    /// and one or two logged calls (Events). Deterministic for a given `n` and starting state.
    /// Returns the contact ids.
    pub fn seed_demo_contacts(&self, n: usize) -> Vec<String> {
        seed::demo_contacts(self, n)
    }
}

fn with_id(fields: HashMap<String, String>, id: &str) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = fields.into_iter().collect();
    map.insert("id".into(), id.to_owned());
    map
}

/// The simulator's axum router, serving `{base_path}/webservice.php` (GET and POST), for
/// mounting on a listener of one's own (`crmhub demo`).
pub fn router(state: VtigerSim) -> axum::Router {
    server::router(state)
}

/// A running simulator. Dereferences to [`VtigerSim`] for seeding, counters and faults.
/// Dropping it stops the server.
#[derive(Debug)]
pub struct VtigerSimHandle {
    sim: VtigerSim,
    served: Served,
}

impl VtigerSimHandle {
    /// `http://127.0.0.1:PORT{base_path}`; the webservice is `{base_url}/webservice.php`.
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.served.addr(), self.sim.base_path())
    }

    /// `{base_url}/webservice.php`.
    pub fn webservice_url(&self) -> String {
        format!("{}/webservice.php", self.base_url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.served.addr()
    }

    pub fn sim(&self) -> &VtigerSim {
        &self.sim
    }

    /// Stops accepting connections and waits (up to 5 s) for open ones to finish.
    pub async fn shutdown(self) {
        self.served.shutdown().await;
    }
}

impl Deref for VtigerSimHandle {
    type Target = VtigerSim;

    fn deref(&self) -> &VtigerSim {
        &self.sim
    }
}

/// Binds `127.0.0.1:0` and serves a new simulator on it.
pub async fn try_spawn(options: VtigerSimOptions) -> std::io::Result<VtigerSimHandle> {
    let sim = VtigerSim::new(options);
    let served = Served::start(router(sim.clone()), "vtiger").await?;
    Ok(VtigerSimHandle { sim, served })
}

/// Binds `127.0.0.1:0` and serves a new simulator on it.
///
/// # Panics
/// If no loopback port can be bound (use [`try_spawn`] to handle that).
pub async fn spawn(options: VtigerSimOptions) -> VtigerSimHandle {
    match try_spawn(options).await {
        Ok(handle) => handle,
        Err(e) => panic!("vtiger simulator: cannot bind 127.0.0.1:0: {e}"),
    }
}
