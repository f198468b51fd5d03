//! Over real HTTP, with reqwest posting forms as a Unisender client does.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

struct T {
    sim: UnisenderSim,
    http: reqwest::Client,
}

impl T {
    async fn start() -> T {
        T::with(UnisenderSimOptions::default()).await
    }

    async fn with(options: UnisenderSimOptions) -> T {
        T { sim: spawn(options).await, http: reqwest::Client::new() }
    }

    fn url(&self, method: &str) -> String {
        format!("{}/en/api/{method}?format=json", self.sim.base_url())
    }

    /// POSTs `args` with the account's key in the body; the status and the JSON body.
    async fn post(&self, method: &str, args: &[(&str, &str)]) -> Value {
        let key = self.sim.api_key();
        let mut form: Vec<(&str, &str)> = vec![("api_key", key.as_str())];
        form.extend_from_slice(args);
        let response = self.http.post(self.url(method)).form(&form).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn import(&self, columns: &[&str], rows: &[&[&str]]) -> Value {
        let mut form: Vec<(String, String)> = Vec::new();
        for (c, name) in columns.iter().enumerate() {
            form.push((format!("field_names[{c}]"), (*name).to_owned()));
        }
        for (r, row) in rows.iter().enumerate() {
            for (c, cell) in row.iter().enumerate() {
                form.push((format!("data[{r}][{c}]"), (*cell).to_owned()));
            }
        }
        let args: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.post("importContacts", &args).await
    }
}

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn import_upserts_rejects_role_and_malformed_rows_and_counts_rows_per_email() {
    let t = T::start().await;
    let list = t.sim.create_list("Customers");
    let body = t
        .import(
            &["email", "Name", "email_list_ids"],
            &[
                &["ann@example.com", "Ann", &list],
                &["info@example.com", "Role", &list],
                &["not-an-email", "Bad", &list],
                &["BOB@example.com", "Bob", &list],
            ],
        )
        .await;
    let result = &body["result"];
    assert_eq!(result["total"], 4, "{body}");
    assert_eq!(result["inserted"], 2);
    assert_eq!(result["new_emails"], 2);
    assert_eq!(result["invalid"], 2);
    let log = result["log"].as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["index"], "1", "0-based, as a string");
    assert_eq!(log[0]["code"], "role_address");
    assert_eq!(log[1]["index"], "2");
    assert_eq!(log[1]["code"], "invalid_email");
    assert_eq!(t.sim.list_members(&list), vec!["ann@example.com", "bob@example.com"]);
    let ann = t.sim.contact("ANN@example.com").unwrap();
    assert_eq!(ann.fields.get("Name").map(String::as_str), Some("Ann"));
    assert_eq!(ann.status, "new");
    assert_eq!(ann.list_ids, vec![list.clone()]);

    let again = t.import(&["email", "Name"], &[&["ann@example.com", "Anna"]]).await;
    assert_eq!(again["result"]["updated"], 1, "{again}");
    assert_eq!(again["result"]["inserted"], 0);
    assert_eq!(t.sim.rows_received("ann@example.com"), 2, "an upsert repeated is still visible");
    assert_eq!(t.sim.rows_received("info@example.com"), 1, "rejected rows were received too");
    assert_eq!(t.sim.contact("ann@example.com").unwrap().fields["Name"], "Anna");
    assert_eq!(t.sim.keys_in_url(), 0);
}

#[tokio::test]
async fn import_refuses_calls_as_a_whole() {
    let t = T::start().await;
    let no_key = t.import(&["Name"], &[&["Ann"]]).await;
    assert_eq!(code(&no_key), "invalid_arg", "{no_key}");
    let unknown = t.import(&["email", "Nickname"], &[&["a@example.com", "x"]]).await;
    assert_eq!(code(&unknown), "invalid_arg", "{unknown}");
    let emails: Vec<String> = (0..501).map(|i| format!("u{i}@example.com")).collect();
    let rows: Vec<[&str; 1]> = emails.iter().map(|e| [e.as_str()]).collect();
    let row_refs: Vec<&[&str]> = rows.iter().map(|r| &r[..]).collect();
    let too_many = t.import(&["email"], &row_refs).await;
    assert_eq!(code(&too_many), "invalid_arg", "501 rows");
    assert_eq!(t.sim.contact_count(), 0);
    assert_eq!(t.sim.rows_received("u0@example.com"), 0, "a refused call receives no rows");
    let ok = t.import(&["email"], &row_refs[..500]).await;
    assert_eq!(ok["result"]["inserted"], 500, "500 rows are fine");
}

