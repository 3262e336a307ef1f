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

use std::path::Path;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::health::DatabaseHealth;
use super::spool::{AppendError, Spool};
use super::writer::{Written, write_isolating};
use crate::callbacks::Outbox;
use crate::records::Record;

/// Most records written in one transaction.
const MAX_BATCH: usize = 512;
/// Batches written at once.
const MAX_IN_FLIGHT: usize = 4;

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

impl From<Written> for Stored {
    fn from(w: Written) -> Self {
        match w {
            Written::New => Self::Database { new: true },
            Written::Duplicate => Self::Database { new: false },
            Written::DeadLettered => Self::DeadLettered,
        }
    }
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
    /// to the spool while the database counts as down (`health`, shared with the spool's
    /// drainer and the webhooks). What the records change is told through `outbox`. Fails when
    /// the spool folder cannot be written.
    pub fn start(
        pool: PgPool,
        spool_dir: &Path,
        segment_bytes: u64,
        memory_bytes: u64,
        health: Arc<DatabaseHealth>,
        outbox: Arc<Outbox>,
    ) -> std::io::Result<Self> {
        let spool = Arc::new(
            Spool::open(spool_dir, segment_bytes)?
                .with_memory_limit(memory_bytes)
                .with_health(health)
                .with_outbox(outbox),
        );
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
            match write_isolating(pool, spool.outbox(), spool.dead_letters(), &copies).await {
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
    let outcome = if spool.health().is_down() {
        Err(sqlx::Error::PoolTimedOut)
    } else {
        write_isolating(pool, spool.outbox(), spool.dead_letters(), &records).await
    };
    match outcome {
        Ok(written) => {
            spool.health().mark_up();
            for (ack, written) in acks.into_iter().zip(written) {
                let _ = ack.send(Ok(written.into()));
            }
        }
        Err(db_error) => {
            if !spool.health().is_down() {
                tracing::warn!(error = %db_error, records = records.len(), "database write failed; spooling");
            }
            spool.health().mark_down();
            let appended = append_off_runtime(spool, records).await;
            acknowledge(acks, appended.map(|()| Stored::Spooled));
        }
    }
}
