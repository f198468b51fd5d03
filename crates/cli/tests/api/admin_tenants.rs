use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{error_of, spawn_app};

#[tokio::test]
async fn create_list_show_update_delete_a_tenant() {
    let app = spawn_app().await;
    let response = app.post_tenant(&json!({"slug": "acme", "name": "Acme Ltd", "phone_region": "vn"})).await;
    assert_eq!(response.status(), 201);
    let tenant: Value = response.json().await.unwrap();
    assert_eq!((tenant["slug"].as_str(), tenant["name"].as_str()), (Some("acme"), Some("Acme Ltd")));
    assert_eq!(tenant["phone_region"], "VN");
    assert!(tenant["id"].as_str().unwrap().len() == 36);

    let list: Value = app.admin_get("/admin/v1/tenants").await.json().await.unwrap();
    assert_eq!(list["tenants"].as_array().unwrap().len(), 1);

    let shown: Value = app.admin_get("/admin/v1/tenants/acme").await.json().await.unwrap();
    assert_eq!(shown, tenant);

    let response = app
        .admin_send(Method::PATCH, "/admin/v1/tenants/acme", &json!({"name": "Acme Group", "phone_region": null}))
        .await;
    assert_eq!(response.status(), 200);
    let updated: Value = response.json().await.unwrap();
    assert_eq!((updated["name"].as_str(), &updated["phone_region"]), (Some("Acme Group"), &Value::Null));

    assert_eq!(app.admin_delete("/admin/v1/tenants/acme").await.status(), 204);
    assert_eq!(app.admin_get("/admin/v1/tenants/acme").await.status(), 404);
}

#[tokio::test]
async fn bad_slugs_are_refused_naming_the_field_and_nothing_is_saved() {
    let app = spawn_app().await;
    for slug in ["a/b", "two words", &"x".repeat(200), "", "UPPER"] {
        let response = app.post_tenant(&json!({"slug": slug, "name": "X"})).await;
        assert_eq!(response.status(), 422, "{slug:?}");
        let (code, message, field) = error_of(response).await;
        assert_eq!((code.as_str(), field.as_deref()), ("invalid_field", Some("slug")), "{message}");
        assert!(message.starts_with("slug: "), "{message}");
    }
    let list: Value = app.admin_get("/admin/v1/tenants").await.json().await.unwrap();
    assert!(list["tenants"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_duplicate_slug_is_a_conflict() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let response = app.post_tenant(&json!({"slug": "acme", "name": "Impostor"})).await;
    assert_eq!(response.status(), 409);
    let (code, message, field) = error_of(response).await;
    assert_eq!((code.as_str(), field.as_deref()), ("conflict", Some("slug")));
    assert!(message.contains("acme"), "{message}");
    let shown: Value = app.admin_get("/admin/v1/tenants/acme").await.json().await.unwrap();
    assert_eq!(shown["name"], "Tenant acme", "the original is untouched");
}
