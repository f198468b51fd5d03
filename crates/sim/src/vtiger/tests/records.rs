use serde_json::{Value, json};

use super::{Api, contact, err, ok, pair};

const CONTACT_KEYS: &[&str] = &[
    "salutationtype",
    "firstname",
    "contact_no",
    "phone",
    "lastname",
    "mobile",
    "account_id",
    "homephone",
    "leadsource",
    "otherphone",
    "title",
    "fax",
    "department",
    "birthday",
    "email",
    "contact_id",
    "assistant",
    "secondaryemail",
    "assistantphone",
    "donotcall",
    "emailoptout",
    "assigned_user_id",
    "reference",
    "notify_owner",
    "createdtime",
    "modifiedtime",
    "modifiedby",
    "isconvertedfromlead",
    "source",
    "starred",
    "tags",
    "portal",
    "support_start_date",
    "support_end_date",
    "mailingstreet",
    "otherstreet",
    "mailingcity",
    "othercity",
    "mailingstate",
    "otherstate",
    "mailingzip",
    "otherzip",
    "mailingcountry",
    "othercountry",
    "mailingpobox",
    "otherpobox",
    "description",
    "imagename",
    "id",
];

/// Keys of a JSON object in the order they appear in the response text.
async fn ordered_keys(api: &Api, form: &[(&str, &str)]) -> (Value, Vec<String>) {
    let text = api.raw_post(form).await.text().await.expect("body");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    let result = ok(&v).clone();
    let mut keys: Vec<(usize, String)> = result
        .as_object()
        .expect("object")
        .keys()
        .map(|k| {
            let pos = text.find(&format!("\"{k}\":")).unwrap_or(usize::MAX);
            (pos, k.clone())
        })
        .collect();
    keys.sort();
    (result, keys.into_iter().map(|(_, k)| k).collect())
}

#[tokio::test]
async fn create_returns_the_full_contact_in_field_order() {
    let api = Api::start().await;
    let session = api.login().await;
    let element = json!({
        "firstname": "Ada", "lastname": "Lovelace", "assigned_user_id": "19x1",
        "phone": "+44 20 7946 0958", "email": "ada@example.com", "donotcall": true,
        "nosuchfield": "ignored", "contact_no": "CON999", "source": "ME"
    })
    .to_string();
    let (record, keys) = ordered_keys(
        &api,
        &[("operation", "create"), ("sessionName", &session), ("elementType", "Contacts"), ("element", &element)],
    )
    .await;
    let mut expected: Vec<&str> = CONTACT_KEYS.to_vec();
    expected.push("label");
    assert_eq!(keys, expected);
    assert!(record.as_object().expect("object").values().all(Value::is_string));
    assert_eq!(record["label"], "Ada Lovelace");
    assert_eq!(record["contact_no"], "CON1");
    assert_eq!(record["source"], "WEBSERVICE");
    assert_eq!(record["createdtime"], "2023-11-14 22:13:20");
    assert_eq!(record["modifiedtime"], "2023-11-14 22:13:20");
    assert_eq!(record["modifiedby"], "19x1");
    assert_eq!(record["donotcall"], "1");
    assert_eq!(record["emailoptout"], "0");
    assert_eq!(record["mobile"], "");
    assert_eq!(record["id"], "12x1");
    assert!(record.get("nosuchfield").is_none());

    let second = api.create(&session, "Contacts", json!({"lastname": "Solo", "assigned_user_id": "19x1"})).await;
    assert_eq!(ok(&second)["contact_no"], "CON2");
    assert_eq!(ok(&second)["label"], "Solo");
    assert_eq!(ok(&second)["id"], "12x2");
}

#[tokio::test]
async fn a_field_an_administrator_made_mandatory_is_required_and_described() {
    let api = Api::start().await;
    let session = api.login().await;
    assert!(api.sim.make_mandatory("Contacts", "department"));
    assert!(!api.sim.make_mandatory("Contacts", "no_such_field"));
    let v = api.create(&session, "Contacts", json!({"lastname": "Lee", "assigned_user_id": "19x1"})).await;
    assert_eq!(err(&v), pair("MANDATORY_FIELDS_MISSING", "department does not have a value"));
    assert!(api.sim.records("Contacts").is_empty(), "nothing was stored");
    let d = api.get(&[("operation", "describe"), ("sessionName", &session), ("elementType", "Contacts")]).await;
    let department = ok(&d)["fields"].as_array().unwrap().iter().find(|f| f["name"] == "department").cloned().unwrap();
    assert_eq!((department["mandatory"].clone(), department["nullable"].clone()), (json!(true), json!(false)));
    api.sim.make_optional("Contacts", "department");
    let v = api.create(&session, "Contacts", json!({"lastname": "Lee", "assigned_user_id": "19x1"})).await;
    assert_eq!(ok(&v)["lastname"], "Lee");
}

