//! The native Kommo connector against the Kommo simulator: connecting, token rotation (and its
//! failures), the Crm conformance kit, rate limits, IP blocks, paging and webhooks.

use crate::request_log::Log;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use crmhub_connectors::auth::{MemoryAuthState, SharedAuth};
use crmhub_connectors::conformance::{self, Backend};
use crmhub_connectors::http::{HttpClient, Lane, OutboundMetrics, OutboundPolicy, RateSpec};
use crmhub_connectors::kommo::{HostBlock, Kommo, WEBHOOK_EVENTS};
use crmhub_connectors::{ConnectionSpec, Connectors};
use crmhub_core::clock::ManualClock;
use crmhub_core::crm::{CardOptions, ChangeCursor, Crm, CrmError, NewNote};
use crmhub_core::phone::PhoneNumber;
use crmhub_core::{ConnectionId, ConnectorKind, Credentials, Host, PhoneRegion, Secret, TenantId};
use crmhub_sim::kommo::{ApiFault, KommoSim, KommoSimOptions, SimContact, TokenFault, spawn};
use serde_json::json;

/// Where the simulated integration's redirect URI points; only compared, never called here.
const REDIRECT: &str = "https://crmhub.example/oauth/kommo/callback";

struct Fixture {
    sim: KommoSim,
    clock: ManualClock,
    connectors: Connectors,
    log: Arc<Log>,
    blocks: Arc<Mutex<Vec<HostBlock>>>,
    connection: ConnectionId,
}

async fn fixture(options: KommoSimOptions) -> Fixture {
    let clock = ManualClock::new(1_767_225_600_000);
    let sim = spawn(KommoSimOptions { clock: Arc::new(clock.clone()), ..options }).await;
    sim.set_redirect_uri(REDIRECT);
    let log = Arc::new(Log::default());
    let policy = OutboundPolicy {
        allow_private: vec!["127.0.0.1/32".parse().unwrap()],
        // Background calls wait for the budget up to this long.
        request_timeout: Duration::from_secs(5),
        // The connector brings Kommo's own 7 rps; the host budget stays out of the way.
        per_host: RateSpec::new(10_000.0, 10_000),
        ..OutboundPolicy::default()
    };
    let http = HttpClient::new(policy, OutboundMetrics::new(), log.clone(), Arc::new(clock.clone())).unwrap();
    let blocks = Arc::new(Mutex::new(Vec::new()));
    let seen = blocks.clone();
    let connectors = Connectors::new(http, SharedAuth::new(Arc::new(MemoryAuthState::default())))
        .with_kommo_redirect_uri(REDIRECT.parse().unwrap())
        .with_kommo_block_pause(Duration::from_secs(30))
        .on_host_blocked(Arc::new(move |block| seen.lock().unwrap().push(block)));
    Fixture { sim, clock, connectors, log, blocks, connection: ConnectionId::new() }
}

impl Fixture {
    fn spec_parts(&self, credentials: Credentials) -> (Host, serde_json::Map<String, serde_json::Value>, Credentials) {
        let host = Host::parse(&self.sim.base_url()).unwrap();
        let fields = json!({"account": self.sim.account_domain()});
        (host, fields.as_object().unwrap().clone(), credentials)
    }

    fn oauth_credentials(&self) -> Credentials {
        let integration = self.sim.integration();
        [
            ("client_id".to_owned(), Secret::new(integration.client_id)),
            ("client_secret".to_owned(), Secret::new(integration.client_secret)),
        ]
        .into_iter()
        .collect()
    }

    fn build(&self, credentials: Credentials) -> (Arc<Kommo>, Arc<dyn Crm>) {
        self.build_in(credentials, Lane::Interactive)
    }

    fn build_in(&self, credentials: Credentials, lane: Lane) -> (Arc<Kommo>, Arc<dyn Crm>) {
        let (host, fields, credentials) = self.spec_parts(credentials);
        let spec = ConnectionSpec {
            tenant: TenantId::new(),
            id: self.connection,
            kind: &ConnectorKind::Kommo,
            host: &host,
            fields: &fields,
            credentials: &credentials,
            region: Some(PhoneRegion::parse("VN").unwrap()),
            template: None,
        };
        (self.connectors.kommo(spec, lane).unwrap(), self.connectors.crm(spec, lane).unwrap())
    }

