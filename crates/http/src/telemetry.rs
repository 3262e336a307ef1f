//! Request spans without phone numbers: the span names the route pattern, never the query string
//! or path parameters, which can hold numbers.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{Error, HttpMessage};
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};

pub struct MaskedRootSpan;

#[derive(Clone)]
struct StartedAt(Instant, String);

impl RootSpanBuilder for MaskedRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        request
            .extensions_mut()
            .insert(StartedAt(Instant::now(), route.clone()));
        tracing::info_span!(
            "http_request",
            method = %request.method(),
            route = %route,
            request_id = %request_id,
            status = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let (status, started) = match outcome {
            Ok(response) => (
                response.status().as_u16(),
                response.request().extensions().get::<StartedAt>().cloned(),
            ),
            Err(e) => (e.as_response_error().status_code().as_u16(), None),
        };
        let elapsed = started.as_ref().map(|s| s.0.elapsed());
        if let Some(StartedAt(at, route)) = started {
            let class = match status {
                100..=199 => "1xx",
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            };
            metrics::histogram!("http_request_duration_seconds", "route" => route, "status" => class)
                .record(at.elapsed().as_secs_f64());
        }
        span.record("status", status);
        let _entered = span.enter();
        let latency_ms = elapsed.map(|d| d.as_secs_f64() * 1000.0);
        if status >= 500 {
            tracing::warn!(status, latency_ms, "request finished");
        } else {
            tracing::info!(status, latency_ms, "request finished");
        }
    }
}

/// Echoes the request id in `x-request-id`, so a client can quote it.
pub fn echo_request_id<B>(mut response: ServiceResponse<B>) -> ServiceResponse<B> {
    let id = response
        .request()
        .extensions()
        .get::<RequestId>()
        .map(ToString::to_string);
    if let Some(value) = id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    response
}
