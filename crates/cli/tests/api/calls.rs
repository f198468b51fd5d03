//! The call-centre channel (issue 10): call events against the Vtiger simulator, screen pops,
//! one CRM record per call in every order, SMS notes, the bad inputs (each with its status and
//! nothing written), and the admin views.

use std::sync::Arc;

use crmhub_core::clock::{Clock, ManualClock, SystemClock};
use crmhub_server::config::Role;
use crmhub_sim::vtiger::{Fault, VtigerSimHandle, VtigerSimOptions, spawn as spawn_vtiger};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_of, spawn};

pub const KEY: &str = "sim-access-key-0001";

/// Tenant `acme` (region VN) with a Vtiger connection holding Lan Nguyen (`0912 345 678`),
/// the calls channel on it, and a channel key with the `calls` scope.
pub struct CallCentre {
    pub app: TestApp,
    pub sim: VtigerSimHandle,
    /// The app's clock: the tests run the queue by hand (`drain_jobs`) and move time to make
    /// retries due.
    pub clock: ManualClock,
    pub key: String,
    pub lan: String,
    /// Lan's account, Lotus Trading.
    pub account: String,
    /// The Vtiger connection the channel is configured on.
    pub connection: String,
}

impl CallCentre {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut crmhub_server::Settings)) -> Self {
        let sim = spawn_vtiger(VtigerSimOptions { admin_access_key: KEY.into(), ..Default::default() }).await;
        let account = sim.insert_record("Accounts", [("accountname", "Lotus Trading")]);
        let lan = sim.insert_record(
            "Contacts",
            [
                ("firstname", "Lan"),
                ("lastname", "Nguyen"),
                ("mobile", "0912 345 678"),
                ("email", "lan@example.com"),
                ("account_id", account.as_str()),
            ],
        );
        let clock = ManualClock::new(SystemClock.now_millis());
        let app = spawn()
            .clock(Arc::new(clock.clone()))
            .configure(|s| {
                s.server.role = Role::Api;
                configure(s);
            })
            .start()
            .await;
        let tenant = app.post_tenant(&json!({"slug": "acme", "name": "Acme", "phone_region": "VN"})).await;
        assert_eq!(tenant.status(), 201);
        let body = json!({"name": "Vtiger", "kind": "vtiger", "host": sim.base_url(),
                          "fields": {"username": "admin"}, "credentials": {"access_key": KEY}});
        let connection = app.create_connection("acme", &body).await;
        let configured = app
            .admin_send(Method::PUT, "/admin/v1/tenants/acme/channels/calls", &json!({"connection_id": connection}))
            .await;
        assert_eq!(configured.status(), 200, "{}", configured.text().await.unwrap());
        let key = app
            .admin_send(
                Method::POST,
                "/admin/v1/tenants/acme/channel-keys",
                &json!({"name": "pbx", "scopes": ["calls"]}),
            )
            .await;
        let key = key.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned();
        Self { app, sim, clock, key, lan, account, connection }
    }

    /// Posts a raw body to the events endpoint with `key`.
    pub async fn post_raw(&self, key: Option<&str>, body: impl Into<reqwest::Body>) -> Response {
        let mut request = self
            .app
            .client
            .post(self.app.url("/t/acme/calls/events"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().await.unwrap()
    }

    pub async fn post(&self, event: &Value) -> Response {
        self.post_raw(Some(&self.key), event.to_string()).await
    }

    /// Posts an event that must be accepted; its answer.
    pub async fn accept(&self, event: &Value) -> Value {
        let response = self.post(event).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 202, "{event} → {body}");
        body
    }

    /// The simulator's call logs (Events with activity type Call) for `call_id`.
    pub fn logs_of(&self, call_id: &str) -> Vec<std::collections::BTreeMap<String, String>> {
        let marker = format!("[crmhub-call:{call_id}]");
        self.sim
            .records("Events")
            .into_iter()
            .filter(|e| e.get("description").is_some_and(|d| d.contains(&marker)))
            .collect()
    }

    pub async fn call_admin(&self, call_id: &str) -> Value {
        let response = self.app.admin_get(&format!("/admin/v1/tenants/acme/calls/{call_id}")).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Calls stored for the tenant.
    pub async fn call_count(&self) -> usize {
        let listed: Value = self.app.admin_get("/admin/v1/tenants/acme/calls?since=0").await.json().await.unwrap();
        listed["calls"].as_array().unwrap().len()
    }
}

pub fn event(kind: &str, call: Value) -> Value {
    json!({"type": kind, "call": call})
}

pub fn started(call_id: &str, from: &str) -> Value {
    event(
        "call.started",
        json!({"call_id": call_id, "direction": "inbound", "from": from, "to": "02873001234",
               "started_at": "2026-12-01T09:00:00+07:00", "agent": {"id": "a7", "name": "Mai"}}),
    )
}

/// The four events of a whole answered call.
pub fn whole_call(call_id: &str, from: &str) -> Vec<Value> {
    vec![
        started(call_id, from),
        event("call.answered", json!({"call_id": call_id, "answered_at": "2026-12-01T02:00:05Z"})),
        event("call.ended", json!({"call_id": call_id, "ended_at": "2026-12-01T02:03:05Z", "end_reason": "completed"})),
        event(
            "call.finalized",
            json!({"call_id": call_id, "duration_secs": 180, "disposition": "sale",
                   "recording_url": "https://rec.example.com/x.mp3", "notes": "Wants a quote"}),
        ),
    ]
}

#[tokio::test]
async fn a_ringing_phone_pops_the_callers_card_in_every_number_format() {
    let centre = CallCentre::start().await;
    for (i, number) in
        ["0912345678", "84912345678", "+84 912 345 678", "0084912345678", "0912.345.678 ext 12"].into_iter().enumerate()
    {
        let answer = centre.accept(&started(&format!("pop-{i}"), number)).await;
        let pop = &answer["call"]["screen_pop"];
        assert_eq!(pop["match"], "one", "{number}: {answer}");
        assert_eq!(pop["contacts"][0]["id"], centre.lan.as_str(), "{number}");
        assert_eq!(pop["contacts"][0]["name"], "Lan Nguyen");
        assert_eq!(pop["contacts"][0]["company"], "Lotus Trading");
        assert_eq!(answer["call"]["contact_id"], centre.lan.as_str());
    }
    // Renumbered in 2018: 0168 → 038. Lan's colleague is stored under the new number.
    let colleague = centre.sim.insert_record("Contacts", [("lastname", "Tran"), ("phone", "0381234567")]);
    let answer = centre.accept(&started("pop-old", "01681234567")).await;
    assert_eq!(answer["call"]["screen_pop"]["contacts"][0]["id"], colleague.as_str(), "{answer}");
}

#[tokio::test]
async fn no_match_offers_a_create_contact_link_and_withheld_numbers_ask_nothing() {
    let centre = CallCentre::start().await;
    let answer = centre.accept(&started("c-none", "0987654321")).await;
    let pop = &answer["call"]["screen_pop"];
    assert_eq!(pop["match"], "none", "{answer}");
    assert_eq!(pop["create_contact"]["method"], "POST");
    assert!(pop["create_contact"]["url"].as_str().unwrap().ends_with("/t/acme/contacts"), "{pop}");
    assert_eq!(pop["create_contact"]["phone"], "+84987654321");

    let before = centre.sim.request_count();
    for (i, withheld) in ["anonymous", "", "Private"].into_iter().enumerate() {
        let answer = centre.accept(&started(&format!("c-anon-{i}"), withheld)).await;
        assert_eq!(answer["call"]["screen_pop"]["match"], "none", "{withheld:?}: {answer}");
        assert_eq!(answer["call"]["facts"]["from"], "anonymous");
    }
    assert_eq!(centre.sim.request_count(), before, "a withheld number costs no CRM call");
}

#[tokio::test]
async fn concurrent_pops_for_one_number_make_one_lookup_and_repeats_are_cached() {
    let centre = Arc::new(CallCentre::start().await);
    // Warm the session so that only lookups are counted.
    centre.accept(&started("warm", "0900000001")).await;
    let before = centre.sim.operation_count("query");
    let pops: Vec<_> = (0..10)
        .map(|i| {
            let centre = centre.clone();
            tokio::spawn(async move { centre.accept(&started(&format!("burst-{i}"), "0912345678")).await })
        })
        .collect();
    for pop in pops {
        assert_eq!(pop.await.unwrap()["call"]["screen_pop"]["match"], "one");
    }
    let lookups = centre.sim.operation_count("query") - before;
    assert!(lookups >= 1, "the lookup reached the CRM");
    let one_lookup = lookups;
    centre.accept(&started("again", "+84912345678")).await;
    assert_eq!(centre.sim.operation_count("query") - before, one_lookup, "a repeat within the TTL is cached");
    let metrics = centre.app.get_metrics().await;
    assert!(metrics.contains("crmhub_screen_pop_duration_seconds_count{source=\"cache\"}"), "{metrics}");
    // One lookup is whatever one find_by_phone of a number stored the same way costs.
    // (a contact with a company not seen before: its name costs a query too).
    let account = centre.sim.insert_record("Accounts", [("accountname", "Hoa Co")]);
    centre.sim.insert_record("Contacts", [("lastname", "Hoa"), ("mobile", "0933 333 333"), ("account_id", &account)]);
    let single = {
        let before = centre.sim.operation_count("query");
        centre.accept(&started("other", "0933333333")).await;
        centre.sim.operation_count("query") - before
    };
    assert_eq!(one_lookup, single, "ten concurrent pops cost what one does");
}

#[tokio::test]
async fn a_whole_call_lands_as_one_held_event_with_the_final_facts() {
    let centre = CallCentre::start().await;
    for event in whole_call("c-1", "0912345678") {
        centre.accept(&event).await;
    }
    let report = centre.app.drain_jobs().await;
    assert_eq!((report.dead, report.pending), (0, 0), "{report:?}");
    let logs = centre.logs_of("c-1");
    assert_eq!(logs.len(), 1, "{logs:?}");
    let log = &logs[0];
    assert_eq!(log["eventstatus"], "Held");
    assert_eq!(log["activitytype"], "Call");
    assert_eq!(log["contact_id"], centre.lan);
    assert!(log["description"].contains("Wants a quote"), "{log:?}");
    assert!(log["description"].contains("https://rec.example.com/x.mp3"), "{log:?}");
    assert!(log["description"].contains("Disposition: sale"), "{log:?}");
    let view = centre.call_admin("c-1").await;
    assert_eq!(view["crm"]["record_id"], log["id"].as_str());
    assert_eq!((view["phase"].as_str(), view["crm"]["up_to_date"].as_bool()), (Some("finalized"), Some(true)));
    let effects: Vec<&str> = view["events"].as_array().unwrap().iter().map(|e| e["effect"].as_str().unwrap()).collect();
    assert_eq!(effects, ["applied"; 4]);
}

#[tokio::test]
async fn every_order_and_duplicate_of_the_events_makes_one_record() {
    let centre = CallCentre::start().await;
    let orders: [[usize; 4]; 5] = [[3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2], [0, 2, 1, 3], [3, 0, 1, 2]];
    for (n, order) in orders.iter().enumerate() {
        let call_id = format!("order-{n}");
        let events = whole_call(&call_id, "0912345678");
        for &i in order {
            centre.accept(&events[i]).await;
            // Jobs run between some events, as they would in production.
            if i % 2 == 0 {
                centre.app.drain_jobs().await;
            }
            centre.accept(&events[i]).await;
        }
        let report = centre.app.drain_jobs().await;
        assert_eq!((report.dead, report.pending), (0, 0), "{order:?}: {report:?}");
        let logs = centre.logs_of(&call_id);
        assert_eq!(logs.len(), 1, "{order:?}: {logs:?}");
        assert_eq!(logs[0]["eventstatus"], "Held", "{order:?}");
        let view = centre.call_admin(&call_id).await;
        assert_eq!(view["phase"], "finalized", "{order:?}");
        let applied = view["events"].as_array().unwrap().iter().filter(|e| e["effect"] == "applied").count();
        assert!(applied <= 4, "an event's repeat is a duplicate (or stale), never applied again: {view}");
        assert_eq!(view["events"].as_array().unwrap().len(), 8);
    }
}

#[tokio::test]
async fn the_same_event_five_times_is_stored_once() {
    let centre = CallCentre::start().await;
    centre.accept(&started("five", "0912345678")).await;
    let answered = event("call.answered", json!({"call_id": "five", "answered_at": 1_796_090_000}));
    let effects: Vec<Value> = {
        let mut out = Vec::new();
        for _ in 0..5 {
            out.push(centre.accept(&answered).await["effect"].clone());
        }
        out
    };
    assert_eq!(
        effects,
        [json!("applied"), json!("duplicate"), json!("duplicate"), json!("duplicate"), json!("duplicate")]
    );
    let jobs: Value = centre.app.admin_get("/admin/v1/jobs?kind=call.log").await.json().await.unwrap();
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(1), "one log job: {jobs}");
    centre.app.drain_jobs().await;
    assert_eq!(centre.logs_of("five").len(), 1);
    assert_eq!(centre.logs_of("five")[0]["eventstatus"], "Planned", "a pre-log while the call runs");
}

