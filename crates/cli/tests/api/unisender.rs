//! A Unisender connection through the admin API: created with its key sealed, tested against the
//! Unisender simulator, and a wrong key makes it `needs_reauth`.

use crmhub_sim::unisender::{UnisenderSimOptions, spawn as spawn_unisender};
use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_unisender_connection_is_tested_against_its_account() {
    let sim = spawn_unisender(UnisenderSimOptions::default()).await;
    sim.create_list("Newsletter");
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let id = app
        .create_connection(
            "acme",
            &json!({"name": "Unisender", "kind": "unisender", "host": sim.base_url(),
                    "credentials": {"api_key": sim.api_key()}}),
        )
        .await;
    let path = format!("/admin/v1/tenants/acme/connections/{id}/test");
    let report: Value = app.admin_send(reqwest::Method::POST, &path, &json!({})).await.json().await.unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["details"].to_string().contains("Lists"), "{report}");
    assert_eq!(sim.keys_in_url(), 0, "the key travelled in the body only");

    let rotate = format!("/admin/v1/tenants/acme/connections/{id}/credentials");
    let rotated =
        app.admin_send(reqwest::Method::PUT, &rotate, &json!({"credentials": {"api_key": "wrong-key"}})).await;
    assert!(rotated.status().is_success(), "{}", rotated.status());
    let report: Value = app.admin_send(reqwest::Method::POST, &path, &json!({})).await.json().await.unwrap();
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["status"], "needs_reauth", "{report}");
    assert!(!report.to_string().contains("wrong-key"), "the key is not echoed: {report}");
}
