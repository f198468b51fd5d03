//! Connecting a Kommo account: `oauth/start`, and the public callback up to the durable
//! `kommo.connect` job. Each refused callback shows its reason and changes nothing.

use std::sync::Arc;
use std::time::Duration;

use crmhub_core::clock::{Clock, ManualClock, SystemClock};
use crmhub_core::{ConnectionId, ConnectionName, ConnectionStatus, ConnectorKind, Credentials, Host, Secret, TenantId};
use crmhub_store::connections::NewConnection;
use crmhub_store::jobs::{JobFilter, JobRecord};
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_of, spawn, tenant_id};

pub const CLIENT_ID: &str = "0f1e2d3c-kommo-client";
pub const CLIENT_SECRET: &str = "kommo-client-secret-9a8b7c";
pub const ACCOUNT: &str = "demo.kommo.com";

pub struct KommoApp {
    pub app: TestApp,
    pub clock: ManualClock,
    pub tenant: TenantId,
    pub connection: ConnectionId,
}

/// A kommo OAuth connection made through the store (the admin API checks it with the
/// connector), on a manual clock.
pub async fn kommo_app() -> KommoApp {
    let clock = ManualClock::new(SystemClock.now_millis());
    let app = spawn().clock(Arc::new(clock.clone())).start().await;
    let tenant = tenant_id(&app.create_tenant("acme").await);
    let connection = add_connection(&app, tenant, "Kommo", "https://demo.kommo.com", oauth_credentials()).await;
    KommoApp { app, clock, tenant, connection }
}

pub fn oauth_credentials() -> Credentials {
    [("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Secret::new(v)))
        .collect()
}

pub async fn add_connection(
    app: &TestApp,
    tenant: TenantId,
    name: &str,
    host: &str,
    credentials: Credentials,
) -> ConnectionId {
    app.store()
        .connections(tenant)
        .create(NewConnection {
            name: ConnectionName::parse(name).unwrap(),
            kind: ConnectorKind::Kommo,
            host: Host::parse(host).unwrap(),
            fields: Default::default(),
            credentials,
            template_version: None,
            details: Default::default(),
        })
        .await
        .unwrap()
        .id
}

impl KommoApp {
    pub async fn start(&self, body: Option<Value>) -> reqwest::Response {
        let path = format!("/admin/v1/tenants/acme/connections/{}/oauth/start", self.connection);
        match body {
            Some(body) => self.app.admin_send(reqwest::Method::POST, &path, &body).await,
            None => {
                self.app.client.post(self.app.url(&path)).bearer_auth(crate::helpers::ADMIN_TOKEN).send().await.unwrap()
            }
        }
    }

    /// Starts an authorisation and returns its state.
    pub async fn state(&self) -> String {
        let response = self.start(None).await;
        assert_eq!(response.status(), 201);
        let answer: Value = response.json().await.unwrap();
        let url = url::Url::parse(answer["authorize_url"].as_str().unwrap()).unwrap();
        url.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned()
    }

    pub async fn callback(&self, query: &[(&str, &str)]) -> (u16, String) {
        let response = self.app.client.get(self.app.url("/oauth/kommo/callback")).query(query).send().await.unwrap();
        let status = response.status().as_u16();
        assert!(
            response.headers()["content-type"].to_str().unwrap().starts_with("text/html"),
            "the callback answers the browser with a page"
        );
        (status, response.text().await.unwrap())
    }

    pub async fn jobs(&self) -> Vec<JobRecord> {
        let filter = JobFilter { tenant: Some(self.tenant), kind: Some("kommo.connect".into()), ..Default::default() };
        self.app.store().jobs().list(&filter).await.unwrap()
    }

    pub async fn status(&self) -> (ConnectionStatus, Option<String>) {
        let connection = self.app.store().connections(self.tenant).get(self.connection).await.unwrap();
        (connection.status, connection.last_error)
    }
}

fn good<'a>(state: &'a str, code: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("code", code), ("state", state), ("referer", ACCOUNT), ("client_id", CLIENT_ID)]
}

