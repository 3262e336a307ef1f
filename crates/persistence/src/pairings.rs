//! Pairings and their participants: creation with proxy-number allocation, lookup for routing,
//! close, listing.

use chrono::{DateTime, Duration, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder, Transaction};
use uuid::Uuid;
use voice_proxy_domain::allocation::{self, AllocationPolicy, Candidate, PersonHistory, Search};
use voice_proxy_domain::{
    CountryCode, NewPairing, PairingId, PairingStatus, ParticipantRequest, PhoneNumber,
};

use crate::pagination::Page;
use crate::violates;

/// How many times a create is retried after losing a race to a concurrent one.
const MAX_ATTEMPTS: usize = 8;
/// How many candidates one search returns to pick from.
const CANDIDATES_PER_SEARCH: i64 = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub number: PhoneNumber,
    pub label: Option<String>,
    /// The pool number this participant dials to reach the other one.
    pub proxy_number: PhoneNumber,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pairing {
    pub id: PairingId,
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub participants: [Participant; 2],
    /// The database's clock when the row was read: the status is judged by it.
    pub read_at: DateTime<Utc>,
}

impl Pairing {
    pub fn status(&self) -> PairingStatus {
        PairingStatus::at(self.read_at, self.expires_at, self.closed_at)
    }
}

#[derive(sqlx::FromRow)]
struct PairingRow {
    id: Uuid,
    reference: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
    read_at: DateTime<Utc>,
    a_number: String,
    a_label: Option<String>,
    a_proxy: String,
    b_number: String,
    b_label: Option<String>,
    b_proxy: String,
}

impl From<PairingRow> for Pairing {
    fn from(r: PairingRow) -> Self {
        let participant = |number, label, proxy| Participant {
            number: PhoneNumber::from_trusted_digits(number),
            label,
            proxy_number: PhoneNumber::from_trusted_digits(proxy),
        };
        Self {
            id: PairingId::from_uuid(r.id),
            reference: r.reference,
            created_at: r.created_at,
            expires_at: r.expires_at,
            closed_at: r.closed_at,
            participants: [
                participant(r.a_number, r.a_label, r.a_proxy),
                participant(r.b_number, r.b_label, r.b_proxy),
            ],
            read_at: r.read_at,
        }
    }
}

const SELECT_PAIRING: &str = "SELECT p.id, p.reference, p.created_at, p.expires_at, p.closed_at,
        now() AS read_at,
        a.number AS a_number, a.label AS a_label, a.proxy_number AS a_proxy,
        b.number AS b_number, b.label AS b_label, b.proxy_number AS b_proxy
   FROM pairings p
   JOIN participants a ON a.pairing_id = p.id AND a.position = 0
   JOIN participants b ON b.pairing_id = p.id AND b.position = 1";

#[derive(Debug)]
pub enum CreateOutcome {
    Created(Pairing),
    /// The same request was made before under the same reference: nothing was allocated.
    Existing(Pairing),
}

#[derive(Debug, thiserror::Error)]
pub enum CreatePairingError {
    #[error("an active pairing with this reference has other participants")]
    ReferenceConflict(Box<Pairing>),
    #[error("participant {position} has a number of the pool")]
    ParticipantIsPoolNumber { position: usize },
    #[error("the proxy number asked for participant {position} is not in the pool")]
    ProxyNotInPool { position: usize },
    #[error(
        "the proxy number asked for participant {position} is retired or already routes this participant"
    )]
    ProxyUnavailable { position: usize },
    #[error("no pool number is free for participant {position} ({participant})")]
    PoolExhausted {
        position: usize,
        participant: PhoneNumber,
        country: Option<CountryCode>,
    },
    #[error("gave up after losing {MAX_ATTEMPTS} races to concurrent requests")]
    Contention,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Creates a pairing, choosing each participant's proxy number by `policy`.