#[tokio::test]
async fn delete_rows_delete_and_phone_rows_import() {
    let t = T::start().await;
    let list = t.sim.create_list("L");
    t.sim.add_contact("old@example.com", &[&list]);
    let body = t
        .import(
            &["email", "phone", "email_list_ids", "delete"],
            &[
                &["old@example.com", "", "", "1"],
                &["", "+84 90 123 4567", &list, "0"],
                &["gone@example.com", "", "", "1"],
            ],
        )
        .await;
    assert_eq!(body["result"]["deleted"], 1, "{body}");
    assert_eq!(body["result"]["inserted"], 1);
    assert!(t.sim.contact("old@example.com").is_none());
    assert_eq!(t.sim.list_members(&list), vec!["+84 90 123 4567"]);
}

#[tokio::test]
async fn get_with_the_key_in_the_url_works_and_is_counted() {
    let t = T::start().await;
    let url = format!("{}/ru/api/getLists?format=json&api_key={}", t.sim.base_url(), t.sim.api_key());
    let body: Value = t.http.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(body, json!({"result": []}));
    assert_eq!(t.sim.keys_in_url(), 1);
    let bad_lang = t.http.post(format!("{}/de/api/getLists?format=json", t.sim.base_url())).send().await.unwrap();
    assert_eq!(bad_lang.status(), 404);
}

#[tokio::test]
async fn errors_come_with_http_200_in_the_envelope() {
    let t = T::start().await;
    let wrong_key: Value =
        t.http.post(t.url("getLists")).form(&[("api_key", "nope")]).send().await.unwrap().json().await.unwrap();
    assert_eq!(wrong_key["code"], "invalid_api_key");
    assert_eq!(wrong_key["result"], "");
    assert_eq!(code(&t.post("sendRocket", &[]).await), "unknown_method");
    t.sim.create_list("Dup");
    assert_eq!(code(&t.post("createList", &[("title", "Dup")]).await), "invalid_arg");
    let created = t.post("createList", &[("title", "Fresh")]).await;
    let id = created["result"]["id"].as_i64().unwrap().to_string();
    let lists = t.post("getLists", &[]).await;
    assert_eq!(lists["result"][1], json!({"id": id.parse::<i64>().unwrap(), "title": "Fresh"}));
    let absent = t.post("exclude", &[("contact_type", "email"), ("contact", "x@example.com")]).await;
    assert_eq!(absent, json!({"error": "Contact \"x@example.com\" not found", "code": "unspecified", "result": ""}));
    let unknown = t.post("getContact", &[("email", "x@example.com")]).await;
    assert_eq!(code(&unknown), "unspecified");
    assert_eq!(code(&t.post("exclude", &[("contact_type", "fax"), ("contact", "1")]).await), "invalid_arg");
    let fields = t.post("getFields", &[]).await;
    assert_eq!(fields["result"][0]["name"], "Name");
}

#[tokio::test]
async fn exclude_removes_from_lists_and_get_contact_shows_them() {
    let t = T::start().await;
    let (a, b) = (t.sim.create_list("A"), t.sim.create_list("B"));
    t.sim.add_contact("ann@example.com", &[&a, &b]);
    let got =
        t.post("getContact", &[("email", "ann@example.com"), ("include_lists", "1"), ("include_fields", "1")]).await;
    let contact = &got["result"]["email"];
    assert_eq!(contact["email"], "ann@example.com", "{got}");
    assert_eq!(contact["lists"].as_array().unwrap().len(), 2);
    assert!(contact["added_at"].as_str().unwrap().len() == 19);
    let ok = t.post("exclude", &[("contact_type", "email"), ("contact", "ann@example.com"), ("list_ids", &a)]).await;
    assert!(ok.get("error").is_none(), "{ok}");
    assert_eq!(t.sim.contact("ann@example.com").unwrap().list_ids, vec![b.clone()]);
    let twice = t.post("exclude", &[("contact_type", "email"), ("contact", "ann@example.com"), ("list_ids", &a)]).await;
    assert_eq!(code(&twice), "unspecified", "no longer in A");
    let all = t.post("exclude", &[("contact_type", "email"), ("contact", "ann@example.com")]).await;
    assert!(all.get("error").is_none());
    assert!(t.sim.list_members(&b).is_empty());
    assert!(t.sim.contact("ann@example.com").is_some(), "exclude never deletes");
}

