//! A planted secret must not appear anywhere at rest or in what crmhub emits: the database
//! files (SQLite main file, WAL and shared memory), the logs at debug level, `/metrics`, and
//! API responses — raw, hex or base64.

use base64::Engine;
use serde_json::json;
use tempfile::TempDir;

use crate::binary::serve;
use crate::helpers::ADMIN_TOKEN;
use crmhub_sim::vtiger::{VtigerSimOptions, spawn};

const MARKER: &str = "MARKER-9d2c4f7a1b-secret";

fn forms(secret: &str) -> Vec<String> {
    vec![
        secret.to_owned(),
        hex::encode(secret),
        hex::encode_upper(secret),
        base64::engine::general_purpose::STANDARD.encode(secret),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
    ]
}

pub fn assert_absent(haystack: &[u8], secret: &str, place: &str) {
    for form in forms(secret) {
        let found = haystack.windows(form.len()).any(|w| w == form.as_bytes());
        assert!(!found, "{form:?} (a form of the planted secret) found in {place}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_secret_never_appears_in_the_database_logs_metrics_or_responses() {
    // The marker is the CRM access key, so it also drives a real login over HTTP.
    let sim = spawn(VtigerSimOptions { admin_access_key: MARKER.into(), ..Default::default() }).await;
    sim.insert_record("Contacts", [("firstname", "Susan"), ("lastname", "Red")]);
    let dir = TempDir::new().unwrap();
    let served = serve(
        dir.path(),
        &[
            ("CRMHUB_ADMIN_TOKEN", ADMIN_TOKEN),
            ("CRMHUB_LOG__LEVEL", "debug"),
            ("CRMHUB_OUTBOUND__ALLOW_PRIVATE", "[\"127.0.0.1\"]"),
        ],
    );
    let client = reqwest::Client::new();
    let base = served.base.clone();
    let mut responses = String::new();
    let mut call = async |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut request = client.request(method, format!("{base}{path}")).bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        responses.push_str(&text);
        (status, text)
    };

    call(reqwest::Method::POST, "/admin/v1/tenants", Some(json!({"slug": "acme", "name": "Acme"}))).await;
    let (status, text) = call(
        reqwest::Method::POST,
        "/admin/v1/tenants/acme/connections",
        Some(json!({"name": "Main", "kind": "vtiger", "host": sim.base_url(),
                    "fields": {"username": "admin"}, "credentials": {"access_key": MARKER}})),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let id = serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"].as_str().unwrap().to_owned();
    call(reqwest::Method::GET, &format!("/admin/v1/tenants/acme/connections/{id}"), None).await;
    call(reqwest::Method::GET, "/admin/v1/tenants/acme/connections", None).await;
    call(
        reqwest::Method::PUT,
        &format!("/admin/v1/tenants/acme/connections/{id}/credentials"),
        Some(json!({"credentials": {"access_key": MARKER, "backup": MARKER}})),
    )
    .await;
    // A rejected request carrying the secret must not echo it either.
    call(
        reqwest::Method::POST,
        "/admin/v1/tenants/acme/connections",
        Some(json!({"name": "Bad", "kind": "nope", "host": "x.io", "credentials": {"access_key": MARKER}})),
    )
    .await;
    let (_, report) = call(reqwest::Method::POST, &format!("/admin/v1/tenants/acme/connections/{id}/test"), None).await;
    assert!(report.contains("\"ok\":true"), "the login with the marker worked: {report}");
    sim.invalidate_sessions(); // force a second login and a replay
    let (_, report) = call(reqwest::Method::POST, &format!("/admin/v1/tenants/acme/connections/{id}/test"), None).await;
    assert!(report.contains("\"ok\":true"), "{report}");
    assert_eq!(sim.login_count("admin"), 2);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await; // let the request log flush
    let (_, log) = call(reqwest::Method::GET, &format!("/admin/v1/tenants/acme/connections/{id}/requests"), None).await;
    assert!(log.contains("getchallenge"), "outbound calls were logged: {log}");
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let log = served.stop();

    assert!(log.contains("connection created"), "debug logs were captured: {log}");
    assert_absent(log.as_bytes(), MARKER, "the log");
    assert_absent(metrics.as_bytes(), MARKER, "/metrics");
    assert_absent(responses.as_bytes(), MARKER, "API responses");
    let mut files = 0;
    for name in ["crmhub.db", "crmhub.db-wal", "crmhub.db-shm"] {
        let path = dir.path().join(name);
        if let Ok(bytes) = std::fs::read(&path) {
            files += 1;
            assert_absent(&bytes, MARKER, name);
        }
    }
    assert!(files >= 1, "the database files were read");
}
