//! `/v1/pairings`: create, read, list and close pairings.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use voice_proxy_domain::call_options::{self, CallOptions, CallOptionsOverrides};
use voice_proxy_domain::pairing::NewPairingError;
use voice_proxy_domain::pairing::Pairing;
use voice_proxy_domain::pairing::{
    MAX_LABEL_LEN, MAX_REFERENCE_LEN, MAX_TTL_SECONDS, ttl_from_seconds,
};
use voice_proxy_domain::text::has_hidden_characters;
use voice_proxy_domain::{NewPairing, PairingId, PairingStatus, ParticipantRequest};
use voice_proxy_persistence::pairings::{
    self, ChangePairingError, CreateOutcome, CreatePairingError, NewExpiry, PairingChange,
    PairingFilter,
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
            .route(admin(web::patch().to(change_pairing)))
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
    /// What calls through this pairing do besides connecting; unset options follow the
    /// service's defaults.
    #[serde(default, deserialize_with = "object")]
    #[schema(nullable = false)]
    pub call_options: Option<CallOptionsBody>,
    /// Gives each participant a numeric `pin`: calling their proxy number from another phone,
    /// they type it to be connected as themselves. Needs `PUBLIC_BASE_URL`.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    pub pin_access: Option<bool>,
}

/// For an optional object field that may be left out but must otherwise be a JSON object: `null`
/// and arrays are refused (serde would read an array as the struct's fields in order).
fn object<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        value @ serde_json::Value::Object(_) => serde_json::from_value(value)
            .map(Some)
            .map_err(D::Error::custom),
        _ => Err(D::Error::custom("expected a JSON object")),
    }
}

/// For an optional field that may be left out but not given as `null`: `null` is refused.
fn not_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Call options as a client sets them. Each is optional; an unset one follows the service's
/// default. `null` for `announcement` or `whisper` means none (even if the service has a
/// default one).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "announcement": "This call may be recorded.",
    "whisper": "Your {label} for order {reference}",
    "record": true,
    "max_call_seconds": 1800,
    "ring_timeout_seconds": 30
})))]
pub struct CallOptionsBody {
    /// Played to the caller before the call is connected; 1 to 1500 characters, no run of 7 or
    /// more digits.
    #[serde(default, deserialize_with = "call_options::present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 1500)]
    pub announcement: Option<Option<String>>,
    /// Played to the callee when they pick up, before the call is bridged; may name the
    /// caller's label and the pairing's reference as `{label}` and `{reference}`; 1 to 300
    /// characters, no run of 7 or more digits. Needs `PUBLIC_BASE_URL`.
    #[serde(default, deserialize_with = "call_options::present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 300)]
    pub whisper: Option<Option<String>>,
    /// Record calls (both sides, one channel each). Needs `PUBLIC_BASE_URL`.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    pub record: Option<bool>,
    /// The longest a call may last, 1 to 7200 seconds.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(minimum = 1, maximum = 7200, nullable = false)]
    pub max_call_seconds: Option<i64>,
    /// How long the callee's phone rings, 3 to 7200 seconds.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(minimum = 3, maximum = 7200, nullable = false)]
    pub ring_timeout_seconds: Option<i64>,
}

impl CallOptionsBody {
    /// The options as the domain has them, checked; a feature that needs Vonage to call us back
    /// is refused without a public URL.
    fn parse(self, public_base_url: Option<&str>) -> Result<CallOptionsOverrides, ApiError> {
        let seconds = |name: &str, v: Option<i64>, min: i64| {
            v.map(|v| {
                u32::try_from(v)
                    .ok()
                    .filter(|v| i64::from(*v) >= min && *v <= 7200)
                    .ok_or_else(|| {
                        ApiError::validation(format!(
                            "call_options.{name} must be between {min} and 7200"
                        ))
                    })
            })
            .transpose()
        };
        let overrides = CallOptionsOverrides {
            announcement: self.announcement,
            whisper: self.whisper,
            record: self.record,
            max_call_seconds: seconds("max_call_seconds", self.max_call_seconds, 1)?,
            ring_timeout_seconds: seconds("ring_timeout_seconds", self.ring_timeout_seconds, 3)?,
        };
        overrides
            .validate()
            .map_err(|e| ApiError::validation(e.to_string()))?;
        if public_base_url.is_none() {
            let needs = if matches!(overrides.whisper, Some(Some(_))) {
                Some("call_options.whisper")
            } else if overrides.record == Some(true) {
                Some("call_options.record")
            } else {
                None
            };
            if let Some(field) = needs {
                return Err(needs_public_url(field));
            }
        }
        Ok(overrides)
    }
}