#[tokio::test]
async fn missing_mandatory_fields_and_bad_json_are_mandatory_errors() {
    let api = Api::start().await;
    let session = api.login().await;
    let v = api.create(&session, "Contacts", json!({"firstname": "No", "assigned_user_id": "19x1"})).await;
    assert_eq!(err(&v), pair("MANDATORY_FIELDS_MISSING", "lastname does not have a value"));
    let v = api.create(&session, "Contacts", json!({"lastname": "Owner-less"})).await;
    assert_eq!(err(&v).1, "assigned_user_id does not have a value");
    let v = api
        .post(&[
            ("operation", "create"),
            ("sessionName", &session),
            ("elementType", "Contacts"),
            ("element", "{\"lastname\": \"Broken\""),
        ])
        .await;
    assert_eq!(err(&v), pair("MANDATORY_FIELDS_MISSING", "lastname does not have a value"));

    let call = json!({
        "subject": "Call", "assigned_user_id": "19x1", "date_start": "2024-05-01",
        "time_start": "10:00:00", "due_date": "2024-05-01", "duration_hours": "0",
        "eventstatus": "Held", "activitytype": "Call"
    });
    let v = api.create(&session, "Events", call.clone()).await;
    assert_eq!(err(&v), pair("MANDATORY_FIELDS_MISSING", "time_end does not have a value"));
    let mut full = call;
    full["time_end"] = json!("10:05:00");
    // "0" is a value inside an element (only top-level parameters are PHP-falsy).
    let v = api.create(&session, "Events", full).await;
    assert_eq!(ok(&v)["duration_hours"], "0");
    assert_eq!(ok(&v)["label"], "Call");
    assert!(ok(&v)["id"].as_str().expect("id").starts_with("18x"));

    let v = api
        .create(
            &session,
            "HelpDesk",
            json!({"ticket_title": "Printer", "assigned_user_id": "19x1", "ticketstatus": "Open"}),
        )
        .await;
    assert_eq!(err(&v).1, "ticketpriorities does not have a value");
}

#[tokio::test]
async fn tickets_and_notes_get_their_numbers_and_creators() {
    let api = Api::start().await;
    let session = api.login().await;
    let c = api.create(&session, "Contacts", contact("Grace", "Hopper")).await;
    let cid = ok(&c)["id"].as_str().expect("id").to_owned();
    for n in 1..=2 {
        let v = api
            .create(
                &session,
                "HelpDesk",
                json!({"ticket_title": format!("Issue {n}"), "ticketpriorities": "Urgent",
                       "ticketstatus": "Open", "assigned_user_id": "19x1", "contact_id": cid}),
            )
            .await;
        assert_eq!(ok(&v)["ticket_no"], format!("TT{n}"));
        assert_eq!(ok(&v)["label"], format!("Issue {n}"));
        assert_eq!(ok(&v)["contact_id"], cid.as_str());
    }
    let v = api
        .create(
            &session,
            "ModComments",
            json!({"commentcontent": "SMS: hi", "assigned_user_id": "19x1", "related_to": cid}),
        )
        .await;
    let note = ok(&v);
    assert!(note["id"].as_str().expect("id").starts_with("30x"));
    assert_eq!(note["creator"], "19x1");
    assert_eq!(note["label"], "SMS: hi");
    assert_eq!(note["related_to"], cid.as_str());
    // crmid is one sequence across modules.
    assert_eq!(note["id"], "30x4");
}

#[tokio::test]
async fn weak_validation_stores_what_it_is_given_and_drops_dangling_references() {
    let api = Api::start().await;
    let session = api.login().await;
    let account = api.create(&session, "Accounts", json!({"accountname": "Acme", "assigned_user_id": "19x1"})).await;
    let account_id = ok(&account)["id"].as_str().expect("id").to_owned();
    assert_eq!(ok(&account)["label"], "Acme");
    assert_eq!(ok(&account)["account_no"], "ACC1");

    let mut element = contact("Ada", "Lovelace");
    element["account_id"] = json!(account_id);
    element["leadsource"] = json!("Carrier Pigeon");
    element["email"] = json!("not-an-email");
    let v = api.create(&session, "Contacts", element).await;
    assert_eq!(ok(&v)["account_id"], account_id.as_str());
    assert_eq!(ok(&v)["leadsource"], "Carrier Pigeon");
    assert_eq!(ok(&v)["email"], "not-an-email");

    let mut element = contact("Bob", "Dangling");
    element["account_id"] = json!("11x9999");
    let v = api.create(&session, "Contacts", element).await;
    assert_eq!(ok(&v)["account_id"], "");

    // A record that is not an Accounts record does not count either.
    let mut element = contact("Carol", "Mismatch");
    element["account_id"] = json!(format!("11x{}", ok(&v)["id"].as_str().expect("id").trim_start_matches("12x")));
    let v = api.create(&session, "Contacts", element).await;
    assert_eq!(ok(&v)["account_id"], "");
}

