//! The social inbox end to end: crmhub's signed `/search` and `/iframe` answered from a real
//! Vtiger, through a native and a template connection.

use crmhub_core::Secret;
use crmhub_core::signing::social_inbox::sign;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn};
use crate::peer::{Peer, Role, tag, take};

const SECRET: &str = "changeme!";

async fn inbox(app: &TestApp, peer: &Peer, slug: &str, kind: &str) {
    app.create_tenant(slug).await;
    let body = json!({"name": "Vtiger", "kind": kind, "host": peer.url,
                      "fields": {"username": peer.username}, "credentials": {"access_key": peer.access_key}});
    let connection = app.create_connection(slug, &body).await;
    let channel = format!("/admin/v1/tenants/{slug}/channels/social-inbox");
    let response = app.admin_send(Method::PUT, &channel, &json!({"connection_id": connection, "secret": SECRET})).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

fn signed(app: &TestApp, slug: &str, endpoint: &str, params: &[(&str, &str)]) -> String {
    let expires =
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 60).to_string();
    let mut all = params.to_vec();
    all.push(("expires", &expires));
    app.url(&format!("/t/{slug}/social/{endpoint}?{}", sign(&all, &Secret::new(SECRET))))
}

#[tokio::test]
async fn search_and_card_come_from_the_real_vtiger() {
    let (peer, _turn) = take(Role::Shared).await;
    let ws = peer.ws().await;
    let tag = tag();
    let account = ws.create("Accounts", json!({"accountname": format!("Redwood{tag} Supplies")})).await;
    let susan = ws
        .contact(
            "Susan",
            &format!("Red{tag}"),
            json!({"email": format!("susan.{tag}@example.com"), "account_id": account}),
        )
        .await;
    ws.create("ModComments", json!({"commentcontent": format!("Prefers e-mail {tag}."), "related_to": susan})).await;
    ws.contact("Frank", &format!("Red{tag}ford"), json!({})).await;

    let app = spawn().start().await;
    for (slug, kind) in [("native", "vtiger"), ("template", "template:vtiger")] {
        inbox(&app, &peer, slug, kind).await;
        let response =
            app.client.get(signed(&app, slug, "search", &[("q", &format!("red{tag}"))])).send().await.unwrap();
        assert_eq!(response.status(), 200, "{kind}");
        let results: Value = response.json().await.unwrap();
        let mut names: Vec<&str> =
            results["results"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        names.sort();
        assert_eq!(names, [format!("Frank Red{tag}ford"), format!("Susan Red{tag}")], "{kind}: {results}");

        let response = app.client.get(signed(&app, slug, "iframe", &[("id", &susan)])).send().await.unwrap();
        assert_eq!(response.status(), 200, "{kind}");
        let card = response.text().await.unwrap();
        for expected in
            [format!("Susan Red{tag}"), format!("susan.{tag}@example.com"), format!("Prefers e-mail {tag}.")]
        {
            assert!(card.contains(&expected), "{kind}: the card shows {expected:?}");
        }
        if kind == "vtiger" {
            assert!(card.contains(&format!("Redwood{tag} Supplies")), "{kind}: the card shows the company");
        }
    }
    app.stop().await;
}
