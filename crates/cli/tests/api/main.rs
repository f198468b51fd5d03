//! crmhub's integration tests: the application over real HTTP on 127.0.0.1:0 with a fresh
//! SQLite database per test, and the `crmhub` binary itself where a process boundary matters
//! (configuration errors, logs, the master key).

mod helpers;

mod admin_connections;
mod admin_errors;
mod admin_tenants;
mod binary;
mod connection_test;
mod echoed_secrets;
mod job_context;
mod jobs;
mod operations;
mod rate_budget;
mod secrets;
mod social_inbox;
mod templates;