#[tokio::test]
async fn malformed_or_foreign_references_are_refused() {
    let api = Api::start().await;
    let session = api.login().await;
    let mut element = contact("Ada", "Lovelace");
    element["account_id"] = json!("abc");
    assert_eq!(
        err(&api.create(&session, "Contacts", element).await).1,
        "Permission to perform the operation is denied for id"
    );
    let mut element = contact("Ada", "Lovelace");
    element["account_id"] = json!("12x1");
    assert_eq!(
        err(&api.create(&session, "Contacts", element).await),
        pair("REFERENCE_INVALID", "Invalid reference specified for account_id")
    );
    let mut element = contact("Ada", "Lovelace");
    element["assigned_user_id"] = json!("19x77");
    assert_eq!(
        err(&api.create(&session, "Contacts", element).await),
        pair("ACCESS_DENIED", "Cannot assign record to the given user")
    );
    let mut element = contact("Ada", "Lovelace");
    element["assigned_user_id"] = json!("20x3");
    assert_eq!(ok(&api.create(&session, "Contacts", element).await)["assigned_user_id"], "20x3");
}

#[tokio::test]
async fn retrieve_labels_and_access_denied_for_everything_missing() {
    let api = Api::start().await;
    let session = api.login().await;
    let id =
        ok(&api.create(&session, "Contacts", contact("Ada", "Lovelace")).await)["id"].as_str().expect("id").to_owned();
    let retrieve = |id: &str| {
        let id = id.to_owned();
        let (api, session) = (&api, &session);
        async move { api.get(&[("operation", "retrieve"), ("sessionName", session), ("id", &id)]).await }
    };
    let v = retrieve(&id).await;
    assert_eq!(ok(&v)["label"], "Ada Lovelace");
    assert_eq!(ok(&v)["lastname"], "Lovelace");

    let denied = pair("ACCESS_DENIED", "Permission to perform the operation is denied");
    let denied_id = pair("ACCESS_DENIED", "Permission to perform the operation is denied for id");
    assert_eq!(err(&retrieve("12x999").await), denied);
    assert_eq!(err(&retrieve("11x1").await), denied, "wrong module prefix");
    assert_eq!(err(&retrieve("10x1").await), denied, "Leads are not simulated");
    assert_eq!(err(&retrieve("abc").await), denied_id);
    assert_eq!(err(&retrieve("99x1").await), denied_id);

    let v = api.post(&[("operation", "delete"), ("sessionName", &session), ("id", &id)]).await;
    assert_eq!(ok(&v), &json!({"status": "successful"}));
    assert_eq!(err(&retrieve(&id).await), denied);
    let v = api.post(&[("operation", "delete"), ("sessionName", &session), ("id", &id)]).await;
    assert_eq!(err(&v), denied);
    let v = api
        .post(&[
            ("operation", "revise"),
            ("sessionName", &session),
            ("element", &json!({"id": id, "firstname": "X"}).to_string()),
        ])
        .await;
    assert_eq!(err(&v), denied);
    assert!(api.sim.records("Contacts").is_empty());

    // Users are readable, not writable.
    let v = retrieve("19x1").await;
    assert_eq!(ok(&v)["user_name"], "admin");
    let v = api.post(&[("operation", "delete"), ("sessionName", &session), ("id", "19x1")]).await;
    assert_eq!(err(&v), denied);
    let v = api.create(&session, "Users", json!({"user_name": "x"})).await;
    assert_eq!(err(&v), denied);
    let v = api.create(&session, "NoSuchModule", json!({})).await;
    assert_eq!(err(&v), denied);
}

