//! crmhub's storage: one API over SQLite (the embedded default) and PostgreSQL (several
//! instances, one installation). Every method that touches tenant data is reached through a
//! tenant-scoped handle (`store.connections(tenant)`), so there is no way to write an
//! unscoped query against tenant rows outside this crate's admin-level functions.
#![forbid(unsafe_code)]

pub mod auth_state;
mod call_maps;
pub mod calls;
pub mod channel_keys;
pub mod channels;
pub mod connections;
mod db;
mod error;
pub mod idempotency;
pub mod jobs;
pub mod kommo;
pub mod rate_budget;
pub mod request_log;
mod rows;
pub mod secrets;
pub mod settings;
pub mod sync;
pub mod templates;
pub mod tenants;
pub mod vault;

pub use db::{Backend, DatabaseUrl, Store, StoreOptions, Tx, postgres_url_with_database};
pub use error::StoreError;
pub use vault::{MasterKey, MasterKeySource, Vault, VaultError};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
