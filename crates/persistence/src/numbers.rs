//! The pool of proxy numbers.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use voice_proxy_domain::{CountryCode, PhoneNumber};

use crate::pagination::Page;
use crate::violates;

pub use voice_proxy_domain::pool::{NumberState, PoolNumber};

#[derive(sqlx::FromRow)]
struct Row {
    number: String,
    country: String,
    state: String,
    reserved: bool,
    created_at: DateTime<Utc>,
    retired_at: Option<DateTime<Utc>>,
}

impl TryFrom<Row> for PoolNumber {
    type Error = sqlx::Error;
    fn try_from(r: Row) -> Result<Self, sqlx::Error> {
        Ok(Self {
            number: PhoneNumber::from_trusted_digits(r.number),
            country: CountryCode::parse(&r.country)
                .ok_or_else(|| sqlx::Error::Decode("bad country code in pool_numbers".into()))?,
            state: match r.state.as_str() {
                "retired" => NumberState::Retired,
                _ => NumberState::Active,
            },
            reserved: r.reserved,
            created_at: r.created_at,
            retired_at: r.retired_at,
        })
    }
}

const COLUMNS: &str = "number, country, state, reserved, created_at, retired_at";

#[derive(Debug, thiserror::Error)]
pub enum AddNumberError {
    #[error("the number is already in the pool")]
    AlreadyExists,
    #[error("the number is a participant of an active pairing")]
    IsParticipant,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[tracing::instrument(skip_all, fields(number = %number))]
pub async fn add(
    pool: &PgPool,
    number: &PhoneNumber,
    country: &CountryCode,
    reserved: bool,
) -> Result<PoolNumber, AddNumberError> {
    let row: Result<Row, sqlx::Error> = sqlx::query_as(
        "INSERT INTO pool_numbers (number, country, reserved) VALUES ($1, $2, $3)
         RETURNING number, country, state, reserved, created_at, retired_at",
    )
    .bind(number.expose())
    .bind(country.as_str())
    .bind(reserved)
    .fetch_one(pool)
    .await;
    match row {
        Ok(row) => Ok(row.try_into()?),
        Err(e) if violates(&e, "pool_numbers_pkey") => Err(AddNumberError::AlreadyExists),
        Err(e) if violates(&e, "pool_numbers_not_participant") => {
            Err(AddNumberError::IsParticipant)
        }
        Err(e) => Err(e.into()),
    }
}

#[tracing::instrument(skip_all)]
pub async fn get(pool: &PgPool, number: &PhoneNumber) -> Result<Option<PoolNumber>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM pool_numbers WHERE number = $1"
    )))
    .bind(number.expose())
    .fetch_optional(pool)
    .await?;
    row.map(TryInto::try_into).transpose()
}

/// Numbers in the order of their digits, after `after`.
#[tracing::instrument(skip_all)]
pub async fn list(
    pool: &PgPool,
    after: Option<&str>,
    limit: u32,
) -> Result<Page<PoolNumber, String>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM pool_numbers WHERE ($1::text IS NULL OR number > $1)
         ORDER BY number LIMIT $2"
    )))
    .bind(after)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let items = rows
        .into_iter()
        .map(TryInto::try_into)
        .collect::<Result<Vec<PoolNumber>, _>>()?;
    Ok(Page::from_rows(items, limit, |n| {
        n.number.expose().to_owned()
    }))
}

/// Retires a number: it is never allocated again, while pairings that use it keep routing until
/// they end. Retiring a retired number changes nothing. `None` if the number is not in the pool.
#[tracing::instrument(skip_all, fields(number = %number))]
pub async fn retire(
    pool: &PgPool,
    number: &PhoneNumber,
) -> Result<Option<PoolNumber>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE pool_numbers
            SET state = 'retired', retired_at = COALESCE(retired_at, now())
          WHERE number = $1
         RETURNING {COLUMNS}"
    )))
    .bind(number.expose())
    .fetch_optional(pool)
    .await?;
    row.map(TryInto::try_into).transpose()
}

/// Marks a number reserved (chosen only when a request names it) or not. `None` if the number is
/// not in the pool.
#[tracing::instrument(skip_all, fields(number = %number, reserved))]
pub async fn set_reserved(
    pool: &PgPool,
    number: &PhoneNumber,
    reserved: bool,
) -> Result<Option<PoolNumber>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE pool_numbers SET reserved = $2 WHERE number = $1 RETURNING {COLUMNS}"
    )))
    .bind(number.expose())
    .bind(reserved)
    .fetch_optional(pool)
    .await?;
    row.map(TryInto::try_into).transpose()
}

/// The state of the pool in one country.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CountryReport {
    pub country: String,
    /// Active numbers that allocation may choose.
    pub active: i64,
    /// Active numbers chosen only when a request names them.
    pub reserved: i64,
    pub retired: i64,
    /// Participants of active pairings whose proxy number is of this country.
    pub active_pairings: i64,
    /// The most active pairings any one person holds on numbers of this country. A person can
    /// hold at most one active pairing per number, so when this reaches `active` the next
    /// pairing for that person is refused: `active - max_held_by_one_person` is the headroom.
    pub max_held_by_one_person: i64,
    /// Pairings refused for exhaustion in the last 24 hours.
    pub exhaustion_refusals_24h: i64,
}

/// Per-country figures of the pool. It reads every active participant once, so it costs a scan
/// of the active pairings: an operator's report, not something to poll every second.
#[tracing::instrument(skip_all)]
pub async fn report(pool: &PgPool) -> Result<Vec<CountryReport>, sqlx::Error> {
    sqlx::query_as(
        "WITH numbers AS (
             SELECT country,
                    count(*) FILTER (WHERE state = 'active' AND NOT reserved) AS active,
                    count(*) FILTER (WHERE state = 'active' AND reserved) AS reserved,
                    count(*) FILTER (WHERE state = 'retired') AS retired
               FROM pool_numbers GROUP BY country
         ), held AS (
             SELECT n.country, p.number, count(*) AS n
               FROM participants p JOIN pool_numbers n ON n.number = p.proxy_number
              WHERE upper(p.active_during) > now()
              GROUP BY n.country, p.number
         ), pairings AS (
             SELECT country, sum(n)::bigint AS active_pairings, max(n) AS max_held
               FROM held GROUP BY country
         ), refusals AS (
             SELECT country, count(*) AS n FROM exhaustion_refusals
              WHERE refused_at > now() - interval '24 hours' GROUP BY country
         )
         SELECT c.country,
                COALESCE(numbers.active, 0) AS active,
                COALESCE(numbers.reserved, 0) AS reserved,
                COALESCE(numbers.retired, 0) AS retired,
                COALESCE(pairings.active_pairings, 0) AS active_pairings,
                COALESCE(pairings.max_held, 0) AS max_held_by_one_person,
                COALESCE(refusals.n, 0) AS exhaustion_refusals_24h
           FROM (SELECT country FROM numbers
                 UNION SELECT country FROM refusals WHERE country IS NOT NULL) c
           LEFT JOIN numbers USING (country)
           LEFT JOIN pairings USING (country)
           LEFT JOIN refusals USING (country)
          ORDER BY c.country",
    )
    .fetch_all(pool)
    .await
}
