//! The template format's refusals: every bad input names its path.

use super::*;
use crate::http::AddressPolicy;

fn check(source: &str) -> Result<Template, Vec<String>> {
    parse(source, SourceFormat::detect(source), &AddressPolicy::default())
        .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

const MINIMAL: &str = r#"
name: tiny
type: crm
fields:
  - { name: token, secret: true, required: true }
contact: { id: /id, name: /name }
endpoints:
  - name: search
    kind: get_data
    trigger: contact.search
    method: GET
    url: "{{host}}/contacts"
    parameters:
      - { name: Authorization, kind: header, value: "Bearer {{credential.token}}" }
      - { name: q, kind: query, value: "{{input.query}}" }
    response: { records: /data }
"#;

#[test]
fn shipped_templates_parse() {
    for (name, source) in [
        ("vtiger", include_str!("../../../../templates/vtiger.yaml")),
        ("contactbook", include_str!("../../../../templates/contactbook.yaml")),
        ("signedsms", include_str!("../../../../templates/signedsms.yaml")),
    ] {
        let template = check(source).unwrap_or_else(|e| panic!("{name}: {e:#?}"));
        assert_eq!(template.name, name);
    }
    check(MINIMAL).unwrap();
}

#[test]
fn vtql_parameters_that_group_conditions_are_warned_about() {
    let vtiger = check(include_str!("../../../../templates/vtiger.yaml")).unwrap();
    assert_eq!(warnings(&vtiger), [], "the shipped Vtiger template writes flat VTQL");
    let grouped = MINIMAL.replace(
        "      - { name: q, kind: query, value: \"{{input.query}}\" }",
        "      - name: q\n        kind: query\n        dialect: vtql\n        value: \"SELECT * FROM Contacts WHERE (lastname LIKE {{input.query | vtql_like}}) OR id IN ('12x1');\"",
    );
    let listed: Vec<String> = warnings(&check(&grouped).unwrap()).iter().map(ToString::to_string).collect();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert!(
        listed[0].starts_with("endpoints[0]: parameter \"q\" (search): VTQL has no grouping parentheses"),
        "{listed:#?}"
    );
    let undeclared = grouped.replace("        dialect: vtql\n", "");
    assert_eq!(warnings(&check(&undeclared).unwrap()), [], "only declared VTQL is read as VTQL");
    let errors = check(&grouped.replace("dialect: vtql", "dialect: sql")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("unknown dialect \"sql\"; expected one of vtql")), "{errors:#?}");
}

#[test]
fn card_lookups_read_through_get_data_endpoints() {
    let vtiger = include_str!("../../../../templates/vtiger.yaml");
    let errors = check(&vtiger.replace("endpoint: open-tickets", "endpoint: add-note")).unwrap_err();
    assert!(
        errors.contains(&"card.figures[0].endpoint: \"add-note\" is not a get_data endpoint".to_owned()),
        "{errors:#?}"
    );
    let errors = check(&vtiger.replace("endpoint: open-tickets", "endpoint: nope")).unwrap_err();
    assert!(
        errors.contains(&"card.figures[0].endpoint: references undefined endpoint \"nope\"".to_owned()),
        "{errors:#?}"
    );
    let errors = check(&vtiger.replace("inputs: { id: /account_id }", "inputs: { account: /account_id }")).unwrap_err();
    assert!(
        errors.contains(&"card.company.inputs.account: contact.get supplies no input.account".to_owned()),
        "{errors:#?}"
    );
    let errors = check(&vtiger.replace(", value: /result/accountname", "")).unwrap_err();
    assert!(errors.iter().any(|e| e.starts_with("card.company.value: is required")), "{errors:#?}");
    let errors = check(&vtiger.replace("id_prefix: 12x", "id_prefix: \"{{credential.access_key}}\"")).unwrap_err();
    assert!(errors.iter().any(|e| e.starts_with("contact.id_prefix: cannot use")), "{errors:#?}");
}

#[test]
fn company_search_needs_its_pair_and_mapping() {
    let vtiger = include_str!("../../../../templates/vtiger.yaml");
    let errors = check(&vtiger.replace("trigger: company.contacts", "trigger: ~")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("company.search and company.contacts work as a pair")), "{errors:#?}");
    let errors = check(&vtiger.replace("  name: /accountname\n", "")).unwrap_err();
    assert!(errors.iter().any(|e| e.starts_with("company.name: company.search needs")), "{errors:#?}");
    let errors =
        check(&vtiger.replace("{{input.company_ids | vtql_list}}", "{{input.query | vtql_list}}")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("company.contacts supplies no input.query")), "{errors:#?}");
}

