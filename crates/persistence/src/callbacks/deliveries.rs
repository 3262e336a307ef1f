//! Deliveries: claiming the ones due, recording each attempt, listing them, sending one again.
//!
//! A delivery is claimed with a lease: the claim sets `leased_until`, and no other claim takes
//! it until the lease has run out, so that two instances never send one message to one endpoint
//! at the same time; an instance that dies mid-send leaves a lease that runs out, and the
//! message is sent again (the same `webhook-id`, so the receiver can tell). Of the pending
//! messages with the same ordering key, only the oldest is claimed: an endpoint receives one
//! pairing's messages one at a time, in the order they were made.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;
use voice_proxy_domain::callbacks::{AfterAttempt, DeliveryState, EventType};
use voice_proxy_domain::{EndpointId, MessageId};

use crate::pagination::Page;

/// A delivery claimed for an attempt.
#[derive(Debug, Clone)]
pub struct Due {
    pub endpoint_id: EndpointId,
    pub message_id: MessageId,
    pub url: String,
    /// The secrets to sign with, newest first.
    pub secrets: Vec<String>,
    pub body: String,
    pub event_type: String,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    /// An operator's extra attempt at a failed delivery.
    pub once: bool,
}

#[derive(sqlx::FromRow)]
struct DueRow {
    endpoint_id: Uuid,
    message_id: Uuid,
    attempts: i32,
    retry_once: bool,
    url: String,
    body: String,
    event_type: String,
    secrets: Vec<String>,
}

/// The longest a claim may run. It takes milliseconds with the plan below; a claim that runs
/// longer is cancelled by Postgres and the dispatcher tries again.
const CLAIM_TIMEOUT: &str = "5s";

/// Claims up to `limit` due deliveries, each leased for `lease`, and for each endpoint no more
/// than `per_endpoint` less what `in_flight` says it has in flight.
///
/// The claim must not depend on the table's statistics: the deliveries table grows from empty
/// to millions of rows within minutes when an endpoint is down, and a plan made while it was
/// small (the per-key check as a scan of every pending delivery for each due one, under a sort
/// of every due delivery) ran for minutes on millions. So the planner is kept to index scans
/// for this one transaction: for each enabled endpoint, its due deliveries in the order of
/// `webhook_deliveries_due`, stopping at the endpoint's room (so a dead endpoint's backlog is
/// never read while it is busy), and the per-key check (is this the oldest pending delivery of
/// its key?) as one probe of `webhook_deliveries_in_order` for each, the only index in that
/// order. Sorting the few candidates is the one sort left. (The penalty the planner puts on the
/// scan of the endpoints table would make the plan look costly enough to compile; `jit` is off.)
pub async fn claim(
    pool: &PgPool,
    limit: u32,
    per_endpoint: u32,
    lease: Duration,
    in_flight: &[(EndpointId, u32)],
) -> Result<Vec<Due>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "SELECT set_config('enable_seqscan', 'off', true),
                set_config('enable_bitmapscan', 'off', true),
                set_config('jit', 'off', true),
                set_config('statement_timeout', $1, true)",
    )
    .bind(CLAIM_TIMEOUT)
    .execute(&mut *tx)
    .await?;
    let rows: Vec<DueRow> = sqlx::query_as(
        "WITH due AS (
             SELECT c.endpoint_id, c.message_id
               FROM webhook_endpoints e
               LEFT JOIN unnest($3::uuid[], $4::int8[]) AS f(id, n) ON f.id = e.id
              CROSS JOIN LATERAL (
                    SELECT d.endpoint_id, d.message_id, d.next_attempt_at, d.seq
                      FROM webhook_deliveries d
                     WHERE d.endpoint_id = e.id AND d.state = 'pending'
                       AND d.next_attempt_at <= now()
                       AND (d.leased_until IS NULL OR d.leased_until <= now())
                       AND (d.ordering_key IS NULL
                            OR d.seq = (SELECT b.seq FROM webhook_deliveries b
                                         WHERE b.endpoint_id = d.endpoint_id
                                           AND b.ordering_key = d.ordering_key
                                           AND b.state = 'pending'
                                         ORDER BY b.endpoint_id, b.ordering_key, b.seq
                                         LIMIT 1))
                     ORDER BY d.endpoint_id, d.next_attempt_at, d.seq
                     LIMIT GREATEST($5 - COALESCE(f.n, 0), 0)
                       FOR UPDATE OF d SKIP LOCKED) c
              WHERE NOT e.disabled
              ORDER BY c.next_attempt_at, c.seq
              LIMIT $1
         )
         UPDATE webhook_deliveries d
            SET leased_until = now() + make_interval(secs => $2), attempts = d.attempts + 1
           FROM due, webhook_messages m, webhook_endpoints e
          WHERE d.endpoint_id = due.endpoint_id AND d.message_id = due.message_id
            AND m.id = d.message_id AND e.id = d.endpoint_id
         RETURNING d.endpoint_id, d.message_id, d.attempts, d.retry_once, e.url, m.body,
                   m.event_type,
                   ARRAY(SELECT s.secret FROM webhook_endpoint_secrets s
                          WHERE s.endpoint_id = d.endpoint_id
                            AND (s.retires_at IS NULL OR s.retires_at > now())
                          ORDER BY s.created_at DESC) AS secrets",
    )
    .bind(i64::from(limit))
    .bind(lease.as_secs_f64())
    .bind(
        in_flight
            .iter()
            .map(|(e, _)| e.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind(
        in_flight
            .iter()
            .map(|(_, n)| i64::from(*n))
            .collect::<Vec<_>>(),
    )
    .bind(i64::from(per_endpoint))
    // Planned afresh each time, for the table as it is now: a plan kept from when it was
    // nearly empty made every claim take over a second once it held a million rows.
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|r| Due {
            endpoint_id: EndpointId::from_uuid(r.endpoint_id),
            message_id: MessageId::from_uuid(r.message_id),
            url: r.url,
            secrets: r.secrets,
            body: r.body,
            event_type: r.event_type,
            attempt: u32::try_from(r.attempts).unwrap_or(1),
            once: r.retry_once,
        })
        .collect())
}

