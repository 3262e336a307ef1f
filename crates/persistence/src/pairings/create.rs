//! One attempt at creating a pairing, in one transaction of a few statements: take the locks,
//! read what allocation needs to know, let `voice_proxy_domain::allocation` decide, run the
//! searches it asks for, insert. A lost race is retried by `super::create`.

use std::collections::HashMap;

use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder, Transaction};
use uuid::Uuid;
use voice_proxy_domain::allocation::{
    self, AllocationPolicy, Candidate, Choice, CreateState, PastPairing, PersonState, Plan,
    PoolNumberState, Search,
};
use voice_proxy_domain::callbacks::{EventType, Message};
use voice_proxy_domain::pairing::{Pairing, Pin};
use voice_proxy_domain::{CountryCode, NewPairing, PairingId, PhoneNumber};

use super::{CreatePairingError, PairingRow};
use crate::callbacks::Outbox;
use crate::durable::load_ledger::LoadLedger;
use crate::violates;

/// How many candidates one search returns to pick from.
const CANDIDATES_PER_SEARCH: i64 = 16;
/// At most this many more, for the numbers whose load is not written yet.
const MAX_EXTRA_CANDIDATES: usize = 112;

/// What one attempt came to, short of an error.
pub(super) enum Made {
    Created(Box<Pairing>),
    /// An active pairing has this reference already: nothing was allocated.
    ReferenceTaken(PairingId),
}

pub(super) enum Attempt {
    LostRace,
    Failed(CreatePairingError),
}

