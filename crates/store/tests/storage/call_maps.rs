//! Call maps: per connection, deleted with it, pruned by age, and moved out of `auth_state`
//! where earlier versions kept them.

use std::time::Duration;

use crmhub_core::Secret;
use crmhub_core::auth_state::AuthStateStore;
use crmhub_core::call_map::{CallMapStore, CallRecord};
use crmhub_core::crm::CallStage;

use crate::harness::{TestDb, Which, connection, tenant};
use crate::on_both_backends;

on_both_backends!(call_maps_belong_to_their_connection, old_call_maps_are_pruned, legacy_call_maps_move_to_their_table);

fn record(id: &str, stage: CallStage) -> CallRecord {
    CallRecord { record_id: id.into(), stage }
}

async fn call_maps_belong_to_their_connection(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let acme = tenant(&store, "acme").await;
    let (a, b) = (connection(&store, &acme, "A", "k1").await, connection(&store, &acme, "B", "k2").await);
    store.put(acme.id, a.id, "call-1", &record("18x5", CallStage::Answered)).await.unwrap();
    store.put(acme.id, a.id, "call-1", &record("18x5", CallStage::Ended)).await.unwrap();
    assert_eq!(store.get(acme.id, a.id, "call-1").await.unwrap(), Some(record("18x5", CallStage::Ended)));
    assert_eq!(store.get(acme.id, b.id, "call-1").await.unwrap(), None, "another connection's map");
    let other = tenant(&store, "other").await;
    assert_eq!(store.get(other.id, a.id, "call-1").await.unwrap(), None, "another tenant's map");

    store.connections(acme.id).delete(a.id).await.unwrap();
    let b_call = record("18x6", CallStage::Answered);
    store.put(acme.id, b.id, "call-2", &b_call).await.unwrap();
    assert_eq!(store.get(acme.id, a.id, "call-1").await.unwrap(), None, "deleted with the connection");
    assert_eq!(store.get(acme.id, b.id, "call-2").await.unwrap(), Some(b_call));
}

async fn old_call_maps_are_pruned(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let acme = tenant(&store, "acme").await;
    let a = connection(&store, &acme, "A", "k1").await;
    store.put(acme.id, a.id, "old", &record("18x1", CallStage::Ended)).await.unwrap();
    db.clock.advance(Duration::from_secs(3600));
    let cutoff = store.clock().now_millis();
    store.put(acme.id, a.id, "new", &record("18x2", CallStage::Ended)).await.unwrap();
    let other = tenant(&store, "other").await;
    assert_eq!(store.prune_call_maps(other.id, cutoff).await.unwrap(), 0, "another tenant's prune");
    assert_eq!(store.prune_call_maps(acme.id, cutoff).await.unwrap(), 1);
    assert!(store.get(acme.id, a.id, "old").await.unwrap().is_none());
    assert!(store.get(acme.id, a.id, "new").await.unwrap().is_some());
}

async fn legacy_call_maps_move_to_their_table(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let acme = tenant(&store, "acme").await;
    let a = connection(&store, &acme, "A", "k1").await;
    let legacy = format!("template-state:{}:{}:call:pbx-7", acme.id, a.id);
    store.save(&legacy, &Secret::new(r#"{"record_id":"18x9","stage":"answered"}"#)).await.unwrap();
    let orphan = "template-state:template:x:https://crm.example.com:call:pbx-8";
    store.save(orphan, &Secret::new(r#"{"record_id":"18x10","stage":"ended"}"#)).await.unwrap();
    store.close().await;

    let store = db.open().await;
    assert_eq!(store.get(acme.id, a.id, "pbx-7").await.unwrap(), Some(record("18x9", CallStage::Answered)));
    assert!(store.load(&legacy).await.unwrap().is_none(), "moved, not copied");
    assert!(store.load(orphan).await.unwrap().is_none(), "a map without a connection is dropped");
}
