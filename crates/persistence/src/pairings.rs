//! Pairings and their participants: creation with proxy-number allocation, lookup for routing,
//! close, listing.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder, Transaction};
use uuid::Uuid;
use voice_proxy_domain::allocation::{
    AllocationPolicy, Candidate, PersonHistory, Plan, PoolNumberState, Search,
};
use voice_proxy_domain::pairing::{Pairing, Participant};
use voice_proxy_domain::routing::Route;
use voice_proxy_domain::{CountryCode, NewPairing, PairingId, PairingStatus, PhoneNumber};

use crate::numbers::LoadLedger;
use crate::pagination::Page;
use crate::violates;

/// How many times a create is retried after losing a race to a concurrent one.
const MAX_ATTEMPTS: usize = 8;
/// How many candidates one search returns to pick from.
const CANDIDATES_PER_SEARCH: i64 = 16;
/// At most this many more, for the numbers whose load is not written yet.
const MAX_EXTRA_CANDIDATES: usize = 112;

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
/// Race-free by construction: the choice is made from a snapshot, and the unique index
/// `participants_one_route` refuses the insert if a concurrent request took the same
/// (person, proxy number) meanwhile; the whole attempt is then retried with fresh data.
///
/// One attempt is one transaction of four statements (locks; what is known of the people and the
/// reference; candidates; the insert) and the load counters of the chosen numbers move in
/// `ledger`, which a background task writes to the database in batches.
#[tracing::instrument(skip_all, fields(reference = request.reference.as_deref()))]
pub async fn create(
    pool: &PgPool,
    ledger: &LoadLedger,
    request: &NewPairing,
    policy: &AllocationPolicy,
) -> Result<CreateOutcome, CreatePairingError> {
    for attempt in 0..MAX_ATTEMPTS {
        match try_create(pool, ledger, request, policy).await {
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

/// What one attempt came to, short of an error.
enum Made {
    Created(Box<Pairing>),
    /// An active pairing has this reference already: nothing was allocated.
    ReferenceTaken(PairingId),
}

enum Attempt {
    LostRace,
    Failed(CreatePairingError),
}

impl From<sqlx::Error> for Attempt {
    fn from(e: sqlx::Error) -> Self {
        // Postgres aborted us to let a concurrent transaction through: the attempt is retried.
        if crate::db_error::lost_to_concurrency(&e)
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

/// Takes the advisory locks of a create in one statement, in one global order: the reference
/// first, then the people by their lock key. Requests for the same people (or the same
/// reference) thus take turns: each then reads what the one before it committed, instead of both
/// choosing from the same snapshot and one losing at the constraint. The locks end with the
/// transaction; the unique indexes stay the last word. (The trigger
/// `participants_not_pool_number` takes the same per-person locks again, which costs nothing.)
const LOCK_STATEMENT: &str = "SELECT pg_advisory_xact_lock(k)
   FROM (SELECT hashtextextended('reference:' || $2, 0) AS k, 0 AS o WHERE $2::text IS NOT NULL
         UNION ALL
         SELECT hashtextextended('number:' || n, 0), 1 FROM unnest($1::text[]) AS n) AS keys
  ORDER BY o, k";

/// After the locks, in one statement: releases these people's (and this reference's) pairings
/// that have expired, so that their routes may be given again (the unique indexes only cover
/// pairings not yet released; two index lookups joined by UNION ALL, as an OR made Postgres scan
/// every pairing); and reads everything allocation needs to know:
/// - `pool`: which of the participants' numbers and the explicitly asked proxy numbers are pool
///   numbers, and their state;
/// - `reference`: the active pairing that has this reference already, if any;
/// - `history`: each person's pairings that are active or ended within the cool-off;
/// - `sticky`: each person's proxy number in their latest pairing with the other one, with the
///   pool's word on it.
///
/// The release is not visible to the reads of the same statement; none of them depends on it
/// (they judge by `active_during`), and the insert, a later statement, sees it.
///
/// $1 the two people, $2 the reference, $3 the cool-off in seconds, $4 the explicit proxy
/// numbers, $5 the two people in the other order.
const STATE_STATEMENT: &str = "WITH released AS (
    UPDATE pairings SET released = true
     WHERE NOT released AND expires_at <= now()
       AND id IN (SELECT pairing_id FROM participants
                   WHERE number = ANY($1) AND NOT released
                  UNION ALL
                  SELECT id FROM pairings WHERE reference = $2 AND NOT released)
    RETURNING id
)
SELECT 'pool' AS kind, NULL::text AS person, number, NULL::text AS other,
       NULL::boolean AS active, state, reserved, country
  FROM pool_numbers WHERE number = ANY($1::text[] || $4::text[])
UNION ALL
SELECT 'reference', NULL, id::text, NULL, NULL, NULL, NULL, NULL
  FROM pairings WHERE reference = $2 AND NOT released AND active_during @> now()
UNION ALL
SELECT 'history', me.n, h.proxy_number, h.counterpart_number, upper(h.active_during) > now(),
       NULL, NULL, NULL
  FROM unnest($1::text[]) AS me (n)
 CROSS JOIN LATERAL (SELECT proxy_number, counterpart_number, active_during FROM participants
                      WHERE number = me.n
                        AND upper(active_during) > now() - make_interval(secs => $3)) h
UNION ALL
SELECT 'sticky', x.me, s.proxy_number, x.other, NULL, n.state, n.reserved, n.country
  FROM unnest($1::text[], $5::text[]) AS x (me, other)
 CROSS JOIN LATERAL (SELECT proxy_number FROM participants
                      WHERE number = x.me AND counterpart_number = x.other
                        AND upper(active_during) IS NOT NULL
                      ORDER BY upper(active_during) DESC LIMIT 1) s
  LEFT JOIN pool_numbers n ON n.number = s.proxy_number";

/// The pairing and both participants in one statement; returns what the response needs.
/// $1 id, $2 reference, $3 TTL in seconds, then participant 0's number, label and proxy number
/// ($4, $5, $6) and participant 1's ($7, $8, $9).
const INSERT_STATEMENT: &str = "WITH p AS (
    INSERT INTO pairings (id, reference, expires_at)
    VALUES ($1, $2, now() + make_interval(secs => $3))
    RETURNING id, reference, created_at, expires_at, closed_at
), x AS (
    INSERT INTO participants
        (pairing_id, position, number, label, proxy_number, counterpart_number, counterpart_proxy)
    SELECT p.id, v.position, v.number, v.label, v.proxy, v.counterpart, v.counterpart_proxy
      FROM p, (VALUES (0::smallint, $4::text, $5::text, $6::text, $7::text, $9::text),
                      (1::smallint, $7::text, $8::text, $9::text, $4::text, $6::text))
              AS v (position, number, label, proxy, counterpart, counterpart_proxy)
)
SELECT p.id, p.reference, p.created_at, p.expires_at, p.closed_at, now() AS read_at,
       $4::text AS a_number, $5::text AS a_label, $6::text AS a_proxy,
       $7::text AS b_number, $8::text AS b_label, $9::text AS b_proxy
  FROM p";

#[derive(sqlx::FromRow)]
struct StateRow {
    kind: String,
    person: Option<String>,
    number: Option<String>,
    other: Option<String>,
    active: Option<bool>,
    state: Option<String>,
    reserved: Option<bool>,
    country: Option<String>,
}

impl StateRow {
    fn pool_state(&self) -> Option<PoolNumberState> {
        Some(PoolNumberState {
            active: self.state.as_deref()? == "active",
            reserved: self.reserved?,
            country: CountryCode::parse(self.country.as_deref()?)?,
        })
    }
}

/// What the state statement told us about one participant.
#[derive(Default)]
struct Known {
    history: PersonHistory,
    /// The pool's word on `history.sticky`.
    sticky_state: Option<PoolNumberState>,
}

/// How one participant's proxy number is being chosen.
enum Choice {
    Decided(PhoneNumber),
    /// Run `plan.searches` from `next` on.
    Searching {
        plan: Plan,
        next: usize,
    },
}

async fn try_create(
    pool: &PgPool,
    ledger: &LoadLedger,
    request: &NewPairing,
    policy: &AllocationPolicy,
) -> Result<Made, Attempt> {
    let [a, b] = &request.participants;
    let numbers = [a.number.expose(), b.number.expose()];
    let others = [b.number.expose(), a.number.expose()];
    let explicit: Vec<&str> = request
        .participants
        .iter()
        .filter_map(|p| p.proxy_number.as_ref().map(PhoneNumber::expose))
        .collect();
    let reference = request.reference.as_deref();

    let mut tx = crate::begin_generic(pool).await?;
    sqlx::query(LOCK_STATEMENT)
        .bind(&numbers[..])
        .bind(reference)
        .execute(&mut *tx)
        .await?;
    let rows: Vec<StateRow> = sqlx::query_as(STATE_STATEMENT)
        .bind(&numbers[..])
        .bind(reference)
        .bind(policy.cool_off.num_seconds() as f64)
        .bind(&explicit)
        .bind(&others[..])
        .fetch_all(&mut *tx)
        .await?;

    let mut pool_states: HashMap<&str, PoolNumberState> = HashMap::new();
    let mut known: [Known; 2] = Default::default();
    for row in &rows {
        let position = row
            .person
            .as_deref()
            .and_then(|p| numbers.iter().position(|n| *n == p));
        match (row.kind.as_str(), row.number.as_deref(), position) {
            ("reference", Some(id), _) => {
                let id = Uuid::parse_str(id).map_err(|e| sqlx::Error::Decode(e.into()))?;
                return Ok(Made::ReferenceTaken(PairingId::from_uuid(id)));
            }
            ("pool", Some(number), _) => {
                if let Some(state) = row.pool_state() {
                    pool_states.insert(number, state);
                }
            }
            ("history", Some(proxy), Some(i)) => {
                let proxy = PhoneNumber::from_trusted_digits(proxy.to_owned());
                if row.active == Some(true) {
                    known[i].history.held.insert(proxy);
                } else if row.other.as_deref() != Some(others[i]) {
                    known[i].history.cooling.insert(proxy);
                }
            }
            ("sticky", Some(proxy), Some(i)) => {
                known[i].history.sticky = Some(PhoneNumber::from_trusted_digits(proxy.to_owned()));
                known[i].sticky_state = row.pool_state();
            }
            _ => {}
        }
    }
    if let Some(position) = numbers.iter().position(|n| pool_states.contains_key(n)) {
        return Err(CreatePairingError::ParticipantIsPoolNumber { position }.into());
    }

    // Every number chosen below is counted in the ledger at once (so that concurrent creates of
    // this process spread over other numbers); if the attempt fails, the guard takes it back.
    let mut reserved = Reservation::new(ledger);
    let mut choices: Vec<Choice> = Vec::with_capacity(2);
    for (i, me) in request.participants.iter().enumerate() {
        let history = &known[i].history;
        if let Some(wanted) = &me.proxy_number {
            match pool_states.get(wanted.expose()) {
                None => return Err(CreatePairingError::ProxyNotInPool { position: i }.into()),
                Some(state) if state.active && !history.held.contains(wanted) => {
                    choices.push(Choice::Decided(wanted.clone()));
                }
                Some(_) => return Err(CreatePairingError::ProxyUnavailable { position: i }.into()),
            }
            continue;
        }
        let plan = policy.plan(me.number.country().as_ref(), history);
        let sticky_ok = known[i]
            .sticky_state
            .as_ref()
            .is_some_and(|s| plan.accepts_preferred(s));
        match &plan.preferred {
            Some(preferred) if sticky_ok => choices.push(Choice::Decided(preferred.clone())),
            _ => choices.push(Choice::Searching { plan, next: 0 }),
        }
    }
    for choice in &choices {
        if let Choice::Decided(n) = choice {
            reserved.add(n.expose(), None);
        }
    }

    // The first search of each participant that needs one, both in one statement.
    let first: Vec<(usize, &Search)> = choices
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            Choice::Searching { plan, .. } => plan.searches.first().map(|s| (i, s)),
            Choice::Decided(_) => None,
        })
        .collect();
    let mut found: [Vec<Candidate>; 2] = Default::default();
    if !first.is_empty() {
        let lists = find_candidates(&mut tx, ledger, &first).await?;
        for ((i, _), list) in first.iter().zip(lists) {
            found[*i] = list;
        }
    }

    let seeds = {
        let seed = Uuid::new_v4().as_u64_pair().0;
        [seed, seed.rotate_left(17)]
    };
    let mut proxies: Vec<PhoneNumber> = Vec::with_capacity(2);
    for (i, choice) in choices.into_iter().enumerate() {
        let (plan, mut next) = match choice {
            Choice::Decided(n) => {
                proxies.push(n);
                continue;
            }
            Choice::Searching { plan, next } => (plan, next),
        };
        let mut candidates = std::mem::take(&mut found[i]);
        let chosen = loop {
            let country = plan.searches.get(next).and_then(|s| s.country.as_ref());
            if let Some(n) = reserved.pick(&mut candidates, seeds[i], country) {
                break Some(n);
            }
            next += 1;
            let Some(search) = plan.searches.get(next) else {
                break None;
            };
            candidates = find_candidates(&mut tx, ledger, &[(i, search)])
                .await?
                .pop()
                .unwrap_or_default();
        };
        match chosen {
            Some(n) => proxies.push(n),
            None => {
                let me = &request.participants[i];
                return Err(CreatePairingError::PoolExhausted {
                    position: i,
                    participant: me.number.clone(),
                    country: plan.country.or_else(|| me.number.country()),
                }
                .into());
            }
        }
    }

    let id = PairingId::new();
    let row: PairingRow = sqlx::query_as(INSERT_STATEMENT)
        .bind(id.as_uuid())
        .bind(reference)
        .bind(request.ttl.num_seconds() as f64)
        .bind(a.number.expose())
        .bind(a.label.as_deref())
        .bind(proxies[0].expose())
        .bind(b.number.expose())
        .bind(b.label.as_deref())
        .bind(proxies[1].expose())
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    reserved.keep();
    Ok(Made::Created(Box::new(row.into())))
}

/// The numbers one create attempt counted in the ledger; taken back unless [`Self::keep`] is
/// called (the attempt failed, or lost a race and is retried).
struct Reservation<'a> {
    ledger: &'a LoadLedger,
    numbers: Vec<String>,
}

