use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::{Api, Reply};

#[tokio::test]
async fn login_issues_a_fresh_bearer_token_each_time() {
    let api = Api::start().await;
    let reply = api.login_as("api", "api-password").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["token_type"], "Bearer");
    assert_eq!(reply.body["expires_in"], 3600);
    let first = reply.body["access_token"].as_str().expect("token").to_owned();
    assert!(first.len() >= 32, "{first}");

    let second = api.login().await;
    assert_ne!(first, second);
    // The older token keeps working alongside the new one.
    for token in [&first, &second] {
        api.get(token, "/contacts").await.data(200);
    }
    assert_eq!(api.sim.login_count(), 2);
    assert_eq!(api.sim.live_token_count(), 2);
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_refused() {
    let api = Api::start().await;
    api.login_as("api", "nope").await.assert_error(401, "invalid_credentials", None);
    api.login_as("API", "api-password").await.assert_error(401, "invalid_credentials", None);
    api.login_as("ghost", "api-password").await.assert_error(401, "invalid_credentials", None);
    let missing = api.call(Method::POST, "/auth/login", None, Some(json!({"username": "api"}))).await;
    missing.assert_error(422, "validation_failed", Some("password"));
    // A form-encoded login is not JSON.
    let form = api.http.post(api.url("/auth/login")).form(&[("username", "api"), ("password", "api-password")]);
    Reply::read(form.send().await.expect("form login")).await.assert_error(415, "unsupported_media_type", None);
    // Every attempt counts, whatever became of it.
    assert_eq!(api.sim.login_count(), 5);
}

#[tokio::test]
async fn added_users_can_log_in_and_own_what_they_create() {
    let api = Api::start().await;
    api.sim.add_user("linh", "s3cret");
    let token = api.login_as("linh", "s3cret").await.body["access_token"].as_str().expect("token").to_owned();
    let created = api.post(&token, "/contacts", json!({"last_name": "Trần"})).await;
    assert_eq!(created.data(201)["owner"], "linh");
    // Changing the password keeps issued tokens valid but refuses the old password.
    api.sim.add_user("linh", "n3w");
    api.login_as("linh", "s3cret").await.assert_error(401, "invalid_credentials", None);
    api.get(&token, "/contacts").await.data(200);
}

#[tokio::test]
async fn routes_need_a_bearer_token() {
    let api = Api::start().await;
    let token = api.login().await;
    let none = api.call(Method::GET, "/contacts", None, None).await;
    none.assert_error(401, "missing_token", None);
    let challenge = none.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(challenge.starts_with("Bearer"), "{challenge}");

    let basic = api.http.get(api.url("/contacts")).basic_auth("api", Some("api-password")).send().await.expect("GET");
    Reply::read(basic).await.assert_error(401, "missing_token", None);
    let raw = api.http.get(api.url("/contacts")).header("authorization", token.as_str()).send().await.expect("GET");
    Reply::read(raw).await.assert_error(401, "missing_token", None);

    let unknown = api.get("0123456789abcdef0123456789abcdef", "/contacts").await;
    unknown.assert_error(401, "invalid_token", None);
    let challenge = unknown.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}");

    // Authentication comes before the body is even looked at.
    let bad_body = api.http.post(api.url("/contacts")).body("not json").send().await.expect("POST");
    Reply::read(bad_body).await.assert_error(401, "missing_token", None);
    // The scheme name is case-insensitive.
    let lower = api.http.get(api.url("/contacts")).header("authorization", format!("bearer {token}"));
    assert_eq!(Reply::read(lower.send().await.expect("GET")).await.status, 200);
}

#[tokio::test]
async fn tokens_expire_after_their_ttl_on_the_injected_clock() {
    let api = Api::start().await;
    let token = api.login().await;
    api.clock.advance(Duration::from_millis(3_599_999));
    api.get(&token, "/contacts").await.data(200);
    api.clock.advance(Duration::from_millis(1));
    api.get(&token, "/contacts").await.assert_error(401, "token_expired", None);
    assert_eq!(api.sim.live_token_count(), 0);
    // A new login gives a working token again.
    let fresh = api.login().await;
    api.get(&fresh, "/contacts").await.data(200);
}

#[tokio::test]
async fn the_ttl_is_configurable() {
    let api = Api::start_with(|o| o.token_ttl = Duration::from_secs(60)).await;
    let reply = api.login_as("api", "api-password").await;
    assert_eq!(reply.body["expires_in"], 60);
    let token = reply.body["access_token"].as_str().expect("token").to_owned();
    api.clock.advance(Duration::from_secs(60));
    api.get(&token, "/contacts").await.assert_error(401, "token_expired", None);
}

#[tokio::test]
async fn expire_tokens_expires_every_issued_token_now() {
    let api = Api::start().await;
    let (a, b) = (api.login().await, api.login().await);
    api.sim.expire_tokens();
    for token in [&a, &b] {
        api.get(token, "/contacts").await.assert_error(401, "token_expired", None);
    }
    let fresh = api.login().await;
    api.get(&fresh, "/contacts").await.data(200);
}

#[tokio::test]
async fn every_request_is_counted() {
    let api = Api::start().await;
    let token = api.login().await;
    api.get(&token, "/contacts").await;
    api.call(Method::GET, "/contacts", None, None).await;
    api.get(&token, "/no/such/route").await;
    assert_eq!(api.sim.request_count(), 4);
    assert_eq!(api.sim.login_count(), 1);
}
