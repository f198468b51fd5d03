//! The native connector's change feed on a real installation: `sync` with the whole
//! application's records, a mass edit that gives 150 records one `modifiedtime`, and the
//! `(modifiedtime, id)` watermark that stands in where `sync` is broken.

use std::collections::BTreeSet;

use crmhub_core::crm::{ChangeCursor, Crm};
use serde_json::json;

use crate::connectors::kit;
use crate::peer::{Role, tag, take};

/// Reads the feed from `cursor` until it says there is no more (a feed that stalls fails here);
/// returns what it saw and the cursor.
async fn read_to_end(crm: &dyn Crm, mut cursor: Option<ChangeCursor>) -> (BTreeSet<String>, Option<ChangeCursor>) {
    let mut seen = BTreeSet::new();
    for _ in 0..50 {
        let page = crm.list_changes(cursor.as_ref()).await.expect("changes");
        seen.extend(page.updated.iter().map(|c| c.id.clone()));
        cursor = Some(page.next);
        if !page.more {
            return (seen, cursor);
        }
    }
    panic!("the feed never reached its end in 50 pages (seen {})", seen.len());
}

#[tokio::test]
async fn the_change_feed_reports_every_owner_and_always_makes_progress() {
    let (peer, _turn) = take(Role::Shared).await;
    let ws = peer.ws().await;
    let crm = kit().native(&peer);
    let (_, cursor) = read_to_end(crm.as_ref(), None).await;

    // A contact assigned to a group, not to the integration user.
    let groups = ws.query("SELECT id, groupname FROM Groups ORDER BY id LIMIT 0,1;").await;
    let group = groups[0]["id"].as_str().expect("a stock install has groups").to_owned();
    let tag = tag();
    let grouped = ws.contact("Group", &format!("Owned{tag}"), json!({"assigned_user_id": group})).await;
    let mine = ws.contact("User", &format!("Owned{tag}"), json!({})).await;
    let (seen, _) = read_to_end(crm.as_ref(), cursor).await;
    assert!(seen.contains(&mine), "the user's own contact");
    assert!(seen.contains(&grouped), "the group's contact is in the feed too");

    // A mass edit (an import does the same): 150 records share one modifiedtime, the oldest of
    // all, and one more comes after them. Read from the start, a feed that re-read that second
    // while `more` is true would never get past it.
    let bulk = ws.contacts(150, |i| (format!("Mass{i}"), format!("Edit{tag}"), json!({}))).await;
    let after = ws.contact("After", &format!("Edit{tag}"), json!({})).await;
    let crmids = |ids: &[String]| ids.iter().map(|id| id.split('x').nth(1).unwrap().to_owned()).collect::<Vec<_>>();
    peer.sql(&format!(
        "UPDATE vtiger_crmentity SET modifiedtime = '2001-01-01 00:00:00' WHERE crmid IN ({});
         UPDATE vtiger_crmentity SET modifiedtime = '2001-01-01 00:00:05' WHERE crmid = {};",
        crmids(&bulk).join(","),
        crmids(std::slice::from_ref(&after))[0]
    ));
    let expected: BTreeSet<String> = bulk.iter().chain([&after]).cloned().collect();
    let (seen, _) = read_to_end(crm.as_ref(), None).await;
    assert!(expected.is_subset(&seen), "missing {:?}", expected.difference(&seen).collect::<Vec<_>>());

    // The query watermark (used where `sync` fails) pages that second by id: 100 rows, then the
    // other 50 and what follows.
    let watermark = ChangeCursor(r#"{"mode":"query","modified":"2000-12-31 23:59:59","id":"0x0"}"#.into());
    let first = crm.list_changes(Some(&watermark)).await.unwrap();
    assert_eq!(first.updated.len(), 100);
    assert!(first.more && first.updated.iter().all(|c| bulk.contains(&c.id)), "the first 100 of the second");
    let (rest, _) = read_to_end(crm.as_ref(), Some(first.next)).await;
    let seen: BTreeSet<String> = first.updated.iter().map(|c| c.id.clone()).chain(rest).collect();
    assert!(expected.is_subset(&seen), "missing {:?}", expected.difference(&seen).collect::<Vec<_>>());
}
