//! End to end against the Kommo simulator: start → Kommo's consent redirect → callback → the
//! `kommo.connect` job → an active connection that searches; and a widget install.

use crmhub_core::ConnectionStatus;
use crmhub_sim::kommo::{KommoSimOptions, spawn as spawn_kommo};
use serde_json::{Value, json};

use std::sync::Arc;
use std::time::Duration;

use crmhub_connectors::auth::SharedAuth;
use crmhub_connectors::http::{HttpClient, Lane, OutboundMetrics};
use crmhub_connectors::{ConnectionSpec, Connectors};
use crmhub_core::clock::ManualClock;
use crmhub_core::request_log::{RequestLogEntry, RequestLogSink};
use crmhub_core::{ConnectionId, ConnectorKind};

use crate::helpers::{TestApp, spawn, spawn_app, tenant_id};

async fn connected_app() -> (TestApp, crmhub_sim::kommo::KommoSim, String) {
    let sim = spawn_kommo(KommoSimOptions::default()).await;
    let app = spawn_app().await;
    with_connection(app, sim).await
}

/// An app and a simulator on one manual clock (token lifetimes are read on it), connected.
async fn connected_on_clock() -> (TestApp, crmhub_sim::kommo::KommoSim, String, ManualClock) {
    let clock = ManualClock::new(1_767_225_600_000);
    let sim = spawn_kommo(KommoSimOptions { clock: Arc::new(clock.clone()), ..KommoSimOptions::default() }).await;
    let app = spawn().clock(Arc::new(clock.clone())).start().await;
    let (app, sim, id) = with_connection(app, sim).await;
    let path = format!("/admin/v1/tenants/acme/connections/{id}/oauth/start");
    let started: Value = app.admin_send(reqwest::Method::POST, &path, &json!({})).await.json().await.unwrap();
    assert_eq!(consent(&app, &sim, started["authorize_url"].as_str().unwrap()).await, 200);
    settle(&app).await;
    (app, sim, id, clock)
}

async fn with_connection(
    app: TestApp,
    sim: crmhub_sim::kommo::KommoSim,
) -> (TestApp, crmhub_sim::kommo::KommoSim, String) {
    app.create_tenant("acme").await;
    // What crmhub sends as its redirect URI (its public URL, here with the unbound port 0);
    // `consent` takes the redirect to this app's real address.
    let redirect = app.state.settings.public_url().unwrap().join("/oauth/kommo/callback").unwrap();
    sim.set_redirect_uri(redirect.as_str());
    let integration = sim.integration();
    let id = app
        .create_connection(
            "acme",
            &json!({"name": "Kommo", "kind": "kommo", "host": sim.base_url(),
                "fields": {"account": sim.account_domain()},
                "credentials": {"client_id": integration.client_id, "client_secret": integration.client_secret}}),
        )
        .await;
    (app, sim, id)
}

/// Follows Kommo's consent redirect to crmhub's callback; returns the callback's status.
async fn consent(app: &TestApp, sim: &crmhub_sim::kommo::KommoSim, authorize_url: &str) -> u16 {
    let authorize = url::Url::parse(authorize_url).unwrap();
    let at_sim = format!("{}/oauth?{}", sim.base_url(), authorize.query().unwrap());
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = no_redirects.get(at_sim).send().await.unwrap();
    assert!(response.status().is_redirection(), "{}", response.status());
    let callback = response.headers()["location"].to_str().unwrap().to_owned();
    let callback = to_app(app, &callback);
    app.client.get(callback).send().await.unwrap().status().as_u16()
}

/// A callback URL Kommo would send the browser to, on this app's real address.
fn to_app(app: &TestApp, callback: &str) -> String {
    let url = url::Url::parse(callback).unwrap();
    assert_eq!(url.path(), "/oauth/kommo/callback", "{callback}");
    app.url(&format!("{}?{}", url.path(), url.query().unwrap_or_default()))
}

#[tokio::test]
async fn a_kommo_account_connects_through_oauth_and_searches() {
    let (app, sim, id) = connected_app().await;
    let path = format!("/admin/v1/tenants/acme/connections/{id}/oauth/start");
    let started: Value = app.admin_send(reqwest::Method::POST, &path, &json!({})).await.json().await.unwrap();
    assert_eq!(consent(&app, &sim, started["authorize_url"].as_str().unwrap()).await, 200);
    settle(&app).await;
    assert_eq!(sim.token_calls("authorization_code"), 1);

    let connection: Value = app.get_connection("acme", &id).await.json().await.unwrap();
    assert_eq!(connection["status"], "active", "{connection}");
    assert_eq!(connection["fields"]["account_id"], sim.account_id());
    let tested: Value = app
        .admin_send(reqwest::Method::POST, &format!("/admin/v1/tenants/acme/connections/{id}/test"), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tested["ok"], true, "{tested}");
}

