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

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use uuid::Uuid;
use voice_proxy_domain::{CallEvent, CallProgress, CallStatus};

/// Most records written in one transaction.
const MAX_BATCH: usize = 512;
/// Most spooled records the drainer writes in one transaction.
const DRAIN_BATCH: usize = 2048;
/// Batches written at once.
const MAX_IN_FLIGHT: usize = 4;
/// Most spooled records also kept in memory, so that the drainer need not read them back.
const MAX_CACHED: usize = 100_000;

/// A call as the answer webhook recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub id: Uuid,
    pub conversation_uuid: Option<String>,
    pub uuid: Option<String>,
    pub pairing_id: Option<Uuid>,
    pub caller: Option<String>,
    pub proxy_number: Option<String>,
    pub callee: Option<String>,
    pub outcome: String,
    pub started_at: DateTime<Utc>,
}

/// An event webhook payload as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub payload: Value,
    pub received_at: DateTime<Utc>,
}

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
    ack: oneshot::Sender<Result<Stored, RecordError>>,
}

/// The front door for call records and events. Cloning shares it.
#[derive(Clone)]
pub struct Recorder {
    jobs: mpsc::Sender<Job>,
    spool: Arc<Spool>,
}

impl Recorder {
    /// Starts the batch writer. Records go to `pool`, or to the spool in `spool_dir` when the
    /// database fails.
    pub fn start(pool: PgPool, spool_dir: &Path) -> std::io::Result<Self> {
        let spool = Arc::new(Spool::open(spool_dir)?);
        let (jobs, rx) = mpsc::channel(16 * MAX_BATCH);
        tokio::spawn(collect(rx, pool, spool.clone()));
        Ok(Self { jobs, spool })
    }

    /// Stores a record; returns once it is durable (in Postgres or fsynced in the spool). A call
    /// record is always spooled first.
    pub async fn record(&self, record: Record) -> Result<Stored, RecordError> {
        let (ack, done) = oneshot::channel();
        self.jobs
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

/// Gathers queued jobs into batches and writes several batches at once.
async fn collect(mut rx: mpsc::Receiver<Job>, pool: PgPool, spool: Arc<Spool>) {
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
        let pool = pool.clone();
        let spool = spool.clone();
        tokio::spawn(async move {
            write_or_spool(&pool, &spool, batch).await;
            drop(permit);
        });
    }
    // The sender side is gone: wait for the batches still being written.
    let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
}

async fn write_or_spool(pool: &PgPool, spool: &Arc<Spool>, batch: Vec<Job>) {
    let (calls, events): (Vec<Job>, Vec<Job>) = batch
        .into_iter()
        .partition(|j| matches!(j.record, Record::Call(_)));
    tokio::join!(spool_first(spool, calls), write_events(pool, spool, events));
}

/// Appends call records to the spool (one fsync for all of them), acknowledges them, and wakes
/// the drainer to move them into Postgres.
async fn spool_first(spool: &Arc<Spool>, batch: Vec<Job>) {
    if batch.is_empty() {
        return;
    }
    let records: Vec<Record> = batch.iter().map(|j| j.record.clone()).collect();
    let appended = append_off_runtime(spool, records).await;
    acknowledge(batch, appended.map(|()| Stored::Spooled));
    spool.wake_drainer();
}

/// Appends to the spool on a blocking thread (the append waits for an fsync).
async fn append_off_runtime(spool: &Arc<Spool>, records: Vec<Record>) -> std::io::Result<()> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || spool.append(&records))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

fn acknowledge(batch: Vec<Job>, outcome: std::io::Result<Stored>) {
    match outcome {
        Ok(stored) => {
            for job in batch {
                let _ = job.ack.send(Ok(stored));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "spool append failed; records not acknowledged");
            for job in batch {
                let _ = job.ack.send(Err(RecordError::Unavailable(e.to_string())));
            }
        }
    }
}

