use std::time::{Duration, Instant};

use super::super::Fault;
use super::{Api, assert_500_empty, ok};

#[tokio::test]
async fn http_500_faults_apply_until_cleared_or_counted_out() {
    let api = Api::start().await;
    let challenge = [("operation", "getchallenge"), ("username", "admin")];
    api.sim.set_fault(Fault::Http500Empty);
    for _ in 0..3 {
        assert_500_empty(api.raw_get(&challenge).await).await;
    }
    api.sim.clear_fault();
    ok(&api.get(&challenge).await);

    api.sim.set_fault_for(2, Fault::Http500Empty);
    assert_500_empty(api.raw_get(&challenge).await).await;
    assert_500_empty(api.raw_get(&challenge).await).await;
    ok(&api.get(&challenge).await);
    // Faulted requests are requests too, but never reach an operation.
    assert_eq!(api.sim.request_count(), 7);
    assert_eq!(api.sim.operation_count("getchallenge"), 2);
}

#[tokio::test]
async fn dropped_connections_give_the_client_no_response() {
    let api = Api::start().await;
    api.sim.set_fault_for(1, Fault::DropConnection);
    let outcome = api.http.get(api.url()).query(&[("operation", "getchallenge"), ("username", "admin")]).send().await;
    match outcome {
        Err(e) => assert!(!e.is_timeout(), "should fail fast: {e}"),
        Ok(response) => {
            let body = response.bytes().await;
            assert!(body.is_err(), "the body must not complete: {body:?}");
        }
    }
    // The next request (new connection) is served normally.
    ok(&api.get(&[("operation", "getchallenge"), ("username", "admin")]).await);
}

#[tokio::test]
async fn latency_delays_but_answers() {
    let api = Api::start().await;
    api.sim.set_fault_for(1, Fault::Latency(Duration::from_millis(300)));
    let started = Instant::now();
    ok(&api.get(&[("operation", "getchallenge"), ("username", "admin")]).await);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    ok(&api.get(&[("operation", "getchallenge"), ("username", "admin")]).await);
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn shutdown_stops_the_listener() {
    let api = Api::start().await;
    let url = api.url();
    let Api { http, sim, .. } = api;
    sim.shutdown().await;
    let outcome = http.get(url).send().await;
    assert!(outcome.is_err());
}

#[tokio::test]
async fn a_held_reply_keeps_the_write_and_loses_the_answer() {
    let api = Api::start().await;
    let session = api.login().await;
    api.sim.set_fault(Fault::HoldReplyAfter { operation: "create", hold: Duration::from_secs(30) });
    // Other operations are answered at once.
    let started = Instant::now();
    ok(&api.query(&session, "SELECT id FROM Contacts;").await);
    assert!(started.elapsed() < Duration::from_secs(5));
    let element = serde_json::json!({"lastname": "Held", "assigned_user_id": "19x1"}).to_string();
    let form = [("operation", "create"), ("sessionName", &session), ("elementType", "Contacts"), ("element", &element)];
    let outcome = api.http.post(api.url()).form(&form).timeout(Duration::from_millis(300)).send().await;
    assert!(outcome.is_err_and(|e| e.is_timeout()), "the answer never came");
    // The write landed all the same: the CRM committed before the reply was lost.
    let held: Vec<_> = api.sim.records("Contacts").into_iter().filter(|r| r["lastname"] == "Held").collect();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(api.sim.injected_fault_count(), 1, "only the create met the fault");
    api.sim.clear_fault();
    let element = serde_json::json!({"lastname": "After", "assigned_user_id": "19x1"});
    ok(&api.create(&session, "Contacts", element).await);
}

#[tokio::test]
async fn random_faults_hit_some_requests_and_replay_from_their_seed() {
    const MIX: &[Fault] = &[Fault::Http500Empty, Fault::DropConnection];
    let api = Api::start().await;
    let challenge = [("operation", "getchallenge"), ("username", "admin")];
    let mut runs = Vec::new();
    for _ in 0..2 {
        api.sim.set_fault(Fault::Random { percent: 30, seed: 42, faults: MIX });
        let mut seen = Vec::new();
        for _ in 0..60 {
            let outcome = api.http.get(api.url()).query(&challenge).send().await;
            let status = match outcome {
                Err(_) => "dropped",
                Ok(response) => match (response.status().as_u16(), response.bytes().await) {
                    (_, Err(_)) => "dropped",
                    (500, _) => "500",
                    _ => "ok",
                },
            };
            seen.push(status);
        }
        runs.push(seen);
    }
    assert_eq!(runs[0], runs[1], "the same seed, the same faults, request by request");
    for kind in ["ok", "500", "dropped"] {
        assert!(runs[0].contains(&kind), "{kind}: {:?}", runs[0]);
    }
    let count = |kind: &str| runs[0].iter().filter(|s| **s == kind).count() as u64;
    assert_eq!(api.sim.injected_fault_count(), 2 * (count("500") + count("dropped")));
    let injected = api.sim.injected_faults();
    assert_eq!((injected["Http500Empty"], injected["DropConnection"]), (2 * count("500"), 2 * count("dropped")));
}