#[tokio::test]
async fn update_replaces_and_revise_merges() {
    let api = Api::start().await;
    let session = api.login().await;
    let mut element = contact("Ada", "Lovelace");
    element["mobile"] = json!("+44 7700 900123");
    element["title"] = json!("Countess");
    let created = ok(&api.create(&session, "Contacts", element).await).clone();
    let id = created["id"].as_str().expect("id").to_owned();
    api.clock.advance(std::time::Duration::from_secs(60));

    // Partial update → mandatory error, record untouched.
    let v = api
        .post(&[
            ("operation", "update"),
            ("sessionName", &session),
            ("element", &json!({"id": id, "title": "Dr"}).to_string()),
        ])
        .await;
    assert_eq!(err(&v), pair("MANDATORY_FIELDS_MISSING", "lastname does not have a value"));

    // Revise merges.
    let v = api
        .post(&[
            ("operation", "revise"),
            ("sessionName", &session),
            ("element", &json!({"id": id, "title": "Dr"}).to_string()),
        ])
        .await;
    let revised = ok(&v);
    assert_eq!(revised["title"], "Dr");
    assert_eq!(revised["mobile"], "+44 7700 900123");
    assert_eq!(revised["contact_no"], "CON1");
    assert_eq!(revised["createdtime"], created["createdtime"]);
    assert_eq!(revised["modifiedtime"], "2023-11-14 22:14:20");
    assert_eq!(revised["label"], "Ada Lovelace");

    // Revise cannot blank a mandatory field.
    let v = api
        .post(&[
            ("operation", "revise"),
            ("sessionName", &session),
            ("element", &json!({"id": id, "lastname": ""}).to_string()),
        ])
        .await;
    assert_eq!(err(&v).1, "lastname does not have a value");

    // Update replaces: what the element omits is cleared, server fields stay.
    let v = api
        .post(&[
            ("operation", "update"),
            ("sessionName", &session),
            ("element", &json!({"id": id, "lastname": "King", "assigned_user_id": "19x1"}).to_string()),
        ])
        .await;
    let updated = ok(&v);
    assert_eq!(updated["lastname"], "King");
    assert_eq!(updated["firstname"], "");
    assert_eq!(updated["mobile"], "");
    assert_eq!(updated["contact_no"], "CON1");
    assert_eq!(updated["label"], "King");
    assert_eq!(api.sim.record(&id).expect("record")["lastname"], "King");

    // Ids inside the element follow the same rules.
    let v = api
        .post(&[
            ("operation", "update"),
            ("sessionName", &session),
            ("element", &json!({"id": "abc", "lastname": "X"}).to_string()),
        ])
        .await;
    assert_eq!(err(&v).1, "Permission to perform the operation is denied for id");
}

#[tokio::test]
async fn describe_and_listtypes() {
    let api = Api::start().await;
    let session = api.login().await;
    let describe = |m: &str| {
        let m = m.to_owned();
        let (api, session) = (&api, &session);
        async move { api.get(&[("operation", "describe"), ("sessionName", session), ("elementType", &m)]).await }
    };
    let v = describe("Contacts").await;
    let d = ok(&v);
    assert_eq!(d["idPrefix"], "12");
    assert_eq!(d["labelFields"], "firstname,lastname");
    assert_eq!(d["isEntity"], true);
    assert_eq!(d["createable"], true);
    let fields = d["fields"].as_array().expect("fields");
    let field = |name: &str| fields.iter().find(|f| f["name"] == name).cloned().expect(name);
    assert_eq!(field("lastname")["mandatory"], true);
    assert_eq!(field("lastname")["nullable"], false);
    assert_eq!(field("assigned_user_id")["type"]["name"], "owner");
    assert_eq!(field("account_id")["type"], json!({"name": "reference", "refersTo": ["Accounts"]}));
    assert_eq!(field("salutationtype")["type"]["picklistValues"][0], json!({"label": "Mr.", "value": "Mr."}));
    assert_eq!(field("birthday")["type"]["format"], "yyyy-mm-dd");
    assert_eq!(field("contact_no")["editable"], false);
    assert_eq!(field("id")["type"]["name"], "autogenerated");
    for f in fields {
        for key in ["name", "label", "mandatory", "type", "isunique", "nullable", "editable", "default"] {
            assert!(f.get(key).is_some(), "{key} in {f}");
        }
    }
    assert_eq!(ok(&describe("HelpDesk").await)["labelFields"], "title");
    assert_eq!(ok(&describe("ModComments").await)["idPrefix"], "30");
    assert_eq!(ok(&describe("Users").await)["createable"], false);
    assert_eq!(
        err(&describe("contacts").await),
        pair("ACCESS_DENIED", "Permission to perform the operation is denied for name : contacts")
    );
    assert_eq!(
        err(&describe("NoSuchModule").await).1,
        "Permission to perform the operation is denied for name : NoSuchModule"
    );

    let v = api.get(&[("operation", "listtypes"), ("sessionName", &session)]).await;
    let types = ok(&v)["types"].as_array().expect("types").clone();
    for m in ["Contacts", "Accounts", "HelpDesk", "Calendar", "Events", "ModComments", "Users"] {
        assert!(types.contains(&json!(m)), "{m}");
    }
    assert_eq!(
        ok(&v)["information"]["Contacts"],
        json!({"isEntity": true, "label": "Contacts", "singular": "Contact"})
    );
    let v = api.get(&[("operation", "listtypes"), ("sessionName", &session), ("fieldTypeList", "[\"email\"]")]).await;
    let types = ok(&v)["types"].as_array().expect("types").clone();
    assert!(types.contains(&json!("Contacts")));
    assert!(!types.contains(&json!("Events")));
}