async fn write_events(pool: &PgPool, spool: &Arc<Spool>, batch: Vec<Job>) {
    if batch.is_empty() {
        return;
    }
    let records: Vec<Record> = batch.iter().map(|j| j.record.clone()).collect();
    let outcome = if spool.database_down_recently() {
        Err(sqlx::Error::PoolTimedOut)
    } else {
        write_isolating(pool, spool, &records).await
    };
    match outcome {
        Ok(new) => {
            spool.mark_database_up();
            for (job, new) in batch.into_iter().zip(new) {
                let _ = job.ack.send(Ok(Stored::Database { new }));
            }
        }
        Err(db_error) => {
            if !spool.database_down_recently() {
                tracing::warn!(error = %db_error, records = records.len(), "database write failed; spooling");
            }
            spool.mark_database_down();
            let appended = append_off_runtime(spool, records).await;
            acknowledge(batch, appended.map(|()| Stored::Spooled));
        }
    }
}

/// Writes a batch; if Postgres refuses its data (rather than being unreachable), writes the
/// records one by one and sets aside, in the spool's dead-letter file, those it refuses, so that
/// one bad record never holds back the others. Fails only on a transient error.
async fn write_isolating(
    pool: &PgPool,
    spool: &Spool,
    records: &[Record],
) -> Result<Vec<bool>, sqlx::Error> {
    match write_batch(pool, records).await {
        Ok(new) => return Ok(new),
        Err(e) if crate::is_transient(&e) => return Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "the database refused a batch; writing its records one by one")
        }
    }
    let mut new = Vec::with_capacity(records.len());
    for record in records {
        match write_batch(pool, std::slice::from_ref(record)).await {
            Ok(n) => new.push(n.first().copied().unwrap_or(false)),
            Err(e) if crate::is_transient(&e) => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, "the database refused a record; kept in the dead-letter file");
                metrics::counter!("records_dead_lettered_total").increment(1);
                spool.dead_letter(record).map_err(sqlx::Error::Io)?;
                new.push(false);
            }
        }
    }
    Ok(new)
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
    let mut tx = pool.begin().await?;
    let mut touched: BTreeSet<String> = BTreeSet::new();
    if !calls.is_empty() {
        let inserted: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO calls (id, conversation_uuid, uuid, pairing_id, caller, proxy_number,
                                callee, outcome, started_at)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[],
                                  $6::text[], $7::text[], $8::text[], $9::timestamptz[])
             ON CONFLICT DO NOTHING
             RETURNING id",
        )
        .bind(calls.iter().map(|(_, c)| c.id).collect::<Vec<_>>())
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
        .bind(calls.iter().map(|(_, c)| c.pairing_id).collect::<Vec<_>>())
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
                .map(|(_, c)| c.outcome.clone())
                .collect::<Vec<_>>(),
        )
        .bind(calls.iter().map(|(_, c)| c.started_at).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        let mut new_conversations = Vec::new();
        for (i, c) in &calls {
            if inserted.contains(&c.id) {
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
                                      payload, received_at)
             SELECT k, c, l, s, t, p::jsonb, r
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                           $6::text[], $7::timestamptz[]) AS u(k, c, l, s, t, p, r)
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
        .fetch_all(&mut *tx)
        .await?;
        let inserted: BTreeSet<String> = inserted.into_iter().collect();
        let mut seen_in_batch: BTreeSet<&str> = BTreeSet::new();
        for (i, key, event, _) in &keyed {
            // Two copies of one event in the same batch: only the first counts as new.
            if inserted.contains(key) && seen_in_batch.insert(key.as_str()) {
                new[*i] = true;
                touched.extend(event.conversation_uuid.clone());
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

/// The local spool: segment files of JSON lines, one record a line. Appends are fsynced before
/// they are acknowledged; a drained segment is deleted only after its records are committed.
pub struct Spool {
    dir: PathBuf,
    state: Mutex<SpoolState>,
    depth: AtomicU64,
    /// Unix millis of the last database failure; 0 when none.
    down_since: AtomicU64,
    /// One drain at a time.
    draining: tokio::sync::Mutex<()>,
    /// Wakes the drainer when records were appended.
    appended: Notify,
}

struct SpoolState {
    current: Option<Segment>,
    next_segment: u64,
    /// Copies of the records of sealed segments not drained yet, by segment path.
    sealed: HashMap<PathBuf, Vec<Record>>,
    /// Records held in `current` and `sealed` copies together.
    cached: usize,
    /// Appends so far (numbers them, for [`SegmentFile::sync_through`]).
    appends: u64,
}

impl SpoolState {
    /// Stops appending to the current segment; its copy, if any, waits for the drainer.
    fn seal_current(&mut self) {
        if let Some(Segment {
            path,
            records: Some(records),
            ..
        }) = self.current.take()
        {
            self.sealed.insert(path, records);
        }
    }
}

struct Segment {
    path: PathBuf,
    file: Arc<SegmentFile>,
    /// A copy of what was appended, unless there was no room for it (then the drainer reads
    /// the file).
    records: Option<Vec<Record>>,
}

/// A segment's file and how far it is durable. Appends write under the spool's lock and fsync
/// outside it, so that one fsync makes durable every append written before it began: appends
/// that arrive while an fsync is running share the next one instead of queueing one each.
struct SegmentFile {
    file: File,
    /// The number of the last append written to this file.
    written: AtomicU64,
    /// The number of the last append known to be on disk; held while fsyncing.
    synced: Mutex<u64>,
    /// A write or an fsync failed: what was written may be lost or end in half a line, and a
    /// later fsync succeeding would not say otherwise (Linux drops the failed pages). The next
    /// append starts a new segment, and no append written to this one is acknowledged any more
    /// (its records may still reach Postgres through the drainer; every write is idempotent).
    broken: AtomicBool,
}

impl SegmentFile {
    /// Returns once append number `n` (written to this file) is on disk.
    fn sync_through(&self, n: u64) -> std::io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= n {
            return Ok(());
        }
        if self.broken.load(Ordering::Acquire) {
            return Err(std::io::Error::other(
                "a write or an fsync of this spool segment failed: its records are not known to be on disk",
            ));
        }
        let written = self.written.load(Ordering::Acquire);
        let started = std::time::Instant::now();
        let result = self.file.sync_data();
        metrics::histogram!("spool_fsync_duration_seconds").record(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            self.broken.store(true, Ordering::Release);
            return Err(e);
        }
        *synced = written;
        Ok(())
    }
}

/// After a database failure, records go straight to the spool for this long before the
/// database is tried again (the drainer keeps trying meanwhile).
const DOWN_BACKOFF_MS: u64 = 1000;

impl Spool {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let segments = list_segments(dir)?;
        let next_segment = segments.last().map(|(n, _)| n + 1).unwrap_or(1);
        let mut depth = 0;
        for (_, path) in &segments {
            depth += read_segment(path)?.len() as u64;
        }
        if depth > 0 {
            tracing::info!(
                records = depth,
                segments = segments.len(),
                "spool holds records from before; they will be replayed"
            );
        }
        Ok(Self {
            dir: dir.to_owned(),
            state: Mutex::new(SpoolState {
                current: None,
                next_segment,
                sealed: HashMap::new(),
                cached: 0,
                appends: 0,
            }),
            depth: AtomicU64::new(depth),
            down_since: AtomicU64::new(0),
            draining: tokio::sync::Mutex::new(()),
            appended: Notify::new(),
        })
    }

    /// Records waiting to reach the database.
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Whether a database write failed within the last second: callers may skip the database
    /// and use their fallback at once instead of waiting for another failure.
    pub fn database_down_recently(&self) -> bool {
        let since = self.down_since.load(Ordering::Relaxed);
        since != 0 && now_millis().saturating_sub(since) < DOWN_BACKOFF_MS
    }

    pub fn mark_database_down(&self) {
        self.down_since.store(now_millis(), Ordering::Relaxed);
    }

    pub fn mark_database_up(&self) {
        self.down_since.store(0, Ordering::Relaxed);
    }

    /// Asks the drainer to move what was appended into the database now, unless the database
    /// failed within the last second (the drainer's own timer retries then).
    fn wake_drainer(&self) {
        if !self.database_down_recently() {
            self.appended.notify_one();
        }
    }

    /// Appends records and fsyncs them (blocking: call it off the async runtime's threads).
    pub fn append(&self, records: &[Record]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state
            .current
            .as_ref()
            .is_some_and(|s| s.file.broken.load(Ordering::Acquire))
        {
            // Seal it for the drainer (its copy holds what was written) and start a new one.
            state.seal_current();
        }
        let room = state.cached + records.len() <= MAX_CACHED;
        state.appends += 1;
        let number = state.appends;
        let SpoolState {
            current,
            next_segment,
            cached,
            ..
        } = &mut *state;
        let segment = match current {
            Some(segment) => segment,
            None => current.insert(self.open_segment(next_segment)?),
        };
        if let Err(e) = (&segment.file.file).write_all(&buf) {
            // A part of the line may be in the file: the next append would be glued to it.
            segment.file.broken.store(true, Ordering::Release);
            return Err(e);
        }
        segment.file.written.store(number, Ordering::Release);
        let file = segment.file.clone();
        // The drainer may take these records from the copy before the fsync below returns:
        // harmless, they are acknowledged only after it.
        match (&mut segment.records, room) {
            (Some(copy), true) => {
                copy.extend_from_slice(records);
                *cached += records.len();
            }
            (Some(copy), false) => {
                *cached -= copy.len();
                segment.records = None;
            }
            (None, _) => {}
        }
        self.depth
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        drop(state);
        file.sync_through(number)
    }

    /// Creates the next segment file (its name made durable too) to append to.
    fn open_segment(&self, next_segment: &mut u64) -> std::io::Result<Segment> {
        let path = self.dir.join(format!("segment-{next_segment:012}.jsonl"));
        *next_segment += 1;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(Segment {
            path,
            file: Arc::new(SegmentFile {
                file,
                written: AtomicU64::new(0),
                synced: Mutex::new(0),
                broken: AtomicBool::new(false),
            }),
            records: Some(Vec::new()),
        })
    }

    /// Keeps a record the database refused, fsynced, in `dead-letter.jsonl` for an operator.
    fn dead_letter(&self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dead-letter.jsonl"))?;
        file.write_all(&line)?;
        file.sync_data()
    }

    /// Moves every spooled record into the database, oldest segment first. Stops at the first
    /// database error (the records stay spooled). Returns how many records were drained.
    pub async fn drain(&self, pool: &PgPool) -> Result<u64, sqlx::Error> {
        let _one_at_a_time = self.draining.lock().await;
        {
            // Seal the segment being appended to, so new appends start a new one.
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .seal_current();
        }
        let segments = list_segments(&self.dir).map_err(sqlx::Error::Io)?;
        let mut drained = 0;
        for (_, path) in segments {
            let cached = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.current.as_ref().is_some_and(|s| s.path == path) {
                    break;
                }
                let cached = state.sealed.remove(&path);
                state.cached -= cached.as_ref().map_or(0, Vec::len);
                cached
            };
            let records = match cached {
                Some(records) => records,
                None => read_segment(&path).map_err(sqlx::Error::Io)?,
            };
            for chunk in records.chunks(DRAIN_BATCH) {
                if let Err(e) = write_isolating(pool, self, chunk).await {
                    // Keep the copy for the next attempt (the file stays, whole).
                    let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    if state.cached + records.len() <= MAX_CACHED {
                        state.cached += records.len();
                        state.sealed.insert(path, records);
                    }
                    return Err(e);
                }
            }
            fs::remove_file(&path).map_err(sqlx::Error::Io)?;
            self.depth
                .fetch_sub((records.len() as u64).min(self.depth()), Ordering::Relaxed);
            drained += records.len() as u64;
        }
        if drained > 0 {
            self.mark_database_up();
        }
        Ok(drained)
    }
}

