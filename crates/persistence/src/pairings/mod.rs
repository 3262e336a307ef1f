//! Pairings and their participants: creation with proxy-number allocation (`create`), lookup
//! for routing, close, expiry changes, listing.

mod create;
pub mod lookup;

use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;

use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;
use voice_proxy_domain::allocation::{AllocationPolicy, Refusal};
use voice_proxy_domain::call_options::CallOptionsOverrides;
use voice_proxy_domain::callbacks::{EventType, Message};
use voice_proxy_domain::pairing::{Pairing, Participant, Pin};
use voice_proxy_domain::routing::{Route, RouteDetails};
use voice_proxy_domain::{CountryCode, NewPairing, PairingId, PairingStatus, PhoneNumber};

use crate::callbacks::Outbox;
use crate::durable::load_ledger::LoadLedger;
use crate::pagination::Page;
use crate::violates;
use create::{Attempt, Made, try_create};

/// How many times a create is retried after losing a race to a concurrent one.
const MAX_ATTEMPTS: usize = 8;

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
    call_options: Option<Json<CallOptionsOverrides>>,
    pin_access: bool,
    a_pin: Option<String>,
    b_pin: Option<String>,
}

impl From<PairingRow> for Pairing {
    fn from(r: PairingRow) -> Self {
        let participant = |number, label, proxy, pin: Option<String>| Participant {
            number: PhoneNumber::from_trusted_digits(number),
            label,
            proxy_number: PhoneNumber::from_trusted_digits(proxy),
            pin: pin.as_deref().and_then(Pin::parse),
        };
        Self {
            id: PairingId::from_uuid(r.id),
            reference: r.reference,
            created_at: r.created_at,
            expires_at: r.expires_at,
            closed_at: r.closed_at,
            participants: [
                participant(r.a_number, r.a_label, r.a_proxy, r.a_pin),
                participant(r.b_number, r.b_label, r.b_proxy, r.b_pin),
            ],
            call_options: r.call_options.map(|j| j.0).unwrap_or_default(),
            pin_access: r.pin_access,
            read_at: r.read_at,
        }
    }
}

const SELECT_PAIRING: &str = "SELECT p.id, p.reference, p.created_at, p.expires_at, p.closed_at,
        now() AS read_at,
        a.number AS a_number, a.label AS a_label, a.proxy_number AS a_proxy,
        b.number AS b_number, b.label AS b_label, b.proxy_number AS b_proxy,
        p.call_options, p.pin_access, a.pin AS a_pin, b.pin AS b_pin
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
    #[error("every PIN of the configured length is in use on a proxy number")]
    PinsExhausted,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<Refusal> for CreatePairingError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::ParticipantIsPoolNumber { position } => {
                Self::ParticipantIsPoolNumber { position }
            }
            Refusal::ProxyNotInPool { position } => Self::ProxyNotInPool { position },
            Refusal::ProxyUnavailable { position } => Self::ProxyUnavailable { position },
        }
    }
}

