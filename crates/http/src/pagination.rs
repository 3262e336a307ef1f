//! Opaque cursors and page sizes for list endpoints.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use voice_proxy_persistence::pagination::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

use crate::ApiError;

/// A page of a list.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ListResponse<T: Serialize> {
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The page size asked for, within bounds.
pub fn page_size(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::validation(format!(
            "limit must be between 1 and {MAX_PAGE_SIZE}"
        ))),
    }
}

/// Cursors are the last key of the previous page, tagged with what they page through so that a
/// cursor from one list is refused by another.
pub fn encode_cursor(kind: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{key}"))
}

pub fn decode_cursor(kind: &str, cursor: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let malformed = || ApiError::bad_request("malformed cursor: pass next_cursor as it was given");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| malformed())?;
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    let key = text
        .strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .filter(|key| !key.is_empty() && !key.chars().any(char::is_control))
        .ok_or_else(malformed)?;
    Ok(Some(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_list() {
        let c = encode_cursor("calls", "0190");
        assert_eq!(
            decode_cursor("calls", Some(&c)).unwrap().as_deref(),
            Some("0190")
        );
        assert!(decode_cursor("pairings", Some(&c)).is_err());
        assert!(decode_cursor("calls", Some("%%%")).is_err());
        // Keys no list ever hands out: empty, or with a NUL (which Postgres cannot hold).
        for forged in ["calls:", "calls:\u{0}", "calls:1\n2"] {
            let c = URL_SAFE_NO_PAD.encode(forged);
            assert!(decode_cursor("calls", Some(&c)).is_err(), "{forged:?}");
        }
    }
}
