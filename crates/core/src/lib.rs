//! Domain types shared by every crmhub crate. Nothing here does I/O: values are parsed and
//! validated at the edge (`parse` / `TryFrom`) and carried as types from then on.
#![forbid(unsafe_code)]

pub mod auth_state;
pub mod call;
pub mod call_map;
pub mod channel_key;
pub mod clock;
pub mod connection;
pub mod crm;
pub mod ids;
pub mod phone;
pub mod rate_budget;
pub mod request_log;
pub mod secret;
pub mod signing;
pub mod tenant;
pub mod time;
pub mod validation;

pub use clock::{Clock, SystemClock, UnixMillis};
pub use connection::{ConnectionName, ConnectionStatus, ConnectorKind, Host};
pub use ids::{ConnectionId, JobId, TenantId};
pub use secret::{Credentials, Secret};
pub use tenant::{PhoneRegion, TenantName, TenantSlug};
pub use validation::FieldError;