/// Creates a pairing, choosing each participant's proxy number by `policy`.
///
/// Race-free by construction: the choice is made from a snapshot, and the unique index
/// `participants_one_route` refuses the insert if a concurrent request took the same
/// (person, proxy number) meanwhile; the whole attempt is then retried with fresh data.
///
/// One attempt is one transaction of four statements (locks; what is known of the people and the
/// reference; candidates; the insert), and a fifth when an endpoint wants `pairing.created`
/// (`outbox`); the load counters of the chosen numbers move in `ledger`, which a background task
/// writes to the database in batches. A refusal for want of a number is counted, and told as
/// `pool.exhausted`.
#[tracing::instrument(skip_all, fields(reference = request.reference.as_deref()))]
pub async fn create(
    pool: &PgPool,
    ledger: &LoadLedger,
    outbox: &Outbox,
    request: &NewPairing,
    policy: &AllocationPolicy,
) -> Result<CreateOutcome, CreatePairingError> {
    for attempt in 0..MAX_ATTEMPTS {
        match try_create(pool, ledger, outbox, request, policy).await {
            Ok(Made::Created(pairing)) => {
                metrics::counter!("pairings_created_total").increment(1);
                return Ok(CreateOutcome::Created(*pairing));
            }
            Ok(Made::ReferenceTaken(id)) => {
                // Read after the attempt's transaction ended; if the pairing ended meanwhile, the
                // next attempt finds the reference free.
                let Some(existing) = get(pool, id).await? else {
                    continue;
                };
                if existing.status() != PairingStatus::Active {
                    continue;
                }
                let same = request.is_same_request_as(
                    &existing.participants.clone().map(|p| (p.number, p.label)),
                );
                return if same {
                    Ok(CreateOutcome::Existing(existing))
                } else {
                    Err(CreatePairingError::ReferenceConflict(Box::new(existing)))
                };
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
                record_exhaustion(pool, outbox, country.as_ref(), request.reference.as_deref())
                    .await;
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

/// Counts a refusal for want of a number (by country) and tells it as `pool.exhausted`.
async fn record_exhaustion(
    pool: &PgPool,
    outbox: &Outbox,
    country: Option<&CountryCode>,
    reference: Option<&str>,
) {
    let recorded = async {
        let mut tx = pool.begin().await?;
        sqlx::query("INSERT INTO exhaustion_refusals (country) VALUES ($1)")
            .bind(country.map(CountryCode::as_str))
            .execute(&mut *tx)
            .await?;
        let message = Message::pool_exhausted(country, reference, Utc::now());
        let delivered = outbox.write(&mut tx, &[message]).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(delivered)
    };
    match recorded.await {
        Ok(0) => {}
        Ok(_) => outbox.wake(),
        Err(e) => tracing::warn!(error = %e, "could not record an exhaustion refusal"),
    }
}

#[tracing::instrument(skip_all, fields(pairing_id = %id))]
pub async fn get<'e>(
    db: impl sqlx::PgExecutor<'e>,
    id: PairingId,
) -> Result<Option<Pairing>, sqlx::Error> {
    let row: Option<PairingRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_PAIRING} WHERE p.id = $1"
    )))
    .bind(id.as_uuid())
    .fetch_optional(db)
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
/// expired changes nothing. `None` if there is no such pairing. The load comes off its numbers
/// through `ledger`; the close is told as `pairing.closed`, in the same transaction.
#[tracing::instrument(skip_all, fields(pairing_id = %id))]
pub async fn close(
    pool: &PgPool,
    ledger: &LoadLedger,
    outbox: &Outbox,
    id: PairingId,
) -> Result<Option<Pairing>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let closed_now: Option<Uuid> = sqlx::query_scalar(
        "UPDATE pairings
            SET closed_at = GREATEST(now(), created_at), load_released = true
          WHERE id = $1 AND closed_at IS NULL AND expires_at > now() AND NOT load_released
         RETURNING id",
    )
    .bind(id.as_uuid())
    .fetch_optional(&mut *tx)
    .await?;
    let pairing = get(&mut *tx, id).await?;
    let mut delivered = 0;
    if let (Some(_), Some(p)) = (closed_now, &pairing)
        && outbox.wants(EventType::PairingClosed)
    {
        let at = p.closed_at.unwrap_or(p.read_at);
        let message = Message::pairing(EventType::PairingClosed, p, at);
        delivered = outbox.write(&mut tx, &[message]).await?;
    }
    tx.commit().await?;
    if delivered > 0 {
        outbox.wake();
    }
    if let (Some(_), Some(p)) = (closed_now, &pairing) {
        metrics::counter!("pairings_closed_total").increment(1);
        for participant in &p.participants {
            ledger.add(participant.proxy_number.expose(), -1, None);
        }
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

/// What a `PATCH` of a pairing changes: its expiry, its call options, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairingChange {
    pub expiry: Option<NewExpiry>,
    /// Replaces the options it sets; the others stay as they were.
    pub call_options: Option<CallOptionsOverrides>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangePairingError {
    #[error("no such pairing")]
    NotFound,
    #[error("the pairing has ended")]
    Ended(Box<Pairing>),
    #[error("the new expiry is not in the future, or is further than the longest TTL allows")]
    OutOfRange,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Changes an active pairing's expiry or call options; a pairing that is closed or expired stays
/// as it ended. The change is told as `pairing.updated`, in the same transaction.
#[tracing::instrument(skip_all, fields(pairing_id = %id))]
pub async fn change(
    pool: &PgPool,
    outbox: &Outbox,
    id: PairingId,
    change: &PairingChange,
    max_ttl: Duration,
) -> Result<Pairing, ChangePairingError> {
    let (at, ttl_seconds): (Option<DateTime<Utc>>, Option<f64>) = match change.expiry {
        Some(NewExpiry::FromNow(d)) => (None, Some(d.num_milliseconds() as f64 / 1000.0)),
        Some(NewExpiry::At(t)) => (Some(t), None),
        None => (None, None),
    };
    let mut tx = pool.begin().await?;
    let updated: Result<Option<(Uuid, bool)>, sqlx::Error> = sqlx::query_as(
        "WITH wanted AS (
             SELECT COALESCE($2::timestamptz, now() + make_interval(secs => $3::float8))
                        AS expires_at
         )
         UPDATE pairings p
            SET expires_at = COALESCE(w.expires_at, p.expires_at),
                call_options = CASE WHEN $5::jsonb IS NULL THEN p.call_options
                                    ELSE COALESCE(p.call_options, '{}'::jsonb) || $5::jsonb END
           FROM wanted w
          WHERE p.id = $1 AND p.closed_at IS NULL AND p.expires_at > now()
            AND (w.expires_at IS NULL
                 OR (w.expires_at > now()
                     AND w.expires_at <= now() + make_interval(secs => $4)))
         RETURNING p.id, true",
    )
    .bind(id.as_uuid())
    .bind(at)
    .bind(ttl_seconds)
    .bind(max_ttl.num_seconds() as f64)
    .bind(change.call_options.as_ref().map(Json))
    .fetch_optional(&mut *tx)
    .await;
    let updated = match updated {
        Ok(u) => u,
        // Only possible if the longer validity would overlap a pairing made since; refuse.
        Err(e)
            if violates(&e, "participants_one_route")
                || violates(&e, "pairings_reference_once")
                || violates(&e, "participants_one_pin") =>
        {
            return Err(ChangePairingError::OutOfRange);
        }
        Err(e) => return Err(e.into()),
    };
    let pairing = get(&mut *tx, id)
        .await?
        .ok_or(ChangePairingError::NotFound)?;
    if updated.is_some() {
        let mut delivered = 0;
        if outbox.wants(EventType::PairingUpdated) {
            let message = Message::pairing(EventType::PairingUpdated, &pairing, pairing.read_at);
            delivered = outbox.write(&mut tx, &[message]).await?;
        }
        tx.commit().await?;
        if delivered > 0 {
            outbox.wake();
        }
        return Ok(pairing);
    }
    if pairing.status() != PairingStatus::Active {
        return Err(ChangePairingError::Ended(Box::new(pairing)));
    }
    Err(ChangePairingError::OutOfRange)
}

/// The answer webhook's lookup: one index probe on (proxy number, caller).
#[tracing::instrument(skip_all)]
pub async fn route(pool: &PgPool, caller: &str, proxy_number: &str) -> Result<Route, sqlx::Error> {
    let row: Option<RouteRow> = sqlx::query_as(
        "SELECT pa.pairing_id, pa.counterpart_number, pa.counterpart_proxy,
                pa.active_during @> now() AS active, pa.label, p.reference, p.call_options
           FROM participants pa
           JOIN pairings p ON p.id = pa.pairing_id
          WHERE pa.proxy_number = $1 AND pa.number = $2 AND upper(pa.active_during) IS NOT NULL
          ORDER BY upper(pa.active_during) DESC
          LIMIT 1",
    )
    .bind(proxy_number)
    .bind(caller)
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or(Route::None, RouteRow::into_route))
}