/// The 422 for a feature that needs Vonage to call this service back, without a public URL.
fn needs_public_url(field: &str) -> ApiError {
    ApiError::validation(format!(
        "{field} needs this service's public URL (PUBLIC_BASE_URL), which is not set: Vonage \
         calls the service back for it"
    ))
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
    /// The options calls through this pairing get now: those it sets, and the service's
    /// defaults for the rest.
    pub call_options: CallOptionsResponse,
    /// Whether each participant has a `pin` for calling from another phone.
    pub pin_access: bool,
}

#[derive(Serialize, ToSchema)]
pub struct CallOptionsResponse {
    #[schema(required = true)]
    pub announcement: Option<String>,
    #[schema(required = true)]
    pub whisper: Option<String>,
    pub record: bool,
    #[schema(minimum = 1, maximum = 7200)]
    pub max_call_seconds: u32,
    #[schema(minimum = 3, maximum = 7200)]
    pub ring_timeout_seconds: u32,
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
    /// With PIN access: what this participant types when calling their proxy number from
    /// another phone. Give it to them alone.
    #[schema(required = true, pattern = "^[0-9]{4,10}$")]
    pub pin: Option<String>,
}

impl PairingResponse {
    /// The pairing as the API shows it, its options resolved against `defaults`.
    pub fn new(p: Pairing, defaults: &CallOptions) -> Self {
        let status = p.status().into();
        let options = p.call_options.resolve(defaults);
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
                    pin: x.pin.map(|pin| pin.expose().to_owned()),
                })
                .collect(),
            call_options: CallOptionsResponse {
                announcement: options.announcement,
                whisper: options.whisper,
                record: options.record,
                max_call_seconds: options.max_call_seconds,
                ring_timeout_seconds: options.ring_timeout_seconds,
            },
            pin_access: p.pin_access,
        }
    }
}

pub(crate) fn parse_request(
    body: CreatePairingRequest,
    state: &AppState,
) -> Result<NewPairing, ApiError> {
    let settings = &state.settings;
    let public_base_url = settings.public_base_url.as_deref();
    let call_options = body
        .call_options
        .map(|o| o.parse(public_base_url))
        .transpose()?
        .unwrap_or_default();
    let pin_access = body.pin_access.unwrap_or(false);
    if pin_access && public_base_url.is_none() {
        return Err(needs_public_url("pin_access"));
    }
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
    let mut request = NewPairing::new(
        participants,
        body.ttl_seconds.unwrap_or(settings.default_ttl_seconds),
        body.reference,
    )
    .map_err(|e: NewPairingError| ApiError::validation(e.to_string()))?;
    request.call_options = call_options;
    request.pin_digits = pin_access.then_some(settings.pin.digits);
    Ok(request)
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
            ("change" = (operation_id = "change_pairing", parameters(("id" = "$response.body#/id")))),
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
    let request = parse_request(body.into_inner(), &state)?;
    let defaults = &state.settings.call_defaults;
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
            Ok(HttpResponse::Created().json(PairingResponse::new(p, defaults)))
        }
        Ok(CreateOutcome::Existing(p)) => {
            tracing::info!(pairing_id = %p.id, "pairing request repeated; returning the existing pairing");
            Ok(HttpResponse::Ok().json(PairingResponse::new(p, defaults)))
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
        CreatePairingError::PinsExhausted => ApiError::conflict(
            "pins-exhausted",
            "No PIN free on a proxy number",
            "every PIN of the configured length (PIN_LENGTH) is in use on a participant's proxy \
             number; raise PIN_LENGTH or create the pairing without pin_access",
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
    Ok(HttpResponse::Ok().json(PairingResponse::new(pairing, &state.settings.call_defaults)))
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
    Ok(HttpResponse::Ok().json(PairingResponse::new(pairing, &state.settings.call_defaults)))
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
        items: page
            .items
            .into_iter()
            .map(|p| PairingResponse::new(p, &state.settings.call_defaults))
            .collect(),
        next_cursor: page
            .next
            .map(|k| encode_cursor(CURSOR_KIND, &k.to_string())),
    }))
}

