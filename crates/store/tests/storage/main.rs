//! The storage contract: every test here runs against SQLite (a fresh file) and PostgreSQL
//! (a fresh database, when `CRMHUB_TEST_DATABASE_URL` is set).

mod harness;

mod auth_state;
mod isolation;
mod job_connections;
mod jobs;
mod records;
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
            async fn postgres() {
                if $crate::harness::postgres_url().is_none() {
                    eprintln!("skipped: CRMHUB_TEST_DATABASE_URL is not set");
                    return;
                }
                super::$name($crate::harness::Which::Postgres).await
            }
        }
    )*};
}
