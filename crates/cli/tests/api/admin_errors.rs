//! The admin API's refusals: authentication, malformed bodies, unknown resources.

use serde_json::json;

use crate::helpers::{error_of, spawn_app};

#[tokio::test]
async fn no_token_is_401_and_a_wrong_token_is_403() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/admin/v1/tenants")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_of(response).await.0, "unauthorized");

    let response = app
        .client
        .get(app.url("/admin/v1/tenants"))
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let response = app.client.get(app.url("/admin/v1/tenants")).bearer_auth("wrong-token").send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(error_of(response).await.0, "forbidden");

    // A refused write leaves nothing behind.
    let response = app
        .client
        .post(app.url("/admin/v1/tenants"))
        .bearer_auth("wrong-token")
        .json(&json!({"slug": "acme", "name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(app.store().tenants().list().await.unwrap().is_empty());
}

#[tokio::test]
async fn malformed_bodies_are_400_and_wrong_content_types_415() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/admin/v1/tenants"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"slug\": \"acme\",")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let (code, message, _) = error_of(response).await;
    assert_eq!(code, "bad_request");
    assert!(message.contains("malformed JSON"), "{message}");

    let response = app
        .client
        .post(app.url("/admin/v1/tenants"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .body("slug=acme")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    let response = app.post_tenant(&json!({"slug": 42, "name": "Acme"})).await;
    assert_eq!(response.status(), 422);
    assert_eq!(error_of(response).await.2.as_deref(), Some("slug"));
    assert!(app.store().tenants().list().await.unwrap().is_empty());
}

#[tokio::test]
async fn unknown_things_are_404() {
    let app = spawn_app().await;
    assert_eq!(app.admin_get("/admin/v1/tenants/ghost").await.status(), 404);
    app.create_tenant("acme").await;
    assert_eq!(app.get_connection("acme", "not-a-uuid").await.status(), 404);
    assert_eq!(app.get_connection("acme", "7b03c785-5da6-422a-9426-10638484709e").await.status(), 404);
    assert_eq!(app.admin_get("/admin/v1/tenants/Not%20A%20Slug").await.status(), 404);
}
