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
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;

use super::dead_letter::DeadLetters;
use super::health::DatabaseHealth;
use super::writer::write_isolating;
use crate::records::Record;

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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl SegmentFile {
    /// Returns once append number `n` (written to this file) is on disk.
    fn sync_through(&self, n: u64) -> std::io::Result<()> {
        let mut synced = lock(&self.synced);
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
                        write_isolating(pool, &self.dead_letters, &records).await?;
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
                        write_isolating(pool, &self.dead_letters, chunk).await?;
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

/// Creates the spool folder readable by this user only (0700), and makes it and the files in it
/// so (0600) if they are not: they hold real phone numbers.
fn make_private(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut fixed = 0;
    if fs::metadata(dir)?.permissions().mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        fixed += 1;
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o600))?;
            fixed += 1;
        }
    }
    if fixed > 0 {
        tracing::warn!(dir = %dir.display(), fixed, "the spool folder or files in it were readable by others; made them private to this user");
    }
    Ok(())
}

/// Writes, fsyncs and deletes a file in the spool folder, so that a folder the service cannot
/// write stops it at start instead of losing records later.
fn probe_write(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(".write-probe");
    let _ = fs::remove_file(&probe);
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&probe)?;
    file.write_all(b"voice-proxy")?;
    file.sync_all()?;
    drop(file);
    fs::remove_file(&probe)
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

/// Reads a segment's records, up to the first zero byte. A torn last line (a crash in the
/// middle of an append) was never acknowledged, so it is skipped.
/// What a segment file holds.
#[derive(Debug, Default)]
struct SegmentLines {
    records: Vec<Record>,
    /// Whole lines (ended by a newline) that are not records.
    unreadable: Vec<String>,
}

