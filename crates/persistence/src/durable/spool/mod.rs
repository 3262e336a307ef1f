//! The local spool: call records (always) and events (while Postgres cannot take them) are
//! appended here and fsynced before they are acknowledged; the drainer moves them into Postgres.
//!
//! A segment file is given its full size, filled with zeros, before the first record is written
//! to it, and records are written over the zeros. An fsync of an append then writes the
//! appended pages only: the file's size and block map do not change, so the filesystem has no
//! metadata of ours to commit. (On ext4, a commit of metadata also waits for data other
//! programs have written to newly allocated blocks, such as the pages of Postgres's growing
//! tables; that made some of our fsyncs take hundreds of milliseconds.) The drainer prepares
//! the next segment ahead of time and moves records out of the segment being appended to
//! without closing it, so a file is created and deleted once per segment, not once per drain.
//!
//! A segment holds JSON lines, one record a line, then zeros. JSON text never holds a zero byte
//! (serde escapes it in strings), so the first zero ends the records.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::dead_letter::DeadLetters;
use super::health::DatabaseHealth;
use crate::callbacks::Outbox;
use crate::records::Record;

mod drainer;
mod files;
#[cfg(test)]
mod tests;

pub use drainer::drain_forever;
use files::{SegmentFile, list_segments, make_private, probe_write, read_segment, take_folder};

/// Most spooled records the drainer writes in one transaction.
const DRAIN_BATCH: usize = 2048;
/// The default of how many bytes of spooled records are also kept in memory, so that the
/// drainer need not read them back (`SPOOL_MEMORY_MIB`).
pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;
/// After a failure to prepare the next segment, the drainer waits this long before it tries
/// again (an append that finds no prepared segment creates one itself meanwhile).
const SPARE_BACKOFF: Duration = Duration::from_secs(1);

/// The default size of a segment file.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 << 20;
/// A segment in use whose records are all in the database is closed (and so deleted) once it
/// has been in use this long, so that call records do not stay on local disk at low traffic.
pub const SEGMENT_MAX_AGE: Duration = Duration::from_secs(60);

