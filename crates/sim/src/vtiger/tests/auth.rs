use std::time::Duration;

use super::super::{DEFAULT_ADMIN_ACCESS_KEY, Install};
use super::{Api, assert_500_empty, err, md5_hex, ok, pair};

#[tokio::test]
async fn challenge_and_login_follow_the_contract() {
    let api = Api::start().await;
    let v = api.get(&[("operation", "getchallenge"), ("username", "admin")]).await;
    let r = ok(&v);
    let token = r["token"].as_str().expect("token");
    assert_eq!(token.len(), 13);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(r["serverTime"], 1_700_000_000);
    assert_eq!(r["expireTime"], 1_700_000_300);

    let key = md5_hex(&format!("{token}{DEFAULT_ADMIN_ACCESS_KEY}"));
    let v = api.post(&[("operation", "login"), ("username", "admin"), ("accessKey", &key)]).await;
    let r = ok(&v);
    let session = r["sessionName"].as_str().expect("session");
    assert_eq!(session.len(), 21);
    assert!(session.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(r["userId"], "19x1");
    assert_eq!(r["version"], "0.22");
    assert_eq!(r["vtigerVersion"], "8.2.0");
    assert_eq!(r["is_admin"], "on");
    for field in [
        "username",
        "first_name",
        "last_name",
        "email",
        "time_zone",
        "hour_format",
        "date_format",
        "is_admin",
        "call_duration",
        "other_event_duration",
    ] {
        assert!(r[field].is_string(), "profile field {field}");
    }
    assert_eq!(api.sim.challenge_count("admin"), 1);
    assert_eq!(api.sim.login_count("admin"), 1);
    assert_eq!(api.sim.operation_count("login"), 1);

    // The token is not consumed: it logs in again, into a new session.
    let v = api.post(&[("operation", "login"), ("username", "admin"), ("accessKey", &key)]).await;
    let second = ok(&v)["sessionName"].as_str().expect("session").to_owned();
    assert_ne!(second, session);
    assert_eq!(api.sim.session_count(), 2);
    assert_eq!(api.sim.login_count("ADMIN"), 2);
}

#[tokio::test]
async fn a_new_challenge_supersedes_the_previous_token() {
    let api = Api::start().await;
    let old = api.challenge("admin").await;
    let new = api.challenge("admin").await;
    assert_ne!(old, new);
    let login = |token: String| {
        let key = md5_hex(&format!("{token}{DEFAULT_ADMIN_ACCESS_KEY}"));
        let api = &api;
        async move { api.post(&[("operation", "login"), ("username", "admin"), ("accessKey", &key)]).await }
    };
    assert_eq!(err(&login(old).await), pair("INVALID_USER_CREDENTIALS", "Invalid username or password"));
    ok(&login(new).await);
}

#[tokio::test]
async fn the_access_key_must_be_the_lowercase_md5_of_token_and_key() {
    let api = Api::start().await;
    let token = api.challenge("admin").await;
    let right = md5_hex(&format!("{token}{DEFAULT_ADMIN_ACCESS_KEY}"));
    let wrong_key = md5_hex(&format!("{token}not-the-key"));
    let reversed = md5_hex(&format!("{DEFAULT_ADMIN_ACCESS_KEY}{token}"));
    for bad in [wrong_key.as_str(), reversed.as_str(), &right.to_uppercase(), DEFAULT_ADMIN_ACCESS_KEY] {
        let v = api.post(&[("operation", "login"), ("username", "admin"), ("accessKey", bad)]).await;
        assert_eq!(err(&v), pair("INVALID_USER_CREDENTIALS", "Invalid username or password"));
    }
    let v = api.post(&[("operation", "login"), ("username", "admin")]).await;
    assert_eq!(err(&v).0, "INVALID_USER_CREDENTIALS");
    let v = api.post(&[("operation", "login"), ("username", "admin"), ("accessKey", &right)]).await;
    ok(&v);
}

#[tokio::test]
async fn login_sent_as_get_or_with_params_in_the_query_string_is_refused() {
    let api = Api::start().await;
    let token = api.challenge("admin").await;
    let key = md5_hex(&format!("{token}{DEFAULT_ADMIN_ACCESS_KEY}"));
    let params = [("operation", "login"), ("username", "admin"), ("accessKey", key.as_str())];
    let expected = pair("INVALID_AUTH_TOKEN", "Specified token is invalid or expired");
    assert_eq!(err(&api.get(&params).await), expected);

    // POST with the parameters in the query string: $_POST has no username.
    let response = api.http.post(api.url()).query(&params).form(&[("operation", "login")]).send().await.expect("POST");
    assert_eq!(err(&super::envelope(response).await), expected);
    assert_eq!(api.sim.session_count(), 0);
}

#[tokio::test]
async fn tokens_expire_after_300_seconds_and_unknown_users_have_none() {
    let api = Api::start().await;
    let token = api.challenge("admin").await;
    let key = md5_hex(&format!("{token}{DEFAULT_ADMIN_ACCESS_KEY}"));
    let login = [("operation", "login"), ("username", "admin"), ("accessKey", key.as_str())];
    api.clock.advance(Duration::from_secs(300));
    ok(&api.post(&login).await);
    api.clock.advance(Duration::from_secs(1));
    assert_eq!(err(&api.post(&login).await), pair("INVALID_AUTH_TOKEN", "Specified token is invalid or expired"));
    let v = api.post(&[("operation", "login"), ("username", "nobody"), ("accessKey", &key)]).await;
    assert_eq!(err(&v).0, "INVALID_AUTH_TOKEN");
}

#[tokio::test]
async fn getchallenge_errors() {
    let api = Api::start().await;
    assert_eq!(err(&api.get(&[("operation", "getchallenge")]).await), pair("ACCESS_DENIED", "No username given"));
    assert_eq!(
        err(&api.get(&[("operation", "getchallenge"), ("username", "ghost")]).await),
        pair("ACCESS_DENIED", "username does not exists")
    );
    // POST with a query string works: getchallenge is GET-type, the verb is not checked.
    let response = api
        .http
        .post(api.url())
        .query(&[("operation", "getchallenge"), ("username", "admin")])
        .send()
        .await
        .expect("POST");
    ok(&super::envelope(response).await);
}

#[tokio::test]
async fn added_users_log_in_with_their_own_key() {
    let api = Api::start().await;
    assert_eq!(api.sim.add_user("agent", "agentKey12345678"), "19x5");
    let v = api.login_as("agent", "agentKey12345678").await;
    assert_eq!(ok(&v)["userId"], "19x5");
    assert_eq!(ok(&v)["is_admin"], "off");
    let v = api.login_as("agent", DEFAULT_ADMIN_ACCESS_KEY).await;
    assert_eq!(err(&v).0, "INVALID_USER_CREDENTIALS");
    assert_eq!(api.sim.login_count("agent"), 2);
    assert_eq!(api.sim.challenge_count("agent"), 2);
}

#[tokio::test]
async fn sessions_are_required_and_can_be_invalidated() {
    let api = Api::start().await;
    let s1 = api.login().await;
    let s2 = api.login().await;
    let listtypes = |s: &str| {
        let s = s.to_owned();
        let api = &api;
        async move { api.get(&[("operation", "listtypes"), ("sessionName", &s)]).await }
    };
    ok(&listtypes(&s1).await);
    assert_eq!(
        err(&api.get(&[("operation", "listtypes")]).await),
        pair("AUTHENTICATION_REQUIRED", "Authencation required")
    );
    assert_eq!(err(&listtypes("0").await), pair("AUTHENTICATION_REQUIRED", "Authencation required"));
    assert_eq!(
        err(&listtypes("deadbeefdeadbeefdeadb").await),
        pair("INVALID_SESSIONID", "Session Identifier provided is Invalid")
    );

    // Sessions do not expire on their own…
    api.clock.advance(Duration::from_secs(86_400 * 3));
    ok(&listtypes(&s1).await);
    // …but the host can drop one or all of them.
    assert!(api.sim.invalidate_session(&s1));
    assert_eq!(err(&listtypes(&s1).await).0, "INVALID_SESSIONID");
    ok(&listtypes(&s2).await);
    api.sim.invalidate_sessions();
    assert_eq!(err(&listtypes(&s2).await).0, "INVALID_SESSIONID");
}

#[tokio::test]
async fn stock_logout_dies_and_keeps_the_session() {
    let api = Api::start().await;
    let s = api.login().await;
    assert_500_empty(api.raw_post(&[("operation", "logout"), ("sessionName", &s)]).await).await;
    ok(&api.get(&[("operation", "listtypes"), ("sessionName", &s)]).await);
    // The session check still runs first.
    assert_eq!(err(&api.post(&[("operation", "logout")]).await).0, "AUTHENTICATION_REQUIRED");
}

#[tokio::test]
async fn patched_logout_ends_the_session() {
    let api = Api::start_with(|o| o.logout = Install::Patched).await;
    let s = api.login().await;
    let v = api.post(&[("operation", "logout"), ("sessionName", &s)]).await;
    assert_eq!(ok(&v)["message"], "successfull");
    assert_eq!(
        err(&api.get(&[("operation", "listtypes"), ("sessionName", &s)]).await),
        pair("INVALID_SESSIONID", "Session Identifier provided is Invalid")
    );
}
