//! The Unisender connector against the Unisender simulator: batched imports with row errors
//! mapped back, the key kept out of URLs and logs, every error code, idempotent exclusion,
//! lists, export paging, the per-key budget and the retry of an unanswered import.

use crate::request_log::Log;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crmhub_connectors::auth::{MemoryAuthState, SharedAuth};
use crmhub_connectors::http::{HttpClient, Lane, OutboundMetrics, OutboundPolicy, RateSpec};
use crmhub_connectors::unisender::{ContactType, ImportRow, Unisender};
use crmhub_connectors::{ConnectionSpec, Connectors};
use crmhub_core::clock::SystemClock;
use crmhub_core::crm::CrmError;
use crmhub_core::request_log::RequestLogEntry;
use crmhub_core::{ConnectionId, ConnectorKind, Credentials, Host, Secret, TenantId};
use crmhub_sim::unisender::{AccountState, Fault, UnisenderSim, UnisenderSimOptions, spawn};
use serde_json::json;

struct Fixture {
    sim: UnisenderSim,
    connectors: Connectors,
    log: Arc<Log>,
}

async fn fixture(options: UnisenderSimOptions, rate: Option<RateSpec>) -> Fixture {
    let sim = spawn(options).await;
    let log = Arc::new(Log::default());
    let policy = OutboundPolicy {
        allow_private: vec!["127.0.0.1/32".parse().unwrap()],
        request_timeout: Duration::from_secs(2),
        per_host: RateSpec::new(10_000.0, 10_000),
        ..OutboundPolicy::default()
    };
    let http = HttpClient::new(policy, OutboundMetrics::new(), log.clone(), Arc::new(SystemClock)).unwrap();
    let mut connectors = Connectors::new(http, SharedAuth::new(Arc::new(MemoryAuthState::default())))
        .with_unisender_import_timeout(Duration::from_millis(300));
    if let Some(rate) = rate {
        connectors = connectors.with_unisender_rate(rate);
    }
    Fixture { sim, connectors, log }
}

async fn default_fixture() -> Fixture {
    fixture(UnisenderSimOptions { rate_limit: None, ..UnisenderSimOptions::default() }, None).await
}

impl Fixture {
    fn build_with(&self, key: &str, lane: Lane) -> Arc<Unisender> {
        let host = Host::parse(&self.sim.base_url()).unwrap();
        let fields = json!({"lang": "en"}).as_object().unwrap().clone();
        let mut credentials = Credentials::new();
        credentials.insert("api_key", Secret::new(key));
        let spec = ConnectionSpec {
            tenant: TenantId::new(),
            id: ConnectionId::new(),
            kind: &ConnectorKind::Unisender,
            host: &host,
            fields: &fields,
            credentials: &credentials,
            region: None,
            template: None,
        };
        crmhub_connectors::validate(spec.kind, spec.host, spec.fields, spec.credentials).unwrap();
        self.connectors.unisender(spec, lane).unwrap()
    }

    fn build(&self) -> Arc<Unisender> {
        self.build_with(&self.sim.api_key(), Lane::Background)
    }

    fn logged(&self) -> Vec<RequestLogEntry> {
        self.log.0.lock().unwrap().clone()
    }
}

fn row(email: &str, name: &str) -> ImportRow {
    ImportRow {
        email: Some(email.to_owned()),
        phone: None,
        fields: BTreeMap::from([("Name".to_owned(), name.to_owned())]),
        delete: false,
    }
}

#[tokio::test]
async fn batches_of_1234_rows_are_three_calls_with_row_errors_mapped_back() {
    let f = default_fixture().await;
    let list = f.sim.create_list("Customers");
    let uni = f.build();
    let mut rows: Vec<ImportRow> = (0..1234).map(|i| row(&format!("u{i}@example.com"), &format!("U{i}"))).collect();
    rows[7] = row("info@example.com", "role");
    rows[600] = row("broken-at-600", "bad");
    rows[1000] = ImportRow { email: None, phone: None, ..row("", "nobody") };
    rows[1233] = row("no-reply@example.com", "role");
    let report = uni.import_contacts(&list, &rows).await.unwrap();
    assert_eq!(f.sim.calls("importContacts"), 3, "1233 sendable rows: 500 + 500 + 233");
    let errors: Vec<(usize, &str)> = report.row_errors.iter().map(|e| (e.row, e.code.as_str())).collect();
    assert_eq!(
        errors,
        vec![(7, "role_address"), (600, "invalid_email"), (1000, "missing_contact_key"), (1233, "role_address")]
    );
    assert_eq!((report.total, report.inserted, report.invalid, report.new_emails), (1234, 1230, 4, 1230));
    assert_eq!(f.sim.list_members(&list).len(), 1230);
    assert_eq!(f.sim.contact("u601@example.com").unwrap().fields["Name"], "U601");
    assert_eq!(f.sim.rows_received("u1@example.com"), 1);

    let key = f.sim.api_key();
    assert_eq!(f.sim.keys_in_url(), 0);
    let logged = f.logged();
    assert_eq!(logged.len(), 3);
    for entry in &logged {
        assert!(!entry.url.contains("api_key"), "{}", entry.url);
        assert!(!format!("{entry:?}").contains(&key), "the key leaked into the request log");
        assert!(!entry.request_body.as_deref().unwrap_or("").contains("delete"), "no delete column without deletes");
    }
}

