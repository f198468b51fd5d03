//! Tenant A cannot read or change tenant B's rows through any storage method.

use std::time::Duration;

use crmhub_core::request_log::RequestLogEntry;
use crmhub_core::{ConnectionName, ConnectionStatus};
use crmhub_store::StoreError;
use crmhub_store::connections::ConnectionUpdate;
use crmhub_store::jobs::{JobFilter, JobStatus, NewJob, Redrive};

use crate::harness::{TestDb, Which, connection, credentials, tenant};
use crate::on_both_backends;

on_both_backends!(tenant_a_cannot_reach_tenant_b);

async fn tenant_a_cannot_reach_tenant_b(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let a = tenant(&store, "tenant-a").await;
    let b = tenant(&store, "tenant-b").await;
    let b_conn = connection(&store, &b, "B CRM", "b-secret").await;
    let b_before = store.connections(b.id).get(b_conn.id).await.unwrap();

    let as_a = store.connections(a.id);
    let not_found = |r: Result<_, StoreError>| matches!(r, Err(StoreError::NotFound { .. }));
    assert!(not_found(as_a.get(b_conn.id).await.map(|_| ())));
    assert!(not_found(as_a.credentials(b_conn.id).await.map(|_| ())));
    assert!(not_found(
        as_a.update(
            b_conn.id,
            ConnectionUpdate { name: Some(ConnectionName::parse("hijack").unwrap()), ..Default::default() }
        )
        .await
        .map(|_| ())
    ));
    assert!(not_found(as_a.replace_credentials(b_conn.id, credentials(&[("access_key", "evil")])).await.map(|_| ())));
    assert!(not_found(as_a.set_status(b_conn.id, ConnectionStatus::Disabled, Some("x")).await));
    assert!(not_found(as_a.delete(b_conn.id).await));
    as_a.record_health(b_conn.id, Err("poisoned")).await.unwrap(); // silently affects nothing
    assert!(as_a.list().await.unwrap().is_empty());

    // B's row is exactly as it was, credentials included.
    let b_after = store.connections(b.id).get(b_conn.id).await.unwrap();
    assert_eq!(b_after, b_before);
    assert_eq!(
        store.connections(b.id).credentials(b_conn.id).await.unwrap().get("access_key").unwrap().expose(),
        "b-secret"
    );

    // Secrets.
    store.secrets(b.id).rotate("social_inbox.search", None, Duration::ZERO).await.unwrap();
    assert!(store.secrets(a.id).valid("social_inbox.search").await.unwrap().is_empty());
    assert_eq!(store.secrets(a.id).revoke_all("social_inbox.search").await.unwrap(), 0);
    assert_eq!(store.secrets(b.id).valid("social_inbox.search").await.unwrap().len(), 1);

    // Request log.
    store
        .append_request_log(&[RequestLogEntry {
            tenant_id: b.id,
            connection_id: b_conn.id,
            at: 1,
            method: "GET".into(),
            url: "https://crm.example.com/".into(),
            status: Some(200),
            latency_ms: 1,
            outcome: "ok".into(),
            request_body: None,
            response_body: None,
            error: None,
        }])
        .await
        .unwrap();
    assert!(store.request_log(a.id).list(b_conn.id, 10, None).await.unwrap().is_empty());
    assert_eq!(store.request_log(b.id).list(b_conn.id, 10, None).await.unwrap().len(), 1);

    // Jobs: listing, redrive and discard are tenant-scoped.
    let job = store.jobs().enqueue(b.id, NewJob::new("x", serde_json::json!({})).max_attempts(1)).await.unwrap().id();
    let claimed = store.jobs().claim("w", Duration::from_secs(30)).await.unwrap().unwrap();
    store.jobs().kill(&claimed, "boom").await.unwrap();
    let a_filter = JobFilter { tenant: Some(a.id), ..Default::default() };
    assert!(store.jobs().list(&a_filter).await.unwrap().is_empty());
    assert_eq!(store.jobs().redrive(Some(a.id), Redrive::Ids(vec![job])).await.unwrap(), 0);
    assert_eq!(store.jobs().redrive(Some(a.id), Redrive::AllDead).await.unwrap(), 0);
    assert!(not_found(store.jobs().discard_dead(a.id, job).await));
    let b_jobs = store.jobs().list(&JobFilter { tenant: Some(b.id), ..Default::default() }).await.unwrap();
    assert_eq!((b_jobs.len(), b_jobs[0].status), (1, JobStatus::Dead));
    assert_eq!(store.jobs().depth(Some(a.id)).await.unwrap(), Default::default());
}
