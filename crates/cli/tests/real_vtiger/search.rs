//! Searches as 8.2 parses them: paging past its 100-row cap, values that must stay literal,
//! companies, and phone numbers in the formats people type.

use std::collections::BTreeSet;

use crmhub_core::PhoneRegion;
use crmhub_core::phone::PhoneNumber;
use serde_json::json;

use crate::connectors::kit;
use crate::peer::{Role, digits, tag, take};

#[tokio::test]
async fn searches_page_past_100_rows_on_both_connectors() {
    let (peer, _turn) = take(Role::Shared).await;
    let ws = peer.ws().await;
    let tag = tag();
    let created: BTreeSet<String> =
        ws.contacts(150, |i| (format!("Bulk{i}"), format!("Paged{tag}"), json!({}))).await.into_iter().collect();
    let kit = kit();
    for (kind, crm) in kit.both(&peer) {
        let found = crm.search_contacts(&format!("Paged{tag}"), 200).await.unwrap_or_else(|e| panic!("{kind}: {e}"));
        let ids: BTreeSet<String> = found.iter().map(|c| c.id.clone()).collect();
        assert_eq!(found.len(), 150, "{kind}: each match once");
        assert_eq!(ids, created, "{kind}: all 150 across two pages");
        let first = crm.search_contacts(&format!("Paged{tag}"), 20).await.unwrap();
        assert_eq!(first.len(), 20, "{kind}: the limit holds");
    }
}

#[tokio::test]
async fn search_values_stay_literal_on_both_connectors() {
    let (peer, _turn) = take(Role::Shared).await;
    let ws = peer.ws().await;
    let tag = tag();
    let obrien = ws.contact(&format!("Quote{tag}"), "O'Brien", json!({})).await;
    let percent = ws.contact(&format!("Pct{tag}"), "50% Match", json!({})).await;
    let slash = ws.contact(&format!("Slash{tag}"), "Back\\Slash", json!({})).await;
    let sean = ws.contact("Seán", &format!("Accent{tag}"), json!({})).await;
    let kit = kit();
    for (kind, crm) in kit.both(&peer) {
        for (term, id) in [("O'Brien", &obrien), ("%", &percent), ("\\", &slash), ("Seán", &sean)] {
            let found = crm.search_contacts(term, 100).await.unwrap_or_else(|e| panic!("{kind} {term:?}: {e}"));
            assert!(found.iter().any(|c| &c.id == id), "{kind}: {term:?} finds {id}: {found:?}");
            let folded = term.to_lowercase();
            for hit in &found {
                assert!(
                    hit.display_name.to_lowercase().contains(&folded)
                        || hit.emails.iter().any(|e| e.to_lowercase().contains(&folded)),
                    "{kind}: {term:?} matched {hit:?}, which does not contain it"
                );
            }
        }
        let injected = crm.search_contacts("x' OR '1'='1", 100).await.unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert!(injected.is_empty(), "{kind}: the injection matched {injected:?}");
    }
}

#[tokio::test]
async fn a_company_name_finds_its_contacts() {
    let (peer, _turn) = take(Role::Shared).await;
    let ws = peer.ws().await;
    let tag = tag();
    let account = ws.create("Accounts", json!({"accountname": format!("Acme{tag} Ltd")})).await;
    let wile =
        ws.contact("Wile", &format!("Coyote{tag}"), json!({"account_id": account, "email": "w@desert.example"})).await;
    let kit = kit();
    for (kind, crm) in kit.both(&peer) {
        let found = crm.search_contacts(&format!("acme{tag}"), 10).await.unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(found.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [wile.as_str()], "{kind}");
        assert_eq!(found[0].company.as_deref(), Some(format!("Acme{tag} Ltd").as_str()), "{kind}");
    }
}

#[tokio::test]
async fn find_by_phone_matches_every_format_on_both_connectors() {
    let (peer, _turn) = take(Role::Shared).await;
    let ws = peer.ws().await;
    let tail = digits(7);
    let national = format!("91{tail}");
    let stored = format!("0{}.{}.{}", &national[..3], &national[3..6], &national[6..]);
    let tag = tag();
    let id = ws.contact("Phone", &format!("Formats{tag}"), json!({"mobile": stored})).await;
    let region = Some(PhoneRegion::parse("VN").unwrap());
    let kit = kit();
    for (kind, crm) in kit.both(&peer) {
        for raw in
            [format!("+84{national}"), format!("0{national}"), format!("84 {national}"), format!("0084-{national}")]
        {
            let phone = PhoneNumber::parse(&raw, region).unwrap();
            let found = crm.find_by_phone(&phone).await.unwrap_or_else(|e| panic!("{kind} {raw}: {e}"));
            assert_eq!(found.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [id.as_str()], "{kind}: {raw}");
        }
        let other = PhoneNumber::parse(&format!("+8492{tail}"), region).unwrap();
        assert!(crm.find_by_phone(&other).await.unwrap().is_empty(), "{kind}: another number matches nothing");
    }
}
