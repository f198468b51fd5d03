//! The behaviour every CRM connector must show, as one kit that any connector plus its
//! simulator runs: `conformance::run(&crm, &backend).await`. The backend side reads and writes
//! the simulator directly, so the checks see what really landed in the CRM.

use std::collections::HashSet;

use async_trait::async_trait;
use crmhub_core::crm::{
    CallDirection, CallLog, CallOutcome, CallStage, Capability, CardOptions, ChangeCursor, Crm, CrmError, NewContact,
    NewNote, NewTicket, TicketPriority,
};
use crmhub_core::phone::PhoneNumber;

/// Direct access to the CRM behind the connector under test.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Creates a contact the way a CRM user would; returns its id.
    async fn add_contact(&self, first: &str, last: &str, email: &str, phone: &str) -> String;
    /// How many call-log records mention this external call id.
    async fn call_logs(&self, call_id: &str) -> usize;
    /// Bodies of the notes attached to the contact.
    async fn notes(&self, contact_id: &str) -> Vec<String>;
    /// The title of the ticket with this id, if it exists and belongs to the contact.
    async fn ticket_title(&self, ticket_id: &str, contact_id: &str) -> Option<String>;
    /// Removes a contact behind the connector's back.
    async fn remove_contact(&self, id: &str);
    /// A region in which the backend's stored national numbers are read (e.g. VN).
    fn region(&self) -> Option<crmhub_core::PhoneRegion>;
}

/// Runs every check that applies to the connector's capabilities, and checks that the others
/// answer `Unsupported`.
pub async fn run(crm: &dyn Crm, backend: &dyn Backend) {
    crm.check().await.expect("check");
    unsupported_capabilities_say_so(crm).await;
    if crm.supports(Capability::SearchContacts) {
        search_by_name_email_and_phone(crm, backend).await;
        search_terms_are_literal(crm, backend).await;
    }
    if crm.supports(Capability::FindByPhone) {
        find_by_phone_in_any_format(crm, backend).await;
    }
    if crm.supports(Capability::ContactCard) {
        card_of_unknown_contact_is_not_found(crm, backend).await;
    }
    if crm.supports(Capability::CreateContact) {
        create_contact_validates_and_creates(crm).await;
    }
    if crm.supports(Capability::LogCall) {
        call_logs_are_one_per_call(crm, backend).await;
    }
    if crm.supports(Capability::AddNote) {
        notes_attach_to_existing_contacts_only(crm, backend).await;
    }
    if crm.supports(Capability::CreateTicket) {
        tickets_attach_to_the_contact(crm, backend).await;
    }
    if crm.supports(Capability::ListChanges) {
        change_feed_reports_new_contacts(crm, backend).await;
    }
}

async fn unsupported_capabilities_say_so(crm: &dyn Crm) {
    let phone = PhoneNumber::parse("+14155550100", None).expect("phone");
    for capability in Capability::ALL.into_iter().filter(|c| !crm.supports(*c)) {
        let result = match capability {
            Capability::SearchContacts => crm.search_contacts("x", 1).await.map(drop),
            Capability::FindByPhone => crm.find_by_phone(&phone).await.map(drop),
            Capability::ContactCard => crm.contact_card("1", &CardOptions::default()).await.map(drop),
            Capability::CreateContact => crm.create_contact(&NewContact::default()).await.map(drop),
            Capability::LogCall => crm.log_call(&call("c", CallStage::Ended, None)).await.map(drop),
            Capability::AddNote => crm.add_note(&NewNote { contact_id: "1".into(), body: "x".into() }).await.map(drop),
            Capability::CreateTicket => crm.create_ticket(&ticket(None, "x")).await.map(drop),
            Capability::ListChanges => crm.list_changes(None).await.map(drop),
        };
        assert_eq!(result, Err(CrmError::Unsupported { capability }), "{capability}");
    }
}

async fn search_by_name_email_and_phone(crm: &dyn Crm, backend: &dyn Backend) {
    let id = backend.add_contact("Conformance", "Searchable", "c.searchable@example.org", "+1 (415) 555-0142").await;
    for term in ["Searchable", "conformance search", "c.searchable@example", "415 555 0142"] {
        let found = crm.search_contacts(term, 50).await.expect("search");
        assert!(found.iter().any(|c| c.id == id), "{term:?} should find {id}: {found:?}");
        let hit = found.iter().find(|c| c.id == id).expect("hit");
        assert_eq!(hit.display_name, "Conformance Searchable");
    }
    assert!(crm.search_contacts("zz-no-such-person-zz", 50).await.expect("search").is_empty());
}

