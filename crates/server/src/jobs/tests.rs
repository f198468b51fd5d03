use std::time::Duration;

use crmhub_core::crm::CrmError;

use super::{JobOutcome, WorkerConfig};

fn config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 1,
        poll_interval: Duration::from_millis(100),
        job_timeout: Duration::from_secs(60),
        lease: Duration::from_secs(30),
        backoff_base: Duration::from_secs(10),
        backoff_max: Duration::from_secs(3600),
    }
}

const NOW: i64 = 1_800_000_000_000;

fn of(error: CrmError, has_connection: bool) -> JobOutcome {
    JobOutcome::of_crm_error(error, 3, has_connection, NOW, &config())
}

#[test]
fn a_rate_limit_is_waited_out_at_the_time_the_remote_gave() {
    let outcome = of(CrmError::RateLimited { retry_after: Some(Duration::from_secs(90)) }, true);
    assert!(matches!(outcome, JobOutcome::RetryAt { at, .. } if at == NOW + 90_000), "{outcome:?}");
    // Without a time: the backoff of attempt 3 (20–40 s here), still not counted.
    let outcome = of(CrmError::RateLimited { retry_after: None }, true);
    assert!(
        matches!(outcome, JobOutcome::RetryAt { at, .. } if (NOW + 20_000..=NOW + 40_000).contains(&at)),
        "{outcome:?}"
    );
}

#[test]
fn transient_failures_back_off_and_count() {
    assert_eq!(
        of(CrmError::Unavailable("timeout".into()), true),
        JobOutcome::Retry("the CRM is unavailable: timeout".into())
    );
}

#[test]
fn refused_credentials_pause_the_connection_and_dead_end_without_one() {
    let refused = CrmError::AuthFailed("bad key".into());
    assert_eq!(of(refused.clone(), true), JobOutcome::Reauth(refused.to_string()));
    assert_eq!(of(refused.clone(), false), JobOutcome::Fail(refused.to_string()));
}

#[test]
fn refused_values_and_remote_errors_are_dead_with_the_reason() {
    let invalid = CrmError::validation("email", "is not an address");
    assert_eq!(of(invalid.clone(), true), JobOutcome::Fail(invalid.to_string()));
    let remote = CrmError::Remote { code: "ACCESS_DENIED".into(), message: "no".into() };
    assert_eq!(of(remote.clone(), true), JobOutcome::Fail(remote.to_string()));
    let odd = CrmError::Protocol("not JSON".into());
    assert_eq!(of(odd.clone(), true), JobOutcome::Fail(odd.to_string()));
}

#[test]
fn handlers_can_return_a_crm_result() {
    assert_eq!(JobOutcome::from(Ok::<(), CrmError>(())), JobOutcome::Done);
    let outcome = JobOutcome::from(Err::<(), _>(CrmError::Unavailable("x".into())));
    assert_eq!(outcome, JobOutcome::Crm(CrmError::Unavailable("x".into())));
}
