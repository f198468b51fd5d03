//! End to end against the Kommo simulator: start → Kommo's consent redirect → callback → the
//! `kommo.connect` job → an active connection that searches; and a widget install.

use crmhub_core::ConnectionStatus;
use crmhub_sim::kommo::{KommoSimOptions, spawn as spawn_kommo};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

async fn connected_app() -> (TestApp, crmhub_sim::kommo::KommoSim, String) {
    let sim = spawn_kommo(KommoSimOptions::default()).await;
    let app = spawn_app().await;
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
