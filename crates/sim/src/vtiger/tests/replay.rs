//! Replays the captures of a real Vtiger 8.2.0 (`shared/contracts/vtiger-captures/`) against the
//! simulator over HTTP: every query in `vtql-grammar.txt` and `query-paging.txt`, and the query
//! error envelopes in `errors/`. The files are read at test time; if they are missing the tests
//! fail, because a simulator checked against nothing proves nothing.
//!
//! The simulator is seeded with the records the capture headers name, at the same crmids, so
//! ids and counts compare exactly. Where a capture depends on records the header does not
//! describe, only what follows from the described ones is compared (see `UNDETERMINED`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::Api;

fn captures_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/contracts/vtiger-captures");
    assert!(
        dir.is_dir(),
        "Vtiger captures not found at {}: the replay tests need shared/contracts/vtiger-captures next to the repository",
        dir.display()
    );
    dir
}

fn read_capture(name: &str) -> String {
    let path = captures_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read capture {}: {e}", path.display()))
}

/// `(query, answer)` pairs of a capture file: a query line, then `  -> <json>`.
fn cases(text: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut query: Option<&str> = None;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(answer) = line.trim_start().strip_prefix("-> ") {
            let q = query.take().unwrap_or_else(|| panic!("answer without a query: {line}"));
            let v: Value = serde_json::from_str(answer).unwrap_or_else(|e| panic!("bad answer JSON {answer}: {e}"));
            out.push((q.to_owned(), v));
        } else {
            query = Some(line);
        }
    }
    out
}

/// Advances the clock one second per record, so `modifiedtime` orders them as created.
fn insert(api: &Api, module: &str, fields: &[(&str, &str)]) -> String {
    api.clock.advance(Duration::from_secs(1));
    api.sim.insert_record(module, fields.iter().map(|(k, v)| (*k, *v)))
}

/// Records that only take up a crmid (the real install had something there that is not a contact).
fn filler(api: &Api, crmid: u64) {
    let id = insert(api, "Accounts", &[("accountname", "Filler")]);
    assert_eq!(id, format!("11x{crmid}"), "seed out of step");
}

/// The seed of `vtql-grammar.txt`: account Acme Ltd 11x2, Susan Red 12x3, Frank Redford 12x4,
/// Seán O'Brien 12x5, 150 Bulk 12x9–12x158, and the contacts its answers show at 12x167,
/// 12x168 and 12x174.
async fn grammar_seed() -> (Api, String) {
    let api = Api::start_with(|o| o.shuffle_ties = false).await;
    let session = api.login().await;
    filler(&api, 1);
    assert_eq!(insert(&api, "Accounts", &[("accountname", "Acme Ltd")]), "11x2");
    let acme = [("account_id", "11x2")];
    let susan = insert(
        &api,
        "Contacts",
        &[("firstname", "Susan"), ("lastname", "Red"), ("email", "susan.red@acme.example"), acme[0]],
    );
    assert_eq!(susan, "12x3");
    insert(
        &api,
        "Contacts",
        &[("firstname", "Frank"), ("lastname", "Redford"), ("email", "frank@acme.example"), acme[0]],
    );
    insert(&api, "Contacts", &[("firstname", "Seán"), ("lastname", "O'Brien")]);
    for crmid in 6..=8 {
        filler(&api, crmid);
    }
    for i in 1..=150 {
        let crmid = 8 + i;
        // 50 of them (12x11–12x60) have a phone containing 912, as the capture's 52 rows imply.
        let phone = if (11..=60).contains(&crmid) { format!("+1 912 555 {i:04}") } else { format!("+1 555 {i:04}") };
        let first = format!("N{i:03}");
        insert(&api, "Contacts", &[("firstname", first.as_str()), ("lastname", "Bulk"), ("phone", phone.as_str())]);
    }
    for crmid in 159..=166 {
        filler(&api, crmid);
    }
    assert_eq!(insert(&api, "Contacts", &[("lastname", "50% Match")]), "12x167");
    assert_eq!(insert(&api, "Contacts", &[("lastname", r"Slash\Match")]), "12x168");
    for crmid in 169..=173 {
        filler(&api, crmid);
    }
    assert_eq!(insert(&api, "Contacts", &[("lastname", "Nomail"), acme[0]]), "12x174");
    // Susan was edited last: `ORDER BY modifiedtime` starts at Frank.
    api.clock.advance(Duration::from_secs(1));
    assert!(api.sim.update_record(&susan, [("title", "Buyer")]));
    (api, session)
}

/// The seed of `query-paging.txt`: 150 Bulk contacts 12x4–12x153 (firstname N001–N150) and one
/// other contact after them (151 in all).
async fn paging_seed() -> (Api, String) {
    let api = Api::start_with(|o| o.shuffle_ties = false).await;
    let session = api.login().await;
    for crmid in 1..=3 {
        filler(&api, crmid);
    }
    for i in 1..=150 {
        let first = format!("N{i:03}");
        insert(&api, "Contacts", &[("firstname", first.as_str()), ("lastname", "Bulk")]);
    }
    insert(&api, "Contacts", &[("firstname", "Other"), ("lastname", "Person")]);
    (api, session)
}

/// Queries whose row count depends on records the capture header does not describe; for
/// these only the sample (a prefix of the rows) is compared, and the count as a lower bound.
const UNDETERMINED: &[(&str, &str)] = &[(
    "SELECT id,lastname FROM Contacts WHERE lastname LIKE '%é%';",
    "6 rows on the real install: Red, Redford, O'Brien and three contacts the header does not name",
)];

