//! Health, readiness, metrics and roles.

use serde_json::Value;

use crate::helpers::{spawn, spawn_app};

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(
        (body["status"].as_str(), body["database"].as_str()),
        (Some("ready"), Some(crate::helpers::backend_name()))
    );
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let app = spawn_app().await;
    app.store().close().await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    // Anonymous callers learn the status, not the database's error text.
    assert_eq!(ready.text().await.unwrap(), r#"{"status":"not_ready"}"#);
}

#[tokio::test]
async fn invented_methods_share_one_metric_series() {
    let app = spawn_app().await;
    for method in ["FOO1", "FOO2", "BREW"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        app.client.request(method, app.url("/healthz")).send().await.unwrap();
    }
    let metrics = app.get_metrics().await;
    assert!(!metrics.contains("FOO1") && !metrics.contains("BREW"), "{metrics}");
    assert!(metrics.contains(r#"method="other",route="/healthz""#), "{metrics}");
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_report_the_queue() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.admin_get("/admin/v1/tenants/acme").await;
    app.admin_get("/admin/v1/tenants/ghost").await;
    let metrics = app.get_metrics().await;
    assert!(
        metrics.contains(r#"crmhub_http_requests_total{method="POST",route="/admin/v1/tenants",status="201"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"route="/admin/v1/tenants/{slug}",status="404"} 1"#), "{metrics}");
    assert!(!metrics.contains("ghost"), "raw paths never become labels");
    assert!(metrics.contains(r#"crmhub_queue_depth{status="dead"} 0"#), "{metrics}");
    assert!(metrics.contains("crmhub_http_request_duration_seconds_bucket"), "{metrics}");
}

#[tokio::test]
async fn a_worker_only_instance_serves_operations_but_not_the_api() {
    let app = spawn().configure(|s| s.server.role = crmhub_server::config::Role::Worker).start().await;
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(app.admin_get("/admin/v1/tenants").await.status(), 404);
}
