use std::collections::HashSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::super::NewContact;
use super::{Api, Reply, T0};

#[tokio::test]
async fn three_pages_return_every_contact_once_in_id_order() {
    let api = Api::start().await;
    let ids = api.sim.seed_demo_contacts(60);
    let token = api.login().await;
    let mut seen = Vec::new();
    for (page, size, more) in [(1, 25, true), (2, 25, true), (3, 10, false)] {
        let reply = api.get(&token, &format!("/contacts?page={page}&per_page=25")).await;
        assert_eq!(reply.data(200).as_array().map(Vec::len), Some(size));
        assert_eq!(reply.body["meta"], json!({"page": page, "per_page": 25, "total": 60, "has_more": more}));
        seen.extend(reply.ids());
    }
    // Id order is numeric: c_2 comes before c_10.
    assert_eq!(seen, ids);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 60);
    let past_the_end = api.get(&token, "/contacts?page=4&per_page=25").await;
    assert_eq!(past_the_end.data(200), &json!([]));
    assert_eq!(past_the_end.body["meta"]["has_more"], false);
    // The default page size is 25.
    let default = api.get(&token, "/contacts").await;
    assert_eq!(default.body["meta"], json!({"page": 1, "per_page": 25, "total": 60, "has_more": true}));
}

#[tokio::test]
async fn page_and_per_page_are_bounded() {
    let api = Api::start().await;
    api.sim.seed_demo_contacts(120);
    let token = api.login().await;
    assert_eq!(api.get(&token, "/contacts?per_page=100").await.ids().len(), 100);
    for (query, field) in [
        ("per_page=101", "per_page"),
        ("per_page=0", "per_page"),
        ("per_page=lots", "per_page"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=1.5", "page"),
    ] {
        api.get(&token, &format!("/contacts?{query}")).await.assert_error(422, "validation_failed", Some(field));
    }
}

#[tokio::test]
async fn search_matches_name_email_and_company_case_insensitively() {
    let api = Api::start().await;
    let ada = api.sim.insert_contact(
        NewContact::new("Lovelace").first_name("Ada").email("ada@engines.example").company("Analytical Ltd"),
    );
    let an = api.sim.insert_contact(NewContact::new("Nguyễn").first_name("An").company("Sao Mai Logistics"));
    let solo = api.sim.insert_contact(NewContact::new("Hopper"));
    let token = api.login().await;
    let search = |term: &str| {
        format!("/contacts?search={}", url::form_urlencoded::byte_serialize(term.as_bytes()).collect::<String>())
    };
    assert_eq!(api.get(&token, &search("ADA LOVE")).await.ids(), [ada.as_str()]);
    assert_eq!(api.get(&token, &search("engines.EXAMPLE")).await.ids(), [ada.as_str()]);
    assert_eq!(api.get(&token, &search("analytical")).await.ids(), [ada.as_str()]);
    assert_eq!(api.get(&token, &search("nguyễn")).await.ids(), [an.as_str()]);
    assert_eq!(api.get(&token, &search("AN NGUYỄN")).await.ids(), [an.as_str()]);
    assert_eq!(api.get(&token, &search("sao mai")).await.ids(), [an.as_str()]);
    assert_eq!(api.get(&token, &search("hopper")).await.ids(), [solo.as_str()]);
    assert!(api.get(&token, &search("zzz")).await.ids().is_empty());
    assert_eq!(api.get(&token, &search("  ")).await.ids().len(), 3, "a blank term filters nothing");
}

#[tokio::test]
async fn phone_lookup_matches_on_the_last_nine_digits() {
    let api = Api::start().await;
    let e164 = api.sim.insert_contact(NewContact::new("A").phone("+84 912 345 678"));
    let national = api.sim.insert_contact(NewContact::new("B").phone("0912-345-678"));
    let bare = api.sim.insert_contact(NewContact::new("C").phone("84912345678"));
    api.sim.insert_contact(NewContact::new("D").phone("+84 912 345 679"));
    api.sim.insert_contact(NewContact::new("E"));
    let token = api.login().await;
    let all_three = [e164.clone(), national, bare];
    for query in ["0912345678", "84912345678", "%2B84912345678", "912345678", "1-84-912-345-678"] {
        let reply = api.get(&token, &format!("/contacts?phone={query}")).await;
        assert_eq!(reply.ids(), all_three, "phone={query}");
        assert_eq!(reply.body["meta"]["total"], 3);
    }
    // Fewer than nine digits: a suffix match on what was given.
    assert_eq!(api.get(&token, "/contacts?phone=679").await.ids().len(), 1);
    // Phone and search combine.
    assert_eq!(api.get(&token, "/contacts?phone=0912345678&search=a").await.ids(), [e164]);
    api.get(&token, "/contacts?phone=abc").await.assert_error(422, "validation_failed", Some("phone"));
}

#[tokio::test]
async fn contacts_are_fetched_by_string_id() {
    let api = Api::start().await;
    let id = api.sim.insert_contact(NewContact::new("Lovelace").first_name("Ada").owner("linh").updated_at(T0 - 60));
    let token = api.login().await;
    let reply = api.get(&token, &format!("/contacts/{id}")).await;
    assert_eq!(
        reply.data(200),
        &json!({"id": id, "first_name": "Ada", "last_name": "Lovelace", "email": null, "phone": null,
                "company": null, "owner": "linh", "updated_at": T0 - 60})
    );
    for missing in ["c_999", "c_01", "1", "%FF"] {
        api.get(&token, &format!("/contacts/{missing}")).await.assert_error(404, "not_found", None);
    }
    assert!(api.sim.delete_contact(&id));
    api.get(&token, &format!("/contacts/{id}")).await.assert_error(404, "not_found", None);
    assert!(api.sim.contacts().is_empty());
}

#[tokio::test]
async fn creating_a_contact_returns_it_with_its_id() {
    let api = Api::start().await;
    let token = api.login().await;
    let body = json!({"first_name": "Ada", "last_name": "Lovelace", "email": "ada@acme.example",
                      "phone": "+84 912 345 678", "company": "Acme", "ignored": true});
    let reply = api.post(&token, "/contacts", body).await;
    assert_eq!(
        reply.data(201),
        &json!({"id": "c_1", "first_name": "Ada", "last_name": "Lovelace", "email": "ada@acme.example",
                "phone": "+84 912 345 678", "company": {"name": "Acme"}, "owner": "api", "updated_at": T0})
    );
    // Blank optional fields are "not given".
    let sparse = api.post(&token, "/contacts", json!({"last_name": "Hopper", "email": "", "company": null})).await;
    assert_eq!(sparse.data(201)["email"], serde_json::Value::Null);
    assert_eq!(sparse.data(201)["company"], serde_json::Value::Null);
    assert_eq!(api.sim.contacts().len(), 2);
}

#[tokio::test]
async fn contact_validation_names_the_field() {
    let api = Api::start().await;
    let token = api.login().await;
    for (body, field) in [
        (json!({"first_name": "Ada"}), "last_name"),
        (json!({"last_name": ""}), "last_name"),
        (json!({"last_name": "   "}), "last_name"),
        (json!({"last_name": null}), "last_name"),
        (json!({"last_name": 42}), "last_name"),
        (json!({"last_name": "X", "email": "not-an-email"}), "email"),
        (json!({"last_name": "X", "email": "a@b"}), "email"),
        (json!({"last_name": "X", "email": "a b@c.com"}), "email"),
        (json!({"last_name": "X", "first_name": ["Ada"]}), "first_name"),
        (json!({"last_name": "X", "phone": 912345678}), "phone"),
        (json!({"last_name": "X", "company": {"name": "Acme"}}), "company"),
    ] {
        let reply = api.post(&token, "/contacts", body.clone()).await;
        reply.assert_error(422, "validation_failed", Some(field));
    }
    assert!(api.sim.contacts().is_empty());
}

#[tokio::test]
async fn bodies_must_be_json_objects() {
    let api = Api::start().await;
    let token = api.login().await;
    let send = |content_type: Option<&'static str>, body: &'static str| {
        let mut request = api.http.post(api.url("/contacts")).bearer_auth(&token).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        async move { Reply::read(request.send().await.expect("POST")).await }
    };
    let valid = r#"{"last_name":"X"}"#;
    send(Some("text/plain"), valid).await.assert_error(415, "unsupported_media_type", None);
    send(Some("application/x-www-form-urlencoded"), "last_name=X").await.assert_error(
        415,
        "unsupported_media_type",
        None,
    );
    send(None, valid).await.assert_error(415, "unsupported_media_type", None);
    send(Some("application/json"), "{\"last_name\":").await.assert_error(400, "invalid_json", None);
    send(Some("application/json"), "<html></html>").await.assert_error(400, "invalid_json", None);
    send(Some("application/json"), "[1,2]").await.assert_error(400, "invalid_json", None);
    assert_eq!(send(Some("application/json; charset=utf-8"), valid).await.status, 201);
    // PUT is held to the same rule.
    let put = api.http.put(api.url("/calls/call_1")).bearer_auth(&token).body("x").send().await.expect("PUT");
    Reply::read(put).await.assert_error(415, "unsupported_media_type", None);
}

#[tokio::test]
async fn the_changes_feed_pages_by_time_and_hands_out_a_cursor() {
    let api = Api::start().await;
    // Inserted out of time order, two sharing a second.
    let c1 = api.sim.insert_contact(NewContact::new("One").updated_at(T0 - 30));
    let c2 = api.sim.insert_contact(NewContact::new("Two").updated_at(T0 - 50));
    let c3 = api.sim.insert_contact(NewContact::new("Three").updated_at(T0 - 30));
    let c4 = api.sim.insert_contact(NewContact::new("Four").updated_at(T0 - 10));
    let old = api.sim.insert_contact(NewContact::new("Old").updated_at(T0 - 1000));
    let token = api.login().await;

    let since = T0 - 100;
    let page1 = api.get(&token, &format!("/contacts/changes?since={since}&per_page=3")).await;
    assert_eq!(page1.ids(), [c2.clone(), c1.clone(), c3.clone()]);
    assert_eq!(
        page1.body["meta"],
        json!({"page": 1, "per_page": 3, "total": 4, "has_more": true, "next_since": T0 - 10})
    );
    let page2 = api.get(&token, &format!("/contacts/changes?since={since}&per_page=3&page=2")).await;
    assert_eq!(page2.ids(), [c4.as_str()]);
    assert_eq!(page2.body["meta"]["has_more"], false);
    assert_eq!(page2.body["meta"]["next_since"], T0 - 10);

    // Nothing new: the cursor stays where it was.
    let idle = api.get(&token, &format!("/contacts/changes?since={}", T0 - 10)).await;
    assert!(idle.ids().is_empty());
    assert_eq!(idle.body["meta"]["next_since"], T0 - 10);

    // A change made in the CRM shows up at the end of the next poll.
    api.clock.advance(Duration::from_secs(5));
    assert!(api.sim.update_contact(&old, |c| c.email = Some("old@new.example".into())));
    let next = api.get(&token, &format!("/contacts/changes?since={}", T0 - 10)).await;
    assert_eq!(next.ids(), [old.as_str()]);
    assert_eq!(next.data(200)[0]["email"], "old@new.example");
    assert_eq!(next.body["meta"]["next_since"], T0 + 5);

    // No `since`: everything.
    assert_eq!(api.get(&token, "/contacts/changes").await.body["meta"]["total"], 5);
    let bad = api.get(&token, "/contacts/changes?since=yesterday").await;
    bad.assert_error(422, "validation_failed", Some("since"));
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let api = Api::start().await;
    let token = api.login().await;
    api.get(&token, "/leads").await.assert_error(404, "not_found", None);
    api.call(Method::GET, "/../../etc/passwd", None, None).await.assert_error(404, "not_found", None);
    api.call(Method::DELETE, "/contacts/c_1", Some(&token), None).await.assert_error(405, "method_not_allowed", None);
    api.call(Method::GET, "/auth/login", None, None).await.assert_error(405, "method_not_allowed", None);
}
