//! The agent UI's requests during a call (issue 10): a ticket on the call, a contact (linked to
//! the call's log), a text message (noted on the contact). Each is written once per
//! `Idempotency-Key`, refuses bad input with nothing written, and says `unsupported` where the
//! connector or the channel's settings fall short.

use std::sync::Arc;

use crmhub_sim::sms::{SmsFault, SmsSimHandle, SmsSimOptions};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::calls::{CallCentre, event, started, whole_call};
use crate::helpers::error_of;

const REPLAYED: &str = "Idempotent-Replayed";

/// Posts `body` to `path` with the channel key and, when given, an `Idempotency-Key`.
async fn post(centre: &CallCentre, path: &str, key: Option<&str>, body: impl Into<reqwest::Body>) -> Response {
    let mut request = centre
        .app
        .client
        .post(centre.app.url(path))
        .bearer_auth(&centre.key)
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.unwrap()
}

/// A request that must be created: its answer, and whether it was a replay.
async fn created(centre: &CallCentre, path: &str, key: Option<&str>, body: &Value) -> (Value, bool) {
    let response = post(centre, path, key, body.to_string()).await;
    let status = response.status();
    let replayed = response.headers().get(REPLAYED).is_some_and(|v| v == "true");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{path} {body} → {answer}");
    (answer, replayed)
}

/// A request that must be refused with `status`: the field its error names.
async fn refused(centre: &CallCentre, path: &str, key: Option<&str>, body: &str, status: u16) -> Option<String> {
    let response = post(centre, path, key, body.to_owned()).await;
    assert_eq!(response.status(), status, "{path} {body}");
    error_of(response).await.2
}

fn ticket_path(call_id: &str) -> String {
    format!("/t/acme/calls/{call_id}/ticket")
}

fn tickets(centre: &CallCentre) -> usize {
    centre.sim.records("HelpDesk").len()
}

fn contacts(centre: &CallCentre) -> usize {
    centre.sim.records("Contacts").len()
}

/// The SMS simulator as the channel's `sms_connection_id` (a `signedsms` template connection).
async fn with_sms(centre: &CallCentre) -> SmsSimHandle {
    let sms = crmhub_sim::sms::spawn(SmsSimOptions::default()).await;
    let id = centre
        .app
        .create_connection(
            "acme",
            &json!({"name": "SMS", "kind": "template:signedsms", "host": sms.base_url(),
                    "credentials": {"api_key": "sms-key", "api_secret": "sms-secret"}}),
        )
        .await;
    let settings = json!({"connection_id": centre.connection, "sms_connection_id": id});
    let configured = centre.app.admin_send(Method::PUT, "/admin/v1/tenants/acme/channels/calls", &settings).await;
    assert_eq!(configured.status(), 200, "{}", configured.text().await.unwrap());
    sms
}

