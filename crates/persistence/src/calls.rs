//! Reading call records and the events Vonage reported about them. They are written by
//! [`crate::records`], when [`crate::durable::recorder`] says.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;
use voice_proxy_domain::{CallId, CallOutcome, PairingId};

use crate::pagination::Page;

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
    pub endpoint_type: Option<String>,
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
    endpoint_type: Option<String>,
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
            endpoint_type: r.endpoint_type,
        })
    }
}

const SELECT_CALL: &str = "SELECT id, conversation_uuid, uuid, pairing_id, caller, proxy_number,
        callee, outcome, status, started_at, answered_at, ended_at, duration_seconds,
        price::text AS price, endpoint_type
   FROM calls";

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
    /// Calls with this status (`busy`, `completed`, ...).
    pub status: Option<String>,
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
    if let Some(status) = &filter.status {
        q.push(" AND status = ").push_bind(status.clone());
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

/// Every event stored for a conversation, in the order received: those filed under it and
/// those linked to it (a transfer into it).
pub async fn events(
    pool: &PgPool,
    conversation_uuid: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows: Vec<(i64, DateTime<Utc>, Value)> = sqlx::query_as(
        "SELECT id, received_at, payload FROM call_events WHERE conversation_uuid = $1
         UNION ALL
         SELECT id, received_at, payload FROM call_events
          WHERE linked_conversation_uuid = $1 AND conversation_uuid <> $1
          ORDER BY id",
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
