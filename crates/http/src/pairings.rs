//! `/v1/pairings`: create, read, list and close pairings.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use voice_proxy_domain::pairing::NewPairingError;
use voice_proxy_domain::pairing::Pairing;
use voice_proxy_domain::pairing::{
    MAX_LABEL_LEN, MAX_REFERENCE_LEN, MAX_TTL_SECONDS, ttl_from_seconds,
};
use voice_proxy_domain::text::has_hidden_characters;
use voice_proxy_domain::{NewPairing, PairingId, PairingStatus, ParticipantRequest};
use voice_proxy_persistence::pairings::{
    self, ChangeExpiryError, CreateOutcome, CreatePairingError, NewExpiry, PairingFilter,
};

use crate::auth::admin;
use crate::error::method_not_allowed;
use crate::numbers::parse_number;
use crate::pagination::{ListResponse, decode_cursor, encode_cursor, page_size};
use crate::{ApiError, AppState};

// The bounds written into the OpenAPI schema above.
const _: () =
    assert!(MAX_TTL_SECONDS == 7_776_000 && MAX_LABEL_LEN == 64 && MAX_REFERENCE_LEN == 128);

/// Every route needs the `admin` scope, checked before the request is read.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/pairings")
            .route(admin(web::post().to(create_pairing)))
            .route(admin(web::get().to(list_pairings)))
            .default_service(method_not_allowed("GET, POST")),
    )
    .service(
        web::resource("/pairings/{id}")
            .route(admin(web::get().to(get_pairing)))
            .route(admin(web::patch().to(change_expiry)))
            .default_service(method_not_allowed("GET, PATCH")),
    )
    .service(
        web::resource("/pairings/{id}/close")
            .route(admin(web::post().to(close_pairing)))
            .default_service(method_not_allowed("POST")),
    );
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "participants": [
        {"number": "16465550101", "label": "driver"},
        {"number": "16465550102", "label": "passenger"}
    ],
    "ttl_seconds": 3600
})))]
pub struct CreatePairingRequest {
    /// Exactly two participants, with different numbers.
    #[schema(min_items = 2, max_items = 2)]
    pub participants: Vec<ParticipantBody>,
    /// Lifetime of the pairing, 1 s to 90 days; the service's default when absent.
    #[schema(minimum = 1, maximum = 7_776_000)]
    pub ttl_seconds: Option<i64>,
    /// Your own id for the pairing (the order or ride); repeating a request with the same
    /// reference returns the existing pairing.
    #[schema(min_length = 1, max_length = 128)]
    pub reference: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParticipantBody {
    /// The participant's real number, E.164.
    #[schema(examples("16465550101"))]
    pub number: String,
    /// e.g. `driver`, `passenger`; 1 to 64 characters.
    #[schema(min_length = 1, max_length = 64)]
    pub label: Option<String>,
    /// An explicit pool number for this participant instead of an automatic choice.
    pub proxy_number: Option<String>,
}

/// What a pairing is now: `expired` the instant its expiry passes.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PairingStatusName {
    Active,
    Closed,
    Expired,
}

impl From<PairingStatus> for PairingStatusName {
    fn from(s: PairingStatus) -> Self {
        match s {
            PairingStatus::Active => Self::Active,
            PairingStatus::Closed => Self::Closed,
            PairingStatus::Expired => Self::Expired,
        }
    }
}

/// A pairing.
#[derive(Serialize, ToSchema)]
pub struct PairingResponse {
    pub id: Uuid,
    pub status: PairingStatusName,
    #[schema(required = true)]
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// When the pairing was closed; `null` if it was not.
    #[schema(required = true)]
    pub closed_at: Option<DateTime<Utc>>,
    pub participants: Vec<ParticipantResponse>,
}

#[derive(Serialize, ToSchema)]
pub struct ParticipantResponse {
    /// The participant's real number.
    pub number: String,
    #[schema(required = true)]
    pub label: Option<String>,
    /// The number this participant dials to reach the other one (and sees them call from).
    #[schema(pattern = "^[1-9][0-9]{5,14}$")]
    pub proxy_number: String,
}

impl From<Pairing> for PairingResponse {
    fn from(p: Pairing) -> Self {
        let status = p.status().into();
        Self {
            id: p.id.as_uuid(),
            status,
            reference: p.reference,
            created_at: p.created_at,
            expires_at: p.expires_at,
            closed_at: p.closed_at,
            participants: p
                .participants
                .into_iter()
                .map(|x| ParticipantResponse {
                    number: x.number.expose().to_owned(),
                    label: x.label,
                    proxy_number: x.proxy_number.expose().to_owned(),
                })
                .collect(),
        }
    }
}

