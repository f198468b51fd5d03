//! Opening a database that cannot be opened says which one, and why, without the password.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crmhub_store::{DatabaseUrl, MasterKey, MasterKeySource, Store, StoreOptions};

use sqlx::Connection as _;

use crate::harness::{TestDb, Which};

async fn open_error(url: &str) -> String {
    let mut options =
        StoreOptions::new(DatabaseUrl::parse(url).unwrap(), MasterKeySource::Given(MasterKey::generate()));
    options.connect_timeout = Duration::from_secs(1);
    let err = Store::open(options).await.expect_err("the database must not open");
    err.to_string()
}

#[tokio::test]
async fn a_read_only_data_dir_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555)).unwrap();
    // root writes through mode bits; /proc refuses new files to everyone.
    let data = if std::fs::write(data.join("probe"), b"").is_ok() { std::path::PathBuf::from("/proc") } else { data };
    let file = data.join("crmhub.db");
    let err = open_error(&format!("sqlite:{}", file.display())).await;
    assert!(err.contains(&file.display().to_string()), "the error names the file: {err}");
    assert!(err.contains("writable"), "the error says what to check: {err}");
}

#[tokio::test]
async fn an_unreachable_postgres_is_named_by_host_and_port_never_the_password() {
    // Nothing listens on port 1.
    let err = open_error("postgres://crmhub:hunter2-pw@127.0.0.1:1/crm").await;
    assert!(err.contains("127.0.0.1:1"), "host and port: {err}");
    assert!(err.to_lowercase().contains("refused"), "the cause: {err}");
    assert!(!err.contains("hunter2"), "never the password: {err}");
}

/// What a PostgreSQL server without TLS does: answers the client's SSLRequest with `N`.
async fn server_without_tls() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 8];
            if socket.read_exact(&mut request).await.is_ok() && request[4..] == [0x04, 0xd2, 0x16, 0x2f] {
                let _ = socket.write_all(b"N").await;
            }
        }
    });
    addr
}

#[tokio::test]
async fn sslmode_require_against_a_server_without_tls_says_so_and_names_the_host() {
    let addr = server_without_tls().await;
    let err = open_error(&format!("postgres://crmhub:hunter2-pw@{addr}/crm?sslmode=require")).await;
    assert!(err.contains(&addr.to_string()), "host and port: {err}");
    // Built without TLS, sqlx would not even ask ("SQLx was built without TLS support").
    assert!(err.contains("server does not support TLS"), "{err}");
    assert!(!err.contains("hunter2"), "never the password: {err}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set CRMHUB_TEST_DATABASE_URL and pass --ignored (scripts/test does both)"]
async fn sslmode_require_connects_over_tls_when_the_server_offers_it() {
    let db = TestDb::new(Which::Postgres).await;
    let DatabaseUrl::Postgres(url) = &db.url else { unreachable!() };
    let mut plain = sqlx::PgConnection::connect(url).await.expect("connect to PostgreSQL");
    let ssl: String = sqlx::query_scalar("SHOW ssl").fetch_one(&mut plain).await.unwrap();
    plain.close().await.ok();
    let tls_url = format!("{url}{}sslmode=require", if url.contains('?') { '&' } else { '?' });
    let mut options = db.options(MasterKeySource::Given(db.key.clone()));
    options.url = DatabaseUrl::parse(&tls_url).unwrap();
    if ssl == "on" {
        let store = Store::open(options).await.expect("sslmode=require opens over TLS");
        store.close().await;
        let mut conn = sqlx::PgConnection::connect(&tls_url).await.unwrap();
        let over_tls: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(over_tls, "the connection is encrypted");
    } else {
        let err = Store::open(options).await.unwrap_err().to_string();
        assert!(err.contains("server does not support TLS"), "{err}");
    }
}