/// Two requests at once with one key: both answered alike, one of them a replay.
async fn twice_at_once(centre: &Arc<CallCentre>, path: &str, key: &str, body: &Value) {
    let both: Vec<_> = (0..2)
        .map(|_| {
            let (centre, path, key, body) = (centre.clone(), path.to_owned(), key.to_owned(), body.clone());
            tokio::spawn(async move { created(&centre, &path, Some(&key), &body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for answer in both {
        answers.push(answer.await.unwrap());
    }
    assert_eq!(answers[0].0, answers[1].0, "the same answer for both");
    assert_eq!(answers.iter().filter(|(_, replayed)| *replayed).count(), 1, "{answers:?}");
}

#[tokio::test]
async fn a_ticket_goes_on_the_calls_contact_and_is_kept_among_its_events() {
    let centre = CallCentre::start().await;
    centre.accept(&started("t-1", "0912345678")).await;
    let body =
        json!({"title": "  Quote for 20 chairs ", "description": "Wants delivery by Friday", "priority": "high"});
    let (answer, replayed) = created(&centre, &ticket_path("t-1"), Some("k-1"), &body).await;
    assert!(!replayed);
    assert_eq!(answer["contact_id"], centre.lan.as_str(), "the contact the pop matched: {answer}");
    assert_eq!(answer["call_id"], "t-1");
    let records = centre.sim.records("HelpDesk");
    assert_eq!(records.len(), 1, "{records:?}");
    let ticket = &records[0];
    assert_eq!(answer["ticket_id"], ticket["id"].as_str());
    assert_eq!(ticket["ticket_title"], "Quote for 20 chairs");
    assert_eq!(ticket["ticketpriorities"], "High");
    assert_eq!(ticket["description"], "Wants delivery by Friday");
    assert_eq!(ticket["contact_id"], centre.lan);
    assert_eq!(ticket["parent_id"], centre.account, "the ticket shows on Lan's organization too");

    let view = centre.call_admin("t-1").await;
    let kept: Vec<&Value> =
        view["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "ticket.created").collect();
    assert_eq!(kept.len(), 1, "{view}");
    assert_eq!(kept[0]["effect"], "applied");
    assert_eq!(kept[0]["body"]["ticket_id"], answer["ticket_id"]);
    assert_eq!(view["crm"]["up_to_date"], true, "a ticket changes nothing the call's log shows");

    // A contact named in the body wins; a call nobody matched gets a ticket without one.
    let other = centre.sim.insert_record("Contacts", [("lastname", "Tran")]);
    let (answer, _) =
        created(&centre, &ticket_path("t-1"), None, &json!({"title": "For Tran", "contact_id": other})).await;
    assert_eq!(answer["contact_id"], other.as_str());
    centre.accept(&started("t-none", "0987654321")).await;
    let (answer, _) = created(&centre, &ticket_path("t-none"), None, &json!({"title": "Unknown caller"})).await;
    assert_eq!(answer["contact_id"], Value::Null, "{answer}");
    let unlinked = centre.sim.records("HelpDesk").into_iter().find(|t| t["ticket_title"] == "Unknown caller").unwrap();
    assert_eq!(unlinked.get("contact_id").map(String::as_str).unwrap_or(""), "");
    assert_eq!(unlinked["ticketpriorities"], "Normal");
}

#[tokio::test]
async fn a_repeated_ticket_request_writes_one_ticket() {
    let centre = Arc::new(CallCentre::start().await);
    centre.accept(&started("t-2", "0912345678")).await;
    centre.accept(&started("t-3", "0912345678")).await;
    let body = json!({"title": "Broken chair"});
    let (first, _) = created(&centre, &ticket_path("t-2"), Some("k-2"), &body).await;
    let (again, replayed) = created(&centre, &ticket_path("t-2"), Some("k-2"), &body).await;
    assert!(replayed, "the repeat is a replay");
    assert_eq!(again, first);
    assert_eq!(tickets(&centre), 1);

    let other = json!({"title": "Broken table"}).to_string();
    assert_eq!(
        refused(&centre, &ticket_path("t-2"), Some("k-2"), &other, 422).await.as_deref(),
        Some("Idempotency-Key")
    );
    // The call is part of the request: the same key and body for another call is another request.
    let elsewhere = refused(&centre, &ticket_path("t-3"), Some("k-2"), &body.to_string(), 422).await;
    assert_eq!(elsewhere.as_deref(), Some("Idempotency-Key"));
    assert_eq!(tickets(&centre), 1, "nothing new was written");
    let view = centre.call_admin("t-2").await;
    assert_eq!(view["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "ticket.created").count(), 1);

    twice_at_once(&centre, &ticket_path("t-3"), "k-3", &json!({"title": "Double click"})).await;
    assert_eq!(tickets(&centre), 2, "two requests at once with one key make one ticket");
}

#[tokio::test]
async fn bad_ticket_requests_are_refused_with_nothing_written() {
    let centre = CallCentre::start().await;
    centre.accept(&started("t-bad", "0912345678")).await;
    let path = ticket_path("t-bad");
    let long = "x".repeat(256);
    let cases = [
        (json!({"description": "no title"}), "title"),
        (json!({"title": "   "}), "title"),
        (json!({"title": long}), "title"),
        (json!({"title": "ok", "priority": "asap"}), "priority"),
        (json!({"title": "ok", "urgency": "high"}), "urgency"),
        (json!({"title": 7}), "title"),
    ];
    for (body, field) in cases {
        let named = refused(&centre, &path, Some(&format!("bad-{field}")), &body.to_string(), 422).await;
        assert_eq!(named.as_deref(), Some(field), "{body}");
    }
    refused(&centre, &path, Some("not-json"), "a ticket please", 400).await;
    let ok = json!({"title": "ok"}).to_string();
    let missing = post(&centre, &ticket_path("no-such-call"), Some("missing-call"), ok.clone()).await;
    assert_eq!(error_of(missing).await.0, "not_found");
    refused(&centre, &path, Some("two words"), &ok, 400).await;
    refused(&centre, &path, Some(&"k".repeat(256)), &ok, 400).await;
    let widget = centre
        .app
        .admin_send(
            Method::POST,
            "/admin/v1/tenants/acme/channel-keys",
            &json!({"name": "widget", "scopes": ["widget"]}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_scope =
        centre.app.client.post(centre.app.url(&path)).bearer_auth(widget).body(ok.clone()).send().await.unwrap();
    assert_eq!(other_scope.status(), 403);
    assert_eq!(tickets(&centre), 0);
    let view = centre.call_admin("t-bad").await;
    assert_eq!(view["events"].as_array().unwrap().len(), 1, "only the call's own event: {view}");

    // A refused body never took its key: the same key with a good body goes through.
    let (answer, replayed) = created(&centre, &path, Some("bad-title"), &json!({"title": "ok"})).await;
    assert!(!replayed, "{answer}");
    // Nor did an unknown call: the key is free again once its first event arrives.
    centre.accept(&started("no-such-call", "0912345678")).await;
    let (_, replayed) =
        created(&centre, &ticket_path("no-such-call"), Some("missing-call"), &json!({"title": "ok"})).await;
    assert!(!replayed);
    assert_eq!(tickets(&centre), 2);
}

/// A CRM that finds contacts by phone and does nothing else.
const PHONE_ONLY_TEMPLATE: &str = r#"
name: phone-only
type: crm
fields: [{ name: token, secret: true, required: true }]
contact: { id: /id, name: /name }
endpoints:
  - name: find
    kind: get_data
    trigger: contact.find_by_phone
    url: "{{host}}/contacts"
    parameters:
      - { name: Authorization, kind: header, value: "Bearer {{credential.token}}" }
      - { name: phone, kind: query, value: "{{input.phone}}" }
    response: { records: /data }
"#;

#[tokio::test]
async fn a_connector_without_tickets_contacts_or_notes_is_unsupported() {
    let centre = CallCentre::start().await;
    centre.accept(&started("t-u", "0912345678")).await;
    centre.app.publish_template(PHONE_ONLY_TEMPLATE).await;
    let connection = centre
        .app
        .create_connection(
            "acme",
            &json!({"name": "Phones", "kind": "template:phone-only", "host": centre.sim.base_url(),
                    "credentials": {"token": "t"}}),
        )
        .await;
    let moved = centre
        .app
        .admin_send(Method::PUT, "/admin/v1/tenants/acme/channels/calls", &json!({"connection_id": connection}))
        .await;
    assert_eq!(moved.status(), 200, "{}", moved.text().await.unwrap());
    let before = centre.sim.request_count();
    for (path, body, capability) in [
        (ticket_path("t-u"), json!({"title": "Help"}), "ticket.create"),
        ("/t/acme/contacts".to_owned(), json!({"last_name": "Pham"}), "contact.create"),
        ("/t/acme/sms".to_owned(), json!({"to": "0912345678", "text": "Hi"}), "note.create"),
    ] {
        let response = post(&centre, &path, Some("u"), body.to_string()).await;
        assert_eq!(response.status(), 422, "{path}");
        let (code, message, _) = error_of(response).await;
        assert_eq!(code, "unsupported", "{path}");
        assert!(message.contains(capability), "{path}: {message}");
    }
    assert_eq!(centre.sim.request_count(), before, "nothing reached a CRM");
    assert_eq!((tickets(&centre), contacts(&centre)), (0, 1));
}

#[tokio::test]
async fn a_contact_is_created_once_per_key_and_refused_with_its_field() {
    let centre = Arc::new(CallCentre::start().await);
    let body = json!({"first_name": "Minh", "last_name": "Pham", "email": "minh@example.com",
                      "mobile": "0987 654 321", "title": "Buyer", "description": "Called about chairs"});
    let (answer, replayed) = created(&centre, "/t/acme/contacts", Some("c-1"), &body).await;
    assert!(!replayed);
    let contact = &answer["contact"];
    assert_eq!(contact["display_name"], "Minh Pham", "{answer}");
    assert_eq!((answer["call_id"].clone(), answer["linked"].clone()), (Value::Null, json!(false)));
    let stored = centre.sim.records("Contacts").into_iter().find(|c| c["lastname"] == "Pham").unwrap();
    assert_eq!(contact["id"], stored["id"].as_str());
    assert_eq!((stored["firstname"].as_str(), stored["mobile"].as_str()), ("Minh", "0987 654 321"));
    assert_eq!(stored["email"], "minh@example.com");

    let (again, replayed) = created(&centre, "/t/acme/contacts", Some("c-1"), &body).await;
    assert!(replayed);
    assert_eq!(again, answer);
    let other = json!({"last_name": "Pham", "first_name": "Mai"}).to_string();
    assert_eq!(
        refused(&centre, "/t/acme/contacts", Some("c-1"), &other, 422).await.as_deref(),
        Some("Idempotency-Key")
    );
    assert_eq!(contacts(&centre), 2, "Lan and Minh");
    twice_at_once(&centre, "/t/acme/contacts", "c-2", &json!({"last_name": "Vo"})).await;
    assert_eq!(contacts(&centre), 3, "two requests at once with one key make one contact");

    let cases = [
        (json!({"first_name": "No last name"}), "last_name"),
        (json!({"last_name": "  "}), "last_name"),
        (json!({"last_name": "Le", "email": "le-at-example"}), "email"),
        (json!({"last_name": "Le", "phone": "call me"}), "phone"),
        (json!({"last_name": "Le", "mobile": "12ab"}), "mobile"),
        (json!({"last_name": "Le", "company": "Lotus"}), "company"),
        (json!({"last_name": "Le", "call_id": ""}), "call_id"),
    ];
    for (body, field) in cases {
        let named = refused(&centre, "/t/acme/contacts", Some(&format!("bad-{field}")), &body.to_string(), 422).await;
        assert_eq!(named.as_deref(), Some(field), "{body}");
    }
    let unknown_call = json!({"last_name": "Le", "call_id": "no-such-call"}).to_string();
    assert_eq!(error_of(post(&centre, "/t/acme/contacts", None, unknown_call).await).await.0, "not_found");
    refused(&centre, "/t/acme/contacts", Some(""), &json!({"last_name": "Le"}).to_string(), 400).await;
    assert_eq!(contacts(&centre), 3, "nothing was written");
}

#[tokio::test]
async fn a_contact_created_during_a_call_becomes_the_calls_contact_in_its_log() {
    let centre = CallCentre::start().await;
    // An unknown caller's call is logged without a contact…
    for event in whole_call("c-new", "0987654321") {
        centre.accept(&event).await;
    }
    let report = centre.app.drain_jobs().await;
    assert_eq!((report.dead, report.pending), (0, 0), "{report:?}");
    assert_eq!(centre.logs_of("c-new")[0].get("contact_id").map(String::as_str).unwrap_or(""), "");
    // …until the agent creates the contact: the log is updated to link it.
    let body = json!({"last_name": "Pham", "mobile": "0987654321", "call_id": "c-new"});
    let (answer, _) = created(&centre, "/t/acme/contacts", Some("link"), &body).await;
    assert_eq!((answer["call_id"].as_str(), answer["linked"].as_bool()), (Some("c-new"), Some(true)), "{answer}");
    let pham = answer["contact"]["id"].as_str().unwrap().to_owned();
    let report = centre.app.drain_jobs().await;
    assert_eq!((report.dead, report.pending), (0, 0), "{report:?}");
    let logs = centre.logs_of("c-new");
    assert_eq!(logs.len(), 1, "the same record, updated: {logs:?}");
    assert_eq!(logs[0]["contact_id"], pham);
    assert_eq!(logs[0]["eventstatus"], "Held");
    let view = centre.call_admin("c-new").await;
    assert_eq!((view["contact_id"].as_str(), view["crm"]["up_to_date"].as_bool()), (Some(pham.as_str()), Some(true)));

    // A ringing call takes the contact too; its log, once there is one, carries it.
    centre.accept(&started("c-ring", "0977000111")).await;
    let body = json!({"last_name": "Do", "phone": "0977 000 111", "call_id": "c-ring"});
    let (answer, _) = created(&centre, "/t/acme/contacts", None, &body).await;
    let dung = answer["contact"]["id"].as_str().unwrap().to_owned();
    let jobs: Value = centre.app.admin_get("/admin/v1/jobs?kind=call.log").await.json().await.unwrap();
    assert_eq!(jobs["jobs"], json!([]), "a ringing call has no log to update yet");
    centre.accept(&event("call.ended", json!({"call_id": "c-ring", "duration_secs": 30}))).await;
    centre.app.drain_jobs().await;
    assert_eq!(centre.logs_of("c-ring")[0]["contact_id"], dung);

    // A call that has its contact keeps it.
    centre.accept(&started("c-lan", "0912345678")).await;
    let body = json!({"last_name": "Nguyen", "first_name": "Lan's colleague", "call_id": "c-lan"});
    let (answer, _) = created(&centre, "/t/acme/contacts", None, &body).await;
    assert_eq!(answer["linked"], false);
    assert_eq!(centre.call_admin("c-lan").await["contact_id"], centre.lan.as_str());
}

#[tokio::test]
async fn an_sms_goes_out_once_and_its_note_lands_on_the_contact() {
    let centre = Arc::new(CallCentre::start().await);
    let sms = with_sms(&centre).await;
    let body = json!({"to": "0912 345 678", "text": "Your quote is ready"});
    let (answer, replayed) = created(&centre, "/t/acme/sms", Some("s-1"), &body).await;
    assert!(!replayed);
    assert_eq!(answer, json!({"message_id": "m_1", "to": "+84912345678", "note": "queued"}));
    let sent = sms.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].to.as_str(), sent[0].text.as_str()), ("+84912345678", "Your quote is ready"));

    let (again, replayed) = created(&centre, "/t/acme/sms", Some("s-1"), &body).await;
    assert!(replayed);
    assert_eq!(again, answer);
    let other = json!({"to": "0912 345 678", "text": "Your quote is late"}).to_string();
    assert_eq!(refused(&centre, "/t/acme/sms", Some("s-1"), &other, 422).await.as_deref(), Some("Idempotency-Key"));
    assert_eq!(sms.message_count(), 1, "nothing more was sent");

    let report = centre.app.drain_jobs().await;
    assert_eq!((report.dead, report.pending), (0, 0), "{report:?}");
    let notes: Vec<_> =
        centre.sim.records("ModComments").into_iter().filter(|n| n.get("related_to") == Some(&centre.lan)).collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0]["commentcontent"].starts_with("SMS sent to +84912345678"), "{notes:?}");
    assert!(notes[0]["commentcontent"].ends_with("Your quote is ready"), "{notes:?}");

    twice_at_once(&centre, "/t/acme/sms", "s-2", &json!({"to": "+84912345678", "text": "See you"})).await;
    assert_eq!(sms.message_count(), 2, "two requests at once with one key send one message");
    centre.app.drain_jobs().await;
    assert_eq!(centre.sim.records("ModComments").len(), 2, "and make one note");
}

#[tokio::test]
async fn an_sms_during_a_call_is_noted_on_the_calls_contact() {
    let centre = CallCentre::start().await;
    let sms = with_sms(&centre).await;
    centre.accept(&started("s-call", "0912345678")).await;
    // Lan asked for the quote to go to her assistant's phone, which no contact has.
    let body = json!({"to": "0933 111 222", "text": "Quote attached", "call_id": "s-call"});
    created(&centre, "/t/acme/sms", None, &body).await;
    assert_eq!(sms.messages()[0].to, "+84933111222");
    let report = centre.app.drain_jobs().await;
    assert_eq!((report.dead, report.pending), (0, 0), "{report:?}");
    let notes = centre.sim.records("ModComments");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["related_to"], centre.lan);
}

#[tokio::test]
async fn an_sms_without_an_sms_connection_is_unsupported_and_bad_ones_are_refused() {
    let centre = CallCentre::start().await;
    let body = json!({"to": "0912345678", "text": "Hi"}).to_string();
    let response = post(&centre, "/t/acme/sms", Some("none"), body).await;
    assert_eq!(response.status(), 422);
    let (code, message, _) = error_of(response).await;
    assert_eq!(code, "unsupported");
    assert!(message.contains("sms_connection_id"), "{message}");

    let sms = with_sms(&centre).await;
    let cases = [
        (json!({"to": "call me", "text": "Hi"}), "to"),
        (json!({"to": "0912345678", "text": "  "}), "text"),
        (json!({"text": "Hi"}), "to"),
        (json!({"to": "0912345678", "text": "Hi", "media": "x.png"}), "media"),
        (json!({"to": "0912345678", "text": "Hi", "call_id": "x".repeat(201)}), "call_id"),
    ];
    for (body, field) in cases {
        let named = refused(&centre, "/t/acme/sms", Some(&format!("bad-{field}")), &body.to_string(), 422).await;
        assert_eq!(named.as_deref(), Some(field), "{body}");
    }
    let unknown_call = json!({"to": "0912345678", "text": "Hi", "call_id": "no-such-call"}).to_string();
    assert_eq!(error_of(post(&centre, "/t/acme/sms", None, unknown_call).await).await.0, "not_found");
    refused(&centre, "/t/acme/sms", Some("with space"), &json!({"to": "0912345678", "text": "Hi"}).to_string(), 400)
        .await;
    assert_eq!(sms.request_count(), 0, "nothing reached the provider");
    let stored: Value = centre.app.admin_get("/admin/v1/jobs?kind=sms.note").await.json().await.unwrap();
    assert_eq!(stored["jobs"], json!([]));
}

#[tokio::test]
async fn a_provider_outage_frees_the_key_for_a_retry() {
    let centre = CallCentre::start().await;
    let sms = with_sms(&centre).await;
    sms.set_fault(SmsFault::Http500);
    let body = json!({"to": "0912345678", "text": "Retry me"});
    let response = post(&centre, "/t/acme/sms", Some("retry"), body.to_string()).await;
    assert!(response.status().is_server_error(), "{}", response.status());
    assert_eq!(sms.message_count(), 0);
    sms.clear_fault();
    let (answer, replayed) = created(&centre, "/t/acme/sms", Some("retry"), &body).await;
    assert!(!replayed, "the failure was not kept: the retry ran again: {answer}");
    assert_eq!(sms.message_count(), 1);
}
