use std::time::Duration;

use serde_json::{Value, json};

use super::super::{CallDirection, CallStatus, NewContact, TicketPriority};
use super::{Api, T0};

fn call_body(contact_id: &str) -> Value {
    json!({"external_id": "pbx-77", "contact_id": contact_id, "direction": "inbound",
           "from": "+84912345678", "to": "1900", "started_at": T0 - 120, "status": "ringing"})
}

#[tokio::test]
async fn calls_are_created_updated_and_found_by_external_id() {
    let api = Api::start().await;
    let contact = api.sim.insert_contact(NewContact::new("Lovelace"));
    let token = api.login().await;

    let created = api.post(&token, "/calls", call_body(&contact)).await;
    assert_eq!(
        created.data(201),
        &json!({"id": "call_1", "external_id": "pbx-77", "contact_id": contact, "direction": "inbound",
                "from": "+84912345678", "to": "1900", "started_at": T0 - 120, "duration": null,
                "status": "ringing", "notes": null, "created_at": T0, "updated_at": T0})
    );

    let found = api.get(&token, "/calls?external_id=pbx-77").await;
    assert_eq!(found.ids(), ["call_1"]);
    assert_eq!(found.body["meta"]["total"], 1);
    assert!(api.get(&token, "/calls?external_id=pbx-78").await.ids().is_empty());

    // The final update: only the fields sent change; null clears an optional one.
    api.clock.advance(Duration::from_secs(90));
    let update = json!({"status": "completed", "duration": 75, "notes": "Wants a callback", "to": null});
    let updated = api.put(&token, "/calls/call_1", update).await;
    let data = updated.data(200);
    assert_eq!((data["status"].as_str(), data["duration"].as_u64()), (Some("completed"), Some(75)));
    assert_eq!((data["to"].clone(), data["from"].clone()), (Value::Null, json!("+84912345678")));
    assert_eq!((data["created_at"].as_i64(), data["updated_at"].as_i64()), (Some(T0), Some(T0 + 90)));

    let calls = api.sim.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].status, CallStatus::Completed);
    assert_eq!(calls[0].direction, CallDirection::Inbound);
    assert_eq!(calls[0].notes.as_deref(), Some("Wants a callback"));

    // external_id is not unique: a second POST is a second call, and the lookup shows both.
    api.post(&token, "/calls", call_body(&contact)).await.data(201);
    assert_eq!(api.get(&token, "/calls?external_id=pbx-77").await.ids(), ["call_1", "call_2"]);
    assert_eq!(api.get(&token, "/calls").await.body["meta"]["total"], 2);
}

#[tokio::test]
async fn the_call_lookup_refuses_unknown_parameters_and_a_blank_external_id() {
    let api = Api::start().await;
    let contact = api.sim.insert_contact(NewContact::new("Lovelace"));
    let token = api.login().await;
    api.post(&token, "/calls", call_body(&contact)).await.data(201);
    // Ignored, either would list every call, and a client looking one up would take the first.
    api.get(&token, "/calls?externalId=pbx-78").await.assert_error(422, "validation_failed", Some("externalId"));
    api.get(&token, "/calls?external_id=pbx-78&q=x").await.assert_error(422, "validation_failed", Some("q"));
    api.get(&token, "/calls?external_id=").await.assert_error(422, "validation_failed", Some("external_id"));
    let found = api.get(&token, "/calls?external_id=pbx-77&page=1&per_page=1").await;
    assert_eq!(found.ids(), ["call_1"]);
}

#[tokio::test]
async fn call_validation_names_the_field() {
    let api = Api::start().await;
    let contact = api.sim.insert_contact(NewContact::new("Lovelace"));
    let token = api.login().await;
    let with = |key: &str, value: Value| {
        let mut body = call_body(&contact);
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = call_body(&contact);
        body.as_object_mut().map(|o| o.remove(key));
        body
    };
    for (body, field) in [
        (without("external_id"), "external_id"),
        (with("external_id", json!("")), "external_id"),
        (without("direction"), "direction"),
        (with("direction", json!("sideways")), "direction"),
        (without("started_at"), "started_at"),
        (with("started_at", json!("2024-01-01")), "started_at"),
        (with("started_at", json!(-5)), "started_at"),
        (with("started_at", json!(1.5)), "started_at"),
        (without("status"), "status"),
        (with("status", json!("exploded")), "status"),
        (with("duration", json!(-1)), "duration"),
        (with("contact_id", json!("c_999")), "contact_id"),
        (with("contact_id", json!(1)), "contact_id"),
    ] {
        api.post(&token, "/calls", body).await.assert_error(422, "validation_failed", Some(field));
    }
    // Without a contact is fine (an unknown caller).
    api.post(&token, "/calls", without("contact_id")).await.data(201);
    let id = "call_1";
    for (body, field) in [
        (json!({"status": null}), "status"),
        (json!({"external_id": ""}), "external_id"),
        (json!({"contact_id": "c_999"}), "contact_id"),
        (json!({"direction": "up"}), "direction"),
    ] {
        api.put(&token, &format!("/calls/{id}"), body).await.assert_error(422, "validation_failed", Some(field));
    }
    api.put(&token, "/calls/call_9", json!({"status": "missed"})).await.assert_error(404, "not_found", None);
    api.put(&token, "/calls/9", json!({"status": "missed"})).await.assert_error(404, "not_found", None);
    assert_eq!(api.sim.calls().len(), 1);
}

