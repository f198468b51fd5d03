use super::{Api, assert_500_empty, contact, err, ok, pair};

#[tokio::test]
async fn json_bodies_die_with_an_empty_500() {
    let api = Api::start().await;
    let session = api.login().await;
    let response = api
        .http
        .post(api.url())
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"operation":"create","sessionName":"{session}","elementType":"Contacts","element":{{"lastname":"X"}}}}"#
        ))
        .send()
        .await
        .expect("POST");
    assert_500_empty(response).await;
    // Even with the operation in the query string.
    let response = api
        .http
        .post(format!("{}?operation=listtypes&sessionName={session}", api.url()))
        .header("content-type", "application/json; charset=utf-8")
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_500_empty(response).await;
    assert!(api.sim.records("Contacts").is_empty());
}

#[tokio::test]
async fn unknown_or_missing_operations_die_with_an_empty_500() {
    let api = Api::start().await;
    assert_500_empty(api.raw_get(&[("operation", "nosuchop")]).await).await;
    assert_500_empty(api.raw_get(&[]).await).await;
    assert_500_empty(api.raw_post(&[("operation", "")]).await).await;
    // Built-ins this simulator does not model behave as unknown.
    assert_500_empty(api.raw_post(&[("operation", "convertlead")]).await).await;
    // Operation names are case-insensitive.
    ok(&api.get(&[("operation", "GetChallenge"), ("username", "admin")]).await);
}

#[tokio::test]
async fn get_type_parameters_come_from_the_query_string_only() {
    let api = Api::start().await;
    let session = api.login().await;
    let id = api.sim.insert_record("Contacts", [("lastname", "Placed")]);
    // retrieve sent as POST: `id` in the body is not read.
    let v = api.post(&[("operation", "retrieve"), ("sessionName", &session), ("id", &id)]).await;
    assert_eq!(err(&v), pair("ACCESS_DENIED", "Permission to perform the operation is denied for id"));
    // query sent as POST.
    let v = api.post(&[("operation", "query"), ("sessionName", &session), ("query", "SELECT * FROM Contacts;")]).await;
    assert_eq!(err(&v), pair("ACCESS_DENIED", "Permission to perform the operation is denied for query"));
    // operation and sessionName may come from the body while the parameters are in the URL.
    let response = api
        .http
        .post(format!("{}?id={id}", api.url()))
        .form(&[("operation", "retrieve"), ("sessionName", session.as_str())])
        .send()
        .await
        .expect("POST");
    let v = super::envelope(response).await;
    assert_eq!(ok(&v)["lastname"], "Placed");
}

#[tokio::test]
async fn post_type_parameters_come_from_the_body_only() {
    let api = Api::start().await;
    let session = api.login().await;
    let element = contact("Ada", "Lovelace").to_string();
    // create sent as GET: elementType is missing, which reads as an unknown module.
    let v = api
        .get(&[("operation", "create"), ("sessionName", &session), ("elementType", "Contacts"), ("element", &element)])
        .await;
    assert_eq!(err(&v), pair("ACCESS_DENIED", "Permission to perform the operation is denied"));
    // POST with the element in the query string and only the rest in the body.
    let response = api
        .http
        .post(format!("{}?element={}", api.url(), urlencode(&element)))
        .form(&[("operation", "create"), ("sessionName", session.as_str()), ("elementType", "Contacts")])
        .send()
        .await
        .expect("POST");
    let v = super::envelope(response).await;
    assert_eq!(err(&v), pair("MANDATORY_FIELDS_MISSING", "lastname does not have a value"));
    assert!(api.sim.records("Contacts").is_empty());
    // The same create with everything in the body works.
    ok(&api.create(&session, "Contacts", contact("Ada", "Lovelace")).await);
}

#[tokio::test]
async fn falsy_values_count_as_missing() {
    let api = Api::start().await;
    let session = api.login().await;
    let v = api.get(&[("operation", "retrieve"), ("sessionName", &session), ("id", "0")]).await;
    assert_eq!(err(&v).1, "Permission to perform the operation is denied for id");
    let v = api.get(&[("operation", "describe"), ("sessionName", &session), ("elementType", "")]).await;
    assert_eq!(err(&v).1, "Permission to perform the operation is denied for name : ");
}

#[tokio::test]
async fn base_path_prefixes_the_webservice() {
    let api = Api::start_with(|o| o.base_path = "/vtigercrm/".into()).await;
    assert!(api.sim.base_url().ends_with("/vtigercrm"));
    assert!(api.url().ends_with("/vtigercrm/webservice.php"));
    ok(&api.get(&[("operation", "getchallenge"), ("username", "admin")]).await);
    let root = format!("http://{}/webservice.php", api.sim.addr());
    let response = api.http.get(root).send().await.expect("GET");
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn multipart_bodies_are_read_like_forms() {
    let api = Api::start().await;
    let session = api.login().await;
    let element = contact("Multi", "Part").to_string();
    let body = format!(
        "--b0undary\r\nContent-Disposition: form-data; name=\"operation\"\r\n\r\ncreate\r\n\
         --b0undary\r\nContent-Disposition: form-data; name=\"sessionName\"\r\n\r\n{session}\r\n\
         --b0undary\r\nContent-Disposition: form-data; name=\"elementType\"\r\n\r\nContacts\r\n\
         --b0undary\r\nContent-Disposition: form-data; name=\"element\"\r\n\r\n{element}\r\n\
         --b0undary--\r\n"
    );
    let response = api
        .http
        .post(api.url())
        .header("content-type", "multipart/form-data; boundary=b0undary")
        .body(body)
        .send()
        .await
        .expect("POST");
    let v = super::envelope(response).await;
    assert_eq!(ok(&v)["label"], "Multi Part");
}

#[tokio::test]
async fn over_long_request_lines_are_refused_before_php() {
    let api = Api::start().await;
    let session = api.login().await;
    let in_list = (1..2000).map(|i| format!("'12x{i}'")).collect::<Vec<_>>().join(",");
    let response = api
        .raw_get(&[
            ("operation", "query"),
            ("sessionName", &session),
            ("query", &format!("SELECT id FROM Contacts WHERE id IN ({in_list});")),
        ])
        .await;
    assert_eq!(response.status(), 414);
    let short = (1..200).map(|i| format!("'12x{i}'")).collect::<Vec<_>>().join(",");
    let v = api.query(&session, &format!("SELECT id FROM Contacts WHERE id IN ({short});")).await;
    assert_eq!(ok(&v), &serde_json::json!([]));
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