#[tokio::test]
async fn delete_rows_delete_and_upserts_update() {
    let f = default_fixture().await;
    let list = f.sim.create_list("L");
    f.sim.add_contact("old@example.com", &[&list]);
    let uni = f.build();
    let rows = vec![ImportRow { delete: true, ..row("old@example.com", "") }, row("new@example.com", "New")];
    let report = uni.import_contacts(&list, &rows).await.unwrap();
    assert_eq!((report.deleted, report.inserted), (1, 1), "{report:?}");
    assert!(f.sim.contact("old@example.com").is_none());
    assert_eq!(f.sim.list_members(&list), vec!["new@example.com"]);
    assert!(f.logged()[0].request_body.as_deref().unwrap().contains("delete"));
    let again = uni.import_contacts(&list, &[row("new@example.com", "Newer")]).await.unwrap();
    assert_eq!((again.updated, again.inserted), (1, 0));
    assert!(uni.import_contacts(&list, &[]).await.unwrap().row_errors.is_empty());
}

#[tokio::test]
async fn each_error_code_is_mapped() {
    let f = fixture(
        UnisenderSimOptions { rate_limit: Some(2), rate_window: Duration::from_secs(60), ..Default::default() },
        None,
    )
    .await;
    let wrong = f.build_with("not-the-key-000", Lane::Background);
    let auth = |e: CrmError, code: &str| match e {
        CrmError::AuthFailed(m) => assert!(m.contains(code), "{m}"),
        other => panic!("{code}: {other:?}"),
    };
    auth(wrong.get_lists().await.unwrap_err(), "invalid_api_key");
    let uni = f.build();
    f.sim.set_account_state(AccountState::NotEnoughMoney);
    auth(uni.get_lists().await.unwrap_err(), "not_enough_money");
    f.sim.set_account_state(AccountState::AccessDenied);
    auth(uni.get_lists().await.unwrap_err(), "access_denied");
    f.sim.set_account_state(AccountState::Active);
    // The sim's limit is 2 calls a minute per key, and the key has spent them.
    match uni.get_lists().await.unwrap_err() {
        CrmError::RateLimited { retry_after: Some(d) } => assert!(d >= Duration::from_secs(60)),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.sim.rate_limited(), 1);
}

#[tokio::test]
async fn faults_and_refusals_are_mapped() {
    let f = default_fixture().await;
    let uni = f.build();
    f.sim.set_fault(Fault::RetryLater, 1);
    assert!(matches!(uni.get_lists().await, Err(CrmError::Unavailable(_))));
    f.sim.set_fault(Fault::IpLimit, 1);
    assert!(
        matches!(uni.get_lists().await, Err(CrmError::RateLimited { retry_after: Some(d) }) if d >= Duration::from_secs(60))
    );
    f.sim.set_fault(Fault::Status(503), 1);
    assert!(matches!(uni.get_lists().await, Err(CrmError::Unavailable(_))));
    f.sim.set_fault(Fault::NonJson, 1);
    assert!(matches!(uni.get_lists().await, Err(CrmError::Unavailable(_))));
    assert_eq!(f.sim.calls("getLists"), 4, "none of them retried blindly");
    uni.create_list("Dup").await.unwrap();
    assert!(matches!(uni.create_list("Dup").await, Err(CrmError::Validation { .. })));
    assert!(matches!(uni.export_contacts("999999", 0, 10).await, Err(CrmError::Validation { .. })));
    assert!(matches!(uni.export_contacts("1", 0, 1001).await, Err(CrmError::Validation { .. })));
    // A non-import call that times out is not sent again.
    f.sim.set_fault(Fault::Hang, 1);
    assert!(matches!(uni.get_lists().await, Err(CrmError::Unavailable(_))));
    assert_eq!(f.sim.calls("getLists"), 5);
}

