//! The native Vtiger connector against the Vtiger simulator.

use crate::request_log::Log;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use crmhub_connectors::Connectors;
use crmhub_connectors::auth::{MemoryAuthState, SharedAuth};
use crmhub_connectors::conformance::{self, Backend};
use crmhub_connectors::http::{HttpClient, Lane, OutboundMetrics, OutboundPolicy, RateSpec};
use crmhub_connectors::vtiger::{Method, Vtiger};
use crmhub_connectors::{ConnectionSpec, http::CallContext};
use crmhub_core::crm::{CallDirection, CallLog, CallOutcome, CallStage, CardOptions, Crm, CrmError, NewTicket};
use crmhub_core::{ConnectionId, ConnectorKind, Credentials, Host, PhoneRegion, Secret, SystemClock, TenantId};
use crmhub_sim::vtiger::{Fault, Install, VtigerSimHandle, VtigerSimOptions, spawn};
use serde_json::{Map, Value, json};

pub const KEY: &str = "crmhubSimAdmin01";

struct Fixture {
    sim: VtigerSimHandle,
    connectors: Connectors,
    auth_state: Arc<MemoryAuthState>,
    log: Arc<Log>,
}

async fn fixture(options: VtigerSimOptions) -> Fixture {
    let sim = spawn(VtigerSimOptions { admin_access_key: KEY.into(), ..options }).await;
    let log = Arc::new(Log::default());
    let policy = OutboundPolicy {
        allow_private: vec!["127.0.0.1/32".parse().unwrap()],
        request_timeout: Duration::from_secs(2),
        // The tests measure the connector, not the rate budget.
        per_host: RateSpec::new(10_000.0, 10_000),
        per_connection: RateSpec::new(10_000.0, 10_000),
        ..OutboundPolicy::default()
    };
    let http = HttpClient::new(policy, OutboundMetrics::new(), log.clone(), Arc::new(SystemClock)).unwrap();
    let auth_state = Arc::new(MemoryAuthState::default());
    let connectors = Connectors::new(http, SharedAuth::new(auth_state.clone()));
    Fixture { sim, connectors, auth_state, log }
}

impl Fixture {
    fn crm_for(&self, connection: ConnectionId, username: &str, key: &str) -> Arc<dyn Crm> {
        let host = Host::parse(&self.sim.base_url()).unwrap();
        let fields = json!({"username": username, "card_fields": ["leadsource", "department"]});
        let credentials: Credentials = [("access_key".to_owned(), Secret::new(key))].into_iter().collect();
        let spec = ConnectionSpec {
            tenant: TenantId::new(),
            id: connection,
            kind: &ConnectorKind::Vtiger,
            host: &host,
            fields: fields.as_object().unwrap(),
            credentials: &credentials,
            region: Some(PhoneRegion::parse("VN").unwrap()),
            template: None,
        };
        self.connectors.crm(spec, Lane::Interactive).unwrap()
    }

    fn crm(&self) -> Arc<dyn Crm> {
        self.crm_for(ConnectionId::new(), "admin", KEY)
    }

    /// The protocol-level client, for operations beyond the Crm trait.
    fn client(&self) -> Vtiger {
        let host = Host::parse(&self.sim.base_url()).unwrap();
        let fields = json!({"username": "admin"});
        let credentials: Credentials = [("access_key".to_owned(), Secret::new(KEY))].into_iter().collect();
        let http = HttpClient::new(
            OutboundPolicy { allow_private: vec!["127.0.0.1/32".parse().unwrap()], ..OutboundPolicy::default() },
            OutboundMetrics::new(),
            self.log.clone(),
            Arc::new(SystemClock),
        )
        .unwrap();
        let ctx = CallContext::new("vtiger", Lane::Interactive).for_connection(TenantId::new(), ConnectionId::new());
        Vtiger::new(
            http,
            SharedAuth::new(self.auth_state.clone()),
            ctx,
            &host,
            fields.as_object().unwrap(),
            &credentials,
            None,
        )
        .unwrap()
    }

    fn contact(&self, first: &str, last: &str) -> String {
        self.sim.insert_record("Contacts", [("firstname", first), ("lastname", last)])
    }
}

pub struct SimBackend<'a>(pub &'a VtigerSimHandle);

