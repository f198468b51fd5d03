//! Contact sync end to end: Kommo (simulator, connected through a widget install) → Unisender
//! (simulator) through the admin API, the job queue and the real connectors; and a Vtiger
//! source polled through its change feed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crmhub_connectors::Connectors;
use crmhub_core::crm::CrmError;
use crmhub_server::crm_access::AccessError;
use crmhub_server::sync::{DestinationResolver, DestinationRow, ImportOutcome, SyncDestination, UnisenderDestinations};
use crmhub_store::Store;
use crmhub_store::connections::Connection;
use crmhub_store::tenants::Tenant;

use crmhub_sim::kommo::{KommoSim, KommoSimOptions, SimContact, spawn as spawn_kommo};
use crmhub_sim::unisender::{UnisenderSim, UnisenderSimOptions, spawn as spawn_unisender};
use crmhub_sim::vtiger::{VtigerSimOptions, spawn as spawn_vtiger};
use crmhub_store::sync::DeliveryStatus;
use serde_json::{Value, json};

use crate::helpers::{Spawn, TestApp, error_of, spawn, spawn_app};

struct Setup {
    app: TestApp,
    kommo: KommoSim,
    unisender: UnisenderSim,
    kommo_id: String,
    unisender_id: String,
    list: String,
}

async fn setup() -> Setup {
    setup_with(spawn()).await
}

async fn setup_with(spawn: Spawn) -> Setup {
    setup_on(spawn, KommoSimOptions::default()).await
}

async fn setup_on(spawn: Spawn, kommo: KommoSimOptions) -> Setup {
    let kommo = spawn_kommo(kommo).await;
    let unisender = spawn_unisender(UnisenderSimOptions::default()).await;
    let app = spawn.configure(|s| s.jobs.backoff_base_secs = 1).start().await;
    app.create_tenant("acme").await;
    let redirect = app.state.settings.public_url().unwrap().join("/oauth/kommo/callback").unwrap();
    kommo.set_redirect_uri(redirect.as_str());
    let integration = kommo.integration();
    let kommo_id = app
        .create_connection(
            "acme",
            &json!({"name": "Kommo", "kind": "kommo", "host": kommo.base_url(),
                "fields": {"account": kommo.account_domain()},
                "credentials": {"client_id": integration.client_id, "client_secret": integration.client_secret}}),
        )
        .await;
    // A widget install brings the code; the connect job exchanges it.
    let callback = url::Url::parse(&kommo.widget_install_callback()).unwrap();
    let at_app = app.url(&format!("{}?{}", callback.path(), callback.query().unwrap_or_default()));
    assert_eq!(app.client.get(at_app).send().await.unwrap().status(), 200);
    settle(&app).await;
    let unisender_id = app
        .create_connection(
            "acme",
            &json!({"name": "Unisender", "kind": "unisender", "host": unisender.base_url(),
                "credentials": {"api_key": unisender.api_key()}}),
        )
        .await;
    let list = unisender.create_list("Customers");
    Setup { app, kommo, unisender, kommo_id, unisender_id, list }
}

fn person(n: usize, emails: &[&str]) -> SimContact {
    SimContact {
        first_name: format!("First{n}"),
        last_name: format!("Last{n}"),
        emails: emails.iter().map(|e| ((*e).to_owned(), "WORK".to_owned())).collect(),
        phones: Vec::new(),
        company_id: None,
    }
}

/// Every address the Kommo simulator's contacts have (it comes seeded with some), lower case.
fn kommo_emails(sim: &KommoSim) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for id in sim.contact_ids() {
        let contact = sim.contact(id).unwrap();
        for field in contact["custom_fields_values"].as_array().into_iter().flatten() {
            if field["field_code"] == "EMAIL" {
                for value in field["values"].as_array().into_iter().flatten() {
                    out.insert(value["value"].as_str().unwrap().trim().to_lowercase());
                }
            }
        }
    }
    out
}

