//! Kommo's storage: single-use OAuth states, replayed codes, the webhook destination and the
//! widget's settings (sealed, scoped by tenant), and the connections of one Kommo host.

use std::sync::Arc;
use std::time::Duration;

use crmhub_core::{ConnectionName, ConnectionStatus, ConnectorKind, Host, Secret};
use crmhub_store::connections::{Connection, NewConnection};
use crmhub_store::kommo::{AuthorizeMode, ConsumedState, hash_token};
use crmhub_store::tenants::Tenant;
use crmhub_store::{Store, StoreError};
use sqlx::Connection as _;

use crate::harness::{TestDb, Which, connection, credentials, tenant};
use crate::on_both_backends;

on_both_backends!(
    a_state_is_good_once_and_names_its_connection,
    a_state_expires_after_its_ttl,
    of_concurrent_consumers_of_one_state_exactly_one_wins,
    a_state_for_another_tenants_connection_is_refused,
    a_code_seen_before_is_a_replay_and_codes_are_pruned,
    a_webhook_is_sealed_replaced_and_deleted_per_tenant,
    widget_settings_are_sealed_and_scoped_by_tenant,
    a_host_block_fails_that_hosts_connections_and_restores_only_its_own,
    kommo_secrets_survive_a_key_rotation_and_never_reach_the_database_in_clear,
);

const TTL: Duration = Duration::from_secs(20 * 60);

pub async fn kommo_connection(store: &Store, tenant: &Tenant, name: &str, host: &str) -> Connection {
    store
        .connections(tenant.id)
        .create(NewConnection {
            name: ConnectionName::parse(name).unwrap(),
            kind: ConnectorKind::Kommo,
            host: Host::parse(host).unwrap(),
            fields: Default::default(),
            credentials: credentials(&[("client_id", "cid"), ("client_secret", "csecret")]),
            template_version: None,
            details: Default::default(),
        })
        .await
        .expect("create kommo connection")
}

async fn a_state_is_good_once_and_names_its_connection(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let c = kommo_connection(&store, &t, "Kommo", "https://demo.kommo.com").await;
    let started =
        store.kommo(t.id).start_authorization(c.id, "state-1", AuthorizeMode::PostMessage, TTL).await.unwrap();
    assert_eq!(started.expires_at, started.created_at + 20 * 60 * 1000);

    assert_eq!(store.consume_oauth_state("nope").await.unwrap(), ConsumedState::Unknown);
    assert_eq!(
        store.consume_oauth_state("state-1").await.unwrap(),
        ConsumedState::Consumed { tenant_id: t.id, connection_id: c.id, mode: AuthorizeMode::PostMessage }
    );
    assert_eq!(store.consume_oauth_state("state-1").await.unwrap(), ConsumedState::Used);
}

async fn a_state_expires_after_its_ttl(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let c = kommo_connection(&store, &t, "Kommo", "https://demo.kommo.com").await;
    store.kommo(t.id).start_authorization(c.id, "state-1", AuthorizeMode::Popup, TTL).await.unwrap();
    store.kommo(t.id).start_authorization(c.id, "state-2", AuthorizeMode::Popup, TTL).await.unwrap();
    db.clock.advance(TTL - Duration::from_secs(1));
    assert!(matches!(store.consume_oauth_state("state-1").await.unwrap(), ConsumedState::Consumed { .. }));
    db.clock.advance(Duration::from_secs(1));
    assert_eq!(store.consume_oauth_state("state-2").await.unwrap(), ConsumedState::Expired);
    assert_eq!(store.consume_oauth_state("state-2").await.unwrap(), ConsumedState::Expired, "and stays so");
}

async fn of_concurrent_consumers_of_one_state_exactly_one_wins(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let c = kommo_connection(&store, &t, "Kommo", "https://demo.kommo.com").await;
    for round in 0..5 {
        let state = format!("state-{round}");
        store.kommo(t.id).start_authorization(c.id, &state, AuthorizeMode::Popup, TTL).await.unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let (store, state, barrier) = (store.clone(), state.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.consume_oauth_state(&state).await.unwrap()
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for consumer in consumers {
            outcomes.push(consumer.await.unwrap());
        }
        let won = outcomes.iter().filter(|o| matches!(o, ConsumedState::Consumed { .. })).count();
        assert_eq!(won, 1, "round {round}: {outcomes:?}");
        assert!(outcomes.contains(&ConsumedState::Used), "round {round}: {outcomes:?}");
    }
}

async fn a_state_for_another_tenants_connection_is_refused(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let (acme, globex) = (tenant(&store, "acme").await, tenant(&store, "globex").await);
    let c = kommo_connection(&store, &acme, "Kommo", "https://demo.kommo.com").await;
    let err = store.kommo(globex.id).start_authorization(c.id, "s", AuthorizeMode::Popup, TTL).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: "connection" }), "{err:?}");
    assert_eq!(store.consume_oauth_state("s").await.unwrap(), ConsumedState::Unknown, "nothing was stored");
    let err = store.kommo(globex.id).record_code(c.id, "code").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert!(store.kommo(acme.id).record_code(c.id, "code").await.unwrap(), "the code was not recorded before");
}