#[async_trait]
impl Backend for SimBackend<'_> {
    async fn add_contact(&self, first: &str, last: &str, email: &str, phone: &str) -> String {
        self.0
            .insert_record("Contacts", [("firstname", first), ("lastname", last), ("email", email), ("mobile", phone)])
    }

    async fn call_logs(&self, call_id: &str) -> usize {
        let marker = format!("[crmhub-call:{call_id}]");
        self.0.records("Events").iter().filter(|r| r.get("description").is_some_and(|d| d.contains(&marker))).count()
    }

    async fn notes(&self, contact_id: &str) -> Vec<String> {
        self.0
            .records("ModComments")
            .into_iter()
            .filter(|r| r.get("related_to").map(String::as_str) == Some(contact_id))
            .filter_map(|r| r.get("commentcontent").cloned())
            .collect()
    }

    async fn ticket_title(&self, ticket_id: &str, contact_id: &str) -> Option<String> {
        let ticket = self.0.record(ticket_id)?;
        (ticket.get("contact_id").map(String::as_str) == Some(contact_id)).then(|| ticket["ticket_title"].clone())
    }

    async fn remove_contact(&self, id: &str) {
        assert!(self.0.delete_record(id));
    }

    fn region(&self) -> Option<PhoneRegion> {
        Some(PhoneRegion::parse("VN").unwrap())
    }
}

#[tokio::test]
async fn passes_the_conformance_kit_on_a_stock_install() {
    let f = fixture(VtigerSimOptions::default()).await;
    conformance::run(f.crm().as_ref(), &SimBackend(&f.sim)).await;
}

#[tokio::test]
async fn passes_the_conformance_kit_where_sync_works() {
    let f = fixture(VtigerSimOptions { sync: Install::Patched, ..VtigerSimOptions::default() }).await;
    conformance::run(f.crm().as_ref(), &SimBackend(&f.sim)).await;
    assert!(f.sim.operation_count("sync") > 0, "the working sync was used");
}

#[tokio::test]
async fn one_login_serves_a_thousand_sequential_searches() {
    let f = fixture(VtigerSimOptions::default()).await;
    f.contact("Susan", "Red");
    let crm = f.crm();
    for _ in 0..1000 {
        assert_eq!(crm.search_contacts("red", 10).await.unwrap().len(), 1);
    }
    assert_eq!(f.sim.login_count("admin"), 1);
    assert_eq!(f.sim.challenge_count("admin"), 1);
}

#[tokio::test]
async fn concurrent_callers_with_an_expired_session_log_in_once_more() {
    let f = fixture(VtigerSimOptions::default()).await;
    f.contact("Frank", "Redford");
    let crm = f.crm();
    crm.search_contacts("red", 10).await.unwrap();
    assert_eq!(f.sim.login_count("admin"), 1);
    f.sim.invalidate_sessions();
    let (a, b) = tokio::join!(crm.search_contacts("red", 10), crm.search_contacts("frank", 10));
    assert_eq!((a.unwrap().len(), b.unwrap().len()), (1, 1), "both replayed after the re-login");
    assert_eq!(f.sim.login_count("admin"), 2, "exactly one re-login");
}

#[tokio::test]
async fn two_connections_sharing_one_user_log_in_once() {
    let f = fixture(VtigerSimOptions::default()).await;
    f.contact("Shared", "User");
    let first = f.crm_for(ConnectionId::new(), "admin", KEY);
    let second = f.crm_for(ConnectionId::new(), "admin", KEY);
    let (a, b) = tokio::join!(first.search_contacts("shared", 5), second.search_contacts("shared", 5));
    assert_eq!((a.unwrap().len(), b.unwrap().len()), (1, 1), "neither lost the challenge-token race");
    assert_eq!(f.sim.login_count("admin"), 1);

    // A connection naming the same user with a wrong key never inherits the session.
    let wrong = f.crm_for(ConnectionId::new(), "admin", "not-the-key");
    assert!(matches!(wrong.search_contacts("shared", 5).await, Err(CrmError::AuthFailed(_))));
}