#[tokio::test]
async fn a_declined_consent_needs_reauth_and_a_widget_install_connects() {
    let (app, sim, id) = connected_app().await;
    sim.set_consent(crmhub_sim::kommo::Consent::Deny);
    let path = format!("/admin/v1/tenants/acme/connections/{id}/oauth/start");
    let started: Value = app.admin_send(reqwest::Method::POST, &path, &json!({})).await.json().await.unwrap();
    assert_eq!(consent(&app, &sim, started["authorize_url"].as_str().unwrap()).await, 200);
    let connection: Value = app.get_connection("acme", &id).await.json().await.unwrap();
    assert_eq!(connection["status"], ConnectionStatus::NeedsReauth.as_str(), "{connection}");
    assert_eq!(sim.token_calls("authorization_code"), 0);

    let status = app.client.get(to_app(&app, &sim.widget_install_callback())).send().await.unwrap().status();
    assert_eq!(status, 200);
    settle(&app).await;
    let connection: Value = app.get_connection("acme", &id).await.json().await.unwrap();
    assert_eq!(connection["status"], "active", "{connection}");
    assert_eq!(sim.token_calls("authorization_code"), 1);
}

/// Waits until the app's workers (or a drain) have run every job.
async fn settle(app: &TestApp) {
    for _ in 0..250 {
        let report = app.drain_jobs().await;
        assert_eq!(report.dead, 0, "{report:?}");
        if report.pending == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("jobs still pending");
}

/// A request log that keeps nothing (the second worker's).
#[derive(Debug)]
struct NoLog;

impl RequestLogSink for NoLog {
    fn record(&self, _entry: RequestLogEntry) {}
}

/// Another worker process on the same database: its own HTTP client, its own in-memory
/// sessions and locks, the store's shared state and cross-instance lock.
async fn second_worker(app: &TestApp, clock: &ManualClock) -> Connectors {
    let store = crmhub_store::Store::open(app.settings.store_options(Arc::new(clock.clone())).unwrap()).await.unwrap();
    let http = HttpClient::new(
        app.settings.outbound_policy().unwrap(),
        OutboundMetrics::new(),
        Arc::new(NoLog),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let redirect = app.settings.public_url().unwrap().join("/oauth/kommo/callback").unwrap();
    Connectors::new(http, SharedAuth::new(Arc::new(store))).with_kommo_redirect_uri(redirect)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_refreshing_at_once_make_one_refresh_call() {
    let (app, sim, id, clock) = connected_on_clock().await;
    let tenant = tenant_id(&app.admin_get("/admin/v1/tenants/acme").await.json().await.unwrap());
    let connection_id: ConnectionId = id.parse().unwrap();
    let connection = app.store().connections(tenant).get(connection_id).await.unwrap();
    let credentials = app.store().connections(tenant).credentials(connection_id).await.unwrap();
    let spec = ConnectionSpec {
        tenant,
        id: connection_id,
        kind: &ConnectorKind::Kommo,
        host: &connection.host,
        fields: &connection.fields,
        credentials: &credentials,
        region: None,
        template: None,
    };
    let workers = [second_worker(&app, &clock).await, second_worker(&app, &clock).await];
    let accounts: Vec<_> = workers.iter().map(|w| w.kommo(spec, Lane::Background).unwrap()).collect();
    clock.advance(Duration::from_secs(23 * 3600));
    let (a, b) = tokio::join!(
        accounts[0].refresh_if_expiring(Duration::from_secs(2 * 3600)),
        accounts[1].refresh_if_expiring(Duration::from_secs(2 * 3600))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(sim.token_calls("refresh_token"), 1, "one refresh reached Kommo");
    assert!(a.is_some() != b.is_some() || a == b, "one refreshed, the other found it done: {a:?} {b:?}");
    // The app itself uses the new pair: no invalid_grant anywhere.
    let tested: Value = app
        .admin_send(reqwest::Method::POST, &format!("/admin/v1/tenants/acme/connections/{id}/test"), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tested["ok"], true, "{tested}");
    assert_eq!(sim.token_calls("refresh_token"), 1);
}

#[tokio::test]
async fn the_refresh_job_runs_ahead_of_expiry_and_a_revoked_grant_needs_reauth() {
    let (app, sim, id, clock) = connected_on_clock().await;
    assert_eq!(crmhub_server::kommo::schedule_refreshes(app.store()).await.unwrap(), 1);
    settle(&app).await;
    assert_eq!(sim.token_calls("refresh_token"), 0, "a fresh token is left alone");
    clock.advance(Duration::from_secs(23 * 3600));
    crmhub_server::kommo::schedule_refreshes(app.store()).await.unwrap();
    settle(&app).await;
    for _ in 0..250 {
        if sim.token_calls("refresh_token") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sim.token_calls("refresh_token"), 1, "refreshed within two hours of expiry");

    sim.revoke_grant();
    clock.advance(Duration::from_secs(23 * 3600));
    crmhub_server::kommo::schedule_refreshes(app.store()).await.unwrap();
    // The app's own workers may have claimed the job: wait for its outcome, not the queue.
    let mut connection = Value::Null;
    for _ in 0..250 {
        app.drain_jobs().await;
        connection = app.get_connection("acme", &id).await.json().await.unwrap();
        if connection["status"] == "needs_reauth" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(connection["status"], "needs_reauth", "{connection}");
    assert!(connection["last_error"].as_str().unwrap_or_default().contains("connect again"), "{connection}");
    assert_eq!(sim.token_calls("refresh_token"), 2, "one refused refresh, no retry loop");
    assert_eq!(
        crmhub_server::kommo::schedule_refreshes(app.store()).await.unwrap(),
        0,
        "a connection that needs reauth is not refreshed"
    );
}

#[tokio::test]
async fn the_webhook_destination_is_registered_rotated_and_removed_at_kommo() {
    let (app, sim, id, _clock) = connected_on_clock().await;
    let path = format!("/admin/v1/tenants/acme/connections/{id}/kommo/webhook");
    let registered = app.admin_send(reqwest::Method::PUT, &path, &json!({})).await;
    assert!(registered.status().is_success(), "{}", registered.status());
    let registered: Value = registered.json().await.unwrap();
    let hooks = sim.webhooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let destination = hooks[0].destination.clone();
    assert!(destination.contains(&format!("/hooks/kommo/{id}/")), "{destination}");
    let secret = destination.rsplit('/').next().unwrap();
    assert!(secret.len() >= 32, "{destination}");
    assert!(!registered.to_string().contains(secret), "the answer hides the secret: {registered}");
    assert_eq!(hooks[0].settings, crmhub_connectors::kommo::WEBHOOK_EVENTS);

    let rotated = app.admin_send(reqwest::Method::POST, &format!("{path}/rotate"), &json!({})).await;
    assert!(rotated.status().is_success(), "{}", rotated.status());
    let hooks = sim.webhooks();
    assert_eq!(hooks.len(), 1, "the old destination is gone: {hooks:?}");
    assert_ne!(hooks[0].destination, destination);

    assert!(app.admin_delete(&path).await.status().is_success());
    assert!(sim.webhooks().is_empty());

    // Deleting the connection unregisters a destination it still has.
    app.admin_send(reqwest::Method::PUT, &path, &json!({})).await;
    assert_eq!(sim.webhooks().len(), 1);
    assert!(app.admin_delete(&format!("/admin/v1/tenants/acme/connections/{id}")).await.status().is_success());
    assert!(sim.webhooks().is_empty());
}

#[tokio::test]
async fn a_403_fails_the_hosts_connections_until_the_pause_ends() {
    let (app, sim, id, clock) = connected_on_clock().await;
    sim.block_ip(Duration::from_secs(3600));
    let test = format!("/admin/v1/tenants/acme/connections/{id}/test");
    let tested: Value = app.admin_send(reqwest::Method::POST, &test, &json!({})).await.json().await.unwrap();
    assert_eq!(tested["ok"], false, "{tested}");
    let before = sim.api_request_times().len();
    // The listener's store update runs on its own task.
    let mut connection = Value::Null;
    for _ in 0..100 {
        connection = app.get_connection("acme", &id).await.json().await.unwrap();
        if connection["last_error"].as_str().is_some_and(|e| e.contains("paused until")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(connection["status"], "failing", "{connection}");
    assert!(connection["last_error"].as_str().unwrap().contains("403"), "{connection}");
    let again: Value = app.admin_send(reqwest::Method::POST, &test, &json!({})).await.json().await.unwrap();
    assert_eq!(again["ok"], false);
    assert_eq!(sim.api_request_times().len(), before, "nothing is sent to a paused host");

    sim.unblock_ip();
    clock.advance(Duration::from_secs(app.settings.kommo.ip_block_pause_secs + 1));
    settle(&app).await;
    let connection: Value = app.get_connection("acme", &id).await.json().await.unwrap();
    assert_eq!(connection["status"], "active", "the pause ended by itself: {connection}");
}