async fn search_terms_are_literal(crm: &dyn Crm, backend: &dyn Backend) {
    let obrien = backend.add_contact("Quote", "O'Conformity", "quote@example.org", "").await;
    let percent = backend.add_contact("Percent", "Fifty%Off", "percent@example.org", "").await;
    let found = crm.search_contacts("O'Conformity", 50).await.expect("quote search");
    assert_eq!(found.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [obrien.as_str()]);
    let found = crm.search_contacts("Fifty%Off", 50).await.expect("percent search");
    assert_eq!(found.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [percent.as_str()]);
    let injected = crm.search_contacts("x' OR '1'='1", 50).await.expect("injection is a literal search");
    assert!(injected.is_empty(), "an injection attempt matched {injected:?}");
    let wildcard = crm.search_contacts("%", 50).await.expect("a lone % is a literal");
    assert_eq!(wildcard.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [percent.as_str()]);
}

async fn find_by_phone_in_any_format(crm: &dyn Crm, backend: &dyn Backend) {
    let id = backend.add_contact("Phone", "Formats", "phone.formats@example.org", "0912.345.678").await;
    let region = backend.region();
    for raw in ["+84912345678", "0912345678", "84 912 345 678", "0084-912-345-678"] {
        let phone = PhoneNumber::parse(raw, region).expect("parse");
        let found = crm.find_by_phone(&phone).await.expect("find by phone");
        assert_eq!(found.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [id.as_str()], "{raw}");
    }
    let other = PhoneNumber::parse("+84912345679", region).expect("parse");
    assert!(crm.find_by_phone(&other).await.expect("find").is_empty(), "a different number matches nothing");
}

async fn card_of_unknown_contact_is_not_found(crm: &dyn Crm, backend: &dyn Backend) {
    let id = backend.add_contact("Gone", "Soon", "gone@example.org", "").await;
    crm.contact_card(&id, &CardOptions::default()).await.expect("card of a live contact");
    backend.remove_contact(&id).await;
    let err = crm.contact_card(&id, &CardOptions::default()).await.unwrap_err();
    assert!(matches!(err, CrmError::NotFound { .. }), "{err:?}");
}

