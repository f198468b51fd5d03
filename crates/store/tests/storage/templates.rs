//! Versioned templates: published and private, visibility, name clashes, pinned versions.

use crmhub_core::{ConnectionName, ConnectorKind, Host};
use crmhub_store::StoreError;
use crmhub_store::connections::{ConnectionUpdate, NewConnection};
use crmhub_store::templates::NewTemplate;

use crate::harness::{TestDb, Which, tenant};
use crate::on_both_backends;

on_both_backends!(versions_visibility_and_clashes, connections_pin_a_version);

fn new(name: &str, source: &str) -> NewTemplate {
    NewTemplate {
        name: name.into(),
        kind: "crm".into(),
        label: name.into(),
        format: "yaml".into(),
        source: source.into(),
    }
}

async fn versions_visibility_and_clashes(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let a = tenant(&store, "tenant-a").await;
    let b = tenant(&store, "tenant-b").await;
    let templates = store.templates();

    assert_eq!(templates.add_version(None, new("shared", "v1")).await.unwrap().version, 1);
    assert_eq!(templates.add_version(None, new("shared", "v2")).await.unwrap().version, 2);
    let private = templates.add_version(Some(a.id), new("mine", "a-v1")).await.unwrap();
    assert_eq!((private.version, private.tenant_id), (1, Some(a.id)));

    // Resolution: latest by default, a given version on request, private only for its tenant.
    assert_eq!(templates.resolve(a.id, "shared", None).await.unwrap().source, "v2");
    assert_eq!(templates.resolve(a.id, "shared", Some(1)).await.unwrap().source, "v1");
    assert_eq!(templates.resolve(a.id, "mine", None).await.unwrap().source, "a-v1");
    assert!(matches!(templates.resolve(b.id, "mine", None).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(templates.resolve(a.id, "shared", Some(9)).await, Err(StoreError::NotFound { .. })));

    let names = |list: Vec<crmhub_store::templates::TemplateRecord>| {
        list.into_iter().map(|t| (t.name, t.version)).collect::<Vec<_>>()
    };
    assert_eq!(names(templates.list(Some(a.id)).await.unwrap()), [("mine".into(), 1), ("shared".into(), 2)]);
    assert_eq!(names(templates.list(Some(b.id)).await.unwrap()), [("shared".into(), 2)]);
    assert_eq!(names(templates.list(None).await.unwrap()), [("shared".into(), 2)]);
    assert_eq!(templates.versions(Some(a.id), "shared").await.unwrap().len(), 2);

    // One name, one template.
    let err = templates.add_version(Some(b.id), new("shared", "x")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { field: "name", .. }), "{err:?}");
    let err = templates.add_version(None, new("mine", "x")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { field: "name", .. }), "{err:?}");
    // Another tenant may use the same private name.
    templates.add_version(Some(b.id), new("mine", "b-v1")).await.unwrap();
    assert_eq!(templates.resolve(b.id, "mine", None).await.unwrap().source, "b-v1");
    assert_eq!(templates.resolve(a.id, "mine", None).await.unwrap().source, "a-v1");
}

async fn connections_pin_a_version(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let a = tenant(&store, "tenant-a").await;
    let details = serde_json::json!({"call_centre_id": "cc-7", "info": {"renderTooltip": []}});
    let connection = store
        .connections(a.id)
        .create(NewConnection {
            name: ConnectionName::parse("Book").unwrap(),
            kind: ConnectorKind::parse("template:contactbook").unwrap(),
            host: Host::parse("crm.example.com").unwrap(),
            fields: Default::default(),
            credentials: Default::default(),
            template_version: Some(3),
            details: details.as_object().unwrap().clone(),
        })
        .await
        .unwrap();
    let stored = store.connections(a.id).get(connection.id).await.unwrap();
    assert_eq!((stored.template_version, &stored.details), (Some(3), details.as_object().unwrap()));
    let upgraded = store
        .connections(a.id)
        .update(connection.id, ConnectionUpdate { template_version: Some(4), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(upgraded.template_version, Some(4));
    assert_eq!(store.connections(a.id).get(connection.id).await.unwrap().template_version, Some(4));
}