    /// A connector connected through the code exchange, as the OAuth callback's job does it.
    async fn connected(&self) -> (Arc<Kommo>, Arc<dyn Crm>) {
        self.connected_in(Lane::Interactive).await
    }

    async fn connected_in(&self, lane: Lane) -> (Arc<Kommo>, Arc<dyn Crm>) {
        let (kommo, crm) = self.build_in(self.oauth_credentials(), lane);
        let connected = kommo.exchange_code(&Secret::new(self.sim.widget_install_code())).await.unwrap();
        assert_eq!(connected.account_id, self.sim.account_id());
        (kommo, crm)
    }

    fn logged_text(&self) -> String {
        self.log.0.lock().unwrap().iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join("\n")
    }
}

fn most_in_any_second(times: &[Instant]) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    (0..sorted.len())
        .map(|i| sorted[i..].iter().take_while(|t| t.duration_since(sorted[i]) < Duration::from_secs(1)).count())
        .max()
        .unwrap_or(0)
}

struct SimBackend<'a>(&'a KommoSim);

#[async_trait]
impl Backend for SimBackend<'_> {
    async fn add_contact(&self, first: &str, last: &str, email: &str, phone: &str) -> String {
        let contact = SimContact {
            first_name: first.into(),
            last_name: last.into(),
            emails: if email.is_empty() { vec![] } else { vec![(email.into(), "WORK".into())] },
            phones: if phone.is_empty() { vec![] } else { vec![(phone.into(), "MOB".into())] },
            company_id: None,
        };
        self.0.add_contact(contact).to_string()
    }

    async fn call_logs(&self, _call_id: &str) -> usize {
        0
    }

    async fn notes(&self, contact_id: &str) -> Vec<String> {
        self.0.notes(contact_id.parse().unwrap())
    }

    async fn ticket_title(&self, _ticket_id: &str, _contact_id: &str) -> Option<String> {
        None
    }

    async fn remove_contact(&self, id: &str) {
        self.0.delete_contact(id.parse().unwrap());
    }

    fn region(&self) -> Option<PhoneRegion> {
        Some(PhoneRegion::parse("VN").unwrap())
    }
}

#[tokio::test]
async fn a_connected_kommo_passes_the_conformance_kit() {
    let f = fixture(KommoSimOptions { rate_limit: None, ..KommoSimOptions::default() }).await;
    let (_, crm) = f.connected().await;
    conformance::run(crm.as_ref(), &SimBackend(&f.sim)).await;
}

#[tokio::test]
async fn cards_show_company_notes_and_tasks_and_searches_find_cyrillic_names() {
    let f = fixture(KommoSimOptions { rate_limit: None, ..KommoSimOptions::default() }).await;
    let (_, crm) = f.connected().await;
    let found = crm.search_contacts("Kowalski", 10).await.unwrap();
    let anna = found.iter().find(|c| c.display_name == "Anna Kowalski").expect("the seeded Anna Kowalski");
    assert!(anna.emails.contains(&"anna.kowalski@example.com".to_owned()), "{anna:?}");
    crm.add_note(&NewNote { contact_id: anna.id.clone(), body: "Called back about the order".into() }).await.unwrap();
    let card = crm.contact_card(&anna.id, &CardOptions::default()).await.unwrap();
    assert!(card.activities.iter().any(|a| a.body.as_deref() == Some("Called back about the order")), "{card:?}");
    assert!(card.record_url.unwrap().ends_with(&format!("/contacts/detail/{}", anna.id)));

    let id = f.sim.add_contact(SimContact {
        first_name: "Иван".into(),
        last_name: "Петров".into(),
        emails: vec![("ivan.petrov@example.ru".into(), "WORK".into())],
        phones: vec![("+7 912 345-67-89".into(), "MOB".into())],
        company_id: None,
    });
    let found = crm.search_contacts("петров", 10).await.unwrap();
    assert!(found.iter().any(|c| c.id == id.to_string()), "{found:?}");
    let phone = PhoneNumber::parse("89123456789", Some(PhoneRegion::parse("RU").unwrap())).unwrap();
    let found = crm.find_by_phone(&phone).await.unwrap();
    assert_eq!(found.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), [id.to_string()]);
}