/// Waits until the app's workers (or a drain) have run every job that is due.
async fn settle(app: &TestApp) {
    for _ in 0..500 {
        let report = app.drain_jobs().await;
        assert_eq!(report.dead, 0, "{report:?}");
        if report.pending == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("jobs still pending");
}

async fn create_pipeline(s: &Setup, extra: Value) -> Value {
    let mut body = json!({"name": "main", "source_connection_id": s.kommo_id,
        "destination_connection_id": s.unisender_id, "list_id": s.list});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let response = s.app.admin_send(reqwest::Method::POST, "/admin/v1/tenants/acme/sync/pipelines", &body).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_backfill_brings_every_kommo_address_into_the_list_once() {
    let s = setup().await;
    let mut mine = BTreeSet::new();
    for n in 0..300 {
        let email = format!("person{n}@example.com");
        s.kommo.add_contact(person(n, &[&email]));
        mine.insert(email);
    }
    let expected = kommo_emails(&s.kommo);
    assert!(expected.len() > 300, "the simulator's own contacts come along");
    let pipeline = create_pipeline(&s, json!({})).await;
    assert_eq!(pipeline["backfill"]["status"], "running", "{pipeline}");
    settle(&s.app).await;

    let members: BTreeSet<String> = s.unisender.list_members(&s.list).into_iter().collect();
    assert_eq!(members, expected);
    let twice: Vec<&String> = mine.iter().filter(|e| s.unisender.rows_received(e) != 1).collect();
    assert!(twice.is_empty(), "imported other than once: {twice:?}");

    let run_id = pipeline["backfill"]["id"].as_str().unwrap();
    let run: Value = s.app.admin_get(&format!("/admin/v1/tenants/acme/sync/runs/{run_id}")).await.json().await.unwrap();
    let contacts = s.kommo.contact_ids().len() as u64;
    assert_eq!((run["status"].as_str(), run["done"].as_u64()), (Some("done"), Some(contacts)), "{run}");
    assert!(run["rate_per_sec"].as_f64().unwrap() > 0.0, "{run}");

    // Another backfill on demand finds nothing changed and imports nothing.
    let imports = s.unisender.calls("importContacts");
    let path = format!("/admin/v1/tenants/acme/sync/pipelines/{}/runs", pipeline["id"].as_str().unwrap());
    let again = s.app.admin_send(reqwest::Method::POST, &path, &json!({"kind": "backfill"})).await;
    assert_eq!(again.status(), 202);
    settle(&s.app).await;
    assert_eq!(s.unisender.calls("importContacts"), imports);
}

#[tokio::test]
async fn a_storm_of_webhook_events_for_one_contact_makes_one_fetch_and_one_import() {
    let s = setup().await;
    let id = s.kommo.add_contact(person(1, &["storm@example.com"]));
    create_pipeline(&s, json!({})).await;
    settle(&s.app).await;
    s.kommo.update_contact(id, |c| c.emails = vec![("storm2@example.com".into(), "WORK".into())]);
    let (requests, imports) = (s.kommo.api_request_times().len(), s.unisender.calls("importContacts"));

    let slug = crmhub_core::TenantSlug::parse("acme").unwrap();
    let tenant = s.app.store().tenants().by_slug(&slug).await.unwrap().id;
    let source = s.kommo_id.parse().unwrap();
    let ids = vec![id.to_string(); 20];
    let jobs = crmhub_server::sync::jobs_for_contacts(s.app.store(), tenant, source, &ids).await.unwrap();
    assert_eq!(jobs.len(), 20);
    let body = format!("contacts[update][0][id]={id}");
    s.app.store().sync(tenant).record_delivery(source, &body, DeliveryStatus::Accepted, None, jobs).await.unwrap();
    settle(&s.app).await;

    assert_eq!(s.kommo.api_request_times().len() - requests, 1, "one fetch of the contact");
    assert_eq!(s.unisender.calls("importContacts") - imports, 1, "one import");
    let members = s.unisender.list_members(&s.list);
    assert!(members.contains(&"storm2@example.com".to_owned()), "{members:?}");
    assert!(!members.contains(&"storm@example.com".to_owned()), "the old address excluded: {members:?}");
}

#[tokio::test]
async fn reconciliation_repairs_a_missed_add_and_a_missed_delete_and_reports_them() {
    let s = setup().await;
    let keep = s.kommo.add_contact(person(1, &["keep@example.com"]));
    let gone = s.kommo.add_contact(person(2, &["gone@example.com"]));
    let pipeline = create_pipeline(&s, json!({})).await;
    settle(&s.app).await;
    // Webhooks that never arrived.
    let added = s.kommo.add_contact(person(3, &["new@example.com"]));
    s.kommo.delete_contact(gone);
    let path = format!("/admin/v1/tenants/acme/sync/pipelines/{}/runs", pipeline["id"].as_str().unwrap());
    let started = s.app.admin_send(reqwest::Method::POST, &path, &json!({"kind": "reconcile"})).await;
    assert_eq!(started.status(), 202);
    let run: Value = started.json().await.unwrap();
    settle(&s.app).await;
    let run: Value = s
        .app
        .admin_get(&format!("/admin/v1/tenants/acme/sync/runs/{}", run["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(run["status"], "done", "{run}");
    assert_eq!(run["report"]["readded"], json!([added.to_string()]), "{run}");
    assert_eq!(run["report"]["deleted"], json!([gone.to_string()]), "{run}");
    let members: BTreeSet<String> = s.unisender.list_members(&s.list).into_iter().collect();
    assert_eq!(members, kommo_emails(&s.kommo));
    assert!(members.contains("keep@example.com") && members.contains("new@example.com"));
    assert!(!members.contains("gone@example.com"));
    let _ = keep;
}

#[tokio::test]
async fn pipelines_are_validated_field_by_field_and_nothing_is_made_on_refusal() {
    let s = setup().await;
    let vtiger = spawn_vtiger(VtigerSimOptions::default()).await;
    let cases = [
        (json!({"field_map": {"nickname": "Nick"}}), "field_map.nickname"),
        (json!({"destination_connection_id": s.kommo_id}), "destination_connection_id"),
        (json!({"list_id": " "}), "list_id"),
        (json!({"deletion": "shred"}), "deletion"),
        (json!({"source_connection_id": "not-an-id"}), "source_connection_id"),
    ];
    for (extra, field) in cases {
        let mut body = json!({"name": "p", "source_connection_id": s.kommo_id,
            "destination_connection_id": s.unisender_id, "list_id": s.list});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let response = s.app.admin_send(reqwest::Method::POST, "/admin/v1/tenants/acme/sync/pipelines", &body).await;
        assert_eq!(response.status(), 422, "{body}");
        let (_, _, got) = error_of(response).await;
        assert_eq!(got.as_deref(), Some(field), "{body}");
    }
    // A source whose connector lists no changes: a Unisender list is no source.
    let body = json!({"name": "p", "source_connection_id": s.unisender_id,
        "destination_connection_id": s.unisender_id, "list_id": s.list});
    let response = s.app.admin_send(reqwest::Method::POST, "/admin/v1/tenants/acme/sync/pipelines", &body).await;
    assert_eq!(response.status(), 422);
    assert_eq!(error_of(response).await.2.as_deref(), Some("source_connection_id"));
    let listed: Value = s.app.admin_get("/admin/v1/tenants/acme/sync/pipelines").await.json().await.unwrap();
    assert_eq!(listed["pipelines"], json!([]));
    vtiger.shutdown().await;
}

#[tokio::test]
async fn a_polled_vtiger_source_mirrors_into_unisender() {
    let unisender = spawn_unisender(UnisenderSimOptions::default()).await;
    let vtiger = spawn_vtiger(VtigerSimOptions::default()).await;
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let key = vtiger.sim().admin_access_key().to_owned();
    let source = app
        .create_connection(
            "acme",
            &json!({"name": "Vtiger", "kind": "vtiger", "host": vtiger.base_url(),
                "fields": {"username": "admin"}, "credentials": {"access_key": key}}),
        )
        .await;
    let dest = app
        .create_connection(
            "acme",
            &json!({"name": "Unisender", "kind": "unisender", "host": unisender.base_url(),
                "credentials": {"api_key": unisender.api_key()}}),
        )
        .await;
    let list = unisender.create_list("Vtiger contacts");
    vtiger.sim().insert_record("Contacts", [("firstname", "Ann"), ("lastname", "Lee"), ("email", "ann@example.com")]);
    let body = json!({"name": "vtiger", "source_connection_id": source, "destination_connection_id": dest,
        "list_id": list, "poll_secs": 30});
    let response = app.admin_send(reqwest::Method::POST, "/admin/v1/tenants/acme/sync/pipelines", &body).await;
    assert_eq!(response.status(), 201);
    settle(&app).await;
    assert_eq!(unisender.list_members(&list), ["ann@example.com"]);

    vtiger.sim().insert_record("Contacts", [("firstname", "Bob"), ("lastname", "Ray"), ("email", "bob@example.com")]);
    let (mut polls, mut reconciles) = (HashMap::new(), HashMap::new());
    let scheduled = crmhub_server::sync::schedule(app.store(), &mut polls, &mut reconciles).await.unwrap();
    assert_eq!(scheduled, 1);
    settle(&app).await;
    let members: BTreeSet<String> = unisender.list_members(&list).into_iter().collect();
    assert_eq!(members, BTreeSet::from(["ann@example.com".to_owned(), "bob@example.com".to_owned()]));
    assert_eq!(unisender.rows_received("ann@example.com"), 1, "the poll sends only what changed");
}

#[tokio::test]
async fn the_cli_runs_a_reconciliation_and_reports_progress_lines_off_a_terminal() {
    let s = setup().await;
    s.kommo.add_contact(person(1, &["cli@example.com"]));
    create_pipeline(&s, json!({})).await;
    settle(&s.app).await;
    let dir = s.app.dir.path().to_path_buf();
    let database = s.app.settings.database.url.clone();
    let run = move |args: &[&str]| {
        let mut command = crate::binary::crmhub();
        command.env("CRMHUB_DATA_DIR", &dir).env("CRMHUB_OUTBOUND__ALLOW_PRIVATE", "[\"127.0.0.1\"]");
        if !database.is_empty() {
            command.env("CRMHUB_DATABASE__URL", &database);
        }
        command.args(args).output().unwrap()
    };
    // The app's workers run the job; the CLI follows it.
    let output = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["sync", "run", "--tenant", "acme", "--pipeline", "main", "--kind", "reconcile", "--wait"])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("reconcile done: ")), "plain progress lines: {stderr}");
    assert!(!stderr.contains('\r'), "no bar off a terminal: {stderr:?}");
    let shown: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["status"], "done", "{shown}");
    let status =
        tokio::task::spawn_blocking(move || run(&["sync", "status", "--tenant", "acme", "--pipeline", "main"]))
            .await
            .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["runs"].as_array().unwrap().len(), 2, "{status}");
}

