//! Tenants, connections, tenant secrets and the request log.

use std::time::Duration;

use crmhub_core::request_log::RequestLogEntry;
use crmhub_core::{
    ConnectionName, ConnectionStatus, ConnectorKind, Host, PhoneRegion, TenantId, TenantName, TenantSlug,
};
use crmhub_store::StoreError;
use crmhub_store::connections::{ConnectionUpdate, NewConnection};
use crmhub_store::tenants::{NewTenant, TenantUpdate};

use crate::harness::{TestDb, Which, connection, credentials, tenant};
use crate::on_both_backends;

on_both_backends!(
    tenants_round_trip,
    duplicate_slug_is_a_conflict,
    connections_round_trip_without_exposing_credentials,
    connection_for_unknown_tenant_is_not_found,
    duplicate_connection_name_is_a_conflict,
    deleting_a_tenant_removes_what_it_owns,
    tenant_secrets_rotate_with_grace,
    request_log_keeps_newest_and_prunes,
    a_request_log_batch_larger_than_a_statement_skips_only_deleted_tenants,
    readiness_reports_migrations,
    concurrent_updates_of_different_columns_both_land,
);

/// Two PATCHes racing (one renames, one changes another column) must both take effect.
async fn concurrent_updates_of_different_columns_both_land(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let acme = tenant(&store, "acme").await;
    let main = connection(&store, &acme, "Main", "k1").await;
    for round in 0..20 {
        let name = TenantName::parse(&format!("Acme {round}")).unwrap();
        let region = PhoneRegion::parse(if round % 2 == 0 { "VN" } else { "GB" }).unwrap();
        let tenants = store.tenants();
        let (a, b) = tokio::join!(
            tenants.update(acme.id, TenantUpdate { name: Some(name.clone()), ..Default::default() }),
            tenants.update(acme.id, TenantUpdate { phone_region: Some(Some(region)), ..Default::default() }),
        );
        a.unwrap();
        b.unwrap();
        let now = store.tenants().get(acme.id).await.unwrap();
        assert_eq!((now.name, now.phone_region), (name, Some(region)), "round {round}");

        let renamed = ConnectionName::parse(&format!("Main {round}")).unwrap();
        let host = Host::parse(&format!("https://crm{round}.example.com")).unwrap();
        let connections = store.connections(acme.id);
        let (a, b) = tokio::join!(
            connections.update(main.id, ConnectionUpdate { name: Some(renamed.clone()), ..Default::default() }),
            connections.update(main.id, ConnectionUpdate { host: Some(host.clone()), ..Default::default() }),
        );
        a.unwrap();
        b.unwrap();
        let now = connections.get(main.id).await.unwrap();
        assert_eq!((now.name, now.host), (renamed, host), "round {round}");
    }
}

