//! Sessions that the host's PHP garbage-collects, and logins racing Vtiger's one challenge
//! token per user.

use serde_json::json;

use crate::connectors::kit;
use crate::peer::{Role, tag, take};

#[tokio::test]
async fn both_connectors_recover_from_an_expired_session() {
    let (peer, _turn) = take(Role::Shared).await;
    let tag = tag();
    let id = peer.ws().await.contact("Expiry", &format!("Session{tag}"), json!({})).await;
    let kit = kit();
    for (kind, crm) in kit.both(&peer) {
        let term = format!("Session{tag}");
        assert_eq!(crm.search_contacts(&term, 5).await.unwrap()[0].id, id, "{kind}");
        peer.expire_sessions();
        let again = crm.search_contacts(&term, 5).await.unwrap_or_else(|e| panic!("{kind} after expiry: {e}"));
        assert_eq!(again[0].id, id, "{kind}");
    }
}

#[tokio::test]
async fn native_and_template_connections_for_one_user_share_the_login_lock() {
    let (peer, _turn) = take(Role::Shared).await;
    let tag = tag();
    let id = peer.ws().await.contact("Login", &format!("Race{tag}"), json!({})).await;
    // One process: one login lock per (host, user), whichever connector kind asks.
    let kit = kit();
    let (native, template) = (kit.native(&peer), kit.template(&peer));
    let term = format!("Race{tag}");
    native.search_contacts(&term, 5).await.unwrap();
    template.search_contacts(&term, 5).await.unwrap();
    for round in 0..3 {
        peer.expire_sessions();
        let mut searches = tokio::task::JoinSet::new();
        for i in 0..20 {
            let crm = if i % 2 == 0 { native.clone() } else { template.clone() };
            let term = term.clone();
            searches.spawn(async move { crm.search_contacts(&term, 5).await });
        }
        for result in searches.join_all().await {
            let found = result.unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(found[0].id, id);
        }
    }
}
