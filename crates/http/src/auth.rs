//! Admin API authentication: `Authorization: Bearer <token>`.

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

use crate::{ApiError, AppState};

/// Proof that the request carried a valid admin credential.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

/// Checks the request's bearer token against the configured admin token, in constant time.
pub fn require_admin(req: &HttpRequest, state: &AppState) -> Result<Admin, ApiError> {
    let token = bearer_token(req).ok_or_else(ApiError::unauthorized)?;
    let expected = state.settings.admin_token.as_bytes();
    if !expected.is_empty() && bool::from(token.as_bytes().ct_eq(expected)) {
        Ok(Admin)
    } else {
        Err(ApiError::unauthorized())
    }
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
