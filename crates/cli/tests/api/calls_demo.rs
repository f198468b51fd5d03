//! The call centre through the binary: what `crmhub demo` prints for it, `crmhub call
//! simulate` against the running demo, and `crmhub calls list|show` on its database.

use std::path::Path;
use std::process::Output;

use crmhub_sim::vtiger::DEFAULT_ADMIN_ACCESS_KEY;
use md5::{Digest, Md5};
use serde_json::{Value, json};

use crate::binary::{RunningDemo, crmhub, free_port, start_demo};

/// The printed curl's URL, channel key and body, read as a shell would.
fn printed_curl(demo: &RunningDemo) -> (String, String, String) {
    let line = demo.line("/calls/events").trim();
    let line = line.strip_prefix("curl ").unwrap_or_else(|| panic!("one curl line: {line}"));
    let url = line.split_whitespace().next().unwrap().to_owned();
    let key = line.split("-H 'Authorization: Bearer ").nth(1).and_then(|k| k.split('\'').next()).unwrap();
    assert!(line.contains(" -H 'Content-Type: application/json' "), "{line}");
    let body = line.split(" -d '").nth(1).and_then(|b| b.strip_suffix('\'')).unwrap_or_else(|| panic!("{line}"));
    (url, key.to_owned(), body.to_owned())
}

async fn post(url: &str, key: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// The curl `crmhub demo` prints rings Susan Red: sent as printed it is accepted and pops her
/// card. Each start makes a new key and revokes the last run's, on the same data directory too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_a_curl_that_pops_susan_reds_screen() {
    let dir = tempfile::TempDir::new().unwrap();
    let demo = start_demo(dir.path()).await;
    let (url, key, body) = printed_curl(&demo);
    assert!(key.starts_with("crmhub_"), "{key}");
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["type"], "call.started");
    assert_eq!(event["call"]["from"], "0912345678", "a national number, read in the tenant's region");

    let (status, answer) = post(&url, &key, &body).await;
    assert_eq!(status, 202, "{answer}");
    let pop = &answer["call"]["screen_pop"];
    assert_eq!(pop["match"], "one", "{answer}");
    assert_eq!(pop["number"], "+84912345678");
    assert_eq!(pop["contacts"][0]["name"], "Susan Red");
    assert!(pop["contacts"][0]["card_url"].as_str().is_some_and(|u| u.contains("/t/demo/social/iframe?")), "{pop}");
    assert!(demo.line("A whole call, logged in the CRM").contains("call simulate"));
    drop(demo);

    let again = start_demo(dir.path()).await;
    let (url, new_key, body) = printed_curl(&again);
    assert_ne!(new_key, key);
    assert!(again.line("Call centre").contains("channel key `demo-pbx-2`"), "{:?}", again.printed);
    assert_eq!(post(&url, &key, &body).await.0, 403, "the last run's key is revoked");
    let (status, answer) = post(&url, &new_key, &body).await;
    assert_eq!((status, &answer["call"]["screen_pop"]["match"]), (202, &Value::from("one")), "{answer}");
}

