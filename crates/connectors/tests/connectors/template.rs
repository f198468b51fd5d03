//! Integration templates run by the generic engine, against simulators over real HTTP.

use crate::request_log::Log;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crmhub_connectors::auth::{MemoryAuthState, SharedAuth};
use crmhub_connectors::conformance;
use crmhub_connectors::http::{
    AddressPolicy, CallContext, HttpClient, Lane, OutboundMetrics, OutboundPolicy, RateSpec,
};
use crmhub_connectors::template::{self, SourceFormat, Template, TemplateConnector};
use crmhub_connectors::{ConnectionSpec, Connectors};
use crmhub_core::crm::{CallDirection, CallLog, CallOutcome, CallStage, CardOptions, Crm, CrmError};
use crmhub_core::phone::PhoneNumber;
use crmhub_core::{ConnectionId, ConnectorKind, Credentials, Host, PhoneRegion, Secret, SystemClock, TenantId};
use crmhub_sim::vtiger::{VtigerSimOptions, spawn};
use serde_json::{Map, json};

use crate::vtiger::{KEY, SimBackend};

pub fn load(source: &str) -> Arc<Template> {
    let policy = AddressPolicy::default();
    Arc::new(template::parse(source, SourceFormat::detect(source), &policy).unwrap_or_else(|e| panic!("{e}")))
}

pub fn http(log: Arc<Log>) -> HttpClient {
    let policy = OutboundPolicy {
        allow_private: vec!["127.0.0.1/32".parse().unwrap()],
        request_timeout: Duration::from_secs(3),
        max_response_bytes: 1024 * 1024,
        per_host: RateSpec::new(10_000.0, 10_000),
        per_connection: RateSpec::new(10_000.0, 10_000),
        ..OutboundPolicy::default()
    };
    HttpClient::new(policy, OutboundMetrics::new(), log, Arc::new(SystemClock)).unwrap()
}

pub fn connector(
    template: Arc<Template>,
    base: &str,
    fields: serde_json::Value,
    secrets: &[(&str, &str)],
    log: Arc<Log>,
) -> TemplateConnector {
    let credentials: Credentials = secrets.iter().map(|(k, v)| ((*k).to_owned(), Secret::new(*v))).collect();
    let ctx = CallContext::new("template", Lane::Interactive).for_connection(TenantId::new(), ConnectionId::new());
    TemplateConnector::new(
        template,
        1,
        http(log),
        SharedAuth::new(Arc::new(MemoryAuthState::default())),
        ctx,
        &Host::parse(base).unwrap(),
        fields.as_object().unwrap_or(&Map::new()),
        &credentials,
        Some(PhoneRegion::parse("VN").unwrap()),
    )
    .unwrap()
}

const VTIGER: &str = include_str!("../../../../templates/vtiger.yaml");