#[tokio::test]
async fn notes_need_a_live_contact_and_a_body() {
    let api = Api::start().await;
    let contact = api.sim.insert_contact(NewContact::new("Lovelace"));
    let token = api.login().await;
    let note = api.post(&token, "/notes", json!({"contact_id": contact, "body": "SMS received: hi"})).await;
    assert_eq!(
        note.data(201),
        &json!({"id": "n_1", "contact_id": contact, "body": "SMS received: hi", "author": "api", "created_at": T0})
    );
    for (body, field) in [
        (json!({"contact_id": "c_42", "body": "x"}), "contact_id"),
        (json!({"body": "x"}), "contact_id"),
        (json!({"contact_id": contact}), "body"),
        (json!({"contact_id": contact, "body": " "}), "body"),
    ] {
        api.post(&token, "/notes", body).await.assert_error(422, "validation_failed", Some(field));
    }
    assert_eq!(api.sim.notes().len(), 1);
}

#[tokio::test]
async fn tickets_have_a_title_and_a_priority() {
    let api = Api::start().await;
    let contact = api.sim.insert_contact(NewContact::new("Lovelace"));
    let token = api.login().await;
    let body =
        json!({"contact_id": contact, "title": "Login broken", "description": "Since Monday", "priority": "high"});
    let ticket = api.post(&token, "/tickets", body).await;
    assert_eq!(
        ticket.data(201),
        &json!({"id": "t_1", "contact_id": contact, "title": "Login broken", "description": "Since Monday",
                "priority": "high", "status": "open", "created_at": T0})
    );
    let bare = api.post(&token, "/tickets", json!({"title": "No contact", "priority": "low"})).await;
    assert_eq!(bare.data(201)["contact_id"], Value::Null);
    for (body, field) in [
        (json!({"priority": "low"}), "title"),
        (json!({"title": "x"}), "priority"),
        (json!({"title": "x", "priority": "critical"}), "priority"),
        (json!({"title": "x", "priority": "low", "contact_id": "c_9"}), "contact_id"),
    ] {
        api.post(&token, "/tickets", body).await.assert_error(422, "validation_failed", Some(field));
    }
    let tickets = api.sim.tickets();
    assert_eq!(tickets.len(), 2);
    assert_eq!(tickets[0].priority, TicketPriority::High);
}

#[tokio::test]
async fn activities_list_notes_calls_and_tickets_newest_first() {
    let api = Api::start().await;
    let contact = api.sim.insert_contact(NewContact::new("Lovelace"));
    let other = api.sim.insert_contact(NewContact::new("Hopper"));
    let token = api.login().await;

    // A call that started two minutes before "now".
    api.post(&token, "/calls", call_body(&contact)).await.data(201);
    api.put(&token, "/calls/call_1", json!({"status": "completed", "duration": 75, "notes": "Asked about invoices"}))
        .await
        .data(200);
    api.clock.advance(Duration::from_secs(60));
    api.post(&token, "/notes", json!({"contact_id": contact, "body": "First line\nsecond line"})).await.data(201);
    api.post(&token, "/notes", json!({"contact_id": other, "body": "not this one"})).await.data(201);
    // Same second as the note: recorded later, so listed first.
    let ticket = json!({"contact_id": contact, "title": "Refund", "priority": "normal"});
    api.post(&token, "/tickets", ticket).await.data(201);
    let outbound = json!({"external_id": "pbx-78", "contact_id": contact, "direction": "outbound",
                          "started_at": T0 - 3600, "status": "missed"});
    api.post(&token, "/calls", outbound).await.data(201);

    let reply = api.get(&token, &format!("/contacts/{contact}/activities")).await;
    assert_eq!(
        reply.data(200),
        &json!([
            {"type": "ticket", "subject": "Refund", "body": "", "occurred_at": "2023-11-14T22:14:20Z"},
            {"type": "note", "subject": "First line", "body": "First line\nsecond line",
             "occurred_at": "2023-11-14T22:14:20Z"},
            {"type": "call", "subject": "Inbound call from +84912345678",
             "body": "completed, 75 s\nAsked about invoices", "occurred_at": "2023-11-14T22:11:20Z"},
            {"type": "call", "subject": "Outbound call", "body": "missed", "occurred_at": "2023-11-14T21:13:20Z"},
        ])
    );
    assert_eq!(
        api.get(&token, &format!("/contacts/{other}/activities")).await.data(200).as_array().map(Vec::len),
        Some(1)
    );
    api.get(&token, "/contacts/c_99/activities").await.assert_error(404, "not_found", None);
}

#[tokio::test]
async fn seeded_contacts_have_a_history() {
    let api = Api::start().await;
    let ids = api.sim.seed_demo_contacts(8);
    let token = api.login().await;
    for id in &ids {
        let activities = api.get(&token, &format!("/contacts/{id}/activities")).await;
        let list = activities.data(200).as_array().cloned().unwrap_or_default();
        assert!(!list.is_empty(), "{id} has no history");
        let times: Vec<&str> = list.iter().filter_map(|a| a["occurred_at"].as_str()).collect();
        let mut sorted = times.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(times, sorted, "newest first for {id}");
    }
    assert_eq!(api.get(&token, "/calls?external_id=pbx-1001-0").await.ids().len(), 1);
}
