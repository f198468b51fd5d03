//! The stack every route shares: one JSON error shape for unknown routes, wrong methods, bad
//! path parameters and oversized bodies; request ids; time limits per route class; no CORS.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crmhub_core::Secret;
use crmhub_core::signing::social_inbox::sign;
use crmhub_sim::vtiger::{Fault, VtigerSimOptions, spawn as spawn_vtiger};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::binary::serve;
use crate::helpers::{ADMIN_TOKEN, TestApp, error_of, spawn, spawn_app};

const KEY: &str = "sim-access-key-0001";
const SECRET: &str = "changeme!";

fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

/// Status, `application/json`, and the error code.
async fn assert_error(response: Response, status: u16, code: &str) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(header(&response, "content-type").as_deref(), Some("application/json"));
    let (got, message, _) = error_of(response).await;
    assert_eq!(got, code, "{message}");
    message
}

// --- one error shape ---------------------------------------------------------------------------

#[tokio::test]
async fn unknown_routes_are_404_in_the_error_shape() {
    let app = spawn_app().await;
    for path in ["/nope", "/admin/v1/nothing-here", "/admin/v2/tenants", "/t/acme/social/unknown"] {
        let response = app.client.get(app.url(path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_error(response, 404, "not_found").await;
    }
    let response = app.client.post(app.url("/nope")).body("x").send().await.unwrap();
    assert_error(response, 404, "not_found").await;
}

#[tokio::test]
async fn wrong_methods_are_405_in_the_error_shape_with_allow() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        (Method::DELETE, "/admin/v1/tenants", "GET,HEAD,POST"),
        (Method::PUT, "/admin/v1/tenants/acme", "GET,HEAD,PATCH,DELETE"),
        (Method::POST, "/healthz", "GET,HEAD"),
        (Method::GET, "/admin/v1/jobs/redrive", "POST"),
    ] {
        let response = app.client.request(method.clone(), app.url(path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(header(&response, "allow").as_deref(), Some(allow), "{method} {path}");
        let message = assert_error(response, 405, "method_not_allowed").await;
        assert!(message.contains(method.as_str()), "{message}");
    }
}

#[tokio::test]
async fn the_social_inbox_answers_405_in_its_own_shape() {
    let app = spawn_app().await;
    for path in ["/t/acme/social/search", "/t/acme/social/iframe"] {
        let response = app.client.post(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 405);
        assert_eq!(header(&response, "allow").as_deref(), Some("GET,HEAD"));
        assert_eq!(header(&response, "content-type").as_deref(), Some("application/json"));
        assert_eq!(header(&response, "cache-control").as_deref(), Some("no-store"), "the channel's headers too");
        let body = response.text().await.unwrap();
        assert_eq!(body, r#"{"status":"error","error":"method not allowed; only GET is served"}"#);
    }
}

#[tokio::test]
async fn path_parameters_that_do_not_parse_are_400_in_the_error_shape() {
    let app = spawn_app().await;
    let message =
        assert_error(app.admin_get("/admin/v1/templates/vtiger/versions/latest").await, 400, "bad_request").await;
    assert!(message.contains("`latest`") && message.contains("u32"), "says what is wrong: {message}");
    for path in
        ["/admin/v1/tenants/%FF", "/admin/v1/tenants/%FF/connections", "/admin/v1/tenants/%FF/channels/social-inbox"]
    {
        let message = assert_error(app.admin_get(path).await, 400, "bad_request").await;
        assert!(message.contains("UTF-8"), "{path}: {message}");
    }
}

#[tokio::test]
async fn an_oversized_body_is_413_in_the_error_shape() {
    let app = spawn().configure(|s| s.server.max_body_bytes = 1024).start().await;
    let name = "n".repeat(2000);
    let message =
        assert_error(app.post_tenant(&json!({"slug": "acme", "name": name})).await, 413, "payload_too_large").await;
    assert!(message.contains("server.max_body_bytes"), "{message}");
    // Raw bodies too: the template routes and the redrive body.
    let big = "#".repeat(4096);
    for path in ["/admin/v1/templates", "/admin/v1/templates/check", "/admin/v1/jobs/redrive"] {
        let response = app.client.post(app.url(path)).bearer_auth(ADMIN_TOKEN).body(big.clone()).send().await.unwrap();
        assert_error(response, 413, "payload_too_large").await;
    }
    assert!(app.store().tenants().list().await.unwrap().is_empty());
    // Below the limit it is read as usual.
    assert_eq!(app.post_tenant(&json!({"slug": "acme", "name": "Acme"})).await.status(), 201);
}

// --- request ids -------------------------------------------------------------------------------

/// A generated id: a hyphenated UUID.
fn is_uuid(id: &str) -> bool {
    let lengths: Vec<usize> = id.split('-').map(str::len).collect();
    lengths == [8, 4, 4, 4, 12] && id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
}

#[tokio::test]
async fn a_usable_request_id_is_echoed_and_a_missing_one_generated() {
    let app = spawn_app().await;
    let given = "7b03c785-5da6-422a-9426-10638484709e";
    for path in ["/healthz", "/admin/v1/tenants", "/nope", "/t/acme/social/search"] {
        let response =
            app.client.get(app.url(path)).bearer_auth(ADMIN_TOKEN).header("x-request-id", given).send().await.unwrap();
        assert_eq!(header(&response, "x-request-id").as_deref(), Some(given), "{path}");
        let response = app.client.get(app.url(path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        let generated = header(&response, "x-request-id").unwrap_or_default();
        assert!(is_uuid(&generated), "{path}: {generated:?}");
    }
    let first = header(&app.client.get(app.url("/healthz")).send().await.unwrap(), "x-request-id");
    let second = header(&app.client.get(app.url("/healthz")).send().await.unwrap(), "x-request-id");
    assert_ne!(first, second, "one per request");
}

#[tokio::test]
async fn a_hostile_request_id_is_replaced() {
    let app = spawn_app().await;
    let long = "a".repeat(129);
    for hostile in ["has spaces", "{\"level\":\"ERROR\"}", "a;b", long.as_str(), "caf\u{e9}"] {
        let response = app.client.get(app.url("/healthz")).header("x-request-id", hostile).send().await.unwrap();
        assert_eq!(response.status(), 200, "the request itself is served");
        let used = header(&response, "x-request-id").unwrap_or_default();
        assert!(is_uuid(&used), "{hostile:?} → {used:?}");
    }
    // Two ids are one too many.
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "one")
        .header("x-request-id", "two")
        .send()
        .await
        .unwrap();
    assert!(is_uuid(&header(&response, "x-request-id").unwrap_or_default()));
}

#[tokio::test]
async fn log_lines_of_a_request_carry_its_id() {
    let dir = TempDir::new().unwrap();
    let served = serve(dir.path(), &[("CRMHUB_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let client = reqwest::Client::new();
    let ours = "req-log-test-0001";
    let response = client
        .post(format!("{}/admin/v1/tenants", served.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-request-id", ours)
        .json(&json!({"slug": "acme", "name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let hostile = "forged\"}{\"request_id\":\"x";
    let refused = client.get(format!("{}/healthz", served.base)).header("x-request-id", hostile).send().await.unwrap();
    let replaced = header(&refused, "x-request-id").unwrap();
    let log = served.stop();

    let lines: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let of_request = |id: &str| -> Vec<&Value> {
        lines.iter().filter(|l| l["span"]["request_id"] == id || l["spans"][0]["request_id"] == id).collect()
    };
    let mine = of_request(ours);
    let messages: Vec<&str> = mine.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(messages.contains(&"request"), "the access line: {messages:?}\n{log}");
    assert!(messages.iter().any(|m| m.contains("tenant")), "the handler's own line too: {messages:?}\n{log}");
    assert!(mine.iter().all(|l| l["span"]["route"] == "/admin/v1/tenants"), "with the route template");
    assert!(!of_request(&replaced).is_empty(), "the replacement is logged: {log}");
    assert!(!log.contains("forged"), "the refused id is never written: {log}");
}

// --- no CORS -----------------------------------------------------------------------------------

#[tokio::test]
async fn no_route_answers_cross_origin_requests() {
    let app = spawn_app().await;
    let origin = "https://evil.example";
    for path in ["/admin/v1/tenants", "/healthz", "/t/acme/social/search"] {
        let response =
            app.client.get(app.url(path)).bearer_auth(ADMIN_TOKEN).header("origin", origin).send().await.unwrap();
        assert_eq!(header(&response, "access-control-allow-origin"), None, "{path}");
        let preflight = app
            .client
            .request(Method::OPTIONS, app.url(path))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert_eq!(preflight.status(), 405, "{path}");
        assert_eq!(header(&preflight, "access-control-allow-origin"), None, "{path}");
    }
}

// --- time limits per route class -----------------------------------------------------------------

async fn vtiger_connection(app: &TestApp, base_url: &str) -> String {
    let body = json!({"name": "Vtiger", "kind": "vtiger", "host": base_url,
                      "fields": {"username": "admin"}, "credentials": {"access_key": KEY}});
    let response = app.post_connection("acme", &body).await;
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

fn signed(app: &TestApp, endpoint: &str, params: &[(&str, &str)]) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
    let mut all = params.to_vec();
    all.push(("expires", &now));
    app.url(&format!("/t/acme/social/{endpoint}?{}", sign(&all, &Secret::new(SECRET))))
}

#[tokio::test]
async fn a_slow_crm_makes_the_social_inbox_answer_504_in_time() {
    let sim = spawn_vtiger(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    let susan = sim.insert_record("Contacts", [("firstname", "Susan"), ("lastname", "Red")]);
    let app = spawn()
        .configure(|s| {
            s.server.social_inbox_timeout_ms = 300;
            // It must stay under the route's limit (checked at start).
            s.outbound.interactive_max_wait_ms = 100;
        })
        .start()
        .await;
    app.create_tenant("acme").await;
    let connection = vtiger_connection(&app, &sim.base_url()).await;
    let body = json!({"connection_id": connection, "secret": SECRET});
    let channel = "/admin/v1/tenants/acme/channels/social-inbox";
    assert_eq!(app.admin_send(Method::PUT, channel, &body).await.status(), 200);
    // Logged in first. With a 100 ms budget wait, a busy machine (the PostgreSQL budget's lease
    // is a database round trip) may refuse the first tries with 503: those are not this test.
    let mut warm = 0;
    while app.client.get(signed(&app, "search", &[("q", "red")])).send().await.unwrap().status() != 200 {
        warm += 1;
        assert!(warm < 20, "the warm-up search never got through");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    sim.set_fault(Fault::Latency(Duration::from_secs(3)));
    let started = std::time::Instant::now();
    let response = app.client.get(signed(&app, "search", &[("q", "susan")])).send().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "stopped at the limit: {:?}", started.elapsed());
    assert_eq!(response.status(), 504);
    assert_eq!(header(&response, "content-type").as_deref(), Some("application/json"));
    assert_eq!(header(&response, "cache-control").as_deref(), Some("no-store"));
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"status":"error","error":"the CRM did not answer in time; try again later"}"#
    );

    let card = app.client.get(signed(&app, "iframe", &[("id", &susan)])).send().await.unwrap();
    assert_eq!(card.status(), 504);
    assert_eq!(header(&card, "content-type").as_deref(), Some("text/html; charset=UTF-8"));
    assert!(header(&card, "content-security-policy").unwrap().contains("frame-ancestors https://app.socialsignin.net"));
    assert!(card.text().await.unwrap().contains("The CRM is not available right now"));

    // The admin API has its own, longer limit: the same slow CRM is waited for there.
    sim.set_fault(Fault::Latency(Duration::from_millis(400)));
    let path = format!("/admin/v1/tenants/acme/connections/{connection}/test");
    assert_eq!(app.admin_send(Method::POST, &path, &json!({})).await.status(), 200);
}

#[tokio::test]
async fn the_admin_api_answers_504_in_the_error_shape_past_its_limit() {
    let sim = spawn_vtiger(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    let app = spawn().configure(|s| s.server.admin_timeout_ms = 300).start().await;
    app.create_tenant("acme").await;
    let connection = vtiger_connection(&app, &sim.base_url()).await;
    sim.set_fault(Fault::Latency(Duration::from_secs(3)));
    let started = std::time::Instant::now();
    let path = format!("/admin/v1/tenants/acme/connections/{connection}/test");
    let response = app.admin_send(Method::POST, &path, &json!({})).await;
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(header(&response, "x-request-id").is_some(), "the stack still answers around it");
    let message = assert_error(response, 504, "timeout").await;
    assert!(message.contains("server.admin_timeout_ms"), "{message}");
    // Fast routes are not affected.
    assert_eq!(app.admin_get("/admin/v1/tenants").await.status(), 200);
}
