//! What a failed CRM call means for the platform. The agent sees only that the CRM is
//! unavailable or busy; the cause (which may name hosts or CRM error codes) goes to the log.

use std::time::Duration;

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use crmhub_core::crm::CrmError;

/// A CRM call's failure, as the channel answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The record does not exist (or is not a contact).
    NotFound,
    /// The CRM refused a value taken from the request.
    Refused,
    /// Our rate budget or the CRM's: 503 with `Retry-After`.
    Busy(Option<Duration>),
    /// Down, failing, misconfigured, or refusing crmhub's credentials: 502.
    Unavailable,
}

impl Failure {
    pub fn of(error: &CrmError, tenant: &str, what: &'static str) -> Self {
        let failure = match error {
            // The operator's configuration, not the request: the platform hears that the CRM
            // is unavailable, and the log says what to fix.
            CrmError::Unsupported { capability } => {
                tracing::error!(
                    tenant,
                    operation = what,
                    %capability,
                    "social inbox: the channel's connection does not support {capability}; configure the channel \
                     on a connection that does"
                );
                return Self::Unavailable;
            }
            CrmError::NotFound { .. } => Self::NotFound,
            CrmError::Validation { .. } => Self::Refused,
            CrmError::RateLimited { retry_after } => Self::Busy(*retry_after),
            _ => Self::Unavailable,
        };
        if matches!(failure, Self::Busy(_) | Self::Unavailable) {
            tracing::warn!(tenant, operation = what, error = %error, "social inbox: the CRM call failed");
        }
        failure
    }

    /// 502, or 503 when busy; the caller picks 404/400 for the other two.
    pub fn status(self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Refused => StatusCode::BAD_REQUEST,
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unavailable => StatusCode::BAD_GATEWAY,
        }
    }

    /// Adds `Retry-After` (whole seconds, at least 1) to a response for [`Failure::Busy`].
    pub fn with_retry_after(self, mut response: Response) -> Response {
        if let Self::Busy(wait) = self {
            let secs = wait.map_or(1, |w| w.as_secs_f64().ceil().max(1.0) as u64);
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let of = |e: CrmError| Failure::of(&e, "acme", "test");
        assert_eq!(of(CrmError::NotFound { what: "x".into() }).status(), StatusCode::NOT_FOUND);
        assert_eq!(of(CrmError::validation("value", "bad")).status(), StatusCode::BAD_REQUEST);
        assert_eq!(of(CrmError::Unavailable("down".into())).status(), StatusCode::BAD_GATEWAY);
        assert_eq!(of(CrmError::AuthFailed("no".into())).status(), StatusCode::BAD_GATEWAY);
        let unsupported = CrmError::Unsupported { capability: crmhub_core::crm::Capability::SearchContacts };
        assert_eq!(of(unsupported).status(), StatusCode::BAD_GATEWAY);
        let busy = of(CrmError::RateLimited { retry_after: Some(Duration::from_millis(1500)) });
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = busy.with_retry_after(Response::default());
        assert_eq!(response.headers()[RETRY_AFTER], "2");
    }
}
