//! The social-inbox channel (contract `social-inbox.md`): signed `/search` and `/iframe`
//! against the Vtiger simulator, the bad inputs of issue 4 (each with its exact status), the
//! admin API, `crmhub sign` and `crmhub demo`.

use std::sync::Arc;
use std::time::Duration;

use crmhub_core::Secret;
use crmhub_core::clock::ManualClock;
use crmhub_core::signing::social_inbox::{Policy, sign, verify};
use crmhub_server::Settings;
use crmhub_sim::vtiger::{Fault, VtigerSimHandle, VtigerSimOptions, spawn as spawn_vtiger};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::binary::{crmhub, start_demo};
use crate::helpers::{TestApp, error_of, spawn};

const KEY: &str = "sim-access-key-0001";
const SECRET: &str = "changeme!";
/// The clock of most tests (unix seconds); `expires` values are relative to it.
pub(crate) const NOW: i64 = 1_700_000_000;
const CHANNEL: &str = "/admin/v1/tenants/acme/channels/social-inbox";

const MISSING_PARAMS: &str = r#"{"status":"error","error":"missing or invalid sig or expires params"}"#;
const MISMATCH: &str = r#"{"status":"error","error":"Signature mismatch"}"#;
const EXPIRED: &str = r#"{"status":"error","error":"request expired"}"#;
const Q_EMPTY: &str = r#"{"status":"error","error":"q empty or not specified"}"#;

pub(crate) struct Inbox {
    pub(crate) app: TestApp,
    pub(crate) sim: VtigerSimHandle,
    pub(crate) clock: ManualClock,
    connection: String,
    pub(crate) susan: String,
}

/// Tenant `acme` with a Vtiger connection (Susan Red, Frank Redford) and the channel on it
/// with secret `changeme!`, the clock at `now`; `settings` adds to the PUT body.
async fn inbox_at(now: i64, settings: Value) -> Inbox {
    inbox_configured(now, settings, |_| {}).await
}