async fn tenants_round_trip(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let created = store
        .tenants()
        .create(NewTenant {
            slug: TenantSlug::parse("acme").unwrap(),
            name: TenantName::parse("Acme Ltd").unwrap(),
            phone_region: Some(PhoneRegion::parse("VN").unwrap()),
            settings: serde_json::json!({"social_inbox": {"max_ttl_secs": 600}}).as_object().unwrap().clone(),
        })
        .await
        .unwrap();
    assert_eq!(store.tenants().get(created.id).await.unwrap(), created);
    assert_eq!(store.tenants().by_slug(&created.slug).await.unwrap(), created);

    db.clock.advance(Duration::from_secs(5));
    let updated = store
        .tenants()
        .update(created.id, TenantUpdate { name: Some(TenantName::parse("Acme Group").unwrap()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(updated.name.as_str(), "Acme Group");
    assert_eq!(updated.phone_region, created.phone_region, "untouched fields stay");
    assert!(updated.updated_at > created.updated_at);

    tenant(&store, "beta").await;
    let slugs: Vec<String> = store.tenants().list().await.unwrap().into_iter().map(|t| t.slug.to_string()).collect();
    assert_eq!(slugs, ["acme", "beta"]);

    store.tenants().delete(created.id).await.unwrap();
    assert!(matches!(store.tenants().get(created.id).await, Err(StoreError::NotFound { entity: "tenant" })));
    assert!(matches!(store.tenants().delete(created.id).await, Err(StoreError::NotFound { .. })));
}

async fn duplicate_slug_is_a_conflict(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let first = tenant(&store, "acme").await;
    let err = store
        .tenants()
        .create(NewTenant {
            slug: TenantSlug::parse("acme").unwrap(),
            name: TenantName::parse("Other").unwrap(),
            phone_region: None,
            settings: Default::default(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { field: "slug", .. }), "{err:?}");
    let all = store.tenants().list().await.unwrap();
    assert_eq!(all.len(), 1, "nothing half-saved");
    assert_eq!(all[0].name, first.name, "the existing tenant is untouched");
}

async fn connections_round_trip_without_exposing_credentials(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let acme = tenant(&store, "acme").await;
    let conn = connection(&store, &acme, "Main CRM", "ak-123").await;
    assert_eq!(conn.credential_names, ["access_key"]);
    assert_eq!(conn.status, ConnectionStatus::Active);

    let scoped = store.connections(acme.id);
    assert_eq!(scoped.get(conn.id).await.unwrap(), conn);
    assert_eq!(scoped.list().await.unwrap(), std::slice::from_ref(&conn));
    assert_eq!(scoped.credentials(conn.id).await.unwrap().get("access_key").unwrap().expose(), "ak-123");

    let updated = scoped
        .update(
            conn.id,
            ConnectionUpdate {
                host: Some(Host::parse("crm2.example.com").unwrap()),
                status: Some(ConnectionStatus::Disabled),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.host.as_str(), "https://crm2.example.com");
    assert_eq!(
        scoped.credentials(conn.id).await.unwrap().get("access_key").unwrap().expose(),
        "ak-123",
        "an update never touches credentials"
    );

    scoped.replace_credentials(conn.id, credentials(&[("access_key", "ak-456"), ("extra", "x")])).await.unwrap();
    let creds = scoped.credentials(conn.id).await.unwrap();
    assert_eq!(creds.get("access_key").unwrap().expose(), "ak-456");
    assert_eq!(scoped.get(conn.id).await.unwrap().credential_names, ["access_key", "extra"]);

    // Health: a disabled connection keeps its status; an active one turns failing and back.
    scoped.record_health(conn.id, Err("timeout")).await.unwrap();
    assert_eq!(scoped.get(conn.id).await.unwrap().status, ConnectionStatus::Disabled);
    scoped
        .update(conn.id, ConnectionUpdate { status: Some(ConnectionStatus::Active), ..Default::default() })
        .await
        .unwrap();
    scoped.record_health(conn.id, Err("timeout")).await.unwrap();
    let failing = scoped.get(conn.id).await.unwrap();
    assert_eq!((failing.status, failing.last_error.as_deref()), (ConnectionStatus::Failing, Some("timeout")));
    scoped.record_health(conn.id, Ok(())).await.unwrap();
    let healthy = scoped.get(conn.id).await.unwrap();
    assert_eq!((healthy.status, healthy.last_error), (ConnectionStatus::Active, None));

    scoped.delete(conn.id).await.unwrap();
    assert!(matches!(scoped.get(conn.id).await, Err(StoreError::NotFound { entity: "connection" })));
}

async fn connection_for_unknown_tenant_is_not_found(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let err = store
        .connections(TenantId::new())
        .create(NewConnection {
            name: ConnectionName::parse("x").unwrap(),
            kind: ConnectorKind::Vtiger,
            host: Host::parse("crm.example.com").unwrap(),
            fields: Default::default(),
            credentials: credentials(&[("access_key", "k")]),
            template_version: None,
            details: Default::default(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: "tenant" }), "{err:?}");
}

async fn duplicate_connection_name_is_a_conflict(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let acme = tenant(&store, "acme").await;
    let beta = tenant(&store, "beta").await;
    connection(&store, &acme, "Main", "a").await;
    connection(&store, &beta, "Main", "b").await; // names are unique per tenant only
    let err = store
        .connections(acme.id)
        .create(NewConnection {
            name: ConnectionName::parse("Main").unwrap(),
            kind: ConnectorKind::Kommo,
            host: Host::parse("x.kommo.com").unwrap(),
            fields: Default::default(),
            credentials: Default::default(),
            template_version: None,
            details: Default::default(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { field: "name", .. }), "{err:?}");
    assert_eq!(store.connections(acme.id).list().await.unwrap().len(), 1);
}

async fn deleting_a_tenant_removes_what_it_owns(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let acme = tenant(&store, "acme").await;
    let beta = tenant(&store, "beta").await;
    let conn = connection(&store, &acme, "Main", "a").await;
    let kept = connection(&store, &beta, "Main", "b").await;
    store.jobs().enqueue(acme.id, crmhub_store::jobs::NewJob::new("x", serde_json::json!({}))).await.unwrap();
    store.secrets(acme.id).rotate("social_inbox.search", None, Duration::ZERO).await.unwrap();
    store.tenants().delete(acme.id).await.unwrap();
    assert!(store.connections(acme.id).get(conn.id).await.is_err());
    assert_eq!(store.jobs().depth(Some(acme.id)).await.unwrap().pending, 0);
    assert!(store.secrets(acme.id).valid("social_inbox.search").await.unwrap().is_empty());
    assert_eq!(store.connections(beta.id).get(kept.id).await.unwrap(), kept);
}

async fn tenant_secrets_rotate_with_grace(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let acme = tenant(&store, "acme").await;
    let secrets = store.secrets(acme.id);
    let purpose = "social_inbox.search";

    let first = secrets.rotate(purpose, Some(crmhub_core::Secret::new("changeme!")), Duration::ZERO).await.unwrap();
    let generated = secrets.rotate(purpose, None, Duration::from_secs(60)).await.unwrap();
    assert_eq!(generated.secret.expose().len(), 43, "256-bit generated secret");

    let valid = secrets.valid(purpose).await.unwrap();
    assert_eq!(valid.len(), 2, "old secret valid during grace");
    assert_eq!(valid[0].id, generated.id, "current secret first");
    assert_eq!(valid[1].secret.expose(), "changeme!");
    assert_eq!(valid[1].id, first.id);

    db.clock.advance(Duration::from_secs(61));
    let valid = secrets.valid(purpose).await.unwrap();
    assert_eq!(valid.len(), 1, "old secret retired after grace");
    assert_eq!(valid[0].id, generated.id);

    let other = tenant(&store, "other").await;
    assert!(store.secrets(other.id).valid(purpose).await.unwrap().is_empty());

    // After a leak: rotate with a day's grace, then again with none. Every older secret stops
    // at once, including the one still inside the first rotation's grace.
    let leaked = secrets.rotate(purpose, None, Duration::from_secs(86_400)).await.unwrap();
    assert_eq!(secrets.valid(purpose).await.unwrap().len(), 2);
    let fresh = secrets.rotate(purpose, None, Duration::ZERO).await.unwrap();
    let valid = secrets.valid(purpose).await.unwrap();
    assert_eq!(
        valid.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [fresh.id.as_str()],
        "leaked {} retired",
        leaked.id
    );
}

async fn request_log_keeps_newest_and_prunes(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let acme = tenant(&store, "acme").await;
    let conn = connection(&store, &acme, "Main", "a").await;
    let entry = |at: i64, status: u16| RequestLogEntry {
        tenant_id: acme.id,
        connection_id: conn.id,
        at,
        method: "GET".into(),
        url: format!("https://crm.example.com/webservice.php?sessionName=[redacted]&n={at}"),
        status: Some(status),
        latency_ms: 12,
        outcome: "ok".into(),
        request_body: None,
        response_body: Some("{\"success\":true}".into()),
        error: None,
    };
    let entries: Vec<_> = (0..10).map(|i| entry(1_000 + i, 200)).collect();
    store.append_request_log(&entries).await.unwrap();
    let listed = store.request_log(acme.id).list(conn.id, 3, None).await.unwrap();
    assert_eq!(listed.iter().map(|e| e.at).collect::<Vec<_>>(), [1009, 1008, 1007]);
    let older = store.request_log(acme.id).list(conn.id, 3, Some(listed[2].id)).await.unwrap();
    assert_eq!(older.iter().map(|e| e.at).collect::<Vec<_>>(), [1006, 1005, 1004]);

    let pruned = store.prune_request_log(1_002, 5).await.unwrap();
    assert_eq!(pruned, 5, "two by age, three beyond the newest five");
    let left = store.request_log(acme.id).list(conn.id, 100, None).await.unwrap();
    assert_eq!(left.iter().map(|e| e.at).collect::<Vec<_>>(), [1009, 1008, 1007, 1006, 1005]);
}

/// The writer's batches go in as multi-row statements: a batch of more rows than one statement
/// takes, interleaved with entries of a tenant deleted meanwhile, keeps every other entry with
/// every field, in order, and fails nothing.
async fn a_request_log_batch_larger_than_a_statement_skips_only_deleted_tenants(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let acme = tenant(&store, "acme").await;
    let gone = tenant(&store, "gone").await;
    let conn = connection(&store, &acme, "Main", "a").await;
    let gone_conn = connection(&store, &gone, "Main", "g").await;
    store.tenants().delete(gone.id).await.unwrap();
    let entry = |i: i64| {
        let (tenant_id, connection_id) = if i % 3 == 0 { (gone.id, gone_conn.id) } else { (acme.id, conn.id) };
        RequestLogEntry {
            tenant_id,
            connection_id,
            at: 1_000 + i,
            method: if i % 2 == 0 { "GET" } else { "POST" }.into(),
            url: format!("https://crm.example.com/webservice.php?n={i}"),
            status: (i % 5 != 0).then_some(200),
            latency_ms: i,
            outcome: if i % 5 == 0 { "timeout" } else { "ok" }.into(),
            request_body: (i % 2 == 1).then(|| format!("operation=create&n={i}")),
            response_body: (i % 5 != 0).then(|| format!("{{\"n\":{i},\"name\":\"Đặng 'quoted'\"}}")),
            error: (i % 5 == 0).then(|| "timed out".to_owned()),
        }
    };
    let entries: Vec<_> = (0..450).map(entry).collect();
    store.append_request_log(&entries).await.unwrap();
    let listed = store.request_log(acme.id).list(conn.id, 1_000, None).await.unwrap();
    let expected: Vec<_> = entries.iter().filter(|e| e.tenant_id == acme.id).rev().collect();
    assert_eq!(listed.len(), 300);
    for (got, want) in listed.into_iter().zip(expected) {
        let got = RequestLogEntry {
            tenant_id: acme.id,
            connection_id: got.connection_id,
            at: got.at,
            method: got.method,
            url: got.url,
            status: got.status,
            latency_ms: got.latency_ms,
            outcome: got.outcome,
            request_body: got.request_body,
            response_body: got.response_body,
            error: got.error,
        };
        assert_eq!(&got, want);
    }
    assert!(store.request_log(gone.id).list(gone_conn.id, 1_000, None).await.unwrap().is_empty());
}

async fn readiness_reports_migrations(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    assert_eq!(store.check_ready().await, Ok(()));
}