/// Resolves a pipeline's destination to the real Unisender list wrapped in a [`FlakyList`].
struct Flaky {
    imports: Arc<AtomicUsize>,
    fail_on: usize,
}

/// The real Unisender list, whose `fail_on`-th import (counted across the app) fails once with
/// `Unavailable`, as an outage in the middle of a backfill would.
struct FlakyList {
    inner: Arc<dyn SyncDestination>,
    imports: Arc<AtomicUsize>,
    fail_on: usize,
}

#[async_trait::async_trait]
impl DestinationResolver for Flaky {
    async fn destination(
        &self,
        store: &Store,
        connectors: &Connectors,
        tenant: &Tenant,
        connection: &Connection,
    ) -> Result<Arc<dyn SyncDestination>, AccessError> {
        let inner = UnisenderDestinations.destination(store, connectors, tenant, connection).await?;
        Ok(Arc::new(FlakyList { inner, imports: self.imports.clone(), fail_on: self.fail_on }))
    }
}

#[async_trait::async_trait]
impl SyncDestination for FlakyList {
    async fn import(&self, list_id: &str, rows: &[DestinationRow]) -> Result<ImportOutcome, CrmError> {
        if self.imports.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_on {
            return Err(CrmError::Unavailable("Unisender is down for maintenance".into()));
        }
        self.inner.import(list_id, rows).await
    }

