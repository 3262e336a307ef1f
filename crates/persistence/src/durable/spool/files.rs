//! The spool's files: its private folder, its segment files and what they hold.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::lock;
use crate::records::Record;

/// A segment's file and how far it is durable. Appends write under the spool's lock and fsync
/// outside it, so that one fsync makes durable every append written before it began: appends
/// that arrive while an fsync is running share the next one instead of queueing one each.
pub(super) struct SegmentFile {
    pub(super) file: File,
    /// The number of the last append written to this file.
    pub(super) written: AtomicU64,
    /// The number of the last append known to be on disk; held while fsyncing.
    pub(super) synced: Mutex<u64>,
    /// A write or an fsync failed: what was written may be lost or end in half a line, and a
    /// later fsync succeeding would not say otherwise (Linux drops the failed pages). The next
    /// append starts a new segment, and no append written to this one is acknowledged any more
    /// (its records may still reach Postgres through the drainer; every write is idempotent).
    pub(super) broken: AtomicBool,
}

impl SegmentFile {
    /// Returns once append number `n` (written to this file) is on disk.
    pub(super) fn sync_through(&self, n: u64) -> std::io::Result<()> {
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

/// Creates the spool folder readable by this user only (0700), and makes it and the files in it
/// so (0600) if they are not: they hold real phone numbers.
pub(super) fn make_private(dir: &Path) -> std::io::Result<()> {
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

/// Takes the spool folder for this process: an exclusive advisory lock on the folder itself,
/// held until the returned handle is closed (by the kernel, too, when the process dies). Two
/// processes on one folder would each take the other's segments for the leftovers of a crash,
/// drain them and delete them while the other still appends to them: records one of them
/// acknowledged would be lost.
pub(super) fn take_folder(dir: &Path) -> std::io::Result<File> {
    let folder = File::open(dir)?;
    match folder.try_lock() {
        Ok(()) => Ok(folder),
        Err(fs::TryLockError::WouldBlock) => Err(std::io::Error::new(
            std::io::ErrorKind::ResourceBusy,
            format!(
                "{} is in use by another voice-proxy process; each instance needs a spool folder of its own",
                dir.display()
            ),
        )),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Writes, fsyncs and deletes a file in the spool folder, so that a folder the service cannot
/// write stops it at start instead of losing records later.
pub(super) fn probe_write(dir: &Path) -> std::io::Result<()> {
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

pub(super) fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
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

/// What a segment file holds.
#[derive(Debug, Default)]
pub(super) struct SegmentLines {
    pub(super) records: Vec<Record>,
    /// Whole lines (ended by a newline) that are not records.
    pub(super) unreadable: Vec<String>,
}

/// Reads a segment's records, up to the first zero byte. A torn last line (a crash in the
/// middle of an append) was never acknowledged, so it is skipped; a whole line that is not a
/// record is kept apart.
pub(super) fn read_segment(path: &Path) -> std::io::Result<SegmentLines> {
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
