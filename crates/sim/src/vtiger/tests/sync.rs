use std::time::Duration;

use serde_json::Value;

use super::super::Install;
use super::{Api, assert_500_empty, err, ok};

fn sync_params<'a>(session: &'a str, since: &'a str) -> [(&'a str, &'a str); 4] {
    [("operation", "sync"), ("sessionName", session), ("modifiedTime", since), ("elementType", "Contacts")]
}

#[tokio::test]
async fn stock_sync_dies_with_an_empty_500() {
    let api = Api::start().await;
    let session = api.login().await;
    assert_500_empty(api.raw_get(&sync_params(&session, "1")).await).await;
    assert_eq!(err(&api.get(&[("operation", "sync")]).await).0, "AUTHENTICATION_REQUIRED");
}

#[tokio::test]
async fn patched_sync_reports_updates_deletions_and_more() {
    let api = Api::start_with(|o| o.sync = Install::Patched).await;
    let session = api.login().await;
    let t0 = 1_700_000_000_i64;
    // 120 contacts, one per second: 120 distinct modifiedtime values.
    let mut all = Vec::new();
    for i in 0..120 {
        all.push(api.sim.insert_record("Contacts", [("lastname", format!("S{i}"))]));
        api.clock.advance(Duration::from_secs(1));
    }
    let v = api.get(&sync_params(&session, "1")).await;
    let r = ok(&v);
    assert_eq!(r["more"], true);
    assert_eq!(r["updated"].as_array().map(Vec::len), Some(100));
    assert_eq!(r["lastModifiedTime"], t0 + 99);
    assert_eq!(r["deleted"], Value::Array(vec![]));
    assert!(r["updated"][0].get("label").is_none());
    assert_eq!(r["updated"][0]["id"], all[0].as_str());

    let since = (t0 + 99).to_string();
    let v = api.get(&sync_params(&session, &since)).await;
    let r = ok(&v);
    assert_eq!(r["more"], false);
    assert_eq!(r["updated"].as_array().map(Vec::len), Some(20));
    assert_eq!(r["lastModifiedTime"], t0 + 119);

    // A deletion and an edit after the watermark.
    assert!(api.sim.delete_record(&all[5]));
    assert!(api.sim.update_record(&all[6], [("firstname", "Edited")]));
    let since = (t0 + 119).to_string();
    let v = api.get(&sync_params(&session, &since)).await;
    let r = ok(&v);
    assert_eq!(r["deleted"], serde_json::json!([all[5]]));
    assert_eq!(r["updated"][0]["firstname"], "Edited");
    assert_eq!(r["more"], false);
    assert_eq!(r["lastModifiedTime"], t0 + 120);

    // Nothing new: the watermark stays.
    let since = (t0 + 120).to_string();
    let v = api.get(&sync_params(&session, &since)).await;
    assert_eq!(ok(&v)["lastModifiedTime"], t0 + 120);
    assert_eq!(ok(&v)["updated"], Value::Array(vec![]));
}

#[tokio::test]
async fn patched_sync_returns_every_record_of_the_last_time_taken() {
    let api = Api::start_with(|o| o.sync = Install::Patched).await;
    let session = api.login().await;
    // 150 records sharing one second: one distinct time, all returned at once.
    for i in 0..150 {
        api.sim.insert_record("Contacts", [("lastname", format!("Same{i}"))]);
    }
    let v = api.get(&sync_params(&session, "1")).await;
    assert_eq!(ok(&v)["updated"].as_array().map(Vec::len), Some(150));
    assert_eq!(ok(&v)["more"], false);
}

#[tokio::test]
async fn patched_sync_still_dies_without_a_module() {
    let api = Api::start_with(|o| o.sync = Install::Patched).await;
    let session = api.login().await;
    assert_500_empty(api.raw_get(&[("operation", "sync"), ("sessionName", &session), ("modifiedTime", "1")]).await)
        .await;
    assert_500_empty(
        api.raw_get(&[
            ("operation", "sync"),
            ("sessionName", &session),
            ("modifiedTime", "1"),
            ("elementType", "Emails"),
        ])
        .await,
    )
    .await;
}

#[tokio::test]
async fn patched_sync_returns_only_the_callers_records_unless_application() {
    let api = Api::start_with(|o| o.sync = Install::Patched).await;
    let session = api.login().await;
    let mine = api.sim.insert_record("Contacts", [("lastname", "Mine")]);
    let grouped = api.sim.insert_record("Contacts", [("lastname", "Grouped"), ("assigned_user_id", "20x2")]);
    let ids = |v: &Value| -> Vec<String> {
        ok(v)["updated"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    // As on 8.2.0: no syncType, `user`, `userandgroup` (admin is in no group) and unknown values
    // leave the group's record out.
    for sync_type in [None, Some("user"), Some("userandgroup"), Some("bogus")] {
        let mut params = sync_params(&session, "1").to_vec();
        if let Some(t) = sync_type {
            params.push(("syncType", t));
        }
        assert_eq!(ids(&api.get(&params).await), vec![mine.clone()], "syncType {sync_type:?}");
    }
    let mut params = sync_params(&session, "1").to_vec();
    params.push(("syncType", "application"));
    assert_eq!(ids(&api.get(&params).await), vec![mine, grouped]);
}
