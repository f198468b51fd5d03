//! The crmhub application: configuration, the HTTP API (channels, admin, operations) and the
//! background workers. `main.rs` only parses arguments and calls into here.
#![forbid(unsafe_code)]

pub mod admin;
pub mod channels;
pub mod config;
pub mod connection_input;
pub mod crm_access;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod jobs;
pub mod kommo;
pub mod maintenance;
pub mod metrics;
pub mod middleware;
pub mod ops;
pub mod request_log_writer;
pub mod startup;
pub mod state;
pub mod sync;
pub mod telemetry;
pub mod templates;

pub use config::Settings;
pub use startup::{Application, ApplicationBuilder};
pub use state::AppState;