///
/// Race-free by construction: the choice is made from a snapshot, and the constraint
/// `participants_one_route` refuses the insert if a concurrent request took the same
/// (person, proxy number) meanwhile; the whole attempt is then retried with fresh data.
#[tracing::instrument(skip_all, fields(reference = request.reference.as_deref()))]
pub async fn create(
    pool: &PgPool,
    request: &NewPairing,
    policy: &AllocationPolicy,
) -> Result<CreateOutcome, CreatePairingError> {
    for attempt in 0..MAX_ATTEMPTS {
        if let Some(reference) = &request.reference
            && let Some(existing) = find_active_by_reference(pool, reference).await?
        {
            let same = request
                .is_same_request_as(&existing.participants.clone().map(|p| (p.number, p.label)));
            return if same {
                Ok(CreateOutcome::Existing(existing))
            } else {
                Err(CreatePairingError::ReferenceConflict(Box::new(existing)))
            };
        }
        match try_create(pool, request, policy).await {
            Ok(pairing) => {
                metrics::counter!("pairings_created_total").increment(1);
                adjust_load(pool, &pairing.participants, 1).await;
                return Ok(CreateOutcome::Created(pairing));
            }
            Err(Attempt::LostRace) => {
                tracing::debug!(attempt, "lost an allocation race; retrying");
                continue;
            }
            Err(Attempt::Failed(CreatePairingError::PoolExhausted {
                position,
                participant,
                country,
            })) => {
                record_exhaustion(pool, country.as_ref()).await;
                metrics::counter!(
                    "exhaustion_refusals_total",
                    "country" => country.as_ref().map_or_else(|| "none".to_owned(), ToString::to_string)
                )
                .increment(1);
                return Err(CreatePairingError::PoolExhausted {
                    position,
                    participant,
                    country,
                });
            }
            Err(Attempt::Failed(e)) => return Err(e),
        }
    }
    Err(CreatePairingError::Contention)
}

enum Attempt {
    LostRace,
    Failed(CreatePairingError),
}

impl From<sqlx::Error> for Attempt {
    fn from(e: sqlx::Error) -> Self {
        // 40P01 deadlock and 40001 serialization failure: Postgres aborted us to let a
        // concurrent transaction through; the attempt is retried.
        let retryable = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| c == "40P01" || c == "40001");
        if retryable
            || violates(&e, "participants_one_route")
            || violates(&e, "pairings_reference_once")
        {
            Self::LostRace
        } else if violates(&e, "participants_not_pool_number") {
            Self::Failed(CreatePairingError::ParticipantIsPoolNumber { position: 0 })
        } else {
            Self::Failed(CreatePairingError::Database(e))
        }
    }
}

impl From<CreatePairingError> for Attempt {
    fn from(e: CreatePairingError) -> Self {
        Self::Failed(e)
    }
}

async fn try_create(
    pool: &PgPool,
    request: &NewPairing,
    policy: &AllocationPolicy,
) -> Result<Pairing, Attempt> {
    let mut tx = pool.begin().await?;
    let numbers: Vec<&str> = request
        .participants
        .iter()
        .map(|p| p.number.expose())
        .collect();
    // Requests for the same people (or the same reference) take turns: each then reads what the
    // one before it committed, instead of both choosing from the same snapshot and one losing at
    // the constraint. The locks are per person, taken in one global order, and end with the
    // transaction. The constraints stay the last word.
    if let Some(reference) = &request.reference {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('reference:' || $1, 0))")
            .bind(reference)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock(k)
           FROM (SELECT hashtextextended('number:' || n, 0) AS k
                   FROM unnest($1::text[]) AS n ORDER BY 1) AS keys",
    )
    .bind(&numbers)
    .execute(&mut *tx)
    .await?;
    // Release these people's (and this reference's) pairings that have expired, so that their
    // routes may be given again: the unique indexes only cover pairings not yet released. (Two
    // index lookups joined by UNION ALL: an OR here made Postgres scan every pairing.)
    sqlx::query(
        "UPDATE pairings SET released = true
          WHERE NOT released AND expires_at <= now()
            AND id IN (SELECT pairing_id FROM participants
                        WHERE number = ANY($1) AND NOT released
                       UNION ALL
                       SELECT id FROM pairings WHERE reference = $2 AND NOT released)",
    )
    .bind(&numbers)
    .bind(request.reference.as_deref())
    .execute(&mut *tx)
    .await?;
    let in_pool: Vec<String> =
        sqlx::query_scalar("SELECT number FROM pool_numbers WHERE number = ANY($1)")
            .bind(&numbers)
            .fetch_all(&mut *tx)
            .await?;
    if let Some(position) = numbers.iter().position(|n| in_pool.iter().any(|p| p == n)) {
        return Err(CreatePairingError::ParticipantIsPoolNumber { position }.into());
    }

    let seed = Uuid::new_v4().as_u64_pair().0;
    let [a, b] = &request.participants;
    let proxy_a = choose_proxy(&mut tx, policy, 0, a, b, None, seed).await?;
    let proxy_b = choose_proxy(
        &mut tx,
        policy,
        1,
        b,
        a,
        Some(&proxy_a),
        seed.rotate_left(17),
    )
    .await?;

    let id = PairingId::new();
    sqlx::query(
        "INSERT INTO pairings (id, reference, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))",
    )
    .bind(id.as_uuid())
    .bind(request.reference.as_deref())
    .bind(request.ttl.num_seconds() as f64)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO participants
             (pairing_id, position, number, label, proxy_number, counterpart_number, counterpart_proxy)
         VALUES ($1, 0, $2, $3, $4, $5, $6), ($1, 1, $5, $7, $6, $2, $4)",
    )
    .bind(id.as_uuid())
    .bind(a.number.expose())
    .bind(a.label.as_deref())
    .bind(proxy_a.expose())
    .bind(b.number.expose())
    .bind(proxy_b.expose())
    .bind(b.label.as_deref())
    .execute(&mut *tx)
    .await?;
    let row: PairingRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_PAIRING} WHERE p.id = $1"
    )))
    .bind(id.as_uuid())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Chooses the proxy number for `me`, paired with `other`.