/// [`inbox_at`] with crmhub's own settings changed by `configure`.
pub(crate) async fn inbox_configured(now: i64, settings: Value, configure: impl FnOnce(&mut Settings)) -> Inbox {
    let sim = spawn_vtiger(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
    let account = sim.insert_record("Accounts", [("accountname", "Redwood Supplies")]);
    let susan = sim.insert_record(
        "Contacts",
        [
            ("firstname", "Susan"),
            ("lastname", "Red"),
            ("email", "susan.red@example.com"),
            ("account_id", account.as_str()),
        ],
    );
    sim.insert_record("ModComments", [("commentcontent", "Prefers e-mail."), ("related_to", susan.as_str())]);
    sim.insert_record("Contacts", [("firstname", "Frank"), ("lastname", "Redford")]);
    let clock = ManualClock::new(now * 1000);
    let app = spawn().clock(Arc::new(clock.clone())).configure(configure).start().await;
    app.create_tenant("acme").await;
    let connection = connect(&app, &sim.base_url()).await;
    let mut body = json!({"connection_id": connection, "secret": SECRET});
    body.as_object_mut().unwrap().extend(settings.as_object().cloned().unwrap_or_default());
    let response = app.admin_send(Method::PUT, CHANNEL, &body).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    Inbox { app, sim, clock, connection, susan }
}

async fn inbox() -> Inbox {
    inbox_at(NOW, json!({})).await
}

async fn connect(app: &TestApp, host: &str) -> String {
    let body = json!({"name": format!("Vtiger {host}"), "kind": "vtiger", "host": host,
                      "fields": {"username": "admin", "card_fields": ["leadsource"]}, "credentials": {"access_key": KEY}});
    let response = app.post_connection("acme", &body).await;
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

impl Inbox {
    fn now(&self) -> i64 {
        crmhub_core::Clock::now_secs(&self.clock)
    }

    /// `params` then `expires` = now, signed with `changeme!`.
    pub(crate) fn signed(&self, endpoint: &str, params: &[(&str, &str)]) -> String {
        self.signed_with(endpoint, params, self.now(), SECRET)
    }

    fn signed_with(&self, endpoint: &str, params: &[(&str, &str)], expires: i64, secret: &str) -> String {
        let expires = expires.to_string();
        let mut all = params.to_vec();
        all.push(("expires", &expires));
        self.raw(endpoint, &sign(&all, &Secret::new(secret)))
    }

    fn raw(&self, endpoint: &str, query: &str) -> String {
        self.app.url(&format!("/t/acme/social/{endpoint}?{query}"))
    }

    pub(crate) async fn get(&self, url: &str) -> Response {
        self.app.client.get(url).send().await.expect("request")
    }

    pub(crate) async fn search(&self, term: &str) -> Response {
        self.get(&self.signed("search", &[("q", term)])).await
    }

    async fn card(&self, params: &[(&str, &str)]) -> Response {
        self.get(&self.signed("iframe", params)).await
    }
}

/// Status, `application/json`, and the body byte for byte.
async fn assert_json(response: Response, status: u16, body: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(header(&response, "content-type"), "application/json");
    assert_eq!(response.text().await.unwrap(), body);
}

pub(crate) fn header(response: &Response, name: &str) -> String {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

async fn assert_empty(response: Response, status: u16) {
    assert_eq!(response.status(), status);
    assert_eq!(response.text().await.unwrap(), "");
}

pub(crate) fn names(results: &Value) -> Vec<&str> {
    results["results"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect()
}

// --- the contract's vector, the happy paths -----------------------------------------------

#[tokio::test]
async fn the_contract_test_vector_is_accepted_end_to_end() {
    // Inside the window: expires (1500472622) is 10 s in the future.
    let inbox = inbox_at(1_500_472_612, json!({})).await;
    let query = "q=red&expires=1500472622&sig=7c9a0a55dc2d1542ec736b8021f048da114fcba11ca1fb0219c122dfd789e48c";
    let response = inbox.get(&inbox.raw("search", query)).await;
    assert_eq!(response.status(), 200);
    let results: Value = response.json().await.unwrap();
    assert_eq!(names(&results), ["Susan Red", "Frank Redford"]);
}

#[tokio::test]
async fn search_results_have_string_ids_and_display_names() {
    let inbox = inbox().await;
    let response = inbox.search("red").await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "application/json");
    for (name, value) in
        [("x-content-type-options", "nosniff"), ("referrer-policy", "no-referrer"), ("cache-control", "no-store")]
    {
        assert_eq!(header(&response, name), value, "{name}");
    }
    assert!(header(&response, "content-security-policy").contains("frame-ancestors 'none'"));
    let results: Value = response.json().await.unwrap();
    assert_eq!(results["results"][0], json!({"id": inbox.susan, "name": "Susan Red"}));
    assert!(results["results"].as_array().unwrap().iter().all(|r| r["id"].is_string()));
    let none: Value = inbox.search("nobody-by-that-name").await.json().await.unwrap();
    assert_eq!(none, json!({"results": []}));
}

#[tokio::test]
async fn the_result_limit_is_configurable() {
    let inbox = inbox_at(NOW, json!({"result_limit": 1})).await;
    let results: Value = inbox.search("red").await.json().await.unwrap();
    assert_eq!(names(&results), ["Susan Red"]);
}

#[tokio::test]
async fn uppercase_hex_sig_is_accepted() {
    let inbox = inbox().await;
    let url = inbox.signed("search", &[("q", "red")]);
    let (head, sig) = url.rsplit_once("sig=").unwrap();
    let response = inbox.get(&format!("{head}sig={}", sig.to_ascii_uppercase())).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn expires_equal_to_now_is_accepted() {
    let inbox = inbox().await;
    let response = inbox.get(&inbox.signed_with("search", &[("q", "red")], NOW, SECRET)).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn dotted_key_names_are_signed_with_underscores() {
    let inbox = inbox().await;
    // PHP reads `a.b` as `a_b`, so the platform's signature covers `a_b=1`.
    let expires = NOW.to_string();
    let signed = sign(&[("q", "red"), ("a_b", "1"), ("expires", &expires)], &Secret::new(SECRET));
    let response = inbox.get(&inbox.raw("search", &signed.replacen("a_b=", "a.b=", 1))).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn reserved_characters_utf8_and_duplicate_keys_verify_end_to_end() {
    let inbox = inbox().await;
    for term in ["a~b*c d+e/é", "Ngọc Ánh", "O'Brien"] {
        assert_eq!(inbox.search(term).await.status(), 200, "{term}");
    }
    // PHP keeps the last value at the first position: the platform signed `q=red&expires=…`.
    let expires = NOW.to_string();
    let signed = sign(&[("q", "red"), ("expires", &expires)], &Secret::new(SECRET));
    let response =
        inbox.get(&inbox.raw("search", &format!("q=zzz&{}", signed.replacen("q=red&", "", 1) + "&q=red"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(names(&response.json().await.unwrap()), ["Susan Red", "Frank Redford"]);
}

#[tokio::test]
async fn message_params_between_signed_params_are_unsigned() {
    let inbox = inbox().await;
    let expires = NOW.to_string();
    let signed = sign(&[("id", &inbox.susan), ("expires", &expires)], &Secret::new(SECRET));
    let (id, rest) = signed.split_once('&').unwrap();
    let query = format!("{id}&message_sentiment=negative&message_social_network_type=twitter&{rest}");
    let response = inbox.get(&inbox.raw("iframe", &query)).await;
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("Twitter message · sentiment: negative"), "{html}");
}

// --- the card ------------------------------------------------------------------------------

#[tokio::test]
async fn the_card_is_a_complete_document_with_the_contact() {
    let inbox = inbox().await;
    let response = inbox.card(&[("id", &inbox.susan)]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "text/html; charset=UTF-8");
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert_eq!(header(&response, "referrer-policy"), "no-referrer");
    let csp = header(&response, "content-security-policy");
    assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
    assert!(csp.ends_with("frame-ancestors https://app.socialsignin.net"), "the documented default: {csp}");
    let html = response.text().await.unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>"));
    assert!(html.contains("name=\"viewport\" content=\"width=device-width"));
    for expected in
        ["<h1>Susan Red</h1>", "susan.red@example.com", "Redwood Supplies", "Prefers e-mail.", "Open tickets"]
    {
        assert!(html.contains(expected), "{expected}: {html}");
    }
    let crmid = inbox.susan.split_once('x').unwrap().1;
    let record = format!("{}/index.php?module=Contacts&amp;view=Detail&amp;record={crmid}", inbox.sim.base_url());
    assert!(html.contains(&format!("<a href=\"{record}\"")), "{html}");
}

#[tokio::test]
async fn frame_ancestors_come_from_the_allowed_origins() {
    let origins = json!({"allowed_origins": ["https://inbox.example.com", "https://other.example:8443/"]});
    let inbox = inbox_at(NOW, origins).await;
    let response = inbox.card(&[("id", &inbox.susan)]).await;
    let csp = header(&response, "content-security-policy");
    assert!(csp.ends_with("frame-ancestors https://inbox.example.com https://other.example:8443"), "{csp}");
}

#[tokio::test]
async fn record_data_is_rendered_as_text() {
    let inbox = inbox().await;
    let evil = inbox.sim.insert_record("Contacts", [("firstname", "<script>alert(1)</script>"), ("lastname", "X")]);
    inbox.sim.insert_record(
        "ModComments",
        [("commentcontent", "\"><img src=x onerror=alert(1)>"), ("related_to", evil.as_str())],
    );
    let response = inbox.card(&[("id", &evil)]).await;
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(!html.contains("<script>") && !html.contains("<img"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; X"), "{html}");
    assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"), "{html}");
    // The search returns it as JSON data, which is not markup.
    let results: Value = inbox.search("script").await.json().await.unwrap();
    assert_eq!(names(&results), ["<script>alert(1)</script> X"]);
}

#[tokio::test]
async fn only_https_message_links_are_clickable() {
    let inbox = inbox().await;
    let susan = inbox.susan.clone();
    let card = |url: &str| inbox.signed("iframe", &[("id", &susan), ("message_socialsignin_url", url)]);
    let html = inbox.get(&card("javascript:alert(document.cookie)")).await.text().await.unwrap();
    assert!(!html.contains("href=\"javascript:"), "{html}");
    assert!(html.contains("not opened, not https): javascript:alert(document.cookie)"), "{html}");
    let html = inbox.get(&card("https://app.example/messages/42")).await.text().await.unwrap();
    assert!(html.contains("<a href=\"https://app.example/messages/42\" target=\"_blank\""), "{html}");
}

#[tokio::test]
async fn a_missing_id_is_400_with_an_empty_body() {
    let inbox = inbox().await;
    assert_empty(inbox.card(&[]).await, 400).await;
    assert_empty(inbox.card(&[("id", "")]).await, 400).await;
    assert_empty(inbox.card(&[("id", "0")]).await, 400).await;
}

#[tokio::test]
async fn an_unknown_contact_id_is_404_with_an_empty_body() {
    let inbox = inbox().await;
    assert_empty(inbox.card(&[("id", "12x99999")]).await, 404).await;
    assert_empty(inbox.card(&[("id", "not-an-id")]).await, 404).await;
    // A record that exists but is not a contact is not a contact card either.
    let account = inbox.sim.records("Accounts")[0]["id"].clone();
    assert_empty(inbox.card(&[("id", &account)]).await, 404).await;
}

// --- bad parameters --------------------------------------------------------------------------

#[tokio::test]
async fn missing_expires_is_400() {
    let inbox = inbox().await;
    let query = sign(&[("q", "red")], &Secret::new(SECRET));
    assert_json(inbox.get(&inbox.raw("search", &query)).await, 400, MISSING_PARAMS).await;
}

#[tokio::test]
async fn duplicated_expires_is_400() {
    let inbox = inbox().await;
    let now = NOW.to_string();
    let query = sign(&[("q", "red"), ("expires", &now), ("expires", &now)], &Secret::new(SECRET));
    assert_json(inbox.get(&inbox.raw("search", &query)).await, 400, MISSING_PARAMS).await;
}

#[tokio::test]
async fn non_numeric_expires_is_400() {
    let inbox = inbox().await;
    for expires in ["soon", "1700000000.5", "-1700000000", "1e9", ""] {
        let query = sign(&[("q", "red"), ("expires", expires)], &Secret::new(SECRET));
        assert_json(inbox.get(&inbox.raw("search", &query)).await, 400, MISSING_PARAMS).await;
    }
}

#[tokio::test]
async fn leading_zero_expires_is_400() {
    let inbox = inbox().await;
    let expires = format!("0{NOW}");
    let query = sign(&[("q", "red"), ("expires", &expires)], &Secret::new(SECRET));
    assert_json(inbox.get(&inbox.raw("search", &query)).await, 400, MISSING_PARAMS).await;
}

#[tokio::test]
async fn missing_sig_is_400() {
    let inbox = inbox().await;
    let url = inbox.raw("search", &format!("q=red&expires={NOW}"));
    assert_json(inbox.get(&url).await, 400, MISSING_PARAMS).await;
    // A sig that is not 64 hex digits is as good as none.
    let url = inbox.raw("search", &format!("q=red&expires={NOW}&sig=abc"));
    assert_json(inbox.get(&url).await, 400, MISSING_PARAMS).await;
}

#[tokio::test]
async fn a_wrong_sig_is_403() {
    let inbox = inbox().await;
    let url = inbox.signed_with("search", &[("q", "red")], NOW, "another-secret");
    assert_json(inbox.get(&url).await, 403, MISMATCH).await;
    // The right sig for other parameters.
    let url = inbox.signed("search", &[("q", "red")]).replacen("q=red", "q=blue", 1);
    assert_json(inbox.get(&url).await, 403, MISMATCH).await;
}

#[tokio::test]
async fn an_expired_request_is_403() {
    let inbox = inbox().await;
    // The default skew tolerates 30 s.
    let url = inbox.signed_with("search", &[("q", "red")], NOW - 30, SECRET);
    assert_eq!(inbox.get(&url).await.status(), 200);
    let url = inbox.signed_with("search", &[("q", "red")], NOW - 31, SECRET);
    assert_json(inbox.get(&url).await, 403, EXPIRED).await;
    // The signature is checked first, as in the reference.
    let url = inbox.signed_with("search", &[("q", "red")], NOW - 31, "another-secret");
    assert_json(inbox.get(&url).await, 403, MISMATCH).await;
}

#[tokio::test]
async fn expires_beyond_max_ttl_is_403() {
    let inbox = inbox_at(NOW, json!({"max_ttl_secs": 600})).await;
    let url = inbox.signed_with("search", &[("q", "red")], NOW + 600, SECRET);
    assert_eq!(inbox.get(&url).await.status(), 200);
    let url = inbox.signed_with("search", &[("q", "red")], NOW + 601, SECRET);
    let far = r#"{"status":"error","error":"request expires too far in the future"}"#;
    assert_json(inbox.get(&url).await, 403, far).await;
    let url = inbox.signed_with("search", &[("q", "red")], 99_999_999_999, SECRET);
    assert_json(inbox.get(&url).await, 403, far).await;
}

#[tokio::test]
async fn array_valued_q_is_400() {
    let inbox = inbox().await;
    let url = inbox.signed("search", &[("q[]", "x")]);
    let array = r#"{"status":"error","error":"q must be a single value, not an array"}"#;
    assert_json(inbox.get(&url).await, 400, array).await;
}

#[tokio::test]
async fn empty_q_is_400() {
    let inbox = inbox().await;
    assert_json(inbox.search("").await, 400, Q_EMPTY).await;
    assert_json(inbox.get(&inbox.signed("search", &[])).await, 400, Q_EMPTY).await;
}

#[tokio::test]
async fn q_zero_is_400() {
    let inbox = inbox().await;
    assert_json(inbox.search("0").await, 400, Q_EMPTY).await;
}

#[tokio::test]
async fn a_10_kb_q_is_400() {
    let inbox = inbox().await;
    let long = "a".repeat(10 * 1024);
    let too_long = r#"{"status":"error","error":"q is too long (at most 256 characters)"}"#;
    assert_json(inbox.search(&long).await, 400, too_long).await;
    assert_eq!(inbox.sim.operation_count("query"), 0, "the CRM was not asked");
}

#[tokio::test]
async fn post_is_405_and_head_works() {
    let inbox = inbox().await;
    let url = inbox.signed("search", &[("q", "red")]);
    let post = inbox.app.client.post(&url).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    let head = inbox.app.client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-type"), "application/json");
}

// --- tenants and secrets -----------------------------------------------------------------------

#[tokio::test]
async fn an_unknown_tenant_answers_exactly_like_a_bad_signature() {
    let inbox = inbox().await;
    inbox.app.create_tenant("bare").await; // exists, channel not configured
    let query = sign(&[("q", "red"), ("expires", &NOW.to_string())], &Secret::new(SECRET));
    let wrong = sign(&[("q", "red"), ("expires", &NOW.to_string())], &Secret::new("another-secret"));
    let reference = inbox.get(&inbox.raw("search", &wrong)).await;
    let reference = (reference.status(), headers_without_date(&reference), reference.text().await.unwrap());
    assert_eq!(reference.0, 403);
    for path in
        ["/t/nobody/social/search", "/t/bare/social/search", "/t/NOT%20A%20SLUG/social/search", "/t/%FF/social/search"]
    {
        let response = inbox.get(&inbox.app.url(&format!("{path}?{query}"))).await;
        let answer = (response.status(), headers_without_date(&response), response.text().await.unwrap());
        assert_eq!(answer, reference, "{path}");
    }
    // The parameter check comes first there too.
    let response = inbox.get(&inbox.app.url("/t/nobody/social/iframe?id=1")).await;
    assert_json(response, 400, MISSING_PARAMS).await;
}

fn headers_without_date(response: &Response) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        // Both differ per request by design.
        .filter(|(name, _)| *name != "date" && *name != "x-request-id")
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    headers
}

#[tokio::test]
async fn separate_secrets_per_endpoint() {
    let inbox = inbox().await;
    let body = json!({"connection_id": inbox.connection, "search_secret": "search-secret-1", "iframe_secret": "iframe-secret-1",
                      "rotation_grace_secs": 0});
    assert_eq!(inbox.app.admin_send(Method::PUT, CHANNEL, &body).await.status(), 200);
    let search = inbox.signed_with("search", &[("q", "red")], NOW, "search-secret-1");
    assert_eq!(inbox.get(&search).await.status(), 200);
    let iframe = inbox.signed_with("iframe", &[("id", &inbox.susan)], NOW, "search-secret-1");
    assert_json(inbox.get(&iframe).await, 403, MISMATCH).await;
    let iframe = inbox.signed_with("iframe", &[("id", &inbox.susan)], NOW, "iframe-secret-1");
    assert_eq!(inbox.get(&iframe).await.status(), 200);
}

#[tokio::test]
async fn rotation_accepts_old_and_new_secrets_for_the_grace_period() {
    let inbox = inbox().await;
    let body = json!({"connection_id": inbox.connection, "secret": "the-new-secret", "rotation_grace_secs": 600});
    let response = inbox.app.admin_send(Method::PUT, CHANNEL, &body).await;
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["secrets"]["search"].as_array().unwrap().len(), 2, "{view}");
    assert!(view.get("new_secrets").is_none(), "given secrets are not echoed: {view}");

    for secret in [SECRET, "the-new-secret"] {
        let url = inbox.signed_with("search", &[("q", "red")], NOW, secret);
        assert_eq!(inbox.get(&url).await.status(), 200, "{secret} during the grace period");
    }
    inbox.clock.advance(Duration::from_secs(601));
    let now = inbox.now();
    let old = inbox.signed_with("search", &[("q", "red")], now, SECRET);
    assert_json(inbox.get(&old).await, 403, MISMATCH).await;
    let new = inbox.signed_with("search", &[("q", "red")], now, "the-new-secret");
    assert_eq!(inbox.get(&new).await.status(), 200);
}

#[tokio::test]
async fn removing_the_channel_revokes_its_secrets_at_once() {
    let inbox = inbox().await;
    assert_eq!(inbox.app.admin_delete(CHANNEL).await.status(), 204);
    assert_json(inbox.search("red").await, 403, MISMATCH).await;
    assert_eq!(inbox.app.admin_get(CHANNEL).await.status(), 404);
    assert_eq!(inbox.app.admin_delete(CHANNEL).await.status(), 404);
}

// --- the CRM failing ---------------------------------------------------------------------------

#[tokio::test]
async fn a_crm_that_is_down_is_502() {
    let inbox = inbox().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down = connect(&inbox.app, &format!("http://{closed}")).await;
    let body = json!({"connection_id": down, "secret": SECRET});
    assert_eq!(inbox.app.admin_send(Method::PUT, CHANNEL, &body).await.status(), 200);
    let unavailable = r#"{"status":"error","error":"the CRM is unavailable; try again later"}"#;
    assert_json(inbox.search("red").await, 502, unavailable).await;
    let card = inbox.card(&[("id", &inbox.susan)]).await;
    assert_eq!(card.status(), 502);
    assert_eq!(header(&card, "content-type"), "text/html; charset=UTF-8");
    let html = card.text().await.unwrap();
    assert!(html.contains("The CRM is not available right now"), "{html}");
    assert!(!html.contains(&closed.port().to_string()), "no internal details: {html}");
}

#[tokio::test]
async fn a_crm_answering_http_500_empty_is_502() {
    let inbox = inbox().await;
    inbox.sim.set_fault(Fault::Http500Empty);
    let unavailable = r#"{"status":"error","error":"the CRM is unavailable; try again later"}"#;
    assert_json(inbox.search("red").await, 502, unavailable).await;
    assert_eq!(inbox.card(&[("id", &inbox.susan)]).await.status(), 502);
    inbox.sim.clear_fault();
    assert_eq!(inbox.search("red").await.status(), 200, "and back once the CRM is");
}

// --- the admin API --------------------------------------------------------------------------

#[tokio::test]
async fn generated_secrets_are_shown_once() {
    let inbox = inbox().await;
    let app = &inbox.app;
    app.create_tenant("fresh").await;
    let host = inbox.sim.base_url();
    let response = app
        .post_connection(
            "fresh",
            &json!({"name": "V", "kind": "vtiger", "host": host,
        "fields": {"username": "admin"}, "credentials": {"access_key": KEY}}),
        )
        .await;
    let connection = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let path = "/admin/v1/tenants/fresh/channels/social-inbox";
    let view: Value =
        app.admin_send(Method::PUT, path, &json!({"connection_id": connection})).await.json().await.unwrap();
    let search_secret = view["new_secrets"]["search"].as_str().expect("generated").to_owned();
    let iframe_secret = view["new_secrets"]["iframe"].as_str().expect("generated").to_owned();
    assert_eq!(search_secret.len(), 43, "256 bits, base64url");
    assert_ne!(search_secret, iframe_secret);
    assert!(view["endpoints"]["search_url"].as_str().unwrap().ends_with("/t/fresh/social/search"));
    assert_eq!(view["settings"]["result_limit"], 20);

    // Shown nowhere else: not by GET, not by a PUT that changes no secret, not in the tenant.
    let shown = app.admin_get(path).await.text().await.unwrap();
    let again = app.admin_send(Method::PUT, path, &json!({"connection_id": connection, "result_limit": 5})).await;
    let again = again.text().await.unwrap();
    let tenant = app.admin_get("/admin/v1/tenants/fresh").await.text().await.unwrap();
    for text in [&shown, &again, &tenant] {
        assert!(!text.contains(&search_secret) && !text.contains(&iframe_secret), "{text}");
        assert!(!text.contains("new_secrets"), "{text}");
    }
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["secrets"]["search"][0]["retires_at"], Value::Null);
    assert!(shown["secrets"]["search"][0]["id"].is_string());

    // And they work.
    let expires = NOW.to_string();
    let query = sign(&[("q", "red"), ("expires", &expires)], &Secret::new(search_secret.as_str()));
    let response = inbox.get(&app.url(&format!("/t/fresh/social/search?{query}"))).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn invalid_settings_are_422_naming_the_field() {
    let inbox = inbox().await;
    let c = inbox.connection.clone();
    let cases = [
        (json!({"connection_id": c, "result_limit": 0}), "result_limit"),
        (json!({"connection_id": c, "max_ttl_secs": 100_000}), "max_ttl_secs"),
        (json!({"connection_id": c, "skew_secs": -1}), "skew_secs"),
        (
            json!({"connection_id": c, "allowed_origins": ["https://ok.example", "https://x.example/path"]}),
            "allowed_origins[1]",
        ),
        (json!({"connection_id": c, "secret": "short"}), "secret"),
        (json!({"connection_id": c, "card": {"max_activities": 99}}), "card.max_activities"),
        (json!({"connection_id": c, "colour": "red"}), "colour"),
        (json!({"connection_id": "not-a-uuid"}), "connection_id"),
        (json!({"connection_id": crmhub_core::ConnectionId::new().to_string()}), "connection_id"),
        (json!({"secret": SECRET}), "connection_id"),
    ];
    for (body, field) in cases {
        let response = inbox.app.admin_send(Method::PUT, CHANNEL, &body).await;
        assert_eq!(response.status(), 422, "{body}");
        assert_eq!(error_of(response).await.2.as_deref(), Some(field), "{body}");
    }
    let body = json!({"connection_id": c});
    let unknown = inbox.app.admin_send(Method::PUT, "/admin/v1/tenants/nobody/channels/social-inbox", &body).await;
    assert_eq!(unknown.status(), 404);
    let anonymous = inbox.app.client.get(inbox.app.url(CHANNEL)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    // Nothing changed: the channel still answers with the first secret.
    assert_eq!(inbox.search("red").await.status(), 200);
}

// --- the command line -------------------------------------------------------------------------

#[test]
fn the_channel_commands_have_help() {
    for args in [
        &["channel"][..],
        &["channel", "social-inbox"],
        &["channel", "social-inbox", "set"],
        &["channel", "social-inbox", "show"],
        &["channel", "social-inbox", "remove"],
        &["sign"],
    ] {
        let output = crmhub().args(args).arg("--help").output().unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stdout).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn the_cli_configures_the_channel_and_signs_urls() {
    let dir = tempfile::TempDir::new().unwrap();
    let run = |args: &[&str]| {
        let output = crmhub()
            .env("CRMHUB_DATA_DIR", dir.path())
            .env("CRMHUB_SERVER__PUBLIC_URL", "https://gw.example.com")
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success(), stdout, String::from_utf8_lossy(&output.stderr).into_owned())
    };
    assert!(run(&["tenant", "create", "--slug", "acme", "--name", "Acme"]).0);
    let (ok, created, err) = run(&[
        "connection",
        "create",
        "--tenant",
        "acme",
        "--name",
        "V",
        "--kind",
        "vtiger",
        "--host",
        "crm.example.com",
        "--field",
        "username=admin",
        "--credential",
        "access_key=k",
    ]);
    assert!(ok, "{err}");
    let connection = serde_json::from_str::<Value>(&created).unwrap()["id"].as_str().unwrap().to_owned();

    let (ok, _, err) =
        run(&["channel", "social-inbox", "set", "--tenant", "acme", "--connection", &connection, "--secret", "short"]);
    assert!(!ok && err.contains("secret"), "{err}");
    let (ok, out, err) = run(&[
        "channel",
        "social-inbox",
        "set",
        "--tenant",
        "acme",
        "--connection",
        &connection,
        "--secret",
        SECRET,
        "--max-ttl-secs",
        "600",
        "--allowed-origin",
        "https://inbox.example",
    ]);
    assert!(ok, "{err}");
    let view: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["settings"]["allowed_origins"], json!(["https://inbox.example"]));
    assert_eq!(view["endpoints"]["search_url"], "https://gw.example.com/t/acme/social/search");
    let (ok, shown, _) = run(&["channel", "social-inbox", "show", "--tenant", "acme"]);
    assert!(ok && !shown.contains(SECRET));

    let (ok, url, err) = run(&["sign", "--tenant", "acme", "--search", "red", "--ttl", "9999"]);
    assert!(ok, "{err}");
    let (base, query) = url.trim().split_once('?').unwrap();
    assert_eq!(base, "https://gw.example.com/t/acme/social/search");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let request = verify(query, [&Secret::new(SECRET)], now, &Policy { skew_secs: 30, max_ttl_secs: 600 }).unwrap();
    assert_eq!(request.text("q"), Some("red"));
    assert!(request.expires() <= now + 600, "the TTL is capped at max_ttl_secs");

    let (ok, url, err) = run(&[
        "sign",
        "--tenant",
        "acme",
        "--iframe",
        "12x5",
        "--message-url",
        "https://app.example/m/1",
        "--message",
        "sentiment=positive",
    ]);
    assert!(ok, "{err}");
    let query = url.trim().split_once('?').unwrap().1;
    let request = verify(query, [&Secret::new(SECRET)], now, &Policy { skew_secs: 30, max_ttl_secs: 600 }).unwrap();
    assert_eq!(request.text("id"), Some("12x5"));
    assert_eq!(request.metadata().sentiment.as_deref(), Some("positive"));
    assert!(request.metadata().https_socialsignin_url().is_some());

    let (ok, _, err) = run(&["sign", "--tenant", "acme", "--iframe", "1", "--message", "nonsense=1"]);
    assert!(!ok && err.contains("not a message parameter"), "{err}");
    let (ok, _, _) = run(&["channel", "social-inbox", "remove", "--tenant", "acme"]);
    assert!(!ok, "--yes is required");
    assert!(run(&["channel", "social-inbox", "remove", "--tenant", "acme", "--yes"]).0);
    let (ok, _, err) = run(&["sign", "--tenant", "acme", "--search", "red"]);
    assert!(!ok && err.contains("not configured"), "{err}");
}

/// `crmhub demo` prints signed search and card URLs that work as printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_working_signed_urls() {
    let dir = tempfile::TempDir::new().unwrap();
    let demo = start_demo(dir.path()).await;
    let printed = &demo.printed;
    let url_after = |label: &str| {
        let at = printed.iter().position(|l| l.contains(label)).unwrap_or_else(|| panic!("{label}: {printed:?}"));
        printed[at + 1].trim().to_owned()
    };
    let (search, card) = (url_after("Signed search for \"red\""), url_after("Signed contact card of Susan Red"));
    assert!(printed.iter().any(|l| l.contains("secret `changeme!`")), "{printed:?}");

    let client = reqwest::Client::new();
    let results: Value = client.get(&search).send().await.unwrap().json().await.unwrap();
    let card = client.get(&card).send().await.unwrap();
    assert_eq!(card.status(), 200);
    let html = card.text().await.unwrap();
    assert_eq!(names(&results)[..2], ["Susan Red", "Frank Redford"], "{results}");
    assert!(html.contains("<h1>Susan Red</h1>") && html.contains("Twitter message"), "{html}");

    // The printed `sign` hint runs as printed, whoever started the demo (`cargo run` included).
    let hint =
        printed.iter().find_map(|l| l.trim().strip_prefix("More: ")).expect("the sign hint").replace("NAME", "red");
    let signed = std::process::Command::new("sh").args(["-c", &hint]).output().unwrap();
    assert!(signed.status.success(), "{hint}: {}", String::from_utf8_lossy(&signed.stderr));
    let signed = String::from_utf8_lossy(&signed.stdout);
    let url = signed.split_whitespace().find(|w| w.starts_with("http")).unwrap_or_else(|| panic!("{signed}"));
    assert_eq!(client.get(url).send().await.unwrap().status(), 200, "{url}");
}

#[tokio::test]
async fn a_connection_that_cannot_search_is_the_operators_problem_not_the_requests() {
    let inbox = inbox().await;
    let app = &inbox.app;
    app.publish_template(crate::helpers::CARD_ONLY_TEMPLATE).await;
    let body = json!({"name": "Cards", "kind": "template:card-only", "host": "crm.example.com", "credentials": {"token": "t"}});
    let cards = app.create_connection("acme", &body).await;

    // Configuring the channel on it is refused, naming what is missing; the channel stays.
    let response = app.admin_send(Method::PUT, CHANNEL, &json!({"connection_id": cards})).await;
    assert_eq!(response.status(), 422);
    let (_, message, field) = error_of(response).await;
    assert_eq!(field.as_deref(), Some("connection_id"));
    assert!(message.contains("does not support contact.search"), "{message}");
    assert_eq!(inbox.search("red").await.status(), 200, "the channel still searches its own connection");

    // A channel stored before that check (or by hand) answers 502, like an unavailable CRM.
    let tenant = app.store().tenants().by_slug(&crmhub_core::TenantSlug::parse("acme").unwrap()).await.unwrap();
    let channels = app.store().channel_settings(tenant.id);
    let mut stored = channels.get("social_inbox").await.unwrap().unwrap();
    stored.insert("connection_id".into(), json!(cards));
    channels.put("social_inbox", &stored).await.unwrap();
    app.state.social_inbox.forget("acme");
    let response = inbox.search("red").await;
    assert_json(response, 502, r#"{"status":"error","error":"the CRM is unavailable; try again later"}"#).await;
}