#[tokio::test]
async fn the_access_token_is_refreshed_once_when_it_expires_however_many_callers() {
    let f = fixture(KommoSimOptions { rate_limit: None, ..KommoSimOptions::default() }).await;
    // Background callers wait for the 6-per-second budget instead of being told to come back.
    let (kommo, crm) = f.connected_in(Lane::Background).await;
    crm.check().await.unwrap();
    assert_eq!(kommo.refresh_if_expiring(Duration::from_secs(3600)).await.unwrap(), None, "a fresh token is kept");
    f.clock.advance(Duration::from_secs(24 * 3600));
    let mut calls = Vec::new();
    for _ in 0..8 {
        let crm = crm.clone();
        calls.push(tokio::spawn(async move { crm.search_contacts("Kowalski", 5).await }));
    }
    for call in calls {
        assert!(!call.await.unwrap().unwrap().is_empty());
    }
    assert_eq!(f.sim.token_calls("refresh_token"), 1, "one refresh for eight callers");
    // Ahead of expiry, by the background job's call.
    f.clock.advance(Duration::from_secs(23 * 3600));
    let expires = kommo.refresh_if_expiring(Duration::from_secs(2 * 3600)).await.unwrap().expect("refreshed");
    assert!(expires > crmhub_core::Clock::now_millis(&f.clock) / 1000 + 23 * 3600);
    assert_eq!(f.sim.token_calls("refresh_token"), 2);
    crm.check().await.unwrap();
    assert!(!f.logged_text().contains(&f.sim.integration().client_secret), "the client secret is masked in the log");
}

#[tokio::test]
async fn a_refresh_whose_answer_was_lost_is_recovered_with_the_old_token() {
    let f = fixture(KommoSimOptions { rate_limit: None, ..KommoSimOptions::default() }).await;
    let (kommo, crm) = f.connected().await;
    f.clock.advance(Duration::from_secs(24 * 3600 - 60));
    f.sim.set_token_fault(TokenFault::DropAfterRotate, 1);
    kommo.refresh_if_expiring(Duration::from_secs(3600)).await.unwrap().expect("refreshed after the lost answer");
    assert_eq!(f.sim.token_calls("refresh_token"), 2, "the lost one and its replay with the old token");
    crm.search_contacts("Kowalski", 5).await.unwrap();
    // And the pair kept works for the next rotation too.
    f.clock.advance(Duration::from_secs(24 * 3600));
    crm.search_contacts("Kowalski", 5).await.unwrap();
    assert_eq!(f.sim.token_calls("refresh_token"), 3);
}

#[tokio::test]
async fn a_revoked_grant_is_auth_failed_after_one_refresh() {
    let f = fixture(KommoSimOptions { rate_limit: None, ..KommoSimOptions::default() }).await;
    let (kommo, crm) = f.connected().await;
    f.sim.revoke_grant();
    let err = crm.search_contacts("Kowalski", 5).await.unwrap_err();
    assert!(matches!(&err, CrmError::AuthFailed(m) if m.contains("connect again")), "{err:?}");
    assert_eq!(f.sim.token_calls("refresh_token"), 1, "one refresh, no loop");
    let err = kommo.refresh_if_expiring(Duration::from_secs(48 * 3600)).await.unwrap_err();
    assert!(matches!(err, CrmError::AuthFailed(_)), "{err:?}");
}

#[tokio::test]
async fn a_code_is_used_once_and_a_connection_never_connected_says_so() {
    let f = fixture(KommoSimOptions { rate_limit: None, ..KommoSimOptions::default() }).await;
    let (kommo, crm) = f.build(f.oauth_credentials());
    let err = crm.check().await.unwrap_err();
    assert!(matches!(&err, CrmError::AuthFailed(m) if m.contains("not been connected")), "{err:?}");
    let code = Secret::new(f.sim.widget_install_code());
    kommo.exchange_code(&code).await.unwrap();
    let err = kommo.exchange_code(&code).await.unwrap_err();
    assert!(matches!(&err, CrmError::AuthFailed(m) if m.contains("authorization code")), "{err:?}");
    assert!(!format!("{err}").contains(code.expose()), "the code is masked: {err}");
    crm.check().await.expect("the first exchange's tokens still work");
}

