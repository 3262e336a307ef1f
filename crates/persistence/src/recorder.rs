//! Writing call records and events.
//!
//! Call records (one per answered call, on the answer webhook's path) are written ahead into a
//! local spool: appended and fsynced together with the others of the moment (one fsync a
//! batch), acknowledged, and moved into Postgres by the drainer right after. Events go to
//! Postgres in batches; when Postgres cannot take them, they too go into the spool, which is
//! fsynced before anything is acknowledged and drained into Postgres once it is back.
//!
//! Every write is idempotent (a call by its id and conversation, an event by its dedup key), so a
//! spool segment replayed after a crash, in part or twice, stores each record exactly once.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;
use voice_proxy_domain::{CallEvent, CallProgress, CallStatus};
pub use voice_proxy_domain::{CallRecord, EventRecord};

pub use crate::spool::{
    AppendError, DEFAULT_MEMORY_BYTES, DEFAULT_SEGMENT_BYTES, DrainError, Spool, drain_forever,
};

/// Most records written in one transaction.
const MAX_BATCH: usize = 512;
/// Batches written at once.
const MAX_IN_FLIGHT: usize = 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    Call(CallRecord),
    Event(EventRecord),
}

/// What happened to a record once it was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// In Postgres now; `false` when it was there before (a retry).
    Database { new: bool },
    /// Postgres refused the record itself (a constraint, its data): it is kept in the spool's
    /// dead-letter file for an operator (`voice-proxy dead-letter replay`).
    DeadLettered,
    /// In the local spool, fsynced; the drainer moves it into Postgres (at once, or when
    /// Postgres is back).
    Spooled,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("neither the database nor the spool could take the record: {0}")]
    Unavailable(String),
}

struct Job {
    record: Record,
    ack: Ack,
}

type Ack = oneshot::Sender<Result<Stored, RecordError>>;

/// A batch's records, and the acknowledgements owed for them, in the same order.
fn split(batch: Vec<Job>) -> (Vec<Record>, Vec<Ack>) {
    batch.into_iter().map(|j| (j.record, j.ack)).unzip()
}

/// The front door for call records and events. Cloning shares it.
///
/// Call records and events are queued and batched apart: a call record only waits for the
/// spool's fsync, never behind events waiting for a slow or failing database (the answer
/// webhook waits for it while the caller hears nothing).
#[derive(Clone)]
pub struct Recorder {
    calls: mpsc::Sender<Job>,
    events: mpsc::Sender<Job>,
    spool: Arc<Spool>,
}

impl Recorder {
    /// Starts the batch writer. Call records go through the spool in `spool_dir` (segments of
    /// `segment_bytes`, at most `memory_bytes` of records kept in memory), events to `pool`, or
    /// to the spool when the database fails. Fails when the spool folder cannot be written.
    pub fn start(
        pool: PgPool,
        spool_dir: &Path,
        segment_bytes: u64,
        memory_bytes: u64,
    ) -> std::io::Result<Self> {
        let spool =
            Arc::new(Spool::open(spool_dir, segment_bytes)?.with_memory_limit(memory_bytes));
        // Ready before the first call: otherwise the first append zero-fills its segment while
        // the caller waits. (If this fails, appends and the drainer try again.)
        if let Err(e) = spool.prepare_spare() {
            tracing::warn!(error = %e, "could not prepare the first spool segment");
        }
        let (calls, calls_rx) = mpsc::channel(16 * MAX_BATCH);
        let (events, events_rx) = mpsc::channel(16 * MAX_BATCH);
        tokio::spawn(collect(calls_rx, {
            let (pool, spool) = (pool.clone(), spool.clone());
            move |batch| {
                let (pool, spool) = (pool.clone(), spool.clone());
                async move { spool_first(&pool, &spool, batch).await }
            }
        }));
        tokio::spawn(collect(events_rx, {
            let spool = spool.clone();
            move |batch| {
                let (pool, spool) = (pool.clone(), spool.clone());
                async move { write_events(&pool, &spool, batch).await }
            }
        }));
        Ok(Self {
            calls,
            events,
            spool,
        })
    }

    /// Stores a record; returns once it is durable (in Postgres or fsynced in the spool). A call
    /// record is always spooled first.
    pub async fn record(&self, record: Record) -> Result<Stored, RecordError> {
        let (ack, done) = oneshot::channel();
        let queue = match record {
            Record::Call(_) => &self.calls,
            Record::Event(_) => &self.events,
        };
        queue
            .send(Job { record, ack })
            .await
            .map_err(|_| RecordError::Unavailable("the recorder has stopped".into()))?;
        done.await
            .map_err(|_| RecordError::Unavailable("the recorder has stopped".into()))?
    }

    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }
}

/// Gathers queued jobs into batches and writes several batches at once with `write`.
async fn collect<W, F>(mut rx: mpsc::Receiver<Job>, write: W)
where
    W: Fn(Vec<Job>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let writing = write(batch);
        tokio::spawn(async move {
            writing.await;
            drop(permit);
        });
    }
    // The sender side is gone: wait for the batches still being written.
    let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
}

