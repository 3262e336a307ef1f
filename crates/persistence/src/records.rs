//! Writing call records and events to Postgres: each batch in one transaction, each record at
//! most once (a call by its id and conversation, an event by its dedup key), and the calls they
//! touch folded from all their events. The spool and the recorder (`crate::durable`) decide when;
//! this module only writes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;
use voice_proxy_domain::{CallEvent, CallProgress, CallRecord, CallStatus, EventRecord};

/// A call record or an event, as the spool holds it (one JSON line each: `{"call": {...}}` or
/// `{"event": {...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    Call(CallRecord),
    Event(EventRecord),
}

/// Writes records in one transaction and folds the calls they touch. Returns, per record,
/// whether it was new.
pub async fn write_batch(pool: &PgPool, records: &[Record]) -> Result<Vec<bool>, sqlx::Error> {
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
    if !touched.is_empty() {
        fold(&mut tx, &touched.into_iter().collect::<Vec<_>>()).await?;
    }
    tx.commit().await?;
    Ok(new)
}

/// Recomputes the progress of the calls of these conversations from all their events, under
/// the calls' row locks (taken in conversation order).
async fn fold(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    conversations: &[String],
) -> Result<(), sqlx::Error> {
    let calls: Vec<(Uuid, Option<String>, String)> = sqlx::query_as(
        "SELECT id, uuid, conversation_uuid FROM calls
          WHERE conversation_uuid = ANY($1) ORDER BY conversation_uuid FOR UPDATE",
    )
    .bind(conversations)
    .fetch_all(&mut **tx)
    .await?;
    if calls.is_empty() {
        return Ok(());
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
    let mut ended = Vec::new();
    let mut durations = Vec::new();
    let mut prices = Vec::new();
    for (id, inbound, conversation) in &calls {
        let events: Vec<CallEvent> = rows
            .iter()
            .filter(|(c, _)| c == conversation)
            .filter_map(|(_, p)| CallEvent::parse(p.clone()).ok())
            .collect();
        if events.is_empty() {
            continue;
        }
        let progress = CallProgress::fold(inbound.as_deref(), &events);
        ids.push(*id);
        statuses.push(
            progress
                .status
                .as_ref()
                .map(|s: &CallStatus| s.as_str().to_owned()),
        );
        answered.push(progress.answered_at);
        ended.push(progress.ended_at);
        durations.push(progress.duration_seconds);
        prices.push(progress.price.map(|p| p.to_string()));
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE calls c
            SET status = u.status, answered_at = u.answered_at, ended_at = u.ended_at,
                duration_seconds = u.duration, price = u.price::numeric
           FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[],
                       $5::bigint[], $6::text[])
                AS u(id, status, answered_at, ended_at, duration, price)
          WHERE c.id = u.id",
    )
    .bind(ids)
    .bind(statuses)
    .bind(answered)
    .bind(ended)
    .bind(durations)
    .bind(prices)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