#[tokio::test]
async fn a_long_lived_token_works_until_revoked_and_is_never_refreshed() {
    let f = fixture(KommoSimOptions { rate_limit: None, ..KommoSimOptions::default() }).await;
    let token = f.sim.issue_long_lived_token(Duration::from_secs(30 * 86_400));
    let credentials: Credentials = [("long_lived_token".to_owned(), Secret::new(token))].into_iter().collect();
    let (kommo, crm) = f.build(credentials);
    assert!(kommo.client_id().is_none());
    crm.check().await.unwrap();
    f.sim.revoke_grant();
    let err = crm.check().await.unwrap_err();
    assert!(matches!(&err, CrmError::AuthFailed(m) if m.contains("long-lived")), "{err:?}");
    assert_eq!(f.sim.token_calls("refresh_token"), 0);
}

#[tokio::test]
async fn a_429_storm_is_waited_out_without_going_above_the_budget() {
    // A Kommo stricter than documented: 3 per second. Its 429s say `retry_after: 1` in the body.
    let f = fixture(KommoSimOptions { rate_limit: Some(3), ..KommoSimOptions::default() }).await;
    let (_, crm) = f.connected().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut calls = Vec::new();
    for _ in 0..12 {
        let crm = crm.clone();
        calls.push(tokio::spawn(async move { crm.search_contacts("Kowalski", 5).await }));
    }
    let mut served = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(found) => {
                assert!(!found.is_empty());
                served += 1;
            }
            Err(CrmError::RateLimited { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(f.sim.rejected_429() > 0, "the storm happened");
    assert!(served > 0, "searches were served after waiting out the 429s");
    assert!(most_in_any_second(&f.sim.api_request_times()) <= 7, "retries stayed inside crmhub's own budget");
    assert!(!f.sim.is_blocked(), "the storm never escalated to an IP block");
}

#[tokio::test]
async fn requests_stay_within_seven_per_second() {
    let f = fixture(KommoSimOptions::default()).await;
    let (_, crm) = f.connected_in(Lane::Background).await;
    let started = Instant::now();
    let mut calls = Vec::new();
    for _ in 0..13 {
        let crm = crm.clone();
        calls.push(tokio::spawn(async move { crm.search_contacts("Kowalski", 5).await }));
    }
    for call in calls {
        call.await.unwrap().expect("background work waits for its turn");
    }
    assert_eq!(f.sim.rejected_429(), 0, "crmhub never went above Kommo's limit");
    assert!(most_in_any_second(&f.sim.api_request_times()) <= 7);
    assert!(started.elapsed() >= Duration::from_millis(1800), "13 calls at 6 per second take 2 s");

    // Interactive callers beyond what the budget serves within the bound are told to come back.
    let (_, interactive) = f.build(f.oauth_credentials());
    let mut calls = Vec::new();
    for _ in 0..12 {
        let crm = interactive.clone();
        calls.push(tokio::spawn(async move { crm.search_contacts("Kowalski", 5).await }));
    }
    let mut refused = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => {}
            Err(CrmError::RateLimited { retry_after: Some(_) }) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(refused > 0 && refused < 12, "{refused} of 12 refused");
    assert_eq!(f.sim.rejected_429(), 0);
}

#[tokio::test]
async fn a_403_pauses_the_host_for_every_connection_and_says_so_once() {
    let f = fixture(KommoSimOptions { rate_limit: None, ..KommoSimOptions::default() }).await;
    let (_, crm) = f.connected().await;
    f.sim.block_ip(Duration::from_secs(60));
    let before = f.sim.api_request_times().len();
    let err = crm.search_contacts("Kowalski", 5).await.unwrap_err();
    assert!(
        matches!(err, CrmError::RateLimited { retry_after: Some(pause) } if pause <= Duration::from_secs(30)),
        "{err:?}"
    );
    // Another connection to the same host is paused too: nothing more reaches Kommo.
    let other = Fixture { connection: ConnectionId::new(), ..f };
    let (_, second) = other.build(other.oauth_credentials());
    for crm in [&crm, &second] {
        let err = crm.search_contacts("Kowalski", 5).await.unwrap_err();
        assert!(matches!(err, CrmError::RateLimited { .. }), "{err:?}");
    }
    assert_eq!(other.sim.api_request_times().len(), before + 1, "only the first request met the block");
    let blocks = other.blocks.lock().unwrap().clone();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(blocks[0].host, other.sim.base_url());
    assert!(blocks[0].reason.contains("403"), "{}", blocks[0].reason);
}

#[tokio::test]
async fn the_change_feed_pages_through_everything_and_resumes_from_its_cursor() {
    let f = fixture(KommoSimOptions { rate_limit: None, seed_contacts: 600, ..KommoSimOptions::default() }).await;
    let (_, crm) = f.connected().await;
    let mut cursor: Option<ChangeCursor> = None;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        let page = crm.list_changes(cursor.as_ref()).await.unwrap();
        assert!(page.updated.len() <= 250, "{} in one page", page.updated.len());
        for record in &page.updated {
            assert!(seen.insert(record.id.clone()), "{} delivered twice", record.id);
        }
        cursor = Some(page.next);
        if !page.more {
            break;
        }
    }
    assert_eq!(seen.len(), f.sim.contact_count(), "every contact, once");
    let page = crm.list_changes(cursor.as_ref()).await.unwrap();
    assert!(page.updated.is_empty() && !page.more, "nothing new: {page:?}");
    f.clock.advance(Duration::from_secs(5));
    let id =
        f.sim.add_contact(SimContact { first_name: "New".into(), last_name: "Comer".into(), ..SimContact::default() });
    let page = crm.list_changes(cursor.as_ref()).await.unwrap();
    assert_eq!(page.updated.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), [id.to_string()]);
}