async fn a_code_seen_before_is_a_replay_and_codes_are_pruned(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let c = kommo_connection(&store, &t, "Kommo", "https://demo.kommo.com").await;
    let kommo = store.kommo(t.id);
    assert!(kommo.record_code(c.id, "code-1").await.unwrap());
    assert!(!kommo.record_code(c.id, "code-1").await.unwrap(), "replay");
    assert!(kommo.record_code(c.id, "code-2").await.unwrap());
    kommo.start_authorization(c.id, "state", AuthorizeMode::Popup, TTL).await.unwrap();

    let day = Duration::from_secs(86_400);
    db.clock.advance(day);
    assert_eq!(kommo.prune(store.clock().now_millis() - 86_400_000).await.unwrap(), 0, "kept for a day");
    db.clock.advance(Duration::from_secs(1));
    assert_eq!(kommo.prune(store.clock().now_millis() - 86_400_000).await.unwrap(), 2, "the two codes");
    db.clock.advance(TTL);
    assert_eq!(kommo.prune(store.clock().now_millis() - 86_400_000).await.unwrap(), 1, "the state, a day expired");
    assert!(kommo.record_code(c.id, "code-1").await.unwrap(), "forgotten after pruning");
}

async fn a_webhook_is_sealed_replaced_and_deleted_per_tenant(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let (acme, globex) = (tenant(&store, "acme").await, tenant(&store, "globex").await);
    let c = kommo_connection(&store, &acme, "Kommo", "https://demo.kommo.com").await;
    let kommo = store.kommo(acme.id);
    assert!(kommo.webhook(c.id).await.unwrap().is_none());
    let first = Secret::new("https://crmhub.example/hooks/kommo/c/secret-1");
    kommo.save_webhook(c.id, &first, &hash_token("secret-1"), &["add_contact"]).await.unwrap();
    let second = Secret::new("https://crmhub.example/hooks/kommo/c/secret-2");
    kommo.save_webhook(c.id, &second, &hash_token("secret-2"), &["add_contact", "update_contact"]).await.unwrap();
    let stored = kommo.webhook(c.id).await.unwrap().unwrap();
    assert_eq!(stored.destination, second);
    assert_eq!(stored.secret_hash, hash_token("secret-2"));
    assert_eq!(stored.events, ["add_contact", "update_contact"]);

    // Another tenant can neither read, replace nor delete it.
    assert!(store.kommo(globex.id).webhook(c.id).await.unwrap().is_none());
    let err = store.kommo(globex.id).save_webhook(c.id, &first, "h", &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert!(!store.kommo(globex.id).delete_webhook(c.id).await.unwrap());
    assert_eq!(kommo.webhook(c.id).await.unwrap().unwrap().destination, second);

    // A delivery's path names only the connection: its owner is found across tenants.
    assert_eq!(store.kommo_webhook_owner(c.id).await.unwrap(), Some((acme.id, hash_token("secret-2"))));

    assert!(kommo.delete_webhook(c.id).await.unwrap());
    assert!(kommo.webhook(c.id).await.unwrap().is_none());
    assert!(!kommo.delete_webhook(c.id).await.unwrap());
    assert_eq!(store.kommo_webhook_owner(c.id).await.unwrap(), None);
}

async fn widget_settings_are_sealed_and_scoped_by_tenant(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let (acme, globex) = (tenant(&store, "acme").await, tenant(&store, "globex").await);
    let c = kommo_connection(&store, &acme, "Kommo", "https://demo.kommo.com").await;
    let kommo = store.kommo(acme.id);
    kommo.save_widget_settings(c.id, &Secret::new("key-1"), "list-1", Some(7)).await.unwrap();
    kommo.save_widget_settings(c.id, &Secret::new("key-2"), "list-2", Some(8)).await.unwrap();
    let stored = kommo.widget_settings(c.id).await.unwrap().unwrap();
    assert_eq!(stored.unisender_api_key.expose(), "key-2");
    assert_eq!((stored.unisender_list_id.as_str(), stored.kommo_user_id), ("list-2", Some(8)));
    assert!(store.kommo(globex.id).widget_settings(c.id).await.unwrap().is_none());
    let err = store.kommo(globex.id).save_widget_settings(c.id, &Secret::new("x"), "l", None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(kommo.widget_settings(c.id).await.unwrap().unwrap().unisender_api_key.expose(), "key-2");
}

async fn a_host_block_fails_that_hosts_connections_and_restores_only_its_own(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let (acme, globex) = (tenant(&store, "acme").await, tenant(&store, "globex").await);
    let a = kommo_connection(&store, &acme, "Kommo", "https://demo.kommo.com").await;
    let b = kommo_connection(&store, &globex, "Kommo", "https://demo.kommo.com").await;
    let elsewhere = kommo_connection(&store, &globex, "Other", "https://other.kommo.com").await;
    let reauth = kommo_connection(&store, &acme, "Reauth", "https://demo.kommo.com").await;
    store.connections(acme.id).set_status(reauth.id, ConnectionStatus::NeedsReauth, Some("declined")).await.unwrap();
    let vtiger = connection(&store, &acme, "Vtiger", "k").await;
    assert_eq!(vtiger.host.as_str(), "https://crm.example.com");

    for host in ["demo.kommo.com", "https://demo.kommo.com"] {
        let found = store.connections_on_host(&ConnectorKind::Kommo, host).await.unwrap();
        let mut ids: Vec<_> = found.iter().map(|c| c.id).collect();
        ids.sort();
        let mut expected = vec![a.id, b.id, reauth.id];
        expected.sort();
        assert_eq!(ids, expected, "{host}");
    }
    let reason = "Kommo blocked this IP (403) until 12:00";
    let failed = store.fail_connections_on_host(&ConnectorKind::Kommo, "demo.kommo.com", reason).await.unwrap();
    assert_eq!(failed.len(), 2, "needs_reauth is kept");
    for (t, c) in [(&acme, &a), (&globex, &b)] {
        let now = store.connections(t.id).get(c.id).await.unwrap();
        assert_eq!((now.status, now.last_error.as_deref()), (ConnectionStatus::Failing, Some(reason)));
    }
    assert_eq!(store.connections(globex.id).get(elsewhere.id).await.unwrap().status, ConnectionStatus::Active);
    assert_eq!(store.connections(acme.id).get(reauth.id).await.unwrap().status, ConnectionStatus::NeedsReauth);

    // b fails for another reason meanwhile: it stays failing when the block ends.
    store.connections(globex.id).record_health(b.id, Err("timeout")).await.unwrap();
    let restored = store.restore_connections_on_host(&ConnectorKind::Kommo, "demo.kommo.com", reason).await.unwrap();
    assert_eq!(restored, 1);
    assert_eq!(store.connections(acme.id).get(a.id).await.unwrap().status, ConnectionStatus::Active);
    assert_eq!(store.connections(globex.id).get(b.id).await.unwrap().status, ConnectionStatus::Failing);
    assert_eq!(store.connections(acme.id).get(reauth.id).await.unwrap().status, ConnectionStatus::NeedsReauth);
    assert_eq!(store.connections_of_kind(&ConnectorKind::Kommo).await.unwrap().len(), 4);
}

async fn kommo_secrets_survive_a_key_rotation_and_never_reach_the_database_in_clear(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let c = kommo_connection(&store, &t, "Kommo", "https://demo.kommo.com").await;
    let marker = "MARKER-kommo-5b1d-do-not-store";
    let kommo = store.kommo(t.id);
    kommo.start_authorization(c.id, marker, AuthorizeMode::Popup, TTL).await.unwrap();
    assert!(kommo.record_code(c.id, marker).await.unwrap());
    kommo
        .save_webhook(c.id, &Secret::new(format!("https://x/hooks/kommo/{marker}")), &hash_token(marker), &[])
        .await
        .unwrap();
    kommo.save_widget_settings(c.id, &Secret::new(marker), "list", None).await.unwrap();
    let sealed = kommo.seal_code(c.id, marker);
    let job = crmhub_store::jobs::NewJob::new(
        crmhub_store::settings::KOMMO_CONNECT_JOB,
        serde_json::json!({"connection_id": c.id.to_string(), "code_sealed": sealed}),
    );
    store.jobs().enqueue(t.id, job).await.unwrap();

    let new_key = crmhub_store::MasterKey::generate();
    let (store, report) = store.rotate_master_key(new_key).await.unwrap();
    // Credentials, webhook URL, widget key and the job's code.
    assert_eq!(report.values_resealed, 4);
    let kommo = store.kommo(t.id);
    assert_eq!(
        kommo.webhook(c.id).await.unwrap().unwrap().destination.expose(),
        format!("https://x/hooks/kommo/{marker}")
    );
    assert_eq!(kommo.widget_settings(c.id).await.unwrap().unwrap().unisender_api_key.expose(), marker);
    let filter = crmhub_store::jobs::JobFilter { tenant: Some(t.id), ..Default::default() };
    let payload = store.jobs().list(&filter).await.unwrap().remove(0).payload;
    assert_eq!(kommo.open_code(c.id, payload["code_sealed"].as_str().unwrap()).unwrap().expose(), marker);
    store.close().await;

    let haystack: Vec<u8> = match which {
        Which::Sqlite => db.sqlite_files().iter().filter_map(|p| std::fs::read(p).ok()).flatten().collect(),
        Which::Postgres => {
            let crmhub_store::DatabaseUrl::Postgres(url) = &db.url else { unreachable!() };
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            let mut all = String::new();
            for table in ["oauth_states", "oauth_codes", "kommo_webhooks", "kommo_widget_settings", "jobs"] {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT t::text FROM {table} t")).fetch_all(&mut conn).await.unwrap();
                all.push_str(&rows.join("\n"));
            }
            all.into_bytes()
        }
    };
    assert!(!haystack.is_empty());
    assert!(!haystack.windows(marker.len()).any(|w| w == marker.as_bytes()), "found the marker in the database");
}
