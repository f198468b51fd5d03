//! A CRM that echoes the request in its errors (as many do, for "debugging"): the credential
//! it echoes must not reach `connections.last_error`, the admin API, the CLI or a run-by-name
//! answer. And a connection test that sent nothing must not pass.

use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use reqwest::Method;
use serde_json::{Value, json};

use crate::binary::crmhub;
use crate::helpers::{CARD_ONLY_TEMPLATE, spawn_app};

const API_KEY: &str = "qk-8c1d0e6f22ab47";
const TOKEN: &str = "hdr-5b7e9a3c1f0d";
const BASIC: &str = "YWRtaW46aHVudGVyMg==";

/// A CRM whose every answer is a 400 quoting the request: URL and headers.
async fn echoing_crm() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let echo = |request: Request| async move {
        let headers: Vec<String> =
            request.headers().iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or_default())).collect();
        let message = format!("bad request {} {} [{}]", request.method(), request.uri(), headers.join("; "));
        (axum::http::StatusCode::BAD_REQUEST, axum::Json(json!({"error": {"code": "bad_request", "message": message}})))
            .into_response()
    };
    tokio::spawn(async move { axum::serve(listener, Router::new().fallback(echo)).await });
    base
}

const ECHO_TEMPLATE: &str = r#"
name: echo-crm
type: crm
fields:
  - { name: api_key, secret: true, required: true }
  - { name: token, secret: true, required: true }
  - { name: basic, secret: true, required: true }
errors:
  when: { pointer: /error/code, equals: [bad_request] }
  code: /error/code
  message: /error/message
contact: { id: /id, name: /name }
endpoints:
  - name: search
    kind: get_data
    trigger: contact.search
    url: "{{host}}/contacts"
    parameters:
      - { name: api_key, kind: query, value: "{{credential.api_key}}" }
      - { name: X-Token, kind: header, value: "{{credential.token}}" }
      - { name: Authorization, kind: header, value: "Basic {{credential.basic}}" }
      - { name: q, kind: query, value: "{{input.query}}" }
    response: { records: /data }
"#;

fn assert_clean(what: &str, text: &str) {
    for secret in [API_KEY, TOKEN, BASIC] {
        assert!(!text.contains(secret), "{what} carries {secret}: {text}");
    }
}

#[tokio::test]
async fn credentials_a_crm_echoes_in_its_errors_are_masked_everywhere() {
    let crm = echoing_crm().await;
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.publish_template(ECHO_TEMPLATE).await;
    let body = json!({"name": "Echo", "kind": "template:echo-crm", "host": crm,
                      "credentials": {"api_key": API_KEY, "token": TOKEN, "basic": BASIC}});
    let id = app.create_connection("acme", &body).await;

    let test = format!("/admin/v1/tenants/acme/connections/{id}/test");
    let report: Value = app.admin_send(Method::POST, &test, &json!({})).await.json().await.unwrap();
    assert_eq!(report["ok"], false, "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("bad request GET /contacts") && error.contains("[redacted]"), "{error}");
    assert_clean("the test report", error);

    let shown = app.get_connection("acme", &id).await.text().await.unwrap();
    assert!(shown.contains("bad request GET"), "last_error is kept: {shown}");
    assert_clean("GET connection", &shown);
    let listed = app.admin_get("/admin/v1/tenants/acme/connections").await.text().await.unwrap();
    assert_clean("the connection list", &listed);

    let run = format!("/admin/v1/tenants/acme/connections/{id}/endpoints/search");
    let answer = app.admin_send(Method::POST, &run, &json!({"query": "x"})).await;
    let status = answer.status();
    let answer = answer.text().await.unwrap();
    // The CRM called the request bad, so the answer is a 422 naming it.
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("bad request GET"), "{answer}");
    assert_clean("the run-by-name answer", &answer);

    let data_dir = app.dir.path().to_path_buf();
    let database = app.settings.database.url.clone();
    let stopped = app.stop().await;
    for args in [vec!["connection", "show", "--tenant", "acme", &id], vec!["connection", "list", "--tenant", "acme"]] {
        let output = crmhub()
            .env("CRMHUB_DATA_DIR", &data_dir)
            .env("CRMHUB_DATABASE_URL", &database)
            .args(&args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        assert_clean(&format!("crmhub {args:?}"), &String::from_utf8_lossy(&output.stdout));
    }
    drop(stopped);
}

#[tokio::test]
async fn a_template_test_that_reaches_nothing_does_not_pass() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.publish_template(CARD_ONLY_TEMPLATE).await;
    // A host the address policy refuses: a test that passes here never contacted it.
    let body = json!({"name": "Deaf", "kind": "template:card-only", "host": "http://10.0.0.1", "credentials": {"token": "t0k3n-value"}});
    let id = app.create_connection("acme", &body).await;
    let test = format!("/admin/v1/tenants/acme/connections/{id}/test");
    let report: Value = app.admin_send(Method::POST, &test, &json!({})).await.json().await.unwrap();
    assert_eq!(report["ok"], false, "{report}");
    assert!(report["error"].as_str().unwrap().starts_with("not checked: "), "{report}");
    assert_eq!(report["status"], "active", "not the CRM's failure: the status is left alone");

    // With a search endpoint, the test sends it, and the address policy refuses the host.
    app.publish_template(ECHO_TEMPLATE).await;
    let body = json!({"name": "Echo", "kind": "template:echo-crm", "host": "http://10.0.0.1",
                      "credentials": {"api_key": API_KEY, "token": TOKEN, "basic": BASIC}});
    let id = app.create_connection("acme", &body).await;
    let test = format!("/admin/v1/tenants/acme/connections/{id}/test");
    let report: Value = app.admin_send(Method::POST, &test, &json!({})).await.json().await.unwrap();
    assert_eq!(report["ok"], false, "{report}");
    assert!(!report["error"].as_str().unwrap().starts_with("not checked"), "{report}");
}