#[tokio::test]
async fn two_concurrent_starts_make_one_call_row() {
    let centre = Arc::new(CallCentre::start().await);
    let both: Vec<_> = (0..2)
        .map(|_| {
            let centre = centre.clone();
            tokio::spawn(async move { centre.accept(&started("twin", "0912345678")).await })
        })
        .collect();
    let mut effects = Vec::new();
    for answer in both {
        let answer = answer.await.unwrap();
        assert_eq!(answer["call"]["screen_pop"]["match"], "one", "{answer}");
        effects.push(answer["effect"].as_str().unwrap().to_owned());
    }
    effects.sort();
    assert_eq!(effects, ["applied", "duplicate"]);
    assert_eq!(centre.call_count().await, 1);
}

#[tokio::test]
async fn an_end_before_the_start_is_logged_and_the_late_start_moves_nothing_back() {
    let centre = CallCentre::start().await;
    let ended = event(
        "call.ended",
        json!({"call_id": "early-end", "from": "0912345678", "direction": "inbound", "duration_secs": 42,
               "end_reason": "completed"}),
    );
    let answer = centre.accept(&ended).await;
    assert_eq!(answer["call"]["phase"], "ended");
    let late = centre.accept(&started("early-end", "0912345678")).await;
    assert_eq!((late["effect"].as_str(), late["call"]["phase"].as_str()), (Some("stale"), Some("ended")), "{late}");
    let report = centre.app.drain_jobs().await;
    assert_eq!((report.dead, report.pending), (0, 0));
    let logs = centre.logs_of("early-end");
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["eventstatus"], "Held");
    assert_eq!(logs[0]["contact_id"], centre.lan, "matched by the log job, as no pop ran first");
}