    async fn exclude(&self, list_id: &str, email: &str) -> Result<(), CrmError> {
        self.inner.exclude(list_id, email).await
    }

    async fn export(&self, list_id: &str, offset: u64, limit: u64) -> Result<Vec<Option<String>>, CrmError> {
        self.inner.export(list_id, offset, limit).await
    }
}

#[tokio::test]
async fn a_backfill_interrupted_by_a_unisender_outage_resumes_from_its_checkpoint() {
    let imports = Arc::new(AtomicUsize::new(0));
    let s = setup_with(spawn().sync_destinations(Arc::new(Flaky { imports: imports.clone(), fail_on: 2 }))).await;
    let mut mine = BTreeSet::new();
    for n in 0..600 {
        let email = format!("bulk{n}@example.com");
        s.kommo.add_contact(person(n, &[&email]));
        mine.insert(email);
    }
    let pipeline = create_pipeline(&s, json!({})).await;
    settle(&s.app).await;
    let run_id = pipeline["backfill"]["id"].as_str().unwrap();
    let run: Value = s.app.admin_get(&format!("/admin/v1/tenants/acme/sync/runs/{run_id}")).await.json().await.unwrap();
    assert_eq!(run["status"], "done", "{run}");
    assert_eq!(run["errors"], 1, "the outage was met once: {run}");
    assert!(run["last_error"].as_str().unwrap().contains("maintenance"), "{run}");
    assert!(imports.load(Ordering::SeqCst) >= 4, "three pages and the failed attempt");
    let members: BTreeSet<String> = s.unisender.list_members(&s.list).into_iter().collect();
    assert_eq!(members, kommo_emails(&s.kommo), "every address arrived");
    // The failed import sent nothing, and the committed first page was not sent again.
    let twice: Vec<&String> = mine.iter().filter(|e| s.unisender.rows_received(e) != 1).collect();
    assert!(twice.is_empty(), "imported other than once: {twice:?}");
}

