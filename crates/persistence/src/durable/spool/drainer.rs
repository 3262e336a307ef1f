//! The drainer: moves spooled records into Postgres, keeps a segment prepared, and probes the
//! database while it counts as down.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::files::{SegmentLines, read_segment};
use super::{DRAIN_BATCH, DrainError, SEGMENT_MAX_AGE, Spool, lock};
use crate::durable::writer::write_isolating;
use crate::records::Record;

/// Whether the server a connection reaches can write: not in recovery, and not read-only.
const WRITABLE: &str = "SELECT NOT pg_is_in_recovery()
                          AND current_setting('transaction_read_only') = 'off'";

/// Drains the spool whenever records are appended, and every `every` (to retry after a
/// database failure), until the process ends. Keeps a spare segment prepared. While the
/// database counts as down, probes it every `every` and counts it as up once it answers.
pub async fn drain_forever(spool: Arc<Spool>, pool: PgPool, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = spool.appended.notified() => {}
        }
        if spool.wants_spare() {
            let spool = spool.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = spool.prepare_spare() {
                    tracing::warn!(error = %e, "could not prepare the next spool segment");
                }
            });
        }
        if spool.health().is_down() {
            let probe = async {
                // A connection from before a restart of Postgres fails at once and is dropped
                // from the pool; the next attempt takes another or opens a new one. A server
                // that answers but cannot write (a standby, a leader still in recovery after a
                // failover) still counts as down.
                for _ in 0..4 {
                    if let Ok(true) = sqlx::query_scalar::<_, bool>(WRITABLE)
                        .fetch_one(&pool)
                        .await
                    {
                        return true;
                    }
                }
                false
            };
            match tokio::time::timeout(every.max(Duration::from_millis(100)), probe).await {
                Ok(true) => {
                    spool.health().mark_up();
                    tracing::info!("the database answers again");
                }
                _ => continue,
            }
        }
        spool.retire_drained_segment(SEGMENT_MAX_AGE);
        if spool.depth() == 0 && !spool.holds_sealed_segments() {
            continue;
        }
        match spool.drain(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                records = n,
                left = spool.depth(),
                "drained the spool into the database"
            ),
            Err(DrainError::Database(e)) => {
                if crate::is_transient(&e) {
                    spool.health().mark_down();
                }
                tracing::debug!(error = %e, "spool drain failed; will retry");
            }
            // Not the database's fault: it keeps counting as up.
            Err(e @ DrainError::Spool(_)) => {
                tracing::error!(error = %e, "spool drain failed; will retry")
            }
        }
    }
}

/// The next piece of work for the drainer.
enum Work {
    /// Records copied from the oldest sealed segment, or from the current one.
    Copied {
        path: PathBuf,
        records: Vec<Record>,
        current: bool,
    },
    /// The oldest sealed segment has no copy: read its file, skipping what is drained.
    File { path: PathBuf, skip: usize },
}

impl Spool {
    /// Moves every spooled record into the database: the sealed segments, oldest first
    /// (deleting each once it is drained), then what the current segment holds. Stops at the
    /// first database error (the records stay spooled). Returns how many records were drained.
    pub async fn drain(&self, pool: &PgPool) -> Result<u64, DrainError> {
        let _one_at_a_time = self.draining.lock().await;
        let mut drained = 0;
        while let Some(work) = self.next_work() {
            match work {
                Work::Copied {
                    path,
                    records,
                    current,
                } => {
                    if !records.is_empty() {
                        write_isolating(pool, &self.outbox, &self.dead_letters, &records).await?;
                    }
                    drained += self.account(&path, records.len(), false)?;
                    if current && records.len() < DRAIN_BATCH {
                        // The current segment is drained up to what was appended meanwhile:
                        // the next wake-up takes that.
                        break;
                    }
                }
                Work::File { path, skip } => {
                    let read = match read_segment(&path) {
                        Ok(read) => read,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            tracing::error!(segment = %path.display(), "a spool segment is gone; its records are lost to the drainer");
                            SegmentLines::default()
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let left = read.records.get(skip..).unwrap_or_default();
                    for chunk in left.chunks(DRAIN_BATCH) {
                        write_isolating(pool, &self.outbox, &self.dead_letters, chunk).await?;
                        drained += self.account(&path, chunk.len(), false)?;
                    }
                    if !read.unreadable.is_empty() {
                        // Whole lines that are not records (written by another version, or
                        // damaged): kept for an operator, never dropped.
                        tracing::error!(lines = read.unreadable.len(), segment = %path.display(), "spool lines that are not records; kept in the dead-letter file");
                        metrics::counter!("records_dead_lettered_total")
                            .increment(read.unreadable.len() as u64);
                        self.dead_letters.set_aside_unreadable(&read.unreadable)?;
                    }
                    // Every record of the file is in the database: delete it.
                    self.account(&path, 0, true)?;
                }
            }
        }
        if drained > 0 {
            self.health.mark_up();
        }
        Ok(drained)
    }

    /// The oldest sealed segment's records, or else the current segment's. A current segment
    /// without a copy is sealed, to be read from its file.
    fn next_work(&self) -> Option<Work> {
        let mut state = lock(&self.state);
        if state
            .current
            .as_ref()
            .is_some_and(|s| s.pending.records.is_none())
        {
            state.seal_current();
        }
        let (pending, current) = match state.sealed.front() {
            Some(oldest) => (oldest, false),
            None => (&state.current.as_ref()?.pending, true),
        };
        let path = pending.path.clone();
        match &pending.records {
            Some(copy) if copy.is_empty() && current => None,
            Some(copy) => Some(Work::Copied {
                path,
                records: copy[..copy.len().min(DRAIN_BATCH)]
                    .iter()
                    .map(|c| c.record.clone())
                    .collect(),
                current,
            }),
            None => Some(Work::File {
                path,
                skip: pending.drained,
            }),
        }
    }

    /// Notes that the first `n` undrained records of the segment at `path` are in the database.
    /// A sealed segment with nothing left (`whole_file` when its file was read) is deleted.
    /// Returns `n`.
    fn account(&self, path: &Path, n: usize, whole_file: bool) -> Result<u64, DrainError> {
        let mut state = lock(&self.state);
        let mut uncached = 0;
        if let Some(pending) = state.pending_mut(path) {
            pending.drained += n;
            if let Some(copy) = &mut pending.records {
                let taken = n.min(copy.len());
                uncached = copy.drain(..taken).map(|c| c.bytes).sum::<u64>();
            }
        }
        state.cached -= uncached.min(state.cached);
        self.depth
            .fetch_sub((n as u64).min(self.depth()), Ordering::Relaxed);
        let done = state.sealed.front().is_some_and(|oldest| {
            oldest.path == path
                && (whole_file || oldest.records.as_ref().is_some_and(Vec::is_empty))
        });
        if done {
            match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
            state.sealed.pop_front();
        }
        Ok(n as u64)
    }
}
