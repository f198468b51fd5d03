//! The storage contract: every test here runs against SQLite (a fresh file) and PostgreSQL
//! (a fresh database). The PostgreSQL variants are `#[ignore]`d with their reason, so a run
//! without PostgreSQL counts them as ignored, never as passed; `scripts/test` runs them with
//! `--ignored` when `CRMHUB_TEST_DATABASE_URL` is set, and they fail if it is unset or
//! unreachable.

mod harness;

mod auth_state;
mod call_maps;
mod calls;
mod errors;
mod idempotency;
mod isolation;
mod job_connections;
mod jobs;
mod kommo;
mod records;
mod schema;
mod sync;
mod templates;
mod vault;

/// Declares `sqlite` and `postgres` test functions for each listed suite function.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::harness::Which::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs PostgreSQL: set CRMHUB_TEST_DATABASE_URL and pass --ignored (scripts/test does both)"]
            async fn postgres() {
                super::$name($crate::harness::Which::Postgres).await
            }
        }
    )*};
}