async fn create_contact_validates_and_creates(crm: &dyn Crm) {
    let err =
        crm.create_contact(&NewContact { first_name: Some("No".into()), ..Default::default() }).await.unwrap_err();
    assert!(matches!(&err, CrmError::Validation { field, .. } if field == "last_name"), "{err:?}");
    let err = crm
        .create_contact(&NewContact {
            last_name: "Mail".into(),
            email: Some("not-an-email".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(&err, CrmError::Validation { field, .. } if field == "email"), "{err:?}");
    let created = crm
        .create_contact(&NewContact {
            first_name: Some("Created".into()),
            last_name: "ByConformance".into(),
            email: Some("created@example.org".into()),
            phone: Some("+1 415 555 0199".into()),
            ..Default::default()
        })
        .await
        .expect("create");
    assert_eq!(created.display_name, "Created ByConformance");
    let found = crm.search_contacts("ByConformance", 10).await.expect("search");
    assert_eq!(found.iter().map(|c| &c.id).collect::<Vec<_>>(), [&created.id]);
}

fn call(call_id: &str, stage: CallStage, contact: Option<&str>) -> CallLog {
    CallLog {
        call_id: call_id.into(),
        stage,
        direction: CallDirection::Inbound,
        contact_id: contact.map(str::to_owned),
        from: Some("+84912345678".into()),
        to: Some("+842839001234".into()),
        started_at: 1_800_000_000,
        duration_secs: (stage == CallStage::Ended).then_some(95),
        outcome: (stage == CallStage::Ended).then_some(CallOutcome::Completed),
        agent: Some("agent-7".into()),
        notes: None,
        disposition: None,
        recording_url: None,
        record_id: None,
    }
}

fn ticket(contact: Option<&str>, title: &str) -> NewTicket {
    NewTicket {
        contact_id: contact.map(str::to_owned),
        title: title.into(),
        description: Some("from the conformance kit".into()),
        priority: Some(TicketPriority::High),
    }
}

async fn call_logs_are_one_per_call(crm: &dyn Crm, backend: &dyn Backend) {
    let contact = backend.add_contact("Caller", "Logged", "caller@example.org", "").await;
    let answered = crm.log_call(&call("conf-call-1", CallStage::Answered, Some(&contact))).await.expect("pre-log");
    assert!(answered.created);
    // crmhub passes back the record it stored; without it, the connector finds the call itself.
    let known = CallLog {
        record_id: Some(answered.record_id.clone()),
        ..call("conf-call-1", CallStage::Ended, Some(&contact))
    };
    let ended = crm.log_call(&known).await.expect("final log");
    assert_eq!((ended.record_id.as_str(), ended.created), (answered.record_id.as_str(), false));
    let retried = crm.log_call(&call("conf-call-1", CallStage::Ended, Some(&contact))).await.expect("retry");
    assert_eq!(retried.record_id, answered.record_id);
    let late = crm.log_call(&call("conf-call-1", CallStage::Answered, Some(&contact))).await.expect("late event");
    assert_eq!(late.record_id, answered.record_id);
    assert_eq!(backend.call_logs("conf-call-1").await, 1, "one log per call");

    let err = crm.log_call(&call("conf-call-2", CallStage::Ended, Some("99x999999"))).await.unwrap_err();
    assert!(matches!(err, CrmError::NotFound { .. }), "{err:?}");
    assert_eq!(backend.call_logs("conf-call-2").await, 0);
}

async fn notes_attach_to_existing_contacts_only(crm: &dyn Crm, backend: &dyn Backend) {
    let contact = backend.add_contact("Noted", "Person", "noted@example.org", "").await;
    let body = "SMS: see you at 10 <b>tomorrow</b>";
    crm.add_note(&NewNote { contact_id: contact.clone(), body: body.into() }).await.expect("note");
    assert_eq!(backend.notes(&contact).await, [body]);
    let gone = backend.add_contact("Noted", "Gone", "noted.gone@example.org", "").await;
    backend.remove_contact(&gone).await;
    let err = crm.add_note(&NewNote { contact_id: gone, body: "x".into() }).await.unwrap_err();
    assert!(matches!(err, CrmError::NotFound { .. }), "{err:?}");
    let err = crm.add_note(&NewNote { contact_id: contact, body: "  ".into() }).await.unwrap_err();
    assert!(matches!(err, CrmError::Validation { .. }), "{err:?}");
}

async fn tickets_attach_to_the_contact(crm: &dyn Crm, backend: &dyn Backend) {
    let contact = backend.add_contact("Ticket", "Holder", "ticket@example.org", "").await;
    let id = crm.create_ticket(&ticket(Some(&contact), "Router is down")).await.expect("ticket");
    assert_eq!(backend.ticket_title(&id, &contact).await.as_deref(), Some("Router is down"));
    let err = crm.create_ticket(&ticket(Some(&contact), " ")).await.unwrap_err();
    assert!(matches!(&err, CrmError::Validation { field, .. } if field == "title"), "{err:?}");
}

async fn change_feed_reports_new_contacts(crm: &dyn Crm, backend: &dyn Backend) {
    let mut cursor: Option<ChangeCursor> = None;
    let mut seen = HashSet::new();
    // Read the whole feed to its end, then add a contact and read on from the cursor.
    for _ in 0..1_000 {
        let page = crm.list_changes(cursor.as_ref()).await.expect("changes");
        seen.extend(page.updated.iter().map(|c| c.id.clone()));
        cursor = Some(page.next);
        if !page.more {
            break;
        }
    }
    let id = backend.add_contact("Changed", "Lately", "changed@example.org", "").await;
    let mut found = false;
    for _ in 0..100 {
        let page = crm.list_changes(cursor.as_ref()).await.expect("changes");
        found |= page.updated.iter().any(|c| c.id == id && c.display_name == "Changed Lately");
        cursor = Some(page.next);
        if !page.more {
            break;
        }
    }
    assert!(found, "the change feed reports a contact added after the cursor");
}