#[tokio::test]
async fn a_page_that_times_out_is_read_in_halves() {
    let f = fixture(KommoSimOptions { rate_limit: None, seed_contacts: 300, ..KommoSimOptions::default() }).await;
    let (_, crm) = f.connected().await;
    // The client retries a 504 on a GET itself; the fault outlasts its retries.
    let retries = OutboundPolicy::default().max_retries;
    f.sim.set_api_fault(ApiFault::Status(504), u64::from(retries) + 1);
    let page = crm.list_changes(None).await.unwrap();
    assert!(!page.updated.is_empty());
    let halved = f.log.0.lock().unwrap().iter().any(|e| e.url.contains("limit=125"));
    assert!(halved, "the page was asked for again at half the size");
}

#[tokio::test]
async fn webhook_destinations_are_subscribed_and_removed() {
    let f = fixture(KommoSimOptions { rate_limit: None, ..KommoSimOptions::default() }).await;
    let (kommo, _) = f.connected().await;
    let secret = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-0123";
    let destination: url::Url =
        format!("https://crmhub.example/hooks/kommo/{}/{secret}", f.connection).parse().unwrap();
    kommo.subscribe_webhook(&destination, &WEBHOOK_EVENTS).await.unwrap();
    kommo.subscribe_webhook(&destination, &WEBHOOK_EVENTS).await.expect("subscribing again is harmless");
    let hooks = f.sim.webhooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].destination, destination.as_str());
    assert_eq!(hooks[0].settings, WEBHOOK_EVENTS);
    assert_eq!(kommo.webhook_destinations().await.unwrap(), [destination.to_string()]);
    kommo.unsubscribe_webhook(&destination).await.unwrap();
    assert!(f.sim.webhooks().is_empty());
    kommo.unsubscribe_webhook(&destination).await.expect("removing a removed destination is harmless");
}

#[tokio::test]
async fn hosts_that_are_not_the_account_are_refused_before_anything_is_sent() {
    let f = fixture(KommoSimOptions { rate_limit: None, ..KommoSimOptions::default() }).await;
    for (host, fields) in [
        ("https://www.kommo.com", json!({})),
        (&f.sim.base_url() as &str, json!({})),
        (&f.sim.base_url() as &str, json!({"account": "demo.kommo.com.evil.test"})),
    ] {
        let host = Host::parse(host).unwrap();
        let err = crmhub_connectors::validate(
            &ConnectorKind::Kommo,
            &host,
            fields.as_object().unwrap(),
            &f.oauth_credentials(),
        )
        .unwrap_err();
        assert!(matches!(err, CrmError::Validation { .. }), "{err:?}");
    }
    assert!(f.sim.api_request_times().is_empty());
}

