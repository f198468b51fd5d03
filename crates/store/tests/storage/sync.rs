//! Contact sync storage: pipelines, the index by contact and by address, runs that start once
//! and commit pages with their checkpoint, row dead letters, and webhook deliveries recorded
//! with their jobs.

use crmhub_store::StoreError;
use crmhub_store::jobs::{JobFilter, NewJob};
use crmhub_store::sync::{
    Deletion, DeliveryStatus, IndexWrite, NewPipeline, NewRowError, PageCommit, PipelineStatus, PipelineUpdate,
    RunKind, RunStatus, SentContact,
};
use serde_json::json;

use crate::harness::{TestDb, Which, connection, tenant};
use crate::on_both_backends;

on_both_backends!(
    pipelines_are_named_once_per_tenant_and_cascade_with_their_connections,
    the_index_knows_which_contacts_still_hold_an_address,
    a_large_index_write_lands_whole_and_the_last_write_for_a_contact_wins,
    a_run_starts_once_and_commits_pages_with_their_checkpoint,
    a_delivery_is_kept_with_its_jobs_sealed_and_quarantine_is_redriven_once,
);

fn new_pipeline(name: &str, source: crmhub_core::ConnectionId, dest: crmhub_core::ConnectionId) -> NewPipeline {
    NewPipeline {
        name: name.into(),
        source_connection_id: source,
        destination_connection_id: dest,
        list_id: "134".into(),
        field_map: json!({"name": "Name"}).as_object().unwrap().clone(),
        deletion: Deletion::Exclude,
        poll_secs: None,
    }
}

fn sent(emails: &[&str]) -> Option<SentContact> {
    Some(SentContact {
        fingerprint: emails.join(","),
        emails: emails.iter().map(|e| (*e).to_owned()).collect(),
        phones: Vec::new(),
    })
}

