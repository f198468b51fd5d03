//! End-to-end tests over real HTTP, with the client doing what a Vtiger client does.

mod auth;
mod faults;
mod records;
mod replay;
mod sync;
mod transport;
mod vtql;

use std::sync::Arc;

use crmhub_core::clock::ManualClock;
use md5::{Digest, Md5};
use serde_json::Value;

use super::{VtigerSimHandle, VtigerSimOptions, spawn};

/// 2023-11-14 22:13:20 UTC.
pub(super) const T0_MILLIS: i64 = 1_700_000_000_000;

pub(super) struct Api {
    pub(super) http: reqwest::Client,
    pub(super) sim: VtigerSimHandle,
    pub(super) clock: ManualClock,
}

pub(super) fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

impl Api {
    pub(super) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a simulator on a manual clock, with options adjusted by `tweak`.
    pub(super) async fn start_with(tweak: impl FnOnce(&mut VtigerSimOptions)) -> Self {
        let clock = ManualClock::new(T0_MILLIS);
        let mut options = VtigerSimOptions { clock: Arc::new(clock.clone()), ..VtigerSimOptions::default() };
        tweak(&mut options);
        let sim = spawn(options).await;
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().expect("client");
        Api { http, sim, clock }
    }

    pub(super) fn url(&self) -> String {
        self.sim.webservice_url()
    }

    pub(super) async fn raw_get(&self, params: &[(&str, &str)]) -> reqwest::Response {
        self.http.get(self.url()).query(params).send().await.expect("GET")
    }

    pub(super) async fn raw_post(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.http.post(self.url()).form(form).send().await.expect("POST")
    }

    /// A GET expected to produce an envelope (HTTP 200, JSON).
    pub(super) async fn get(&self, params: &[(&str, &str)]) -> Value {
        envelope(self.raw_get(params).await).await
    }

    /// A POST (form body) expected to produce an envelope.
    pub(super) async fn post(&self, form: &[(&str, &str)]) -> Value {
        envelope(self.raw_post(form).await).await
    }

    pub(super) async fn challenge(&self, username: &str) -> String {
        let v = self.get(&[("operation", "getchallenge"), ("username", username)]).await;
        ok(&v)["token"].as_str().expect("token").to_owned()
    }

    pub(super) async fn login_as(&self, username: &str, access_key: &str) -> Value {
        let token = self.challenge(username).await;
        let key = md5_hex(&format!("{token}{access_key}"));
        self.post(&[("operation", "login"), ("username", username), ("accessKey", &key)]).await
    }

    /// Logs in as admin and returns the session name.
    pub(super) async fn login(&self) -> String {
        let v = self.login_as("admin", super::DEFAULT_ADMIN_ACCESS_KEY).await;
        ok(&v)["sessionName"].as_str().expect("sessionName").to_owned()
    }

    pub(super) async fn query(&self, session: &str, vtql: &str) -> Value {
        self.get(&[("operation", "query"), ("sessionName", session), ("query", vtql)]).await
    }

    /// Rows of a successful query.
    pub(super) async fn rows(&self, session: &str, vtql: &str) -> Vec<Value> {
        let v = self.query(session, vtql).await;
        ok(&v).as_array().expect("rows").clone()
    }

    pub(super) async fn create(&self, session: &str, module: &str, element: Value) -> Value {
        self.post(&[
            ("operation", "create"),
            ("sessionName", session),
            ("elementType", module),
            ("element", &element.to_string()),
        ])
        .await
    }
}

async fn envelope(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200, "expected an envelope");
    let ct = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(ct.starts_with("application/json"), "content type {ct}");
    response.json().await.expect("JSON envelope")
}

/// The result of a successful envelope.
pub(super) fn ok(v: &Value) -> &Value {
    assert_eq!(v["success"], Value::Bool(true), "expected success: {v}");
    &v["result"]
}

/// `(code, message)` of a failed envelope.
pub(super) fn err(v: &Value) -> (String, String) {
    assert_eq!(v["success"], Value::Bool(false), "expected an error: {v}");
    (
        v["error"]["code"].as_str().unwrap_or_default().to_owned(),
        v["error"]["message"].as_str().unwrap_or_default().to_owned(),
    )
}

pub(super) fn pair(code: &str, message: &str) -> (String, String) {
    (code.to_owned(), message.to_owned())
}

/// Asserts the PHP-fatal shape: HTTP 500, text/html, empty body.
pub(super) async fn assert_500_empty(response: reqwest::Response) {
    assert_eq!(response.status(), 500);
    let ct = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(ct.starts_with("text/html"), "content type {ct}");
    assert_eq!(response.text().await.expect("body"), "");
}

pub(super) fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter().map(|r| r["id"].as_str().unwrap_or_default().to_owned()).collect()
}

/// A minimal valid Contact.
pub(super) fn contact(first: &str, last: &str) -> Value {
    serde_json::json!({"firstname": first, "lastname": last, "assigned_user_id": "19x1"})
}