async fn choose_proxy(
    tx: &mut Transaction<'_, Postgres>,
    policy: &AllocationPolicy,
    position: usize,
    me: &ParticipantRequest,
    other: &ParticipantRequest,
    chosen_for_other: Option<&PhoneNumber>,
    seed: u64,
) -> Result<PhoneNumber, Attempt> {
    if let Some(explicit) = &me.proxy_number {
        return check_explicit_proxy(tx, position, me, explicit).await;
    }
    let history = person_history(tx, &me.number, &other.number, policy.cool_off).await?;
    let country = me.number.country();
    let plan = policy.plan(country.as_ref(), &history);
    if let Some(preferred) = &plan.preferred {
        let usable: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pool_numbers
                             WHERE number = $1 AND state = 'active' AND NOT reserved
                               AND ($2::text IS NULL OR country = $2))",
        )
        .bind(preferred.expose())
        .bind(plan.country.as_ref().map(CountryCode::as_str))
        .fetch_one(&mut **tx)
        .await?;
        if usable {
            return Ok(preferred.clone());
        }
    }
    for search in &plan.searches {
        let mut candidates = find_candidates(tx, search).await?;
        // The number just chosen for the other participant carries one more pairing than its
        // counter says.
        for c in &mut candidates {
            if Some(&c.number) == chosen_for_other {
                c.load += 1;
            }
        }
        if let Some(chosen) = allocation::pick(&candidates, seed) {
            return Ok(chosen.number.clone());
        }
    }
    Err(CreatePairingError::PoolExhausted {
        position,
        participant: me.number.clone(),
        country: plan.country.or(country),
    }
    .into())
}

async fn check_explicit_proxy(
    tx: &mut Transaction<'_, Postgres>,
    position: usize,
    me: &ParticipantRequest,
    explicit: &PhoneNumber,
) -> Result<PhoneNumber, Attempt> {
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM pool_numbers WHERE number = $1")
            .bind(explicit.expose())
            .fetch_optional(&mut **tx)
            .await?;
    match state.as_deref() {
        None => Err(CreatePairingError::ProxyNotInPool { position }.into()),
        Some("active") => {
            let held: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM participants
                                 WHERE number = $1 AND proxy_number = $2
                                   AND upper(active_during) > now())",
            )
            .bind(me.number.expose())
            .bind(explicit.expose())
            .fetch_one(&mut **tx)
            .await?;
            if held {
                Err(CreatePairingError::ProxyUnavailable { position }.into())
            } else {
                Ok(explicit.clone())
            }
        }
        Some(_) => Err(CreatePairingError::ProxyUnavailable { position }.into()),
    }
}