#[tokio::test]
async fn the_vtiger_template_passes_the_same_conformance_kit() {
    let sim = spawn(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    let crm =
        connector(load(VTIGER), &sim.base_url(), json!({"username": "admin"}), &[("access_key", KEY)], Arc::default());
    conformance::run(&crm, &SimBackend(&sim)).await;
    assert_eq!(sim.login_count("admin"), 1, "the login chain ran once for the whole kit");
}

#[tokio::test]
async fn the_vtiger_template_logs_in_again_once_when_the_session_dies() {
    let sim = spawn(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    sim.insert_record("Contacts", [("firstname", "Susan"), ("lastname", "Red")]);
    let crm = Arc::new(connector(
        load(VTIGER),
        &sim.base_url(),
        json!({"username": "admin"}),
        &[("access_key", KEY)],
        Arc::default(),
    ));
    assert_eq!(crm.search_contacts("red", 5).await.unwrap().len(), 1);
    sim.invalidate_sessions();
    let (a, b) = tokio::join!(crm.search_contacts("susan", 5), crm.search_contacts("red", 5));
    assert_eq!((a.unwrap().len(), b.unwrap().len()), (1, 1));
    assert_eq!(sim.login_count("admin"), 2, "one re-login for both callers");
    assert_eq!(sim.challenge_count("admin"), 2);
}

#[tokio::test]
async fn the_vtiger_template_revises_call_logs() {
    let sim = spawn(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    let contact = sim.insert_record("Contacts", [("firstname", "Call"), ("lastname", "Me")]);
    let crm =
        connector(load(VTIGER), &sim.base_url(), json!({"username": "admin"}), &[("access_key", KEY)], Arc::default());
    let call = |stage, outcome| CallLog {
        call_id: "pbx-42".into(),
        stage,
        direction: CallDirection::Inbound,
        contact_id: Some(contact.clone()),
        from: Some("+84912345678".into()),
        to: None,
        started_at: 1_800_000_000,
        duration_secs: Some(125),
        outcome,
        agent: None,
        notes: Some("Asked about invoice 17".into()),
        disposition: None,
        recording_url: None,
        record_id: None,
    };
    let first = crm.log_call(&call(CallStage::Answered, None)).await.unwrap();
    let event = sim.record(&first.record_id).unwrap();
    assert_eq!((event["eventstatus"].as_str(), event["contact_id"].as_str()), ("Planned", contact.as_str()));
    let done = crm.log_call(&call(CallStage::Ended, Some(CallOutcome::Completed))).await.unwrap();
    assert_eq!((done.record_id.as_str(), done.created), (first.record_id.as_str(), false));
    let event = sim.record(&first.record_id).unwrap();
    assert_eq!((event["eventstatus"].as_str(), event["time_end"].as_str()), ("Held", "08:02:05"), "revised: {event:?}");
    assert_eq!(sim.records("Events").len(), 1);

    let inputs = BTreeMap::from([("module".to_owned(), "Contacts".to_owned())]);
    assert!(
        matches!(crm.invoke("login", &inputs).await, Err(CrmError::Validation { .. })),
        "auth steps are not callable"
    );
    assert!(matches!(crm.invoke("nope", &inputs).await, Err(CrmError::NotFound { .. })));
}

#[tokio::test]
async fn a_short_page_is_the_last_one_read() {
    let sim = spawn(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    sim.insert_record("Contacts", [("firstname", "Only"), ("lastname", "One"), ("mobile", "0912 345 678")]);
    let crm =
        connector(load(VTIGER), &sim.base_url(), json!({"username": "admin"}), &[("access_key", KEY)], Arc::default());
    let phone = PhoneNumber::parse("+84912345678", None).unwrap();
    assert_eq!(crm.find_by_phone(&phone).await.unwrap().len(), 1);
    assert_eq!(sim.operation_count("query"), 1, "one page of fewer than 100 rows is the whole answer");
    for i in 0..149 {
        sim.insert_record(
            "Contacts",
            [("firstname", "Many"), ("lastname", &format!("Same{i}")), ("mobile", "0912345678")],
        );
    }
    assert_eq!(crm.find_by_phone(&phone).await.unwrap().len(), 150);
    assert_eq!(sim.operation_count("query"), 3, "a full page of 100, then a short one of 50");
}

#[tokio::test]
async fn a_paginated_endpoint_run_by_name_reads_its_first_page() {
    let sim = spawn(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    let red = sim.insert_record("Contacts", [("firstname", "Susan"), ("lastname", "Red")]);
    let crm =
        connector(load(VTIGER), &sim.base_url(), json!({"username": "admin"}), &[("access_key", KEY)], Arc::default());
    let inputs = BTreeMap::from([("query".to_owned(), "red".to_owned())]);
    let answer = crm.invoke("search", &inputs).await.unwrap();
    let ids: Vec<&str> = answer["result"].as_array().unwrap().iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, [red.as_str()], "{answer}");
}

#[tokio::test]
async fn the_shipped_run_by_name_example_works_on_a_stock_install() {
    // A stock 8.2 has no registered operations beyond the built-ins.
    let sim =
        spawn(VtigerSimOptions { admin_access_key: KEY.into(), gettranslation: false, ..Default::default() }).await;
    let crm =
        connector(load(VTIGER), &sim.base_url(), json!({"username": "admin"}), &[("access_key", KEY)], Arc::default());
    let inputs = BTreeMap::from([("module".to_owned(), "Contacts".to_owned())]);
    let described = crm.invoke("describe", &inputs).await.unwrap();
    assert_eq!(
        (described["result"]["name"].as_str(), described["result"]["idPrefix"].as_str()),
        (Some("Contacts"), Some("12"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn native_and_template_connections_for_one_user_share_the_login_lock() {
    let sim = spawn(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    sim.insert_record("Contacts", [("firstname", "Susan"), ("lastname", "Red")]);
    let connectors = Connectors::new(http(Arc::default()), SharedAuth::new(Arc::new(MemoryAuthState::default())));
    let host = Host::parse(&sim.base_url()).unwrap();
    let fields = json!({"username": "admin"});
    let credentials: Credentials = [("access_key".to_owned(), Secret::new(KEY))].into_iter().collect();
    let template = load(VTIGER);
    let spec = |kind, template| ConnectionSpec {
        tenant: TenantId::new(),
        id: ConnectionId::new(),
        kind,
        host: &host,
        fields: fields.as_object().unwrap(),
        credentials: &credentials,
        region: None,
        template,
    };
    let native = connectors.crm(spec(&ConnectorKind::Vtiger, None), Lane::Interactive).unwrap();
    let kind = ConnectorKind::Template("vtiger".into());
    let templated = connectors.crm(spec(&kind, Some((&template, 1))), Lane::Interactive).unwrap();
    for round in 0..20 {
        sim.invalidate_sessions();
        // Each side's re-login asks for a challenge; Vtiger keeps one per user, so a login
        // interleaved with the other side's challenge would be refused.
        let searches = (0..3).flat_map(|_| [native.search_contacts("red", 5), templated.search_contacts("red", 5)]);
        for result in futures_util::future::join_all(searches).await {
            assert_eq!(result.map(|r| r.len()), Ok(1), "round {round}");
        }
    }
}

#[tokio::test]
async fn a_triggered_endpoint_run_by_name_keeps_its_trigger_rules() {
    let sim = spawn(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    let gone = sim.insert_record("Contacts", [("firstname", "Gone"), ("lastname", "Soon")]);
    sim.delete_record(&gone);
    let crm =
        connector(load(VTIGER), &sim.base_url(), json!({"username": "admin"}), &[("access_key", KEY)], Arc::default());
    let inputs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    let err = crm.invoke("create-contact", &inputs(&[("last_name", "Mail"), ("email", "not-an-email")])).await;
    assert!(matches!(&err, Err(CrmError::Validation { field, .. }) if field == "email"), "{err:?}");
    let err = crm.invoke("create-contact", &inputs(&[("first_name", "No")])).await;
    assert!(matches!(&err, Err(CrmError::Validation { field, .. }) if field == "last_name"), "{err:?}");
    assert_eq!(sim.records("Contacts").len(), 0, "nothing was created");

    let err = crm.invoke("add-note", &inputs(&[("contact_id", &gone), ("body", "orphan?")])).await;
    assert!(matches!(err, Err(CrmError::NotFound { .. })), "{err:?}");
    let err = crm.invoke("create-ticket", &inputs(&[("contact_id", &gone), ("title", "orphan?")])).await;
    assert!(matches!(err, Err(CrmError::NotFound { .. })), "{err:?}");
    let err = crm.invoke("log-call", &inputs(&[("call_id", "c1"), ("contact_id", &gone)])).await;
    assert!(matches!(&err, Err(CrmError::Validation { field, .. }) if field == "endpoint"), "{err:?}");
    assert!(
        sim.records("ModComments").is_empty() && sim.records("HelpDesk").is_empty() && sim.records("Events").is_empty()
    );

    let alive = sim.insert_record("Contacts", [("firstname", "Still"), ("lastname", "Here")]);
    let created = crm.invoke("add-note", &inputs(&[("contact_id", &alive), ("body", "by name")])).await.unwrap();
    assert_eq!(sim.record(created["result"]["id"].as_str().unwrap()).unwrap()["related_to"], alive);
}

#[tokio::test]
async fn the_vtiger_template_card_matches_the_native_card() {
    let sim = spawn(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    let account = sim.insert_record("Accounts", [("accountname", "Acme Ltd")]);
    let contact = sim.insert_record(
        "Contacts",
        [("firstname", "Wile"), ("lastname", "Coyote"), ("account_id", account.as_str()), ("assigned_user_id", "19x1")],
    );
    let ticket = |status| {
        sim.insert_record(
            "HelpDesk",
            [
                ("ticket_title", "Rocket"),
                ("ticketpriorities", "High"),
                ("ticketstatus", status),
                ("contact_id", &contact),
            ],
        )
    };
    let (open, _) = (ticket("Open"), ticket("Closed"));
    ticket("In Progress");
    let connectors = Connectors::new(http(Arc::default()), SharedAuth::new(Arc::new(MemoryAuthState::default())));
    let host = Host::parse(&sim.base_url()).unwrap();
    let fields = json!({"username": "admin"});
    let credentials: Credentials = [("access_key".to_owned(), Secret::new(KEY))].into_iter().collect();
    let template = load(VTIGER);
    let spec = |kind, template| ConnectionSpec {
        tenant: TenantId::new(),
        id: ConnectionId::new(),
        kind,
        host: &host,
        fields: fields.as_object().unwrap(),
        credentials: &credentials,
        region: None,
        template,
    };
    let native = connectors.crm(spec(&ConnectorKind::Vtiger, None), Lane::Interactive).unwrap();
    let kind = ConnectorKind::Template("vtiger".into());
    let templated = connectors.crm(spec(&kind, Some((&template, 1))), Lane::Interactive).unwrap();

    let options = CardOptions::default();
    let (want, got) = (
        native.contact_card(&contact, &options).await.unwrap(),
        templated.contact_card(&contact, &options).await.unwrap(),
    );
    assert_eq!(got.display_name, want.display_name);
    assert_eq!(got.company.as_deref(), Some("Acme Ltd"));
    assert_eq!(got.company, want.company);
    assert_eq!(got.owner, want.owner);
    assert!(got.owner.is_some());
    assert_eq!(got.figures, want.figures, "Open tickets");
    assert_eq!(got.figures[0].value, "2");
    assert_eq!(got.record_url, want.record_url);
    assert!(
        got.record_url.unwrap().ends_with(&format!(
            "/index.php?module=Contacts&view=Detail&record={}",
            contact.split_once('x').unwrap().1
        ))
    );

    for other in [&account, &open] {
        let err = templated.contact_card(other, &options).await.unwrap_err();
        assert!(matches!(err, CrmError::NotFound { .. }), "{other}: {err:?}");
        assert!(matches!(native.contact_card(other, &options).await, Err(CrmError::NotFound { .. })));
    }
}

#[tokio::test]
async fn searching_an_account_name_finds_its_contacts() {
    let sim = spawn(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    let acme = sim.insert_record("Accounts", [("accountname", "Acme Ltd")]);
    sim.insert_record("Accounts", [("accountname", "Acme Holdings")]);
    let wile = sim.insert_record(
        "Contacts",
        [("firstname", "Wile"), ("lastname", "Coyote"), ("email", "wile@example.org"), ("account_id", acme.as_str())],
    );
    sim.insert_record("Contacts", [("firstname", "Road"), ("lastname", "Runner")]);
    let crm =
        connector(load(VTIGER), &sim.base_url(), json!({"username": "admin"}), &[("access_key", KEY)], Arc::default());
    for term in ["Acme", "acme ltd"] {
        let found = crm.search_contacts(term, 10).await.unwrap();
        assert_eq!(found.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [wile.as_str()], "{term}");
        assert_eq!(found[0].company.as_deref(), Some("Acme Ltd"));
    }
    assert_eq!(sim.operation_count("query"), 6, "contacts, accounts, the accounts' contacts: per search");
    assert!(crm.search_contacts("zz-nobody", 10).await.unwrap().is_empty());
    assert_eq!(sim.operation_count("query"), 8, "no account matched: no third query");
}

#[tokio::test]
async fn a_wrong_access_key_is_an_auth_failure() {
    let sim = spawn(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    let crm = connector(
        load(VTIGER),
        &sim.base_url(),
        json!({"username": "admin"}),
        &[("access_key", "wrong")],
        Arc::default(),
    );
    let err = crm.check().await.unwrap_err();
    assert!(matches!(err, CrmError::AuthFailed(_)), "{err:?}");
}

mod contactbook {
    use async_trait::async_trait;
    use crmhub_connectors::conformance::{self, Backend};
    use crmhub_core::PhoneRegion;
    use crmhub_core::crm::{CallDirection, CallLog, CallOutcome, CallStage, CardOptions, Crm, CrmError};
    use crmhub_sim::json_crm::{CallStatus, JsonCrmFault, JsonCrmSimHandle, JsonCrmSimOptions, NewContact, spawn};
    use serde_json::json;
    use std::sync::Arc;

    use super::{Log, connector, load};

    const CONTACTBOOK: &str = include_str!("../../../../templates/contactbook.yaml");

    struct Book<'a>(&'a JsonCrmSimHandle);

    #[async_trait]
    impl Backend for Book<'_> {
        async fn add_contact(&self, first: &str, last: &str, email: &str, phone: &str) -> String {
            let mut contact = NewContact::new(last).first_name(first);
            if !email.is_empty() {
                contact = contact.email(email);
            }
            if !phone.is_empty() {
                contact = contact.phone(phone);
            }
            self.0.insert_contact(contact)
        }

        async fn call_logs(&self, call_id: &str) -> usize {
            self.0.calls().iter().filter(|c| c.external_id == call_id).count()
        }

        async fn notes(&self, contact_id: &str) -> Vec<String> {
            self.0.notes().into_iter().filter(|n| n.contact_id == contact_id).map(|n| n.body).collect()
        }

        async fn ticket_title(&self, ticket_id: &str, contact_id: &str) -> Option<String> {
            self.0
                .tickets()
                .into_iter()
                .find(|t| t.id == ticket_id && t.contact_id.as_deref() == Some(contact_id))
                .map(|t| t.title)
        }

        async fn remove_contact(&self, id: &str) {
            assert!(self.0.delete_contact(id));
        }

        fn region(&self) -> Option<PhoneRegion> {
            Some(PhoneRegion::parse("VN").unwrap())
        }
    }

    fn book(sim: &JsonCrmSimHandle, log: Arc<Log>) -> crmhub_connectors::template::TemplateConnector {
        connector(
            load(CONTACTBOOK),
            &sim.base_url(),
            json!({"username": "api", "page_size": "10"}),
            &[("password", "api-password")],
            log,
        )
    }

    #[tokio::test]
    async fn the_json_crm_template_passes_the_conformance_kit() {
        let sim = spawn(JsonCrmSimOptions::default()).await;
        sim.seed_demo_contacts(35);
        let crm = book(&sim, Arc::default());
        conformance::run(&crm, &Book(&sim)).await;
        assert_eq!(sim.login_count(), 1);
    }

    fn call(stage: CallStage, record_id: Option<String>) -> CallLog {
        CallLog {
            call_id: "pbx-crash-1".into(),
            stage,
            direction: CallDirection::Inbound,
            contact_id: None,
            from: Some("+84912345678".into()),
            to: None,
            started_at: 1_800_000_000,
            duration_secs: Some(42),
            outcome: (stage == CallStage::Ended).then_some(CallOutcome::Completed),
            agent: None,
            notes: None,
            disposition: None,
            recording_url: None,
            record_id,
        }
    }

    fn lookups(log: &Log) -> usize {
        log.0.lock().unwrap().iter().filter(|e| e.url.contains("/calls?external_id=")).count()
    }

    #[tokio::test]
    async fn a_call_logged_before_a_crash_is_found_instead_of_logged_twice() {
        let sim = spawn(JsonCrmSimOptions::default()).await;
        let answered = book(&sim, Arc::default()).log_call(&call(CallStage::Answered, None)).await.unwrap();
        assert!(answered.created);
        // A new connector has no call map: as after a crash before crmhub kept the record id.
        let log = Arc::new(Log::default());
        let ended = book(&sim, log.clone()).log_call(&call(CallStage::Ended, None)).await.unwrap();
        assert_eq!((ended.record_id.as_str(), ended.created), (answered.record_id.as_str(), false));
        assert_eq!(lookups(&log), 1, "the call was looked up by its external id");
        let calls = sim.calls();
        assert_eq!((calls.len(), calls[0].status), (1, CallStatus::Completed), "{calls:?}");
        assert_eq!(calls[0].duration, Some(42));
    }

    #[tokio::test]
    async fn a_record_id_from_crmhub_is_used_without_a_lookup() {
        let sim = spawn(JsonCrmSimOptions::default()).await;
        let answered = book(&sim, Arc::default()).log_call(&call(CallStage::Answered, None)).await.unwrap();
        let log = Arc::new(Log::default());
        let crm = book(&sim, log.clone());
        // The stage of a record known only by id is unknown: an answered event writes nothing.
        let late = crm.log_call(&call(CallStage::Answered, Some(answered.record_id.clone()))).await.unwrap();
        assert_eq!((late.record_id.as_str(), late.created), (answered.record_id.as_str(), false));
        let ended = crm.log_call(&call(CallStage::Ended, Some(answered.record_id.clone()))).await.unwrap();
        assert_eq!(ended.record_id, answered.record_id);
        assert_eq!(lookups(&log), 0, "no lookup by external id");
        assert_eq!(sim.calls().len(), 1);
        assert_eq!(sim.calls()[0].status, CallStatus::Completed);
        // A call the CRM has never seen is looked up once, then created.
        let fresh = CallLog { call_id: "pbx-new".into(), ..call(CallStage::Answered, None) };
        assert!(crm.log_call(&fresh).await.unwrap().created);
        assert_eq!((lookups(&log), sim.calls().len()), (1, 2));
    }

    #[tokio::test]
    async fn pagination_reads_every_page_and_the_card_is_mapped() {
        let sim = spawn(JsonCrmSimOptions::default()).await;
        for i in 0..35 {
            sim.insert_contact(NewContact::new(format!("Pager{i:02}")).first_name("Paged").company("Paging Ltd"));
        }
        let crm = book(&sim, Arc::default());
        let found = crm.search_contacts("paged", 100).await.unwrap();
        assert_eq!(found.len(), 35, "four pages of ten");
        assert_eq!(found[0].company.as_deref(), Some("Paging Ltd"));
        let card = crm.contact_card(&found[0].id, &CardOptions::default()).await.unwrap();
        assert_eq!(card.display_name, "Paged Pager00");
        assert!(card.record_url.unwrap().ends_with(&format!("/app/contacts/{}", found[0].id)));
    }

    #[tokio::test]
    async fn an_expired_token_reauthenticates_once_whether_by_status_or_by_body() {
        let sim = spawn(JsonCrmSimOptions::default()).await;
        sim.insert_contact(NewContact::new("Red").first_name("Susan"));
        let crm = book(&sim, Arc::default());
        assert_eq!(crm.search_contacts("red", 5).await.unwrap().len(), 1);
        sim.expire_tokens(); // 401 token_expired
        assert_eq!(crm.search_contacts("red", 5).await.unwrap().len(), 1);
        assert_eq!(sim.login_count(), 2);
        sim.set_fault_for(1, JsonCrmFault::ExpiredTokenBody); // 200 with an expiry in the body
        assert_eq!(crm.search_contacts("red", 5).await.unwrap().len(), 1);
        assert_eq!(sim.login_count(), 3);
    }

    #[tokio::test]
    async fn html_huge_and_failing_answers_are_typed_errors() {
        let sim = spawn(JsonCrmSimOptions::default()).await;
        let log = Arc::new(Log::default());
        let crm = book(&sim, log.clone());
        crm.check().await.unwrap();
        sim.set_fault(JsonCrmFault::Html);
        let err = crm.search_contacts("x", 5).await.unwrap_err();
        assert!(matches!(&err, CrmError::Protocol(m) if m.contains("text/html")), "{err:?}");
        sim.set_fault(JsonCrmFault::Huge { bytes: 30 * 1024 * 1024 });
        let err = crm.search_contacts("x", 5).await.unwrap_err();
        assert!(matches!(&err, CrmError::Protocol(m) if m.contains("limit")), "capped: {err:?}");
        sim.set_fault(JsonCrmFault::Http500);
        assert!(matches!(crm.search_contacts("x", 5).await, Err(CrmError::Unavailable(_))));
        sim.clear_fault();
        crm.search_contacts("x", 5).await.unwrap();
        let entries = log.0.lock().unwrap();
        assert!(entries.iter().any(|e| e.outcome == "too_large"));
        for entry in entries.iter() {
            let all = format!("{} {:?} {:?}", entry.url, entry.request_body, entry.response_body);
            assert!(!all.contains("api-password"), "password in the request log: {all}");
        }
    }

    #[tokio::test]
    async fn wrong_credentials_and_a_response_without_the_token_are_clear_errors() {
        let sim = spawn(JsonCrmSimOptions::default()).await;
        let wrong = connector(
            load(CONTACTBOOK),
            &sim.base_url(),
            json!({"username": "api"}),
            &[("password", "nope")],
            Arc::default(),
        );
        assert!(matches!(wrong.check().await, Err(CrmError::AuthFailed(_))));
        let tokenless = CONTACTBOOK.replace("token: /access_token", "token: /accessToken");
        let crm = connector(
            load(&tokenless),
            &sim.base_url(),
            json!({"username": "api"}),
            &[("password", "api-password")],
            Arc::default(),
        );
        let err = crm.check().await.unwrap_err();
        assert!(
            matches!(&err, CrmError::Protocol(m) if m.contains("without token") && m.contains("/accessToken")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn hostile_values_stay_inside_their_place() {
        let sim = spawn(JsonCrmSimOptions::default()).await;
        let id = sim.insert_contact(NewContact::new("Safe"));
        let crm = book(&sim, Arc::default());
        // Path: `../`, `#`, `?` and `/` cannot reach another route.
        for hostile in ["../contacts", "c_1#x", "c_1?x=1", "a/b"] {
            let err = crm.contact_card(hostile, &CardOptions::default()).await.unwrap_err();
            assert!(matches!(err, CrmError::NotFound { .. }), "{hostile}: {err:?}");
        }
        // `..` alone would be resolved by URL normalisation even percent-encoded: refused.
        for dots in ["..", "."] {
            let err = crm.contact_card(dots, &CardOptions::default()).await.unwrap_err();
            assert!(matches!(&err, CrmError::Validation { field, .. } if field == "id"), "{dots}: {err:?}");
        }
        crm.contact_card(&id, &CardOptions::default()).await.unwrap();
        // JSON: quotes and braces are data.
        let created = crm
            .create_contact(&crmhub_core::crm::NewContact {
                last_name: "O'Brien\", \"owner\": \"evil".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let stored = sim.contact(&created.id).unwrap();
        assert_eq!(stored.last_name, "O'Brien\", \"owner\": \"evil");
        assert_eq!(stored.owner, "api");
    }
}

mod signedsms {
    use std::sync::Arc;

    use crmhub_core::crm::{CrmError, SmsSender};
    use crmhub_core::phone::PhoneNumber;
    use crmhub_sim::sms::{SmsSimOptions, spawn};
    use serde_json::json;

    use super::{connector, load};

    const SIGNEDSMS: &str = include_str!("../../../../templates/signedsms.yaml");

    #[tokio::test]
    async fn requests_carry_an_md5_signature_the_provider_accepts() {
        let sim = spawn(SmsSimOptions::default()).await;
        let sms = connector(
            load(SIGNEDSMS),
            &sim.base_url(),
            json!({"sender": "crmhub"}),
            &[("api_key", "sms-key"), ("api_secret", "sms-secret")],
            Arc::default(),
        );
        let to = PhoneNumber::parse("0912 345 678", Some(crmhub_core::PhoneRegion::parse("VN").unwrap())).unwrap();
        let receipt = sms.send_sms(&to, "Your order 1042 ships today — cảm ơn!", None).await.unwrap();
        assert!(receipt.message_id.unwrap().starts_with("m_"));
        let messages = sim.messages();
        assert_eq!((messages[0].to.as_str(), messages[0].sender.as_deref()), ("+84912345678", Some("crmhub")));
        assert!(sim.rejections().is_empty());

        let wrong = connector(
            load(SIGNEDSMS),
            &sim.base_url(),
            json!({}),
            &[("api_key", "sms-key"), ("api_secret", "guess")],
            Arc::default(),
        );
        let err = wrong.send_sms(&to, "hi", None).await.unwrap_err();
        assert!(matches!(err, CrmError::AuthFailed(_)), "{err:?}");
        assert_eq!(sim.rejections()[0].reason.code(), "bad_signature");
    }

    #[tokio::test]
    async fn a_header_value_with_a_line_break_is_refused_before_sending() {
        let sim = spawn(SmsSimOptions::default()).await;
        let sms = connector(
            load(SIGNEDSMS),
            &sim.base_url(),
            json!({}),
            &[("api_key", "sms-key\r\nX-Evil: 1"), ("api_secret", "sms-secret")],
            Arc::default(),
        );
        let to = PhoneNumber::parse("+84912345678", None).unwrap();
        let err = sms.send_sms(&to, "hi", None).await.unwrap_err();
        assert!(matches!(&err, CrmError::Validation { field, .. } if field == "X-Api-Key"), "{err:?}");
        assert_eq!(sim.request_count(), 0, "nothing was sent");
    }
}
