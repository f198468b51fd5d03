//! Connectors' shared login state: sealed at rest, and one login at a time per remote account.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crmhub_core::Secret;
use crmhub_core::auth_state::AuthStateStore;

use crate::harness::{TestDb, Which};
use crate::on_both_backends;

on_both_backends!(sessions_round_trip_sealed, the_login_lock_is_exclusive);

async fn sessions_round_trip_sealed(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    assert!(store.load("vtiger:h:admin:k").await.unwrap().is_none());
    store.save("vtiger:h:admin:k", &Secret::new("{\"session\":\"SESSION-MARKER-1\"}")).await.unwrap();
    store.save("vtiger:h:admin:k", &Secret::new("{\"session\":\"SESSION-MARKER-2\"}")).await.unwrap();
    assert_eq!(store.load("vtiger:h:admin:k").await.unwrap().unwrap().expose(), "{\"session\":\"SESSION-MARKER-2\"}");
    store.close().await;
    if which == Which::Sqlite {
        let bytes: Vec<u8> = db.sqlite_files().iter().filter_map(|p| std::fs::read(p).ok()).flatten().collect();
        assert!(!bytes.windows(16).any(|w| w == b"SESSION-MARKER-2"), "sessions are sealed at rest");
    }
}

async fn the_login_lock_is_exclusive(which: Which) {
    let db = TestDb::new(which).await;
    // Two stores: two instances sharing one database.
    let stores = [db.open().await, db.open().await];
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for n in 0..6 {
        let (store, inside, overlaps) = (stores[n % 2].clone(), inside.clone(), overlaps.clone());
        tasks.push(tokio::spawn(async move {
            let _lock = store.lock("vtiger:h:admin").await.unwrap();
            if inside.fetch_add(1, Ordering::SeqCst) > 0 {
                overlaps.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // On PostgreSQL two instances; on SQLite (one instance, one process) two stores on one file.
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders of the login lock at once");
}