#[tokio::test]
async fn paging_reads_past_the_100_row_cap() {
    let f = fixture(VtigerSimOptions::default()).await;
    let ids: Vec<String> = (0..250).map(|i| f.contact(&format!("Page{i:03}"), "Pagination")).collect();
    f.contact("Other", "Person");
    let found = f.crm().search_contacts("pagination", 1000).await.unwrap();
    assert_eq!(found.len(), 250, "all 250 of 250 matches");
    let mut got: Vec<String> = found.into_iter().map(|c| c.id).collect();
    got.sort();
    let mut want = ids;
    want.sort();
    assert_eq!(got, want, "each exactly once");
    assert!(f.sim.operation_count("query") >= 3, "read in 100-row pages");
    assert_eq!(f.crm().search_contacts("pagination", 120).await.unwrap().len(), 120, "the limit is honoured");
}

/// The contacts queries a search sent, as VTQL.
fn contact_queries(log: &Log) -> Vec<String> {
    let entries = log.0.lock().unwrap();
    entries
        .iter()
        .filter_map(|e| url::Url::parse(&e.url).ok())
        .filter_map(|u| u.query_pairs().find(|(k, _)| k == "query").map(|(_, q)| q.into_owned()))
        .filter(|q| q.contains("FROM Contacts"))
        .collect()
}

#[tokio::test]
async fn a_search_asks_for_the_rows_its_answer_takes_then_widens() {
    let f = fixture(VtigerSimOptions::default()).await;
    for i in 0..30 {
        f.contact(&format!("Sized{i:02}"), "Firstpage");
    }
    let crm = f.crm();
    assert_eq!(crm.search_contacts("firstpage", 5).await.unwrap().len(), 5);
    let sent = contact_queries(&f.log);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].ends_with(" LIMIT 0,5;"), "the first page is the answer's size: {}", sent[0]);

    // Digits in order match more than the number (`%9%1%2%`): the first page holds only such
    // near misses, so the search reads on, in full pages, and finds the true matches.
    f.log.0.lock().unwrap().clear();
    let near: Vec<String> = (0..3)
        .map(|i| f.sim.insert_record("Contacts", [("lastname", format!("Near{i}")), ("phone", "9 0 1 0 2".into())]))
        .collect();
    let exact: Vec<String> = (0..3)
        .map(|i| f.sim.insert_record("Contacts", [("lastname", format!("Exact{i}")), ("phone", "+84 912 00".into())]))
        .collect();
    let found = crm.search_contacts("912", 3).await.unwrap();
    assert_eq!(found.into_iter().map(|c| c.id).collect::<Vec<_>>(), exact, "not {near:?}");
    let sent = contact_queries(&f.log);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[0].ends_with(" LIMIT 0,3;") && sent[1].ends_with(" LIMIT 3,100;"), "{sent:?}");
}

