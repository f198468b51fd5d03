//! The two migration sets are one schema in two dialects: same tables, same columns.

use std::collections::{BTreeMap, BTreeSet};

use crmhub_store::DatabaseUrl;
use sqlx::Connection as _;

use crate::harness::{TestDb, Which};

type Schema = BTreeMap<String, BTreeSet<String>>;

async fn sqlite_schema(db: &TestDb) -> Schema {
    let DatabaseUrl::Sqlite(path) = &db.url else { unreachable!() };
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.ok();
    collect(rows)
}

async fn postgres_schema(db: &TestDb) -> Schema {
    let DatabaseUrl::Postgres(url) = &db.url else { unreachable!() };
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text FROM information_schema.columns c \
         JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
         WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.ok();
    collect(rows)
}

fn collect(rows: Vec<(String, String)>) -> Schema {
    let mut schema = Schema::new();
    for (table, column) in rows {
        schema.entry(table).or_default().insert(column);
    }
    schema
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set CRMHUB_TEST_DATABASE_URL and pass --ignored (scripts/test does both)"]
async fn the_migration_sets_define_the_same_tables_and_columns() {
    let (sqlite, postgres) = (TestDb::new(Which::Sqlite).await, TestDb::new(Which::Postgres).await);
    sqlite.open().await.close().await;
    postgres.open().await.close().await;
    let (lite, pg) = (sqlite_schema(&sqlite).await, postgres_schema(&postgres).await);
    assert!(lite.contains_key("connections") && lite.contains_key("jobs"), "{lite:?}");
    // Tables one backend has by design, each with its reason.
    const POSTGRES_ONLY: &[&str] = &[
        // Rate budgets shared across instances; SQLite serves one instance, whose in-process
        // buckets are the whole budget.
        "rate_budget",
    ];
    let tables: BTreeSet<&String> = lite.keys().chain(pg.keys()).collect();
    let differences: Vec<String> = tables
        .into_iter()
        .filter(|t| !POSTGRES_ONLY.contains(&t.as_str()) || lite.contains_key(*t))
        .filter(|t| lite.get(*t) != pg.get(*t))
        .map(|t| format!("{t}: sqlite {:?}, postgres {:?}", lite.get(t), pg.get(t)))
        .collect();
    assert!(differences.is_empty(), "the migration sets differ:\n{}", differences.join("\n"));
}