#[tokio::test]
async fn exclude_get_contact_and_lists() {
    let f = default_fixture().await;
    let uni = f.build();
    let a = uni.create_list("A").await.unwrap();
    let b = uni.create_list("B").await.unwrap();
    let lists = uni.get_lists().await.unwrap();
    assert_eq!(lists, vec![(a.clone(), "A".to_owned()), (b.clone(), "B".to_owned())]);
    let check = uni.check().await.unwrap();
    assert!(check.details.iter().any(|d| d.label == "Lists" && d.value == "2"), "{check:?}");
    assert!(check.unverified.is_none());

    assert_eq!(uni.get_contact("nobody@example.com").await.unwrap(), None);
    uni.import_contacts(&a, &[row("ann@example.com", "Ann")]).await.unwrap();
    f.sim.add_contact("ann@example.com", &[&b]);
    let ann = uni.get_contact("ann@example.com").await.unwrap().unwrap();
    assert_eq!(ann.email, "ann@example.com");
    assert_eq!(ann.status, "new");
    assert_eq!(ann.list_ids, vec![a.clone(), b.clone()]);
    assert_eq!(ann.fields["Name"], "Ann");

    uni.exclude(ContactType::Email, "ann@example.com", &[&a]).await.unwrap();
    assert_eq!(f.sim.contact("ann@example.com").unwrap().list_ids, vec![b.clone()]);
    uni.exclude(ContactType::Email, "ann@example.com", &[&a]).await.expect("not in A any more: still Ok");
    uni.exclude(ContactType::Email, "ghost@example.com", &[]).await.expect("an absent contact: Ok");
    uni.exclude(ContactType::Email, "ann@example.com", &[]).await.unwrap();
    assert!(f.sim.list_members(&b).is_empty());
    assert!(f.sim.contact("ann@example.com").is_some(), "excluded, not deleted");
}

#[tokio::test]
async fn export_pages_through_a_list() {
    let f = default_fixture().await;
    let list = f.sim.create_list("Big");
    for i in 0..2500 {
        f.sim.add_contact(&format!("u{i:04}@example.com"), &[&list]);
    }
    let uni = f.build();
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let page = uni.export_contacts(&list, offset, 1000).await.unwrap();
        if page.is_empty() {
            break;
        }
        offset += page.len() as u64;
        seen.extend(page);
    }
    assert_eq!(seen.len(), 2500);
    assert_eq!(f.sim.calls("exportContacts"), 4, "1000 + 1000 + 500 + an empty page");
    assert_eq!(seen[1234].email.as_deref(), Some("u1234@example.com"));
    assert_eq!(seen[0].status.as_deref(), Some("new"));
    assert_eq!(seen[0].phone, None);
}

#[tokio::test]
async fn the_per_key_budget_holds_across_connections_sharing_a_key() {
    // Scaled down: the sim allows 30 calls a second per key; the connector's bucket lets at
    // most 4 + 24 = 28 into any second, leaving room for network jitter.
    let f = fixture(
        UnisenderSimOptions { rate_limit: Some(30), rate_window: Duration::from_secs(1), ..Default::default() },
        Some(RateSpec::new(24.0, 4)),
    )
    .await;
    let (one, two) = (f.build(), f.build());
    let started = Instant::now();
    let run = |uni: Arc<Unisender>| async move {
        for _ in 0..35 {
            uni.get_lists().await.unwrap();
        }
    };
    tokio::join!(run(one), run(two));
    let took = started.elapsed();
    assert_eq!(f.sim.rate_limited(), 0);
    assert_eq!(f.sim.calls("getLists"), 70);
    // 70 calls, 4 at once and 24 a second after: at least (70 - 4) / 24 = 2.75 s.
    assert!(took >= Duration::from_millis(2600), "{took:?}: the two connections did not share one budget");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn an_unanswered_import_is_sent_again_at_most_twice() {
    let f = default_fixture().await;
    let list = f.sim.create_list("L");
    let uni = f.build();
    f.sim.set_fault(Fault::LostAnswer, 1);
    let report = uni.import_contacts(&list, &[row("ann@example.com", "Ann")]).await.unwrap();
    assert_eq!(f.sim.calls("importContacts"), 2);
    assert_eq!(f.sim.rows_received("ann@example.com"), 2, "the lost attempt was applied, then repeated");
    assert_eq!(report.updated, 1, "the repeat found the contact the lost attempt made");

    f.sim.set_fault(Fault::Hang, 3);
    let error = uni.import_contacts(&list, &[row("bob@example.com", "Bob")]).await.unwrap_err();
    assert!(matches!(error, CrmError::Unavailable(_)), "{error:?}");
    assert_eq!(f.sim.calls("importContacts"), 5, "1 + 2 more attempts");
}

#[tokio::test]
async fn imports_converge_under_random_faults() {
    let f = default_fixture().await;
    let list = f.sim.create_list("L");
    let uni = f.build();
    f.sim.set_random_faults(0.2, 42);
    let rows: Vec<ImportRow> = (0..1200).map(|i| row(&format!("c{i}@example.com"), "C")).collect();
    let mut attempts = 0;
    let report = loop {
        attempts += 1;
        match uni.import_contacts(&list, &rows).await {
            Ok(report) => break report,
            Err(e) if e.is_transient() && attempts < 30 => {}
            Err(e) => panic!("attempt {attempts}: {e:?}"),
        }
    };
    assert!(report.row_errors.is_empty());
    assert_eq!(f.sim.list_members(&list).len(), 1200);
}