#[tokio::test]
async fn quotes_and_percent_signs_are_searched_literally() {
    let f = fixture(VtigerSimOptions::default()).await;
    let obrien = f.contact("Conan", "O'Brien");
    let percent = f.contact("Deal", "100% Cotton");
    f.contact("Plain", "Cotton");
    let crm = f.crm();
    let ids = |v: Vec<crmhub_core::crm::ContactSummary>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(ids(crm.search_contacts("O'Brien", 10).await.unwrap()), [obrien]);
    assert_eq!(ids(crm.search_contacts("100%", 10).await.unwrap()), [percent]);
    assert!(crm.search_contacts("x' OR '1'='1", 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unknown_id_is_not_found() {
    let f = fixture(VtigerSimOptions::default()).await;
    let client = f.client();
    assert!(matches!(client.retrieve("12x999999").await, Err(CrmError::NotFound { .. })));
    let err = f.crm().contact_card("12x999999", &CardOptions::default()).await.unwrap_err();
    assert!(matches!(err, CrmError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn a_missing_mandatory_field_is_a_validation_error_naming_it() {
    let f = fixture(VtigerSimOptions::default()).await;
    let client = f.client();
    let mut element = Map::new();
    element.insert("firstname".into(), Value::String("No".into()));
    let err = client.create("Contacts", element).await.unwrap_err();
    assert_eq!(
        err,
        CrmError::Validation {
            field: "lastname".into(),
            message: "Vtiger requires a value (lastname does not have a value)".into()
        }
    );
    let mut event = Map::new();
    for (k, v) in [
        ("subject", "x"),
        ("date_start", "2026-01-01"),
        ("time_start", "10:00:00"),
        ("due_date", "2026-01-01"),
        ("duration_hours", "0"),
        ("eventstatus", "Held"),
        ("activitytype", "Call"),
    ] {
        event.insert(k.into(), Value::String(v.into()));
    }
    let err = client.create("Events", event).await.unwrap_err();
    assert!(matches!(&err, CrmError::Validation { field, .. } if field == "time_end"), "{err:?}");
    assert!(f.sim.records("Contacts").is_empty() && f.sim.records("Events").is_empty(), "nothing was written");
}

#[tokio::test]
async fn the_connection_check_runs_the_search_queries() {
    let f = fixture(VtigerSimOptions::default()).await;
    let crm = f.crm();
    let before = f.sim.operation_count("query");
    let check = crm.check().await.unwrap();
    assert_eq!(f.sim.operation_count("query"), before + 3, "accounts, contacts and phone searches");
    assert!(check.details.iter().any(|d| d.label == "search" && d.value == "ok"), "{check:?}");
    // A failing search fails the check.
    f.sim.set_fault_for(3, Fault::Http500Empty);
    crm.check().await.unwrap_err();
}

#[tokio::test]
async fn server_faults_are_typed_errors() {
    let f = fixture(VtigerSimOptions::default()).await;
    let crm = f.crm();
    crm.check().await.unwrap();

    f.sim.set_fault(Fault::Http500Empty);
    let err = crm.search_contacts("x", 5).await.unwrap_err();
    assert!(matches!(&err, CrmError::Unavailable(m) if m.contains("HTTP 500")), "{err:?}");
    assert!(err.is_transient());

    f.sim.set_fault(Fault::DropConnection);
    assert!(matches!(crm.search_contacts("x", 5).await, Err(CrmError::Unavailable(_))));

    f.sim.set_fault(Fault::Latency(Duration::from_secs(5)));
    assert!(matches!(crm.search_contacts("x", 5).await, Err(CrmError::Unavailable(_))), "timed out");

    f.sim.clear_fault();
    crm.search_contacts("x", 5).await.expect("recovers once the fault is gone");
}

#[tokio::test]
async fn malformed_json_is_a_protocol_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/webservice.php",
        axum::routing::any(|| async { ([("content-type", "application/json")], "{\"success\":tru") }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let f = fixture(VtigerSimOptions::default()).await;
    let host = Host::parse(&format!("http://{addr}")).unwrap();
    let credentials: Credentials = [("access_key".to_owned(), Secret::new(KEY))].into_iter().collect();
    let fields = json!({"username": "admin"});
    let spec = ConnectionSpec {
        tenant: TenantId::new(),
        id: ConnectionId::new(),
        kind: &ConnectorKind::Vtiger,
        host: &host,
        fields: fields.as_object().unwrap(),
        credentials: &credentials,
        region: None,
        template: None,
    };
    let err = f.connectors.crm(spec, Lane::Interactive).unwrap().check().await.unwrap_err();
    assert!(matches!(err, CrmError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn describe_is_cached_and_custom_operations_are_callable() {
    let f = fixture(VtigerSimOptions::default()).await;
    let client = f.client();
    let contacts = client.describe("Contacts").await.unwrap();
    assert_eq!(contacts.id_prefix, "12");
    assert!(contacts.fields.iter().any(|field| field.name == "lastname" && field.mandatory));
    client.describe("Contacts").await.unwrap();
    assert_eq!(f.sim.operation_count("describe"), 1);
    let types = client.list_types().await.unwrap();
    assert!(types["types"].as_array().unwrap().iter().any(|t| t == "Contacts"));

    let translated = client
        .call_operation(
            "gettranslation",
            Method::Post,
            &[
                ("totranslate", "[\"SINGLE_Contacts\"]".into()),
                ("language", "ru_ru".into()),
                ("module", "Contacts".into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(translated["SINGLE_Contacts"], "Контакт");

    let created =
        client.create("Contacts", json!({"lastname": "Revisable"}).as_object().unwrap().clone()).await.unwrap();
    assert_eq!(created["assigned_user_id"], "19x1", "defaults to the logged-in user");
    let id = created["id"].as_str().unwrap();
    let revised = client.revise(id, json!({"title": "CTO"}).as_object().unwrap().clone()).await.unwrap();
    assert_eq!((revised["title"].as_str(), revised["lastname"].as_str()), (Some("CTO"), Some("Revisable")));
    client.delete(id).await.unwrap();
    assert!(matches!(client.retrieve(id).await, Err(CrmError::NotFound { .. })));
}

#[tokio::test]
async fn the_card_has_company_owner_fields_and_activities() {
    let f = fixture(VtigerSimOptions::default()).await;
    let account = f.sim.insert_record("Accounts", [("accountname", "Red Industries")]);
    let id = f.sim.insert_record(
        "Contacts",
        [
            ("firstname", "Susan"),
            ("lastname", "Red"),
            ("account_id", account.as_str()),
            ("email", "susan@red.example"),
            ("mobile", "+84 912 345 678"),
            ("leadsource", "Web Site"),
            ("title", "Buyer"),
        ],
    );
    f.sim.insert_record("ModComments", [("commentcontent", "Prefers e-mail"), ("related_to", id.as_str())]);
    f.sim.insert_record(
        "HelpDesk",
        [
            ("ticket_title", "Late delivery"),
            ("ticketstatus", "Open"),
            ("ticketpriorities", "High"),
            ("contact_id", id.as_str()),
        ],
    );
    let card = f.crm().contact_card(&id, &CardOptions::default()).await.unwrap();
    assert_eq!(card.display_name, "Susan Red");
    assert_eq!(card.company.as_deref(), Some("Red Industries"));
    assert!(card.owner.is_some());
    assert_eq!(card.title.as_deref(), Some("Buyer"));
    assert!(card.emails.iter().any(|e| e.value == "susan@red.example"));
    assert!(card.extra_fields.iter().any(|f| f.value == "Web Site"), "{:?}", card.extra_fields);
    assert!(card.activities.iter().any(|a| a.body.as_deref() == Some("Prefers e-mail")));
    assert!(card.activities.iter().any(|a| a.subject.contains("Late delivery")));
    assert_eq!(card.figures[0].value, "1", "one open ticket");
    assert!(card.record_url.unwrap().ends_with(&format!("record={}", id.split_once('x').unwrap().1)));
}

#[tokio::test]
async fn session_names_never_reach_the_request_log_or_the_logs() {
    let captured = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = {
        let captured = captured.clone();
        move || CaptureWriter(captured.clone())
    };
    let subscriber = tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(writer).finish();
    keep_every_callsite_interesting();
    let _guard = tracing::subscriber::set_default(subscriber);

    let f = fixture(VtigerSimOptions::default()).await;
    f.contact("Susan", "Red");
    let crm = f.crm();
    crm.search_contacts("red", 5).await.unwrap();
    f.sim.invalidate_sessions();
    crm.search_contacts("red", 5).await.unwrap(); // a second session, via re-login
    crm.create_contact(&crmhub_core::crm::NewContact { last_name: "Logged".into(), ..Default::default() })
        .await
        .unwrap();

    let mut sessions = Vec::new();
    for stored in f.auth_state_values().await {
        let parsed: Value = serde_json::from_str(&stored).unwrap();
        sessions.push(parsed["session"].as_str().unwrap().to_owned());
    }
    assert!(!sessions.is_empty());
    let entries = f.log.0.lock().unwrap().clone();
    assert!(entries.len() >= 6, "logins, queries and the create were logged");
    let log_text = String::from_utf8(captured.lock().unwrap().clone()).unwrap();
    for entry in &entries {
        let all = format!("{} {:?} {:?} {:?}", entry.url, entry.request_body, entry.response_body, entry.error);
        assert!(!all.contains(KEY), "access key in the request log: {all}");
        for session in &sessions {
            assert!(!all.contains(session.as_str()), "sessionName in the request log: {all}");
        }
    }
    assert!(entries.iter().any(|e| e.url.contains("sessionName=%5Bredacted%5D")), "the parameter is kept, redacted");
    for session in &sessions {
        assert!(!log_text.contains(session.as_str()), "sessionName in the logs");
    }
    assert!(log_text.contains("logged in to Vtiger"), "logs were captured");
}

/// tracing caches each call site's interest for the whole process, worked out against the
/// subscriber of the thread that reaches it first: a test on another thread, with no
/// subscriber, reaching the login's `info!` first would make it a no-op for this test's
/// thread-local capture too (seen in CI). A global subscriber interested in everything keeps
/// every interest "always"; events on threads without a capture go nowhere.
fn keep_every_callsite_interesting() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry())
            .expect("no other global subscriber in this test binary");
    });
}

#[derive(Clone)]
struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Fixture {
    async fn auth_state_values(&self) -> Vec<String> {
        use crmhub_core::auth_state::AuthStateStore;
        let host = Host::parse(&self.sim.base_url()).unwrap();
        let mut values = Vec::new();
        // The connector's key: account plus a hash of the access key.
        use md5::{Digest, Md5};
        let key_hash = hex::encode(&Md5::digest(format!("crmhub:{KEY}"))[..8]);
        let key = format!("vtiger:{}:admin:{key_hash}", host.as_str());
        if let Some(v) = self.auth_state.load(&key).await.unwrap() {
            values.push(v.expose().to_owned());
        }
        values
    }
}

#[tokio::test]
async fn connections_are_validated_before_they_are_stored() {
    let kind = ConnectorKind::Vtiger;
    let host = crmhub_core::Host::parse("https://crm.example.com").unwrap();
    let no_user = json!({});
    let creds: Credentials = [("access_key".to_owned(), Secret::new("k"))].into_iter().collect();
    let err = crmhub_connectors::validate(&kind, &host, no_user.as_object().unwrap(), &creds).unwrap_err();
    assert!(matches!(&err, CrmError::Validation { field, .. } if field == "fields.username"), "{err:?}");
    let err =
        crmhub_connectors::validate(&kind, &host, json!({"username": "a"}).as_object().unwrap(), &Credentials::new())
            .unwrap_err();
    assert!(matches!(&err, CrmError::Validation { field, .. } if field == "credentials.access_key"), "{err:?}");
    let bad = json!({"username": "a", "card_fields": ["ok", "bad field"]});
    let err = crmhub_connectors::validate(&kind, &host, bad.as_object().unwrap(), &creds).unwrap_err();
    assert!(matches!(&err, CrmError::Validation { field, .. } if field == "fields.card_fields[1]"), "{err:?}");
}

#[tokio::test]
async fn company_names_are_reused_across_searches() {
    let f = fixture(VtigerSimOptions::default()).await;
    let account = f.sim.insert_record("Accounts", [("accountname", "Red Industries")]);
    f.sim.insert_record("Contacts", [("firstname", "Susan"), ("lastname", "Red"), ("account_id", account.as_str())]);
    let crm = f.crm();
    let before = f.sim.operation_count("query");
    let first = crm.search_contacts("susan", 5).await.unwrap();
    assert_eq!(first[0].company.as_deref(), Some("Red Industries"));
    assert_eq!(f.sim.operation_count("query"), before + 3, "matching accounts, contacts, then the account's name");
    let queries = f.sim.operation_count("query");
    let second = crm.search_contacts("susan", 5).await.unwrap();
    assert_eq!(second[0].company.as_deref(), Some("Red Industries"));
    assert_eq!(f.sim.operation_count("query"), queries + 2, "the account name came from the cache");
}

#[tokio::test]
async fn a_search_finds_the_contacts_of_a_matching_company() {
    let f = fixture(VtigerSimOptions::default()).await;
    let acme = f.sim.insert_record("Accounts", [("accountname", "Acme Ltd")]);
    let other = f.sim.insert_record("Accounts", [("accountname", "Globex")]);
    let at_acme = f.sim.insert_record(
        "Contacts",
        [
            ("firstname", "Wile"),
            ("lastname", "Coyote"),
            ("email", "wile@desert.example"),
            ("account_id", acme.as_str()),
        ],
    );
    f.sim.insert_record("Contacts", [("firstname", "Hank"), ("lastname", "Scorpio"), ("account_id", other.as_str())]);
    let named = f.contact("Acmeson", "Jones");
    let crm = f.crm();
    let found = crm.search_contacts("acme", 10).await.unwrap();
    let ids: Vec<&str> = found.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [at_acme.as_str(), named.as_str()], "{found:?}");
    assert_eq!(found[0].company.as_deref(), Some("Acme Ltd"));
    let before = f.sim.operation_count("query");
    assert!(crm.search_contacts("acme@", 10).await.unwrap().is_empty());
    assert!(crm.search_contacts("+84 912", 10).await.unwrap().is_empty());
    assert_eq!(f.sim.operation_count("query"), before + 2, "e-mail and phone terms skip the company lookup");
}

fn call_log(call_id: &str, stage: CallStage, contact: &str) -> CallLog {
    CallLog {
        call_id: call_id.into(),
        stage,
        direction: CallDirection::Inbound,
        contact_id: Some(contact.to_owned()),
        from: Some("+84912345678".into()),
        to: None,
        started_at: 1_800_000_000,
        duration_secs: (stage == CallStage::Ended).then_some(95),
        outcome: (stage == CallStage::Ended).then_some(CallOutcome::Completed),
        agent: Some("agent-7".into()),
        notes: None,
        disposition: None,
        recording_url: None,
        record_id: None,
    }
}

fn events_marked(f: &Fixture, call_id: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let marker = format!("[crmhub-call:{call_id}]");
    f.sim.records("Events").into_iter().filter(|r| r["description"].contains(&marker)).collect()
}

#[tokio::test]
async fn a_known_record_is_completed_by_id_without_a_query() {
    let f = fixture(VtigerSimOptions::default()).await;
    let contact = f.contact("Call", "Known");
    let crm = f.crm();
    let answered = crm.log_call(&call_log("known-1", CallStage::Answered, &contact)).await.unwrap();
    let (queries, retrieves) = (f.sim.operation_count("query"), f.sim.operation_count("retrieve"));
    let known =
        CallLog { record_id: Some(answered.record_id.clone()), ..call_log("known-1", CallStage::Ended, &contact) };
    let ended = crm.log_call(&known).await.unwrap();
    assert_eq!((ended.record_id.as_str(), ended.created), (answered.record_id.as_str(), false));
    assert_eq!(f.sim.operation_count("query"), queries, "no marker lookup");
    assert_eq!(f.sim.operation_count("retrieve"), retrieves + 2, "the contact, then the known record");
    assert_eq!(f.sim.record(&answered.record_id).unwrap()["eventstatus"], "Held");
    // A late answered event, by id too, leaves the final log alone.
    let late =
        CallLog { record_id: Some(answered.record_id.clone()), ..call_log("known-1", CallStage::Answered, &contact) };
    crm.log_call(&late).await.unwrap();
    assert_eq!(f.sim.record(&answered.record_id).unwrap()["eventstatus"], "Held");
    assert_eq!(f.sim.operation_count("query"), queries);
}

#[tokio::test]
async fn a_known_record_deleted_in_the_crm_falls_back_to_the_marker() {
    let f = fixture(VtigerSimOptions::default()).await;
    let contact = f.contact("Call", "Deleted");
    let crm = f.crm();
    let first = crm.log_call(&call_log("gone-1", CallStage::Answered, &contact)).await.unwrap();
    assert!(f.sim.delete_record(&first.record_id));
    let stale = CallLog { record_id: Some(first.record_id.clone()), ..call_log("gone-1", CallStage::Ended, &contact) };
    let remade = crm.log_call(&stale).await.unwrap();
    assert!(remade.created, "nothing carries the marker any more: the log is made again");
    assert_ne!(remade.record_id, first.record_id);
    let live = events_marked(&f, "gone-1");
    assert_eq!((live.len(), live[0]["eventstatus"].as_str()), (1, "Held"));

    // Gone, while a record with the marker exists: that one is completed, none is added.
    let second = crm.log_call(&call_log("gone-2", CallStage::Answered, &contact)).await.unwrap();
    let deleted = f.sim.insert_record("Events", [("subject", "x"), ("eventstatus", "Planned")]);
    assert!(f.sim.delete_record(&deleted));
    let stale = CallLog { record_id: Some(deleted), ..call_log("gone-2", CallStage::Ended, &contact) };
    let found = crm.log_call(&stale).await.unwrap();
    assert_eq!((found.record_id.as_str(), found.created), (second.record_id.as_str(), false));
    assert_eq!(events_marked(&f, "gone-2").len(), 1);
}

#[tokio::test]
async fn what_an_agent_wrote_survives_the_final_log() {
    let f = fixture(VtigerSimOptions::default()).await;
    let contact = f.contact("Agent", "Edits");
    let crm = f.crm();
    let answered = crm.log_call(&call_log("edit-1", CallStage::Answered, &contact)).await.unwrap();
    let ours = f.sim.record(&answered.record_id).unwrap()["description"].clone();
    assert!(ours.starts_with("[crmhub-call:edit-1]\n") && ours.ends_with("\n[/crmhub-call]"), "{ours:?}");
    let edited = format!("Customer is upset & wants <b>a refund</b>.\n\n{ours}\nCall back Tuesday 10:00\n");
    assert!(f.sim.update_record(
        &answered.record_id,
        [("description", edited.as_str()), ("subject", "Refund request"), ("location", "Desk 4")]
    ));
    let done = CallLog { notes: Some("Refund approved".into()), ..call_log("edit-1", CallStage::Ended, &contact) };
    crm.log_call(&done).await.unwrap();
    let event = f.sim.record(&answered.record_id).unwrap();
    let description = &event["description"];
    assert!(
        description
            .starts_with("Customer is upset & wants <b>a refund</b>.\n\n[crmhub-call:edit-1]\nRefund approved\n\n")
    );
    assert!(description.ends_with("Duration: 95 s\n[/crmhub-call]\nCall back Tuesday 10:00\n"), "{description:?}");
    assert_eq!(description.matches("[crmhub-call:edit-1]").count(), 1);
    assert_eq!((event["eventstatus"].as_str(), event["subject"].as_str()), ("Held", "Refund request"));
    assert_eq!(event["location"], "Desk 4", "a field crmhub never sets is left alone");
    // The card shows the agent's text and crmhub's details, without crmhub's marker lines.
    let card = crm.contact_card(&contact, &CardOptions::default()).await.unwrap();
    let body = card.activities.iter().find_map(|a| a.body.clone()).unwrap();
    assert!(body.contains("Call back Tuesday") && body.contains("Refund approved"), "{body}");
    assert!(!body.contains("[crmhub-call") && !body.contains("[/crmhub-call]"), "{body}");
}

#[tokio::test]
async fn a_subject_without_a_number_is_completed_by_the_final_log() {
    let f = fixture(VtigerSimOptions::default()).await;
    let contact = f.contact("No", "Number");
    let crm = f.crm();
    let early = CallLog { from: None, ..call_log("subject-1", CallStage::Answered, &contact) };
    let answered = crm.log_call(&early).await.unwrap();
    assert_eq!(f.sim.record(&answered.record_id).unwrap()["subject"], "Inbound call");
    crm.log_call(&call_log("subject-1", CallStage::Ended, &contact)).await.unwrap();
    assert_eq!(f.sim.record(&answered.record_id).unwrap()["subject"], "Inbound call +84912345678");
}

#[tokio::test]
async fn a_ticket_carries_the_contacts_organization() {
    let f = fixture(VtigerSimOptions::default()).await;
    let account = f.sim.insert_record("Accounts", [("accountname", "Acme Ltd")]);
    let at_acme = f.sim.insert_record("Contacts", [("lastname", "Coyote"), ("account_id", account.as_str())]);
    let alone = f.contact("No", "Company");
    let crm = f.crm();
    let ticket = |contact: &str| NewTicket {
        contact_id: Some(contact.to_owned()),
        title: "Rocket misfired".into(),
        description: None,
        priority: None,
    };
    let retrieves = f.sim.operation_count("retrieve");
    let id = crm.create_ticket(&ticket(&at_acme)).await.unwrap();
    assert_eq!(f.sim.operation_count("retrieve"), retrieves + 1, "the contact is read once");
    let made = f.sim.record(&id).unwrap();
    assert_eq!((made["parent_id"].as_str(), made["contact_id"].as_str()), (account.as_str(), at_acme.as_str()));
    let id = crm.create_ticket(&ticket(&alone)).await.unwrap();
    assert_eq!(f.sim.record(&id).unwrap().get("parent_id").map_or("", String::as_str), "");
}