fn now_millis() -> u64 {
    u64::try_from(Utc::now().timestamp_millis())
        .unwrap_or(1)
        .max(1)
}

fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("segment-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(number) = number {
            segments.push((number, path));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Reads a segment's records. A torn last line (a crash in the middle of an append) was never
/// acknowledged, so it is skipped.
fn read_segment(path: &Path) -> std::io::Result<Vec<Record>> {
    let reader = BufReader::new(File::open(path)?);
    let mut records = Vec::new();
    for line in reader.split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(r) => records.push(r),
            Err(e) => {
                tracing::warn!(error = %e, segment = %path.display(), "skipping a torn spool line")
            }
        }
    }
    Ok(records)
}

/// Drains the spool whenever records are appended, and every `every` (to retry after a
/// database failure), until the process ends.
pub async fn drain_forever(spool: Arc<Spool>, pool: PgPool, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = spool.appended.notified() => {}
        }
        if spool.depth() == 0 {
            continue;
        }
        match spool.drain(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                records = n,
                left = spool.depth(),
                "drained the spool into the database"
            ),
            Err(e) => {
                if crate::is_transient(&e) {
                    spool.mark_database_down();
                }
                tracing::debug!(error = %e, "spool drain failed; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(n: u8) -> Record {
        Record::Call(CallRecord {
            id: Uuid::now_v7(),
            conversation_uuid: Some(format!("CON-{n}")),
            uuid: None,
            pairing_id: None,
            caller: None,
            proxy_number: None,
            callee: None,
            outcome: "anonymous".into(),
            started_at: Utc::now(),
        })
    }

    #[test]
    fn concurrent_appends_are_each_whole_and_in_their_order_after_a_reopen() {
        let dir = std::env::temp_dir().join(format!("vp-spool-{}", Uuid::new_v4()));
        let spool = Arc::new(Spool::open(&dir).unwrap());
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let spool = spool.clone();
                std::thread::spawn(move || {
                    let mine: Vec<Record> = (0..50).map(|_| call(t)).collect();
                    for pair in mine.chunks(2) {
                        spool.append(pair).unwrap();
                    }
                    mine
                })
            })
            .collect();
        let written: Vec<Vec<Record>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(spool.depth(), 400);
        drop(spool);
        let reopened = Spool::open(&dir).unwrap();
        assert_eq!(reopened.depth(), 400);
        let mut read = Vec::new();
        for (_, path) in list_segments(&dir).unwrap() {
            read.extend(read_segment(&path).unwrap());
        }
        for mine in written {
            let order: Vec<&Record> = read.iter().filter(|r| mine.contains(r)).collect();
            assert_eq!(order, mine.iter().collect::<Vec<_>>());
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn appended_records_survive_a_reopen_and_a_torn_line_is_skipped() {
        let dir = std::env::temp_dir().join(format!("vp-spool-{}", Uuid::new_v4()));
        let spool = Spool::open(&dir).unwrap();
        let records = vec![call(1), call(2)];
        spool.append(&records).unwrap();
        assert_eq!(spool.depth(), 2);
        // A crash in the middle of the next append leaves half a line.
        let (_, path) = list_segments(&dir).unwrap().pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"call\": {\"id\": ").unwrap();
        drop(spool);
        let reopened = Spool::open(&dir).unwrap();
        assert_eq!(reopened.depth(), 2);
        assert_eq!(read_segment(&path).unwrap(), records);
        fs::remove_dir_all(dir).unwrap();
    }
}