async fn pipelines_are_named_once_per_tenant_and_cascade_with_their_connections(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let other = tenant(&store, "other").await;
    let (src, dst) = (connection(&store, &t, "kommo", "k").await, connection(&store, &t, "uni", "u").await);
    let foreign = connection(&store, &other, "theirs", "x").await;
    let sync = store.sync(t.id);
    let p = sync.create_pipeline(new_pipeline("main", src.id, dst.id)).await.unwrap();
    assert_eq!((p.status, p.deletion, p.poll_secs), (PipelineStatus::Active, Deletion::Exclude, None));
    let again = sync.create_pipeline(new_pipeline("main", src.id, dst.id)).await.unwrap_err();
    assert!(matches!(again, StoreError::Conflict { field: "name", .. }), "{again:?}");
    // Another tenant's connection is not found, and nothing is made.
    let stolen = sync.create_pipeline(new_pipeline("x", src.id, foreign.id)).await.unwrap_err();
    assert!(matches!(stolen, StoreError::NotFound { entity: "connection" }), "{stolen:?}");
    assert_eq!(sync.pipelines().await.unwrap().len(), 1);
    assert!(store.sync(other.id).pipeline(p.id).await.is_err(), "pipelines are tenant-scoped");

    let updated = sync
        .update_pipeline(
            p.id,
            PipelineUpdate {
                deletion: Some(Deletion::Delete),
                poll_secs: Some(Some(60)),
                status: Some(PipelineStatus::Paused),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((updated.deletion, updated.poll_secs, updated.list_id.as_str()), (Deletion::Delete, Some(60), "134"));
    assert!(store.active_sync_pipelines().await.unwrap().is_empty(), "a paused pipeline is not scheduled");
    sync.set_change_cursor(p.id, "100:1").await.unwrap();
    assert_eq!(sync.pipeline(p.id).await.unwrap().change_cursor.as_deref(), Some("100:1"));
    sync.write_index(p.id, &[IndexWrite { contact_id: "1".into(), sent: sent(&["a@x.io"]) }]).await.unwrap();

    store.connections(t.id).delete(dst.id).await.unwrap();
    assert!(sync.pipelines().await.unwrap().is_empty(), "deleting a connection deletes its pipelines");
    assert!(sync.index_entry(p.id, "1").await.unwrap().is_none(), "and their index");
}

async fn the_index_knows_which_contacts_still_hold_an_address(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let (src, dst) = (connection(&store, &t, "kommo", "k").await, connection(&store, &t, "uni", "u").await);
    let sync = store.sync(t.id);
    let p = sync.create_pipeline(new_pipeline("main", src.id, dst.id)).await.unwrap();
    sync.write_index(
        p.id,
        &[
            IndexWrite { contact_id: "1".into(), sent: sent(&["shared@x.io", "one@x.io"]) },
            IndexWrite { contact_id: "2".into(), sent: sent(&["shared@x.io"]) },
        ],
    )
    .await
    .unwrap();
    let asked = ["shared@x.io".to_owned(), "one@x.io".to_owned(), "nobody@x.io".to_owned()];
    let holders = sync.email_holders(p.id, &asked).await.unwrap();
    assert_eq!(holders.get("shared@x.io").unwrap(), &["1", "2"]);
    assert_eq!(holders.get("one@x.io").unwrap(), &["1"]);
    assert!(!holders.contains_key("nobody@x.io"), "an address nobody has is absent");
    let entries = sync.index_entries(p.id, &["2".to_owned(), "1".to_owned(), "3".to_owned()]).await.unwrap();
    assert_eq!(entries.len(), 2, "one read for several contacts, the unindexed one absent");
    assert_eq!(entries["2"].emails, ["shared@x.io"]);
    let entry = sync.index_entry(p.id, "1").await.unwrap().unwrap();
    assert_eq!(entry.emails, ["shared@x.io", "one@x.io"]);
    assert_eq!(entry.fingerprint, "shared@x.io,one@x.io");

    // A changed address replaces the old one in the address table too.
    sync.write_index(p.id, &[IndexWrite { contact_id: "2".into(), sent: sent(&["new@x.io"]) }]).await.unwrap();
    let holders = sync.email_holders(p.id, &["shared@x.io".to_owned()]).await.unwrap();
    assert_eq!(holders.get("shared@x.io").unwrap(), &["1"]);
    sync.write_index(p.id, &[IndexWrite { contact_id: "1".into(), sent: None }]).await.unwrap();
    assert!(sync.index_entry(p.id, "1").await.unwrap().is_none());
    assert_eq!(sync.indexed_contacts(p.id).await.unwrap(), ["2"]);
    assert_eq!(sync.indexed_emails(p.id).await.unwrap().into_iter().collect::<Vec<_>>(), ["new@x.io"]);
}

async fn a_large_index_write_lands_whole_and_the_last_write_for_a_contact_wins(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let (src, dst) = (connection(&store, &t, "kommo", "k").await, connection(&store, &t, "uni", "u").await);
    let sync = store.sync(t.id);
    let p = sync.create_pipeline(new_pipeline("main", src.id, dst.id)).await.unwrap();
    // More contacts than one statement binds, each with two addresses (one of them twice).
    let contacts = 1_234;
    let first: Vec<IndexWrite> = (0..contacts)
        .map(|i| {
            let (own, other) = (format!("c{i}@x.io"), format!("alt{i}@x.io"));
            IndexWrite { contact_id: i.to_string(), sent: sent(&[&own, &other, &own]) }
        })
        .collect();
    sync.write_index(p.id, &first).await.unwrap();
    assert_eq!(sync.indexed_contacts(p.id).await.unwrap().len(), contacts);
    assert_eq!(sync.indexed_emails(p.id).await.unwrap().len(), 2 * contacts, "each address once per contact");
    let ids: Vec<String> = (0..contacts).map(|i| i.to_string()).collect();
    assert_eq!(sync.index_entries(p.id, &ids).await.unwrap().len(), contacts, "read back in chunks, all of them");

    // One write set that changes a contact twice, removes one and then re-adds it, and
    // removes another for good: applied as if one after the other.
    sync.write_index(
        p.id,
        &[
            IndexWrite { contact_id: "1".into(), sent: sent(&["first@x.io"]) },
            IndexWrite { contact_id: "1".into(), sent: sent(&["second@x.io"]) },
            IndexWrite { contact_id: "2".into(), sent: None },
            IndexWrite { contact_id: "2".into(), sent: sent(&["back@x.io"]) },
            IndexWrite { contact_id: "3".into(), sent: sent(&["gone@x.io"]) },
            IndexWrite { contact_id: "3".into(), sent: None },
        ],
    )
    .await
    .unwrap();
    let entries = sync.index_entries(p.id, &["1".into(), "2".into(), "3".into()]).await.unwrap();
    assert_eq!(entries["1"].emails, ["second@x.io"]);
    assert_eq!(entries["2"].emails, ["back@x.io"]);
    assert!(!entries.contains_key("3"));
    let asked: Vec<String> = ["first@x.io", "second@x.io", "c1@x.io", "gone@x.io", "c3@x.io", "c4@x.io"]
        .iter()
        .map(|e| (*e).to_owned())
        .collect();
    let holders = sync.email_holders(p.id, &asked).await.unwrap();
    assert_eq!(holders.keys().map(String::as_str).collect::<Vec<_>>(), ["c4@x.io", "second@x.io"]);
    assert_eq!(sync.indexed_contacts(p.id).await.unwrap().len(), contacts - 1);
}

async fn a_run_starts_once_and_commits_pages_with_their_checkpoint(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let (src, dst) = (connection(&store, &t, "kommo", "k").await, connection(&store, &t, "uni", "u").await);
    let sync = store.sync(t.id);
    let job = |run: &crmhub_store::sync::SyncRun| {
        NewJob::new("sync.backfill", json!({"run": run.id})).dedupe_key(run.id.to_string())
    };
    let (p, first) = sync
        .create_pipeline_with_run(new_pipeline("main", src.id, dst.id), RunKind::Backfill, |_, run| job(run))
        .await
        .unwrap();
    assert!(first.created && first.job.is_some());
    let second = sync.start_run(p.id, RunKind::Backfill, job).await.unwrap();
    assert!(!second.created && second.job.is_none(), "a running backfill is not started twice");
    assert_eq!(second.run.id, first.run.id);
    let reconcile = sync.start_run(p.id, RunKind::Reconcile, job).await.unwrap();
    assert!(reconcile.created, "another kind may run beside it");
    let queued = store.jobs().list(&JobFilter { kind: Some("sync.backfill".into()), ..Default::default() }).await;
    assert_eq!(queued.unwrap().len(), 2);

    let page = PageCommit {
        checkpoint: Some("100:1,2".into()),
        done: 2,
        total: Some(5),
        index: vec![
            IndexWrite { contact_id: "1".into(), sent: sent(&["a@x.io"]) },
            IndexWrite { contact_id: "2".into(), sent: sent(&["b@x.io"]) },
        ],
        row_errors: vec![NewRowError {
            contact_id: "2".into(),
            email: Some("info@x.io".into()),
            code: "invalid".into(),
            message: "role address".into(),
        }],
        ..Default::default()
    };
    let run = sync.commit_page(first.run.id, page).await.unwrap();
    assert_eq!((run.done, run.total, run.checkpoint.as_deref()), (2, Some(5), Some("100:1,2")));
    let run = sync
        .commit_page(first.run.id, PageCommit { checkpoint: Some("200:3".into()), done: 1, ..Default::default() })
        .await
        .unwrap();
    assert_eq!((run.done, run.total, run.checkpoint.as_deref()), (3, Some(5), Some("200:3")));
    assert_eq!(sync.indexed_contacts(p.id).await.unwrap(), ["1", "2"]);
    let errors = sync.row_errors(p.id, 10).await.unwrap();
    assert_eq!((errors.len(), errors[0].email.as_deref()), (1, Some("info@x.io")));

    sync.note_run_error(first.run.id, "Unisender is unavailable").await.unwrap();
    let done = sync.finish_run(first.run.id, RunStatus::Done, Some(json!({"imported": 3})), None).await.unwrap();
    assert_eq!(done.status, RunStatus::Done);
    assert_eq!((done.errors, done.last_error.as_deref()), (1, Some("Unisender is unavailable")));
    assert_eq!(done.report, Some(json!({"imported": 3})));
    assert!(done.finished_at.is_some());
    let late = sync.commit_page(first.run.id, PageCommit { done: 1, ..Default::default() }).await.unwrap_err();
    assert!(matches!(late, StoreError::NotFound { .. }), "a finished run takes no more pages: {late:?}");
    let next = sync.start_run(p.id, RunKind::Backfill, job).await.unwrap();
    assert!(next.created, "once finished, a new run can start");
    assert_eq!(sync.runs(p.id, 10).await.unwrap().len(), 3);
}

async fn a_delivery_is_kept_with_its_jobs_sealed_and_quarantine_is_redriven_once(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let src = connection(&store, &t, "kommo", "k").await;
    let sync = store.sync(t.id);
    let body = "contacts[update][0][id]=7&contacts[update][0][name]=Anna%20Secret";
    let jobs = vec![
        NewJob::new("sync.contact", json!({"contact": "7"})).dedupe_key("p:7"),
        NewJob::new("sync.contact", json!({"contact": "7"})).dedupe_key("p:7"),
    ];
    let id = sync.record_delivery(src.id, body, DeliveryStatus::Accepted, None, jobs).await.unwrap();
    let kept = sync.delivery(id).await.unwrap();
    assert_eq!((kept.body.as_str(), kept.status, kept.events), (body, DeliveryStatus::Accepted, 2));
    let queued = store.jobs().list(&JobFilter { kind: Some("sync.contact".into()), ..Default::default() }).await;
    let queued = queued.unwrap();
    assert_eq!(queued.len(), 1, "the two events for one contact coalesce");
    assert_eq!(queued[0].connection_id, Some(src.id));

    // The body is sealed at rest: the plaintext is nowhere in the row.
    let raw: Vec<String> = match which {
        Which::Sqlite => {
            let crmhub_store::DatabaseUrl::Sqlite(path) = &db.url else { unreachable!() };
            let mut conn =
                <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .unwrap();
            sqlx::query_scalar("SELECT body_sealed FROM webhook_deliveries").fetch_all(&mut conn).await.unwrap()
        }
        Which::Postgres => {
            let crmhub_store::DatabaseUrl::Postgres(url) = &db.url else { unreachable!() };
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.unwrap();
            sqlx::query_scalar("SELECT body_sealed FROM webhook_deliveries").fetch_all(&mut conn).await.unwrap()
        }
    };
    assert!(!raw[0].contains("Secret") && !raw[0].contains("contacts"), "{raw:?}");

    // A delivery whose job cannot be enqueued is not kept either (all or nothing).
    let missing = crmhub_core::ConnectionId::new();
    assert!(sync.record_delivery(missing, body, DeliveryStatus::Accepted, None, Vec::new()).await.is_err());

    let q = sync.record_delivery(src.id, "garbage", DeliveryStatus::Quarantined, Some("unreadable"), Vec::new());
    let q = q.await.unwrap();
    let waiting = sync.quarantined(10).await.unwrap();
    assert_eq!((waiting.len(), waiting[0].id, waiting[0].error.as_deref()), (1, q, Some("unreadable")));
    sync.redrive_delivery(q, vec![NewJob::new("sync.contact", json!({"contact": "8"})).dedupe_key("p:8")])
        .await
        .unwrap();
    assert!(sync.quarantined(10).await.unwrap().is_empty());
    assert_eq!(sync.delivery(q).await.unwrap().status, DeliveryStatus::Redriven);
    let twice = sync.redrive_delivery(q, Vec::new()).await.unwrap_err();
    assert!(matches!(twice, StoreError::NotFound { .. }), "{twice:?}");
    let queued = store.jobs().list(&JobFilter { kind: Some("sync.contact".into()), ..Default::default() }).await;
    assert_eq!(queued.unwrap().len(), 2);
}
