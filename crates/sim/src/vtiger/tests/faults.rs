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