fn read_segment(path: &Path) -> std::io::Result<SegmentLines> {
    let mut data = fs::read(path)?;
    if let Some(end) = data.iter().position(|&b| b == 0) {
        data.truncate(end);
    }
    let mut read = SegmentLines::default();
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    // What follows the last newline was never acknowledged: a crash in the middle of an append.
    if let Some(torn) = lines.pop()
        && !torn.is_empty()
    {
        tracing::warn!(segment = %path.display(), "skipping a torn spool line");
    }
    for line in lines.into_iter().filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Record>(line) {
            Ok(r) => read.records.push(r),
            Err(e) => {
                tracing::warn!(error = %e, segment = %path.display(), "a spool line is not a record");
                read.unreadable
                    .push(String::from_utf8_lossy(line).into_owned());
            }
        }
    }
    Ok(read)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;
    use voice_proxy_domain::CallOutcome;
    use voice_proxy_domain::CallRecord;

    fn call(n: u8) -> Record {
        Record::Call(CallRecord {
            id: voice_proxy_domain::CallId::new(),
            conversation_uuid: Some(format!("CON-{n}")),
            uuid: None,
            pairing_id: None,
            caller: None,
            proxy_number: None,
            callee: None,
            outcome: voice_proxy_domain::CallOutcome::Anonymous,
            started_at: chrono::Utc::now(),
            endpoint_type: None,
        })
    }

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("vp-spool-{}", Uuid::new_v4()))
    }

    fn read_all(dir: &Path) -> Vec<Record> {
        let mut read = Vec::new();
        for (_, path) in list_segments(dir).unwrap() {
            read.extend(read_segment(&path).unwrap().records);
        }
        read
    }

    #[test]
    fn concurrent_appends_are_each_whole_and_in_their_order_after_a_reopen() {
        let dir = temp_dir();
        // Small segments, so that appends move on to new ones many times.
        let spool = Arc::new(Spool::open(&dir, 4096).unwrap());
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let spool = spool.clone();
                std::thread::spawn(move || {
                    let mine: Vec<Record> = (0..50).map(|_| call(t)).collect();
                    for pair in mine.chunks(2) {
                        spool.append(pair.to_vec()).unwrap();
                    }
                    mine
                })
            })
            .collect();
        let written: Vec<Vec<Record>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(spool.depth(), 400);
        drop(spool);
        assert!(list_segments(&dir).unwrap().len() > 10);
        let reopened = Spool::open(&dir, 4096).unwrap();
        assert_eq!(reopened.depth(), 400);
        let read = read_all(&dir);
        for mine in written {
            let order: Vec<&Record> = read.iter().filter(|r| mine.contains(r)).collect();
            assert_eq!(order, mine.iter().collect::<Vec<_>>());
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn appended_records_survive_a_reopen_and_a_torn_line_is_skipped() {
        let dir = temp_dir();
        let spool = Spool::open(&dir, DEFAULT_SEGMENT_BYTES).unwrap();
        let records = vec![call(1), call(2)];
        spool.append(records.clone()).unwrap();
        assert_eq!(spool.depth(), 2);
        // A crash in the middle of the next append leaves half a line before the zeros.
        let (_, path) = list_segments(&dir).unwrap().pop().unwrap();
        let end = fs::read(&path)
            .unwrap()
            .iter()
            .position(|&b| b == 0)
            .unwrap();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"{\"call\": {\"id\": ", end as u64).unwrap();
        drop(spool);
        let reopened = Spool::open(&dir, DEFAULT_SEGMENT_BYTES).unwrap();
        assert_eq!(reopened.depth(), 2);
        assert_eq!(read_segment(&path).unwrap().records, records);
        fs::remove_dir_all(dir).unwrap();
    }

    /// Segments left by earlier versions are read by this one: the records' format (the
    /// outcome as its name, the ids as UUID strings, `endpoint_type` absent before issue 11).
    #[test]
    fn records_written_by_earlier_versions_are_read() {
        let dir = temp_dir();
        fs::create_dir_all(&dir).unwrap();
        let lines = [
            r#"{"call":{"id":"01a20aca-a7bd-710b-befd-7b128b03ffa2","conversation_uuid":"CON-1","uuid":"CON-1-in","pairing_id":"01a20aca-0000-7000-8000-000000000001","caller":"16465550101","proxy_number":"12125550123","callee":"16465550102","outcome":"routed","started_at":"2026-11-24T10:00:00Z"}}"#,
            r#"{"call":{"id":"01a20aca-a7bd-710b-befd-7b128b03ffa3","conversation_uuid":"CON-2","uuid":null,"pairing_id":null,"caller":null,"proxy_number":"12125550123","callee":null,"outcome":"unsupported_caller","started_at":"2026-11-26T10:00:00Z","endpoint_type":"sip"}}"#,
            r#"{"event":{"payload":{"uuid":"CON-1-in","conversation_uuid":"CON-1","status":"started"},"received_at":"2026-11-24T10:00:01Z"}}"#,
        ];
        let path = dir.join("segment-000000000001.jsonl");
        fs::write(&path, lines.join("\n") + "\n").unwrap();
        let read = read_segment(&path).unwrap();
        assert!(read.unreadable.is_empty(), "{:?}", read.unreadable);
        let [
            Record::Call(first),
            Record::Call(second),
            Record::Event(event),
        ] = read.records.as_slice()
        else {
            panic!("{:?}", read.records);
        };
        assert_eq!(first.outcome, CallOutcome::Routed);
        assert_eq!(
            first.pairing_id.map(|p| p.to_string()).as_deref(),
            Some("01a20aca-0000-7000-8000-000000000001")
        );
        assert_eq!(first.endpoint_type, None);
        assert_eq!(second.outcome, CallOutcome::UnsupportedCaller);
        assert_eq!(second.endpoint_type.as_deref(), Some("sip"));
        assert_eq!(event.payload["status"], "started");
        // And what this version writes reads back the same.
        let again: Vec<Record> = read
            .records
            .iter()
            .map(|r| serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap())
            .collect();
        assert_eq!(again, read.records);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_whole_line_that_is_not_a_record_is_told_apart_from_a_torn_one() {
        let dir = temp_dir();
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("segment-000000000001.jsonl");
        let good = serde_json::to_string(&call(1)).unwrap();
        let foreign = r#"{"call":{"outcome":"not-an-outcome"}}"#;
        fs::write(&path, format!("{good}\n{foreign}\n{{\"call\": {{\"id")).unwrap();
        let read = read_segment(&path).unwrap();
        assert_eq!(read.records.len(), 1);
        assert_eq!(read.unreadable, [foreign], "the torn last line is not kept");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn appends_write_over_a_segment_given_its_full_size_up_front() {
        let dir = temp_dir();
        let size = 64 * 1024;
        let spool = Spool::open(&dir, size).unwrap();
        spool.append(vec![call(1)]).unwrap();
        let (_, first) = list_segments(&dir).unwrap().pop().unwrap();
        let meta = fs::metadata(&first).unwrap();
        assert_eq!(meta.len(), size, "the segment is zero-filled to its size");
        for _ in 0..20 {
            spool.append(vec![call(2)]).unwrap();
        }
        assert_eq!(
            fs::metadata(&first).unwrap().len(),
            size,
            "appends do not grow the file"
        );
        assert_eq!(list_segments(&dir).unwrap().len(), 1);
        assert_eq!(read_all(&dir).len(), 21);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_prepared_spare_is_where_appends_go_once_the_segment_is_full() {
        let dir = temp_dir();
        let spool = Spool::open(&dir, 4096).unwrap();
        spool.append(vec![call(1)]).unwrap();
        spool.prepare_spare().unwrap();
        spool.prepare_spare().unwrap();
        let segments = list_segments(&dir).unwrap();
        assert_eq!(
            segments.len(),
            2,
            "one spare, however often it is asked for"
        );
        let spare = segments[1].1.clone();
        assert_eq!(read_segment(&spare).unwrap().records, vec![]);
        let mut appended = 1;
        while list_segments(&dir).unwrap().len() == 2 && appended < 100 {
            spool.append(vec![call(3)]).unwrap();
            appended += 1;
        }
        assert!(
            !read_segment(&spare).unwrap().records.is_empty(),
            "the append that filled the first segment went to the spare"
        );
        assert_eq!(read_all(&dir).len(), appended);
        spool.seal_for_exit();
        fs::remove_dir_all(dir).unwrap();
    }
}
