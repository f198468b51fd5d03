use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{error_of, spawn_app};

fn vtiger_body(name: &str) -> Value {
    json!({"name": name, "kind": "vtiger", "host": "crm.example.com",
           "fields": {"username": "admin"}, "credentials": {"access_key": "s3cr3t-access-key"}})
}

#[tokio::test]
async fn a_connection_is_created_and_shown_without_its_credentials() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let response = app.post_connection("acme", &vtiger_body("Main CRM")).await;
    assert_eq!(response.status(), 201);
    let text = response.text().await.unwrap();
    assert!(!text.contains("s3cr3t-access-key"), "credentials must never be returned: {text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["kind"], "vtiger");
    assert_eq!(created["host"], "https://crm.example.com");
    assert_eq!(created["credential_names"], json!(["access_key"]));
    assert_eq!(created["status"], "active");

    let shown = app.get_connection("acme", id).await;
    assert_eq!(shown.status(), 200);
    assert_eq!(shown.json::<Value>().await.unwrap(), created);

    let list: Value = app.admin_get("/admin/v1/tenants/acme/connections").await.json().await.unwrap();
    assert_eq!(list["connections"].as_array().unwrap().len(), 1);

    // Update, rotate, delete.
    let path = format!("/admin/v1/tenants/acme/connections/{id}");
    let updated: Value =
        app.admin_send(Method::PATCH, &path, &json!({"status": "disabled"})).await.json().await.unwrap();
    assert_eq!(updated["status"], "disabled");
    let rotated = app
        .admin_send(
            Method::PUT,
            &format!("{path}/credentials"),
            &json!({"credentials": {"access_key": "new-key-value"}}),
        )
        .await;
    assert_eq!(rotated.status(), 200);
    assert!(!rotated.text().await.unwrap().contains("new-key-value"));
    let tenant_id = app.store().tenants().list().await.unwrap()[0].id;
    let creds = app.store().connections(tenant_id).credentials(id.parse().unwrap()).await.unwrap();
    assert_eq!(creds.get("access_key").unwrap().expose(), "new-key-value");

    assert_eq!(app.admin_delete(&path).await.status(), 204);
    assert_eq!(app.get_connection("acme", id).await.status(), 404);
}

#[tokio::test]
async fn a_connection_for_an_unknown_tenant_is_not_found() {
    let app = spawn_app().await;
    let response = app.post_connection("ghost", &vtiger_body("Main")).await;
    assert_eq!(response.status(), 404);
    let (code, message, _) = error_of(response).await;
    assert_eq!((code.as_str(), message.as_str()), ("not_found", "tenant not found"));
}

#[tokio::test]
async fn invalid_connections_name_the_field() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let cases = [
        (json!({"name": "M", "kind": "salesforce", "host": "x.io"}), "kind"),
        // A kommo connection needs an integration (or a long-lived token).
        (json!({"name": "M", "kind": "kommo", "host": "x.kommo.com"}), "credentials.client_id"),
        // A unisender connection needs its API key.
        (json!({"name": "M", "kind": "unisender", "host": "api.unisender.com"}), "credentials.api_key"),
        (json!({"name": "M", "kind": "vtiger", "host": "ftp://x.io"}), "host"),
        (json!({"name": "M", "kind": "vtiger", "host": "https://user:pw@x.io"}), "host"),
        (json!({"name": "", "kind": "vtiger", "host": "x.io"}), "name"),
        (json!({"name": "M", "kind": "vtiger", "host": "x.io", "fields": {"api_key": "oops"}}), "fields.api_key"),
        (
            json!({"name": "M", "kind": "vtiger", "host": "x.io", "credentials": {"access_key": 42}}),
            "credentials.access_key",
        ),
        (json!({"kind": "vtiger", "host": "x.io"}), "name"),
        (json!({"name": "M", "kind": "vtiger", "host": "x.io", "hots": "typo"}), "hots"),
    ];
    for (body, field) in cases {
        let response = app.post_connection("acme", &body).await;
        assert_eq!(response.status(), 422, "{body}");
        let (_, message, got) = error_of(response).await;
        assert!(got.as_deref() == Some(field) || message.contains(field), "{body}: field {got:?}, message {message}");
    }
    let list: Value = app.admin_get("/admin/v1/tenants/acme/connections").await.json().await.unwrap();
    assert!(list["connections"].as_array().unwrap().is_empty(), "nothing half-saved");

    app.post_connection("acme", &vtiger_body("Main")).await;
    let response = app.post_connection("acme", &vtiger_body("Main")).await;
    assert_eq!(response.status(), 409);
    assert_eq!(error_of(response).await.2.as_deref(), Some("name"));
}

#[tokio::test]
async fn one_tenants_admin_paths_do_not_reach_another_tenants_connections() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.create_tenant("other").await;
    let created: Value = app.post_connection("acme", &vtiger_body("Main")).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(app.get_connection("other", id).await.status(), 404);
    let path = format!("/admin/v1/tenants/other/connections/{id}");
    assert_eq!(app.admin_send(Method::PATCH, &path, &json!({"name": "stolen"})).await.status(), 404);
    assert_eq!(app.admin_delete(&path).await.status(), 404);
    assert_eq!(app.get_connection("acme", id).await.json::<Value>().await.unwrap(), created);
}