/// Records a delivery for these contacts as the webhook intake does, and runs its jobs.
async fn deliver(s: &Setup, ids: &[i64]) {
    let slug = crmhub_core::TenantSlug::parse("acme").unwrap();
    let tenant = s.app.store().tenants().by_slug(&slug).await.unwrap().id;
    let source = s.kommo_id.parse().unwrap();
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    let jobs = crmhub_server::sync::jobs_for_contacts(s.app.store(), tenant, source, &ids).await.unwrap();
    s.app
        .store()
        .sync(tenant)
        .record_delivery(source, "contacts[delete]", DeliveryStatus::Accepted, None, jobs)
        .await
        .unwrap();
    settle(&s.app).await;
}

#[tokio::test]
async fn a_shared_address_survives_one_deletion_and_the_delete_policy_deletes_it_with_the_last() {
    let s = setup().await;
    let first = s.kommo.add_contact(person(1, &["family@example.com", "mum@example.com"]));
    let second = s.kommo.add_contact(person(2, &["family@example.com"]));
    create_pipeline(&s, json!({"deletion": "delete"})).await;
    settle(&s.app).await;
    assert!(s.unisender.contact("family@example.com").is_some());

    s.kommo.delete_contact(first);
    deliver(&s, &[first]).await;
    let members = s.unisender.list_members(&s.list);
    assert!(members.contains(&"family@example.com".to_owned()), "still the second contact's: {members:?}");
    assert!(s.unisender.contact("mum@example.com").is_none(), "deleted account-wide");

    s.kommo.delete_contact(second);
    deliver(&s, &[second]).await;
    assert!(s.unisender.contact("family@example.com").is_none(), "the last holder gone, deleted");
}

#[tokio::test]
async fn the_exclude_policy_leaves_the_contact_in_the_account() {
    let s = setup().await;
    let id = s.kommo.add_contact(person(1, &["leaver@example.com"]));
    create_pipeline(&s, json!({})).await;
    settle(&s.app).await;
    s.kommo.delete_contact(id);
    deliver(&s, &[id]).await;
    assert!(!s.unisender.list_members(&s.list).contains(&"leaver@example.com".to_owned()));
    assert!(s.unisender.contact("leaver@example.com").is_some(), "excluded from the list only");
}

