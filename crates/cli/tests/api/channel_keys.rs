//! Channel keys: created through the admin API and the CLI, shown once, stored as hashes, and
//! checked on the machine channels' routes — a missing key 401, any invalid one the same 403.

use reqwest::Method;
use serde_json::{Value, json};

use crate::binary::crmhub;
use crate::helpers::{TestApp, error_of, spawn_app};

async fn create_key(app: &TestApp, slug: &str, name: &str, scopes: &[&str]) -> Value {
    let path = format!("/admin/v1/tenants/{slug}/channel-keys");
    let response = app.admin_send(Method::POST, &path, &json!({"name": name, "scopes": scopes})).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// `GET /t/{slug}/channel-key` with `key` (none when `None`); status and body.
async fn whoami(app: &TestApp, slug: &str, key: Option<&str>, query: &str) -> (u16, String) {
    let mut request = app.client.get(app.url(&format!("/t/{slug}/channel-key{query}")));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_key_is_shown_once_and_then_only_by_its_prefix() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let created = create_key(&app, "acme", "pbx-hanoi", &["calls"]).await;
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("crmhub_") && key.len() == 50, "{created}");
    assert_eq!(created["prefix"].as_str().unwrap(), &key[..13]);
    let listed = app.admin_get("/admin/v1/tenants/acme/channel-keys").await.text().await.unwrap();
    assert!(listed.contains("pbx-hanoi") && !listed.contains(key), "{listed}");
    let (status, body) = whoami(&app, "acme", Some(key), "?scope=calls").await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((body["tenant"].as_str(), body["name"].as_str()), (Some("acme"), Some("pbx-hanoi")));
    assert_eq!(body["scopes"], json!(["calls"]));
}

#[tokio::test]
async fn wrong_revoked_and_other_tenants_keys_get_the_same_403() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.create_tenant("other").await;
    let mine = create_key(&app, "acme", "pbx", &["calls"]).await;
    let widget = create_key(&app, "acme", "widget", &["widget"]).await;
    let theirs = create_key(&app, "other", "pbx", &["calls"]).await;
    let revoked = create_key(&app, "acme", "old", &["calls"]).await;
    let revoke = format!("/admin/v1/tenants/acme/channel-keys/{}", revoked["id"].as_str().unwrap());
    let answer: Value = app.admin_send(Method::DELETE, &revoke, &json!({})).await.json().await.unwrap();
    assert!(answer["revoked_at"].is_i64(), "{answer}");

    let (status, _) = whoami(&app, "acme", None, "").await;
    assert_eq!(status, 401, "no key");
    let reference = whoami(&app, "acme", Some("crmhub_wrongwrongwrongwrongwrongwrongwrongwrongwrong"), "").await;
    assert_eq!(reference.0, 403);
    let key = |v: &Value| v["key"].as_str().unwrap().to_owned();
    for (slug, presented, query) in [
        ("acme", key(&revoked), ""),
        ("acme", key(&theirs), ""),
        ("nobody", key(&mine), ""),
        ("acme", "not-a-crmhub-key".to_owned(), ""),
        ("acme", key(&widget), "?scope=calls"),
    ] {
        assert_eq!(whoami(&app, slug, Some(&presented), query).await, reference, "{slug} {query}");
    }
    assert_eq!(whoami(&app, "acme", Some(&key(&mine)), "").await.0, 200, "the live key still works");
}

#[tokio::test]
async fn bad_key_requests_name_the_field_and_store_nothing() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let path = "/admin/v1/tenants/acme/channel-keys";
    for (body, field) in [
        (json!({"name": "pbx", "scopes": []}), "scopes"),
        (json!({"name": "pbx", "scopes": ["admin"]}), "scopes"),
        (json!({"name": " ", "scopes": ["calls"]}), "name"),
    ] {
        let response = app.admin_send(Method::POST, path, &body).await;
        assert_eq!(response.status(), 422, "{body}");
        assert_eq!(error_of(response).await.2.as_deref(), Some(field), "{body}");
    }
    let listed: Value = app.admin_get(path).await.json().await.unwrap();
    assert_eq!(listed["channel_keys"], json!([]), "nothing stored");
    create_key(&app, "acme", "pbx", &["calls"]).await;
    let response = app.admin_send(Method::POST, path, &json!({"name": "pbx", "scopes": ["calls"]})).await;
    assert_eq!(response.status(), 409);
    let unknown = app.admin_send(Method::DELETE, &format!("{path}/no-such-key"), &json!({})).await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn the_cli_creates_lists_and_revokes_keys() {
    let dir = tempfile::TempDir::new().unwrap();
    let run = |args: &[&str]| {
        let output = crmhub().env("CRMHUB_DATA_DIR", dir.path()).args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    run(&["tenant", "create", "--slug", "acme", "--name", "Acme"]);
    let created: Value =
        serde_json::from_str(&run(&["channel-key", "create", "--tenant", "acme", "--name", "pbx", "--scope", "calls"]))
            .unwrap();
    let key = created["key"].as_str().unwrap();
    let listed = run(&["channel-key", "list", "--tenant", "acme"]);
    assert!(listed.contains("\"pbx\"") && !listed.contains(key), "{listed}");
    let revoked: Value =
        serde_json::from_str(&run(&["channel-key", "revoke", "--tenant", "acme", created["id"].as_str().unwrap()]))
            .unwrap();
    assert!(revoked["revoked_at"].is_i64(), "{revoked}");
    let bytes: Vec<u8> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("crmhub.db"))
        .flat_map(|e| std::fs::read(e.path()).unwrap_or_default())
        .collect();
    assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()), "only the key's hash is stored");
}