/// Why records could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Taking these events would put more than the memory budget in the spool's in-memory
    /// copies: they are refused (Vonage retries an event answered with a 5xx) rather than let the
    /// spool's memory grow.
    #[error(
        "the spool's memory budget is used up (SPOOL_MEMORY_MIB); events are refused until it drains"
    )]
    Full,
    #[error("the spool could not be written: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a drain stopped.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("the database did not take the spooled records: {0}")]
    Database(#[from] sqlx::Error),
    #[error("a spool file could not be read or deleted: {0}")]
    Spool(#[from] std::io::Error),
}

pub struct Spool {
    dir: PathBuf,
    segment_bytes: u64,
    state: Mutex<SpoolState>,
    /// The last write to the spool (an append, or preparing a segment) failed: records may not
    /// be kept, and the instance is not ready.
    write_failed: AtomicBool,
    /// Where records Postgres refuses are kept.
    dead_letters: DeadLetters,
    /// Tests only: appends wait until then before their fsync, as on a stalled disk.
    stall_until: Mutex<Option<std::time::Instant>>,
    depth: AtomicU64,
    /// Whether the database counts as down, shared with the recorder and the answer webhook;
    /// the drainer's probe (or a drain that succeeds) sets it back.
    health: Arc<DatabaseHealth>,
    /// One drain at a time.
    draining: tokio::sync::Mutex<()>,
    /// Wakes the drainer when records were appended.
    appended: Notify,
    /// Where the messages go that tell the marketplace what the drained records changed.
    outbox: Arc<Outbox>,
    /// The folder, locked for this process while the spool is open.
    _folder: File,
}

struct SpoolState {
    /// The segment appends go to.
    current: Option<Segment>,
    /// A zero-filled segment, made durable, ready to become `current`.
    spare: Option<Segment>,
    /// A spare is being prepared (its number is taken).
    preparing: bool,
    /// When preparing a spare last failed.
    spare_failed: Option<std::time::Instant>,
    next_segment: u64,
    /// Segments no longer appended to and not fully drained, oldest first.
    sealed: VecDeque<Pending>,
    /// Bytes of the records held in the copies of `current` and `sealed` together.
    cached: u64,
    /// Appends so far (numbers them, for [`SegmentFile::sync_through`]).
    appends: u64,
    /// The most bytes `cached` may hold.
    max_cached: u64,
}

/// What of a segment's records is still to reach the database.
struct Pending {
    path: PathBuf,
    /// A copy of the records not drained yet, unless there was no room for it (then the drainer
    /// reads the file).
    records: Option<Vec<Copied>>,
    /// How many records, from the start of the file, are in the database already.
    drained: usize,
}

struct Segment {
    file: Arc<SegmentFile>,
    /// When it became the segment appends go to.
    opened: std::time::Instant,
    /// The offset the next append is written at.
    end: u64,
    pending: Pending,
}

/// A record in a segment's in-memory copy, with the size of its line in the file.
struct Copied {
    record: Record,
    bytes: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl SpoolState {
    /// No spare is ready, and none is being prepared.
    fn needs_spare(&self) -> bool {
        self.spare.is_none() && !self.preparing
    }

    /// Stops appending to the current segment; what it holds waits for the drainer.
    fn seal_current(&mut self) {
        if let Some(segment) = self.current.take() {
            self.sealed.push_back(segment.pending);
        }
    }

    /// The pending records of the segment at `path`, whether it is current or sealed.
    fn pending_mut(&mut self, path: &Path) -> Option<&mut Pending> {
        match &mut self.current {
            Some(segment) if segment.pending.path == path => Some(&mut segment.pending),
            _ => self.sealed.iter_mut().find(|p| p.path == path),
        }
    }
}

impl Spool {
    /// Opens the spool in `dir`, counting the records that segments left there hold (they are
    /// drained first). New segments are `segment_bytes` long.
    pub fn open(dir: &Path, segment_bytes: u64) -> std::io::Result<Self> {
        make_private(dir)?;
        let folder = take_folder(dir)?;
        probe_write(dir)?;
        let segments = list_segments(dir)?;
        let next_segment = segments.last().map(|(n, _)| n + 1).unwrap_or(1);
        let mut depth = 0;
        let mut sealed = VecDeque::new();
        for (_, path) in segments {
            depth += read_segment(&path)?.records.len() as u64;
            sealed.push_back(Pending {
                path,
                records: None,
                drained: 0,
            });
        }
        if depth > 0 {
            tracing::info!(
                records = depth,
                segments = sealed.len(),
                "spool holds records from before; they will be replayed"
            );
        }
        Ok(Self {
            dir: dir.to_owned(),
            segment_bytes: segment_bytes.max(1),
            state: Mutex::new(SpoolState {
                current: None,
                spare: None,
                preparing: false,
                spare_failed: None,
                next_segment,
                sealed,
                cached: 0,
                max_cached: DEFAULT_MEMORY_BYTES,
                appends: 0,
            }),
            depth: AtomicU64::new(depth),
            write_failed: AtomicBool::new(false),
            dead_letters: DeadLetters::new(dir),
            stall_until: Mutex::new(None),
            health: Arc::new(DatabaseHealth::new()),
            draining: tokio::sync::Mutex::new(()),
            appended: Notify::new(),
            outbox: Arc::new(Outbox::new()),
            _folder: folder,
        })
    }

    /// Keeps copies of at most `bytes` of spooled records in memory (64 MiB by default). Past
    /// it, events are refused ([`AppendError::Full`]) and call records are kept on disk only (the
    /// drainer reads them back from their files).
    pub fn with_memory_limit(self, bytes: u64) -> Self {
        lock(&self.state).max_cached = bytes;
        self
    }

    /// Bytes of spooled records held in memory.
    pub fn memory_bytes(&self) -> u64 {
        lock(&self.state).cached
    }

    /// Whether the spool can be written: its last append, and its last attempt to prepare a
    /// segment, succeeded. When not, call records and events may not be kept through an outage.
    pub fn writable(&self) -> bool {
        !self.write_failed.load(Ordering::Relaxed)
    }

    /// Notes the outcome of a write to the spool.
    fn wrote<T>(&self, result: std::io::Result<T>) -> std::io::Result<T> {
        match &result {
            Ok(_) => {
                if self.write_failed.swap(false, Ordering::Relaxed) {
                    tracing::info!("the spool can be written again");
                }
            }
            Err(e) => {
                metrics::counter!("spool_write_failures_total").increment(1);
                if !self.write_failed.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, dir = %self.dir.display(), "the spool cannot be written: call records and events may not survive an outage, and this instance reports not ready");
                }
            }
        }
        result
    }

    /// Tests only: every append waits until `until` before its fsync, as on a disk that stalls.
    #[doc(hidden)]
    pub fn stall_fsyncs_until(&self, until: std::time::Instant) {
        *lock(&self.stall_until) = Some(until);
    }

    /// Records waiting to reach the database.
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Shares `health` (the database's) with the recorder and the webhooks, instead of a handle
    /// of its own.
    pub fn with_health(mut self, health: Arc<DatabaseHealth>) -> Self {
        self.health = health;
        self
    }

    /// Shares the instance's outbox, instead of one of its own.
    pub fn with_outbox(mut self, outbox: Arc<Outbox>) -> Self {
        self.outbox = outbox;
        self
    }

    /// Where the drained records' messages are written.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Whether the database counts as down, as this spool and its drainer see it.
    pub fn health(&self) -> &Arc<DatabaseHealth> {
        &self.health
    }

    /// Asks the drainer to move what was appended into the database now, unless the database
    /// counts as down (the drainer's own timer probes it then).
    pub(crate) fn wake_drainer(&self) {
        if !self.health.is_down() {
            self.appended.notify_one();
        }
    }

    /// Appends records and fsyncs them (blocking: call it off the async runtime's threads). The
    /// records move into the in-memory copy the drainer reads, while it is within its budget;
    /// past it, events are refused and call records kept on disk only.
    pub fn append(&self, records: Vec<Record>) -> Result<(), AppendError> {
        let n = records.len();
        let mut buf = Vec::new();
        let mut sizes = Vec::with_capacity(n);
        for r in &records {
            let before = buf.len();
            serde_json::to_writer(&mut buf, r).map_err(std::io::Error::from)?;
            buf.push(b'\n');
            sizes.push((buf.len() - before) as u64);
        }
        let events = records.iter().any(|r| matches!(r, Record::Event(_)));
        let mut state = lock(&self.state);
        let over_budget = state.cached + buf.len() as u64 > state.max_cached;
        if over_budget && events {
            metrics::counter!("spool_memory_full_refusals_total").increment(1);
            return Err(AppendError::Full);
        }
        let full_or_broken = state.current.as_ref().is_none_or(|s| {
            s.file.broken.load(Ordering::Acquire)
                || (s.end > 0 && s.end + buf.len() as u64 > self.segment_bytes)
        });
        let copying = state
            .current
            .as_ref()
            .is_some_and(|s| s.pending.records.is_some());
        if full_or_broken || (over_budget && copying) {
            // A broken segment is sealed too: the drainer reads what its copy holds. Past the
            // budget, the segment keeps its copy and appends go on in one without a copy.
            state.seal_current();
        }
        let SpoolState {
            current,
            spare,
            next_segment,
            cached,
            appends,
            ..
        } = &mut *state;
        let segment = match current.take() {
            Some(segment) => segment,
            None => {
                let next = match spare.take() {
                    Some(spare) => spare,
                    None => {
                        let number = *next_segment;
                        *next_segment += 1;
                        self.wrote(self.create_segment(number))?
                    }
                };
                let mut pending = next.pending;
                if over_budget {
                    pending.records = None;
                }
                Segment {
                    opened: std::time::Instant::now(),
                    pending,
                    ..next
                }
            }
        };
        let segment = current.insert(segment);
        *appends += 1;
        if let Err(e) = segment.file.file.write_all_at(&buf, segment.end) {
            // A part of the line may be in the file: the next append would be glued to it.
            segment.file.broken.store(true, Ordering::Release);
            return Err(self.wrote::<()>(Err(e)).unwrap_err().into());
        }
        segment.end += buf.len() as u64;
        segment.file.written.store(*appends, Ordering::Release);
        let number = *appends;
        let file = segment.file.clone();
        // The drainer may take these records from the copy before the fsync below returns:
        // harmless, they are acknowledged only after it.
        if let Some(copy) = &mut segment.pending.records {
            copy.extend(
                records
                    .into_iter()
                    .zip(sizes)
                    .map(|(record, bytes)| Copied { record, bytes }),
            );
            *cached += buf.len() as u64;
        }
        self.depth.fetch_add(n as u64, Ordering::Relaxed);
        drop(state);
        let stall = *lock(&self.stall_until);
        if let Some(until) = stall {
            std::thread::sleep(until.saturating_duration_since(std::time::Instant::now()));
        }
        Ok(self.wrote(file.sync_through(number))?)
    }

    /// Creates segment `number`: zero-filled to its full size, and durable (its name too)
    /// before it is returned.
    fn create_segment(&self, number: u64) -> std::io::Result<Segment> {
        let path = self.dir.join(format!("segment-{number:012}.jsonl"));
        let made = (|| {
            let mut file = OpenOptions::new()
                .create_new(true)
                .read(true)
                .write(true)
                .mode(0o600)
                .open(&path)?;
            let zeros = vec![0u8; 1 << 20];
            let mut left = self.segment_bytes;
            while left > 0 {
                let n = left.min(zeros.len() as u64);
                file.write_all(&zeros[..n as usize])?;
                left -= n;
            }
            file.sync_all()?;
            File::open(&self.dir)?.sync_all()?;
            Ok(file)
        })();
        let file = match made {
            Ok(file) => file,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        Ok(Segment {
            file: Arc::new(SegmentFile {
                file,
                written: AtomicU64::new(0),
                synced: Mutex::new(0),
                broken: AtomicBool::new(false),
            }),
            opened: std::time::Instant::now(),
            end: 0,
            pending: Pending {
                path,
                records: Some(Vec::new()),
                drained: 0,
            },
        })
    }

    /// Whether a segment no longer appended to waits for the drainer (to be drained, or only
    /// deleted).
    fn holds_sealed_segments(&self) -> bool {
        !lock(&self.state).sealed.is_empty()
    }

    /// Closes the segment in use if every record in it is in the database and it has been in
    /// use for `age`; the next drain deletes it.
    pub fn retire_drained_segment(&self, age: Duration) {
        let mut state = lock(&self.state);
        if state.current.as_ref().is_some_and(|s| {
            s.opened.elapsed() >= age && s.pending.records.as_ref().is_some_and(Vec::is_empty)
        }) {
            state.seal_current();
        }
    }

    /// Whether the drainer should prepare the next segment now.
    fn wants_spare(&self) -> bool {
        let state = lock(&self.state);
        state.needs_spare()
            && state
                .spare_failed
                .is_none_or(|failed| failed.elapsed() >= SPARE_BACKOFF)
    }

    /// Prepares the segment the next append that fills the current one moves to, so that the
    /// append does not wait for the zero-filling (blocking: call it off the async runtime's
    /// threads). Does nothing when one is ready or being prepared.
    pub fn prepare_spare(&self) -> std::io::Result<()> {
        let number = {
            let mut state = lock(&self.state);
            if !state.needs_spare() {
                return Ok(());
            }
            state.preparing = true;
            state.next_segment += 1;
            state.next_segment - 1
        };
        // An append that fills the current segment while this runs creates the next number
        // itself, so segments need not fill in the order of their numbers; nothing depends on
        // that order (every write is idempotent and events fold by their own timestamps).
        let made = self.wrote(self.create_segment(number));
        let mut state = lock(&self.state);
        state.preparing = false;
        match made {
            Ok(segment) => {
                state.spare = Some(segment);
                state.spare_failed = None;
                Ok(())
            }
            Err(e) => {
                state.spare_failed = Some(std::time::Instant::now());
                Err(e)
            }
        }
    }

    /// Before the process exits: stops appending to the current segment, so that a drain that
    /// empties it deletes it, and deletes the unused spare.
    pub fn seal_for_exit(&self) {
        let mut state = lock(&self.state);
        state.seal_current();
        if let Some(spare) = state.spare.take() {
            let _ = fs::remove_file(&spare.pending.path);
        }
    }

    /// The spool's dead-letter file.
    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead_letters
    }
}