/// What one attempt got.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub at: DateTime<Utc>,
    /// The endpoint's status code, if it answered.
    pub status_code: Option<u16>,
    pub latency: Duration,
    /// Why it failed, when it did: the status, a timeout, a connection error.
    pub error: Option<String>,
}

/// Records an attempt and what follows it. Nothing changes if the delivery was claimed again
/// meanwhile (its lease ran out) or deleted with its endpoint.
pub async fn finish(
    pool: &PgPool,
    due: &Due,
    result: &AttemptResult,
    next: AfterAttempt,
) -> Result<(), sqlx::Error> {
    let state = DeliveryState::after(next).as_str();
    let wait = match next {
        AfterAttempt::RetryIn(wait) => Some(wait.as_secs_f64()),
        AfterAttempt::Succeeded | AfterAttempt::Failed => None,
    };
    sqlx::query(
        "WITH d AS (
             UPDATE webhook_deliveries
                SET state = $3,
                    next_attempt_at = CASE WHEN $4::float8 IS NULL THEN next_attempt_at
                                           ELSE now() + make_interval(secs => $4) END,
                    leased_until = NULL, retry_once = false,
                    finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END
              WHERE endpoint_id = $1 AND message_id = $2 AND attempts = $5
             RETURNING endpoint_id, message_id, ordering_key, seq
         ), behind AS (
             -- The messages queued behind a retried one are not due before it.
             UPDATE webhook_deliveries q
                SET next_attempt_at = GREATEST(q.next_attempt_at,
                                               now() + make_interval(secs => $4))
               FROM d
              WHERE $4::float8 IS NOT NULL
                AND q.endpoint_id = d.endpoint_id AND q.ordering_key = d.ordering_key
                AND q.state = 'pending' AND q.seq > d.seq
         )
         INSERT INTO webhook_attempts
             (endpoint_id, message_id, attempt, at, status_code, latency_ms, error)
         SELECT endpoint_id, message_id, $5, $6, $7, $8, $9 FROM d
         ON CONFLICT DO NOTHING",
    )
    .bind(due.endpoint_id.as_uuid())
    .bind(due.message_id.as_uuid())
    .bind(state)
    .bind(wait)
    .bind(i32::try_from(due.attempt).unwrap_or(i32::MAX))
    .bind(result.at)
    .bind(result.status_code.map(i32::from))
    .bind(i32::try_from(result.latency.as_millis()).unwrap_or(i32::MAX))
    .bind(result.error.as_deref())
    .execute(pool)
    .await?;
    Ok(())
}

/// One delivery as the API shows it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: MessageId,
    pub event_type: Option<EventType>,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub state: DeliveryState,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub attempts: Vec<AttemptRecord>,
}

/// One attempt as recorded.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub message_id: MessageId,
    pub attempt: i32,
    pub at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    message_id: Uuid,
    attempt: i32,
    at: DateTime<Utc>,
    status_code: Option<i32>,
    latency_ms: i32,
    error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    message_id: Uuid,
    event_type: String,
    body: String,
    created_at: DateTime<Utc>,
    state: String,
    next_attempt_at: DateTime<Utc>,
}