/// Compares one answer of the simulator with the captured one.
fn compare(query: &str, want: &Value, got: &Value) -> Result<(), String> {
    let mismatch = |what: &str| Err(format!("{query}\n  {what}\n  real: {want}\n  sim:  {got}"));
    if want["success"] != got["success"] {
        return mismatch("success differs");
    }
    if want["success"] == false {
        return if want["error"] == got["error"] { Ok(()) } else { mismatch("error differs") };
    }
    let rows = got["result"].as_array().cloned().unwrap_or_default();
    let undetermined = UNDETERMINED.iter().any(|(q, _)| *q == query);
    // Each sample row must match the simulator's row at the same place, on the keys captured.
    let same_row = |want: &Value, got: Option<&Value>| {
        want.as_object().is_some_and(|w| w.iter().all(|(k, v)| got.is_some_and(|g| g.get(k) == Some(v))))
    };
    if let Some(n) = want.get("rows").and_then(Value::as_u64) {
        let count_ok = if undetermined {
            rows.len() as u64 >= want["sample"].as_array().map_or(0, |s| s.len() as u64)
        } else {
            rows.len() as u64 == n
        };
        if !count_ok {
            return mismatch(&format!("row count: real {n}, sim {}", rows.len()));
        }
        for (i, sample) in want["sample"].as_array().into_iter().flatten().enumerate() {
            if !same_row(sample, rows.get(i)) {
                return mismatch(&format!("sample row {i} differs"));
            }
        }
    } else if let Some(n) = want.get("n").and_then(Value::as_u64) {
        if rows.len() as u64 != n {
            return mismatch(&format!("row count: real {n}, sim {}", rows.len()));
        }
        if !same_row(&want["first"], rows.first()) || !same_row(&want["last"], rows.last()) {
            return mismatch("first or last row differs");
        }
    } else {
        return mismatch("capture answer has neither rows nor n");
    }
    Ok(())
}

async fn replay(file: &str, api: &Api, session: &str) {
    let all = cases(&read_capture(file));
    assert!(all.len() > 10, "{file}: too few cases read ({})", all.len());
    let mut failures = Vec::new();
    for (query, want) in &all {
        let got = api.query(session, query).await;
        if let Err(e) = compare(query, want, &got) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{file}: {} of {} answers differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn vtql_grammar_capture_replays_exactly() {
    let (api, session) = grammar_seed().await;
    replay("vtql-grammar.txt", &api, &session).await;
}

#[tokio::test]
async fn query_paging_capture_replays_exactly() {
    let (api, session) = paging_seed().await;
    replay("query-paging.txt", &api, &session).await;
}

/// The envelope of an `errors/` capture (first line of the file) and its HTTP status.
fn error_capture(name: &str) -> (u16, String) {
    let text = read_capture(&format!("errors/{name}"));
    let mut lines = text.lines();
    let body = lines.next().unwrap_or_default().to_owned();
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("[HTTP "))
        .and_then(|l| l.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("errors/{name}: no [HTTP …] line"));
    (status, body)
}

/// A capture file, whether the request is a POST, and its parameters.
type ErrorCase<'a> = (&'static str, bool, Vec<(&'static str, &'a str)>);

/// The query cases of `errors/`, with the request each file name describes.
#[tokio::test]
async fn query_error_captures_replay_exactly() {
    let api = Api::start().await;
    let session = api.login().await;
    let s = session.as_str();
    let get = |q: &'static str| vec![("operation", "query"), ("sessionName", s), ("query", q)];
    let cases: Vec<ErrorCase<'_>> = vec![
        ("33-query_syntax_error_.txt", false, get("SELEC * FROM Contacts;")),
        ("34-query_missing_semicolon_.txt", false, get("SELECT * FROM Contacts")),
        ("35-query_unknown_column_.txt", false, get("SELECT nosuchfield FROM Contacts;")),
        ("36-query_unknown_module_.txt", false, get("SELECT * FROM NoSuchModule;")),
        ("37-query_unknown_column_in_WHERE_.txt", false, get("SELECT * FROM Contacts WHERE nosuch = 'x';")),
        ("38-query_double-quoted_string_.txt", false, get(r#"SELECT * FROM Contacts WHERE lastname = "x";"#)),
        ("39-query_via_POST__query_is_GET-only__.txt", true, get("SELECT * FROM Contacts;")),
        ("40-query_empty_result_.txt", false, get("SELECT * FROM Contacts WHERE lastname = 'Nobody';")),
        ("11-no_sessionName_.txt", false, vec![("operation", "query"), ("query", "SELECT * FROM Contacts;")]),
        (
            "12-invalid_sessionName_.txt",
            false,
            vec![("operation", "query"), ("sessionName", "nosuchsession"), ("query", "SELECT * FROM Contacts;")],
        ),
        (
            "15-describe_unknown_module_.txt",
            false,
            vec![("operation", "describe"), ("sessionName", s), ("elementType", "NoSuchModule")],
        ),
    ];
    for (file, post, params) in cases {
        let (status, body) = error_capture(file);
        let response = if post { api.raw_post(&params).await } else { api.raw_get(&params).await };
        assert_eq!(response.status().as_u16(), status, "{file}: HTTP status");
        let text = response.text().await.expect("body");
        assert_eq!(text, body, "{file}: body");
    }
}
