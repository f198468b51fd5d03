//! Answers a healthy Vtiger never gives but a broken installation or a proxy might: a create
//! without an id, a card whose company lookup fails. A scripted server stands in for Vtiger
//! here, since a simulator that models Vtiger faithfully cannot produce them on request.

use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use crmhub_connectors::auth::{MemoryAuthState, SharedAuth};
use crmhub_connectors::http::{CallContext, HttpClient, Lane, OutboundMetrics, OutboundPolicy};
use crmhub_connectors::vtiger::Vtiger;
use crmhub_core::crm::{CardOptions, Crm, CrmError, NewNote};
use crmhub_core::{ConnectionId, Credentials, Host, Secret, SystemClock, TenantId};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::request_log::Log;

/// `operation` (from the query or the form body) → answer.
async fn scripted(Query(query): Query<Vec<(String, String)>>, body: String) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let param = |name: &str| query.iter().chain(&form).find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let ok = |result: Value| axum::Json(json!({"success": true, "result": result})).into_response();
    match (param("operation").as_deref(), param("id").as_deref()) {
        (Some("getchallenge"), _) => ok(json!({"token": "5f2a1c3b4d6e7", "serverTime": 1, "expireTime": 301})),
        (Some("login"), _) => ok(json!({"sessionName": "0123456789abcdef01234", "userId": "19x1"})),
        (Some("describe"), _) => ok(json!({"name": "Contacts", "idPrefix": "12", "fields": []})),
        (Some("retrieve"), Some("12x7")) => ok(json!({"id": "12x7", "lastname": "Odd", "account_id": "11x2",
                                                    "assigned_user_id": "19x1", "modifiedtime": "2026-01-01 00:00:00"})),
        // The company's lookup fails the way a PHP fatal error does; the owner is unreadable.
        (Some("retrieve"), Some("11x2")) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        (Some("retrieve"), Some("19x1")) => axum::Json(json!({"success": false, "error":
            {"code": "ACCESS_DENIED", "message": "Permission to perform the operation is denied"}}))
        .into_response(),
        (Some("query"), _) => ok(json!([])),
        // Created, says Vtiger, but which record?
        (Some("create"), _) => ok(json!({"label": "Odd"})),
        _ => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn odd_vtiger() -> (Vtiger, OutboundMetrics) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, Router::new().route("/webservice.php", any(scripted))).await });
    let metrics = OutboundMetrics::new();
    let http = HttpClient::new(
        OutboundPolicy { allow_private: vec!["127.0.0.1/32".parse().unwrap()], max_retries: 0, ..Default::default() },
        metrics.clone(),
        Arc::new(Log::default()),
        Arc::new(SystemClock),
    )
    .unwrap();
    let credentials: Credentials = [("access_key".to_owned(), Secret::new("odd-key-0001"))].into_iter().collect();
    let vtiger = Vtiger::new(
        http,
        SharedAuth::new(Arc::new(MemoryAuthState::default())),
        CallContext::new("vtiger", Lane::Interactive).for_connection(TenantId::new(), ConnectionId::new()),
        &Host::parse(&base).unwrap(),
        json!({"username": "admin"}).as_object().unwrap(),
        &credentials,
        None,
    )
    .unwrap();
    (vtiger, metrics)
}

#[tokio::test]
async fn a_create_without_an_id_is_a_protocol_error() {
    let (vtiger, _) = odd_vtiger().await;
    let err = vtiger.add_note(&NewNote { contact_id: "12x7".into(), body: "hello".into() }).await.unwrap_err();
    assert!(matches!(&err, CrmError::Protocol(m) if m.contains("no id")), "{err:?}");
}

#[tokio::test]
async fn a_failed_company_lookup_is_counted_and_an_unreadable_owner_is_not() {
    let (vtiger, metrics) = odd_vtiger().await;
    let card = vtiger.contact_card("12x7", &CardOptions::default()).await.unwrap();
    assert_eq!((card.company, card.owner), (None, None));
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains(r#"crmhub_card_parts_missing_total{connector="vtiger",part="company"} 1"#), "{text}");
    assert!(!text.contains(r#"part="owner""#), "a permission refusal is expected, not counted: {text}");
}
