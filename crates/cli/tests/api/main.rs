//! crmhub's integration tests: the application over real HTTP on 127.0.0.1:0 with a fresh
//! database per test, and the `crmhub` binary itself where a process boundary matters
//! (configuration errors, logs, the master key).
//!
//! The database is SQLite, or PostgreSQL with `CRMHUB_TEST_APP_BACKEND=postgres` and
//! `CRMHUB_TEST_DATABASE_URL` (scripts/test runs the suite both ways). The binary's tests and
//! those about SQLite's files stay on SQLite either way. Tests that need PostgreSQL whatever the
//! backend (several instances on one database) are `#[ignore]`d with that reason and run with
//! `--include-ignored`.

mod helpers;

mod admin_connections;
mod admin_errors;
mod admin_tenants;
mod binary;
mod calls;
mod calls_demo;
mod calls_reliability;
mod calls_requests;
mod channel_keys;
mod connection_test;
mod echoed_secrets;
mod http_stack;
mod instances;
mod job_context;
mod jobs;
mod kommo;
mod kommo_demo;
mod kommo_sim;
mod kommo_widget;
mod operations;
mod rate_budget;
mod secrets;
mod social_inbox;
mod social_inbox_load;
mod sync;
mod sync_demo;
mod sync_reliability;
mod templates;
mod unisender;