/// What allocation needs to know of a person: numbers held now, numbers cooling off after a
/// pairing with someone else, and the number last used with `counterpart`.
async fn person_history(
    tx: &mut Transaction<'_, Postgres>,
    person: &PhoneNumber,
    counterpart: &PhoneNumber,
    cool_off: Duration,
) -> Result<PersonHistory, sqlx::Error> {
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT proxy_number, counterpart_number, upper(active_during) > now()
           FROM participants
          WHERE number = $1 AND upper(active_during) > now() - make_interval(secs => $2)",
    )
    .bind(person.expose())
    .bind(cool_off.num_seconds() as f64)
    .fetch_all(&mut **tx)
    .await?;
    let mut history = PersonHistory::default();
    for (proxy, with, active) in rows {
        let proxy = PhoneNumber::from_trusted_digits(proxy);
        if active {
            history.held.insert(proxy);
        } else if with != counterpart.expose() {
            history.cooling.insert(proxy);
        }
    }
    history.sticky = sqlx::query_scalar(
        "SELECT proxy_number FROM participants
          WHERE number = $1 AND counterpart_number = $2 AND upper(active_during) IS NOT NULL
          ORDER BY upper(active_during) DESC LIMIT 1",
    )
    .bind(person.expose())
    .bind(counterpart.expose())
    .fetch_optional(&mut **tx)
    .await?
    .map(PhoneNumber::from_trusted_digits);
    Ok(history)
}

async fn find_candidates(
    tx: &mut Transaction<'_, Postgres>,
    search: &Search,
) -> Result<Vec<Candidate>, sqlx::Error> {
    let exclude: Vec<&str> = search.exclude.iter().map(PhoneNumber::expose).collect();
    // Two statements rather than one with `$1 IS NULL OR ...`, so each uses its partial index.
    let rows: Vec<(String, i64)> = match &search.country {
        Some(country) => {
            sqlx::query_as(
                "SELECT number, active_load FROM pool_numbers
              WHERE state = 'active' AND NOT reserved AND country = $1 AND number <> ALL($2)
              ORDER BY active_load, number LIMIT $3",
            )
            .bind(country.as_str())
            .bind(&exclude)
            .bind(CANDIDATES_PER_SEARCH)
            .fetch_all(&mut **tx)
            .await?
        }
        None => {
            sqlx::query_as(
                "SELECT number, active_load FROM pool_numbers
              WHERE state = 'active' AND NOT reserved AND number <> ALL($1)
              ORDER BY active_load, number LIMIT $2",
            )
            .bind(&exclude)
            .bind(CANDIDATES_PER_SEARCH)
            .fetch_all(&mut **tx)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(number, load)| Candidate {
            number: PhoneNumber::from_trusted_digits(number),
            load,
        })
        .collect())
}

/// Moves the load counters of the pairing's proxy numbers, one short statement per number so
/// that no transaction holds two counter rows at once. The counters only steer the spread of
/// new pairings; a failure here is logged and repaired by the sweeper's recount.
async fn adjust_load(pool: &PgPool, participants: &[Participant; 2], delta: i64) {
    let mut numbers: Vec<&str> = participants
        .iter()
        .map(|p| p.proxy_number.expose())
        .collect();
    numbers.sort_unstable();
    for number in numbers {
        if let Err(e) = sqlx::query(
            "UPDATE pool_numbers SET active_load = GREATEST(active_load + $2, 0) WHERE number = $1",
        )
        .bind(number)
        .bind(delta)
        .execute(pool)
        .await
        {
            tracing::warn!(error = %e, "could not update a pool number's load counter");
        }
    }
}

async fn record_exhaustion(pool: &PgPool, country: Option<&CountryCode>) {
    if let Err(e) = sqlx::query("INSERT INTO exhaustion_refusals (country) VALUES ($1)")
        .bind(country.map(CountryCode::as_str))
        .execute(pool)
        .await
    {
        tracing::warn!(error = %e, "could not record an exhaustion refusal");
    }
}

async fn find_active_by_reference(
    pool: &PgPool,
    reference: &str,
) -> Result<Option<Pairing>, sqlx::Error> {
    let row: Option<PairingRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_PAIRING} WHERE p.reference = $1 AND NOT p.released AND p.active_during @> now()"
    )))
    .bind(reference)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Into::into))
}