#[test]
fn call_log_find_needs_the_create_endpoint_an_id_and_only_the_call_id() {
    let book = include_str!("../../../../templates/contactbook.yaml");
    let errors = check(&book.replace("trigger: call.log.create", "trigger: ~")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("call.log.find needs a call.log.create endpoint too")), "{errors:#?}");
    let errors = check(&book.replace("response: { id: /data/0/id }", "")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("call.log.find needs response.id")), "{errors:#?}");
    let errors = check(&book.replace(
        "value: \"{{input.call_id}}\" }\n      - { name: per_page, kind: query, value: \"1\" }",
        "value: \"{{input.record_id}}\" }",
    ))
    .unwrap_err();
    assert!(errors.iter().any(|e| e.contains("call.log.find supplies no input.record_id")), "{errors:#?}");
}

#[test]
fn json_templates_parse_too() {
    let yaml: serde_json::Value = serde_saphyr::from_str(MINIMAL).unwrap();
    check(&yaml.to_string()).unwrap();
}

#[test]
fn malformed_documents_are_refused() {
    let errors = check("name: [unclosed\n").unwrap_err();
    assert!(errors[0].starts_with("malformed YAML"), "{errors:?}");
    let errors = check("{\"name\": ").unwrap_err();
    assert!(errors[0].starts_with("malformed JSON"), "{errors:?}");
}

#[test]
fn every_error_is_listed_with_its_path() {
    let source = MINIMAL
        .replace("kind: header", "kind: hedaer")
        .replace("type: crm", "type: erp")
        .replace("method: GET", "method: FETCH");
    let errors = check(&source).unwrap_err();
    assert!(errors.contains(&r#"endpoints[0].parameters[0].kind: unknown kind "hedaer"; expected one of header, body, query, path, md5"#.to_owned()), "{errors:#?}");
    assert!(errors.iter().any(|e| e.starts_with("type: unknown type \"erp\"")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.starts_with("endpoints[0].method: unknown method \"FETCH\"")), "{errors:#?}");
    assert!(errors.len() >= 3);
}

#[test]
fn unknown_keys_and_missing_keys_are_named() {
    let errors = check(&MINIMAL.replace("method: GET", "method: GET\n    metod: GET")).unwrap_err();
    assert!(errors.iter().any(|e| e.starts_with("endpoints[0].metod: unknown key")), "{errors:#?}");
    let errors = check("type: crm\nendpoints: []\n").unwrap_err();
    assert!(errors.contains(&"name: is required".to_owned()), "{errors:#?}");
}

#[test]
fn references_must_resolve() {
    let errors = check(&MINIMAL.replace("{{credential.token}}", "{{credential.tokn}}")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("references undefined field \"tokn\"")), "{errors:#?}");
    let errors = check(&MINIMAL.replace("{{credential.token}}", "{{field.token}}")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("is secret; use {{credential.token}}")), "{errors:#?}");
    let errors = check(&MINIMAL.replace("{{input.query}}", "{{input.body}}")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("contact.search supplies no input.body")), "{errors:#?}");
    let errors = check(&MINIMAL.replace("{{credential.token}}", "{{auth.token}}")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("no auth block")), "{errors:#?}");
    let errors = check(&MINIMAL.replace("{{input.query}}", "{{steps.login.token}}")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("references undefined endpoint \"login\"")), "{errors:#?}");
}

const CHAIN: &str = r#"
name: chained
type: crm
fields: [{ name: key, secret: true }]
contact: { id: /id }
auth: { endpoint: login, token: "{{steps.login.session}}" }
endpoints:
  - name: challenge
    kind: auth
    after: login
    method: GET
    url: "{{host}}/challenge"
    outputs: { token: /token }
  - name: login
    kind: auth
    after: challenge
    method: POST
    url: "{{host}}/login"
    parameters:
      - { name: X-Sig, kind: md5, of: ["{{steps.challenge.token}}", "{{credential.key}}"] }
    outputs: { session: /session }
  - name: search
    kind: get_data
    trigger: contact.search
    url: "{{host}}/search"
    parameters: [{ name: s, kind: query, value: "{{auth.token}}" }]
    response: { records: /data }
"#;

#[test]
fn auth_chain_cycles_are_refused() {
    let errors = check(CHAIN).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("auth chain cycle: challenge → login → challenge")), "{errors:#?}");
    check(&CHAIN.replace("    after: login\n", "")).unwrap();
}

#[test]
fn the_login_account_comes_from_fields_only() {
    let source = CHAIN
        .replace("    after: login\n", "")
        .replace("fields: [{ name: key, secret: true }]", "fields: [{ name: key, secret: true }, { name: user }]");
    check(&source.replace(
        "token: \"{{steps.login.session}}\"",
        "token: \"{{steps.login.session}}\", account: \"{{field.user}}\"",
    ))
    .unwrap();
    for (account, error) in [
        ("{{credential.key}}", "auth.account: cannot use {{credential.key}} here; use field values"),
        ("{{field.usr}}", "auth.account: references undefined field \"usr\""),
    ] {
        let errors = check(&source.replace(
            "token: \"{{steps.login.session}}\"",
            &format!("token: \"{{{{steps.login.session}}}}\", account: \"{account}\""),
        ))
        .unwrap_err();
        assert!(errors.contains(&error.to_owned()), "{errors:#?}");
    }
}

