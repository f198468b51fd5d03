//! `crmhub demo`'s contact sync through the binary: tenant `marketing`'s simulated Kommo account
//! mirrored into a simulated Unisender list. The commands it prints work as printed: the PATCH
//! changes Anna Kowalski's e-mail in the Kommo simulator, Kommo's webhook brings the change, the
//! printed GET shows it in the list; Kommo's documented example, posted to the printed webhook
//! URL, is accepted.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::binary::{RunningDemo, start_demo};

/// The command on the line after the one containing `label`.
fn command_after<'a>(demo: &'a RunningDemo, label: &str) -> &'a str {
    let index =
        demo.printed.iter().position(|l| l.contains(label)).unwrap_or_else(|| panic!("{label}: {:?}", demo.printed));
    demo.printed[index + 1].trim()
}

/// Runs a printed command as a shell would; its stdout.
fn sh(command: &str) -> String {
    let output = Command::new("sh").arg("-c").arg(format!("{command} -sS")).output().expect("sh");
    assert!(output.status.success(), "{command}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn logs(dir: &std::path::Path) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".err"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the printed GET until its answer satisfies `done`, within `within`.
async fn polled(get: &str, within: Duration, dir: &std::path::Path, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    let mut last = Value::Null;
    while started.elapsed() < within {
        last = serde_json::from_str(&sh(get)).unwrap_or(Value::Null);
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{get} never showed it: {last}\n{}", logs(dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_syncs_kommo_into_unisender_and_its_printed_commands_work() {
    let dir = tempfile::TempDir::new().unwrap();
    let demo = start_demo(dir.path()).await;
    assert!(demo.line("Contact sync: tenant `marketing`").contains("\"Kommo contacts\""), "{:?}", demo.printed);
    let hook = command_after(&demo, "Webhook URL");
    assert!(hook.contains("/hooks/kommo/"), "{hook}");
    let patch = command_after(&demo, "Change Anna Kowalski's e-mail").to_owned();
    let get = command_after(&demo, "See it arrive").to_owned();
    let example = command_after(&demo, "documented webhook example").to_owned();
    assert!(
        patch.starts_with("curl -X PATCH") && get.starts_with("curl ") && example.contains(hook),
        "{:?}",
        demo.printed
    );
    let list = demo.line("Contact sync:").split("(id ").nth(1).and_then(|r| r.split(')').next()).unwrap().to_owned();

    // The backfill brings Anna Kowalski's address as the seed has it: the pipeline and the
    // webhook are in place (the OAuth flow runs once the server serves; give it a moment).
    let seeded = get.replace("anna.kowalski@example.org", "anna.kowalski@example.com");
    let in_list = |v: &Value| v["list_ids"].to_string().contains(&list);
    polled(&seeded, Duration::from_secs(30), dir.path(), in_list).await;

    let changed: Value = serde_json::from_str(&sh(&patch)).unwrap();
    assert_eq!(changed["name"], "Anna Kowalski", "the simulator answers with the contact: {changed}");
    let arrived = polled(&get, Duration::from_secs(15), dir.path(), in_list).await;
    assert_eq!(arrived["email"], "anna.kowalski@example.org", "{arrived}");

    // `-f`: an answer other than 2xx fails the command.
    let answer: Value = serde_json::from_str(&sh(&format!("{example} -f"))).unwrap();
    assert_eq!(answer["status"], "accepted", "{answer}");
    assert_eq!(answer["jobs"], 1, "{answer}");
}