impl<'a> Reservation<'a> {
    fn new(ledger: &'a LoadLedger) -> Self {
        Self {
            ledger,
            numbers: Vec::with_capacity(2),
        }
    }

    fn add(&mut self, number: &str, country: Option<&CountryCode>) {
        self.ledger.add(number, 1, country);
        self.numbers.push(number.to_owned());
    }

    /// Picks among `candidates` by their loads as this process knows them (the database's
    /// counter and what is not written yet), and counts the one picked.
    fn pick(
        &mut self,
        candidates: &mut [Candidate],
        seed: u64,
        country: Option<&CountryCode>,
    ) -> Option<PhoneNumber> {
        let chosen = self.ledger.pick(candidates, seed, country)?;
        self.numbers.push(chosen.expose().to_owned());
        Some(chosen)
    }

    fn keep(mut self) {
        self.numbers.clear();
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        for n in &self.numbers {
            self.ledger.add(n, -1, None);
        }
    }
}

/// Runs searches (each: free numbers of a country, or of any, none of those excluded, from the
/// lowest load bucket up) in one statement, a UNION ALL of index searches; returns the candidates
/// per search, with their counters. The index orders by `load_bucket` (`active_load / 8`, see
/// migration V6), so the pick among them by real load keeps numbers within a bucket's width of
/// each other. Each search reads as many more numbers as this process has unwritten load on in
/// its country, so that the least loaded numbers once those are counted are among them.
async fn find_candidates(
    tx: &mut Transaction<'_, Postgres>,
    ledger: &LoadLedger,
    searches: &[(usize, &Search)],
) -> Result<Vec<Vec<Candidate>>, sqlx::Error> {
    let mut q = QueryBuilder::<Postgres>::new("");
    for (k, (_, search)) in searches.iter().enumerate() {
        if k > 0 {
            q.push(" UNION ALL ");
        }
        let exclude: Vec<String> = search
            .exclude
            .iter()
            .map(|n| n.expose().to_owned())
            .collect();
        let limit = CANDIDATES_PER_SEARCH
            + ledger
                .pending_in(search.country.as_ref())
                .min(MAX_EXTRA_CANDIDATES) as i64;
        match &search.country {
            Some(country) => {
                q.push(format_args!(
                    "(SELECT {k}::int AS k, number, active_load FROM pool_numbers
                       WHERE state = 'active' AND NOT reserved AND country = "
                ))
                .push_bind(country.as_str().to_owned())
                .push(" AND number <> ALL(")
                .push_bind(exclude)
                .push(") ORDER BY load_bucket, number LIMIT ")
                .push_bind(limit)
                .push(")");
            }
            // Any country: the same index search in each country (found by skipping through the
            // country index, one probe per country), merged. There is no index over all
            // countries: with one, Postgres took it for the searches of one country too,
            // filtering out every number of the others on the way.
            None => {
                q.push(format_args!(
                    "(SELECT {k}::int AS k, f.number, f.active_load FROM (
                       WITH RECURSIVE countries (country) AS (
                           (SELECT country FROM pool_numbers WHERE state = 'active' AND NOT reserved
                             ORDER BY country LIMIT 1)
                           UNION ALL
                           SELECT (SELECT p.country FROM pool_numbers p
                                    WHERE p.state = 'active' AND NOT p.reserved
                                      AND p.country > c.country
                                    ORDER BY p.country LIMIT 1)
                             FROM countries c WHERE c.country IS NOT NULL)
                       SELECT x.number, x.active_load, x.load_bucket FROM countries c
                        CROSS JOIN LATERAL (
                            SELECT number, active_load, load_bucket FROM pool_numbers
                             WHERE state = 'active' AND NOT reserved AND country = c.country
                               AND number <> ALL("
                ))
                .push_bind(exclude)
                .push(") ORDER BY load_bucket, number LIMIT ")
                .push_bind(limit)
                .push(") x ORDER BY x.load_bucket, x.number LIMIT ")
                .push_bind(limit)
                .push(") f)");
            }
        }
    }
    let rows: Vec<(i32, String, i64)> = q.build_query_as().fetch_all(&mut **tx).await?;
    let mut lists: Vec<Vec<Candidate>> = vec![Vec::new(); searches.len()];
    for (k, number, load) in rows {
        if let Some(list) = usize::try_from(k).ok().and_then(|k| lists.get_mut(k)) {
            list.push(Candidate {
                number: PhoneNumber::from_trusted_digits(number),
                load,
            });
        }
    }
    Ok(lists)
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
/// expired changes nothing. `None` if there is no such pairing. The load comes off its numbers
/// through `ledger`.
#[tracing::instrument(skip_all, fields(pairing_id = %id))]
pub async fn close(
    pool: &PgPool,
    ledger: &LoadLedger,
    id: PairingId,
) -> Result<Option<Pairing>, sqlx::Error> {
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
