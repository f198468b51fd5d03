//! The engine against an in-memory source (a change feed in pages, cards, deletions) and an
//! in-memory list that counts what it received and can fail on demand.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crmhub_core::crm::{
    Capability, CardOptions, ChangeCursor, ChangePage, ConnectionCheck, ContactCard, ContactRecord, Crm, CrmError,
    LabeledValue,
};
use crmhub_core::{ConnectionName, ConnectorKind, Host, TenantName, TenantSlug};
use crmhub_store::connections::NewConnection;
use crmhub_store::jobs::JobFilter;
use crmhub_store::sync::{Deletion, NewPipeline, Pipeline, RunKind, RunStatus};
use crmhub_store::tenants::NewTenant;
use crmhub_store::{DatabaseUrl, MasterKey, MasterKeySource, Store, StoreOptions};
use serde_json::json;

use super::destination::{DestinationRow, ImportOutcome, RowRefusal, SyncDestination};
use super::mirror::{Engine, Mirrored};
use super::pipeline::{PipelineInput, validate, validate_field_map};
use super::{backfill_slice, contact_job, reconcile};

/// id → (updated_at, name, emails)
type Contacts = BTreeMap<u64, (u64, String, Vec<String>)>;

#[derive(Default)]
struct FakeSource {
    contacts: Mutex<Contacts>,
    clock: AtomicUsize,
    page: usize,
    cards: AtomicUsize,
}

impl FakeSource {
    fn with_page(page: usize) -> Self {
        Self { page, ..Default::default() }
    }

    fn put(&self, id: u64, emails: &[&str]) {
        let at = self.clock.fetch_add(1, Ordering::SeqCst) as u64;
        let emails = emails.iter().map(|e| (*e).to_owned()).collect();
        self.contacts.lock().unwrap().insert(id, (at, format!("Contact {id}"), emails));
    }

    fn remove(&self, id: u64) {
        self.contacts.lock().unwrap().remove(&id);
    }
}

#[async_trait::async_trait]
impl Crm for FakeSource {
    fn capabilities(&self) -> &[Capability] {
        &[Capability::ContactCard, Capability::ListChanges]
    }

    async fn check(&self) -> Result<ConnectionCheck, CrmError> {
        Ok(ConnectionCheck { details: Vec::new(), unverified: None })
    }

    async fn contact_card(&self, id: &str, _: &CardOptions) -> Result<ContactCard, CrmError> {
        self.cards.fetch_add(1, Ordering::SeqCst);
        let contacts = self.contacts.lock().unwrap();
        let (_, name, emails) =
            contacts.get(&id.parse().unwrap_or(0)).ok_or(CrmError::NotFound { what: format!("contact {id}") })?;
        Ok(ContactCard {
            id: id.to_owned(),
            display_name: name.clone(),
            first_name: None,
            last_name: None,
            title: None,
            emails: emails.iter().map(|e| LabeledValue::new("Work", e.clone())).collect(),
            phones: Vec::new(),
            company: None,
            owner: None,
            extra_fields: vec![LabeledValue::new("Position", "CEO")],
            figures: Vec::new(),
            activities: Vec::new(),
            record_url: None,
        })
    }

    /// By (updated_at, id); the cursor is the last (updated_at) delivered.
    async fn list_changes(&self, since: Option<&ChangeCursor>) -> Result<ChangePage, CrmError> {
        let after: Option<u64> = since.map(|c| c.0.parse().unwrap());
        let contacts = self.contacts.lock().unwrap();
        let mut all: Vec<(u64, u64, &String, &Vec<String>)> =
            contacts.iter().map(|(id, (at, name, emails))| (*at, *id, name, emails)).collect();
        all.sort();
        let fresh: Vec<_> = all.into_iter().filter(|(at, ..)| after.is_none_or(|a| *at > a)).collect();
        let more = fresh.len() > self.page;
        let taken: Vec<_> = fresh.into_iter().take(self.page).collect();
        let next = taken.last().map(|(at, ..)| at.to_string()).or(since.map(|c| c.0.clone())).unwrap_or("0".into());
        let next = if since.is_none() && taken.is_empty() { "0".into() } else { next };
        Ok(ChangePage {
            updated: taken
                .into_iter()
                .map(|(at, id, name, emails)| ContactRecord {
                    id: id.to_string(),
                    display_name: name.clone(),
                    first_name: None,
                    last_name: None,
                    emails: emails.clone(),
                    phones: Vec::new(),
                    company: None,
                    modified_at: Some(at as i64),
                })
                .collect(),
            deleted: Vec::new(),
            next: ChangeCursor(next),
            more,
        })
    }
}

