//! Call records and the events Vonage reports about them.
//!
//! A call row is written by the answer webhook; events are stored as they arrive, once each, and
//! folded into the call row. Both paths commit their own row first and then fold under the call
//! row's lock, reading every committed event, so whichever folds last sees everything, in
//! whatever order the answer and the events arrived.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;
use voice_proxy_domain::{
    CallEvent, CallId, CallOutcome, CallProgress, CallStatus, Money, PairingId, PhoneNumber,
};

use crate::pagination::Page;

/// A call as the answer webhook saw it.
#[derive(Debug, Clone)]
pub struct NewCall {
    pub conversation_uuid: Option<String>,
    pub uuid: Option<String>,
    pub pairing_id: Option<PairingId>,
    /// The caller's number as digits, when there was one.
    pub caller: Option<String>,
    pub proxy_number: Option<String>,
    pub callee: Option<PhoneNumber>,
    pub outcome: CallOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub id: CallId,
    pub conversation_uuid: Option<String>,
    pub uuid: Option<String>,
    pub pairing_id: Option<PairingId>,
    pub caller: Option<String>,
    pub proxy_number: Option<String>,
    pub callee: Option<String>,
    pub outcome: CallOutcome,
    pub status: Option<String>,
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<i64>,
    pub price: Option<String>,
}

#[derive(sqlx::FromRow)]
struct CallRow {
    id: Uuid,
    conversation_uuid: Option<String>,
    uuid: Option<String>,
    pairing_id: Option<Uuid>,
    caller: Option<String>,
    proxy_number: Option<String>,
    callee: Option<String>,
    outcome: String,
    status: Option<String>,
    started_at: DateTime<Utc>,
    answered_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    duration_seconds: Option<i64>,
    price: Option<String>,
}

impl TryFrom<CallRow> for Call {
    type Error = sqlx::Error;
    fn try_from(r: CallRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: CallId::from_uuid(r.id),
            conversation_uuid: r.conversation_uuid,
            uuid: r.uuid,
            pairing_id: r.pairing_id.map(PairingId::from_uuid),
            caller: r.caller,
            proxy_number: r.proxy_number,
            callee: r.callee,
            outcome: CallOutcome::parse(&r.outcome)
                .ok_or_else(|| sqlx::Error::Decode("unknown call outcome".into()))?,
            status: r.status,
            started_at: r.started_at,
            answered_at: r.answered_at,
            ended_at: r.ended_at,
            duration_seconds: r.duration_seconds,
            price: r.price,
        })
    }
}

const SELECT_CALL: &str = "SELECT id, conversation_uuid, uuid, pairing_id, caller, proxy_number,
        callee, outcome, status, started_at, answered_at, ended_at, duration_seconds,
        price::text AS price
   FROM calls";

/// Records an inbound call. A retried answer request for the same conversation records nothing
/// new and returns the first record's id.
#[tracing::instrument(skip_all, fields(outcome = call.outcome.as_str()))]
pub async fn record_answer(pool: &PgPool, call: &NewCall) -> Result<CallId, sqlx::Error> {
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "WITH inserted AS (
             INSERT INTO calls (id, conversation_uuid, uuid, pairing_id, caller, proxy_number,
                                callee, outcome)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (conversation_uuid) DO NOTHING
             RETURNING id
         )
         SELECT id FROM inserted
         UNION ALL
         SELECT id FROM calls WHERE conversation_uuid = $2 AND NOT EXISTS (SELECT 1 FROM inserted)
         LIMIT 1",
    )
    .bind(CallId::new().as_uuid())
    .bind(call.conversation_uuid.as_deref())
    .bind(call.uuid.as_deref())
    .bind(call.pairing_id.map(|p| p.as_uuid()))
    .bind(call.caller.as_deref())
    .bind(call.proxy_number.as_deref())
    .bind(call.callee.as_ref().map(PhoneNumber::expose))
    .bind(call.outcome.as_str())
    .fetch_optional(pool)
    .await?;
    let id = match inserted {
        Some(id) => id,
        // A concurrent retry of the same request inserted the row after this statement's
        // snapshot was taken: read it now.
        None => {
            sqlx::query_scalar("SELECT id FROM calls WHERE conversation_uuid = $1")
                .bind(call.conversation_uuid.as_deref())
                .fetch_one(pool)
                .await?
        }
    };
    if let Some(conversation) = &call.conversation_uuid {
        fold(pool, conversation).await?;
    }
    Ok(CallId::from_uuid(id))
}