#[tokio::test]
async fn the_simulators_deliveries_parse_into_every_change() {
    use crmhub_connectors::kommo::webhook::{self, Action, Entity};
    let f = fixture(KommoSimOptions { rate_limit: None, ..KommoSimOptions::default() }).await;
    let (kommo, _) = f.connected().await;
    // Nothing listens there: the deliveries fail, but the simulator keeps every body it sent.
    let destination: url::Url = "http://127.0.0.1:9/hooks/kommo/c/0123456789abcdef0123".parse().unwrap();
    kommo.subscribe_webhook(&destination, &WEBHOOK_EVENTS).await.unwrap();
    let id = f.sim.add_contact(SimContact {
        first_name: "Hook".into(),
        last_name: "Target".into(),
        emails: vec![("hook@example.com".into(), "WORK".into())],
        phones: vec![("+44 20 7946 0958".into(), "WORK".into())],
        company_id: None,
    });
    f.sim.delete_contact(id);
    f.sim.settle_deliveries(Duration::from_secs(10)).await;
    let events: Vec<_> = f
        .sim
        .deliveries()
        .iter()
        .flat_map(|d| webhook::parse(d.body.as_bytes()).expect("a Kommo delivery parses").events)
        .collect();
    let added = events.iter().find(|e| e.action == Action::Add && e.id == id).expect("the add");
    assert_eq!(added.entity, Entity::Contact);
    assert_eq!(added.emails, ["hook@example.com"], "EMAIL found after PHONE");
    assert_eq!(added.phones, ["+44 20 7946 0958"]);
    let deleted = events.iter().find(|e| e.action == Action::Delete && e.id == id).expect("the delete");
    assert!(deleted.emails.is_empty() && deleted.name.is_none(), "a delete carries only id and type");
}

#[tokio::test]
async fn batches_map_ids_back_and_a_timed_out_batch_is_split_without_duplicates() {
    use crmhub_connectors::kommo::ContactWrite;
    let f = fixture(KommoSimOptions { rate_limit: None, seed_contacts: 0, ..KommoSimOptions::default() }).await;
    let (kommo, _) = f.connected().await;
    let people = |n: usize, tag: &str| -> Vec<ContactWrite> {
        (0..n)
            .map(|i| ContactWrite {
                first_name: Some(format!("{tag}{i}")),
                last_name: Some("Person".into()),
                emails: vec![format!("{tag}{i}@example.com").to_lowercase()],
                ..ContactWrite::default()
            })
            .collect()
    };
    let posts =
        || f.log.0.lock().unwrap().iter().filter(|e| e.method == "POST" && e.url.ends_with("/api/v4/contacts")).count();
    // 60 contacts are two requests (50 + 10), their ids in the input's order.
    let before = f.sim.contact_count();
    let ids = kommo.create_contacts(&people(60, "Batch")).await.unwrap();
    assert_eq!(posts(), 2);
    assert_eq!(f.sim.contact_count(), before + 60);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(f.sim.contact(*id).unwrap()["first_name"], format!("Batch{i}"), "ids in the input's order");
    }

    // A batch that times out at Kommo's gateway (nothing applied) is looked up, then sent in halves.
    f.sim.set_api_fault(ApiFault::Status(504), 1);
    let ids = kommo.create_contacts(&people(8, "Slow")).await.unwrap();
    assert_eq!(f.sim.contact_count(), before + 68, "every contact created once");
    assert_eq!(posts(), 2 + 3, "8 timed out, then 4 + 4");
    assert_eq!(f.sim.contact(ids[7]).unwrap()["first_name"], "Slow7");

    let updates: Vec<ContactWrite> = ids
        .iter()
        .map(|id| ContactWrite { id: Some(*id), last_name: Some("Renamed".into()), ..ContactWrite::default() })
        .collect();
    f.sim.set_api_fault(ApiFault::Status(504), 1);
    kommo.update_contacts(&updates).await.unwrap();
    for id in &ids {
        assert_eq!(f.sim.contact(*id).unwrap()["last_name"], "Renamed");
    }
    let err = kommo.create_contacts(&[ContactWrite { id: Some(1), ..ContactWrite::default() }]).await.unwrap_err();
    assert!(matches!(err, CrmError::Validation { .. }), "{err:?}");
}

#[tokio::test]
async fn a_429_with_a_body_that_is_not_json_is_retried_after_a_backoff() {
    let f = fixture(KommoSimOptions { rate_limit: None, ..KommoSimOptions::default() }).await;
    let (_, crm) = f.connected().await;
    let before = f.sim.api_request_times().len();
    f.sim.set_api_fault(ApiFault::NonJson429, 1);
    let started = Instant::now();
    assert!(!crm.search_contacts("Kowalski", 5).await.unwrap().is_empty());
    assert_eq!(f.sim.api_request_times().len(), before + 2, "the refused request and its retry");
    assert!(started.elapsed() >= Duration::from_millis(100), "it waited before retrying");
}