#[tokio::test]
async fn the_seed_endpoints_list_kommo_contacts_and_manage_unisender_contacts() {
    let s = setup().await;
    s.kommo.add_contact(person(1, &["findme@example.com"]));
    let base = "/admin/v1/tenants/acme/connections";
    let listed: Value = s.app.admin_get(&format!("{base}/{}/contacts", s.kommo_id)).await.json().await.unwrap();
    assert!(!listed["contacts"].as_array().unwrap().is_empty(), "{listed}");
    let found: Value =
        s.app.admin_get(&format!("{base}/{}/contacts?query=findme", s.kommo_id)).await.json().await.unwrap();
    assert_eq!(found["contacts"][0]["emails"], json!(["findme@example.com"]), "{found}");

    let path = format!("{base}/{}/unisender/contacts", s.unisender_id);
    let body = json!({"list_id": s.list, "email": "manual@example.com", "name": "Manual"});
    assert_eq!(s.app.admin_send(reqwest::Method::POST, &path, &body).await.status(), 201);
    let shown: Value = s.app.admin_get(&format!("{path}/manual@example.com")).await.json().await.unwrap();
    assert_eq!(shown["list_ids"], json!([s.list]), "{shown}");
    let role = json!({"list_id": s.list, "email": "info@example.com"});
    let refused = s.app.admin_send(reqwest::Method::POST, &path, &role).await;
    assert_eq!(refused.status(), 422);
    assert_eq!(s.app.admin_delete(&format!("{path}/manual@example.com?list_id={}", s.list)).await.status(), 204);
    assert!(s.unisender.list_members(&s.list).is_empty());
    assert_eq!(s.app.admin_get(&format!("{path}/nobody@example.com")).await.status(), 404);
    // A Kommo connection has no Unisender contacts.
    let wrong = s.app.admin_get(&format!("{base}/{}/unisender/contacts/x@example.com", s.kommo_id)).await;
    assert_ne!(wrong.status(), 200);
}

/// The webhook destination the app registers at the simulated Kommo, on the app's real address
/// (its public URL in tests names port 0).
async fn hook_url(s: &Setup) -> String {
    let path = format!("/admin/v1/tenants/acme/connections/{}/kommo/webhook", s.kommo_id);
    assert!(s.app.admin_send(reqwest::Method::PUT, &path, &json!({})).await.status().is_success());
    let destination = s.kommo.webhooks()[0].destination.clone();
    s.app.url(url::Url::parse(&destination).unwrap().path())
}

