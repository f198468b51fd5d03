use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use super::{Api, err, ids, ok, pair};

/// Inserts `n` contacts named `Person <i>` with the given last name.
fn people(api: &Api, n: usize, lastname: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            api.sim.insert_record("Contacts", [("firstname", format!("Person {i}")), ("lastname", lastname.to_owned())])
        })
        .collect()
}

#[tokio::test]
async fn quoted_quotes_and_injection_attempts_are_literals() {
    let api = Api::start().await;
    let session = api.login().await;
    let obrien = api.sim.insert_record("Contacts", [("lastname", "O'Brien")]);
    people(&api, 3, "Smith");

    let rows = api.rows(&session, "SELECT lastname FROM Contacts WHERE lastname = 'O''Brien';").await;
    assert_eq!(rows, vec![json!({"lastname": "O'Brien", "id": obrien})]);

    // The classic injection, correctly quoted, is just a strange last name.
    let rows = api.rows(&session, "SELECT * FROM Contacts WHERE lastname = 'x'' OR ''1''=''1';").await;
    assert!(rows.is_empty());
    // A literal on the left is lexed as a column name, and refused as one (observed on 8.2.0).
    let v = api.query(&session, "SELECT * FROM Contacts WHERE lastname = 'x' OR '1'='1';").await;
    assert_eq!(err(&v), pair("ACCESS_DENIED", "Permission to access '1' attribute denied."));

    let v = api.query(&session, r"SELECT * FROM Contacts WHERE lastname = 'O\'Brien';").await;
    assert_eq!(err(&v).0, "QUERY_SYNTAX_ERROR");
    let v = api.query(&session, r#"SELECT * FROM Contacts WHERE lastname = "Smith";"#).await;
    assert_eq!(err(&v), pair("INTERNAL_SERVER_ERROR", "Unknown Error while processing request"));
}

#[tokio::test]
async fn syntax_errors_carry_the_parser_message() {
    let api = Api::start().await;
    let session = api.login().await;
    assert_eq!(
        err(&api.query(&session, "SELECT * FROM Contacts").await),
        pair(
            "QUERY_SYNTAX_ERROR",
            "Syntax Error on line 1: token 'Contacts' Unexpected End of Input(0), expected one of: SEMICOLON"
        )
    );
    assert_eq!(
        err(&api.query(&session, "SELEC * FROM Contacts;").await),
        pair(
            "QUERY_SYNTAX_ERROR",
            "Syntax Error on line 1: token 'SELEC' Unexpected Unknown(SELEC), expected one of: SELECT"
        )
    );
    assert_eq!(
        err(&api.query(&session, "SELECT account_id.accountname FROM Contacts;").await),
        pair("INTERNAL_SERVER_ERROR", "Unknown Error while processing request")
    );
    assert_eq!(
        err(&api.query(&session, "SELECT firstname, nosuchfield FROM Contacts;").await),
        pair("ACCESS_DENIED", "Permission to access '.nosuchfield.' attribute denied.")
    );
    assert_eq!(
        err(&api.query(&session, "SELECT * FROM Contacts WHERE nosuch = 'a';").await),
        pair("ACCESS_DENIED", "Permission to access nosuch attribute denied.")
    );
    assert_eq!(
        err(&api.query(&session, "SELECT * FROM contacts;").await),
        pair("ACCESS_DENIED", "Permission to perform the operation is denied for name : contacts")
    );
    assert_eq!(
        err(&api.query(&session, "SELECT * FROM NoSuchModule;").await).1,
        "Permission to perform the operation is denied for name : NoSuchModule"
    );
    // Keywords are case-insensitive.
    ok(&api.query(&session, "select * from Contacts where lastname like '%' order by id asc limit 0, 5;").await);
}

#[tokio::test]
async fn like_in_and_or_and_comparisons() {
    let api = Api::start().await;
    let session = api.login().await;
    let a = api.sim.insert_record("Contacts", [("firstname", "Ann"), ("lastname", "Smith"), ("phone", "N14-100")]);
    let b = api.sim.insert_record("Contacts", [("firstname", "Bob"), ("lastname", "smithers"), ("phone", "N15-200")]);
    let c = api.sim.insert_record("Contacts", [("firstname", "Cy"), ("lastname", "Jones"), ("phone", "100% sure")]);
    let q = |where_: &str| format!("SELECT firstname FROM Contacts WHERE {where_} ORDER BY id;");
    let check = |where_: &'static str, expected: Vec<&String>| {
        let (api, session) = (&api, &session);
        let query = q(where_);
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        async move {
            let rows = api.rows(session, &query).await;
            assert_eq!(ids(&rows), expected, "{query}");
        }
    };
    check("lastname LIKE 'smith%'", vec![&a, &b]).await;
    check("lastname LIKE '%ITH'", vec![&a]).await;
    check("phone LIKE 'N14%'", vec![&a]).await;
    check("phone LIKE '100%'", vec![&c]).await;
    // `\%` is a literal percent sign in a MySQL LIKE pattern.
    check("phone LIKE '%\\%%'", vec![&c]).await;
    check("lastname = 'SMITH'", vec![&a]).await;
    check("lastname IN ('Jones', 'smith')", vec![&a, &c]).await;
    check("lastname != 'Smith'", vec![&b, &c]).await;
    check("firstname = 'Ann' OR firstname = 'Cy'", vec![&a, &c]).await;
    check("firstname = 'Ann' OR firstname = 'Bob' AND lastname = 'Jones'", vec![&a]).await;
    // `(a OR b) AND c` must be written as a sum of products: no grouping parentheses in 8.2.
    check("firstname = 'Ann' AND lastname LIKE 'smith%' OR firstname = 'Bob' AND lastname LIKE 'smith%'", vec![&a, &b])
        .await;
    let v = api.query(&session, "SELECT firstname FROM Contacts WHERE (firstname = 'Ann');").await;
    assert_eq!(
        err(&v),
        pair(
            "QUERY_SYNTAX_ERROR",
            "Syntax Error on line 1: token '(' Unexpected PARENOPEN((), expected one of: COLUMNNAME"
        )
    );
    let v = api.query(&session, "SELECT firstname FROM Contacts WHERE lastname <> 'Smith';").await;
    assert_eq!(
        err(&v),
        pair("QUERY_SYNTAX_ERROR", "Syntax Error on line 1: token '>' Unexpected GT(>), expected one of: VALUE")
    );
    check("firstname > 'B'", vec![&b, &c]).await;
    check("firstname >= 'Bob'", vec![&b, &c]).await;
    check("firstname < 'Bob'", vec![&a]).await;
    check("firstname <= 'Bob'", vec![&a, &b]).await;
    let rows = api.rows(&session, &format!("SELECT firstname FROM Contacts WHERE id = '{b}';")).await;
    assert_eq!(ids(&rows), vec![b.clone()]);
    let rows = api.rows(&session, &format!("SELECT firstname FROM Contacts WHERE id IN ('{a}', '{c}');")).await;
    assert_eq!(ids(&rows), vec![a.clone(), c.clone()]);
}

