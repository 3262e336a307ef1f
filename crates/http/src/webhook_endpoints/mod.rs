//! `/v1/webhook-endpoints`: where the marketplace receives callbacks, their signing secrets, and
//! what was delivered to each. A secret is in the creation and rotation responses only.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use voice_proxy_domain::callbacks::{CallbackUrl, EventType, EventTypes};
use voice_proxy_domain::id::InvalidId;
use voice_proxy_domain::{EndpointId, MessageId, text};
use voice_proxy_persistence::callbacks::endpoints::{
    self, Endpoint, EndpointChanges, EndpointError, MAX_DESCRIPTION_LEN, NewEndpoint,
};

pub mod deliveries;

use self::deliveries::{get_delivery, list_deliveries, retry_delivery};

use crate::auth::admin;
use crate::error::method_not_allowed;
use crate::pagination::{ListResponse, decode_cursor, encode_cursor, page_size};
use crate::{ApiError, AppState};

/// How long a replaced secret keeps signing beside the new one.
pub const SECRET_OVERLAP: Duration = Duration::hours(24);

/// Every route needs the `admin` scope.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/webhook-endpoints")
            .route(admin(web::post().to(create_endpoint)))
            .route(admin(web::get().to(list_endpoints)))
            .default_service(method_not_allowed("GET, POST")),
    )
    .service(
        web::resource("/webhook-endpoints/{id}")
            .route(admin(web::get().to(get_endpoint)))
            .route(admin(web::patch().to(update_endpoint)))
            .route(admin(web::delete().to(delete_endpoint)))
            .default_service(method_not_allowed("GET, PATCH, DELETE")),
    )
    .service(
        web::resource("/webhook-endpoints/{id}/rotate-secret")
            .route(admin(web::post().to(rotate_secret)))
            .default_service(method_not_allowed("POST")),
    )
    .service(
        web::resource("/webhook-endpoints/{id}/deliveries")
            .route(admin(web::get().to(list_deliveries)))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/webhook-endpoints/{id}/deliveries/{message_id}")
            .route(admin(web::get().to(get_delivery)))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/webhook-endpoints/{id}/deliveries/{message_id}/retry")
            .route(admin(web::post().to(retry_delivery)))
            .default_service(method_not_allowed("POST")),
    );
}

/// An event type a callback can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum EventTypeName {
    #[serde(rename = "pairing.created")]
    PairingCreated,
    #[serde(rename = "pairing.updated")]
    PairingUpdated,
    #[serde(rename = "pairing.closed")]
    PairingClosed,
    #[serde(rename = "pairing.expired")]
    PairingExpired,
    #[serde(rename = "call.started")]
    CallStarted,
    #[serde(rename = "call.answered")]
    CallAnswered,
    #[serde(rename = "call.ended")]
    CallEnded,
    #[serde(rename = "pool.exhausted")]
    PoolExhausted,
}

impl From<EventTypeName> for EventType {
    fn from(t: EventTypeName) -> Self {
        match t {
            EventTypeName::PairingCreated => Self::PairingCreated,
            EventTypeName::PairingUpdated => Self::PairingUpdated,
            EventTypeName::PairingClosed => Self::PairingClosed,
            EventTypeName::PairingExpired => Self::PairingExpired,
            EventTypeName::CallStarted => Self::CallStarted,
            EventTypeName::CallAnswered => Self::CallAnswered,
            EventTypeName::CallEnded => Self::CallEnded,
            EventTypeName::PoolExhausted => Self::PoolExhausted,
        }
    }
}

impl From<EventType> for EventTypeName {
    fn from(t: EventType) -> Self {
        match t {
            EventType::PairingCreated => Self::PairingCreated,
            EventType::PairingUpdated => Self::PairingUpdated,
            EventType::PairingClosed => Self::PairingClosed,
            EventType::PairingExpired => Self::PairingExpired,
            EventType::CallStarted => Self::CallStarted,
            EventType::CallAnswered => Self::CallAnswered,
            EventType::CallEnded => Self::CallEnded,
            EventType::PoolExhausted => Self::PoolExhausted,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"url": "https://backend.example.com/voice-proxy", "event_types": ["call.ended", "pairing.expired"], "description": "trips backend"})))]