#[tracing::instrument(skip_all, fields(pairing_id = %id))]
pub async fn get(pool: &PgPool, id: PairingId) -> Result<Option<Pairing>, sqlx::Error> {
    let row: Option<PairingRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_PAIRING} WHERE p.id = $1"
    )))
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Into::into))
}

#[derive(Debug, Clone, Default)]
pub struct PairingFilter {
    pub reference: Option<String>,
    /// A participant's real number or a proxy number.
    pub number: Option<PhoneNumber>,
    pub status: Option<PairingStatus>,
}

/// Pairings, newest first, after the pairing `after`.
#[tracing::instrument(skip_all)]
pub async fn list(
    pool: &PgPool,
    filter: &PairingFilter,
    after: Option<PairingId>,
    limit: u32,
) -> Result<Page<Pairing, PairingId>, sqlx::Error> {
    let mut q = QueryBuilder::<Postgres>::new(SELECT_PAIRING);
    q.push(" WHERE true");
    if let Some(reference) = &filter.reference {
        q.push(" AND p.reference = ").push_bind(reference.clone());
    }
    if let Some(number) = &filter.number {
        q.push(" AND p.id IN (SELECT pairing_id FROM participants WHERE number = ")
            .push_bind(number.expose().to_owned())
            .push(" UNION SELECT pairing_id FROM participants WHERE proxy_number = ")
            .push_bind(number.expose().to_owned())
            .push(")");
    }
    match filter.status {
        Some(PairingStatus::Active) => q.push(" AND p.closed_at IS NULL AND p.expires_at > now()"),
        Some(PairingStatus::Closed) => q.push(" AND p.closed_at IS NOT NULL"),
        Some(PairingStatus::Expired) => {
            q.push(" AND p.closed_at IS NULL AND p.expires_at <= now()")
        }
        None => &mut q,
    };
    if let Some(after) = after {
        q.push(" AND p.id < ").push_bind(after.as_uuid());
    }
    q.push(" ORDER BY p.id DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let rows: Vec<PairingRow> = q.build_query_as().fetch_all(pool).await?;
    Ok(Page::from_rows(
        rows.into_iter().map(Into::into).collect(),
        limit,
        |p: &Pairing| p.id,
    ))
}

/// Closes a pairing: it stops routing at once. Closing a pairing that is already closed or
/// expired changes nothing. `None` if there is no such pairing.
#[tracing::instrument(skip_all, fields(pairing_id = %id))]
pub async fn close(pool: &PgPool, id: PairingId) -> Result<Option<Pairing>, sqlx::Error> {
    let closed_now: Option<Uuid> = sqlx::query_scalar(
        "UPDATE pairings
            SET closed_at = GREATEST(now(), created_at), load_released = true
          WHERE id = $1 AND closed_at IS NULL AND expires_at > now() AND NOT load_released
         RETURNING id",
    )
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await?;
    let pairing = get(pool, id).await?;
    if let (Some(_), Some(p)) = (closed_now, &pairing) {
        metrics::counter!("pairings_closed_total").increment(1);
        adjust_load(pool, &p.participants, -1).await;
    }
    Ok(pairing)
}

/// A new expiry for a pairing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewExpiry {
    /// This long from now.
    FromNow(Duration),
    /// At this instant.
    At(DateTime<Utc>),
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeExpiryError {
    #[error("no such pairing")]
    NotFound,
    #[error("the pairing has ended")]
    Ended(Box<Pairing>),
    #[error("the new expiry is not in the future, or is further than the longest TTL allows")]
    OutOfRange,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Moves the expiry of an active pairing; a pairing that is closed or expired stays ended.
#[tracing::instrument(skip_all, fields(pairing_id = %id))]
pub async fn change_expiry(
    pool: &PgPool,
    id: PairingId,
    expiry: NewExpiry,
    max_ttl: Duration,
) -> Result<Pairing, ChangeExpiryError> {
    let (at, ttl_seconds): (Option<DateTime<Utc>>, Option<f64>) = match expiry {
        NewExpiry::FromNow(d) => (None, Some(d.num_milliseconds() as f64 / 1000.0)),
        NewExpiry::At(t) => (Some(t), None),
    };
    let updated: Result<Option<(Uuid, bool)>, sqlx::Error> = sqlx::query_as(
        "WITH wanted AS (
             SELECT COALESCE($2, now() + make_interval(secs => $3)) AS expires_at
         )
         UPDATE pairings p
            SET expires_at = w.expires_at
           FROM wanted w
          WHERE p.id = $1 AND p.closed_at IS NULL AND p.expires_at > now()
            AND w.expires_at > now() AND w.expires_at <= now() + make_interval(secs => $4)
         RETURNING p.id, true",
    )
    .bind(id.as_uuid())
    .bind(at)
    .bind(ttl_seconds)
    .bind(max_ttl.num_seconds() as f64)
    .fetch_optional(pool)
    .await;
    let updated = match updated {
        Ok(u) => u,
        // Only possible if the longer validity would overlap a pairing made since; refuse.
        Err(e)
            if violates(&e, "participants_one_route")
                || violates(&e, "pairings_reference_once") =>
        {
            return Err(ChangeExpiryError::OutOfRange);
        }
        Err(e) => return Err(e.into()),
    };
    let pairing = get(pool, id).await?.ok_or(ChangeExpiryError::NotFound)?;
    if updated.is_some() {
        return Ok(pairing);
    }
    if pairing.status() != PairingStatus::Active {
        return Err(ChangeExpiryError::Ended(Box::new(pairing)));
    }
    Err(ChangeExpiryError::OutOfRange)
}

/// What an inbound call from `caller` to `proxy_number` should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Connect to `callee`, showing `callee_proxy`.
    Connect {
        pairing_id: PairingId,
        callee: PhoneNumber,
        callee_proxy: PhoneNumber,
    },
    /// The caller's pairing on this number has ended (closed or expired).
    Ended { pairing_id: PairingId },
    /// The caller has no pairing on this number.
    None,
}

