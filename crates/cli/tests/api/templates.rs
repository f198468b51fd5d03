//! Integration templates through the admin API and the CLI.

use reqwest::Method;
use serde_json::{Value, json};

use crate::binary::crmhub;
use crate::helpers::{TestApp, error_of, spawn_app};

async fn post_template(app: &TestApp, path: &str, source: &str, content_type: &str) -> reqwest::Response {
    app.admin_post_raw(path, content_type, source).await
}

const TINY: &str = r#"
name: tiny-crm
type: crm
fields: [{ name: token, secret: true, required: true }]
contact: { id: /id, name: /name }
endpoints:
  - name: search
    kind: get_data
    trigger: contact.search
    url: "{{host}}/contacts"
    parameters:
      - { name: Authorization, kind: header, value: "Bearer {{credential.token}}" }
      - { name: q, kind: query, value: "{{input.query}}" }
    response: { records: /data }
"#;

#[tokio::test]
async fn shipped_templates_are_published_at_start() {
    let app = spawn_app().await;
    let list: Value = app.admin_get("/admin/v1/templates").await.json().await.unwrap();
    let names: Vec<&str> = list["templates"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["contactbook", "signedsms", "vtiger"]);
    let shown: Value = app.admin_get("/admin/v1/templates/vtiger").await.json().await.unwrap();
    assert_eq!(shown["latest"]["version"], 1);
    assert!(shown["latest"]["source"].as_str().unwrap().contains("getchallenge"));
    let schema = app.admin_get("/admin/v1/templates/schema").await;
    assert_eq!(schema.headers()["content-type"], "application/schema+json");
}

#[tokio::test]
async fn a_bad_template_lists_every_problem_and_stores_nothing() {
    let app = spawn_app().await;
    // Every structural problem at once (references are checked once the structure is sound).
    let bad = TINY.replace("kind: header", "kind: hedaer").replace("kind: query", "kind: qeury");
    for path in ["/admin/v1/templates", "/admin/v1/templates/check"] {
        let response = post_template(&app, path, &bad, "application/yaml").await;
        assert_eq!(response.status(), 422, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_template");
        let paths: Vec<&str> =
            body["error"]["details"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
        assert!(paths.contains(&"endpoints[0].parameters[0].kind"), "{body}");
        assert!(paths.contains(&"endpoints[0].parameters[1].kind"), "{body}");
    }
    let malformed = post_template(&app, "/admin/v1/templates", "name: [oops\n", "application/yaml").await;
    assert_eq!(malformed.status(), 422);
    assert!(malformed.text().await.unwrap().contains("malformed YAML"));
    let metadata = TINY.replace("\"{{host}}/contacts\"", "\"http://169.254.169.254/latest\"");
    let refused: Value =
        post_template(&app, "/admin/v1/templates", &metadata, "application/yaml").await.json().await.unwrap();
    assert_eq!(refused["error"]["details"][0]["path"], "endpoints[0].url", "{refused}");
    let list: Value = app.admin_get("/admin/v1/templates").await.json().await.unwrap();
    assert_eq!(list["templates"].as_array().unwrap().len(), 3, "only the shipped ones");

    let ok: Value = post_template(&app, "/admin/v1/templates/check", TINY, "text/plain").await.json().await.unwrap();
    assert_eq!((ok["ok"].as_bool(), ok["name"].as_str()), (Some(true), Some("tiny-crm")));
}

#[tokio::test]
async fn private_templates_are_visible_to_their_tenant_only() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.create_tenant("other").await;
    let created = post_template(&app, "/admin/v1/tenants/acme/templates", TINY, "application/yaml").await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.json::<Value>().await.unwrap()["scope"], "private");
    let mine: Value = app.admin_get("/admin/v1/tenants/acme/templates").await.json().await.unwrap();
    assert!(mine["templates"].as_array().unwrap().iter().any(|t| t["name"] == "tiny-crm"));
    let theirs: Value = app.admin_get("/admin/v1/tenants/other/templates").await.json().await.unwrap();
    assert!(!theirs["templates"].as_array().unwrap().iter().any(|t| t["name"] == "tiny-crm"));
    assert_eq!(app.admin_get("/admin/v1/templates/tiny-crm").await.status(), 404);

    let body =
        json!({"name": "Tiny", "kind": "template:tiny-crm", "host": "crm.example.com", "credentials": {"token": "t"}});
    assert_eq!(app.post_connection("acme", &body).await.status(), 201);
    let response = app.post_connection("other", &body).await;
    assert_eq!(response.status(), 422);
    assert_eq!(error_of(response).await.2.as_deref(), Some("kind"));

    let clash = post_template(&app, "/admin/v1/templates", TINY, "application/yaml").await;
    assert_eq!(clash.status(), 409, "a published template cannot take a private name");
}

