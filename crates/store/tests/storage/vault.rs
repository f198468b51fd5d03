//! The vault: keys, refusal of the wrong key, rotation, and no plaintext at rest.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use base64::Engine;
use crmhub_store::vault::{next_key_path, write_key_file};
use crmhub_store::{MasterKey, MasterKeySource, Store, StoreError, VaultError};
use sqlx::Connection as _;

use crate::harness::{TestDb, Which, connection, tenant};
use crate::on_both_backends;

on_both_backends!(
    a_wrong_master_key_is_refused_and_nothing_changes,
    key_file_is_created_private_and_required_later,
    rotation_reseals_everything_under_the_new_key,
    an_interrupted_rotation_is_finished_or_discarded,
    secrets_never_reach_the_database_in_clear,
);

async fn a_wrong_master_key_is_refused_and_nothing_changes(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let conn = connection(&store, &t, "Main", "original-secret").await;
    store.close().await;

    let wrong = MasterKey::generate();
    let err = Store::open(db.options(MasterKeySource::Given(wrong.clone()))).await.unwrap_err();
    match &err {
        StoreError::Vault(VaultError::KeyMismatch { sealed_with, given }) => {
            assert_eq!(sealed_with, db.key.id());
            assert_eq!(given, wrong.id());
        }
        other => panic!("expected a key mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("nothing was changed"), "{err}");

    let store = db.open().await;
    let creds = store.connections(t.id).credentials(conn.id).await.unwrap();
    assert_eq!(creds.get("access_key").unwrap().expose(), "original-secret");
}

async fn key_file_is_created_private_and_required_later(which: Which) {
    let db = TestDb::new(which).await;
    let path = db.key_file();
    let store = Store::open(db.options(MasterKeySource::File(path.clone()))).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key file readable by its owner only");
    let t = tenant(&store, "acme").await;
    let conn = connection(&store, &t, "Main", "s3cret").await;
    store.close().await;

    let again = Store::open(db.options(MasterKeySource::File(path.clone()))).await.unwrap();
    assert_eq!(
        again.connections(t.id).credentials(conn.id).await.unwrap().get("access_key").unwrap().expose(),
        "s3cret"
    );
    again.close().await;

    std::fs::rename(&path, path.with_extension("bak")).unwrap();
    let err = Store::open(db.options(MasterKeySource::File(path.clone()))).await.unwrap_err();
    assert!(matches!(err, StoreError::Vault(VaultError::MissingKey { .. })), "{err:?}");
    assert!(!path.exists(), "no new key was generated over a sealed database");
}

async fn rotation_reseals_everything_under_the_new_key(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let conn = connection(&store, &t, "Main", "ak").await;
    let signing = store.secrets(t.id).rotate("social_inbox.search", None, Duration::ZERO).await.unwrap();

    use crmhub_core::auth_state::AuthStateStore;
    store.save("template-state:t:c:call:pbx-1", &crmhub_core::Secret::new("{\"record_id\":\"call_1\"}")).await.unwrap();
    let new_key = MasterKey::generate();
    let (store, report) = store.rotate_master_key(new_key.clone()).await.unwrap();
    assert_eq!(report.values_resealed, 3);
    let kept = store.load("template-state:t:c:call:pbx-1").await.unwrap().expect("state survives a rotation");
    assert_eq!(kept.expose(), "{\"record_id\":\"call_1\"}");
    assert_eq!((report.old_key_id.as_str(), report.new_key_id.as_str()), (db.key.id(), new_key.id()));
    assert_eq!(store.connections(t.id).credentials(conn.id).await.unwrap().get("access_key").unwrap().expose(), "ak");
    store.close().await;

    let old = Store::open(db.options(MasterKeySource::Given(db.key.clone()))).await.unwrap_err();
    assert!(matches!(old, StoreError::Vault(VaultError::KeyMismatch { .. })));
    let reopened = Store::open(db.options(MasterKeySource::Given(new_key))).await.unwrap();
    let valid = reopened.secrets(t.id).valid("social_inbox.search").await.unwrap();
    assert_eq!(valid[0].secret, signing.secret);
}

async fn an_interrupted_rotation_is_finished_or_discarded(which: Which) {
    let db = TestDb::new(which).await;
    let path = db.key_file();
    let store = Store::open(db.options(MasterKeySource::File(path.clone()))).await.unwrap();
    let t = tenant(&store, "acme").await;
    let conn = connection(&store, &t, "Main", "ak").await;

    // Crash after writing the next key but before the database changed: the next key goes.
    let abandoned = MasterKey::generate();
    write_key_file(&next_key_path(&path), &abandoned).unwrap();
    store.close().await;
    let store = Store::open(db.options(MasterKeySource::File(path.clone()))).await.unwrap();
    assert!(!next_key_path(&path).exists());

    // Crash after the database committed but before the rename: the rename is finished.
    let next = MasterKey::generate();
    write_key_file(&next_key_path(&path), &next).unwrap();
    let (store, _) = store.rotate_master_key(next.clone()).await.unwrap();
    store.close().await;
    let store = Store::open(db.options(MasterKeySource::File(path.clone()))).await.unwrap();
    assert!(!next_key_path(&path).exists());
    let on_disk = MasterKey::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(on_disk.id(), next.id());
    assert_eq!(store.connections(t.id).credentials(conn.id).await.unwrap().get("access_key").unwrap().expose(), "ak");
}

async fn secrets_never_reach_the_database_in_clear(which: Which) {
    let db = TestDb::new(which).await;
    let store = db.open().await;
    let t = tenant(&store, "acme").await;
    let marker = "MARKER-7f3a9c1e-do-not-store";
    connection(&store, &t, "Main", marker).await;
    store
        .secrets(t.id)
        .rotate("social_inbox.search", Some(crmhub_core::Secret::new(marker)), Duration::ZERO)
        .await
        .unwrap();
    store.close().await;

    let forms = [
        marker.as_bytes().to_vec(),
        hex::encode(marker).into_bytes(),
        base64::engine::general_purpose::STANDARD.encode(marker).into_bytes(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(marker).into_bytes(),
    ];
    let haystack: Vec<u8> = match which {
        // A WAL or shared-memory file removed by the closing pool after listing holds nothing.
        Which::Sqlite => db.sqlite_files().iter().filter_map(|p| std::fs::read(p).ok()).flatten().collect(),
        Which::Postgres => {
            let crmhub_store::DatabaseUrl::Postgres(url) = &db.url else { unreachable!() };
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            let mut all = String::new();
            for table in ["installation_settings", "tenants", "connections", "tenant_secrets", "jobs", "request_log"] {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT t::text FROM {table} t")).fetch_all(&mut conn).await.unwrap();
                all.push_str(&rows.join("\n"));
            }
            all.into_bytes()
        }
    };
    assert!(!haystack.is_empty());
    for form in forms {
        assert!(
            !haystack.windows(form.len()).any(|w| w == form.as_slice()),
            "found {:?} in the database",
            String::from_utf8_lossy(&form)
        );
    }
}