async fn post_hook(s: &Setup, url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = s
        .app
        .client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("user-agent", "amoCRM-WebHook-client/1.0")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

use crmhub_sim::kommo::DOCUMENTED_WEBHOOK_EXAMPLE as KOMMO_EXAMPLE;

#[tokio::test]
async fn kommos_documented_example_is_accepted_for_the_account_it_names() {
    let options = KommoSimOptions { subdomain: "test".into(), account_id: 32_720_107, ..KommoSimOptions::default() };
    let s = setup_on(spawn(), options).await;
    create_pipeline(&s, json!({})).await;
    settle(&s.app).await;
    let url = hook_url(&s).await;
    let (status, answer) = post_hook(&s, &url, KOMMO_EXAMPLE).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    assert_eq!(answer["jobs"], 1, "one contact, one pipeline: {answer}");
    // The job re-reads contact 17611273, which this account does not have: nothing to mirror.
    settle(&s.app).await;
}

#[tokio::test]
async fn a_change_in_kommo_arrives_once_though_its_webhook_came_three_times() {
    let s = setup().await;
    create_pipeline(&s, json!({})).await;
    settle(&s.app).await;
    let url = hook_url(&s).await;
    // The simulator delivers to the registered destination (port 0 here, so it fails) and keeps
    // the body it sent: that body, posted as Kommo would, three times (Kommo retries).
    let id = s.kommo.add_contact(person(7, &["hooked@example.com"]));
    assert!(s.kommo.settle_deliveries(std::time::Duration::from_secs(10)).await);
    let body = s.kommo.deliveries().last().unwrap().body.clone();
    assert!(body.contains(&id.to_string()));
    for _ in 0..3 {
        let (status, answer) = post_hook(&s, &url, body.clone()).await;
        assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    }
    settle(&s.app).await;
    assert!(s.unisender.list_members(&s.list).contains(&"hooked@example.com".to_owned()));
    assert_eq!(s.unisender.rows_received("hooked@example.com"), 1, "imported once");
}

#[tokio::test]
async fn deliveries_are_refused_or_quarantined_as_they_deserve_and_nothing_is_lost() {
    let s = setup().await;
    let url = hook_url(&s).await;
    let account = format!("account[id]={}&account[subdomain]=demo", s.kommo.account_id());

    // No pipeline yet: kept, to redrive once there is one.
    let early = format!("contacts[update][0][id]={}&{account}", s.kommo.contact_ids()[0]);
    let (status, answer) = post_hook(&s, &url, early).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("quarantined")), "{answer}");
    let early_id = answer["delivery"].as_str().unwrap().to_owned();
    create_pipeline(&s, json!({})).await;
    settle(&s.app).await;

    // Not ours: 404, and nothing recorded.
    let wrong_secret = format!("{}/{}", url.rsplit_once('/').unwrap().0, "x".repeat(43));
    assert_eq!(post_hook(&s, &wrong_secret, KOMMO_EXAMPLE).await.0, 404);
    let unknown = url.replace(&s.kommo_id, &crmhub_core::ConnectionId::new().to_string());
    assert_eq!(post_hook(&s, &unknown, KOMMO_EXAMPLE).await.0, 404);
    assert_eq!(post_hook(&s, &s.app.url("/hooks/kommo/not-a-uuid/secret"), KOMMO_EXAMPLE).await.0, 404);

    // Too large to read: 413 before anything is read.
    assert_eq!(post_hook(&s, &url, vec![b'a'; 5 * 1024 * 1024]).await.0, 413);

    // Authenticated but unusable: answered 200 (Kommo disables a failing webhook), kept.
    let many: String = (0..10_000).map(|i| format!("contacts[add][{i}][id]={}&", i + 1)).collect();
    let deep = format!("contacts{}=1&{account}", "[a]".repeat(50));
    let other_account = "contacts[add][0][id]=5&account[id]=1&account[subdomain]=elsewhere".to_owned();
    for body in ["this is not a webhook".to_owned(), many, deep, other_account] {
        let (status, answer) = post_hook(&s, &url, body).await;
        assert_eq!((status, answer["status"].as_str()), (200, Some("quarantined")), "{answer}");
    }
    // A huge index is one entry, not an allocation.
    let (status, answer) = post_hook(&s, &url, format!("contacts[add][99999999][id]=5&{account}")).await;
    assert_eq!((status, answer["jobs"].as_u64()), (200, Some(1)), "{answer}");

    let quarantined: Value =
        s.app.admin_get("/admin/v1/tenants/acme/sync/deliveries/quarantined").await.json().await.unwrap();
    let kept = quarantined["deliveries"].as_array().unwrap();
    assert_eq!(kept.len(), 5, "{quarantined}");
    assert!(kept.iter().all(|d| d["error"].as_str().is_some_and(|e| !e.is_empty())), "each says why");

    // The early one is usable now; an unreadable one stays where it is.
    let redrive = format!("/admin/v1/tenants/acme/sync/deliveries/{early_id}/redrive");
    let redriven: Value = s.app.admin_send(reqwest::Method::POST, &redrive, &json!({})).await.json().await.unwrap();
    assert_eq!((redriven["status"].as_str(), redriven["jobs"].as_u64()), (Some("redriven"), Some(1)), "{redriven}");
    let unreadable = kept.iter().find(|d| d["body"] == "this is not a webhook").unwrap()["id"].as_str().unwrap();
    let again = format!("/admin/v1/tenants/acme/sync/deliveries/{unreadable}/redrive");
    assert_eq!(s.app.admin_send(reqwest::Method::POST, &again, &json!({})).await.status(), 422);
    settle(&s.app).await;
}