#[test]
fn outputs_must_exist_and_run_first() {
    let source = CHAIN.replace("    after: login\n", "");
    let errors = check(&source.replace("{{steps.challenge.token}}", "{{steps.challenge.nonce}}")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("undefined output steps.challenge.nonce")), "{errors:#?}");
    let errors = check(&source.replace("{{auth.token}}", "{{auth.user_id}}")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("undefined output auth.user_id")), "{errors:#?}");
    let errors = check(&source.replace("    after: challenge\n", "")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("steps.challenge does not run before this point")), "{errors:#?}");
}

#[test]
fn fixed_urls_obey_the_address_policy() {
    for url in ["http://169.254.169.254/latest", "http://10.0.0.1/api", "http://[::1]/x"] {
        let errors = check(&MINIMAL.replace("\"{{host}}/contacts\"", &format!("\"{url}\""))).unwrap_err();
        assert!(
            errors.iter().any(|e| e.starts_with("endpoints[0].url:") && e.contains("allow_private")),
            "{url}: {errors:#?}"
        );
    }
    let allowed = AddressPolicy::new(vec!["10.0.0.0/8".parse().unwrap()]);
    let source = MINIMAL.replace("\"{{host}}/contacts\"", "\"http://10.0.0.1/api\"");
    parse(&source, SourceFormat::Yaml, &allowed).unwrap();
}

#[test]
fn urls_take_values_only_through_slots() {
    let errors = check(&MINIMAL.replace("{{host}}/contacts", "{{host}}/contacts/{{input.query}}")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("only {{host}} may be interpolated")), "{errors:#?}");
    let errors = check(&MINIMAL.replace("{{host}}/contacts", "{{host}}/contacts/{id}")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("slot {id} has no path parameter")), "{errors:#?}");
}

#[test]
fn triggers_need_their_response_mapping() {
    let errors = check(&MINIMAL.replace("    response: { records: /data }\n", "")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("contact.search needs response.records")), "{errors:#?}");
    let errors = check(&MINIMAL.replace("trigger: contact.search", "trigger: contact.serch")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("unknown trigger \"contact.serch\"")), "{errors:#?}");
}

#[test]
fn connection_values_check_required_and_unknown_fields() {
    let template = check(MINIMAL).unwrap();
    let err = connection_values(&template, &serde_json::Map::new(), &crmhub_core::Credentials::new()).unwrap_err();
    assert!(
        matches!(&err, crmhub_core::crm::CrmError::Validation { field, .. } if field == "credentials.token"),
        "{err:?}"
    );
    let fields = serde_json::json!({"token": "x"});
    let err = connection_values(&template, fields.as_object().unwrap(), &crmhub_core::Credentials::new()).unwrap_err();
    assert!(matches!(&err, crmhub_core::crm::CrmError::Validation { field, .. } if field == "fields.token"), "{err:?}");
    let fields = serde_json::json!({"colour": "red"});
    let err = connection_values(&template, fields.as_object().unwrap(), &crmhub_core::Credentials::new()).unwrap_err();
    assert!(
        matches!(&err, crmhub_core::crm::CrmError::Validation { field, .. } if field == "fields.colour"),
        "{err:?}"
    );
}

#[test]
fn the_published_schema_lists_what_the_reader_accepts() {
    let schema: serde_json::Value = serde_json::from_str(JSON_SCHEMA).unwrap();
    let triggers: Vec<&str> = schema["properties"]["endpoints"]["items"]["properties"]["trigger"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(triggers, Trigger::ALL.iter().map(Trigger::as_str).collect::<Vec<_>>());
    let kinds =
        &schema["properties"]["endpoints"]["items"]["properties"]["parameters"]["items"]["properties"]["kind"]["enum"];
    assert_eq!(kinds, &serde_json::json!(["header", "body", "query", "path", "md5"]));
}

#[test]
fn fixed_urls_keep_their_path_whatever_the_host_looks_like() {
    for (url, path) in [
        ("https://ü.example/abcé/{id}", "abcé"),
        ("https://crm.example.com:443/v1/{id}", "v1"),
        ("https://crm.example.com/v1/{id}", "v1"),
    ] {
        let source = MINIMAL.replace("\"{{host}}/contacts\"", &format!("\"{url}\"")).replace(
            "      - { name: q, kind: query, value: \"{{input.query}}\" }",
            "      - { name: q, kind: query, value: \"{{input.query}}\" }\n      - { name: id, kind: path, value: \"{{input.query}}\" }",
        );
        let template = check(&source).unwrap_or_else(|e| panic!("{url}: {e:#?}"));
        let first = &template.endpoints[0].url.segments[0];
        assert!(matches!(first, model::UrlSegment::Literal(l) if l == path), "{url}: {first:?}");
    }
    let errors = check(&MINIMAL.replace("\"{{host}}/contacts\"", "\"https://u:p@crm.example.com/v1\"")).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("must not contain credentials")), "{errors:#?}");
}
