//! Simulators of the external systems crmhub integrates with. Each one is built from the
//! contract in `shared/contracts/` (not from crmhub's own client code), listens on a real
//! socket, and exposes a handle for tests to inspect and perturb it.
#![forbid(unsafe_code)]

pub mod json_crm;
pub mod kommo;
pub mod sms;
pub mod unisender;
pub mod vtiger;

mod support;
