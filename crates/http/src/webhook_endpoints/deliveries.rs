//! `/v1/webhook-endpoints/{id}/deliveries`: what was sent to an endpoint, each attempt, and
//! sending a message again.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use voice_proxy_domain::callbacks;
use voice_proxy_domain::{EndpointId, MessageId};
use voice_proxy_persistence::callbacks::deliveries::{self, AttemptRecord, Delivery};
use voice_proxy_persistence::callbacks::endpoints;

use super::{EventTypeName, no_endpoint, parse_endpoint_id, parse_message_id};
use crate::pagination::{ListResponse, decode_cursor, encode_cursor, page_size};
use crate::{ApiError, AppState};

/// One attempt to send a message.
#[derive(Serialize, ToSchema)]
pub struct AttemptResponse {
    /// 1 for the first attempt.
    pub attempt: i32,
    pub at: DateTime<Utc>,
    /// The endpoint's HTTP status; `null` when it did not answer.
    #[schema(required = true)]
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    /// Why the attempt failed; `null` when it succeeded.
    #[schema(required = true)]
    pub error: Option<String>,
}

impl From<AttemptRecord> for AttemptResponse {
    fn from(a: AttemptRecord) -> Self {
        Self {
            attempt: a.attempt,
            at: a.at,
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            error: a.error,
        }
    }
}

/// The state of a message's delivery to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt (or being sent).
    Pending,
    Succeeded,
    /// Every attempt of the retry schedule failed.
    Failed,
}

impl From<callbacks::DeliveryState> for DeliveryState {
    fn from(s: callbacks::DeliveryState) -> Self {
        match s {
            callbacks::DeliveryState::Pending => Self::Pending,
            callbacks::DeliveryState::Succeeded => Self::Succeeded,
            callbacks::DeliveryState::Failed => Self::Failed,
        }
    }
}

impl From<DeliveryState> for callbacks::DeliveryState {
    fn from(s: DeliveryState) -> Self {
        match s {
            DeliveryState::Pending => Self::Pending,
            DeliveryState::Succeeded => Self::Succeeded,
            DeliveryState::Failed => Self::Failed,
        }
    }
}

/// A message and its delivery to one endpoint, with every attempt.
#[derive(Serialize, ToSchema)]
pub struct DeliveryResponse {
    /// The message's id, sent as `webhook-id` on every attempt.
    pub message_id: Uuid,
    #[schema(required = true)]
    pub event_type: Option<EventTypeName>,
    /// The message's body, as sent.
    pub payload: Value,
    pub created_at: DateTime<Utc>,
    pub state: DeliveryState,
    /// When the next attempt is due; `null` once the delivery has finished.
    #[schema(required = true)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub attempts: Vec<AttemptResponse>,
}

impl From<Delivery> for DeliveryResponse {
    fn from(d: Delivery) -> Self {
        Self {
            message_id: d.message_id.as_uuid(),
            event_type: d.event_type.map(EventTypeName::from),
            payload: serde_json::from_str(&d.body).unwrap_or(Value::String(d.body)),
            created_at: d.created_at,
            state: d.state.into(),
            next_attempt_at: d.next_attempt_at,
            attempts: d.attempts.into_iter().map(AttemptResponse::from).collect(),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only deliveries in this state.
    state: Option<DeliveryState>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

const DELIVERIES_CURSOR_KIND: &str = "webhook-deliveries";

/// `GET /v1/webhook-endpoints/{id}/deliveries`: the messages for an endpoint, newest first,
/// each with its state and every attempt.
#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints/{id}/deliveries",
    tag = "webhook-endpoints",
    params(("id" = Uuid, Path, description = "The endpoint's id."), DeliveriesQuery),
    responses(
        (status = 200, description = "A page of deliveries.", body = ListResponse<DeliveryResponse>),
        (status = 400, description = "The id is not a UUID, or a malformed query string or cursor."),
        (status = 404, description = "No such endpoint."),
        (status = 422, description = "`limit` out of range."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn list_deliveries(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_endpoint_id(&path)?;
    let limit = page_size(query.limit)?;
    let after = decode_cursor(DELIVERIES_CURSOR_KIND, query.cursor.as_deref())?
        .map(|k| parse_message_id(&k))
        .transpose()
        .map_err(|_| ApiError::bad_request("malformed cursor"))?;
    endpoints::get(&state.pool, id)
        .await?
        .ok_or_else(|| no_endpoint(id))?;
    let page = deliveries::list(&state.pool, id, query.state.map(Into::into), after, limit).await?;
    Ok(HttpResponse::Ok().json(ListResponse {
        items: page.items.into_iter().map(DeliveryResponse::from).collect(),
        next_cursor: page
            .next
            .map(|k| encode_cursor(DELIVERIES_CURSOR_KIND, &k.to_string())),
    }))
}

/// `GET /v1/webhook-endpoints/{id}/deliveries/{message_id}`: one message's delivery.
#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints/{id}/deliveries/{message_id}",
    tag = "webhook-endpoints",
    params(
        ("id" = Uuid, Path, description = "The endpoint's id."),
        ("message_id" = Uuid, Path, description = "The message's id (`webhook-id`)."),
    ),
    responses(
        (status = 200, description = "The delivery.", body = DeliveryResponse),
        (status = 400, description = "An id is not a UUID."),
        (status = 404, description = "No such endpoint, or no such message for it."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn get_delivery(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, message) = (parse_endpoint_id(&path.0)?, parse_message_id(&path.1)?);
    let delivery = deliveries::get(&state.pool, id, message)
        .await?
        .ok_or_else(|| no_message(id, message))?;
    Ok(HttpResponse::Ok().json(DeliveryResponse::from(delivery)))
}

/// `POST /v1/webhook-endpoints/{id}/deliveries/{message_id}/retry`: sends a message again as
/// soon as the dispatcher gets to it: a pending one at once instead of at its next retry, a
/// finished one once more (not retried if that attempt fails).
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints/{id}/deliveries/{message_id}/retry",
    tag = "webhook-endpoints",
    params(
        ("id" = Uuid, Path, description = "The endpoint's id."),
        ("message_id" = Uuid, Path, description = "The message's id (`webhook-id`)."),
    ),
    responses(
        (status = 202, description = "The delivery, due now.", body = DeliveryResponse),
        (status = 400, description = "An id is not a UUID."),
        (status = 404, description = "No such endpoint, or no such message for it."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn retry_delivery(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, message) = (parse_endpoint_id(&path.0)?, parse_message_id(&path.1)?);
    let missing = || no_message(id, message);
    if !deliveries::retry(&state.pool, id, message).await? {
        return Err(missing());
    }
    state.outbox.wake();
    let delivery = deliveries::get(&state.pool, id, message)
        .await?
        .ok_or_else(missing)?;
    tracing::info!(endpoint_id = %id, message_id = %message, "callback delivery to be sent again");
    Ok(HttpResponse::Accepted().json(DeliveryResponse::from(delivery)))
}

fn no_message(endpoint: EndpointId, message: MessageId) -> ApiError {
    ApiError::not_found(format!("no message {message} for endpoint {endpoint}"))
}