/// The answer webhook's lookup: one index probe on (proxy number, caller).
#[tracing::instrument(skip_all)]
pub async fn route(pool: &PgPool, caller: &str, proxy_number: &str) -> Result<Route, sqlx::Error> {
    let row: Option<(Uuid, String, String, bool)> = sqlx::query_as(
        "SELECT pairing_id, counterpart_number, counterpart_proxy, active_during @> now()
           FROM participants
          WHERE proxy_number = $1 AND number = $2 AND upper(active_during) IS NOT NULL
          ORDER BY upper(active_during) DESC
          LIMIT 1",
    )
    .bind(proxy_number)
    .bind(caller)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some((id, callee, callee_proxy, true)) => Route::Connect {
            pairing_id: PairingId::from_uuid(id),
            callee: PhoneNumber::from_trusted_digits(callee),
            callee_proxy: PhoneNumber::from_trusted_digits(callee_proxy),
        },
        Some((id, _, _, false)) => Route::Ended {
            pairing_id: PairingId::from_uuid(id),
        },
        None => Route::None,
    })
}

/// Housekeeping: takes the load of expired pairings off their numbers. Correctness never
/// depends on it; it keeps the spread of new pairings even. Returns how many pairings it swept.
#[tracing::instrument(skip_all)]
pub async fn sweep_expired(pool: &PgPool, batch: i64) -> Result<u64, sqlx::Error> {
    let swept: i64 = sqlx::query_scalar(
        "WITH expired AS (
             UPDATE pairings SET load_released = true, released = true
              WHERE id IN (SELECT id FROM pairings
                            WHERE NOT load_released AND expires_at <= now()
                            ORDER BY expires_at LIMIT $1
                            FOR UPDATE SKIP LOCKED)
             RETURNING id
         ), released AS (
             SELECT proxy_number, count(*) AS n FROM participants
              WHERE pairing_id IN (SELECT id FROM expired) GROUP BY proxy_number
         ), updated AS (
             UPDATE pool_numbers n SET active_load = GREATEST(n.active_load - r.n, 0)
               FROM released r WHERE n.number = r.proxy_number
             RETURNING 1
         )
         SELECT count(*) FROM expired",
    )
    .bind(batch)
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(swept).unwrap_or(0))
}