#[tokio::test]
async fn connections_pin_their_template_version() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let missing = app
        .post_connection("acme", &json!({"name": "Book", "kind": "template:contactbook", "host": "crm.example.com", "fields": {"username": "api"}}))
        .await;
    assert_eq!(missing.status(), 422);
    assert_eq!(error_of(missing).await.2.as_deref(), Some("credentials.password"));
    let unknown = app
        .post_connection(
            "acme",
            &json!({"name": "Book", "kind": "template:contactbook", "host": "crm.example.com",
            "fields": {"username": "api", "colour": "red"}, "credentials": {"password": "p"}}),
        )
        .await;
    assert_eq!(error_of(unknown).await.2.as_deref(), Some("fields.colour"));

    let created: Value = app
        .post_connection(
            "acme",
            &json!({"name": "Book", "kind": "template:contactbook", "host": "crm.example.com",
            "fields": {"username": "api"}, "credentials": {"password": "p"}, "call_centre_id": "cc-7",
            "info": {"renderTooltip": []}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(created["template_version"], 1);
    assert_eq!(created["details"]["call_centre_id"], "cc-7");
    let id = created["id"].as_str().unwrap();

    // A new version of the template leaves the connection where it was.
    let v2 =
        include_str!("../../../../templates/contactbook.yaml").replace("label: ContactBook", "label: ContactBook 2");
    let published: Value =
        post_template(&app, "/admin/v1/templates", &v2, "application/yaml").await.json().await.unwrap();
    assert_eq!(published["version"], 2);
    let shown: Value = app.get_connection("acme", id).await.json().await.unwrap();
    assert_eq!(shown["template_version"], 1);

    let path = format!("/admin/v1/tenants/acme/connections/{id}");
    let moved: Value =
        app.admin_send(Method::PATCH, &path, &json!({"template_version": 2})).await.json().await.unwrap();
    assert_eq!(moved["template_version"], 2);
    let refused = app.admin_send(Method::PATCH, &path, &json!({"template_version": 9})).await;
    assert_eq!(refused.status(), 422);
    assert_eq!(error_of(refused).await.2.as_deref(), Some("template_version"));
}

#[tokio::test]
async fn template_connections_work_end_to_end() {
    use crmhub_sim::json_crm::{JsonCrmSimOptions, NewContact};
    use crmhub_sim::sms::SmsSimOptions;
    use crmhub_sim::vtiger::VtigerSimOptions;
    let book = crmhub_sim::json_crm::spawn(JsonCrmSimOptions::default()).await;
    book.insert_contact(NewContact::new("Red").first_name("Susan"));
    let vtiger =
        crmhub_sim::vtiger::spawn(VtigerSimOptions { admin_access_key: "vt-key".into(), ..Default::default() }).await;
    let sms = crmhub_sim::sms::spawn(SmsSimOptions::default()).await;
    let app = spawn_app().await;
    app.create_tenant("acme").await;

    let book_id = app
        .create_connection(
            "acme",
            &json!({"name": "Book", "kind": "template:contactbook", "host": book.base_url(),
        "fields": {"username": "api"}, "credentials": {"password": "api-password"}}),
        )
        .await;
    let report: Value = app
        .admin_send(Method::POST, &format!("/admin/v1/tenants/acme/connections/{book_id}/test"), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["capabilities"].as_array().unwrap().contains(&json!("contact.search")));

    let vt_id = app
        .create_connection(
            "acme",
            &json!({"name": "Vtiger", "kind": "template:vtiger", "host": vtiger.base_url(),
        "fields": {"username": "admin"}, "credentials": {"access_key": "vt-key"}}),
        )
        .await;
    let described = app
        .admin_send(
            Method::POST,
            &format!("/admin/v1/tenants/acme/connections/{vt_id}/endpoints/describe"),
            &json!({"module": "Contacts"}),
        )
        .await;
    assert_eq!(described.status(), 200);
    assert_eq!(described.json::<Value>().await.unwrap()["result"]["result"]["idPrefix"], "12");
    // By name, a triggered endpoint keeps its trigger's rules.
    let run = |endpoint: &str, inputs: Value| {
        let path = format!("/admin/v1/tenants/acme/connections/{vt_id}/endpoints/{endpoint}");
        let app = &app;
        async move { app.admin_send(Method::POST, &path, &inputs).await }
    };
    let refused = run("create-contact", json!({"last_name": "Mail", "email": "not-an-email"})).await;
    assert_eq!(refused.status(), 422);
    assert_eq!(error_of(refused).await.2.as_deref(), Some("email"));
    let missing = run("add-note", json!({"contact_id": "12x999", "body": "orphan?"})).await;
    assert_eq!(missing.status(), 404);
    assert!(vtiger.records("Contacts").is_empty() && vtiger.records("ModComments").is_empty());

    let sms_id = app
        .create_connection(
            "acme",
            &json!({"name": "SMS", "kind": "template:signedsms", "host": sms.base_url(),
        "credentials": {"api_key": "sms-key", "api_secret": "sms-secret"}}),
        )
        .await;
    let sent = app
        .admin_send(
            Method::POST,
            &format!("/admin/v1/tenants/acme/connections/{sms_id}/sms"),
            &json!({"to": "+84912345678", "text": "Hello"}),
        )
        .await;
    assert_eq!(sent.status(), 200);
    assert_eq!(sms.messages()[0].text, "Hello");
    let bad_number = app
        .admin_send(
            Method::POST,
            &format!("/admin/v1/tenants/acme/connections/{sms_id}/sms"),
            &json!({"to": "call me", "text": "x"}),
        )
        .await;
    assert_eq!(bad_number.status(), 422);
    assert_eq!(sms.messages().len(), 1);
}

#[test]
fn the_cli_checks_a_template_file() {
    let dir = tempfile::TempDir::new().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, TINY).unwrap();
    let output = crmhub().env("CRMHUB_DATA_DIR", dir.path()).args(["template", "check"]).arg(&good).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, TINY.replace("kind: header", "kind: hedaer").replace("name: tiny-crm", "name: Tiny CRM"))
        .unwrap();
    let output = crmhub().env("CRMHUB_DATA_DIR", dir.path()).args(["template", "check"]).arg(&bad).output().unwrap();
    assert!(!output.status.success());
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(listed.contains("endpoints[0].parameters[0].kind: unknown kind \"hedaer\""), "{listed}");
    assert!(listed.contains("name: must be lowercase"), "{listed}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("2 problem(s)"));
}

#[test]
fn the_cli_warns_about_vtql_that_groups_conditions() {
    let dir = tempfile::TempDir::new().unwrap();
    let check = |name: &str, source: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, source).unwrap();
        let output =
            crmhub().env("CRMHUB_DATA_DIR", dir.path()).args(["template", "check"]).arg(&file).output().unwrap();
        assert!(output.status.success(), "warnings do not fail the check: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let shipped = check("vtiger.yaml", include_str!("../../../../templates/vtiger.yaml"));
    assert!(!shipped.contains("warning"), "{shipped}");
    let grouped = TINY.replace(
        "      - { name: q, kind: query, value: \"{{input.query}}\" }",
        "      - name: q\n        kind: query\n        dialect: vtql\n        value: \"SELECT count(*) FROM Contacts WHERE (lastname LIKE {{input.query | vtql_like}} OR id IN ('12x1')) AND email = '(a)';\"",
    );
    let listed = check("grouped.yaml", &grouped);
    assert_eq!(listed.matches("warning").count(), 1, "{listed}");
    assert!(
        listed.contains("warning: endpoints[0]: parameter \"q\" (search): VTQL has no grouping parentheses"),
        "{listed}"
    );
}

#[tokio::test]
async fn the_check_endpoint_warns_about_vtql_that_groups_conditions() {
    let app = spawn_app().await;
    let grouped = TINY.replace(
        "      - { name: q, kind: query, value: \"{{input.query}}\" }",
        "      - name: q\n        kind: query\n        dialect: vtql\n        value: \"SELECT id FROM Contacts WHERE (lastname LIKE {{input.query | vtql_like}});\"",
    );
    let checked: Value =
        post_template(&app, "/admin/v1/templates/check", &grouped, "application/yaml").await.json().await.unwrap();
    assert_eq!(checked["ok"], true, "a warning does not fail the check: {checked}");
    let warnings = checked["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{checked}");
    assert!(warnings[0]["message"].as_str().unwrap().contains("no grouping parentheses"), "{checked}");
    let clean: Value =
        post_template(&app, "/admin/v1/templates/check", TINY, "application/yaml").await.json().await.unwrap();
    assert_eq!(clean["warnings"], serde_json::json!([]));
}