#[tokio::test]
async fn id_comparisons_are_numeric_keysets() {
    let api = Api::start().await;
    let session = api.login().await;
    let all = people(&api, 12, "Key");
    // 12x9 < 12x10 numerically, though not as text.
    let rows = api.rows(&session, "SELECT lastname FROM Contacts WHERE id > '12x9' LIMIT 3;").await;
    assert_eq!(ids(&rows), all[9..12].to_vec());
    let rows = api.rows(&session, "SELECT lastname FROM Contacts WHERE id <= '12x2' ORDER BY id DESC;").await;
    assert_eq!(ids(&rows), vec![all[1].clone(), all[0].clone()]);
}

#[tokio::test]
async fn paging_250_records_by_id_returns_each_exactly_once() {
    let api = Api::start().await;
    let session = api.login().await;
    let all = people(&api, 250, "Same");
    let mut seen = Vec::new();
    for offset in [0, 100, 200] {
        let rows = api.rows(&session, &format!("SELECT firstname FROM Contacts ORDER BY id LIMIT {offset},100;")).await;
        assert_eq!(rows.len(), if offset == 200 { 50 } else { 100 });
        seen.extend(ids(&rows));
    }
    assert_eq!(seen, all);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 250);
    let rows = api.rows(&session, "SELECT firstname FROM Contacts ORDER BY id LIMIT 300,100;").await;
    assert!(rows.is_empty());
}

#[tokio::test]
async fn at_most_100_rows_per_call() {
    let api = Api::start().await;
    let session = api.login().await;
    people(&api, 150, "Cap");
    assert_eq!(api.rows(&session, "SELECT * FROM Contacts;").await.len(), 100);
    assert_eq!(api.rows(&session, "SELECT * FROM Contacts LIMIT 150;").await.len(), 100);
    assert_eq!(api.rows(&session, "SELECT * FROM Contacts LIMIT 7;").await.len(), 7);
    assert_eq!(api.rows(&session, "SELECT * FROM Contacts LIMIT 140, 500;").await.len(), 10);
    assert_eq!(api.rows(&session, "SELECT * FROM Contacts LIMIT 0, 1000;").await.len(), 100);
}