#[derive(Default)]
struct FakeList {
    members: Mutex<BTreeSet<String>>,
    /// Addresses that exist in the account (a deleted one is gone from here too).
    account: Mutex<BTreeSet<String>>,
    received: Mutex<BTreeMap<String, usize>>,
    imports: AtomicUsize,
    /// Import calls with this number (1-based) and later fail until reset.
    fail_from: Mutex<Option<usize>>,
    refuse: Mutex<BTreeSet<String>>,
}

impl FakeList {
    fn members(&self) -> BTreeSet<String> {
        self.members.lock().unwrap().clone()
    }

    fn received(&self, email: &str) -> usize {
        self.received.lock().unwrap().get(email).copied().unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl SyncDestination for FakeList {
    async fn import(&self, _list: &str, rows: &[DestinationRow]) -> Result<ImportOutcome, CrmError> {
        let n = self.imports.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_from.lock().unwrap().is_some_and(|from| n >= from) {
            return Err(CrmError::Unavailable("Unisender is down".into()));
        }
        assert!(rows.len() <= 500, "at most 500 rows per import");
        let mut refused = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            if self.refuse.lock().unwrap().contains(&row.email) {
                refused.push(RowRefusal { row: i, code: "invalid".into(), message: "role address".into() });
                continue;
            }
            if row.delete {
                self.members.lock().unwrap().remove(&row.email);
                self.account.lock().unwrap().remove(&row.email);
            } else {
                *self.received.lock().unwrap().entry(row.email.clone()).or_default() += 1;
                self.members.lock().unwrap().insert(row.email.clone());
                self.account.lock().unwrap().insert(row.email.clone());
            }
        }
        Ok(ImportOutcome { refused })
    }

    async fn exclude(&self, _list: &str, email: &str) -> Result<(), CrmError> {
        self.members.lock().unwrap().remove(email);
        Ok(())
    }

    async fn export(&self, _list: &str, offset: u64, limit: u64) -> Result<Vec<Option<String>>, CrmError> {
        Ok(self.members().into_iter().skip(offset as usize).take(limit as usize).map(Some).collect())
    }
}

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    pipeline: Pipeline,
}

async fn world(deletion: Deletion, field_map: serde_json::Value) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(
        DatabaseUrl::sqlite_file(dir.path().join("t.db")),
        MasterKeySource::Given(MasterKey::generate()),
    );
    options.allow_new_database = true;
    let store = Store::open(options).await.unwrap();
    let tenant = store
        .tenants()
        .create(NewTenant {
            slug: TenantSlug::parse("acme").unwrap(),
            name: TenantName::parse("Acme").unwrap(),
            phone_region: None,
            settings: Default::default(),
        })
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (name, kind) in [("kommo", ConnectorKind::Kommo), ("uni", ConnectorKind::Unisender)] {
        let c = store
            .connections(tenant.id)
            .create(NewConnection {
                name: ConnectionName::parse(name).unwrap(),
                kind,
                host: Host::parse("https://example.com").unwrap(),
                fields: Default::default(),
                credentials: Default::default(),
                template_version: None,
                details: Default::default(),
            })
            .await
            .unwrap();
        ids.push(c.id);
    }
    let pipeline = store
        .sync(tenant.id)
        .create_pipeline(NewPipeline {
            name: "main".into(),
            source_connection_id: ids[0],
            destination_connection_id: ids[1],
            list_id: "1".into(),
            field_map: field_map.as_object().unwrap().clone(),
            deletion,
            poll_secs: None,
        })
        .await
        .unwrap();
    World { _dir: dir, store, pipeline }
}

async fn backfill(w: &World, source: &FakeSource, list: &FakeList) -> RunStatus {
    let start = super::start_run(&w.store, &w.pipeline, RunKind::Backfill).await.unwrap();
    let engine = Engine::new(&w.store, &w.pipeline, source, list);
    let slice = backfill_slice(&engine, start.run.id, usize::MAX, Duration::from_secs(60)).await.unwrap();
    slice.run.status
}

fn emails_of(n: u64) -> Vec<String> {
    (1..=n).map(|i| format!("c{i}@example.com")).collect()
}

