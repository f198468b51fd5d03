//! `POST …/connections/{id}/test` and `crmhub connection test` against the Vtiger simulator.

use crmhub_sim::vtiger::{Fault, VtigerSimOptions, spawn};
use serde_json::{Value, json};

use crate::binary::crmhub;
use crate::helpers::spawn_app;

const KEY: &str = "sim-access-key-0001";

async fn vtiger_connection(app: &crate::helpers::TestApp, base_url: &str, key: &str) -> String {
    let body = json!({"name": format!("Vtiger {key}"), "kind": "vtiger", "host": base_url,
                      "fields": {"username": "admin"}, "credentials": {"access_key": key}});
    let response = app.post_connection("acme", &body).await;
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_working_connection_reports_its_capabilities() {
    let sim = spawn(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let id = vtiger_connection(&app, &sim.base_url(), KEY).await;
    let path = format!("/admin/v1/tenants/acme/connections/{id}/test");
    let response = app.admin_send(reqwest::Method::POST, &path, &json!({})).await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["capabilities"].as_array().unwrap().contains(&json!("contact.search")));
    assert_eq!(report["status"], "active");
    assert_eq!(report["error"], Value::Null);
    assert_eq!(sim.login_count("admin"), 1);
    assert_eq!(sim.operation_count("describe"), 1);

    // The calls reach the connection's request log (written in the background), redacted.
    let log = app.wait_for_request_log(&id, 3).await;
    let requests = log["requests"].as_array().unwrap();
    assert!(requests.len() >= 3, "getchallenge, login, describe: {log}");
    assert!(!log.to_string().contains(KEY));
}

#[tokio::test]
async fn refused_credentials_mark_the_connection_for_reauthentication() {
    let sim = spawn(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let id = vtiger_connection(&app, &sim.base_url(), "wrong-key").await;
    let path = format!("/admin/v1/tenants/acme/connections/{id}/test");
    let report: Value = app.admin_send(reqwest::Method::POST, &path, &json!({})).await.json().await.unwrap();
    assert_eq!((report["ok"].as_bool(), report["status"].as_str()), (Some(false), Some("needs_reauth")), "{report}");
    assert!(report["error"].as_str().unwrap().contains("refused the credentials"));
    let shown: Value = app.get_connection("acme", &id).await.json().await.unwrap();
    assert_eq!(shown["status"], "needs_reauth");

    // New credentials and a passing test bring it back.
    let rotate = format!("/admin/v1/tenants/acme/connections/{id}/credentials");
    app.admin_send(reqwest::Method::PUT, &rotate, &json!({"credentials": {"access_key": KEY}})).await;
    let report: Value = app.admin_send(reqwest::Method::POST, &path, &json!({})).await.json().await.unwrap();
    assert_eq!((report["ok"].as_bool(), report["status"].as_str()), (Some(true), Some("active")), "{report}");
}

#[tokio::test]
async fn an_unreachable_crm_marks_the_connection_failing() {
    let sim = spawn(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    sim.set_fault(Fault::Http500Empty);
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let id = vtiger_connection(&app, &sim.base_url(), KEY).await;
    let path = format!("/admin/v1/tenants/acme/connections/{id}/test");
    let report: Value = app.admin_send(reqwest::Method::POST, &path, &json!({})).await.json().await.unwrap();
    assert_eq!((report["ok"].as_bool(), report["status"].as_str()), (Some(false), Some("failing")), "{report}");
    assert!(report["error"].as_str().unwrap().contains("HTTP 500"), "{report}");
}

#[tokio::test]
async fn a_connection_to_a_private_address_is_refused_by_policy() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let id = vtiger_connection(&app, "http://169.254.169.254", KEY).await;
    let path = format!("/admin/v1/tenants/acme/connections/{id}/test");
    let report: Value = app.admin_send(reqwest::Method::POST, &path, &json!({})).await.json().await.unwrap();
    assert_eq!(report["ok"], false);
    assert!(report["error"].as_str().unwrap().contains("169.254.169.254"), "{report}");
}

#[tokio::test]
async fn a_vtiger_connection_needs_its_username_and_access_key() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    for (body, field) in [
        (
            json!({"name": "V", "kind": "vtiger", "host": "crm.example.com", "credentials": {"access_key": "k"}}),
            "fields.username",
        ),
        (
            json!({"name": "V", "kind": "vtiger", "host": "crm.example.com", "fields": {"username": "a"}}),
            "credentials.access_key",
        ),
    ] {
        let response = app.post_connection("acme", &body).await;
        assert_eq!(response.status(), 422);
        assert_eq!(crate::helpers::error_of(response).await.2.as_deref(), Some(field));
    }
}

// Multi-threaded: the simulator must keep answering while this thread waits for the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_tests_a_connection_too() {
    let sim = spawn(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    let dir = tempfile::TempDir::new().unwrap();
    let run = |args: &[&str]| {
        crmhub()
            .env("CRMHUB_DATA_DIR", dir.path())
            .env("CRMHUB_OUTBOUND__ALLOW_PRIVATE", "[\"127.0.0.1\"]")
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&["tenant", "create", "--slug", "acme", "--name", "Acme"]).status.success());
    let created = run(&[
        "connection",
        "create",
        "--tenant",
        "acme",
        "--name",
        "V",
        "--kind",
        "vtiger",
        "--host",
        &sim.base_url(),
        "--field",
        "username=admin",
        "--credential",
        &format!("access_key={KEY}"),
    ]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let id = serde_json::from_slice::<Value>(&created.stdout).unwrap()["id"].as_str().unwrap().to_owned();
    let tested = run(&["connection", "test", "--tenant", "acme", &id]);
    assert!(tested.status.success(), "{}", String::from_utf8_lossy(&tested.stderr));
    let report: Value = serde_json::from_slice(&tested.stdout).unwrap();
    assert_eq!(report["ok"], true);
    let requests = run(&["connection", "requests", "--tenant", "acme", &id]);
    let entries: Value = serde_json::from_slice(&requests.stdout).unwrap();
    assert!(entries.as_array().unwrap().len() >= 3, "the CLI flushed its request log: {entries}");
}

#[tokio::test]
async fn a_deleted_connection_leaves_no_connector_behind() {
    let sim = spawn(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let id = vtiger_connection(&app, &sim.base_url(), KEY).await;
    let path = format!("/admin/v1/tenants/acme/connections/{id}/test");
    let report: Value = app.admin_send(reqwest::Method::POST, &path, &json!({})).await.json().await.unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(app.state.crms.kept(), 1, "the tested connection's connector is kept for reuse");
    let deleted = app.admin_delete(&format!("/admin/v1/tenants/acme/connections/{id}")).await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.state.crms.kept(), 0, "and dropped with the connection");
}