#[tokio::test]
async fn a_log_while_the_crm_is_down_lands_once_it_is_back() {
    let centre = CallCentre::start().await;
    centre.accept(&started("outage", "0912345678")).await;
    centre.sim.set_fault(Fault::Http500Empty);
    for event in whole_call("outage", "0912345678").into_iter().skip(1) {
        centre.accept(&event).await;
    }
    let report = centre.app.drain_jobs().await;
    assert_eq!(report.dead, 0, "an outage is retried, not dead: {report:?}");
    assert!(centre.logs_of("outage").is_empty());
    centre.sim.clear_fault();
    let jobs: Value = centre.app.admin_get("/admin/v1/jobs?kind=call.log").await.json().await.unwrap();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1, "one job waits out its backoff: {jobs}");
    assert!(jobs["jobs"][0]["last_error"].as_str().unwrap().contains("unavailable"), "{jobs}");
    centre.clock.advance(std::time::Duration::from_secs(3_600));
    let report = centre.app.drain_jobs().await;
    assert_eq!((report.dead, report.pending), (0, 0), "{report:?}");
    assert_eq!(centre.logs_of("outage").len(), 1);
    assert_eq!(centre.logs_of("outage")[0]["eventstatus"], "Held");
}

#[tokio::test]
async fn a_contact_deleted_since_the_pop_still_gets_the_call_logged() {
    let centre = CallCentre::start().await;
    centre.accept(&started("refused", "0912345678")).await;
    // The contact disappears from the CRM between the pop and the log: the call is still
    // logged, unlinked, rather than lost.
    centre.sim.delete_record(&centre.lan);
    centre.accept(&event("call.ended", json!({"call_id": "refused", "duration_secs": 3}))).await;
    let report = centre.app.drain_jobs().await;
    assert_eq!((report.dead, report.pending), (0, 0), "{report:?}");
    let logs = centre.logs_of("refused");
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].get("contact_id").map(String::as_str).unwrap_or(""), "");
}

