//! Ids in paths: parsed at the edge, a malformed one a 400 (never a 404).

use voice_proxy_domain::CallId;

use crate::ApiError;

/// Parses a call id from the path.
pub(crate) fn parse_call_id(raw: &str) -> Result<CallId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::bad_request(format!("the call id is {e}")))
}
