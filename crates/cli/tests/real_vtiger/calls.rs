//! Call logs and tickets on a real Vtiger, as the call channel writes them: a pre-log, an agent
//! editing the event in Vtiger, then the final log by the id crmhub kept.

use crmhub_core::crm::{CallDirection, CallLog, CallOutcome, CallStage, NewTicket};
use serde_json::json;

use crate::connectors::kit;
use crate::peer::{Role, tag, take};

#[tokio::test]
async fn the_final_log_keeps_an_agents_edit_and_a_ticket_names_the_organization() {
    let (peer, _turn) = take(Role::Shared).await;
    let ws = peer.ws().await;
    let tag = tag();
    let account = ws.create("Accounts", json!({"accountname": format!("Callers{tag} Ltd")})).await;
    let contact = ws.contact("Agent", &format!("Edits{tag}"), json!({"account_id": account})).await;
    let crm = kit().native(&peer);
    let call_id = format!("real-{tag}");
    let call = |stage, record_id| CallLog {
        call_id: call_id.clone(),
        stage,
        direction: CallDirection::Inbound,
        contact_id: Some(contact.clone()),
        from: Some("+84912345678".into()),
        to: None,
        started_at: 1_800_000_000,
        duration_secs: (stage == CallStage::Ended).then_some(95),
        outcome: (stage == CallStage::Ended).then_some(CallOutcome::Completed),
        agent: Some("agent-7".into()),
        notes: None,
        disposition: None,
        recording_url: None,
        record_id,
    };
    let answered = crm.log_call(&call(CallStage::Answered, None)).await.unwrap();
    let ours = ws.retrieve(&answered.record_id).await.unwrap()["description"].as_str().unwrap().to_owned();
    let before = "Wants a refund & a <b>callback</b>.";
    let after = "Call back Tuesday 10:00";
    let edited = format!("{before}\n\n{ours}\n{after}");
    ws.revise(json!({"id": answered.record_id, "description": edited})).await;

    let ended = crm.log_call(&call(CallStage::Ended, Some(answered.record_id.clone()))).await.unwrap();
    assert_eq!((ended.record_id.as_str(), ended.created), (answered.record_id.as_str(), false));
    let event = ws.retrieve(&answered.record_id).await.unwrap();
    let description = event["description"].as_str().unwrap();
    let marker = format!("[crmhub-call:{call_id}]");
    assert!(description.starts_with(&format!("{before}\n\n{marker}\n")), "{description:?}");
    assert!(description.ends_with(&format!("Duration: 95 s\n[/crmhub-call]\n{after}")), "{description:?}");
    assert_eq!(event["eventstatus"], "Held");
    let vtql = format!("SELECT id, description FROM Events WHERE description LIKE '%{marker}%';");
    assert_eq!(ws.query(&vtql).await.len(), 1, "one Events record carries the marker");

    let ticket = crm
        .create_ticket(&NewTicket {
            contact_id: Some(contact.clone()),
            title: format!("Refund {tag}"),
            description: None,
            priority: None,
        })
        .await
        .unwrap();
    let ticket = ws.retrieve(&ticket).await.unwrap();
    assert_eq!((ticket["parent_id"].as_str(), ticket["contact_id"].as_str()), (Some(&*account), Some(&*contact)));
}

/// What went wrong on a real 8.2 before crmhub serialised a call's writes: two concurrent
/// pre-logs made two Events, and a pre-log racing the final log left a second record stuck at
/// Planned. Here the platform posts both pairs at once, the workers run four jobs at a time,
/// and every call must end as one Held record, through a native and a template connection.
#[tokio::test]
async fn concurrent_events_of_a_call_make_one_held_record() {
    let (peer, _turn) = take(Role::Shared).await;
    let ws = peer.ws().await;
    let tag = tag();
    let mobile = format!("09{}", crate::peer::digits(8));
    let contact = ws.contact("Concurrent", &format!("Caller{tag}"), json!({"mobile": mobile})).await;
    let app = crate::helpers::spawn()
        .configure(|s| {
            s.jobs.concurrency = 4;
            s.jobs.poll_interval_ms = 20;
        })
        .start()
        .await;
    let tenant = app.post_tenant(&json!({"slug": "calls", "name": "Calls", "phone_region": "VN"})).await;
    assert_eq!(tenant.status(), 201);
    let mut calls = Vec::new();
    for kind in ["vtiger", "template:vtiger"] {
        let body = json!({"name": format!("Vtiger {kind}"), "kind": kind, "host": peer.url,
                          "fields": {"username": peer.username}, "credentials": {"access_key": peer.access_key}});
        let connection = app.create_connection("calls", &body).await;
        let channel = json!({"connection_id": connection});
        let configured = app.admin_send(reqwest::Method::PUT, "/admin/v1/tenants/calls/channels/calls", &channel).await;
        assert_eq!(configured.status(), 200, "{}", configured.text().await.unwrap());
        let key = app
            .admin_send(
                reqwest::Method::POST,
                "/admin/v1/tenants/calls/channel-keys",
                &json!({"name": format!("pbx-{}", calls.len()), "scopes": ["calls"]}),
            )
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap()["key"]
            .as_str()
            .unwrap()
            .to_owned();
        let post = |event: serde_json::Value| {
            let request = app.client.post(app.url("/t/calls/calls/events")).bearer_auth(&key).json(&event);
            async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
            }
        };
        for round in 0..3 {
            let call_id = format!("rv-{tag}-{}-{round}", kind.replace(':', "-"));
            let call = |fields: serde_json::Value| {
                let mut call = json!({"call_id": call_id});
                call.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
                call
            };
            let event = |kind: &str, fields| json!({"type": kind, "call": call(fields)});
            post(event("call.started", json!({"direction": "inbound", "from": mobile}))).await;
            // Two pre-logs at once (a retried webhook beside the original, with a late field).
            tokio::join!(
                post(event("call.answered", json!({"notes": "first delivery"}))),
                post(event("call.answered", json!({"answered_at": 1_800_000_010})))
            );
            // The hang-up and the final record at once, while the pre-log may still be running.
            tokio::join!(
                post(event("call.ended", json!({"duration_secs": 61}))),
                post(event("call.finalized", json!({"duration_secs": 62, "end_reason": "completed"})))
            );
            calls.push(call_id);
        }
    }
    for call_id in &calls {
        let mut view = serde_json::Value::Null;
        for _ in 0..600 {
            view = app.admin_get(&format!("/admin/v1/tenants/calls/calls/{call_id}")).await.json().await.unwrap();
            if view["crm"]["up_to_date"] == true && view["phase"] == "finalized" && view["jobs"] == json!([]) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(view["crm"]["up_to_date"], true, "{call_id} was never logged: {view}");
        let marker = format!("[crmhub-call:{call_id}]");
        let records = ws
            .query(&format!("SELECT id, eventstatus, contact_id FROM Events WHERE description LIKE '%{marker}%';"))
            .await;
        assert_eq!(records.len(), 1, "{call_id}: {records:?}");
        assert_eq!(records[0]["eventstatus"], "Held", "{call_id}: {records:?}");
        assert_eq!(records[0]["contact_id"], contact.as_str(), "{call_id}");
        assert_eq!(view["crm"]["record_id"], records[0]["id"], "{call_id}");
    }
    app.stop().await;
}