pub(crate) fn parse_request(
    body: CreatePairingRequest,
    default_ttl: i64,
) -> Result<NewPairing, ApiError> {
    let participants = body
        .participants
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            Ok(ParticipantRequest {
                number: parse_number(&format!("participants[{i}].number"), &p.number)?,
                label: p.label,
                proxy_number: p
                    .proxy_number
                    .map(|n| parse_number(&format!("participants[{i}].proxy_number"), &n))
                    .transpose()?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    NewPairing::new(
        participants,
        body.ttl_seconds.unwrap_or(default_ttl),
        body.reference,
    )
    .map_err(|e: NewPairingError| ApiError::validation(e.to_string()))
}

/// `POST /v1/pairings`: pairs two people, giving each a proxy number.
#[utoipa::path(
    post,
    path = "/v1/pairings",
    tag = "pairings",
    request_body = CreatePairingRequest,
    responses(
        (status = 201, description = "The pairing, created.", body = PairingResponse, links(
            ("get" = (operation_id = "get_pairing", parameters(("id" = "$response.body#/id")))),
            ("change_expiry" = (operation_id = "change_expiry", parameters(("id" = "$response.body#/id")))),
            ("close" = (operation_id = "close_pairing", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 200, description = "The same request was made before with this `reference`: the existing pairing.", body = PairingResponse),
        (status = 400, description = "The body is not JSON."),
        (status = 409, description = "`reference-conflict`, `proxy-number-unavailable` or `pool-exhausted`."),
        (status = 413, description = "The body is too large."),
        (status = 415, description = "The body is not `application/json`."),
        (status = 422, description = "Invalid numbers, labels, reference or TTL, or an unknown field."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn create_pairing(
    state: web::Data<AppState>,
    body: web::Json<CreatePairingRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = parse_request(body.into_inner(), state.settings.default_ttl_seconds)?;
    match pairings::create(
        &state.pool,
        &state.ledger,
        &state.outbox,
        &request,
        &state.settings.allocation,
    )
    .await
    {
        Ok(CreateOutcome::Created(p)) => {
            tracing::info!(pairing_id = %p.id, "pairing created");
            Ok(HttpResponse::Created().json(PairingResponse::from(p)))
        }
        Ok(CreateOutcome::Existing(p)) => {
            tracing::info!(pairing_id = %p.id, "pairing request repeated; returning the existing pairing");
            Ok(HttpResponse::Ok().json(PairingResponse::from(p)))
        }
        Err(e) => Err(create_error(e)),
    }
}

fn create_error(e: CreatePairingError) -> ApiError {
    match e {
        CreatePairingError::ReferenceConflict(existing) => ApiError::conflict(
            "reference-conflict",
            "Reference already in use",
            format!(
                "the active pairing {} has this reference with other participants",
                existing.id
            ),
        ),
        CreatePairingError::ParticipantIsPoolNumber { position } => ApiError::validation(format!(
            "participants[{position}].number is a pool number; a participant must be a real phone"
        )),
        CreatePairingError::ProxyNotInPool { position } => ApiError::validation(format!(
            "participants[{position}].proxy_number is not a pool number"
        )),
        CreatePairingError::ProxyUnavailable { position } => ApiError::conflict(
            "proxy-number-unavailable",
            "Proxy number unavailable",
            format!(
                "participants[{position}].proxy_number is retired, or already routes this participant in another active pairing"
            ),
        ),
        CreatePairingError::PoolExhausted {
            position,
            participant,
            country,
        } => ApiError::conflict(
            "pool-exhausted",
            "No pool number free for this participant",
            match country {
                Some(c) => format!(
                    "no pool number of {c} is free for participants[{position}] ({participant}): every one already routes this person; add numbers to the pool"
                ),
                None => format!(
                    "no pool number is free for participants[{position}] ({participant}): every one already routes this person; add numbers to the pool"
                ),
            },
        ),
        CreatePairingError::Contention => {
            ApiError::unavailable("too many concurrent requests for the same participants; retry")
        }
        CreatePairingError::Database(e) => e.into(),
    }
}

/// Parses a pairing id from the path; a malformed id is a 400, never a 404.
pub fn parse_pairing_id(raw: &str) -> Result<PairingId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::bad_request(format!("the pairing id is {e}")))
}

/// `GET /v1/pairings/{id}`: one pairing.
#[utoipa::path(
    get,
    path = "/v1/pairings/{id}",
    tag = "pairings",
    params(("id" = Uuid, Path, description = "The pairing's id.")),
    responses(
        (status = 200, description = "The pairing.", body = PairingResponse),
        (status = 400, description = "The id is not a UUID."),
        (status = 404, description = "No such pairing."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn get_pairing(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_pairing_id(&path)?;
    let pairing = pairings::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no pairing {id}")))?;
    Ok(HttpResponse::Ok().json(PairingResponse::from(pairing)))
}

/// `POST /v1/pairings/{id}/close`: closes a pairing; it stops routing at once.
#[utoipa::path(
    post,
    path = "/v1/pairings/{id}/close",
    tag = "pairings",
    params(("id" = Uuid, Path, description = "The pairing's id.")),
    responses(
        (status = 200, description = "The pairing, closed (or as it was, if it had already ended).", body = PairingResponse),
        (status = 400, description = "The id is not a UUID."),
        (status = 404, description = "No such pairing."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn close_pairing(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_pairing_id(&path)?;
    let pairing = state
        .routing
        .close(&state.ledger, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no pairing {id}")))?;
    tracing::info!(pairing_id = %id, status = pairing.status().as_str(), "pairing closed");
    Ok(HttpResponse::Ok().json(PairingResponse::from(pairing)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Pairings with this reference.
    #[param(min_length = 1, max_length = 128)]
    reference: Option<String>,
    /// Pairings with a participant of this real number.
    number: Option<String>,
    /// Pairings in this status now.
    #[param(value_type = Option<PairingStatusName>)]
    status: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

const CURSOR_KIND: &str = "pairings";

/// `GET /v1/pairings`: pairings, newest first.
#[utoipa::path(
    get,
    path = "/v1/pairings",
    tag = "pairings",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of pairings.", body = ListResponse<PairingResponse>),
        (status = 400, description = "Malformed query string or cursor."),
        (status = 422, description = "A filter or `limit` is not valid."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn list_pairings(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = page_size(query.limit)?;
    if let Some(reference) = &query.reference
        && (reference.is_empty()
            || reference.chars().count() > MAX_REFERENCE_LEN
            || has_hidden_characters(reference))
    {
        // No pairing can have it: refused rather than searched for (Postgres cannot even hold
        // a NUL byte).
        return Err(ApiError::validation(format!(
            "reference must be 1 to {MAX_REFERENCE_LEN} characters, without control or \
             invisible formatting characters"
        )));
    }
    let filter = PairingFilter {
        reference: query.reference,
        number: query
            .number
            .map(|n| parse_number("number", &n))
            .transpose()?,
        status: query
            .status
            .map(|s| {
                PairingStatus::parse(&s).ok_or_else(|| {
                    ApiError::validation("status must be one of active, closed, expired")
                })
            })
            .transpose()?,
    };
    let after = decode_cursor(CURSOR_KIND, query.cursor.as_deref())?
        .map(|k| parse_pairing_id(&k))
        .transpose()
        .map_err(|_| ApiError::bad_request("malformed cursor"))?;
    let page = pairings::list(&state.pool, &filter, after, limit).await?;
    Ok(HttpResponse::Ok().json(ListResponse {
        items: page.items.into_iter().map(PairingResponse::from).collect(),
        next_cursor: page
            .next
            .map(|k| encode_cursor(CURSOR_KIND, &k.to_string())),
    }))
}

/// Exactly one of `ttl_seconds` and `expires_at`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1, max_properties = 1, examples(json!({"ttl_seconds": 7200})))]
pub struct ChangeExpiryRequest {
    /// The pairing expires this many seconds from now (1 s to 90 days).
    #[schema(minimum = 1, maximum = 7_776_000, nullable = false)]
    pub ttl_seconds: Option<i64>,
    /// The pairing expires at this instant (RFC 3339), in the future and at most 90 days away.
    #[schema(nullable = false)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// `PATCH /v1/pairings/{id}`: moves the expiry of an active pairing.
#[utoipa::path(
    patch,
    path = "/v1/pairings/{id}",
    tag = "pairings",
    params(("id" = Uuid, Path, description = "The pairing's id.")),
    request_body = ChangeExpiryRequest,
    responses(
        (status = 200, description = "The pairing, with its new expiry.", body = PairingResponse),
        (status = 400, description = "The id is not a UUID, or the body is not JSON."),
        (status = 404, description = "No such pairing."),
        (status = 409, description = "`pairing-ended`: the pairing is closed or expired."),
        (status = 413, description = "The body is too large."),
        (status = 415, description = "The body is not `application/json`."),
        (status = 422, description = "Not exactly one of `ttl_seconds` and `expires_at`, or out of range."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn change_expiry(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<ChangeExpiryRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_pairing_id(&path)?;
    let expiry = match (body.ttl_seconds, body.expires_at) {
        (Some(ttl), None) => NewExpiry::FromNow(ttl_from_seconds(ttl).ok_or_else(|| {
            ApiError::validation(format!(
                "ttl_seconds must be between 1 and {MAX_TTL_SECONDS}"
            ))
        })?),
        (None, Some(at)) => NewExpiry::At(at),
        _ => {
            return Err(ApiError::validation(
                "give exactly one of ttl_seconds and expires_at",
            ));
        }
    };
    let max_ttl = chrono::Duration::seconds(MAX_TTL_SECONDS);
    match state.routing.change_expiry(id, expiry, max_ttl).await {
        Ok(p) => {
            tracing::info!(pairing_id = %id, expires_at = %p.expires_at, "pairing expiry changed");
            Ok(HttpResponse::Ok().json(PairingResponse::from(p)))
        }
        Err(ChangeExpiryError::NotFound) => Err(ApiError::not_found(format!("no pairing {id}"))),
        Err(ChangeExpiryError::Ended(p)) => Err(ApiError::conflict(
            "pairing-ended",
            "Pairing has ended",
            format!(
                "pairing {id} is {}; its expiry can no longer change",
                p.status().as_str()
            ),
        )),
        Err(ChangeExpiryError::OutOfRange) => Err(ApiError::validation(format!(
            "the new expiry must be in the future and at most {MAX_TTL_SECONDS} seconds from now"
        ))),
        Err(ChangeExpiryError::Database(e)) => Err(e.into()),
    }
}