impl DeliveryRow {
    fn into_delivery(self, attempts: Vec<AttemptRecord>) -> Result<Delivery, sqlx::Error> {
        let state = DeliveryState::parse(&self.state).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown delivery state {:?}", self.state).into())
        })?;
        Ok(Delivery {
            message_id: MessageId::from_uuid(self.message_id),
            event_type: EventType::parse(&self.event_type),
            body: self.body,
            created_at: self.created_at,
            next_attempt_at: (state == DeliveryState::Pending).then_some(self.next_attempt_at),
            state,
            attempts,
        })
    }
}

/// An endpoint's deliveries, newest first, with their attempts; only those in `state`, if given.
pub async fn list(
    pool: &PgPool,
    endpoint: EndpointId,
    state: Option<DeliveryState>,
    after: Option<MessageId>,
    limit: u32,
) -> Result<Page<Delivery, MessageId>, sqlx::Error> {
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT d.message_id, m.event_type, m.body, m.created_at, d.state, d.next_attempt_at
           FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id
          WHERE d.endpoint_id = $1 AND ($2::text IS NULL OR d.state = $2)
            AND ($3::uuid IS NULL OR d.message_id < $3)
          ORDER BY d.message_id DESC LIMIT $4",
    )
    .bind(endpoint.as_uuid())
    .bind(state.map(DeliveryState::as_str))
    .bind(after.map(|a| a.as_uuid()))
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.message_id).collect();
    let attempts = attempts_of(pool, endpoint, &ids).await?;
    let items = rows
        .into_iter()
        .map(|r| {
            let id = MessageId::from_uuid(r.message_id);
            let mine = attempts.iter().filter(|a| a.message_id == id).cloned();
            r.into_delivery(mine.collect())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(items, limit, |d: &Delivery| d.message_id))
}

async fn attempts_of(
    pool: &PgPool,
    endpoint: EndpointId,
    messages: &[Uuid],
) -> Result<Vec<AttemptRecord>, sqlx::Error> {
    let rows: Vec<AttemptRow> = sqlx::query_as(
        "SELECT message_id, attempt, at, status_code, latency_ms, error FROM webhook_attempts
          WHERE endpoint_id = $1 AND message_id = ANY($2) ORDER BY message_id, attempt",
    )
    .bind(endpoint.as_uuid())
    .bind(messages)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AttemptRecord {
            message_id: MessageId::from_uuid(r.message_id),
            attempt: r.attempt,
            at: r.at,
            status_code: r.status_code,
            latency_ms: r.latency_ms,
            error: r.error,
        })
        .collect())
}

/// One delivery, with its attempts; `None` if the endpoint has no such message.
pub async fn get(
    pool: &PgPool,
    endpoint: EndpointId,
    message: MessageId,
) -> Result<Option<Delivery>, sqlx::Error> {
    let row: Option<DeliveryRow> = sqlx::query_as(
        "SELECT d.message_id, m.event_type, m.body, m.created_at, d.state, d.next_attempt_at
           FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id
          WHERE d.endpoint_id = $1 AND d.message_id = $2",
    )
    .bind(endpoint.as_uuid())
    .bind(message.as_uuid())
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let attempts = attempts_of(pool, endpoint, &[r.message_id]).await?;
    r.into_delivery(attempts).map(Some)
}

/// Sends a delivery again as soon as it may be: a pending one at once instead of at its next
/// retry, a finished one (failed, or even succeeded) once more, without retries if that attempt
/// fails. `false` if the endpoint has no such message.
pub async fn retry(
    pool: &PgPool,
    endpoint: EndpointId,
    message: MessageId,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE webhook_deliveries
            SET retry_once = retry_once OR state <> 'pending',
                state = 'pending', finished_at = NULL, next_attempt_at = now()
          WHERE endpoint_id = $1 AND message_id = $2",
    )
    .bind(endpoint.as_uuid())
    .bind(message.as_uuid())
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() > 0)
}

/// Pending deliveries (those waiting for a disabled endpoint included), and how long the oldest
/// due one to an enabled endpoint has waited past its due time (zero when none is overdue), for
/// the metrics.
pub async fn backlog(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*),
                COALESCE(EXTRACT(EPOCH FROM now() - min(d.next_attempt_at)
                                 FILTER (WHERE d.next_attempt_at <= now() AND NOT e.disabled)),
                         0)::float8
           FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
          WHERE d.state = 'pending'",
    )
    .fetch_one(pool)
    .await
}
