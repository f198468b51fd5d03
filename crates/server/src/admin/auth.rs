//! The admin bearer token. Only its SHA-256 is stored; the comparison is constant-time.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::extract::bearer_token;
use crate::state::AppState;

/// Proof that the request carried the admin token.
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts)?;
        match state.store.verify_admin_token(token).await {
            Ok(true) => Ok(Self),
            Ok(false) => Err(ApiError::Forbidden),
            Err(e) => Err(e.into()),
        }
    }
}
