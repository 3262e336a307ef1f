//! `/v1/numbers`: the pool of proxy numbers.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use voice_proxy_domain::PhoneNumber;
use voice_proxy_persistence::numbers::{self, AddNumberError, CountryReport, PoolNumber};

use crate::auth::require_admin;
use crate::pagination::{ListResponse, decode_cursor, encode_cursor, page_size};
use crate::{ApiError, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/numbers", web::post().to(add_number))
        .route("/numbers", web::get().to(list_numbers))
        .route("/numbers/{number}", web::get().to(get_number))
        .route("/numbers/{number}", web::patch().to(update_number))
        .route("/numbers/{number}", web::delete().to(retire_number))
        .route("/pool", web::get().to(pool_report));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNumberRequest {
    pub number: String,
    #[serde(default)]
    pub reserved: bool,
}

#[derive(Serialize)]
pub struct NumberResponse {
    pub number: String,
    pub country: String,
    pub state: &'static str,
    pub reserved: bool,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

impl From<PoolNumber> for NumberResponse {
    fn from(n: PoolNumber) -> Self {
        Self {
            number: n.number.expose().to_owned(),
            country: n.country.to_string(),
            state: n.state.as_str(),
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

async fn add_number(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<AddNumberRequest>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

const CURSOR_KIND: &str = "numbers";

async fn list_numbers(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let limit = page_size(query.limit)?;
    let after = decode_cursor(CURSOR_KIND, query.cursor.as_deref())?;
    let page = numbers::list(&state.pool, after.as_deref(), limit).await?;
    Ok(HttpResponse::Ok().json(ListResponse {
        items: page.items.into_iter().map(NumberResponse::from).collect(),
        next_cursor: page.next.map(|k| encode_cursor(CURSOR_KIND, &k)),
    }))
}

async fn get_number(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let number = parse_path_number(&path)?;
    let found = numbers::get(&state.pool, &number)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{number} is not in the pool")))?;
    Ok(HttpResponse::Ok().json(NumberResponse::from(found)))
}

/// Retires a number: never allocated again; pairings that use it keep routing until they end.
async fn retire_number(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let number = parse_path_number(&path)?;
    let retired = numbers::retire(&state.pool, &number)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{number} is not in the pool")))?;
    tracing::info!(number = %number, "pool number retired");
    Ok(HttpResponse::Ok().json(NumberResponse::from(retired)))
}

fn parse_path_number(raw: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::parse(raw)
        .map_err(|e| ApiError::bad_request(format!("the path holds no valid phone number: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateNumberRequest {
    /// Reserved numbers are never chosen automatically, only when a request names them.
    pub reserved: bool,
}

async fn update_number(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<UpdateNumberRequest>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let number = parse_path_number(&path)?;
    let updated = numbers::set_reserved(&state.pool, &number, body.reserved)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{number} is not in the pool")))?;
    tracing::info!(number = %number, reserved = body.reserved, "pool number updated");
    Ok(HttpResponse::Ok().json(NumberResponse::from(updated)))
}

#[derive(Serialize)]
pub struct PoolReport {
    pub countries: Vec<CountryPool>,
}

#[derive(Serialize)]
pub struct CountryPool {
    pub country: String,
    pub numbers: NumberCounts,
    pub active_pairings: i64,
    /// The most active pairings held by one person on this country's numbers.
    pub max_pairings_per_person: i64,
    /// How many more pairings that busiest person can get here before a refusal.
    pub headroom: i64,
    pub exhaustion_refusals_24h: i64,
}

#[derive(Serialize)]
pub struct NumberCounts {
    pub active: i64,
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
async fn pool_report(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let report = numbers::report(&state.pool).await?;
    Ok(HttpResponse::Ok().json(PoolReport {
        countries: report.into_iter().map(CountryPool::from).collect(),
    }))
}
