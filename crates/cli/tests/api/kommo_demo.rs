//! `crmhub demo`'s Kommo tenant through the binary: at every start the demo connects its
//! simulated Kommo account through the OAuth flow (authorize URL, consent, crmhub's callback,
//! the code exchange job), and the connection it prints then passes its test.

use std::time::Duration;

use serde_json::Value;

use crate::binary::start_demo;

/// The connection test's URL the demo prints for tenant `marketing`.
fn test_url(printed: &str) -> String {
    printed.split("POST ").nth(1).unwrap_or_else(|| panic!("{printed}")).trim().to_owned()
}

async fn tested_until_ok(url: &str, token: &str, dir: &std::path::Path) -> Value {
    let client = reqwest::Client::new();
    let mut report = Value::Null;
    // The connect flow runs once the server is up; give its job a moment (polling as an operator
    // would, well inside the account's 7 requests a second).
    for _ in 0..40 {
        report = client.post(url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        if report["ok"] == true {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let logs: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".err"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    panic!("the demo's Kommo connection never passed its test: {report}\n{}", logs.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_connects_its_kommo_account_through_oauth_at_every_start() {
    let dir = tempfile::TempDir::new().unwrap();
    let demo = start_demo(dir.path()).await;
    let token = demo.line("Admin API token: ").split_once(": ").unwrap().1.trim().to_owned();
    assert!(demo.line("Tenant `marketing`").contains("test.kommo.com"), "{:?}", demo.printed);
    let index = demo.printed.iter().position(|l| l.contains("Tenant `marketing`")).unwrap();
    let url = test_url(&demo.printed[index + 1]);
    let report = tested_until_ok(&url, &token, dir.path()).await;
    let details = report["details"].to_string();
    assert!(details.contains("32720107"), "Kommo's documented example account: {report}");
    drop(demo);

    // On the same data directory the account is connected again, with new tokens.
    let again = start_demo(dir.path()).await;
    let index = again.printed.iter().position(|l| l.contains("Tenant `marketing`")).unwrap();
    let url = test_url(&again.printed[index + 1]);
    assert!(tested_until_ok(&url, &token, dir.path()).await["ok"] == true);
}
