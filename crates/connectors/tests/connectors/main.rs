//! Connectors against their simulators, over real HTTP on 127.0.0.1.

mod kommo;
mod odd_answers;
mod request_log;
mod template;
mod unisender;
mod vtiger;