/// Stores an event unless the same event was stored before; returns whether it was new. A new
/// event is folded into its call.
#[tracing::instrument(skip_all, fields(status = event.status.as_ref().map(CallStatus::as_str)))]
pub async fn record_event(pool: &PgPool, event: &CallEvent) -> Result<bool, sqlx::Error> {
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO call_events (dedup_key, conversation_uuid, leg_uuid, status, event_at, payload)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (dedup_key) DO NOTHING
         RETURNING id",
    )
    .bind(event.dedup_key())
    .bind(event.conversation_uuid.as_deref())
    .bind(event.leg_uuid.as_deref())
    .bind(event.status.as_ref().map(CallStatus::as_str))
    .bind(event.timestamp)
    .bind(&event.payload)
    .fetch_optional(pool)
    .await?;
    if inserted.is_none() {
        return Ok(false);
    }
    if let Some(conversation) = &event.conversation_uuid {
        fold(pool, conversation).await?;
    }
    Ok(true)
}

/// Recomputes a call's progress from all of its conversation's events, under the call row's lock.
async fn fold(pool: &PgPool, conversation_uuid: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let call: Option<(Uuid, Option<String>)> =
        sqlx::query_as("SELECT id, uuid FROM calls WHERE conversation_uuid = $1 FOR UPDATE")
            .bind(conversation_uuid)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((call_id, inbound_leg)) = call else {
        // The answer webhook has not recorded this call yet; it folds when it does.
        return tx.commit().await;
    };
    let payloads: Vec<Value> = sqlx::query_scalar(
        "SELECT payload FROM call_events WHERE conversation_uuid = $1 ORDER BY id",
    )
    .bind(conversation_uuid)
    .fetch_all(&mut *tx)
    .await?;
    if payloads.is_empty() {
        return tx.commit().await;
    }
    let events: Vec<CallEvent> = payloads
        .into_iter()
        .filter_map(|p| CallEvent::parse(p).ok())
        .collect();
    let progress = CallProgress::fold(inbound_leg.as_deref(), &events);
    sqlx::query(
        "UPDATE calls SET status = $2, answered_at = $3, ended_at = $4, duration_seconds = $5,
                          price = $6::numeric
          WHERE id = $1",
    )
    .bind(call_id)
    .bind(progress.status.as_ref().map(CallStatus::as_str))
    .bind(progress.answered_at)
    .bind(progress.ended_at)
    .bind(progress.duration_seconds)
    .bind(progress.price.map(|p: Money| p.to_string()))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[tracing::instrument(skip_all, fields(call_id = %id))]
pub async fn get(pool: &PgPool, id: CallId) -> Result<Option<Call>, sqlx::Error> {
    let row: Option<CallRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT_CALL} WHERE id = $1")))
            .bind(id.as_uuid())
            .fetch_optional(pool)
            .await?;
    row.map(TryInto::try_into).transpose()
}

#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub pairing_id: Option<PairingId>,
    /// Calls that started at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Calls that started before this time.
    pub to: Option<DateTime<Utc>>,
}

/// Calls, newest first, after the call `after`.
#[tracing::instrument(skip_all)]
pub async fn list(
    pool: &PgPool,
    filter: &CallFilter,
    after: Option<CallId>,
    limit: u32,
) -> Result<Page<Call, CallId>, sqlx::Error> {
    let mut q = QueryBuilder::<Postgres>::new(SELECT_CALL);
    q.push(" WHERE true");
    if let Some(pairing) = filter.pairing_id {
        q.push(" AND pairing_id = ").push_bind(pairing.as_uuid());
    }
    if let Some(from) = filter.from {
        q.push(" AND started_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        q.push(" AND started_at < ").push_bind(to);
    }
    if let Some(after) = after {
        q.push(" AND id < ").push_bind(after.as_uuid());
    }
    q.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let rows: Vec<CallRow> = q.build_query_as().fetch_all(pool).await?;
    let calls = rows
        .into_iter()
        .map(TryInto::try_into)
        .collect::<Result<Vec<Call>, _>>()?;
    Ok(Page::from_rows(calls, limit, |c: &Call| c.id))
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub payload: Value,
}

/// Every event stored for a conversation, in the order received.
pub async fn events(
    pool: &PgPool,
    conversation_uuid: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows: Vec<(i64, DateTime<Utc>, Value)> = sqlx::query_as(
        "SELECT id, received_at, payload FROM call_events
          WHERE conversation_uuid = $1 ORDER BY id",
    )
    .bind(conversation_uuid)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, received_at, payload)| StoredEvent {
            id,
            received_at,
            payload,
        })
        .collect())
}
