//! The pool of proxy numbers.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use voice_proxy_domain::allocation::{self, Candidate};
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

/// Changes to the pool numbers' load counters (`pool_numbers.active_load`) that this process has
/// made and not yet written: +1 for each number given to a participant, -1 for each taken back
/// at close.
///
/// The counters only steer the spread of new pairings (among equally good numbers, the least
/// loaded first); correctness never depends on them. Writing them on every create made every
/// create pay two more commits and made concurrent creates queue on the same few rows (they all
/// pick among the same least-loaded numbers). So a create counts its numbers here, at once (the
/// next create of this process sees them when it picks), and [`LoadLedger::flush`] writes what
/// has piled up in one statement, from a background task every ~100 ms and at shutdown. Several
/// processes each see the others' creates only once flushed: a short-lived, bounded unevenness.
/// A process that dies without its last flush leaves its last ~100 ms of changes unwritten: the
/// counters then stay that far off (nothing recounts them; they only steer the spread).
#[derive(Debug, Default)]
pub struct LoadLedger {
    pending: Mutex<HashMap<String, Pending>>,
}

#[derive(Debug, Clone, Default)]
struct Pending {
    delta: i64,
    /// The country of the search the number was found by; `None` when not known.
    country: Option<CountryCode>,
}

impl LoadLedger {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        // A panic while holding the lock cannot leave the map inconsistent (each change is one
        // insert), so a poisoned lock is used as is.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `delta` to the unwritten load of `number`.
    pub fn add(&self, number: &str, delta: i64, country: Option<&CountryCode>) {
        apply(&mut self.lock(), number, delta, country);
    }

    /// The unwritten load of `number`.
    pub fn pending(&self, number: &str) -> i64 {
        self.lock().get(number).map_or(0, |p| p.delta)
    }

    /// How many numbers of `country` (of any, when `None`) carry unwritten load: a search
    /// must read this many more candidates than it needs for the least loaded ones, once that
    /// load is counted, to be among them. Numbers of unknown country count for every country.
    pub fn pending_in(&self, country: Option<&CountryCode>) -> usize {
        self.lock()
            .values()
            .filter(|p| p.delta > 0)
            .filter(|p| match (country, &p.country) {
                (Some(wanted), Some(c)) => wanted == c,
                _ => true,
            })
            .count()
    }

    /// Adds the unwritten load to each candidate's, picks one by
    /// [`voice_proxy_domain::allocation::pick`] and counts it, all under one lock: two creates
    /// of this process never both see a number as the least loaded one.
    pub fn pick(
        &self,
        candidates: &mut [Candidate],
        seed: u64,
        country: Option<&CountryCode>,
    ) -> Option<PhoneNumber> {
        let mut pending = self.lock();
        for c in candidates.iter_mut() {
            c.load += pending.get(c.number.expose()).map_or(0, |p| p.delta);
        }
        let chosen = allocation::pick(candidates, seed)?.number.clone();
        apply(&mut pending, chosen.expose(), 1, country);
        Some(chosen)
    }

    /// Writes the unwritten load to `pool_numbers` in one statement (the numbers in order, so
    /// that two flushing processes lock rows in the same order). The written amounts are taken
    /// off the ledger only once the statement succeeded; what changed meanwhile stays for the
    /// next flush. Returns how many numbers were written.
    #[tracing::instrument(skip_all)]
    pub async fn flush(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        let mut batch: Vec<(String, i64)> = self
            .lock()
            .iter()
            .filter(|(_, p)| p.delta != 0)
            .map(|(n, p)| (n.clone(), p.delta))
            .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        batch.sort_unstable();
        let (numbers, deltas): (Vec<String>, Vec<i64>) = batch.iter().cloned().unzip();
        sqlx::query(
            "UPDATE pool_numbers n SET active_load = GREATEST(n.active_load + d.delta, 0)
               FROM (SELECT number, delta FROM unnest($1::text[], $2::bigint[])
                        AS u (number, delta) ORDER BY number) d
              WHERE n.number = d.number",
        )
        .bind(&numbers)
        .bind(&deltas)
        .execute(pool)
        .await?;
        for (number, delta) in &batch {
            self.add(number, -delta, None);
        }
        Ok(batch.len())
    }
}

/// Adds `delta` to the unwritten load of `number` in `pending`; a number whose changes cancel
/// out leaves the ledger.
fn apply(
    pending: &mut HashMap<String, Pending>,
    number: &str,
    delta: i64,
    country: Option<&CountryCode>,
) {
    let entry = pending.entry(number.to_owned()).or_default();
    entry.delta += delta;
    if entry.country.is_none() {
        entry.country = country.cloned();
    }
    if entry.delta == 0 {
        pending.remove(number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(loads: &[i64]) -> Vec<Candidate> {
        loads
            .iter()
            .enumerate()
            .map(|(i, load)| Candidate {
                number: PhoneNumber::from_trusted_digits(format!("1212555{:04}", 1000 + i)),
                load: *load,
            })
            .collect()
    }

    #[test]
    fn picks_of_one_process_spread_over_equally_loaded_numbers_before_any_flush() {
        let ledger = LoadLedger::new();
        let us = CountryCode::parse("US").unwrap();
        let mut picked = std::collections::HashSet::new();
        for seed in 0..16 {
            // Every create reads the same counters from the database, as nothing is flushed.
            let mut list = candidates(&[7; 16]);
            let n = ledger.pick(&mut list, seed * 7919, Some(&us)).unwrap();
            assert!(
                picked.insert(n),
                "a number was picked twice while others were free"
            );
        }
        assert_eq!(ledger.pending_in(Some(&us)), 16);
        assert_eq!(ledger.pending_in(CountryCode::parse("GB").as_ref()), 0);
        assert_eq!(ledger.pending_in(None), 16);
    }

    #[test]
    fn unwritten_load_counts_when_picking_and_taking_back_clears_it() {
        let ledger = LoadLedger::new();
        let mut list = candidates(&[3, 2]);
        // The second number is less loaded in the database but carries two unwritten pairings.
        ledger.add(list[1].number.expose(), 2, None);
        let n = ledger.pick(&mut list, 0, None).unwrap();
        assert_eq!(n.expose(), "12125551000");
        assert_eq!(ledger.pending("12125551000"), 1);
        ledger.add("12125551000", -1, None);
        ledger.add("12125551001", -2, None);
        assert_eq!(ledger.pending_in(None), 0);
        assert!(ledger.lock().is_empty());
    }
}