#[tokio::test]
async fn gettranslation_is_a_registered_post_operation() {
    let api = Api::start().await;
    let session = api.login().await;
    let v = api
        .post(&[
            ("operation", "gettranslation"),
            ("sessionName", &session),
            ("totranslate", "[\"SINGLE_Contacts\", \"Contacts\", \"LBL_UNKNOWN\"]"),
            ("language", "ru_ru"),
            ("module", "Contacts"),
        ])
        .await;
    assert_eq!(ok(&v), &json!({"SINGLE_Contacts": "Контакт", "Contacts": "Контакты", "LBL_UNKNOWN": "LBL_UNKNOWN"}));
    // As a GET the parameters are not read: nothing to translate.
    let v =
        api.get(&[("operation", "gettranslation"), ("sessionName", &session), ("totranslate", "[\"Contacts\"]")]).await;
    assert_eq!(ok(&v), &Value::Null);
    assert_eq!(err(&api.post(&[("operation", "gettranslation")]).await).0, "AUTHENTICATION_REQUIRED");

    let api = Api::start_with(|o| o.gettranslation = false).await;
    let session = api.login().await;
    super::assert_500_empty(
        api.raw_post(&[("operation", "gettranslation"), ("sessionName", &session), ("totranslate", "[\"Contacts\"]")])
            .await,
    )
    .await;
}

#[tokio::test]
async fn seeding_helpers() {
    let api = Api::start().await;
    let contacts = api.sim.seed_demo_contacts(12);
    assert_eq!(contacts.len(), 12);
    let stored = api.sim.records("Contacts");
    assert_eq!(stored.len(), 12);
    assert!(stored.iter().all(|c| !c["lastname"].is_empty() && c["email"].contains('@')));
    assert!(stored.iter().all(|c| c["account_id"].starts_with("11x")));
    assert!(stored.iter().all(|c| c["source"] == "CRM" && c["contact_no"].starts_with("CON")));
    let phones: Vec<&str> = stored.iter().map(|c| c["phone"].as_str()).collect();
    assert!(phones.iter().any(|p| p.starts_with('+')));
    assert!(phones.iter().any(|p| p.starts_with('(')));
    assert!(phones.iter().any(|p| p.starts_with('0')));
    let notes = api.sim.records("ModComments");
    let calls = api.sim.records("Events");
    assert!(notes.len() >= 12 && calls.len() >= 12);
    for c in &contacts {
        assert!(notes.iter().any(|n| &n["related_to"] == c));
        assert!(calls.iter().any(|e| &e["contact_id"] == c && e["activitytype"].contains("Call")));
    }
    assert!(!api.sim.records("Accounts").is_empty());
    assert_eq!(api.sim.records("Users").len(), 1);

    // The seeded data is visible through the API.
    let session = api.login().await;
    let rows = api.rows(&session, &format!("SELECT subject FROM Events WHERE contact_id='{}';", contacts[0])).await;
    assert!(!rows.is_empty());
    let rows = api
        .rows(&session, &format!("SELECT commentcontent FROM ModComments WHERE related_to='{}';", contacts[1]))
        .await;
    assert_eq!(rows.len(), 2);

    // insert/update/delete hooks.
    let id = api.sim.insert_record("Contacts", [("lastname", "Hooked"), ("modifiedtime", "2020-01-01 00:00:00")]);
    assert_eq!(api.sim.record(&id).expect("record")["modifiedtime"], "2020-01-01 00:00:00");
    assert!(api.sim.update_record(&id, [("firstname", "Now")]));
    assert_eq!(api.sim.record(&id).expect("record")["modifiedtime"], "2023-11-14 22:13:20");
    assert!(api.sim.delete_record(&id));
    assert!(!api.sim.delete_record(&id));
    assert!(api.sim.record(&id).is_none());
}
