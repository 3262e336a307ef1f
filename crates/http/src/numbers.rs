//! `/v1/numbers`: the pool of proxy numbers.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use voice_proxy_domain::PhoneNumber;
use voice_proxy_persistence::numbers::{
    self, AddNumberError, CountryReport, NumberState, PoolNumber,
};

use crate::auth::admin;
use crate::error::method_not_allowed;
use crate::pagination::{ListResponse, decode_cursor, encode_cursor, page_size};
use crate::{ApiError, AppState};

/// Every route needs the `admin` scope, checked before the request is read.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/numbers")
            .route(admin(web::post().to(add_number)))
            .route(admin(web::get().to(list_numbers)))
            .default_service(method_not_allowed("GET, POST")),
    )
    .service(
        web::resource("/numbers/{number}")
            .route(admin(web::get().to(get_number)))
            .route(admin(web::patch().to(update_number)))
            .route(admin(web::delete().to(retire_number)))
            .default_service(method_not_allowed("GET, PATCH, DELETE")),
    )
    .service(
        web::resource("/pool")
            .route(admin(web::get().to(pool_report)))
            .default_service(method_not_allowed("GET")),
    );
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"number": "12125550199"})))]
pub struct AddNumberRequest {
    /// The Vonage number, E.164 (`12125550123`; a leading `+` and spaces are accepted).
    #[schema(examples("12125550123"))]
    pub number: String,
    /// A reserved number is only given when a pairing names it as `proxy_number`.
    #[serde(default)]
    pub reserved: bool,
}

/// Whether a pool number may still be allocated.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NumberStateName {
    Active,
    Retired,
}

impl From<NumberState> for NumberStateName {
    fn from(s: NumberState) -> Self {
        match s {
            NumberState::Active => Self::Active,
            NumberState::Retired => Self::Retired,
        }
    }
}

/// A pool number.
#[derive(Serialize, ToSchema)]
pub struct NumberResponse {
    /// E.164 digits, without `+`.
    #[schema(pattern = "^[1-9][0-9]{5,14}$", examples("12125550123"))]
    pub number: String,
    /// ISO 3166-1 alpha-2 country of the number.
    #[schema(pattern = "^[A-Z]{2}$", examples("US"))]
    pub country: String,
    pub state: NumberStateName,
    pub reserved: bool,
    pub created_at: DateTime<Utc>,
    /// When the number was retired; `null` while it is active.
    #[schema(required = true)]
    pub retired_at: Option<DateTime<Utc>>,
}

impl From<PoolNumber> for NumberResponse {
    fn from(n: PoolNumber) -> Self {
        Self {
            number: n.number.expose().to_owned(),
            country: n.country.to_string(),
            state: n.state.into(),
            reserved: n.reserved,
            created_at: n.created_at,
            retired_at: n.retired_at,
        }
    }
}

/// Parses a phone number from a request field, naming the field in the refusal.
pub fn parse_number(field: &str, value: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::parse(value).map_err(|e| ApiError::validation(format!("{field}: {e}")))
}

