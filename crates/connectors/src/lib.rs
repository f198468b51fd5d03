//! Everything crmhub sends out: one HTTP client policy shared by all connectors, and a module
//! per CRM or destination.
#![forbid(unsafe_code)]

pub mod http;