#[tokio::test]
async fn bad_events_are_refused_with_their_reason_and_nothing_is_written() {
    let centre = CallCentre::start().await;
    let cases = [
        (json!({"type": "call.exploded", "call": {"call_id": "x"}}), 422, "type"),
        (event("call.started", json!({"from": "0912345678"})), 422, "call.call_id"),
        (event("call.started", json!({"call_id": "x".repeat(201)})), 422, "call.call_id"),
        (event("call.started", json!({"call_id": "bad-number", "from": "09abc!"})), 422, "call.from"),
        (
            event("call.ended", json!({"call_id": "r", "recording_url": "http://rec.example.com/1"})),
            422,
            "call.recording_url",
        ),
    ];
    for (body, status, field) in cases {
        let response = centre.post(&body).await;
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["field"], field, "{error}");
        if field == "type" {
            assert!(error["error"]["message"].as_str().unwrap().contains("call.exploded"), "{error}");
        }
    }
    let not_json = centre.post_raw(Some(&centre.key), "call.started please").await;
    assert_eq!(not_json.status(), 400);
    let huge = format!(r#"{{"type":"call.started","call":{{"call_id":"big","notes":"{}"}}}}"#, "x".repeat(2 << 20));
    let too_big = centre.post_raw(Some(&centre.key), huge).await;
    assert_eq!(too_big.status(), 413);
    assert_eq!(centre.call_count().await, 0, "nothing was stored");
    let jobs: Value = centre.app.admin_get("/admin/v1/jobs?kind=call.log").await.json().await.unwrap();
    assert_eq!(jobs["jobs"], json!([]));
    let metrics = centre.app.get_metrics().await;
    let line =
        metrics.lines().find(|l| l.starts_with("crmhub_call_events_total{kind=\"unknown\",outcome=\"invalid\"}"));
    assert_eq!(
        line.map(|l| l.rsplit(' ').next().unwrap()),
        Some("2"),
        "the unknown type and the non-JSON body: {metrics}"
    );
}

