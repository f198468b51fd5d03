//! End-to-end tests over real HTTP, with reqwest doing what a template connector does.

mod activity;
mod auth;
mod contacts;
mod faults;

use std::sync::Arc;
use std::time::Duration;

use crmhub_core::clock::ManualClock;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{DEFAULT_PASSWORD, DEFAULT_USERNAME, JsonCrmSimHandle, JsonCrmSimOptions, spawn};

/// 2023-11-14 22:13:20 UTC.
pub(super) const T0_MILLIS: i64 = 1_700_000_000_000;
pub(super) const T0: i64 = T0_MILLIS / 1000;

pub(super) struct Api {
    pub(super) http: reqwest::Client,
    pub(super) sim: JsonCrmSimHandle,
    pub(super) clock: ManualClock,
}

/// A response's status and JSON body (`Value::Null` if the body is not JSON).
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: reqwest::header::HeaderMap,
    pub(super) body: Value,
}

impl Reply {
    async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        Reply { status, headers, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    /// `body.data`, asserting the status.
    pub(super) fn data(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected status; body {}", self.body);
        &self.body["data"]
    }

    /// Asserts a ContactBook error: status, `code` and `field` (absent when `None`), and a
    /// human message.
    pub(super) fn assert_error(&self, status: u16, code: &str, field: Option<&str>) {
        assert_eq!(self.status, status, "unexpected status; body {}", self.body);
        let error = &self.body["error"];
        assert_eq!(error["code"], code, "body {}", self.body);
        assert_eq!(error["field"].as_str(), field, "body {}", self.body);
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "body {}", self.body);
        let ct = self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(ct.starts_with("application/json"), "content type {ct}");
    }

    /// The ids of `body.data`.
    pub(super) fn ids(&self) -> Vec<String> {
        self.body["data"]
            .as_array()
            .expect("data array")
            .iter()
            .map(|c| c["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Api {
    pub(super) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a simulator on a manual clock, with options adjusted by `tweak`.
    pub(super) async fn start_with(tweak: impl FnOnce(&mut JsonCrmSimOptions)) -> Self {
        let clock = ManualClock::new(T0_MILLIS);
        let mut options = JsonCrmSimOptions { clock: Arc::new(clock.clone()), ..JsonCrmSimOptions::default() };
        tweak(&mut options);
        let sim = spawn(options).await;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
        Api { http, sim, clock }
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.api_url())
    }

    pub(super) async fn login_as(&self, username: &str, password: &str) -> Reply {
        let body = serde_json::json!({"username": username, "password": password});
        Reply::read(self.http.post(self.url("/auth/login")).json(&body).send().await.expect("login")).await
    }

    /// Logs in as the default user and returns the access token.
    pub(super) async fn login(&self) -> String {
        let reply = self.login_as(DEFAULT_USERNAME, DEFAULT_PASSWORD).await;
        assert_eq!(reply.status, 200, "login failed: {}", reply.body);
        reply.body["access_token"].as_str().expect("access_token").to_owned()
    }

    /// A request with an optional bearer token and optional JSON body.
    pub(super) async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::read(request.send().await.expect("request")).await
    }

    pub(super) async fn get(&self, token: &str, path: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub(super) async fn post(&self, token: &str, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub(super) async fn put(&self, token: &str, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }
}