/// Appends call records to the spool (one fsync for all of them), acknowledges them, and wakes
/// the drainer to move them into Postgres. When the spool cannot be written, writes them to
/// Postgres directly instead.
async fn spool_first(pool: &PgPool, spool: &Arc<Spool>, batch: Vec<Job>) {
    if batch.is_empty() {
        return;
    }
    let (records, acks) = split(batch);
    // Kept for the case the spool fails (call records are small).
    let copies = records.clone();
    match append_off_runtime(spool, records).await {
        Ok(()) => acknowledge(acks, Ok(Stored::Spooled)),
        Err(spool_error) => {
            tracing::error!(error = %spool_error, records = copies.len(), "could not spool call records; writing them to the database directly");
            match write_isolating(pool, spool, &copies).await {
                Ok(written) => {
                    for (ack, written) in acks.into_iter().zip(written) {
                        let _ = ack.send(Ok(written.into()));
                    }
                }
                Err(db_error) => acknowledge(
                    acks,
                    Err(AppendError::Io(std::io::Error::other(format!(
                        "{spool_error}; and the database: {db_error}"
                    )))),
                ),
            }
        }
    }
    spool.wake_drainer();
}

/// Appends to the spool on a blocking thread (the append waits for an fsync).
async fn append_off_runtime(spool: &Arc<Spool>, records: Vec<Record>) -> Result<(), AppendError> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || spool.append(records))
        .await
        .unwrap_or_else(|e| Err(AppendError::Io(std::io::Error::other(e))))
}

fn acknowledge(acks: Vec<Ack>, outcome: Result<Stored, AppendError>) {
    match outcome {
        Ok(stored) => {
            for ack in acks {
                let _ = ack.send(Ok(stored));
            }
        }
        Err(e) => {
            match &e {
                AppendError::Full => {
                    tracing::warn!(records = acks.len(), "{e}")
                }
                AppendError::Io(_) => {
                    tracing::error!(error = %e, "spool append failed; records not acknowledged")
                }
            }
            for ack in acks {
                let _ = ack.send(Err(RecordError::Unavailable(e.to_string())));
            }
        }
    }
}

async fn write_events(pool: &PgPool, spool: &Arc<Spool>, batch: Vec<Job>) {
    if batch.is_empty() {
        return;
    }
    let (records, acks) = split(batch);
    let outcome = if spool.database_down() {
        Err(sqlx::Error::PoolTimedOut)
    } else {
        write_isolating(pool, spool, &records).await
    };
    match outcome {
        Ok(written) => {
            spool.mark_database_up();
            for (ack, written) in acks.into_iter().zip(written) {
                let _ = ack.send(Ok(written.into()));
            }
        }
        Err(db_error) => {
            if !spool.database_down() {
                tracing::warn!(error = %db_error, records = records.len(), "database write failed; spooling");
            }
            spool.mark_database_down();
            let appended = append_off_runtime(spool, records).await;
            acknowledge(acks, appended.map(|()| Stored::Spooled));
        }
    }
}

/// What writing one record came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    New,
    /// It was in the database already (a retry, or a spool segment replayed).
    Duplicate,
    /// The database refused it; it is in the dead-letter file.
    DeadLettered,
}

impl From<Written> for Stored {
    fn from(w: Written) -> Self {
        match w {
            Written::New => Self::Database { new: true },
            Written::Duplicate => Self::Database { new: false },
            Written::DeadLettered => Self::DeadLettered,
        }
    }
}

/// Writes a batch; if Postgres refuses its data (rather than being unreachable), writes the
/// records one by one and sets aside, in the spool's dead-letter file, those it refuses, so that
/// one bad record never holds back the others. Fails only on a transient error.
pub(crate) async fn write_isolating(
    pool: &PgPool,
    spool: &Spool,
    records: &[Record],
) -> Result<Vec<Written>, sqlx::Error> {
    match write_batch(pool, records).await {
        Ok(new) => return Ok(new.into_iter().map(written).collect()),
        Err(e) if crate::is_transient(&e) => return Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "the database refused a batch; writing its records one by one")
        }
    }
    let mut outcomes = Vec::with_capacity(records.len());
    for record in records {
        match write_batch(pool, std::slice::from_ref(record)).await {
            Ok(n) => outcomes.push(written(n.first().copied().unwrap_or(false))),
            Err(e) if crate::is_transient(&e) => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, "the database refused a record; kept in the dead-letter file");
                metrics::counter!("records_dead_lettered_total").increment(1);
                spool.dead_letter(record).map_err(sqlx::Error::Io)?;
                outcomes.push(Written::DeadLettered);
            }
        }
    }
    Ok(outcomes)
}

fn written(new: bool) -> Written {
    if new {
        Written::New
    } else {
        Written::Duplicate
    }
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