#[tokio::test]
async fn wrong_revoked_and_other_tenants_keys_are_refused_alike() {
    let centre = CallCentre::start().await;
    centre.app.create_tenant("other").await;
    let theirs = centre
        .app
        .admin_send(Method::POST, "/admin/v1/tenants/other/channel-keys", &json!({"name": "pbx", "scopes": ["calls"]}))
        .await
        .json::<Value>()
        .await
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let widget = centre
        .app
        .admin_send(
            Method::POST,
            "/admin/v1/tenants/acme/channel-keys",
            &json!({"name": "widget", "scopes": ["widget"]}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = centre
        .app
        .admin_send(Method::POST, "/admin/v1/tenants/acme/channel-keys", &json!({"name": "old", "scopes": ["calls"]}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let path = format!("/admin/v1/tenants/acme/channel-keys/{}", revoked["id"].as_str().unwrap());
    centre.app.admin_send(Method::DELETE, &path, &json!({})).await;
    let body = started("k", "0912345678").to_string();
    let missing = centre.post_raw(None, body.clone()).await;
    assert_eq!(missing.status(), 401);
    let mut answers = Vec::new();
    for key in
        ["crmhub_wrongwrongwrongwrongwrongwrongwrongwrongwrong", &theirs, &widget, revoked["key"].as_str().unwrap()]
    {
        let response = centre.post_raw(Some(key), body.clone()).await;
        answers.push((response.status().as_u16(), response.text().await.unwrap()));
    }
    assert!(answers.iter().all(|a| a == &answers[0] && a.0 == 403), "{answers:?}");
    assert_eq!(centre.call_count().await, 0);
}

#[tokio::test]
async fn sms_events_become_one_note_on_the_contact() {
    let centre = CallCentre::start().await;
    let sms = json!({"type": "sms.sent", "sms": {"message_id": "m-1", "to": "+84 912 345 678", "text": "Your quote is ready",
                     "at": "2026-12-01T03:00:00Z", "agent": {"name": "Mai"}}});
    assert_eq!(centre.accept(&sms).await["effect"], "applied");
    assert_eq!(centre.accept(&sms).await["effect"], "duplicate");
    let report = centre.app.drain_jobs().await;
    assert_eq!((report.dead, report.pending), (0, 0), "{report:?}");
    let notes: Vec<_> =
        centre.sim.records("ModComments").into_iter().filter(|n| n.get("related_to") == Some(&centre.lan)).collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0]["commentcontent"].contains("Your quote is ready"), "{notes:?}");
    assert!(notes[0]["commentcontent"].starts_with("SMS sent to +84 912 345 678 by Mai"), "{notes:?}");
}

const LOOKUP_ONLY_TEMPLATE: &str = r#"
name: lookup-only
type: crm
fields: [{ name: token, secret: true, required: true }]
contact: { id: /id, name: /name }
endpoints:
  - name: by-phone
    kind: get_data
    trigger: contact.find_by_phone
    url: "{{host}}/contacts"
    parameters:
      - { name: phone, kind: query, value: "{{input.phone}}" }
      - { name: Authorization, kind: header, value: "Bearer {{credential.token}}" }
    response: { records: /data }
"#;

#[tokio::test]
async fn an_unconfigured_channel_and_a_connector_without_call_logs_are_clear() {
    let centre = CallCentre::start().await;
    let removed = centre.app.admin_delete("/admin/v1/tenants/acme/channels/calls").await;
    assert_eq!(removed.status(), 204);
    let response = centre.post(&started("off", "0912345678")).await;
    let (code, message, _) = error_of(response).await;
    assert_eq!(code, "not_found");
    assert!(message.contains("not configured"), "{message}");

    // A CRM that can find callers but not log calls or keep notes: refused at request time,
    // never a job that could only die later.
    centre.app.publish_template(LOOKUP_ONLY_TEMPLATE).await;
    let body = json!({"name": "Lookup", "kind": "template:lookup-only", "host": "http://127.0.0.1:9",
                      "credentials": {"token": "t0k3n-value"}});
    let connection = centre.app.create_connection("acme", &body).await;
    let channel = json!({"connection_id": connection});
    let configured = centre.app.admin_send(Method::PUT, "/admin/v1/tenants/acme/channels/calls", &channel).await;
    assert_eq!(configured.status(), 200, "{}", configured.text().await.unwrap());
    let answered = event("call.answered", json!({"call_id": "cannot-log"}));
    let (code, message, _) = error_of(centre.post(&answered).await).await;
    assert_eq!((code.as_str(), message.contains("call.log")), ("unsupported", true), "{message}");
    let sms = json!({"type": "sms.received", "sms": {"message_id": "m", "from": "0912345678", "text": "hi"}});
    let (code, message, _) = error_of(centre.post(&sms).await).await;
    assert_eq!((code.as_str(), message.contains("note.create")), ("unsupported", true), "{message}");
    assert_eq!(centre.call_count().await, 0, "nothing was stored");
    let jobs: Value = centre.app.admin_get("/admin/v1/jobs").await.json().await.unwrap();
    assert_eq!(jobs["jobs"], json!([]));
}

#[tokio::test]
async fn a_crm_that_refuses_the_write_leaves_a_dead_letter_with_the_reason_that_can_be_redriven() {
    let centre = CallCentre::start().await;
    // The tenant's Vtiger administrator made a field of Events mandatory that crmhub does not
    // fill: every call log is refused until they relent.
    assert!(centre.sim.make_mandatory("Events", "location"));
    for event in whole_call("refused", "0912345678") {
        centre.accept(&event).await;
    }
    let report = centre.app.drain_jobs().await;
    assert_eq!((report.dead, report.pending), (1, 0), "a refusal is not retried: {report:?}");
    let view = centre.call_admin("refused").await;
    assert_eq!(view["crm"]["up_to_date"], false);
    assert_eq!(view["jobs"][0]["status"], "dead", "{view}");
    let reason = view["jobs"][0]["last_error"].as_str().unwrap();
    assert!(reason.contains("location does not have a value"), "{reason}");
    assert!(centre.logs_of("refused").is_empty());

    centre.sim.make_optional("Events", "location");
    let redriven = centre.app.admin_send(Method::POST, "/admin/v1/tenants/acme/jobs/redrive", &json!({})).await;
    assert_eq!(redriven.json::<Value>().await.unwrap()["redriven"], 1);
    let report = centre.app.drain_jobs().await;
    assert_eq!((report.dead, report.pending), (0, 0), "{report:?}");
    let logs = centre.logs_of("refused");
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["eventstatus"], "Held");
    assert_eq!(centre.call_admin("refused").await["crm"]["up_to_date"], true);
}

#[tokio::test]
async fn a_pop_links_the_social_inbox_card_of_the_same_connection() {
    let centre = CallCentre::start().await;
    let without = centre.accept(&started("no-card", "0912345678")).await;
    assert_eq!(without["call"]["screen_pop"]["contacts"][0]["card_url"], Value::Null, "no card secret, no URL");
    let connection = centre.app.admin_get("/admin/v1/tenants/acme/channels/calls").await.json::<Value>().await.unwrap()
        ["connection_id"]
        .clone();
    let inbox = json!({"connection_id": connection, "secret": "changeme!"});
    let configured = centre.app.admin_send(Method::PUT, "/admin/v1/tenants/acme/channels/social-inbox", &inbox).await;
    assert_eq!(configured.status(), 200);
    let with = centre.accept(&started("card", "0912345678")).await;
    let url = with["call"]["screen_pop"]["contacts"][0]["card_url"].as_str().unwrap().to_owned();
    assert!(url.contains("/t/acme/social/iframe?id=") && url.contains("&sig="), "{url}");
    // The URL starts with `server.public_url`, which tests leave at the listen address (port 0).
    let path = &url[url.find("/t/").unwrap()..];
    let card = centre.app.client.get(centre.app.url(path)).send().await.unwrap();
    assert_eq!(card.status(), 200, "{url}");
    assert!(card.text().await.unwrap().contains("Lan Nguyen"));
}
