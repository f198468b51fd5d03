//! crmhub against a real Vtiger CRM 8.2.0 (`../shared/peers/vtiger/up`), not a model of it:
//! both connectors (native `vtiger` and `template:vtiger`) through the conformance kit, call
//! logs that keep an agent's edits, the social inbox end to end, paging, quoting, phone formats, the change feed, session expiry
//! and the login race. `scripts/test` starts the installations and names them in
//! `CRMHUB_TEST_VTIGER_PEERS`. Every test seeds its own records through the webservice.

mod calls;
mod connectors;
mod feed;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod kit;
mod peer;
mod search;
mod sessions;
mod social_inbox;