/// `crmhub call simulate`, run as the demo prints it, plays a whole call: it shows the screen
/// pop and the CRM record the call was logged in — the record the admin API names, which is in
/// the simulated Vtiger — and `crmhub calls list|show` show the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_simulate_logs_a_call_that_the_admin_api_the_crm_and_the_cli_show() {
    let dir = tempfile::TempDir::new().unwrap();
    let demo = start_demo(dir.path()).await;
    let hint = demo.line("A whole call, logged in the CRM: ").split_once("CRM: ").unwrap().1.to_owned();
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::task::spawn_blocking(move || std::process::Command::new("sh").args(["-c", &hint]).output().unwrap()),
    )
    .await
    .expect("simulate is bounded")
    .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{printed}{}", String::from_utf8_lossy(&output.stderr));
    assert!(printed.contains("Screen pop: match one for +84912345678"), "{printed}");
    assert!(printed.lines().any(|l| l.trim().ends_with("Susan Red (Redwood Supplies)")), "{printed}");
    let call_id = printed.strip_prefix("Call ").and_then(|l| l.split_whitespace().next()).unwrap().to_owned();
    let record = printed
        .lines()
        .find_map(|l| l.strip_prefix("Logged in the CRM as record "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{printed}"))
        .to_owned();

    let base = demo.line("crmhub demo is running on ").split_whitespace().nth(5).unwrap().to_owned();
    let token = demo.line("Admin API token: ").rsplit(' ').next().unwrap().to_owned();
    let call: Value = reqwest::Client::new()
        .get(format!("{base}/admin/v1/tenants/demo/calls/{call_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(call["crm"]["record_id"], record.as_str(), "{call}");
    assert_eq!(call["phase"], "finalized");
    assert_eq!(call["crm"]["up_to_date"], true);

    let vtiger = demo.line("simulated Vtiger at ").split_whitespace().find(|w| w.starts_with("http")).unwrap();
    let logged = vtiger_retrieve(vtiger, &record).await;
    let marker = format!("[crmhub-call:{call_id}]");
    assert!(logged["description"].as_str().is_some_and(|d| d.contains(&marker)), "{logged}");

    let cli = |args: &[&str]| -> Output { crmhub().env("CRMHUB_DATA_DIR", dir.path()).args(args).output().unwrap() };
    let json_of = |output: Output| -> Value {
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let listed = json_of(cli(&["calls", "list", "--tenant", "demo"]));
    let listed = listed["calls"].as_array().unwrap().iter().find(|c| c["call_id"] == call_id.as_str()).cloned();
    assert_eq!(listed.unwrap()["crm"]["record_id"], record.as_str());
    assert_eq!(
        json_of(cli(&["calls", "list", "--tenant", "demo", "--since", "9999-01-01T00:00:00Z"]))["calls"],
        json!([])
    );
    let shown = json_of(cli(&["calls", "show", "--tenant", "demo", &call_id]));
    assert_eq!(shown["crm"]["record_id"], record.as_str());
    let kinds: Vec<&str> = shown["events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["call.started", "call.answered", "call.ended", "call.finalized"]);
    assert_eq!(shown["jobs"], json!([]), "the log job is done");
    let missing = cli(&["calls", "show", "--tenant", "demo", "no-such-call"]);
    assert!(!missing.status.success() && String::from_utf8_lossy(&missing.stderr).contains("has no call"));

    // A key crmhub does not know is named as the problem; nothing was posted with it.
    let refused = simulate(&base, "crmhub_not-a-key", Some(&token), dir.path());
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refused the channel key (403"), "{refused:?}");
}

/// Without a running crmhub, or without an admin token, `simulate` says so and posts nothing.
#[test]
fn call_simulate_says_when_crmhub_is_not_running_or_the_token_is_missing() {
    let dir = tempfile::TempDir::new().unwrap();
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let output = simulate(&nowhere, "crmhub_x", Some("0123456789abcdef0123"), dir.path());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && err.contains(&format!("crmhub is not running at {nowhere}")), "{err}");

    let output = simulate(&nowhere, "crmhub_x", None, dir.path());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && err.contains("--admin-token or set CRMHUB_ADMIN_TOKEN"), "{err}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("Call "), "nothing was posted");
}

fn simulate(base: &str, key: &str, token: Option<&str>, dir: &Path) -> Output {
    let mut command = crmhub();
    command.env("CRMHUB_DATA_DIR", dir).env("CRMHUB_CHANNEL_KEY", key);
    if let Some(token) = token {
        command.env("CRMHUB_ADMIN_TOKEN", token);
    }
    command.args(["call", "simulate", "--url", base, "--tenant", "demo", "--from", "0912345678"]).output().unwrap()
}

/// Reads a record straight from the simulated Vtiger's webservice, as its admin user.
async fn vtiger_retrieve(base: &str, id: &str) -> Value {
    let client = reqwest::Client::new();
    let endpoint = format!("{base}/webservice.php");
    let get = async |query: &[(&str, &str)]| -> Value {
        client.get(&endpoint).query(query).send().await.unwrap().json().await.unwrap()
    };
    let challenge = get(&[("operation", "getchallenge"), ("username", "admin")]).await;
    let token = challenge["result"]["token"].as_str().unwrap();
    let access = hex::encode(Md5::digest(format!("{token}{DEFAULT_ADMIN_ACCESS_KEY}")));
    let login: Value = client
        .post(&endpoint)
        .form(&[("operation", "login"), ("username", "admin"), ("accessKey", &access)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = login["result"]["sessionName"].as_str().unwrap_or_else(|| panic!("{login}"));
    let retrieved = get(&[("operation", "retrieve"), ("sessionName", session), ("id", id)]).await;
    assert_eq!(retrieved["success"], true, "{retrieved}");
    retrieved["result"].clone()
}
