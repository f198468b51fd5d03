use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;

use super::super::JsonCrmFault;
use super::Api;

#[tokio::test]
async fn http_500_applies_until_cleared_or_counted_out() {
    let api = Api::start().await;
    let token = api.login().await;
    api.sim.set_fault(JsonCrmFault::Http500);
    for _ in 0..3 {
        api.get(&token, "/contacts").await.assert_error(500, "internal_error", None);
    }
    api.sim.clear_fault();
    api.get(&token, "/contacts").await.data(200);

    api.sim.set_fault_for(2, JsonCrmFault::Http500);
    // Faults come before authentication: even a login is answered by the fault.
    api.login_as("api", "api-password").await.assert_error(500, "internal_error", None);
    api.call(Method::GET, "/contacts", None, None).await.assert_error(500, "internal_error", None);
    api.get(&token, "/contacts").await.data(200);
    // Faulted requests are requests, but never reach the login handler.
    assert_eq!(api.sim.request_count(), 8);
    assert_eq!(api.sim.login_count(), 1);
}

#[tokio::test]
async fn html_fault_answers_200_with_a_web_page() {
    let api = Api::start().await;
    let token = api.login().await;
    api.sim.set_fault_for(1, JsonCrmFault::Html);
    let response = api.http.get(api.url("/contacts")).bearer_auth(&token).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    let ct = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(ct.starts_with("text/html"), "{ct}");
    let body = response.text().await.expect("body");
    assert!(body.starts_with("<html>") && body.ends_with("</html>"), "{body}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_err());
}

#[tokio::test]
async fn rate_limiting_says_when_to_retry() {
    let api = Api::start().await;
    let token = api.login().await;
    api.sim.set_fault_for(1, JsonCrmFault::RateLimited { retry_after_secs: 7 });
    let reply = api.get(&token, "/contacts").await;
    reply.assert_error(429, "rate_limited", None);
    assert_eq!(reply.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("7"));
    api.get(&token, "/contacts").await.data(200);
}

#[tokio::test]
async fn huge_bodies_are_streamed_without_a_length() {
    const SIZE: usize = 30 * 1024 * 1024;
    let api = Api::start().await;
    let token = api.login().await;
    api.sim.set_fault_for(1, JsonCrmFault::Huge { bytes: SIZE });
    let response = api.http.get(api.url("/contacts")).bearer_auth(&token).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert!(headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json")));
    // Chunked: nothing tells a client the size up front, so only a streaming cap protects it.
    assert!(headers.get("content-length").is_none(), "{headers:?}");
    assert_eq!(headers.get("transfer-encoding").and_then(|v| v.to_str().ok()), Some("chunked"));

    let mut stream = response.bytes_stream();
    let (mut total, mut chunks, mut largest) = (0usize, 0usize, 0usize);
    let mut head = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        if head.len() < 9 {
            head.extend_from_slice(&chunk[..chunk.len().min(9)]);
        }
        total += chunk.len();
        largest = largest.max(chunk.len());
        chunks += 1;
    }
    assert_eq!(total, SIZE);
    assert!(head.starts_with(br#"{"data":["#), "{head:?}");
    // Arrived in pieces, none anywhere near the whole.
    assert!(chunks > 100 && largest <= 1024 * 1024, "{chunks} chunks, largest {largest}");
}

#[tokio::test]
async fn a_client_can_walk_away_from_a_huge_body() {
    let api = Api::start().await;
    let token = api.login().await;
    api.sim.set_fault_for(1, JsonCrmFault::Huge { bytes: 200 * 1024 * 1024 });
    let response = api.http.get(api.url("/contacts")).bearer_auth(&token).send().await.expect("GET");
    let mut stream = response.bytes_stream();
    let mut read = 0;
    while read < 1024 * 1024 {
        read += stream.next().await.expect("more").expect("chunk").len();
    }
    drop(stream);
    // The simulator is not stuck producing the rest.
    let started = Instant::now();
    api.get(&token, "/contacts").await.data(200);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn expired_token_can_arrive_in_a_200_body() {
    let api = Api::start().await;
    let token = api.login().await;
    api.sim.set_fault_for(1, JsonCrmFault::ExpiredTokenBody);
    let reply = api.get(&token, "/contacts").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["error"]["code"], "token_expired");
    assert!(reply.body.get("data").is_none());
    api.get(&token, "/contacts").await.data(200);
}

#[tokio::test]
async fn latency_delays_but_answers() {
    let api = Api::start().await;
    let token = api.login().await;
    api.sim.set_fault_for(1, JsonCrmFault::Latency(Duration::from_millis(300)));
    let started = Instant::now();
    api.get(&token, "/contacts").await.data(200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    api.get(&token, "/contacts").await.data(200);
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn shutdown_stops_the_listener() {
    let api = Api::start().await;
    let url = api.url("/contacts");
    let Api { http, sim, .. } = api;
    sim.shutdown().await;
    assert!(http.get(url).send().await.is_err());
}