#[tokio::test]
async fn export_pages_with_offset_and_limit() {
    let t = T::start().await;
    let list = t.sim.create_list("L");
    for i in 0..5 {
        t.sim.add_contact(&format!("u{i}@example.com"), &[&list]);
    }
    t.sim.add_contact("other@example.com", &[]);
    let page = t
        .post(
            "exportContacts",
            &[
                ("list_id", &list),
                ("field_names[0]", "email"),
                ("field_names[1]", "email_status"),
                ("offset", "3"),
                ("limit", "10"),
            ],
        )
        .await;
    assert_eq!(page["result"]["field_names"], json!(["email", "email_status"]));
    assert_eq!(page["result"]["data"], json!([["u3@example.com", "new"], ["u4@example.com", "new"]]));
    assert_eq!(code(&t.post("exportContacts", &[("limit", "1001")]).await), "invalid_arg");
}

#[tokio::test]
async fn the_per_key_limit_answers_with_its_code() {
    let t = T::with(UnisenderSimOptions {
        rate_limit: Some(3),
        rate_window: Duration::from_millis(400),
        ..UnisenderSimOptions::default()
    })
    .await;
    for _ in 0..3 {
        assert!(t.post("getLists", &[]).await.get("error").is_none());
    }
    assert_eq!(code(&t.post("getLists", &[]).await), "api_call_limit_exceeded_for_api_key");
    assert_eq!(t.sim.rate_limited(), 1);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(t.post("getLists", &[]).await.get("error").is_none(), "a new window");
}

#[tokio::test]
async fn account_states_refuse_every_call() {
    let t = T::start().await;
    t.sim.set_account_state(AccountState::NotEnoughMoney);
    assert_eq!(code(&t.post("getLists", &[]).await), "not_enough_money");
    t.sim.set_account_state(AccountState::AccessDenied);
    assert_eq!(code(&t.post("getLists", &[]).await), "access_denied");
    t.sim.set_account_state(AccountState::Active);
    assert!(t.post("getLists", &[]).await.get("error").is_none());
}

#[tokio::test]
async fn faults_hit_the_next_requests() {
    let t = T::start().await;
    t.sim.set_fault(Fault::RetryLater, 1);
    assert_eq!(code(&t.post("getLists", &[]).await), "retry_later");
    t.sim.set_fault(Fault::IpLimit, 1);
    assert_eq!(code(&t.post("getLists", &[]).await), "api_call_limit_exceeded_for_ip");
    t.sim.set_fault(Fault::Status(503), 1);
    assert_eq!(t.http.post(t.url("getLists")).send().await.unwrap().status(), 503);
    t.sim.set_fault(Fault::NonJson, 1);
    let html = t.http.post(t.url("getLists")).send().await.unwrap();
    assert_eq!(html.status(), 200);
    assert!(html.json::<Value>().await.is_err());
    t.sim.set_fault(Fault::Hang, 1);
    let hung = t.http.post(t.url("getLists")).timeout(Duration::from_millis(200)).send().await;
    assert!(hung.is_err_and(|e| e.is_timeout()));
    t.sim.set_fault(Fault::LostAnswer, 1);
    let key = t.sim.api_key();
    let lost = t
        .http
        .post(t.url("importContacts"))
        .form(&[("api_key", key.as_str()), ("field_names[0]", "email"), ("data[0][0]", "lost@example.com")])
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(lost.is_err());
    assert!(t.sim.contact("lost@example.com").is_some(), "processed although unanswered");
    assert!(t.post("getLists", &[]).await.get("error").is_none());
}

#[tokio::test]
async fn random_faults_follow_their_seed() {
    async fn run(seed: u64) -> Vec<bool> {
        let t = T::start().await;
        t.sim.set_random_faults(0.2, seed);
        let mut failed = Vec::new();
        for _ in 0..50 {
            let response = t.http.post(t.url("getLists")).form(&[("api_key", t.sim.api_key())]).send().await.unwrap();
            let body: Option<Value> = if response.status() == 200 { response.json().await.ok() } else { None };
            failed.push(body.is_none_or(|b| b.get("error").is_some()));
        }
        failed
    }
    let (a, b) = (run(7).await, run(7).await);
    assert_eq!(a, b, "one seed, one sequence");
    let faults = a.iter().filter(|f| **f).count();
    assert!((3..=20).contains(&faults), "about 20 % of 50: {faults}");
}
