//! Contact sync end to end: Kommo (simulator, connected through a widget install) → Unisender
//! (simulator) through the admin API, the job queue and the real connectors; and a Vtiger
//! source polled through its change feed.

use std::collections::{BTreeSet, HashMap};

use crmhub_sim::kommo::{KommoSim, KommoSimOptions, SimContact, spawn as spawn_kommo};
use crmhub_sim::unisender::{UnisenderSim, UnisenderSimOptions, spawn as spawn_unisender};
use crmhub_sim::vtiger::{VtigerSimOptions, spawn as spawn_vtiger};
use crmhub_store::sync::DeliveryStatus;
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_of, spawn_app};

struct Setup {
    app: TestApp,
    kommo: KommoSim,
    unisender: UnisenderSim,
    kommo_id: String,
    unisender_id: String,
    list: String,
}

async fn setup() -> Setup {
    let kommo = spawn_kommo(KommoSimOptions::default()).await;
    let unisender = spawn_unisender(UnisenderSimOptions::default()).await;
    let app = spawn_app().await;
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