/// A participant row as a route: the other participant, and the pairing's details.
#[derive(sqlx::FromRow)]
pub(crate) struct RouteRow {
    pub(crate) pairing_id: Uuid,
    pub(crate) counterpart_number: String,
    pub(crate) counterpart_proxy: String,
    pub(crate) active: bool,
    pub(crate) label: Option<String>,
    pub(crate) reference: Option<String>,
    pub(crate) call_options: Option<Json<CallOptionsOverrides>>,
}

impl RouteRow {
    pub(crate) fn into_route(self) -> Route {
        let pairing_id = PairingId::from_uuid(self.pairing_id);
        if !self.active {
            return Route::Ended { pairing_id };
        }
        let details = RouteDetails {
            options: self.call_options.map(|j| j.0).unwrap_or_default(),
            caller_label: self.label,
            reference: self.reference,
        };
        Route::Connect {
            pairing_id,
            callee: PhoneNumber::from_trusted_digits(self.counterpart_number),
            callee_proxy: PhoneNumber::from_trusted_digits(self.counterpart_proxy),
            details: (details != RouteDetails::default()).then(|| Arc::new(details)),
        }
    }
}

/// Takes the load of expired pairings off their numbers, and tells each expiry as
/// `pairing.expired`, in the same transaction: a pairing is swept once (its `load_released`
/// flag), by whichever instance gets to it. Routing never depends on it. Returns how many
/// pairings it swept.
#[tracing::instrument(skip_all)]
pub async fn sweep_expired(pool: &PgPool, outbox: &Outbox, batch: i64) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let swept: Vec<Uuid> = sqlx::query_scalar(
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
         SELECT id FROM expired",
    )
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    let mut delivered = 0;
    if !swept.is_empty() && outbox.wants(EventType::PairingExpired) {
        let rows: Vec<PairingRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{SELECT_PAIRING} WHERE p.id = ANY($1) ORDER BY p.expires_at"
        )))
        .bind(&swept)
        .fetch_all(&mut *tx)
        .await?;
        let messages: Vec<Message> = rows
            .into_iter()
            .map(|r| {
                let pairing = Pairing::from(r);
                Message::pairing(EventType::PairingExpired, &pairing, pairing.expires_at)
            })
            .collect();
        delivered = outbox.write(&mut tx, &messages).await?;
    }
    tx.commit().await?;
    if delivered > 0 {
        outbox.wake();
    }
    Ok(swept.len() as u64)
}
