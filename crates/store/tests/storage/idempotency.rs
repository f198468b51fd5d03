//! Idempotency keys: one owner per key, answers replayed, reuse for other content refused,
//! and keys that expire, go stale or are abandoned claimed afresh.

use std::time::Duration;

use crmhub_store::StoreError;
use crmhub_store::idempotency::{Begin, STALE_AFTER};
use crmhub_store::tenants::NewTenant;

use crate::harness::{TestDb, Which, tenant};
use crate::on_both_backends;

const ROUTE: &str = "POST /t/{tenant}/contacts";
const DAY: Duration = Duration::from_secs(86_400);

on_both_backends!(
    a_finished_key_replays_its_answer,
    other_content_under_a_key_is_a_mismatch_in_any_state,
    a_running_key_is_in_flight_until_it_goes_stale,
    an_abandoned_key_is_fresh_again,
    an_expired_key_is_fresh_and_pruned,
    keys_are_scoped_by_tenant_and_route,
    one_of_ten_concurrent_begins_owns_the_key,
    an_unknown_tenant_is_not_found,
);

async fn a_finished_key_replays_its_answer(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let keys = store.idempotency(tenant(&store, "acme").await.id);
    assert_eq!(keys.begin(ROUTE, "k1", "hash-a", DAY).await.unwrap(), Begin::Fresh);
    keys.finish(ROUTE, "k1", 201, r#"{"id":"7"}"#).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            keys.begin(ROUTE, "k1", "hash-a", DAY).await.unwrap(),
            Begin::Replay { status: 201, body: r#"{"id":"7"}"#.into() }
        );
    }
    // A finished key is not abandoned by a late failure report.
    keys.abandon(ROUTE, "k1").await.unwrap();
    assert!(matches!(keys.begin(ROUTE, "k1", "hash-a", DAY).await.unwrap(), Begin::Replay { status: 201, .. }));
}

async fn other_content_under_a_key_is_a_mismatch_in_any_state(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let keys = store.idempotency(tenant(&store, "acme").await.id);
    assert_eq!(keys.begin(ROUTE, "k1", "hash-a", DAY).await.unwrap(), Begin::Fresh);
    assert_eq!(keys.begin(ROUTE, "k1", "hash-b", DAY).await.unwrap(), Begin::Mismatch, "while running");
    db.clock.advance(STALE_AFTER + Duration::from_secs(1));
    assert_eq!(keys.begin(ROUTE, "k1", "hash-b", DAY).await.unwrap(), Begin::Mismatch, "stale, other content");
    keys.finish(ROUTE, "k1", 200, "{}").await.unwrap();
    assert_eq!(keys.begin(ROUTE, "k1", "hash-b", DAY).await.unwrap(), Begin::Mismatch, "once done");
}

async fn a_running_key_is_in_flight_until_it_goes_stale(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let keys = store.idempotency(tenant(&store, "acme").await.id);
    assert_eq!(keys.begin(ROUTE, "k1", "hash-a", DAY).await.unwrap(), Begin::Fresh);
    assert_eq!(keys.begin(ROUTE, "k1", "hash-a", DAY).await.unwrap(), Begin::InFlight);
    db.clock.advance(STALE_AFTER - Duration::from_secs(1));
    assert_eq!(keys.begin(ROUTE, "k1", "hash-a", DAY).await.unwrap(), Begin::InFlight);
    // The owner crashed: the next request takes the key over, and owns it from then on.
    db.clock.advance(Duration::from_secs(1));
    assert_eq!(keys.begin(ROUTE, "k1", "hash-a", DAY).await.unwrap(), Begin::Fresh);
    assert_eq!(keys.begin(ROUTE, "k1", "hash-a", DAY).await.unwrap(), Begin::InFlight);
    keys.finish(ROUTE, "k1", 200, "{}").await.unwrap();
    // A done key never goes stale.
    db.clock.advance(STALE_AFTER * 2);
    assert!(matches!(keys.begin(ROUTE, "k1", "hash-a", DAY).await.unwrap(), Begin::Replay { .. }));
}

async fn an_abandoned_key_is_fresh_again(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let keys = store.idempotency(tenant(&store, "acme").await.id);
    assert_eq!(keys.begin(ROUTE, "k1", "hash-a", DAY).await.unwrap(), Begin::Fresh);
    keys.abandon(ROUTE, "k1").await.unwrap();
    assert_eq!(keys.begin(ROUTE, "k1", "hash-a", DAY).await.unwrap(), Begin::Fresh);
    keys.abandon(ROUTE, "k1").await.unwrap();
    // Nothing was stored for it, so a retry with corrected content is not a mismatch.
    assert_eq!(keys.begin(ROUTE, "k1", "hash-b", DAY).await.unwrap(), Begin::Fresh);
}

