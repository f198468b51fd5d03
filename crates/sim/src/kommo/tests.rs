//! End-to-end tests over real HTTP, with reqwest doing what the Kommo connector will do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmhub_core::clock::ManualClock;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;

/// 2023-11-14 22:13:20 UTC.
const T0_MILLIS: i64 = 1_700_000_000_000;

struct T {
    sim: KommoSim,
    clock: ManualClock,
    http: reqwest::Client,
}

struct Reply {
    status: StatusCode,
    content_type: String,
    text: String,
    body: Value,
}

impl Reply {
    async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, content_type, text, body }
    }

    fn assert_problem(&self, status: u16, title: &str) {
        assert_eq!(self.status, status, "body {}", self.text);
        assert_eq!(self.content_type, "application/problem+json");
        assert_eq!(self.body["title"], title, "body {}", self.text);
        assert_eq!(self.body["status"], status);
        assert_eq!(self.body["type"], format!("https://httpstatus.es/{status}"));
        assert!(self.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

fn query_of(location: &str) -> HashMap<String, String> {
    let url = url::Url::parse(location).expect("absolute location");
    url.query_pairs().into_owned().collect()
}

impl T {
    async fn start() -> T {
        T::start_with(|_| {}).await
    }

    /// A simulator on a manual clock, rate limit off unless `tweak` turns it on.
    async fn start_with(tweak: impl FnOnce(&mut KommoSimOptions)) -> T {
        let clock = ManualClock::new(T0_MILLIS);
        let mut options = KommoSimOptions { clock: Arc::new(clock.clone()), rate_limit: None, ..Default::default() };
        tweak(&mut options);
        let sim = spawn(options).await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        T { sim, clock, http }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    async fn authorize(&self, state: Option<&str>) -> reqwest::Response {
        let client_id = self.sim.integration().client_id;
        let mut query = vec![("client_id", client_id.as_str()), ("mode", "post_message")];
        query.extend(state.map(|s| ("state", s)));
        self.http.get(self.url("/oauth")).query(&query).send().await.expect("authorize")
    }

    async fn code(&self) -> String {
        let response = self.authorize(Some("csrf-1")).await;
        assert_eq!(response.status(), 302);
        let location = response.headers()["location"].to_str().expect("location").to_owned();
        query_of(&location)["code"].clone()
    }

    async fn token_request(&self, grant: &str, key: &str, value: &str) -> Reply {
        let i = self.sim.integration();
        let body = json!({"client_id": i.client_id, "client_secret": i.client_secret, "grant_type": grant,
                          key: value, "redirect_uri": i.redirect_uri});
        Reply::read(self.http.post(self.url("/oauth2/access_token")).json(&body).send().await.expect("token")).await
    }

    /// (access, refresh) after a full authorize + exchange.
    async fn login(&self) -> (String, String) {
        let code = self.code().await;
        let reply = self.token_request("authorization_code", "code", &code).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        pair(&reply)
    }

    async fn refresh(&self, refresh: &str) -> Reply {
        self.token_request("refresh_token", "refresh_token", refresh).await
    }

    async fn get(&self, token: &str, path: &str) -> Reply {
        Reply::read(self.http.get(self.url(path)).bearer_auth(token).send().await.expect("get")).await
    }

    async fn send(&self, method: reqwest::Method, token: &str, path: &str, body: Value) -> Reply {
        let request = self.http.request(method, self.url(path)).bearer_auth(token).json(&body);
        Reply::read(request.send().await.expect("send")).await
    }
}

fn pair(reply: &Reply) -> (String, String) {
    let access = reply.body["access_token"].as_str().expect("access_token").to_owned();
    let refresh = reply.body["refresh_token"].as_str().expect("refresh_token").to_owned();
    (access, refresh)
}

// --- OAuth ---------------------------------------------------------------------------------

#[tokio::test]
async fn authorize_redirects_with_code_state_referer_and_client_id_and_the_code_exchanges_once() {
    let t = T::start().await;
    let client_id = t.sim.integration().client_id;
    let response = t.authorize(Some("csrf-1")).await;
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().expect("location").to_owned();
    assert!(location.starts_with("https://crmhub.example/oauth/kommo/callback?"), "{location}");
    let q = query_of(&location);
    assert_eq!(q["state"], "csrf-1");
    assert_eq!(q["referer"], "demo.kommo.com");
    assert_eq!(q["client_id"], client_id);

    let reply = t.token_request("authorization_code", "code", &q["code"]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["token_type"], "Bearer");
    assert_eq!(reply.body["expires_in"], 86_400);
    assert_eq!(reply.body["server_time"], T0_MILLIS / 1000);
    let (access, refresh) = pair(&reply);
    assert_eq!(access.split('.').count(), 3, "JWT-shaped");
    assert_ne!(access, refresh);
    assert_eq!(t.sim.token_calls("authorization_code"), 1);

    let account = t.get(&access, "/api/v4/account").await;
    assert_eq!(account.status, 200);
    assert_eq!(account.content_type, "application/hal+json");
    assert_eq!(account.body["subdomain"], "demo");
    assert_eq!(account.body["id"], t.sim.account_id());

    // Single use, even after success.
    let again = t.token_request("authorization_code", "code", &q["code"]).await;
    again.assert_problem(400, "Bad Request");
    assert_eq!(again.body["hint"], "Authorization code has been revoked");
    let unknown = t.token_request("authorization_code", "code", "def50200nope").await;
    unknown.assert_problem(400, "Bad Request");
}

#[tokio::test]
async fn authorize_without_state_denied_consent_and_unknown_client() {
    let t = T::start().await;
    let location = t.authorize(None).await.headers()["location"].to_str().expect("loc").to_owned();
    let q = query_of(&location);
    assert!(q.contains_key("code") && !q.contains_key("state"), "{location}");

    t.sim.set_consent(Consent::Deny);
    let location = t.authorize(Some("s2")).await.headers()["location"].to_str().expect("loc").to_owned();
    let q = query_of(&location);
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "s2");
    assert!(!q.contains_key("code"));

    let response = t.http.get(t.url("/oauth?client_id=someone-else&state=x")).send().await.expect("oauth");
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn codes_expire_after_20_minutes_and_credentials_are_checked() {
    let t = T::start().await;
    let code = t.code().await;
    t.clock.advance(Duration::from_secs(20 * 60));
    let reply = t.token_request("authorization_code", "code", &code).await;
    reply.assert_problem(400, "Bad Request");
    assert_eq!(reply.body["hint"], "Authorization code has expired");

    let code = t.widget_code_in_time().await;
    let i = t.sim.integration();
    let body = json!({"client_id": i.client_id, "client_secret": "wrong", "grant_type": "authorization_code",
                      "code": code, "redirect_uri": i.redirect_uri});
    let reply = Reply::read(t.http.post(t.url("/oauth2/access_token")).json(&body).send().await.expect("t")).await;
    reply.assert_problem(401, "Unauthorized");
    // A form body works as well, but only with the registered redirect URI.
    let form = [
        ("client_id", i.client_id.as_str()),
        ("client_secret", &i.client_secret),
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", "https://elsewhere.example/cb"),
    ];
    let reply = Reply::read(t.http.post(t.url("/oauth2/access_token")).form(&form).send().await.expect("t")).await;
    reply.assert_problem(400, "Bad Request");
    t.sim.set_redirect_uri("https://elsewhere.example/cb");
    let reply = Reply::read(t.http.post(t.url("/oauth2/access_token")).form(&form).send().await.expect("t")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

impl T {
    async fn widget_code_in_time(&self) -> String {
        let callback = self.sim.widget_install_callback();
        let q = query_of(&callback);
        assert_eq!(q["from_widget"], "1");
        assert_eq!(q["referer"], "demo.kommo.com");
        assert!(!q.contains_key("state"));
        q["code"].clone()
    }
}

#[tokio::test]
async fn refresh_rotates_and_the_old_refresh_token_works_until_the_new_pair_is_used() {
    let t = T::start().await;
    let (a1, r1) = t.login().await;
    let reply = t.refresh(&r1).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let (a2, r2) = pair(&reply);
    assert_ne!(r1, r2);
    // The replaced access token is obsolete at once.
    t.get(&a1, "/api/v4/account").await.assert_problem(401, "Unauthorized");

    // Grace: the response was "lost", the old refresh token is sent again.
    let reply = t.refresh(&r1).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let (a3, r3) = pair(&reply);
    // The unused pair it replaced is gone.
    t.get(&a2, "/api/v4/account").await.assert_problem(401, "Unauthorized");
    assert_eq!(t.refresh(&r2).await.status, 401);

    // Using the new access token ends the grace.
    assert_eq!(t.get(&a3, "/api/v4/account").await.status, 200);
    let dead = t.refresh(&r1).await;
    dead.assert_problem(401, "Unauthorized");
    assert_eq!(dead.body["detail"], "Token has been revoked");

    // Using the new refresh token ends the grace too.
    let (_, r4) = pair(&t.refresh(&r3).await);
    let (_, _r5) = pair(&t.refresh(&r4).await);
    t.refresh(&r3).await.assert_problem(401, "Unauthorized");
    assert_eq!(t.sim.token_calls("refresh_token"), 7);
    t.refresh("def50200never-issued").await.assert_problem(401, "Unauthorized");
}

#[tokio::test]
async fn a_dropped_refresh_answer_is_recovered_with_the_old_refresh_token_once() {
    let t = T::start().await;
    let (_, r1) = t.login().await;
    t.sim.set_token_fault(TokenFault::DropAfterRotate, 1);
    let i = t.sim.integration();
    let body = json!({"client_id": i.client_id, "client_secret": i.client_secret, "grant_type": "refresh_token",
                      "refresh_token": r1, "redirect_uri": i.redirect_uri});
    let lost = t.http.post(t.url("/oauth2/access_token")).json(&body).send().await;
    assert!(lost.is_err(), "the connection should drop without an answer");
    let reply = t.refresh(&r1).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let (a, r2) = pair(&reply);
    assert_eq!(t.get(&a, "/api/v4/account").await.status, 200);
    t.refresh(&r1).await.assert_problem(401, "Unauthorized");
    assert_eq!(t.refresh(&r2).await.status, 200);
    assert_eq!(t.sim.token_calls("refresh_token"), 4);
}

#[tokio::test]
async fn token_faults_status_and_hang() {
    let t = T::start().await;
    let (_, r1) = t.login().await;
    t.sim.set_token_fault(TokenFault::Status(503), 1);
    assert_eq!(t.refresh(&r1).await.status, 503);
    t.sim.set_token_fault(TokenFault::Hang, 1);
    let i = t.sim.integration();
    let body = json!({"client_id": i.client_id, "client_secret": i.client_secret, "grant_type": "refresh_token",
                      "refresh_token": r1, "redirect_uri": i.redirect_uri});
    let hung = t.http.post(t.url("/oauth2/access_token")).timeout(Duration::from_millis(300)).json(&body).send().await;
    assert!(hung.is_err_and(|e| e.is_timeout()));
    // Neither processed anything: r1 is still the live refresh token.
    assert_eq!(t.refresh(&r1).await.status, 200);
}

#[tokio::test]
async fn access_tokens_expire_after_24_hours_and_401s_are_problem_json() {
    let t = T::start().await;
    let (access, refresh) = t.login().await;
    let missing = Reply::read(t.http.get(t.url("/api/v4/contacts")).send().await.expect("get")).await;
    missing.assert_problem(401, "Unauthorized");
    t.get("garbage", "/api/v4/contacts").await.assert_problem(401, "Unauthorized");

    t.clock.advance(Duration::from_secs(86_400 - 1));
    assert_eq!(t.get(&access, "/api/v4/account").await.status, 200);
    t.clock.advance(Duration::from_secs(1));
    let expired = t.get(&access, "/api/v4/account").await;
    expired.assert_problem(401, "Unauthorized");
    assert_eq!(expired.body["detail"], "Token has expired");
    let (fresh, _) = pair(&t.refresh(&refresh).await);
    assert_eq!(t.get(&fresh, "/api/v4/account").await.status, 200);
}

#[tokio::test]
async fn revoking_the_grant_kills_every_token_and_long_lived_tokens_expire() {
    let t = T::start().await;
    let (access, refresh) = t.login().await;
    let long = t.sim.issue_long_lived_token(Duration::from_secs(2 * 86_400));
    assert_eq!(t.get(&long, "/api/v4/contacts?limit=1").await.status, 200);
    t.clock.advance(Duration::from_secs(2 * 86_400));
    t.get(&long, "/api/v4/account").await.assert_problem(401, "Unauthorized");

    let long = t.sim.issue_long_lived_token(Duration::from_secs(30 * 86_400));
    t.sim.revoke_grant();
    t.get(&access, "/api/v4/account").await.assert_problem(401, "Unauthorized");
    t.get(&long, "/api/v4/account").await.assert_problem(401, "Unauthorized");
    t.refresh(&refresh).await.assert_problem(401, "Unauthorized");
}

// --- contacts ------------------------------------------------------------------------------

#[tokio::test]
async fn limit_over_250_is_422_and_bad_parameters_are_400() {
    let t = T::start().await;
    let (a, _) = t.login().await;
    let reply = t.get(&a, "/api/v4/contacts?limit=251").await;
    reply.assert_problem(422, "Unprocessable Entity");
    assert_eq!(reply.body["detail"], "Limit 250 per page");
    assert_eq!(t.get(&a, "/api/v4/contacts?limit=250").await.status, 200);
    for bad in ["limit=0", "page=0", "page=x", "order[updated_at]=up", "order[name]=asc", "with=unicorns"] {
        t.get(&a, &format!("/api/v4/contacts?{bad}")).await.assert_problem(400, "Bad Request");
    }
    // Unknown parameters are ignored, as Kommo does.
    assert_eq!(t.get(&a, "/api/v4/contacts?colour=blue&with=leads").await.status, 200);
}

#[tokio::test]
async fn pages_link_to_the_next_one_until_the_last_and_then_204() {
    let t = T::start().await;
    let (a, _) = t.login().await;
    assert_eq!(t.sim.contact_count(), 40);
    let mut path = "/api/v4/contacts?limit=15".to_owned();
    let mut seen = Vec::new();
    loop {
        let reply = t.get(&a, &path).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let contacts = reply.body["_embedded"]["contacts"].as_array().expect("contacts").clone();
        seen.extend(contacts.iter().map(|c| c["id"].as_i64().expect("id")));
        let c = &contacts[0];
        for key in [
            "name",
            "first_name",
            "last_name",
            "responsible_user_id",
            "group_id",
            "created_by",
            "updated_by",
            "created_at",
            "updated_at",
            "closest_task_at",
            "is_deleted",
            "is_unsorted",
            "custom_fields_values",
            "account_id",
            "_links",
        ] {
            assert!(c.get(key).is_some(), "missing {key} in {c}");
        }
        assert!(c["_embedded"]["tags"].is_array() && c["_embedded"]["companies"].is_array());
        match reply.body["_links"]["next"]["href"].as_str() {
            Some(next) => path = next.strip_prefix(&t.sim.base_url()).expect("own base").to_owned(),
            None => {
                assert_eq!(reply.body["_page"], 3);
                assert_eq!(contacts.len(), 10);
                break;
            }
        }
    }
    assert_eq!(seen, t.sim.contact_ids());
    let past = t.get(&a, "/api/v4/contacts?limit=15&page=4").await;
    assert_eq!(past.status, 204);
    assert!(past.text.is_empty());
}

#[tokio::test]
async fn updated_at_filter_with_ascending_order() {
    let t = T::start().await;
    let (a, _) = t.login().await;
    let all = t.get(&a, "/api/v4/contacts?limit=250&order[updated_at]=desc").await;
    let stamps: Vec<i64> = all.body["_embedded"]["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .map(|c| c["updated_at"].as_i64().expect("updated_at"))
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] >= w[1]));
    let from = stamps[9];
    let reply = t.get(&a, &format!("/api/v4/contacts?filter[updated_at][from]={from}&order[updated_at]=asc")).await;
    let got: Vec<i64> = reply.body["_embedded"]["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .map(|c| c["updated_at"].as_i64().expect("updated_at"))
        .collect();
    assert_eq!(got.len(), 10);
    assert!(got.windows(2).all(|w| w[0] <= w[1]) && got.iter().all(|u| *u >= from));
    let future = T0_MILLIS / 1000 + 10;
    assert_eq!(t.get(&a, &format!("/api/v4/contacts?filter[updated_at][from]={future}")).await.status, 204);
}

#[tokio::test]
async fn query_is_a_case_insensitive_substring_of_values_as_stored() {
    let t = T::start().await;
    let (a, _) = t.login().await;
    let id = t.sim.add_contact(SimContact {
        first_name: "Пётр".into(),
        last_name: "Сидоров".into(),
        phones: vec![("+7 912 345-67-89".into(), "MOB".into())],
        ..Default::default()
    });
    let ids = |r: &Reply| -> Vec<i64> {
        r.body["_embedded"]["contacts"]
            .as_array()
            .map_or(Vec::new(), |cs| cs.iter().map(|c| c["id"].as_i64().unwrap_or(0)).collect())
    };
    assert_eq!(ids(&t.get(&a, "/api/v4/contacts?query=912%20345-67").await), vec![id]);
    assert_eq!(ids(&t.get(&a, "/api/v4/contacts?query=%D0%A1%D0%98%D0%94%D0%9E%D0%A0").await), vec![id]); // "СИДОР"
    // Phones match by their digits; other fields only as stored.
    assert_eq!(ids(&t.get(&a, "/api/v4/contacts?query=79123456789").await), vec![id]);
    assert_eq!(ids(&t.get(&a, "/api/v4/contacts?query=9123456789").await), vec![id]);
    assert_eq!(t.get(&a, "/api/v4/contacts?query=89123456789").await.status, 204, "8… is not the stored digits");
    assert_eq!(t.get(&a, "/api/v4/contacts?query=1234").await.status, 204, "too short to be a number");
    let anna = t.get(&a, "/api/v4/contacts?query=KOWALSKI").await;
    let found = &anna.body["_embedded"]["contacts"][0];
    assert_eq!(found["first_name"], "Anna");
    let fields = found["custom_fields_values"].as_array().expect("fields");
    assert!(
        fields.iter().any(|f| f["field_code"] == "EMAIL" && f["values"][0]["value"] == "anna.kowalski@example.com")
    );
    assert!(fields.iter().any(|f| f["field_code"] == "PHONE" && f["values"][0]["value"] == "+48 601 234 567"));
    assert_eq!(ids(&t.get(&a, "/api/v4/contacts?query=anna.kowalski@example.com").await).len(), 1);
}

#[tokio::test]
async fn post_creates_from_an_array_and_echoes_request_id() {
    let t = T::start().await;
    let (a, _) = t.login().await;
    let body = json!([{"first_name": "Jan", "last_name": "Nowak", "request_id": "r-1",
        "custom_fields_values": [
            {"field_code": "EMAIL", "values": [{"value": "jan@example.pl", "enum_code": "PRIV"}]},
            {"field_id": store::FIELD_PHONE, "values": [{"value": "+48 22 123 45 67"}]}]},
        {"name": "Без e-mail"}]);
    let reply = t.send(reqwest::Method::POST, &a, "/api/v4/contacts", body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let created = reply.body["_embedded"]["contacts"].as_array().expect("contacts");
    assert_eq!(created[0]["request_id"], "r-1");
    assert_eq!(created[1]["request_id"], "1");
    let id = created[0]["id"].as_i64().expect("id");
    let contact = t.sim.contact(id).expect("created");
    assert_eq!(contact["name"], "Jan Nowak");
    assert_eq!(contact["custom_fields_values"][0]["values"][0]["enum_code"], "PRIV");
    assert_eq!(contact["custom_fields_values"][1]["values"][0]["enum_code"], "WORK");
    let other = t.sim.contact(created[1]["id"].as_i64().expect("id")).expect("created");
    assert!(other["custom_fields_values"].is_null());
    assert_eq!(t.get(&a, &format!("/api/v4/contacts/{id}")).await.body["id"], id);
    assert_eq!(t.get(&a, "/api/v4/contacts/1").await.status, 204);

    let patch = json!({"last_name": "Nowak-Kowalska"});
    let reply = t.send(reqwest::Method::PATCH, &a, &format!("/api/v4/contacts/{id}"), patch).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(t.sim.contact(id).expect("c")["name"], "Jan Nowak-Kowalska");
}

#[tokio::test]
async fn post_refuses_unknown_fields_non_arrays_and_oversized_batches() {
    let t = T::start().await;
    let (a, _) = t.login().await;
    let before = t.sim.contact_count();
    let body = json!([{"name": "ok"}, {"name": "x", "request_id": "bad",
        "custom_fields_values": [{"field_code": "SKYPE", "values": [{"value": "x"}]}]}]);
    let reply = t.send(reqwest::Method::POST, &a, "/api/v4/contacts", body).await;
    reply.assert_problem(400, "Bad Request");
    assert_eq!(reply.body["detail"], "Request validation failed");
    let errors = &reply.body["validation-errors"];
    assert_eq!(errors.as_array().map(Vec::len), Some(1));
    assert_eq!(errors[0]["request_id"], "bad");
    assert_eq!(errors[0]["errors"][0]["code"], "NotSupportedChoice");
    assert_eq!(errors[0]["errors"][0]["path"], "custom_fields_values.0.field_code");
    let body = json!([{"name": "x", "custom_fields_values": [{"field_id": 1, "values": [{"value": "x"}]}]}]);
    let reply = t.send(reqwest::Method::POST, &a, "/api/v4/contacts", body).await;
    assert_eq!(reply.body["validation-errors"][0]["errors"][0]["path"], "custom_fields_values.0.field_id");
    let body = json!([{"name": "x", "custom_fields_values": [{"field_code": "PHONE", "values": [{"value": "1", "enum_code": "PRIV"}]}]}]);
    let reply = t.send(reqwest::Method::POST, &a, "/api/v4/contacts", body).await;
    assert_eq!(reply.body["validation-errors"][0]["errors"][0]["path"], "custom_fields_values.0.values.0.enum_code");

    t.send(reqwest::Method::POST, &a, "/api/v4/contacts", json!({"name": "x"}))
        .await
        .assert_problem(400, "Bad Request");
    let many: Vec<Value> = (0..251).map(|i| json!({"name": format!("n{i}")})).collect();
    t.send(reqwest::Method::POST, &a, "/api/v4/contacts", Value::Array(many)).await.assert_problem(400, "Bad Request");
    assert_eq!(t.sim.contact_count(), before, "nothing was created");
}

#[tokio::test]
async fn api_calls_on_www_are_refused() {
    let t = T::start().await;
    let (a, _) = t.login().await;
    let response =
        t.http.get(t.url("/api/v4/account")).bearer_auth(&a).header("host", "www.kommo.com").send().await.expect("get");
    Reply::read(response).await.assert_problem(404, "Not Found");
    let response = t.http.get(t.url("/api/v4/account")).bearer_auth(&a).header("host", "demo.kommo.com").send().await;
    assert_eq!(response.expect("get").status(), 200);
}

#[tokio::test]
async fn notes_and_tasks() {
    let t = T::start().await;
    let (a, _) = t.login().await;
    let anna = t.sim.contact_ids()[0];
    let path = format!("/api/v4/contacts/{anna}/notes");
    assert_eq!(t.get(&a, &path).await.status, 204);
    let body = json!([{"note_type": "common", "params": {"text": "Called about the invoice"}}]);
    let reply = t.send(reqwest::Method::POST, &a, &path, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["_embedded"]["notes"][0]["entity_id"], anna);
    assert_eq!(reply.body["_embedded"]["notes"][0]["request_id"], "0");
    assert_eq!(t.sim.notes(anna), vec!["Called about the invoice".to_owned()]);
    assert_eq!(t.get(&a, &path).await.body["_embedded"]["notes"][0]["params"]["text"], "Called about the invoice");
    let bad = json!([{"note_type": "common", "params": {}}]);
    t.send(reqwest::Method::POST, &a, &path, bad).await.assert_problem(400, "Bad Request");
    let note = json!([{"note_type": "common", "params": {"text": "x"}}]);
    t.send(reqwest::Method::POST, &a, "/api/v4/contacts/1/notes", note).await.assert_problem(404, "Not Found");

    let tasks = t.get(&a, &format!("/api/v4/tasks?filter[entity_type]=contacts&filter[entity_id][]={anna}")).await;
    let tasks = tasks.body["_embedded"]["tasks"].as_array().expect("tasks").clone();
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|t| t["entity_id"] == anna && t["entity_type"] == "contacts" && t["text"].is_string()));
    let none = t.get(&a, &format!("/api/v4/tasks?filter[entity_type]=contacts&filter[entity_id][]={}", anna + 1)).await;
    assert_eq!(none.status, 204);
}

// --- rate limit, block, faults -------------------------------------------------------------

#[tokio::test]
async fn over_the_rate_429_then_an_ip_block_then_service_again() {
    let t = T::start_with(|o| {
        o.rate_limit = Some(3);
        o.block_after = 4;
        o.block_for = Duration::from_millis(1500);
        o.retry_after_secs = 2;
    })
    .await;
    let long = t.sim.issue_long_lived_token(Duration::from_secs(86_400));
    let mut statuses = Vec::new();
    let mut first_429 = None;
    for _ in 0..12 {
        let reply = t.get(&long, "/api/v4/account").await;
        if reply.status == 429 && first_429.is_none() {
            first_429 = Some(reply.body.clone());
        }
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(&statuses[..4], &[200, 200, 200, 429], "{statuses:?}");
    let body = first_429.expect("a 429");
    assert_eq!(body["title"], "Too Many Requests");
    assert_eq!(body["retry_after"], 2);
    assert_eq!(t.sim.rejected_429(), 5, "{statuses:?}");
    // The fifth 429 is over `block_after` (4): it still answers 429, and the block begins.
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429, 403, 403, 403, 403]);
    assert!(t.sim.is_blocked());
    t.get(&long, "/api/v4/account").await.assert_problem(403, "Forbidden");
    assert_eq!(t.sim.api_request_times().len(), 13);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(!t.sim.is_blocked());
    assert_eq!(t.get(&long, "/api/v4/account").await.status, 200);
    t.sim.block_ip(Duration::from_secs(60));
    assert_eq!(t.get(&long, "/api/v4/account").await.status, 403);
    t.sim.unblock_ip();
    assert_eq!(t.get(&long, "/api/v4/account").await.status, 200);
}

#[tokio::test]
async fn api_faults() {
    let t = T::start().await;
    let long = t.sim.issue_long_lived_token(Duration::from_secs(86_400));
    t.sim.set_api_fault(ApiFault::Status(504), 1);
    let reply = t.get(&long, "/api/v4/account").await;
    assert_eq!(reply.status, 504);
    assert!(reply.content_type.starts_with("text/html"));
    t.sim.set_api_fault(ApiFault::NonJson429, 1);
    let reply = t.get(&long, "/api/v4/account").await;
    assert_eq!(reply.status, 429);
    assert!(reply.body.is_null() && reply.text.contains("429"));
    t.sim.set_api_fault(ApiFault::Hang, 1);
    let hung = t.http.get(t.url("/api/v4/account")).bearer_auth(&long).timeout(Duration::from_millis(300)).send().await;
    assert!(hung.is_err_and(|e| e.is_timeout()));
    assert_eq!(t.get(&long, "/api/v4/account").await.status, 200);
}

// --- webhooks --------------------------------------------------------------------------------

type Seen = Arc<Mutex<Vec<(HashMap<String, String>, String)>>>;

/// A local receiver: records (headers, body) and answers 200.
async fn receiver() -> (String, Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/hooks/{secret}",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let record = record.clone();
            async move {
                let headers =
                    headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
                record.lock().expect("lock").push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hooks/s3cr3t", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen, task)
}

fn form(body: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn webhook_subscribe_list_update_and_delete() {
    let t = T::start().await;
    let (a, _) = t.login().await;
    let dest = "https://crmhub.example/hooks/kommo/1/secret";
    let body = json!({"destination": dest, "settings": ["add_contact", "update_contact"], "sort": 10});
    let reply = t.send(reqwest::Method::POST, &a, "/api/v4/webhooks", body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    for key in ["id", "created_by", "created_at", "updated_at", "sort", "disabled", "destination", "settings"] {
        assert!(reply.body.get(key).is_some(), "missing {key}");
    }
    let body = json!({"destination": dest, "settings": ["add_contact", "delete_contact"]});
    assert_eq!(t.send(reqwest::Method::POST, &a, "/api/v4/webhooks", body).await.status, 200);
    let list = t.get(&a, &format!("/api/v4/webhooks?filter[destination]={}", urlencode(dest))).await;
    assert_eq!(list.body["_embedded"]["webhooks"][0]["settings"], json!(["add_contact", "delete_contact"]));
    assert_eq!(t.sim.webhooks().len(), 1);

    for bad in [
        json!({"destination": "/relative", "settings": ["add_contact"]}),
        json!({"destination": "ftp://x.example/", "settings": ["add_contact"]}),
        json!({"destination": dest, "settings": ["add_unicorn"]}),
        json!({"destination": dest, "settings": []}),
    ] {
        t.send(reqwest::Method::POST, &a, "/api/v4/webhooks", bad).await.assert_problem(400, "Bad Request");
    }
    let gone = t.send(reqwest::Method::DELETE, &a, "/api/v4/webhooks", json!({"destination": dest})).await;
    assert_eq!(gone.status, 204);
    let again = t.send(reqwest::Method::DELETE, &a, "/api/v4/webhooks", json!({"destination": dest})).await;
    again.assert_problem(400, "Bad Request");
    assert_eq!(t.get(&a, "/api/v4/webhooks").await.status, 204);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn deliveries_are_php_bracket_forms_like_the_contract_example() {
    let t = T::start().await;
    let (a, _) = t.login().await;
    let (dest, seen, _task) = receiver().await;
    let settings = json!(["add_contact", "update_contact", "delete_contact", "add_company"]);
    let reply =
        t.send(reqwest::Method::POST, &a, "/api/v4/webhooks", json!({"destination": dest, "settings": settings})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let id = t.sim.add_contact(SimContact {
        first_name: "Name".into(),
        last_name: String::new(),
        emails: vec![("name@example.com".into(), "WORK".into())],
        phones: vec![("1234567890".into(), "WORK".into())],
        company_id: None,
    });
    assert!(t.sim.settle_deliveries(Duration::from_secs(5)).await);
    let (headers, body) = seen.lock().expect("lock")[0].clone();
    assert_eq!(headers["user-agent"], "amoCRM-WebHook-client/1.0");
    assert_eq!(headers["content-type"], "application/x-www-form-urlencoded");
    let pairs = form(&body);
    let now = (T0_MILLIS / 1000).to_string();
    let account = t.sim.account_id().to_string();
    let id_s = id.to_string();
    let expected = [
        ("contacts[add][0][id]", id_s.as_str()),
        ("contacts[add][0][name]", "Name"),
        ("contacts[add][0][responsible_user_id]", "11087123"),
        ("contacts[add][0][date_create]", &now),
        ("contacts[add][0][last_modified]", &now),
        ("contacts[add][0][created_user_id]", "11087123"),
        ("contacts[add][0][modified_user_id]", "11087123"),
        ("contacts[add][0][account_id]", &account),
        ("contacts[add][0][created_at]", &now),
        ("contacts[add][0][updated_at]", &now),
        ("contacts[add][0][custom_fields][0][id]", "771906"),
        ("contacts[add][0][custom_fields][0][name]", "Phone"),
        ("contacts[add][0][custom_fields][0][code]", "PHONE"),
        ("contacts[add][0][custom_fields][0][values][0][value]", "1234567890"),
        ("contacts[add][0][custom_fields][0][values][0][enum]", "552476"),
        ("contacts[add][0][custom_fields][1][id]", "771908"),
        ("contacts[add][0][custom_fields][1][name]", "Email"),
        ("contacts[add][0][custom_fields][1][code]", "EMAIL"),
        ("contacts[add][0][custom_fields][1][values][0][value]", "name@example.com"),
        ("contacts[add][0][custom_fields][1][values][0][enum]", "552488"),
        ("contacts[add][0][type]", "contact"),
        ("account[subdomain]", "demo"),
        ("account[id]", &account),
        ("account[_links][self]", "https://demo.kommo.com"),
    ];
    let got: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, expected.to_vec());
    let delivery = &t.sim.deliveries()[0];
    assert_eq!((delivery.destination.as_str(), delivery.status), (dest.as_str(), Some(200)));

    t.sim.delete_contact(id);
    assert!(t.sim.settle_deliveries(Duration::from_secs(5)).await);
    let pairs = form(&seen.lock().expect("lock")[1].1);
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).filter(|k| k.starts_with("contacts")).collect();
    assert_eq!(keys, ["contacts[delete][0][id]", "contacts[delete][0][type]"]);
    assert_eq!(get(&pairs, "contacts[delete][0][type]"), Some("contact"));
    assert_eq!(t.get(&a, &format!("/api/v4/contacts/{id}")).await.status, 204);

    let company = t.sim.add_company("Acme", &["office@acme.example"]);
    assert!(t.sim.settle_deliveries(Duration::from_secs(5)).await);
    let pairs = form(&seen.lock().expect("lock")[2].1);
    assert_eq!(get(&pairs, "contacts[add][0][id]"), Some(company.to_string().as_str()));
    assert_eq!(get(&pairs, "contacts[add][0][type]"), Some("company"));
    assert!(get(&pairs, "contacts[add][0][linked_leads_id]").is_some());

    // One body, several actions and indexes; the user-defined field has no code.
    let ids = t.sim.contact_ids();
    let (x, y, z) = (ids[1], ids[2], ids[5]);
    t.sim.fire_batch(vec![(Action::Add, x), (Action::Update, z), (Action::Add, y), (Action::Delete, id)]);
    assert!(t.sim.settle_deliveries(Duration::from_secs(5)).await);
    let pairs = form(&seen.lock().expect("lock")[3].1);
    assert_eq!(get(&pairs, "contacts[add][0][id]"), Some(x.to_string().as_str()));
    assert_eq!(get(&pairs, "contacts[add][1][id]"), Some(y.to_string().as_str()));
    assert_eq!(get(&pairs, "contacts[update][0][id]"), Some(z.to_string().as_str()));
    assert_eq!(get(&pairs, "contacts[delete][0][id]"), Some(id.to_string().as_str()));
    // Seeded contact 5 carries the user-defined "Source" field, last.
    let source: Vec<&(String, String)> =
        pairs.iter().filter(|(k, v)| k.starts_with("contacts[update][0][custom_fields]") && v == "Source").collect();
    assert_eq!(source.len(), 1);
    let prefix = source[0].0.trim_end_matches("[name]");
    assert!(get(&pairs, &format!("{prefix}[id]")).is_some() && get(&pairs, &format!("{prefix}[code]")).is_none());

    // API writes fire too; PHONE precedes EMAIL on odd seeded contacts.
    let body = json!([{"id": ids[1], "first_name": "Renamed"}]);
    assert_eq!(t.send(reqwest::Method::PATCH, &a, "/api/v4/contacts", body).await.status, 200);
    assert!(t.sim.settle_deliveries(Duration::from_secs(5)).await);
    let pairs = form(&seen.lock().expect("lock")[4].1);
    assert_eq!(get(&pairs, "contacts[update][0][custom_fields][0][code]"), Some("PHONE"));
    assert_eq!(get(&pairs, "contacts[update][0][custom_fields][1][code]"), Some("EMAIL"));
    assert_eq!(t.sim.deliveries().len(), 5);
}

#[tokio::test]
async fn a_destination_failing_more_than_100_times_is_disabled_and_resaving_enables_it() {
    let t = T::start().await;
    let (a, _) = t.login().await;
    // A port nobody listens on: every delivery fails at once.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dest = format!("http://{}/hook", dead.local_addr().expect("addr"));
    drop(dead);
    let sub = json!({"destination": dest, "settings": ["update_contact"]});
    assert_eq!(t.send(reqwest::Method::POST, &a, "/api/v4/webhooks", sub.clone()).await.status, 200);
    let id = t.sim.contact_ids()[0];
    for _ in 0..101 {
        t.sim.fire_batch(vec![(Action::Update, id)]);
    }
    assert!(t.sim.settle_deliveries(Duration::from_secs(20)).await);
    assert!(t.sim.webhooks()[0].disabled);
    assert!(t.sim.deliveries().iter().all(|d| d.status.is_none()));
    t.sim.fire_batch(vec![(Action::Update, id)]);
    assert!(t.sim.settle_deliveries(Duration::from_secs(5)).await);
    assert_eq!(t.sim.deliveries().len(), 101, "a disabled webhook gets nothing");
    assert_eq!(t.send(reqwest::Method::POST, &a, "/api/v4/webhooks", sub).await.status, 200);
    assert!(!t.sim.webhooks()[0].disabled);
}