/// At most one of `ttl_seconds` and `expires_at`, and `call_options`; at least one field.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1, examples(json!({"ttl_seconds": 7200}), json!({"call_options": {"record": true}})))]
pub struct ChangePairingRequest {
    /// The pairing expires this many seconds from now (1 s to 90 days).
    #[serde(default, deserialize_with = "not_null")]
    #[schema(minimum = 1, maximum = 7_776_000, nullable = false)]
    pub ttl_seconds: Option<i64>,
    /// The pairing expires at this instant (RFC 3339), in the future and at most 90 days away.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Replaces the options it sets; the others stay as they are.
    #[serde(default, deserialize_with = "object")]
    #[schema(nullable = false)]
    pub call_options: Option<CallOptionsBody>,
}

/// `PATCH /v1/pairings/{id}`: moves the expiry of an active pairing, or changes its call options.
#[utoipa::path(
    patch,
    path = "/v1/pairings/{id}",
    tag = "pairings",
    params(("id" = Uuid, Path, description = "The pairing's id.")),
    request_body = ChangePairingRequest,
    responses(
        (status = 200, description = "The pairing, changed.", body = PairingResponse),
        (status = 400, description = "The id is not a UUID, or the body is not JSON."),
        (status = 404, description = "No such pairing."),
        (status = 409, description = "`pairing-ended`: the pairing is closed or expired."),
        (status = 413, description = "The body is too large."),
        (status = 415, description = "The body is not `application/json`."),
        (status = 422, description = "No field, both `ttl_seconds` and `expires_at`, a value out of range, or an option that needs `PUBLIC_BASE_URL` without it."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn change_pairing(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<ChangePairingRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_pairing_id(&path)?;
    let body = body.into_inner();
    let expiry = match (body.ttl_seconds, body.expires_at) {
        (Some(ttl), None) => Some(NewExpiry::FromNow(ttl_from_seconds(ttl).ok_or_else(
            || {
                ApiError::validation(format!(
                    "ttl_seconds must be between 1 and {MAX_TTL_SECONDS}"
                ))
            },
        )?)),
        (None, Some(at)) => Some(NewExpiry::At(at)),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(ApiError::validation(
                "give at most one of ttl_seconds and expires_at",
            ));
        }
    };
    let call_options = body
        .call_options
        .map(|o| o.parse(state.settings.public_base_url.as_deref()))
        .transpose()?;
    if expiry.is_none() && call_options.is_none() {
        return Err(ApiError::validation(
            "give ttl_seconds or expires_at, or call_options",
        ));
    }
    let change = PairingChange {
        expiry,
        call_options,
    };
    let max_ttl = chrono::Duration::seconds(MAX_TTL_SECONDS);
    match state.routing.change(id, &change, max_ttl).await {
        Ok(p) => {
            tracing::info!(
                pairing_id = %id,
                expires_at = %p.expires_at,
                options_changed = change.call_options.is_some(),
                "pairing changed"
            );
            Ok(HttpResponse::Ok().json(PairingResponse::new(p, &state.settings.call_defaults)))
        }
        Err(ChangePairingError::NotFound) => Err(ApiError::not_found(format!("no pairing {id}"))),
        Err(ChangePairingError::Ended(p)) => Err(ApiError::conflict(
            "pairing-ended",
            "Pairing has ended",
            format!(
                "pairing {id} is {}; it can no longer change",
                p.status().as_str()
            ),
        )),
        Err(ChangePairingError::OutOfRange) => Err(ApiError::validation(format!(
            "the new expiry must be in the future and at most {MAX_TTL_SECONDS} seconds from now"
        ))),
        Err(ChangePairingError::Database(e)) => Err(e.into()),
    }
}
