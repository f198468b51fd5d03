//! `POST /kommo/widget/settings`, authenticated by Kommo's `X-Auth-Token` (HS256 with the
//! integration's client secret). Each refused token is a 401 naming the check, and stores
//! nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crmhub_core::clock::Clock;
use crmhub_store::connections::ConnectionUpdate;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::kommo::{ACCOUNT, CLIENT_ID, CLIENT_SECRET, KommoApp, kommo_app};

const ACCOUNT_ID: i64 = 31_337_001;
const MARKER_KEY: &str = "unisender-key-MARKER-6c2e";

/// A connected app: the connection has its Kommo account id.
async fn connected() -> KommoApp {
    let k = kommo_app().await;
    let connections = k.app.store().connections(k.tenant);
    let mut fields = connections.get(k.connection).await.unwrap().fields;
    fields.insert("account_id".into(), json!(ACCOUNT_ID));
    connections.update(k.connection, ConnectionUpdate { fields: Some(fields), ..Default::default() }).await.unwrap();
    k
}

fn claims(k: &KommoApp) -> Value {
    let now = k.clock.now_millis() / 1000;
    let aud = k.app.state.settings.public_url().unwrap().origin().ascii_serialization();
    json!({
        "iss": format!("https://{ACCOUNT}"), "aud": aud, "jti": "5f0c", "iat": now, "nbf": now, "exp": now + 600,
        "account_id": ACCOUNT_ID, "user_id": 42, "subdomain": "demo", "client_uuid": CLIENT_ID,
    })
}

fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn body() -> Value {
    json!({"unisender_api_key": MARKER_KEY, "unisender_list_id": "123"})
}

async fn post(k: &KommoApp, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = k.app.client.post(k.app.url("/kommo/widget/settings")).json(body);
    if let Some(token) = token {
        request = request.header("X-Auth-Token", token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// A refused token: 401, the check named, the token not echoed, nothing stored.
async fn refused(k: &KommoApp, token: Option<&str>, check: &str) {
    let (status, answer) = post(k, token, &body()).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "unauthorized", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("{check}:")), "expected the {check} check: {message}");
    if let Some(token) = token {
        assert!(!answer.to_string().contains(token), "the token is echoed: {answer}");
    }
    assert!(k.app.store().kommo(k.tenant).widget_settings(k.connection).await.unwrap().is_none());
}

#[tokio::test]
async fn valid_settings_are_stored_with_the_key_sealed() {
    let k = connected().await;
    let (status, answer) = post(&k, Some(&sign(&claims(&k), CLIENT_SECRET)), &body()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["saved"], true);
    assert!(!answer.to_string().contains(MARKER_KEY));
    let stored = k.app.store().kommo(k.tenant).widget_settings(k.connection).await.unwrap().unwrap();
    assert_eq!(stored.unisender_api_key.expose(), MARKER_KEY);
    assert_eq!((stored.unisender_list_id.as_str(), stored.kommo_user_id), ("123", Some(42)));

    // At rest the key is sealed: the row holds no trace of it.
    let sealed: String = match &k.app.store().backend() {
        crmhub_store::Backend::Sqlite => {
            use sqlx::Connection as _;
            let path = k.app.dir.path().join("crmhub.db");
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
            sqlx::query_scalar("SELECT unisender_api_key_sealed FROM kommo_widget_settings")
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
        crmhub_store::Backend::Postgres => {
            use sqlx::Connection as _;
            let url = &k.app.database.as_ref().unwrap().url;
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_scalar("SELECT unisender_api_key_sealed FROM kommo_widget_settings")
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
    };
    assert!(sealed.starts_with("v1.") && !sealed.contains(MARKER_KEY), "{sealed}");
}

#[tokio::test]
async fn a_missing_header_is_refused() {
    let k = connected().await;
    refused(&k, None, "header").await;
}

#[tokio::test]
async fn a_wrong_signature_is_refused() {
    let k = connected().await;
    refused(&k, Some(&sign(&claims(&k), "not-the-client-secret")), "signature").await;
}

#[tokio::test]
async fn an_unsigned_token_is_refused() {
    let k = connected().await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims(&k).to_string());
    refused(&k, Some(&format!("{header}.{payload}.")), "alg").await;
    // HS512 with the right secret is still not HS256.
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims(&k),
        &EncodingKey::from_secret(CLIENT_SECRET.as_bytes()),
    )
    .unwrap();
    refused(&k, Some(&hs512), "alg").await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let k = connected().await;
    let mut claims = claims(&k);
    claims["exp"] = json!(k.clock.now_millis() / 1000 - 31);
    refused(&k, Some(&sign(&claims, CLIENT_SECRET)), "exp").await;
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let k = connected().await;
    let mut claims = claims(&k);
    claims["nbf"] = json!(k.clock.now_millis() / 1000 + 60);
    refused(&k, Some(&sign(&claims, CLIENT_SECRET)), "nbf").await;
}

#[tokio::test]
async fn a_token_for_another_account_is_refused() {
    let k = connected().await;
    let mut other = claims(&k);
    other["account_id"] = json!(ACCOUNT_ID + 1);
    refused(&k, Some(&sign(&other, CLIENT_SECRET)), "account_id").await;
    let mut other = claims(&k);
    other["iss"] = json!("https://other.kommo.com");
    refused(&k, Some(&sign(&other, CLIENT_SECRET)), "iss").await;
    let mut other = claims(&k);
    other["aud"] = json!("https://elsewhere.example");
    refused(&k, Some(&sign(&other, CLIENT_SECRET)), "aud").await;
}

#[tokio::test]
async fn an_unknown_client_is_refused() {
    let k = connected().await;
    let mut claims = claims(&k);
    claims["client_uuid"] = json!("another-integration");
    refused(&k, Some(&sign(&claims, CLIENT_SECRET)), "client_uuid").await;
}

#[tokio::test]
async fn invalid_settings_are_named() {
    let k = connected().await;
    let token = sign(&claims(&k), CLIENT_SECRET);
    for (body, field) in [
        (json!({"unisender_api_key": "", "unisender_list_id": "1"}), "unisender_api_key"),
        (json!({"unisender_api_key": "k", "unisender_list_id": "list one"}), "unisender_list_id"),
        (json!({"unisender_api_key": "k"}), "unisender_list_id"),
    ] {
        let (status, answer) = post(&k, Some(&token), &body).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    assert!(k.app.store().kommo(k.tenant).widget_settings(k.connection).await.unwrap().is_none());
}
