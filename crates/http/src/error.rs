//! One error type for the whole HTTP layer, rendered as `application/problem+json` (RFC 9457).

use std::fmt;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use voice_proxy_domain::phone::mask_digit_runs;

/// A problem to report to the client: a stable machine-readable `code` (the last part of the
/// problem `type`), a short title and a detail that never holds anything the caller may not see.
/// `source` is logged for server errors and never sent.
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    source: Option<anyhow::Error>,
    /// Close the connection after this response (its request's body may be unread).
    close: bool,
}

/// An error, as `application/problem+json` (RFC 9457).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(examples(json!({
    "type": "urn:voice-proxy:problem:not-found",
    "title": "Not found",
    "status": 404,
    "detail": "***0999 is not in the pool",
    "code": "not-found"
})))]
pub struct Problem<'a> {
    /// `urn:voice-proxy:problem:<code>`.
    #[serde(rename = "type")]
    #[schema(pattern = "^urn:voice-proxy:problem:[a-z-]+$")]
    kind: String,
    /// A short summary of the kind of problem.
    title: &'a str,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong with this request.
    detail: &'a str,
    /// A stable machine-readable code, e.g. `not-found`, `validation-failed`, `forbidden`.
    #[schema(pattern = "^[a-z-]+$")]
    code: &'a str,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            title,
            detail: detail.into(),
            source: None,
            close: false,
        }
    }

    /// Closes the connection once this response is sent: for answers given before (or instead
    /// of) reading the request's body.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The request's body did not arrive within `REQUEST_BODY_TIMEOUT_MS`.
    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            "Request body too slow",
            "the request body did not arrive in time",
        )
        .closing()
    }

    /// An error reading the request's body: the deadline, or the connection failing.
    pub fn unreadable_body(e: &actix_web::error::PayloadError) -> Self {
        if crate::deadline::is_body_timeout(e) {
            Self::body_timeout()
        } else {
            Self::bad_request(format!("could not read the body: {e}")).closing()
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
            "The request is not valid",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn conflict(code: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, title, detail)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
            "send a valid credential as `Authorization: Bearer <token>`",
        )
    }

    /// A valid credential without the scope the endpoint needs.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service temporarily unavailable",
            detail,
        )
    }

    /// An error the client cannot fix: logged in full, reported without internals.
    pub fn unexpected(source: impl Into<anyhow::Error>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            title: "Internal error",
            detail: "the request failed on our side; it has been logged".to_owned(),
            source: Some(source.into()),
            close: false,
        }
    }

    pub fn problem_type(&self) -> String {
        format!("urn:voice-proxy:problem:{}", self.code)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if voice_proxy_persistence::is_transient(&e) {
            tracing::warn!(error = %e, "database unavailable");
            let mut err = Self::unavailable("the database is unavailable; retry shortly");
            err.source = Some(e.into());
            err
        } else {
            Self::unexpected(e)
        }
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)?;
        if let Some(source) = &self.source {
            write!(f, " ({source:#})")?;
        }
        Ok(())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.title, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if self.status.is_server_error()
            && let Some(source) = &self.source
        {
            tracing::error!(error = ?source, code = self.code, "request failed");
        }
        let body = Problem {
            kind: self.problem_type(),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
        };
        let mut response = HttpResponse::build(self.status);
        response.content_type(PROBLEM_JSON);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header(("Retry-After", "1"));
        }
        if self.close {
            response.force_close();
        }
        response.json(body)
    }
}

/// The default service of a resource: any method it does not serve is a 405 problem, with the
/// `Allow` header listing those it does.
pub fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    actix_web::web::to(move || async move {
        let mut response = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("this resource allows {allow}"),
        )
        .error_response();
        response.headers_mut().insert(
            actix_web::http::header::ALLOW,
            actix_web::http::header::HeaderValue::from_static(allow),
        );
        response
    })
}

/// Maps the JSON body extractor's errors onto problems: 413 too large, 415 not JSON, 400 not
/// parseable, 422 parseable but not what the endpoint takes (wrong types, unknown fields).
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Request body too large",
            format!("the body may be at most {limit} bytes"),
        ),
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as application/json",
        ),
        JsonPayloadError::Payload(e) => ApiError::unreadable_body(e),
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            ApiError::validation(mask_digit_runs(&e.to_string()))
        }
        JsonPayloadError::Deserialize(e) => ApiError::bad_request(format!(
            "the body is not valid JSON: {}",
            mask_digit_runs(&e.to_string())
        )),
        other => ApiError::bad_request(format!("could not read the body: {other}")),
    };
    api.into()
}

pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!(
        "malformed query string: {}",
        mask_digit_runs(&err.to_string())
    ))
    .into()
}

pub fn path_error(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!(
        "malformed path: {}",
        mask_digit_runs(&err.to_string())
    ))
    .into()
}