/// `POST /v1/numbers`: adds a number to the pool.
#[utoipa::path(
    post,
    path = "/v1/numbers",
    tag = "numbers",
    request_body = AddNumberRequest,
    responses(
        (status = 201, description = "The number, added.", body = NumberResponse, links(
            ("get" = (operation_id = "get_number", parameters(("number" = "$response.body#/number")))),
            ("update" = (operation_id = "update_number", parameters(("number" = "$response.body#/number")))),
            ("retire" = (operation_id = "retire_number", parameters(("number" = "$response.body#/number")))),
        )),
        (status = 400, description = "The body is not JSON."),
        (status = 409, description = "`number-exists`: already in the pool; `number-is-participant`: a participant's number in an active pairing."),
        (status = 413, description = "The body is too large."),
        (status = 415, description = "The body is not `application/json`."),
        (status = 422, description = "Not a valid phone number, one of no single country, or an unknown field."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn add_number(
    state: web::Data<AppState>,
    body: web::Json<AddNumberRequest>,
) -> Result<HttpResponse, ApiError> {
    let number = parse_number("number", &body.number)?;
    let country = number.country().ok_or_else(|| {
        ApiError::validation("number: belongs to no single country, so it cannot be a pool number")
    })?;
    match numbers::add(&state.pool, &number, &country, body.reserved).await {
        Ok(added) => {
            tracing::info!(number = %number, country = %country, "pool number added");
            Ok(HttpResponse::Created().json(NumberResponse::from(added)))
        }
        Err(AddNumberError::AlreadyExists) => Err(ApiError::conflict(
            "number-exists",
            "Number already in the pool",
            format!("{number} is already in the pool"),
        )),
        Err(AddNumberError::IsParticipant) => Err(ApiError::conflict(
            "number-is-participant",
            "Number belongs to a participant",
            format!("{number} is a participant's number in an active pairing"),
        )),
        Err(AddNumberError::Database(e)) => Err(e.into()),
    }
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

const CURSOR_KIND: &str = "numbers";

/// `GET /v1/numbers`: the pool, in the order of the numbers' digits.
#[utoipa::path(
    get,
    path = "/v1/numbers",
    tag = "numbers",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of pool numbers.", body = ListResponse<NumberResponse>),
        (status = 400, description = "Malformed query string or cursor."),
        (status = 422, description = "`limit` out of range."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn list_numbers(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_size(query.limit)?;
    let after = decode_cursor(CURSOR_KIND, query.cursor.as_deref())?;
    let page = numbers::list(&state.pool, after.as_deref(), limit).await?;
    Ok(HttpResponse::Ok().json(ListResponse {
        items: page.items.into_iter().map(NumberResponse::from).collect(),
        next_cursor: page.next.map(|k| encode_cursor(CURSOR_KIND, &k)),
    }))
}

/// `GET /v1/numbers/{number}`: one pool number.
#[utoipa::path(
    get,
    path = "/v1/numbers/{number}",
    tag = "numbers",
    params(NumberPath),
    responses(
        (status = 200, description = "The pool number.", body = NumberResponse),
        (status = 400, description = "The path holds no valid phone number."),
        (status = 404, description = "Not in the pool."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn get_number(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let number = parse_path_number(&path)?;
    let found = numbers::get(&state.pool, &number)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{number} is not in the pool")))?;
    Ok(HttpResponse::Ok().json(NumberResponse::from(found)))
}

/// `DELETE /v1/numbers/{number}`: retires a number: never allocated again; pairings that use it
/// keep routing until they end.
#[utoipa::path(
    delete,
    path = "/v1/numbers/{number}",
    tag = "numbers",
    params(NumberPath),
    responses(
        (status = 200, description = "The number, retired.", body = NumberResponse),
        (status = 400, description = "The path holds no valid phone number."),
        (status = 404, description = "Not in the pool."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn retire_number(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let number = parse_path_number(&path)?;
    let retired = numbers::retire(&state.pool, &number)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{number} is not in the pool")))?;
    tracing::info!(number = %number, "pool number retired");
    Ok(HttpResponse::Ok().json(NumberResponse::from(retired)))
}

/// The `{number}` of a pool number's path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NumberPath {
    /// The pool number, E.164 digits.
    #[param(example = "12125550123", pattern = "^[1-9][0-9]{5,14}$")]
    #[allow(dead_code)]
    number: String,
}

fn parse_path_number(raw: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::parse(raw)
        .map_err(|e| ApiError::bad_request(format!("the path holds no valid phone number: {e}")))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"reserved": true})))]
pub struct UpdateNumberRequest {
    /// Reserved numbers are never chosen automatically, only when a request names them.
    pub reserved: bool,
}

/// `PATCH /v1/numbers/{number}`: reserves a number or releases it to automatic allocation.
#[utoipa::path(
    patch,
    path = "/v1/numbers/{number}",
    tag = "numbers",
    params(NumberPath),
    request_body = UpdateNumberRequest,
    responses(
        (status = 200, description = "The number, updated.", body = NumberResponse),
        (status = 400, description = "The path holds no valid phone number, or the body is not JSON."),
        (status = 404, description = "Not in the pool."),
        (status = 413, description = "The body is too large."),
        (status = 415, description = "The body is not `application/json`."),
        (status = 422, description = "A field is missing, of the wrong type, or unknown."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn update_number(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<UpdateNumberRequest>,
) -> Result<HttpResponse, ApiError> {
    let number = parse_path_number(&path)?;
    let updated = numbers::set_reserved(&state.pool, &number, body.reserved)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{number} is not in the pool")))?;
    tracing::info!(number = %number, reserved = body.reserved, "pool number updated");
    Ok(HttpResponse::Ok().json(NumberResponse::from(updated)))
}

/// The pool, per country.
#[derive(Serialize, ToSchema)]
pub struct PoolReport {
    pub countries: Vec<CountryPool>,
}

/// The pool and its load in one country.
#[derive(Serialize, ToSchema)]
pub struct CountryPool {
    /// ISO 3166-1 alpha-2.
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: String,
    pub numbers: NumberCounts,
    pub active_pairings: i64,
    /// The most active pairings held by one person on this country's numbers.
    pub max_pairings_per_person: i64,
    /// How many more pairings that busiest person can get here before a refusal.
    pub headroom: i64,
    pub exhaustion_refusals_24h: i64,
}

/// Pool numbers by state.
#[derive(Serialize, ToSchema)]
pub struct NumberCounts {
    /// Active numbers that allocation may choose.
    pub active: i64,
    /// Active numbers given only when a pairing names them.
    pub reserved: i64,
    pub retired: i64,
}

impl From<CountryReport> for CountryPool {
    fn from(r: CountryReport) -> Self {
        Self {
            headroom: (r.active - r.max_held_by_one_person).max(0),
            country: r.country,
            numbers: NumberCounts {
                active: r.active,
                reserved: r.reserved,
                retired: r.retired,
            },
            active_pairings: r.active_pairings,
            max_pairings_per_person: r.max_held_by_one_person,
            exhaustion_refusals_24h: r.exhaustion_refusals_24h,
        }
    }
}

/// `GET /v1/pool`: per country, the numbers, the load and the headroom before exhaustion.
#[utoipa::path(
    get,
    path = "/v1/pool",
    tag = "numbers",
    responses(
        (status = 200, description = "The pool report.", body = PoolReport),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn pool_report(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let report = numbers::report(&state.pool).await?;
    Ok(HttpResponse::Ok().json(PoolReport {
        countries: report.into_iter().map(CountryPool::from).collect(),
    }))
}
