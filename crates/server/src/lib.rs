//! The crmhub application.
#![forbid(unsafe_code)]
