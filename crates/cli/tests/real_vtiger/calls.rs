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