#[tokio::test]
async fn start_answers_the_kommo_url_with_a_state_good_for_twenty_minutes() {
    let k = kommo_app().await;
    let response = k.start(Some(json!({"mode": "post_message"}))).await;
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.unwrap();
    let url = url::Url::parse(answer["authorize_url"].as_str().unwrap()).unwrap();
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(query["mode"], "post_message");
    assert!(query["state"].len() >= 43, "a 256-bit state");
    assert_eq!(answer["expires_at"], k.clock.now_millis() + 20 * 60 * 1000);
    assert!(!answer.to_string().contains(CLIENT_SECRET));

    let response = k.start(Some(json!({"mode": "redirect"}))).await;
    let (code, _, field) = error_of(response).await;
    assert_eq!((code.as_str(), field.as_deref()), ("invalid_field", Some("mode")));
}

#[tokio::test]
async fn start_is_refused_for_a_long_lived_token_connection_and_another_kind() {
    let k = kommo_app().await;
    let token = [("long_lived_token".to_owned(), Secret::new("llt"))].into_iter().collect();
    let llt = add_connection(&k.app, k.tenant, "LLT", "https://demo.kommo.com", token).await;
    let path = format!("/admin/v1/tenants/acme/connections/{llt}/oauth/start");
    let response = k.app.admin_send(reqwest::Method::POST, &path, &json!({})).await;
    assert_eq!(response.status(), 422);
    let (_, message, _) = error_of(response).await;
    assert!(message.contains("long-lived token"), "{message}");

    let vtiger = k
        .app
        .create_connection(
            "acme",
            &json!({"name": "V", "kind": "vtiger", "host": "crm.example.com",
                "fields": {"username": "admin"}, "credentials": {"access_key": "k"}}),
        )
        .await;
    let path = format!("/admin/v1/tenants/acme/connections/{vtiger}/oauth/start");
    let response = k.app.admin_send(reqwest::Method::POST, &path, &json!({})).await;
    assert_eq!(response.status(), 422);
    let (_, message, _) = error_of(response).await;
    assert!(message.contains("kommo connection"), "{message}");
}

#[tokio::test]
async fn an_accepted_callback_enqueues_the_exchange_with_the_code_sealed() {
    let k = kommo_app().await;
    let response = k.start(Some(json!({"mode": "post_message"}))).await;
    let answer: Value = response.json().await.unwrap();
    let url = url::Url::parse(answer["authorize_url"].as_str().unwrap()).unwrap();
    let state = url.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let code = "def50200-the-authorisation-code-4f3e";
    let started = std::time::Instant::now();
    let (status, page) = k.callback(&good(&state, code)).await;
    assert_eq!(status, 200, "{page}");
    assert!(started.elapsed() < Duration::from_secs(2), "the callback answers at once");
    assert!(page.contains("window.opener") && page.contains("window.close()"), "{page}");

    let jobs = k.jobs().await;
    assert_eq!(jobs.len(), 1);
    let payload = jobs[0].payload.to_string();
    assert!(!payload.contains(code), "no plaintext code in the job: {payload}");
    assert!(jobs[0].payload["code_sealed"].as_str().unwrap().starts_with("v1."));
    assert_eq!(jobs[0].payload["connection_id"], k.connection.to_string());
    let sealed = jobs[0].payload["code_sealed"].as_str().unwrap();
    assert_eq!(k.app.store().kommo(k.tenant).open_code(k.connection, sealed).unwrap().expose(), code);
}

#[tokio::test]
async fn a_callback_with_an_unknown_state_is_refused() {
    let k = kommo_app().await;
    let (status, page) = k.callback(&good("not-a-state-we-made", "code-1")).await;
    assert_eq!(status, 400);
    assert!(page.contains("the state is unknown"), "{page}");
    let (status, page) = k.callback(&[("code", "code-1"), ("referer", ACCOUNT), ("client_id", CLIENT_ID)]).await;
    assert_eq!(status, 400);
    assert!(page.contains("no state"), "{page}");
    assert!(k.jobs().await.is_empty());
    assert_eq!(k.status().await, (ConnectionStatus::Active, None));
}