pub struct CreateEndpointRequest {
    /// Where callbacks are POSTed: an `https://` URL (`http://` only where the service allows
    /// it), without credentials or a fragment.
    #[schema(max_length = 2048, examples("https://backend.example.com/voice-proxy"))]
    pub url: String,
    /// The event types to receive; leave it out (or `null`) for every type.
    #[schema(min_items = 1)]
    pub event_types: Option<Vec<EventTypeName>>,
    /// What the endpoint is, for people; at most 256 characters.
    #[schema(min_length = 1, max_length = 256)]
    pub description: Option<String>,
}

/// What to change; fields left out stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"disabled": true})))]
pub struct UpdateEndpointRequest {
    #[serde(
        default,
        deserialize_with = "voice_proxy_domain::call_options::present"
    )]
    #[schema(max_length = 2048, nullable = false, value_type = Option<String>)]
    pub url: Option<Option<String>>,
    /// The event types to receive; `null` for every type.
    #[serde(
        default,
        deserialize_with = "voice_proxy_domain::call_options::present"
    )]
    #[schema(min_items = 1)]
    pub event_types: Option<Option<Vec<EventTypeName>>>,
    /// `null` clears it.
    #[serde(
        default,
        deserialize_with = "voice_proxy_domain::call_options::present"
    )]
    #[schema(min_length = 1, max_length = 256)]
    pub description: Option<Option<String>>,
    /// A disabled endpoint is sent nothing: no new messages, and its pending deliveries wait.
    #[serde(
        default,
        deserialize_with = "voice_proxy_domain::call_options::present"
    )]
    #[schema(nullable = false, value_type = Option<bool>)]
    pub disabled: Option<Option<bool>>,
}