#[tokio::test]
async fn a_backfill_brings_every_address_over_once_in_pages() {
    let w = world(Deletion::Exclude, json!({"name": "Name"})).await;
    let source = FakeSource::with_page(100);
    for i in 1..=300 {
        source.put(i, &[&format!("c{i}@example.com")]);
    }
    let list = FakeList::default();
    assert_eq!(backfill(&w, &source, &list).await, RunStatus::Done);
    assert_eq!(list.members(), emails_of(300).into_iter().collect());
    assert!(emails_of(300).iter().all(|e| list.received(e) == 1));
    assert_eq!(list.imports.load(Ordering::SeqCst), 3, "one import per page of 100");
    assert_eq!(source.cards.load(Ordering::SeqCst), 0, "no custom fields mapped: the feed's records suffice");
    let run = &w.store.sync(w.pipeline.tenant_id).runs(w.pipeline.id, 1).await.unwrap()[0];
    assert_eq!((run.done, run.status), (300, RunStatus::Done));
    // A second backfill finds every contact unchanged and sends nothing.
    assert_eq!(backfill(&w, &source, &list).await, RunStatus::Done);
    assert_eq!(list.imports.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_interrupted_backfill_resumes_from_its_checkpoint_and_sends_nothing_twice() {
    let w = world(Deletion::Exclude, json!({"name": "Name"})).await;
    let source = FakeSource::with_page(50);
    for i in 1..=250 {
        source.put(i, &[&format!("c{i}@example.com")]);
    }
    let list = FakeList::default();
    *list.fail_from.lock().unwrap() = Some(3);
    let start = super::start_run(&w.store, &w.pipeline, RunKind::Backfill).await.unwrap();
    let engine = Engine::new(&w.store, &w.pipeline, &source, &list);
    let err = backfill_slice(&engine, start.run.id, usize::MAX, Duration::from_secs(60)).await.unwrap_err();
    assert!(err.to_string().contains("unavailable"), "{err}");
    let sync = w.store.sync(w.pipeline.tenant_id);
    let stopped = sync.run(start.run.id).await.unwrap();
    assert_eq!((stopped.done, stopped.status), (100, RunStatus::Running), "two pages committed");
    // A second start while it runs returns the same run: no second backfill.
    let again = super::start_run(&w.store, &w.pipeline, RunKind::Backfill).await.unwrap();
    assert!(!again.created && again.run.id == start.run.id);

    *list.fail_from.lock().unwrap() = None;
    let slice = backfill_slice(&engine, start.run.id, usize::MAX, Duration::from_secs(60)).await.unwrap();
    assert_eq!((slice.run.status, slice.run.done), (RunStatus::Done, 250));
    assert_eq!(list.members(), emails_of(250).into_iter().collect());
    let twice: Vec<String> = emails_of(250).into_iter().filter(|e| list.received(e) != 1).collect();
    assert!(twice.is_empty(), "imported other than once: {twice:?}");
}

#[tokio::test]
async fn a_crash_between_the_import_and_the_commit_resends_that_page_once() {
    let w = world(Deletion::Exclude, json!({"name": "Name"})).await;
    let source = FakeSource::with_page(10);
    for i in 1..=30 {
        source.put(i, &[&format!("c{i}@example.com")]);
    }
    let list = FakeList::default();
    let start = super::start_run(&w.store, &w.pipeline, RunKind::Backfill).await.unwrap();
    let engine = Engine::new(&w.store, &w.pipeline, &source, &list);
    // One page committed, then the next page imported but "lost" before its commit.
    backfill_slice(&engine, start.run.id, 1, Duration::from_secs(60)).await.unwrap();
    let page = source.list_changes(Some(&ChangeCursor("9".into()))).await.unwrap();
    let contacts: Vec<_> = page.updated.into_iter().map(super::SourceContact::from).collect();
    engine.send_batch(&contacts, false).await.unwrap();
    let slice = backfill_slice(&engine, start.run.id, usize::MAX, Duration::from_secs(60)).await.unwrap();
    assert_eq!(slice.run.status, RunStatus::Done);
    let counts: Vec<usize> = emails_of(30).iter().map(|e| list.received(e)).collect();
    assert!(counts[..10].iter().all(|n| *n == 1) && counts[20..].iter().all(|n| *n == 1), "{counts:?}");
    assert!(counts[10..20].iter().all(|n| *n == 2), "the page in flight, once more: {counts:?}");
}

#[tokio::test]
async fn a_storm_of_jobs_for_one_contact_makes_one_fetch_and_one_import() {
    let w = world(Deletion::Exclude, json!({"name": "Name"})).await;
    let source = FakeSource::with_page(100);
    source.put(7, &["ann@example.com"]);
    let list = FakeList::default();
    for _ in 0..20 {
        w.store.jobs().enqueue(w.pipeline.tenant_id, contact_job(&w.pipeline, "7")).await.unwrap();
    }
    let filter = JobFilter { kind: Some(super::CONTACT_JOB.into()), ..Default::default() };
    assert_eq!(w.store.jobs().list(&filter).await.unwrap().len(), 1, "twenty events, one job");
    let engine = Engine::new(&w.store, &w.pipeline, &source, &list);
    while let Some(job) = w.store.jobs().claim("t", Duration::from_secs(30)).await.unwrap() {
        engine.mirror_contact(job.payload["contact"].as_str().unwrap(), false).await.unwrap();
        w.store.jobs().complete(&job).await.unwrap();
    }
    assert_eq!((source.cards.load(Ordering::SeqCst), list.imports.load(Ordering::SeqCst)), (1, 1));
    // The same contact again, unchanged: a fetch, and nothing sent.
    assert_eq!(engine.mirror_contact("7", false).await.unwrap(), Mirrored::Unchanged);
    assert_eq!(list.imports.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_shared_address_survives_deleting_one_of_its_contacts() {
    let w = world(Deletion::Exclude, json!({"name": "Name"})).await;
    let source = FakeSource::with_page(100);
    source.put(1, &["shared@example.com", "one@example.com"]);
    source.put(2, &["Shared@Example.com"]);
    let list = FakeList::default();
    let engine = Engine::new(&w.store, &w.pipeline, &source, &list);
    engine.mirror_contact("1", false).await.unwrap();
    engine.mirror_contact("2", false).await.unwrap();
    source.remove(1);
    let removed = engine.mirror_contact("1", false).await.unwrap();
    assert_eq!(removed, Mirrored::Deleted { removed: vec!["one@example.com".into()] });
    assert_eq!(list.members(), BTreeSet::from(["shared@example.com".to_owned()]));
    source.remove(2);
    engine.mirror_contact("2", false).await.unwrap();
    assert!(list.members().is_empty(), "the last holder gone, the address goes");
}

#[tokio::test]
async fn a_changed_address_removes_the_old_one() {
    let w = world(Deletion::Exclude, json!({"name": "Name"})).await;
    let source = FakeSource::with_page(100);
    source.put(1, &["old@example.com"]);
    let list = FakeList::default();
    let engine = Engine::new(&w.store, &w.pipeline, &source, &list);
    engine.mirror_contact("1", false).await.unwrap();
    source.put(1, &["new@example.com"]);
    let sent = engine.mirror_contact("1", false).await.unwrap();
    assert_eq!(sent, Mirrored::Sent { rows: 1, removed: vec!["old@example.com".into()] });
    assert_eq!(list.members(), BTreeSet::from(["new@example.com".to_owned()]));
}

#[tokio::test]
async fn an_address_two_contacts_drop_in_one_page_goes_and_one_still_held_outside_stays() {
    let w = world(Deletion::Exclude, json!({"name": "Name"})).await;
    let source = FakeSource::with_page(100);
    source.put(1, &["shared@example.com", "one@example.com"]);
    source.put(2, &["shared@example.com"]);
    source.put(3, &["kept@example.com"]);
    source.put(4, &["kept@example.com"]);
    let list = FakeList::default();
    assert_eq!(backfill(&w, &source, &list).await, RunStatus::Done);
    // One page rewrites 1 and 2 without the address they shared, and 3 without one that 4
    // (not in the page) still has.
    source.put(1, &["one@example.com"]);
    source.put(2, &["two@example.com"]);
    source.put(3, &["three@example.com"]);
    let engine = Engine::new(&w.store, &w.pipeline, &source, &list);
    let page = source.list_changes(Some(&ChangeCursor("3".into()))).await.unwrap();
    assert_eq!(page.updated.len(), 3);
    let contacts: Vec<_> = page.updated.into_iter().map(Into::into).collect();
    let result = engine.send_batch(&contacts, false).await.unwrap();
    assert_eq!(result.removed, ["shared@example.com"], "removed once, though both dropped it");
    let expected = ["kept@example.com", "one@example.com", "three@example.com", "two@example.com"];
    assert_eq!(list.members(), expected.iter().map(|e| (*e).to_owned()).collect::<BTreeSet<_>>());
}

#[tokio::test]
async fn the_delete_policy_deletes_account_wide_and_exclude_only_leaves_the_list() {
    for (policy, in_account) in [(Deletion::Exclude, true), (Deletion::Delete, false)] {
        let w = world(policy, json!({"name": "Name"})).await;
        let source = FakeSource::with_page(100);
        source.put(1, &["gone@example.com"]);
        let list = FakeList::default();
        let engine = Engine::new(&w.store, &w.pipeline, &source, &list);
        engine.mirror_contact("1", false).await.unwrap();
        source.remove(1);
        engine.mirror_contact("1", false).await.unwrap();
        assert!(list.members().is_empty(), "{policy:?}");
        assert_eq!(list.account.lock().unwrap().contains("gone@example.com"), in_account, "{policy:?}");
    }
}

#[tokio::test]
async fn refused_rows_are_dead_letters_and_the_rest_goes_through() {
    let w = world(Deletion::Exclude, json!({"name": "Name", "POSITION": "Position"})).await;
    let source = FakeSource::with_page(100);
    source.put(1, &["info@example.com", "ann@example.com"]);
    let list = FakeList::default();
    list.refuse.lock().unwrap().insert("info@example.com".into());
    let engine = Engine::new(&w.store, &w.pipeline, &source, &list);
    engine.mirror_contact("1", false).await.unwrap();
    assert_eq!(list.members(), BTreeSet::from(["ann@example.com".to_owned()]));
    let errors = w.store.sync(w.pipeline.tenant_id).row_errors(w.pipeline.id, 10).await.unwrap();
    assert_eq!((errors.len(), errors[0].email.as_deref()), (1, Some("info@example.com")));
    let entry = w.store.sync(w.pipeline.tenant_id).index_entry(w.pipeline.id, "1").await.unwrap().unwrap();
    assert_eq!(entry.emails, ["ann@example.com"], "only what the destination accepted is indexed");
}

#[tokio::test]
async fn reconciliation_repairs_a_missed_add_a_missed_delete_and_a_stray_address() {
    let w = world(Deletion::Exclude, json!({"name": "Name"})).await;
    let source = FakeSource::with_page(2);
    for i in 1..=5 {
        source.put(i, &[&format!("c{i}@example.com")]);
    }
    let list = FakeList::default();
    assert_eq!(backfill(&w, &source, &list).await, RunStatus::Done);
    source.put(6, &["c6@example.com"]); // its webhook was missed
    source.remove(2); // and so was this deletion
    list.members.lock().unwrap().insert("stray@example.com".into());
    list.members.lock().unwrap().remove("c4@example.com"); // lost on the destination's side
    let engine = Engine::new(&w.store, &w.pipeline, &source, &list);
    let report = reconcile(&engine).await.unwrap();
    assert_eq!(report.readded, ["4", "6"]);
    assert_eq!(report.deleted, ["2"]);
    assert_eq!(report.excluded, ["stray@example.com"]);
    assert_eq!(report.checked, 5);
    let expected: BTreeSet<String> = [1, 3, 4, 5, 6].iter().map(|i| format!("c{i}@example.com")).collect();
    assert_eq!(list.members(), expected);
    // A second pass finds nothing to repair.
    let again = reconcile(&engine).await.unwrap();
    assert!(again.readded.is_empty() && again.deleted.is_empty() && again.excluded.is_empty(), "{again:?}");
}

#[test]
fn field_maps_name_known_source_fields_only() {
    let ok = json!({"name": "Name", "phone": "phone", "POSITION": "Position"});
    assert!(validate_field_map(ok.as_object().unwrap()).is_ok());
    let unknown = validate_field_map(json!({"nickname": "Nick"}).as_object().unwrap()).unwrap_err();
    assert_eq!(unknown.field, "field_map.nickname");
    let to_key = validate_field_map(json!({"name": "email"}).as_object().unwrap()).unwrap_err();
    assert_eq!(to_key.field, "field_map.name");
}

#[tokio::test]
async fn a_pipeline_needs_a_change_feed_source_and_a_unisender_destination() {
    let w = world(Deletion::Exclude, json!({})).await;
    let connections = w.store.connections(w.pipeline.tenant_id);
    let kommo = connections.get(w.pipeline.source_connection_id).await.unwrap();
    let uni = connections.get(w.pipeline.destination_connection_id).await.unwrap();
    let input = |list: &str| PipelineInput {
        name: "p".into(),
        source_connection_id: kommo.id.to_string(),
        destination_connection_id: uni.id.to_string(),
        list_id: list.into(),
        field_map: None,
        deletion: None,
        poll_secs: None,
    };
    let feed = [Capability::ListChanges];
    let made = validate(input("9"), &kommo, &feed, &uni).unwrap();
    assert_eq!((made.0.deletion, made.0.field_map.get("name")), (Deletion::Exclude, Some(&json!("Name"))));
    assert_eq!(
        validate(input("9"), &kommo, &[Capability::SearchContacts], &uni).unwrap_err().field,
        "source_connection_id"
    );
    assert_eq!(validate(input("9"), &kommo, &feed, &kommo).unwrap_err().field, "destination_connection_id");
    assert_eq!(validate(input(" "), &kommo, &feed, &uni).unwrap_err().field, "list_id");
}
