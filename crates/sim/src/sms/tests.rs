//! End-to-end tests over real HTTP. Signatures are computed here from the documented recipe with
//! the md-5 crate, independently of the simulator's own code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crmhub_core::clock::ManualClock;
use md5::{Digest, Md5};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{RejectReason, SmsFault, SmsSimHandle, SmsSimOptions, spawn};

/// 2023-11-14 22:13:20 UTC.
const T0: i64 = 1_700_000_000;

struct Api {
    http: reqwest::Client,
    sms: SmsSimHandle,
    clock: ManualClock,
}

/// One send request; fields default to a correctly signed message from the default key.
struct Send {
    key: Option<String>,
    secret: String,
    timestamp: Option<String>,
    body: Value,
    /// Overrides the computed signature (`Some(None)`: send none).
    signature: Option<Option<String>>,
}

fn sign(secret: &str, to: &str, text: &str, timestamp: &str) -> String {
    let mut md5 = Md5::new();
    for part in [secret, to, text, timestamp] {
        md5.update(part.as_bytes());
    }
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Send {
    fn new(to: &str, text: &str) -> Self {
        Send {
            key: Some("sms-key".into()),
            secret: "sms-secret".into(),
            timestamp: Some(T0.to_string()),
            body: json!({"to": to, "text": text}),
            signature: None,
        }
    }

    fn signature(&self) -> Option<String> {
        if let Some(given) = &self.signature {
            return given.clone();
        }
        let field = |name: &str| match &self.body[name] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        Some(sign(&self.secret, &field("to"), &field("text"), self.timestamp.as_deref().unwrap_or("")))
    }
}

struct Reply {
    status: StatusCode,
    body: Value,
}

impl Reply {
    fn assert_refused(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body {}", self.body);
        assert_eq!(self.body["status"], "error", "body {}", self.body);
        assert_eq!(self.body["code"], code, "body {}", self.body);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

impl Api {
    async fn start() -> Self {
        let clock = ManualClock::new(T0 * 1000);
        let sms = spawn(SmsSimOptions { clock: Arc::new(clock.clone()), ..SmsSimOptions::default() }).await;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
        Api { http, sms, clock }
    }

    async fn send(&self, send: &Send) -> Reply {
        let mut request = self.http.post(self.sms.send_url()).json(&send.body);
        if let Some(key) = &send.key {
            request = request.header("X-Api-Key", key);
        }
        if let Some(ts) = &send.timestamp {
            request = request.header("X-Timestamp", ts);
        }
        if let Some(signature) = send.signature() {
            request = request.header("X-Signature", signature);
        }
        Self::read(request).await
    }

    async fn read(request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("send");
        let status = response.status();
        let ct = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert!(ct.starts_with("application/json"), "content type {ct}");
        Reply { status, body: response.json().await.expect("JSON body") }
    }
}

#[tokio::test]
async fn a_correctly_signed_message_is_queued_and_recorded() {
    let api = Api::start().await;
    let mut send = Send::new("+84912345678", "Mã xác nhận của bạn là 4821");
    send.body["sender"] = json!("CRMHUB");
    let reply = api.send(&send).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, json!({"status": "queued", "message_id": "m_1"}));

    let second = api.send(&Send::new("+14155550100", "Hi")).await;
    assert_eq!(second.body["message_id"], "m_2");

    let messages = api.sms.messages();
    assert_eq!(messages.len(), 2);
    let first = &messages[0];
    assert_eq!(
        (first.message_id.as_str(), first.api_key.as_str(), first.to.as_str()),
        ("m_1", "sms-key", "+84912345678")
    );
    assert_eq!(first.text, "Mã xác nhận của bạn là 4821");
    assert_eq!((first.sender.as_deref(), first.timestamp, first.received_at), (Some("CRMHUB"), T0, T0));
    assert_eq!(messages[1].sender, None);
    assert!(api.sms.rejections().is_empty());
}

#[tokio::test]
async fn signatures_compare_case_insensitively() {
    let api = Api::start().await;
    let mut send = Send::new("+84912345678", "hello");
    send.signature = Some(send.signature().map(|s| s.to_uppercase()));
    assert_eq!(api.send(&send).await.status, 200);
}

#[tokio::test]
async fn a_wrong_signature_is_refused_and_recorded() {
    let api = Api::start().await;
    let tampered = {
        let mut s = Send::new("+84912345678", "hello");
        let signature = s.signature();
        s.body["text"] = json!("hello, changed on the way");
        s.signature = Some(signature);
        s
    };
    let wrong_secret = Send { secret: "not-the-secret".into(), ..Send::new("+84912345678", "hello") };
    let unsigned = Send { signature: Some(None), ..Send::new("+84912345678", "hello") };
    // The timestamp is part of what is signed.
    let moved_timestamp = {
        let mut s = Send::new("+84912345678", "hello");
        s.signature = Some(s.signature());
        s.timestamp = Some((T0 + 1).to_string());
        s
    };
    // The order is secret, to, text, timestamp, with nothing in between.
    let reordered = Send {
        signature: Some(Some(sign("sms-secret", "hello", "+84912345678", &T0.to_string()))),
        ..Send::new("+84912345678", "hello")
    };
    let separated = Send {
        signature: Some(Some(sign("sms-secret", "+84912345678|", "hello|", &T0.to_string()))),
        ..Send::new("+84912345678", "hello")
    };
    for send in [tampered, wrong_secret, unsigned, moved_timestamp, reordered, separated] {
        api.send(&send).await.assert_refused(401, "bad_signature");
    }
    assert!(api.sms.messages().is_empty());
    let rejections = api.sms.rejections();
    assert_eq!(rejections.len(), 6);
    assert!(rejections.iter().all(|r| r.reason == RejectReason::BadSignature));
    assert_eq!(rejections[0].text.as_deref(), Some("hello, changed on the way"));
    assert_eq!(rejections[0].api_key.as_deref(), Some("sms-key"));
    assert_eq!(rejections[0].timestamp, Some(T0.to_string()));
}

#[tokio::test]
async fn timestamps_must_be_within_300_seconds_of_the_clock() {
    let api = Api::start().await;
    let at = |ts: i64| Send { timestamp: Some(ts.to_string()), ..Send::new("+84912345678", "hello") };
    assert_eq!(api.send(&at(T0 - 300)).await.status, 200);
    assert_eq!(api.send(&at(T0 + 300)).await.status, 200);
    api.send(&at(T0 - 301)).await.assert_refused(401, "stale_timestamp");
    api.send(&at(T0 + 301)).await.assert_refused(401, "stale_timestamp");
    // Milliseconds are not seconds.
    api.send(&at(T0 * 1000)).await.assert_refused(401, "stale_timestamp");
    let words = Send { timestamp: Some("yesterday".into()), ..Send::new("+84912345678", "hello") };
    api.send(&words).await.assert_refused(401, "stale_timestamp");
    let missing = Send { timestamp: None, ..Send::new("+84912345678", "hello") };
    api.send(&missing).await.assert_refused(401, "stale_timestamp");

    // The simulator's clock decides: a request signed at T0 goes stale as it advances.
    api.clock.advance(Duration::from_secs(301));
    api.send(&at(T0)).await.assert_refused(401, "stale_timestamp");
    assert_eq!(api.sms.rejections().iter().filter(|r| r.reason == RejectReason::StaleTimestamp).count(), 6);
}

#[tokio::test]
async fn unknown_keys_are_refused_and_added_keys_use_their_own_secret() {
    let api = Api::start().await;
    let stranger = Send { key: Some("who-dis".into()), ..Send::new("+84912345678", "hello") };
    api.send(&stranger).await.assert_refused(401, "unknown_key");
    let keyless = Send { key: None, ..Send::new("+84912345678", "hello") };
    api.send(&keyless).await.assert_refused(401, "unknown_key");
    assert_eq!(api.sms.rejections()[0].api_key.as_deref(), Some("who-dis"));

    api.sms.add_key("tenant-2", "s3cret-2");
    let tenant = Send { key: Some("tenant-2".into()), secret: "s3cret-2".into(), ..Send::new("+84912345678", "hi") };
    assert_eq!(api.send(&tenant).await.status, 200);
    assert_eq!(api.sms.messages()[0].api_key, "tenant-2");
    // Another key's secret does not sign for it.
    let crossed = Send { key: Some("tenant-2".into()), ..Send::new("+84912345678", "hi") };
    api.send(&crossed).await.assert_refused(401, "bad_signature");
}

#[tokio::test]
async fn numbers_must_be_e164() {
    let api = Api::start().await;
    for to in ["0912345678", "84912345678", "+84 912 345 678", "+84-912-345-678", "+0912345678", "+12345", ""] {
        api.send(&Send::new(to, "hello")).await.assert_refused(422, "invalid_number");
    }
    // A number that is a JSON number, correctly signed, is still not a number string.
    let mut numeric = Send::new("+84912345678", "hello");
    numeric.body["to"] = json!(84912345678u64);
    api.send(&numeric).await.assert_refused(422, "invalid_number");
    let mut missing = Send::new("+84912345678", "hello");
    missing.body.as_object_mut().map(|o| o.remove("to"));
    api.send(&missing).await.assert_refused(422, "invalid_number");
    assert_eq!(api.sms.rejection_count(), 9);
    assert!(api.sms.rejections().iter().all(|r| r.reason == RejectReason::InvalidNumber));
}

#[tokio::test]
async fn texts_must_be_1_to_1600_characters() {
    let api = Api::start().await;
    // Characters, not bytes: 1600 Vietnamese letters are 4800 bytes.
    assert_eq!(api.send(&Send::new("+84912345678", &"ắ".repeat(1600))).await.status, 200);
    for text in [String::new(), "   ".to_owned(), "ắ".repeat(1601)] {
        api.send(&Send::new("+84912345678", &text)).await.assert_refused(422, "invalid_text");
    }
    let mut sender = Send::new("+84912345678", "hello");
    sender.body["sender"] = json!(42);
    api.send(&sender).await.assert_refused(422, "invalid_sender");
}

#[tokio::test]
async fn bodies_must_be_json_objects() {
    let api = Api::start().await;
    let send = Send::new("+84912345678", "hello");
    let signed = |request: reqwest::RequestBuilder| {
        request
            .header("X-Api-Key", "sms-key")
            .header("X-Timestamp", T0.to_string())
            .header("X-Signature", send.signature().unwrap_or_default())
    };
    let form = signed(api.http.post(api.sms.send_url())).form(&[("to", "+84912345678"), ("text", "hello")]);
    Api::read(form).await.assert_refused(415, "unsupported_media_type");
    let garbage = signed(api.http.post(api.sms.send_url())).header("content-type", "application/json").body("{");
    Api::read(garbage).await.assert_refused(400, "invalid_json");
    let array = signed(api.http.post(api.sms.send_url())).json(&json!(["+84912345678", "hello"]));
    Api::read(array).await.assert_refused(400, "invalid_json");
    // The key is checked first of all.
    let anonymous = api.http.post(api.sms.send_url()).body("not json");
    Api::read(anonymous).await.assert_refused(401, "unknown_key");
    assert_eq!(api.sms.rejection_count(), 4);
}

#[tokio::test]
async fn other_routes_answer_in_the_error_shape() {
    let api = Api::start().await;
    Api::read(api.http.get(api.sms.send_url())).await.assert_refused(405, "method_not_allowed");
    Api::read(api.http.post(format!("{}/api/sms/status", api.sms.base_url()))).await.assert_refused(404, "not_found");
    assert_eq!(api.sms.request_count(), 2);
    assert_eq!(api.sms.rejection_count(), 0);
}

#[tokio::test]
async fn faults_fail_or_delay_requests_without_recording_them() {
    let api = Api::start().await;
    let send = Send::new("+84912345678", "hello");
    api.sms.set_fault(SmsFault::Http500);
    for _ in 0..2 {
        api.send(&send).await.assert_refused(500, "internal_error");
    }
    api.sms.clear_fault();
    assert_eq!(api.send(&send).await.status, 200);

    api.sms.set_fault_for(1, SmsFault::Latency(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(api.send(&send).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    api.sms.set_fault_for(1, SmsFault::Http500);
    api.send(&send).await.assert_refused(500, "internal_error");
    assert_eq!(api.send(&send).await.status, 200);

    assert_eq!(api.sms.request_count(), 6);
    assert_eq!(api.sms.message_count(), 3);
    assert_eq!(api.sms.rejection_count(), 0);
}

#[tokio::test]
async fn shutdown_stops_the_listener() {
    let api = Api::start().await;
    let url = api.sms.send_url();
    let Api { http, sms, .. } = api;
    sms.shutdown().await;
    assert!(http.post(url).send().await.is_err());
}