#[tokio::test]
async fn count_star_is_a_string_count() {
    let api = Api::start().await;
    let session = api.login().await;
    people(&api, 150, "Counted");
    people(&api, 3, "Other");
    let rows = api.rows(&session, "SELECT count(*) FROM Contacts;").await;
    assert_eq!(rows, vec![json!({"count": "153"})]);
    let rows = api.rows(&session, "SELECT COUNT(*) FROM Contacts WHERE lastname = 'Counted';").await;
    assert_eq!(rows, vec![json!({"count": "150"})]);
    let rows = api.rows(&session, "SELECT count(*) FROM Contacts WHERE lastname = 'Nobody';").await;
    assert_eq!(rows, vec![json!({"count": "0"})]);
    assert!(api.rows(&session, "SELECT * FROM Contacts WHERE lastname = 'Nobody';").await.is_empty());
}

#[tokio::test]
async fn projections_append_id_and_carry_no_label() {
    let api = Api::start().await;
    let session = api.login().await;
    let id = api.sim.insert_record("Contacts", [("firstname", "Ada"), ("lastname", "Lovelace")]);
    let text = api
        .raw_get(&[
            ("operation", "query"),
            ("sessionName", &session),
            ("query", "SELECT lastname, firstname FROM Contacts;"),
        ])
        .await
        .text()
        .await
        .expect("body");
    assert_eq!(
        text,
        format!(r#"{{"success":true,"result":[{{"lastname":"Lovelace","firstname":"Ada","id":"{id}"}}]}}"#)
    );
    let rows = api.rows(&session, "SELECT id, lastname FROM Contacts;").await;
    assert_eq!(rows, vec![json!({"id": id, "lastname": "Lovelace"})]);
    let rows = api.rows(&session, "SELECT * FROM Contacts;").await;
    assert!(rows[0].get("label").is_none());
    assert_eq!(rows[0]["contact_no"], "CON1");
    assert_eq!(rows[0].as_object().map(|o| o.len()), Some(49));
    let users = api.rows(&session, "SELECT user_name FROM Users;").await;
    assert_eq!(users, vec![json!({"user_name": "admin", "id": "19x1"})]);
}

#[tokio::test]
async fn order_by_several_columns_and_directions() {
    let api = Api::start().await;
    let session = api.login().await;
    let b1 = api.sim.insert_record("Contacts", [("lastname", "B"), ("firstname", "1")]);
    let a1 = api.sim.insert_record("Contacts", [("lastname", "a"), ("firstname", "1")]);
    let b2 = api.sim.insert_record("Contacts", [("lastname", "B"), ("firstname", "2")]);
    let rows = api.rows(&session, "SELECT lastname FROM Contacts ORDER BY lastname, id;").await;
    assert_eq!(ids(&rows), vec![a1.clone(), b1.clone(), b2.clone()]);
    // One direction, after the last column, applying to it only (MySQL `ORDER BY lastname, id DESC`).
    let rows = api.rows(&session, "SELECT lastname FROM Contacts ORDER BY lastname, id DESC;").await;
    assert_eq!(ids(&rows), vec![a1.clone(), b2.clone(), b1.clone()]);
    assert_eq!(
        err(&api.query(&session, "SELECT lastname FROM Contacts ORDER BY lastname DESC, id DESC;").await),
        pair("QUERY_SYNTAX_ERROR", "Syntax Error on line 1: token ',' Unexpected COMMA(,), expected one of: SEMICOLON")
    );
    let rows = api.rows(&session, "SELECT lastname FROM Contacts ORDER BY id DESC LIMIT 1;").await;
    assert_eq!(ids(&rows), vec![b2]);
    // An unknown ORDER BY column makes invalid SQL, which 8.2.0 answers with no rows.
    assert!(api.rows(&session, "SELECT lastname FROM Contacts ORDER BY nosuch;").await.is_empty());
}

#[tokio::test]
async fn ties_are_not_returned_in_a_stable_order() {
    let api = Api::start().await;
    let session = api.login().await;
    people(&api, 150, "Tie");
    let mut firsts = HashSet::new();
    for _ in 0..10 {
        let rows = api.rows(&session, "SELECT lastname FROM Contacts ORDER BY lastname LIMIT 1;").await;
        firsts.extend(ids(&rows));
    }
    assert!(firsts.len() > 1, "ties should come back in arbitrary order");

    let api = Api::start_with(|o| o.shuffle_ties = false).await;
    let session = api.login().await;
    let all = people(&api, 20, "Tie");
    let rows = api.rows(&session, "SELECT lastname FROM Contacts ORDER BY lastname LIMIT 1;").await;
    assert_eq!(ids(&rows), vec![all[0].clone()]);
}

#[tokio::test]
async fn modifiedtime_watermarks() {
    let api = Api::start().await;
    let session = api.login().await;
    let old = api.sim.insert_record("Contacts", [("lastname", "Old")]);
    api.clock.advance(Duration::from_secs(3600));
    let new = api.sim.insert_record("Contacts", [("lastname", "New")]);
    let rows = api.rows(&session, "SELECT lastname FROM Contacts WHERE modifiedtime > '2023-11-14 22:13:20';").await;
    assert_eq!(ids(&rows), vec![new.clone()]);
    let rows = api
        .rows(
            &session,
            "SELECT lastname FROM Contacts WHERE modifiedtime >= '2023-11-14 22:13:20' ORDER BY modifiedtime, id;",
        )
        .await;
    assert_eq!(ids(&rows), vec![old.clone(), new.clone()]);
    let rows = api.rows(&session, "SELECT lastname FROM Contacts WHERE modifiedtime > '2023-11-14';").await;
    assert_eq!(ids(&rows), vec![old, new]);
}

#[tokio::test]
async fn references_match_by_id() {
    let api = Api::start().await;
    let session = api.login().await;
    let c = api.sim.insert_record("Contacts", [("lastname", "Caller")]);
    let other = api.sim.insert_record("Contacts", [("lastname", "Other")]);
    let call =
        api.sim.insert_record("Events", [("subject", "Call 42"), ("activitytype", "Call"), ("contact_id", c.as_str())]);
    api.sim.insert_record("Events", [("subject", "Call 43"), ("contact_id", other.as_str())]);
    let rows = api.rows(&session, &format!("SELECT subject FROM Events WHERE contact_id='{c}';")).await;
    assert_eq!(rows, vec![json!({"subject": "Call 42", "id": call})]);
    let rows =
        api.rows(&session, "SELECT subject FROM Events WHERE assigned_user_id='19x1' AND description LIKE '%';").await;
    assert_eq!(rows.len(), 2);
}

/// The grouped queries crmhub's connectors used to send are refused, as on Vtiger 8.2.0.
#[tokio::test]
async fn queries_crmhub_used_to_send_are_refused() {
    let api = Api::start().await;
    let session = api.login().await;
    people(&api, 3, "Red");
    let search = "SELECT id, firstname FROM Contacts WHERE ((firstname LIKE '%red%' OR lastname LIKE '%red%')) \
                  OR email LIKE '%red%' ORDER BY id LIMIT 0,100;";
    assert_eq!(
        err(&api.query(&session, search).await),
        pair(
            "QUERY_SYNTAX_ERROR",
            "Syntax Error on line 1: token '(' Unexpected PARENOPEN((), expected one of: COLUMNNAME"
        )
    );
    let watermark = "SELECT * FROM Contacts WHERE (modifiedtime > '2023-11-14 22:13:20' OR \
                     (modifiedtime = '2023-11-14 22:13:20' AND id > '0x0')) ORDER BY modifiedtime, id LIMIT 0,100;";
    assert_eq!(
        err(&api.query(&session, watermark).await),
        pair(
            "QUERY_SYNTAX_ERROR",
            "Syntax Error on line 1: token '(' Unexpected PARENOPEN((), expected one of: COLUMNNAME"
        )
    );
    // Their flat equivalents work; AND binds tighter than OR.
    let flat = "SELECT id, firstname FROM Contacts WHERE firstname LIKE '%red%' OR lastname LIKE '%red%' \
                OR email LIKE '%red%' ORDER BY id LIMIT 0,100;";
    assert_eq!(api.rows(&session, flat).await.len(), 3);
    let flat = "SELECT * FROM Contacts WHERE modifiedtime > '2023-11-14 22:13:20' OR \
                modifiedtime = '2023-11-14 22:13:20' AND id > '0x0' ORDER BY modifiedtime, id LIMIT 0,100;";
    assert_eq!(api.rows(&session, flat).await.len(), 3);
    // A long flat OR chain (60 conditions) is fine.
    let chain: Vec<String> = (0..60).map(|i| format!("firstname = 'Person {i}'")).collect();
    let long = format!("SELECT id FROM Contacts WHERE {};", chain.join(" OR "));
    assert_eq!(api.rows(&session, &long).await.len(), 3);
}