impl From<sqlx::Error> for Attempt {
    fn from(e: sqlx::Error) -> Self {
        // Postgres aborted us to let a concurrent transaction through: the attempt is retried.
        if crate::db_error::lost_to_concurrency(&e)
            || violates(&e, "participants_one_route")
            || violates(&e, "pairings_reference_once")
            || violates(&e, "participants_one_pin")
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
/// ($4, $5, $6) and participant 1's ($7, $8, $9); $10 the call options, $11 PIN access, $12 and
/// $13 the participants' PINs.
const INSERT_STATEMENT: &str = "WITH p AS (
    INSERT INTO pairings (id, reference, expires_at, call_options, pin_access)
    VALUES ($1, $2, now() + make_interval(secs => $3), $10, $11)
    RETURNING id, reference, created_at, expires_at, closed_at, call_options, pin_access
), x AS (
    INSERT INTO participants
        (pairing_id, position, number, label, proxy_number, counterpart_number, counterpart_proxy,
         pin)
    SELECT p.id, v.position, v.number, v.label, v.proxy, v.counterpart, v.counterpart_proxy, v.pin
      FROM p, (VALUES (0::smallint, $4::text, $5::text, $6::text, $7::text, $9::text, $12::text),
                      (1::smallint, $7::text, $8::text, $9::text, $4::text, $6::text, $13::text))
              AS v (position, number, label, proxy, counterpart, counterpart_proxy, pin)
)
SELECT p.id, p.reference, p.created_at, p.expires_at, p.closed_at, now() AS read_at,
       $4::text AS a_number, $5::text AS a_label, $6::text AS a_proxy,
       $7::text AS b_number, $8::text AS b_label, $9::text AS b_proxy,
       p.call_options, p.pin_access, $12::text AS a_pin, $13::text AS b_pin
  FROM p";

/// How many random PINs are tried per participant before every PIN in use on the proxy number
/// is read.
const PIN_CANDIDATES: usize = 16;

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

/// One attempt: lock, read the state, choose, search, insert (and tell it).
pub(super) async fn try_create(
    pool: &PgPool,
    ledger: &LoadLedger,
    outbox: &Outbox,
    request: &NewPairing,
    policy: &AllocationPolicy,
) -> Result<Made, Attempt> {
    let mut tx = crate::begin_generic(pool).await?;
    lock(&mut tx, request).await?;
    let state = match read_state(&mut tx, request, policy).await? {
        Read::ReferenceTaken(id) => return Ok(Made::ReferenceTaken(id)),
        Read::State(state) => *state,
    };
    let choices = allocation::choose(request, policy, &state).map_err(CreatePairingError::from)?;
    // Every number chosen is counted in the ledger at once (so that concurrent creates of this
    // process spread over other numbers); if the attempt fails, the guard takes it back.
    let mut reserved = Reservation::new(ledger);
    let proxies = find_proxies(&mut tx, &mut reserved, request, choices).await?;
    let pins = match request.pin_digits {
        Some(digits) => Some(choose_pins(&mut tx, &proxies, digits).await?),
        None => None,
    };
    let pairing = insert(&mut tx, request, &proxies, pins.as_ref()).await?;
    let mut delivered = 0;
    if outbox.wants(EventType::PairingCreated) {
        let message = Message::pairing(EventType::PairingCreated, &pairing, pairing.created_at);
        delivered = outbox.write(&mut tx, &[message]).await?;
    }
    tx.commit().await?;
    reserved.keep();
    if delivered > 0 {
        outbox.wake();
    }
    Ok(Made::Created(Box::new(pairing)))
}

/// Takes the create's advisory locks ([`LOCK_STATEMENT`]).
async fn lock(tx: &mut Transaction<'_, Postgres>, request: &NewPairing) -> Result<(), sqlx::Error> {
    let [a, b] = &request.participants;
    sqlx::query(LOCK_STATEMENT)
        .bind(&[a.number.expose(), b.number.expose()][..])
        .bind(request.reference.as_deref())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What [`read_state`] found.
enum Read {
    /// An active pairing has this reference already: nothing is to be allocated.
    ReferenceTaken(PairingId),
    State(Box<CreateState>),
}

/// Reads what allocation needs to know ([`STATE_STATEMENT`]).
async fn read_state(
    tx: &mut Transaction<'_, Postgres>,
    request: &NewPairing,
    policy: &AllocationPolicy,
) -> Result<Read, sqlx::Error> {
    let [a, b] = &request.participants;
    let numbers = [a.number.expose(), b.number.expose()];
    let others = [b.number.expose(), a.number.expose()];
    let explicit: Vec<&str> = request
        .participants
        .iter()
        .filter_map(|p| p.proxy_number.as_ref().map(PhoneNumber::expose))
        .collect();
    let rows: Vec<StateRow> = sqlx::query_as(STATE_STATEMENT)
        .bind(&numbers[..])
        .bind(request.reference.as_deref())
        .bind(policy.cool_off.num_seconds() as f64)
        .bind(&explicit)
        .bind(&others[..])
        .fetch_all(&mut **tx)
        .await?;

    let mut state = CreateState {
        pool: HashMap::new(),
        people: Default::default(),
    };
    for row in &rows {
        let position = row
            .person
            .as_deref()
            .and_then(|p| numbers.iter().position(|n| *n == p));
        let number = row.number.as_deref();
        match (row.kind.as_str(), number, position) {
            ("reference", Some(id), _) => {
                let id = Uuid::parse_str(id).map_err(|e| sqlx::Error::Decode(e.into()))?;
                return Ok(Read::ReferenceTaken(PairingId::from_uuid(id)));
            }
            ("pool", Some(number), _) => {
                if let Some(pool) = row.pool_state() {
                    state
                        .pool
                        .insert(PhoneNumber::from_trusted_digits(number.to_owned()), pool);
                }
            }
            ("history", Some(proxy), Some(i)) => {
                state.people[i].recent.push(PastPairing {
                    proxy_number: PhoneNumber::from_trusted_digits(proxy.to_owned()),
                    counterpart: PhoneNumber::from_trusted_digits(
                        row.other.clone().unwrap_or_default(),
                    ),
                    active: row.active == Some(true),
                });
            }
            ("sticky", Some(proxy), Some(i)) => {
                let person: &mut PersonState = &mut state.people[i];
                person.sticky = Some((
                    PhoneNumber::from_trusted_digits(proxy.to_owned()),
                    row.pool_state(),
                ));
            }
            _ => {}
        }
    }
    Ok(Read::State(Box::new(state)))
}

/// Each participant's proxy number: the one given, or the least loaded that the plan's searches
/// find, run in order (the first search of each participant in one statement, later ones only
/// when the earlier found nothing).
async fn find_proxies(
    tx: &mut Transaction<'_, Postgres>,
    reserved: &mut Reservation<'_>,
    request: &NewPairing,
    choices: [Choice; 2],
) -> Result<[PhoneNumber; 2], Attempt> {
    for choice in &choices {
        if let Choice::Given(n) = choice {
            reserved.add(n.expose(), None);
        }
    }
    let first: Vec<(usize, &Search)> = choices
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            Choice::Search(plan) => plan.searches.first().map(|s| (i, s)),
            Choice::Given(_) => None,
        })
        .collect();
    let mut found: [Vec<Candidate>; 2] = Default::default();
    if !first.is_empty() {
        let lists = find_candidates(tx, reserved.ledger, &first).await?;
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
        let plan = match choice {
            Choice::Given(n) => {
                proxies.push(n);
                continue;
            }
            Choice::Search(plan) => plan,
        };
        let candidates = std::mem::take(&mut found[i]);
        match search(tx, reserved, &plan, candidates, seeds[i], i).await? {
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
    let [a, b]: [PhoneNumber; 2] = proxies
        .try_into()
        .unwrap_or_else(|_| unreachable!("one proxy number per participant"));
    Ok([a, b])
}

/// Picks from `candidates` (the plan's first search's), else runs the plan's next searches in
/// turn; `None` when every search came back empty.
async fn search(
    tx: &mut Transaction<'_, Postgres>,
    reserved: &mut Reservation<'_>,
    plan: &Plan,
    mut candidates: Vec<Candidate>,
    seed: u64,
    participant: usize,
) -> Result<Option<PhoneNumber>, sqlx::Error> {
    for next in 0..plan.searches.len() {
        if next > 0 {
            candidates =
                find_candidates(tx, reserved.ledger, &[(participant, &plan.searches[next])])
                    .await?
                    .pop()
                    .unwrap_or_default();
        }
        let country = plan.searches[next].country.as_ref();
        if let Some(n) = reserved.pick(&mut candidates, seed, country) {
            return Ok(Some(n));
        }
    }
    Ok(None)
}

/// A PIN for each participant that no other participant on the same proxy number has (among the
/// pairings not yet released, as the unique index `participants_one_pin` has it): random ones
/// first; when all of those are taken, one of the PINs still free. A concurrent create may take
/// the same PIN meanwhile; the index then refuses the insert, and the attempt is retried.
async fn choose_pins(
    tx: &mut Transaction<'_, Postgres>,
    proxies: &[PhoneNumber; 2],
    digits: usize,
) -> Result<[Pin; 2], Attempt> {
    let mut random = random_bytes();
    let candidates: [Vec<Pin>; 2] = std::array::from_fn(|_| {
        (0..PIN_CANDIDATES)
            .map(|_| Pin::generate(digits, &mut random))
            .collect()
    });
    let (numbers, pins): (Vec<&str>, Vec<&str>) = candidates
        .iter()
        .zip(proxies)
        .flat_map(|(list, proxy)| list.iter().map(move |pin| (proxy.expose(), pin.expose())))
        .unzip();
    let taken: Vec<(String, String)> = sqlx::query_as(
        "SELECT proxy_number, pin FROM participants
          WHERE pin IS NOT NULL AND NOT released
            AND (proxy_number, pin) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
    )
    .bind(&numbers)
    .bind(&pins)
    .fetch_all(&mut **tx)
    .await?;
    let mut chosen: Vec<Pin> = Vec::with_capacity(2);
    for (list, proxy) in candidates.into_iter().zip(proxies) {
        // The other participant may have the same proxy number: their PINs must differ too.
        let free = |pin: &Pin| {
            !taken
                .iter()
                .any(|(n, p)| n == proxy.expose() && p == pin.expose())
                && !chosen
                    .iter()
                    .zip(proxies)
                    .any(|(c, n)| n == proxy && c == pin)
        };
        let pin = match list.into_iter().find(|p| free(p)) {
            Some(pin) => pin,
            None => free_pin(tx, proxy, digits, &chosen, &mut random).await?,
        };
        chosen.push(pin);
    }
    let [a, b]: [Pin; 2] = chosen
        .try_into()
        .unwrap_or_else(|_| unreachable!("one PIN per participant"));
    Ok([a, b])
}

/// A PIN of `digits` digits that no participant on `proxy` has, found by reading every PIN in use
/// there (the random tries all hit used ones: the PINs of this length are nearly all taken).
async fn free_pin(
    tx: &mut Transaction<'_, Postgres>,
    proxy: &PhoneNumber,
    digits: usize,
    chosen: &[Pin],
    random: &mut impl FnMut() -> u8,
) -> Result<Pin, Attempt> {
    let mut used: std::collections::HashSet<String> = sqlx::query_scalar(
        "SELECT pin FROM participants
          WHERE proxy_number = $1 AND pin IS NOT NULL AND NOT released AND length(pin) = $2",
    )
    .bind(proxy.expose())
    .bind(digits as i32)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    used.extend(chosen.iter().map(|p| p.expose().to_owned()));
    let space = 10u64.saturating_pow(digits as u32);
    if used.len() as u64 >= space {
        return Err(CreatePairingError::PinsExhausted.into());
    }
    // Start at a random PIN and walk to the first free one.
    let start = (0..8).fold(0u64, |acc, _| (acc << 8) | u64::from(random())) % space;
    (0..space)
        .map(|i| format!("{:0digits$}", (start + i) % space))
        .find(|p| !used.contains(p))
        .and_then(|p| Pin::parse(&p))
        .ok_or_else(|| CreatePairingError::PinsExhausted.into())
}

/// Random bytes from the operating system, fetched 64 at a time.
fn random_bytes() -> impl FnMut() -> u8 {
    let mut buffer = [0u8; 64];
    let mut used = buffer.len();
    move || {
        if used == buffer.len() {
            // The OS random source does not fail on the systems we run on; if it ever did, the
            // PIN would come from a fresh v4 UUID's random bits instead.
            if getrandom::fill(&mut buffer).is_err() {
                for chunk in buffer.chunks_mut(16) {
                    chunk.copy_from_slice(&Uuid::new_v4().as_bytes()[..chunk.len()]);
                }
            }
            used = 0;
        }
        used += 1;
        buffer[used - 1]
    }
}

/// Inserts the pairing and its participants ([`INSERT_STATEMENT`]).
async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    request: &NewPairing,
    proxies: &[PhoneNumber; 2],
    pins: Option<&[Pin; 2]>,
) -> Result<Pairing, sqlx::Error> {
    let [a, b] = &request.participants;
    let row: PairingRow = sqlx::query_as(INSERT_STATEMENT)
        .bind(PairingId::new().as_uuid())
        .bind(request.reference.as_deref())
        .bind(request.ttl.num_seconds() as f64)
        .bind(a.number.expose())
        .bind(a.label.as_deref())
        .bind(proxies[0].expose())
        .bind(b.number.expose())
        .bind(b.label.as_deref())
        .bind(proxies[1].expose())
        .bind((!request.call_options.is_empty()).then_some(Json(&request.call_options)))
        .bind(request.pin_digits.is_some())
        .bind(pins.map(|p| p[0].expose()))
        .bind(pins.map(|p| p[1].expose()))
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.into())
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