async fn an_expired_key_is_fresh_and_pruned(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let keys = store.idempotency(tenant(&store, "acme").await.id);
    for key in ["done", "running"] {
        assert_eq!(keys.begin(ROUTE, key, "hash-a", DAY).await.unwrap(), Begin::Fresh);
    }
    keys.finish(ROUTE, "done", 200, "{}").await.unwrap();
    db.clock.advance(Duration::from_secs(3600));
    assert_eq!(keys.begin(ROUTE, "later", "hash-a", DAY).await.unwrap(), Begin::Fresh);
    keys.finish(ROUTE, "later", 200, "{}").await.unwrap();
    assert_eq!(keys.prune(store.clock().now_millis()).await.unwrap(), 0, "nothing expired yet");

    db.clock.advance(DAY - Duration::from_secs(3600));
    // Expired counts as absent, whatever the content: a key reused after a day is new.
    assert_eq!(keys.begin(ROUTE, "done", "hash-b", DAY).await.unwrap(), Begin::Fresh);
    assert_eq!(keys.prune(store.clock().now_millis()).await.unwrap(), 1, "the running one; `done` was renewed");
    assert!(matches!(keys.begin(ROUTE, "later", "hash-a", DAY).await.unwrap(), Begin::Replay { .. }));
    db.clock.advance(Duration::from_secs(3600));
    assert_eq!(keys.prune(store.clock().now_millis()).await.unwrap(), 1, "`later`");
    assert_eq!(keys.begin(ROUTE, "running", "hash-a", DAY).await.unwrap(), Begin::Fresh, "pruned: absent");
}

async fn keys_are_scoped_by_tenant_and_route(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let (acme, globex) = (tenant(&store, "acme").await, tenant(&store, "globex").await);
    let keys = store.idempotency(acme.id);
    assert_eq!(keys.begin(ROUTE, "k1", "hash-a", DAY).await.unwrap(), Begin::Fresh);
    keys.finish(ROUTE, "k1", 201, "{}").await.unwrap();
    assert_eq!(keys.begin("POST /t/{tenant}/sms", "k1", "hash-b", DAY).await.unwrap(), Begin::Fresh);
    assert_eq!(store.idempotency(globex.id).begin(ROUTE, "k1", "hash-b", DAY).await.unwrap(), Begin::Fresh);

    // Another tenant's calls touch nothing of acme's.
    let other = store.idempotency(globex.id);
    other.finish(ROUTE, "k1", 500, "{}").await.unwrap();
    db.clock.advance(DAY * 2);
    assert_eq!(other.prune(store.clock().now_millis()).await.unwrap(), 1);
    assert_eq!(keys.prune(store.clock().now_millis()).await.unwrap(), 2);

    // Deleting a tenant deletes its keys.
    assert_eq!(other.begin(ROUTE, "k2", "hash-a", DAY).await.unwrap(), Begin::Fresh);
    store.tenants().delete(globex.id).await.unwrap();
    let recreated = store
        .tenants()
        .create(NewTenant {
            slug: globex.slug.clone(),
            name: globex.name.clone(),
            phone_region: None,
            settings: Default::default(),
        })
        .await
        .unwrap();
    assert_eq!(store.idempotency(recreated.id).begin(ROUTE, "k2", "hash-b", DAY).await.unwrap(), Begin::Fresh);
}

async fn one_of_ten_concurrent_begins_owns_the_key(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let acme = tenant(&store, "acme").await;
    for round in 0..3 {
        let key = format!("k{round}");
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move { store.idempotency(acme.id).begin(ROUTE, &key, "hash-a", DAY).await })
            })
            .collect();
        let mut fresh = 0;
        for task in tasks {
            match task.await.unwrap().unwrap() {
                Begin::Fresh => fresh += 1,
                Begin::InFlight => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(fresh, 1, "round {round}: exactly one owner");
    }
    // Ten takeovers of one stale key: still one owner.
    db.clock.advance(STALE_AFTER);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.idempotency(acme.id).begin(ROUTE, "k0", "hash-a", DAY).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().unwrap());
    }
    assert_eq!(outcomes.iter().filter(|b| **b == Begin::Fresh).count(), 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|b| matches!(b, Begin::Fresh | Begin::InFlight)), "{outcomes:?}");
}

async fn an_unknown_tenant_is_not_found(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let err = store.idempotency(crmhub_core::TenantId::new()).begin(ROUTE, "k1", "hash-a", DAY).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: "tenant" }), "{err:?}");
}