/// A callback endpoint, without its secret.
#[derive(Serialize, ToSchema)]
pub struct EndpointResponse {
    pub id: Uuid,
    pub url: String,
    /// The event types it receives; `null` for every type.
    #[schema(required = true)]
    pub event_types: Option<Vec<EventTypeName>>,
    #[schema(required = true)]
    pub description: Option<String>,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Endpoint> for EndpointResponse {
    fn from(e: Endpoint) -> Self {
        let event_types = match e.event_types {
            EventTypes::All => None,
            EventTypes::Only(types) => Some(types.into_iter().map(EventTypeName::from).collect()),
        };
        Self {
            id: e.id.as_uuid(),
            url: e.url,
            event_types,
            description: e.description,
            disabled: e.disabled,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// An endpoint as just created, with its signing secret: shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedEndpointResponse {
    #[serde(flatten)]
    pub endpoint: EndpointResponse,
    /// The signing secret (`whsec_` and base64), for verifying `webhook-signature` with any
    /// Standard Webhooks library.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]+={0,2}$")]
    pub secret: String,
}

/// A new signing secret.
#[derive(Serialize, ToSchema)]
pub struct RotatedSecretResponse {
    /// The new secret: shown this once.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]+={0,2}$")]
    pub secret: String,
    /// Until then, messages are also signed with the secret it replaces (both signatures are
    /// in `webhook-signature`).
    pub previous_secret_retires_at: DateTime<Utc>,
}

fn parse_endpoint_id(raw: &str) -> Result<EndpointId, ApiError> {
    raw.parse()
        .map_err(|e: InvalidId| ApiError::bad_request(format!("the endpoint id is {e}")))
}

fn parse_message_id(raw: &str) -> Result<MessageId, ApiError> {
    raw.parse()
        .map_err(|e: InvalidId| ApiError::bad_request(format!("the message id is {e}")))
}

fn callback_url(state: &AppState, raw: &str) -> Result<CallbackUrl, ApiError> {
    CallbackUrl::parse(raw, state.settings.callback_allow_http)
        .map_err(|e| ApiError::validation(format!("url: {e}")))
}

fn event_types(names: Vec<EventTypeName>) -> Result<EventTypes, ApiError> {
    let names: Vec<&str> = names
        .into_iter()
        .map(|n| EventType::from(n).as_str())
        .collect();
    EventTypes::parse(&names).map_err(ApiError::validation)
}

fn description(raw: String) -> Result<String, ApiError> {
    if text::is_clean(&raw, MAX_DESCRIPTION_LEN) {
        Ok(raw)
    } else {
        Err(ApiError::validation(format!(
            "description must be 1 to {MAX_DESCRIPTION_LEN} characters, without control or \
             invisible characters"
        )))
    }
}

fn endpoint_error(e: EndpointError) -> ApiError {
    match e {
        EndpointError::Database(e) => ApiError::from(e),
        other => ApiError::unexpected(other),
    }
}

/// Makes this instance's writers see an endpoint change at once (the others learn of it through
/// Postgres's notification). If the read fails, the outbox counts every type as wanted until it
/// succeeds.
async fn refresh_subscriptions(state: &AppState) {
    if let Err(e) = state.outbox.refresh(&state.pool).await {
        tracing::warn!(error = %e, "could not read which events endpoints want; writing every type until it can");
    }
}

fn no_endpoint(id: EndpointId) -> ApiError {
    ApiError::not_found(format!("no webhook endpoint {id}"))
}

/// `POST /v1/webhook-endpoints`: adds an endpoint and returns its signing secret, once.
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints",
    tag = "webhook-endpoints",
    request_body = CreateEndpointRequest,
    responses(
        (status = 201, description = "The endpoint, with its signing secret: store it now, it is never shown again.", body = CreatedEndpointResponse, links(
            ("get" = (operation_id = "get_endpoint", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 400, description = "The body is not JSON."),
        (status = 413, description = "The body is too large."),
        (status = 415, description = "The body is not `application/json`."),
        (status = 422, description = "The URL, the event types or the description are not valid, or a field is unknown."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn create_endpoint(
    state: web::Data<AppState>,
    body: web::Json<CreateEndpointRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let new = NewEndpoint {
        url: callback_url(&state, &body.url)?,
        event_types: body
            .event_types
            .map(event_types)
            .transpose()?
            .unwrap_or(EventTypes::All),
        description: body.description.map(description).transpose()?,
    };
    let (endpoint, secret) = endpoints::create(&state.pool, &new)
        .await
        .map_err(endpoint_error)?;
    refresh_subscriptions(&state).await;
    tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint created");
    Ok(HttpResponse::Created().json(CreatedEndpointResponse {
        endpoint: endpoint.into(),
        secret: secret.expose().to_owned(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

const CURSOR_KIND: &str = "webhook-endpoints";

/// `GET /v1/webhook-endpoints`: every endpoint, oldest first; no secrets.
#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints",
    tag = "webhook-endpoints",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of endpoints.", body = ListResponse<EndpointResponse>),
        (status = 400, description = "Malformed query string or cursor."),
        (status = 422, description = "`limit` out of range."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn list_endpoints(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_size(query.limit)?;
    let after = decode_cursor(CURSOR_KIND, query.cursor.as_deref())?
        .map(|k| parse_endpoint_id(&k))
        .transpose()
        .map_err(|_| ApiError::bad_request("malformed cursor"))?;
    let page = endpoints::list(&state.pool, after, limit).await?;
    Ok(HttpResponse::Ok().json(ListResponse {
        items: page.items.into_iter().map(EndpointResponse::from).collect(),
        next_cursor: page
            .next
            .map(|k| encode_cursor(CURSOR_KIND, &k.to_string())),
    }))
}

/// `GET /v1/webhook-endpoints/{id}`: one endpoint, without its secret.
#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints/{id}",
    tag = "webhook-endpoints",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    responses(
        (status = 200, description = "The endpoint.", body = EndpointResponse),
        (status = 400, description = "The id is not a UUID."),
        (status = 404, description = "No such endpoint."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn get_endpoint(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_endpoint_id(&path)?;
    let endpoint = endpoints::get(&state.pool, id)
        .await?
        .ok_or_else(|| no_endpoint(id))?;
    Ok(HttpResponse::Ok().json(EndpointResponse::from(endpoint)))
}

/// `PATCH /v1/webhook-endpoints/{id}`: changes the URL, the event types, the description, or
/// disables (or enables) the endpoint.
#[utoipa::path(
    patch,
    path = "/v1/webhook-endpoints/{id}",
    tag = "webhook-endpoints",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    request_body = UpdateEndpointRequest,
    responses(
        (status = 200, description = "The endpoint, changed.", body = EndpointResponse),
        (status = 400, description = "The id is not a UUID, or the body is not JSON."),
        (status = 404, description = "No such endpoint."),
        (status = 413, description = "The body is too large."),
        (status = 415, description = "The body is not `application/json`."),
        (status = 422, description = "A value is not valid, or a field is unknown."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn update_endpoint(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<UpdateEndpointRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_endpoint_id(&path)?;
    let body = body.into_inner();
    let not_null = |field: &str| ApiError::validation(format!("{field} cannot be null"));
    let changes = EndpointChanges {
        url: match body.url {
            None => None,
            Some(None) => return Err(not_null("url")),
            Some(Some(u)) => Some(callback_url(&state, &u)?),
        },
        event_types: match body.event_types {
            None => None,
            Some(None) => Some(EventTypes::All),
            Some(Some(names)) => Some(event_types(names)?),
        },
        description: match body.description {
            None => None,
            Some(None) => Some(None),
            Some(Some(d)) => Some(Some(description(d)?)),
        },
        disabled: match body.disabled {
            None => None,
            Some(None) => return Err(not_null("disabled")),
            Some(Some(d)) => Some(d),
        },
    };
    let endpoint = endpoints::update(&state.pool, id, &changes)
        .await?
        .ok_or_else(|| no_endpoint(id))?;
    refresh_subscriptions(&state).await;
    tracing::info!(endpoint_id = %id, "webhook endpoint changed");
    Ok(HttpResponse::Ok().json(EndpointResponse::from(endpoint)))
}

/// `DELETE /v1/webhook-endpoints/{id}`: removes an endpoint, its secrets and its deliveries.
#[utoipa::path(
    delete,
    path = "/v1/webhook-endpoints/{id}",
    tag = "webhook-endpoints",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "The id is not a UUID."),
        (status = 404, description = "No such endpoint."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn delete_endpoint(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_endpoint_id(&path)?;
    if !endpoints::delete(&state.pool, id).await? {
        return Err(no_endpoint(id));
    }
    refresh_subscriptions(&state).await;
    tracing::info!(endpoint_id = %id, "webhook endpoint deleted");
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /v1/webhook-endpoints/{id}/rotate-secret`: makes a new signing secret. For the next
/// 24 hours messages carry two signatures, with the new secret and with the one it replaces, so
/// that receivers can switch without refusing a message.
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints/{id}/rotate-secret",
    tag = "webhook-endpoints",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    responses(
        (status = 200, description = "The new secret: store it now, it is never shown again.", body = RotatedSecretResponse),
        (status = 400, description = "The id is not a UUID."),
        (status = 404, description = "No such endpoint."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn rotate_secret(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_endpoint_id(&path)?;
    let secret = endpoints::rotate_secret(&state.pool, id, SECRET_OVERLAP)
        .await
        .map_err(endpoint_error)?
        .ok_or_else(|| no_endpoint(id))?;
    tracing::info!(endpoint_id = %id, "webhook endpoint secret rotated");
    Ok(HttpResponse::Ok().json(RotatedSecretResponse {
        secret: secret.expose().to_owned(),
        previous_secret_retires_at: Utc::now() + SECRET_OVERLAP,
    }))
}

const _: () = assert!(
    MAX_DESCRIPTION_LEN == 256,
    "keep the schema's max_length in step"
);