#[tokio::test]
async fn a_callback_with_an_expired_state_is_refused() {
    let k = kommo_app().await;
    let state = k.state().await;
    k.clock.advance(Duration::from_secs(20 * 60));
    let (status, page) = k.callback(&good(&state, "code-1")).await;
    assert_eq!(status, 400);
    assert!(page.contains("expired"), "{page}");
    assert!(k.jobs().await.is_empty());
    // The code was not spent either: a fresh state brings it through.
    let state = k.state().await;
    assert_eq!(k.callback(&good(&state, "code-1")).await.0, 200);
}

#[tokio::test]
async fn a_reused_state_is_refused() {
    let k = kommo_app().await;
    let state = k.state().await;
    assert_eq!(k.callback(&good(&state, "code-1")).await.0, 200);
    let (status, page) = k.callback(&good(&state, "code-2")).await;
    assert_eq!(status, 400);
    assert!(page.contains("already used"), "{page}");
    assert_eq!(k.jobs().await.len(), 1, "only the first callback's job");
}

#[tokio::test]
async fn a_foreign_referer_is_refused_and_nothing_is_sent() {
    let k = kommo_app().await;
    for referer in ["kommo.com.evil.test", "evilkommo.com", "other.kommo.com", "www.kommo.com", ""] {
        let state = k.state().await;
        let query = [("code", "code-1"), ("state", &state), ("referer", referer), ("client_id", CLIENT_ID)];
        let (status, page) = k.callback(&query).await;
        assert_eq!(status, 400, "{referer}");
        assert!(page.contains("Kommo account"), "{referer}: {page}");
        assert!(!page.contains("evil"), "the page does not repeat the referer: {page}");
    }
    assert!(k.jobs().await.is_empty(), "no exchange: the client secret goes nowhere");
    assert_eq!(k.status().await, (ConnectionStatus::Active, None));
}

#[tokio::test]
async fn another_integrations_client_id_is_refused() {
    let k = kommo_app().await;
    let state = k.state().await;
    let query = [("code", "code-1"), ("state", &state), ("referer", ACCOUNT), ("client_id", "someone-else")];
    let (status, page) = k.callback(&query).await;
    assert_eq!(status, 400);
    assert!(page.contains("client_id"), "{page}");
    assert!(k.jobs().await.is_empty());
}

#[tokio::test]
async fn a_replayed_code_is_refused() {
    let k = kommo_app().await;
    let state = k.state().await;
    assert_eq!(k.callback(&good(&state, "code-1")).await.0, 200);
    let state = k.state().await;
    let (status, page) = k.callback(&good(&state, "code-1")).await;
    assert_eq!(status, 400);
    assert!(page.contains("already used (a replay)"), "{page}");
    assert_eq!(k.jobs().await.len(), 1);
}

#[tokio::test]
async fn a_declined_authorisation_marks_the_connection_needs_reauth() {
    let k = kommo_app().await;
    let state = k.state().await;
    let (status, page) = k.callback(&[("error", "access_denied"), ("state", &state), ("client_id", CLIENT_ID)]).await;
    assert_eq!(status, 200);
    assert!(page.contains("declined"), "{page}");
    assert_eq!(k.status().await, (ConnectionStatus::NeedsReauth, Some("the Kommo user declined access".into())));
    assert!(k.jobs().await.is_empty());
}

#[tokio::test]
async fn a_widget_install_is_matched_by_integration_and_account() {
    let k = kommo_app().await;
    // Another tenant's connection to another account with the same integration.
    let globex = tenant_id(&k.app.create_tenant("globex").await);
    let other = add_connection(&k.app, globex, "Kommo", "https://other.kommo.com", oauth_credentials()).await;

    let install = |referer: &'static str, client: &'static str| {
        vec![("code", "widget-code-1"), ("referer", referer), ("client_id", client), ("from_widget", "1")]
    };
    let (status, page) = k.callback(&install(ACCOUNT, "unknown-client")).await;
    assert_eq!(status, 400, "{page}");
    let (status, _) = k.callback(&install("kommo.com.evil.test", CLIENT_ID)).await;
    assert_eq!(status, 400);
    assert!(k.jobs().await.is_empty());

    let (status, page) = k.callback(&install(ACCOUNT, CLIENT_ID)).await;
    assert_eq!(status, 200, "{page}");
    let jobs = k.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].payload["connection_id"], k.connection.to_string());
    assert_ne!(jobs[0].payload["connection_id"], other.to_string());
}
