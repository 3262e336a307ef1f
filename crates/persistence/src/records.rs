//! Writing call records and events to Postgres: each batch in one transaction, each record at
//! most once (a call by its id and conversation, an event by its dedup key), and the calls they
//! touch folded from all their events. What the batch changed is told to the marketplace in the
//! same transaction: a new call as `call.started`, a call whose callee picked up as
//! `call.answered`, a call that is over as `call.ended`. The spool and the recorder
//! (`crate::durable`) decide when; this module only writes.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;
use voice_proxy_domain::callbacks::{CallContext, CallEnd, EventType, Message};
use voice_proxy_domain::{
    CallEvent, CallId, CallOutcome, CallProgress, CallRecord, CallStatus, EventRecord, PairingId,
};

use crate::callbacks::Outbox;

/// A call record or an event, as the spool holds it (one JSON line each: `{"call": {...}}` or
/// `{"event": {...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    Call(CallRecord),
    Event(EventRecord),
}

/// Writes records in one transaction, folds the calls they touch, and writes the messages that
/// tell what changed (those `outbox` wants). Returns, per record, whether it was new.
pub async fn write_batch(
    pool: &PgPool,
    outbox: &Outbox,
    records: &[Record],
) -> Result<Vec<bool>, sqlx::Error> {
    let mut calls: Vec<(usize, &CallRecord)> = Vec::new();
    let mut events: Vec<(usize, CallEvent, &EventRecord)> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        match r {
            Record::Call(c) => calls.push((i, c)),
            Record::Event(e) => match CallEvent::parse(e.payload.clone()) {
                Ok(parsed) => events.push((i, parsed, e)),
                Err(err) => tracing::warn!(error = %err, "dropping an unparseable spooled event"),
            },
        }
    }
    // One order for every writer, so that concurrent batches never wait on each other in a cycle.
    calls.sort_by(|a, b| {
        a.1.conversation_uuid
            .cmp(&b.1.conversation_uuid)
            .then(a.1.id.cmp(&b.1.id))
    });
    let mut keyed: Vec<(usize, String, CallEvent, &EventRecord)> = events
        .into_iter()
        .map(|(i, e, r)| (i, e.dedup_key(), e, r))
        .collect();
    keyed.sort_by(|a, b| a.1.cmp(&b.1));

    let mut new = vec![false; records.len()];
    let mut tx = crate::begin_generic(pool).await?;
    // Writers of one conversation take turns: a call written in one transaction and its first
    // event in another, at the same moment, would each miss the other's uncommitted row, and
    // the event would never be folded into the call. In one order for every writer (the lock
    // statement sorts the keys), so they never wait on each other in a cycle.
    let conversations: BTreeSet<&str> = calls
        .iter()
        .filter_map(|(_, c)| c.conversation_uuid.as_deref())
        .chain(keyed.iter().map(|k| k.2.conversation_uuid.as_str()))
        .collect();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(k)
           FROM (SELECT hashtextextended('conversation:' || c, 0) AS k
                   FROM unnest($1::text[]) AS c) AS keys
          ORDER BY k",
    )
    .bind(conversations.into_iter().collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    let mut touched: BTreeSet<String> = BTreeSet::new();
    // Calls to tell of, in the order their messages are written.
    let mut started: Vec<Uuid> = Vec::new();
    if !calls.is_empty() {
        let inserted: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO calls (id, conversation_uuid, uuid, pairing_id, caller, proxy_number,
                                callee, outcome, started_at, endpoint_type)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[],
                                  $6::text[], $7::text[], $8::text[], $9::timestamptz[],
                                  $10::text[])
             ON CONFLICT DO NOTHING
             RETURNING id",
        )
        .bind(
            calls
                .iter()
                .map(|(_, c)| c.id.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(
            calls
                .iter()
                .map(|(_, c)| c.conversation_uuid.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            calls
                .iter()
                .map(|(_, c)| c.uuid.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            calls
                .iter()
                .map(|(_, c)| c.pairing_id.map(|p| p.as_uuid()))
                .collect::<Vec<_>>(),
        )
        .bind(
            calls
                .iter()
                .map(|(_, c)| c.caller.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            calls
                .iter()
                .map(|(_, c)| c.proxy_number.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            calls
                .iter()
                .map(|(_, c)| c.callee.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            calls
                .iter()
                .map(|(_, c)| c.outcome.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(calls.iter().map(|(_, c)| c.started_at).collect::<Vec<_>>())
        .bind(
            calls
                .iter()
                .map(|(_, c)| c.endpoint_type.clone())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut new_conversations = Vec::new();
        for (i, c) in &calls {
            if inserted.contains(&c.id.as_uuid()) {
                new[*i] = true;
                new_conversations.extend(c.conversation_uuid.clone());
                started.push(c.id.as_uuid());
            }
        }
        // A new call needs folding only if events for it arrived before it (rare): ask once for
        // the whole batch instead of folding every call.
        if !new_conversations.is_empty() {
            // One index probe per conversation (see `fold` for why not `= ANY`).
            let early: Vec<String> = sqlx::query_scalar(
                "SELECT c.conversation_uuid FROM unnest($1::text[]) AS c(conversation_uuid)
                  CROSS JOIN LATERAL (SELECT 1 FROM call_events e
                                       WHERE e.conversation_uuid = c.conversation_uuid
                                       LIMIT 1) AS found",
            )
            .bind(&new_conversations)
            .fetch_all(&mut *tx)
            .await?;
            touched.extend(early);
        }
    }
    if !keyed.is_empty() {
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO call_events (dedup_key, conversation_uuid, leg_uuid, status, event_at,
                                      payload, received_at, linked_conversation_uuid)
             SELECT k, c, l, s, t, p::jsonb, r, x
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                           $6::text[], $7::timestamptz[], $8::text[]) AS u(k, c, l, s, t, p, r, x)
             ON CONFLICT (dedup_key) DO NOTHING
             RETURNING dedup_key",
        )
        .bind(keyed.iter().map(|k| k.1.clone()).collect::<Vec<_>>())
        .bind(
            keyed
                .iter()
                .map(|k| k.2.conversation_uuid.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            keyed
                .iter()
                .map(|k| k.2.leg_uuid.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            keyed
                .iter()
                .map(|k| k.2.status.as_ref().map(|s| s.as_str().to_owned()))
                .collect::<Vec<_>>(),
        )
        .bind(keyed.iter().map(|k| k.2.timestamp).collect::<Vec<_>>())
        .bind(
            keyed
                .iter()
                .map(|k| k.3.payload.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(keyed.iter().map(|k| k.3.received_at).collect::<Vec<_>>())
        .bind(
            keyed
                .iter()
                .map(|k| k.2.linked_conversation_uuid.clone())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *tx)
        .await?;
        let inserted: BTreeSet<String> = inserted.into_iter().collect();
        let mut seen_in_batch: BTreeSet<&str> = BTreeSet::new();
        for (i, key, event, _) in &keyed {
            // Two copies of one event in the same batch: only the first counts as new.
            if inserted.contains(key) && seen_in_batch.insert(key.as_str()) {
                new[*i] = true;
                touched.insert(event.conversation_uuid.clone());
            }
        }
    }
    let changes = if touched.is_empty() {
        Vec::new()
    } else {
        fold(&mut tx, &touched.into_iter().collect::<Vec<_>>()).await?
    };
    let delivered = tell(&mut tx, outbox, &started, &changes).await?;
    tx.commit().await?;
    if delivered > 0 {
        outbox.wake();
    }
    Ok(new)
}

/// What a fold changed in a call that the marketplace is told of.
enum Change {
    Answered(Uuid, DateTime<Utc>),
    Ended(Uuid, CallEnd),
}

/// Writes `call.started` for the calls in `started` and `call.answered` / `call.ended` for the
/// fold's `changes`, each only if the outbox wants its type. Returns the deliveries written.
async fn tell(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    outbox: &Outbox,
    started: &[Uuid],
    changes: &[Change],
) -> Result<u64, sqlx::Error> {
    let started: &[Uuid] = if outbox.wants(EventType::CallStarted) {
        started
    } else {
        &[]
    };
    let changes: Vec<&Change> = changes
        .iter()
        .filter(|c| match c {
            Change::Answered(..) => outbox.wants(EventType::CallAnswered),
            Change::Ended(..) => outbox.wants(EventType::CallEnded),
        })
        .collect();
    if started.is_empty() && changes.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = started
        .iter()
        .copied()
        .chain(changes.iter().map(|c| match c {
            Change::Answered(id, _) | Change::Ended(id, _) => *id,
        }))
        .collect();
    let contexts = call_contexts(tx, &ids).await?;
    let mut messages = Vec::with_capacity(ids.len());
    for id in started {
        if let Some(call) = contexts.get(id) {
            messages.push(Message::call_started(call));
        }
    }
    for change in changes {
        match change {
            Change::Answered(id, at) => {
                if let Some(call) = contexts.get(id) {
                    messages.push(Message::call_answered(call, *at));
                }
            }
            Change::Ended(id, end) => {
                if let Some(call) = contexts.get(id) {
                    messages.push(Message::call_ended(call, end));
                }
            }
        }
    }
    outbox.write(tx, &messages).await
}

#[derive(sqlx::FromRow)]
struct ContextRow {
    id: Uuid,
    conversation_uuid: Option<String>,
    outcome: String,
    pairing_id: Option<Uuid>,
    proxy_number: Option<String>,
    started_at: DateTime<Utc>,
    reference: Option<String>,
    caller_label: Option<String>,
    callee_label: Option<String>,
}

/// What the messages about these calls say of them: the call as recorded, its pairing's
/// reference and the two people's labels (their numbers stay here).
async fn call_contexts(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, CallContext>, sqlx::Error> {
    let rows: Vec<ContextRow> = sqlx::query_as(
        "SELECT c.id, c.conversation_uuid, c.outcome, c.pairing_id,
                -- The number dialled, when it is one of ours (a SIP or app call's `to` may not
                -- be a number of the pool, and could be a person's).
                CASE WHEN EXISTS (SELECT 1 FROM pool_numbers n WHERE n.number = c.proxy_number)
                     THEN c.proxy_number END AS proxy_number,
                c.started_at,
                p.reference, a.label AS caller_label, b.label AS callee_label
           FROM calls c
           LEFT JOIN pairings p ON p.id = c.pairing_id
           LEFT JOIN participants a ON a.pairing_id = c.pairing_id AND a.number = c.caller
           LEFT JOIN participants b ON b.pairing_id = c.pairing_id
                                   AND b.number = a.counterpart_number
          WHERE c.id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            // The outcome was checked by the database on the way in.
            let outcome = CallOutcome::parse(&r.outcome)?;
            Some((
                r.id,
                CallContext {
                    call_id: CallId::from_uuid(r.id),
                    conversation_uuid: r.conversation_uuid,
                    outcome,
                    pairing_id: r.pairing_id.map(PairingId::from_uuid),
                    reference: r.reference,
                    caller_label: r.caller_label,
                    callee_label: r.callee_label,
                    proxy_number: r.proxy_number,
                    started_at: r.started_at,
                },
            ))
        })
        .collect())
}

/// Recomputes the progress of the calls of these conversations from all their events, under
/// the calls' row locks (taken in conversation order). Returns the calls that were answered
/// or ended by it.
async fn fold(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    conversations: &[String],
) -> Result<Vec<Change>, sqlx::Error> {
    type Row = (
        Uuid,
        Option<String>,
        String,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let calls: Vec<Row> = sqlx::query_as(
        "SELECT id, uuid, conversation_uuid, callee_answered_at, over_at FROM calls
          WHERE conversation_uuid = ANY($1) ORDER BY conversation_uuid FOR UPDATE",
    )
    .bind(conversations)
    .fetch_all(&mut **tx)
    .await?;
    let mut changes = Vec::new();
    if calls.is_empty() {
        return Ok(changes);
    }
    let with_calls: Vec<&str> = calls.iter().map(|c| c.2.as_str()).collect();
    // The events of each conversation, looked up one conversation at a time. Asked as
    // `conversation_uuid = ANY($1)`, Postgres without statistics of call_events (never analyzed,
    // e.g. autovacuum off) guesses 0.5% of the rows per conversation and plans a batch of many
    // as a scan of the whole table. `OFFSET 0` keeps the subquery from being merged into the
    // outer query, so it stays a lookup by one conversation, run once for each.
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT c.conversation_uuid, e.payload
           FROM unnest($1::text[]) AS c(conversation_uuid)
          CROSS JOIN LATERAL (SELECT id, payload FROM call_events
                               WHERE call_events.conversation_uuid = c.conversation_uuid
                              OFFSET 0) AS e
          ORDER BY e.id",
    )
    .bind(&with_calls)
    .fetch_all(&mut **tx)
    .await?;
    let mut ids = Vec::new();
    let mut statuses = Vec::new();
    let mut answered = Vec::new();
    let mut callee_answered = Vec::new();
    let mut over = Vec::new();
    let mut ended = Vec::new();
    let mut durations = Vec::new();
    let mut prices = Vec::new();
    for (id, inbound, conversation, was_answered, was_over) in &calls {
        // Whether the callee had picked up, and the call was over, before this batch.
        let events: Vec<CallEvent> = rows
            .iter()
            .filter(|(c, _)| c == conversation)
            .filter_map(|(_, p)| CallEvent::parse(p.clone()).ok())
            .collect();
        if events.is_empty() {
            continue;
        }
        let progress = CallProgress::fold(inbound.as_deref(), &events);
        if let (None, Some(at)) = (was_answered, progress.callee_answered_at) {
            changes.push(Change::Answered(*id, at));
        }
        if let (None, true, Some(ended_at)) = (was_over, progress.over, progress.ended_at) {
            changes.push(Change::Ended(
                *id,
                CallEnd {
                    status: progress.status.clone(),
                    answered_at: progress.answered_at,
                    ended_at,
                    talk_seconds: progress.duration_seconds,
                    price: progress.price,
                },
            ));
        }
        ids.push(*id);
        statuses.push(
            progress
                .status
                .as_ref()
                .map(|s: &CallStatus| s.as_str().to_owned()),
        );
        answered.push(progress.answered_at);
        callee_answered.push(progress.callee_answered_at);
        over.push(progress.ended_at.filter(|_| progress.over));
        ended.push(progress.ended_at);
        durations.push(progress.duration_seconds);
        prices.push(progress.price.map(|p| p.to_string()));
    }
    if ids.is_empty() {
        return Ok(changes);
    }
    sqlx::query(
        "UPDATE calls c
            SET status = u.status, answered_at = u.answered_at, ended_at = u.ended_at,
                duration_seconds = u.duration, price = u.price::numeric,
                callee_answered_at = COALESCE(c.callee_answered_at, u.callee_answered_at),
                over_at = COALESCE(c.over_at, u.over_at)
           FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[],
                       $5::bigint[], $6::text[], $7::timestamptz[], $8::timestamptz[])
                AS u(id, status, answered_at, ended_at, duration, price, callee_answered_at,
                     over_at)
          WHERE c.id = u.id",
    )
    .bind(ids)
    .bind(statuses)
    .bind(answered)
    .bind(ended)
    .bind(durations)
    .bind(prices)
    .bind(callee_answered)
    .bind(over)
    .execute(&mut **tx)
    .await?;
    Ok(changes)
}
