//! What every Vonage webhook does with its request before reading it: the signature check (on
//! the `Authorization` header, then on the body), the body read within its limits, and the query
//! string as fields.

use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::signature::{RequestParts, SignatureError, VerifiedToken};
use crate::{ApiError, AppState, MAX_BODY_BYTES};

/// The query string as a JSON object of strings; one that cannot be parsed, as an empty one.
pub(crate) fn query_map(req: &HttpRequest) -> Map<String, Value> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(|q| {
            q.into_inner()
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads a request body of at most [`MAX_BODY_BYTES`], within the body deadline. A body that
/// declares a larger size is refused before any of it is read.
async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> Result<web::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Request body too large",
            format!("the body may be at most {MAX_BODY_BYTES} bytes"),
        )
        .closing()
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::unreadable_body(&e))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The first step of the signature check, on the `Authorization` header alone, before the body
/// is read. `None` when webhooks are not signed (`ALLOW_UNSIGNED_WEBHOOKS`).
fn check_token(req: &HttpRequest, state: &AppState) -> Result<Option<VerifiedToken>, ApiError> {
    if !state.verifier.enabled() {
        return Ok(None);
    }
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let now = chrono::Utc::now().timestamp();
    state
        .verifier
        .verify_token(header, now)
        .map(Some)
        .map_err(|e| refusal(req, e))
}

/// The second step, once the body is read: the payload hash, and the token not used for another
/// request.
fn accept(
    req: &HttpRequest,
    state: &AppState,
    token: Option<VerifiedToken>,
    body: Option<&[u8]>,
) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Ok(());
    };
    let parts = RequestParts {
        method: req.method().as_str(),
        path: req.path(),
        query: req.query_string(),
        body,
    };
    let now = chrono::Utc::now().timestamp();
    state
        .verifier
        .accept(&token, &parts, now)
        .map_err(|e| refusal(req, e))
}

/// The answer to a request whose signature is missing (503: Vonage sends an unsigned callback only
/// when it has an internal error, and retries it) or does not verify (401).
fn refusal(req: &HttpRequest, e: SignatureError) -> ApiError {
    metrics::counter!("webhook_signature_refusals_total", "reason" => e.reason()).increment(1);
    // Counted above; the request's own log line says it was refused. Debug only, so that a
    // flood of forged requests does not flood the logs twice.
    tracing::debug!(
        reason = e.reason(),
        route = req.path(),
        "refused an unsigned or forged webhook"
    );
    match e {
        SignatureError::Missing => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "signature-missing",
            "Webhook signature required",
            "the request carries no Authorization header; webhooks must be signed with the \
             Vonage signature secret",
        ),
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid-signature",
            "Webhook signature required",
            format!("the request's signature is refused: {e}"),
        ),
    }
    .closing()
}

/// A webhook request without a body (a GET) whose signature verifies.
pub(crate) fn signed(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let token = check_token(req, state)?;
    accept(req, state, token, None)
}

/// The body of a webhook request (a POST) whose signature verifies, the body's hash included.
pub(crate) async fn signed_body(
    req: &HttpRequest,
    state: &AppState,
    payload: web::Payload,
) -> Result<web::Bytes, ApiError> {
    let token = check_token(req, state)?;
    let body = read_body(req, payload).await?;
    accept(req, state, token, Some(&body))?;
    Ok(body)
}

/// The same, for a body that must be declared JSON (`application/json` or `+json`); 415
/// otherwise, telling the sender to send `what` as JSON.
pub(crate) async fn signed_json_body(
    req: &HttpRequest,
    state: &AppState,
    payload: web::Payload,
    what: &str,
) -> Result<web::Bytes, ApiError> {
    let body = signed_body(req, state, payload).await?;
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || m.ends_with("+json")
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("send {what} as application/json"),
        ));
    }
    Ok(body)
}
