//! The dead-letter file: records Postgres refused (a constraint, their data), kept in the spool
//! folder as JSON lines for an operator, private to the service's user (0600).
//!
//! Three writers may touch it: the service appending what Postgres refuses, the service's
//! retention purge rewriting old records without their real numbers, and
//! `voice-proxy dead-letter replay` (another process) taking the records to write them again.
//! All of them hold the lock of `dead-letter.lock` (an advisory file lock) while they read or
//! change the file, so none of them loses what another wrote.
//!
//! A replay first moves the records to `dead-letter.replaying.jsonl`, then writes them to
//! Postgres, then puts those still refused back and deletes the replaying file: a replay that is
//! interrupted leaves its records there, and the next replay takes them again (every write is
//! idempotent).
//!
//! A line of the spool that is not a record at all (written by another version, or damaged) is
//! kept here too, as the text it was (`{"unreadable": "...", "set_aside_at": ...}`): a replay
//! cannot write it and leaves it, the retention purge hashes the numbers in it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgPool;
use voice_proxy_domain::redact::redact_numbers;

use crate::callbacks::Outbox;
use crate::records::{Record, write_batch};
use serde::{Deserialize, Serialize};
use voice_proxy_domain::redact::redact_text;

pub const FILE: &str = "dead-letter.jsonl";
const REPLAYING: &str = "dead-letter.replaying.jsonl";
const LOCK: &str = "dead-letter.lock";

/// A spool's dead-letter file, as the service writes it: one writer at a time within the
/// process (besides the file lock, which keeps other processes out).
#[derive(Debug)]
pub struct DeadLetters {
    dir: PathBuf,
    one_writer: std::sync::Mutex<()>,
}

impl DeadLetters {
    /// The dead-letter file of the spool in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            one_writer: std::sync::Mutex::new(()),
        }
    }

    fn writing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.one_writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a record the database refused, fsynced, for an operator (`voice-proxy dead-letter
    /// replay` puts it back once the cause is fixed).
    pub fn set_aside(&self, record: &Record) -> std::io::Result<()> {
        let _one = self.writing();
        append(&self.dir, std::slice::from_ref(record))
    }

    /// Keeps lines of the spool that are not records, as their text.
    pub fn set_aside_unreadable(&self, lines: &[String]) -> std::io::Result<()> {
        let _one = self.writing();
        append_unreadable(&self.dir, lines)
    }

    /// Replaces the real numbers of what came in more than `older_than` ago by their keyed hash
    /// (see [`purge`]).
    pub fn purge(&self, older_than: chrono::Duration, key: &str) -> std::io::Result<usize> {
        let _one = self.writing();
        purge(&self.dir, older_than, key)
    }
}

/// Holds the dead-letter lock until dropped.
struct Locked(File);

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn lock(dir: &Path) -> std::io::Result<Locked> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(LOCK))?;
    file.lock()?;
    Ok(Locked(file))
}

fn open_for_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// One line of the dead-letter file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Record(Record),
    /// A line that was not a record, as its text.
    Unreadable {
        unreadable: String,
        set_aside_at: DateTime<Utc>,
    },
}

fn write_lines(file: &mut File, lines: &[Line]) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for line in lines {
        serde_json::to_writer(&mut buf, line)?;
        buf.push(b'\n');
    }
    file.write_all(&buf)?;
    file.sync_data()
}

/// Reads the lines of a dead-letter file; a missing file holds none. A line that is neither a
/// record nor an unreadable line set aside (damaged) is kept as unreadable text.
fn read(path: &Path) -> std::io::Result<Vec<Line>> {
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(data
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice(line).unwrap_or_else(|_| Line::Unreadable {
                unreadable: String::from_utf8_lossy(line).into_owned(),
                set_aside_at: Utc::now(),
            })
        })
        .collect())
}

/// Appends records to the dead-letter file of the spool in `dir`, fsynced.
pub fn append(dir: &Path, records: &[Record]) -> std::io::Result<()> {
    let lines: Vec<Line> = records.iter().cloned().map(Line::Record).collect();
    let _locked = lock(dir)?;
    write_lines(&mut open_for_append(&dir.join(FILE))?, &lines)
}

/// Appends lines of the spool that are not records, as their text, fsynced.
pub fn append_unreadable(dir: &Path, unreadable: &[String]) -> std::io::Result<()> {
    let now = Utc::now();
    let lines: Vec<Line> = unreadable
        .iter()
        .map(|text| Line::Unreadable {
            unreadable: text.clone(),
            set_aside_at: now,
        })
        .collect();
    let _locked = lock(dir)?;
    write_lines(&mut open_for_append(&dir.join(FILE))?, &lines)
}

/// When a line's record came in (or was set aside).
fn received(line: &Line) -> DateTime<Utc> {
    match line {
        Line::Record(Record::Call(c)) => c.started_at,
        Line::Record(Record::Event(e)) => e.received_at,
        Line::Unreadable { set_aside_at, .. } => *set_aside_at,
    }
}

/// The keyed hash the retention purge puts in place of a number: `hmac:` and the hex
/// HMAC-SHA256 of it, as pgcrypto's `hmac(number, key, 'sha256')` computes it in the database.
pub fn keyed_hash(number: &str, key: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(number.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("hmac:{hex}")
}

/// Replaces a line's real numbers by their keyed hash; returns whether any was replaced.
fn redact(line: &mut Line, key: &str) -> bool {
    let mut hash = |digits: &str| keyed_hash(digits, key);
    match line {
        Line::Unreadable { unreadable, .. } => match redact_text(unreadable, &mut hash) {
            Some(redacted) => {
                *unreadable = redacted;
                true
            }
            None => false,
        },
        Line::Record(Record::Call(c)) => {
            let mut changed = false;
            for number in [&mut c.caller, &mut c.callee].into_iter().flatten() {
                if !number.starts_with("hmac:") {
                    *number = hash(number);
                    changed = true;
                }
            }
            changed
        }
        Line::Record(Record::Event(e)) => redact_numbers(&mut e.payload, &mut hash) > 0,
    }
}

/// Replaces the real numbers of records that came in more than `older_than` ago by their keyed
/// hash, in the dead-letter file and in an unfinished replay's file. Returns how many records it
/// changed.
pub fn purge(dir: &Path, older_than: chrono::Duration, key: &str) -> std::io::Result<usize> {
    let _locked = lock(dir)?;
    let cutoff = Utc::now() - older_than;
    let mut changed = 0;
    for path in [dir.join(FILE), dir.join(REPLAYING)] {
        let mut lines = read(&path)?;
        let before = changed;
        for line in lines.iter_mut().filter(|l| received(l) < cutoff) {
            if redact(line, key) {
                changed += 1;
            }
        }
        if changed > before {
            replace(&path, &lines)?;
        }
    }
    Ok(changed)
}

/// Replaces the file at `path` by one holding `lines`, atomically.
fn replace(path: &Path, lines: &[Line]) -> std::io::Result<()> {
    let temp = path.with_extension("jsonl.new");
    let _ = fs::remove_file(&temp);
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&temp)?;
    write_lines(&mut file, lines)?;
    fs::rename(&temp, path)?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// What a replay came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayReport {
    /// Written to Postgres now.
    pub stored: usize,
    /// Found in Postgres already.
    pub duplicates: usize,
    /// Refused again: back in the dead-letter file.
    pub refused: usize,
    /// Not tried: the database could not be reached (back in the file, to try again later).
    pub not_tried: usize,
    /// Lines that are not records: they stay in the file for an operator.
    pub unreadable: usize,
}

/// Writes every dead-lettered record of the spool in `dir` to Postgres again, one at a time;
/// those still refused, and those not tried because the database could not be reached, go back
/// into the dead-letter file.
pub async fn replay(
    pool: &PgPool,
    outbox: &Outbox,
    dir: &Path,
) -> Result<ReplayReport, ReplayError> {
    let lines = take(dir)?;
    let mut report = ReplayReport::default();
    let mut kept = Vec::new();
    let mut lines = lines.into_iter();
    for line in lines.by_ref() {
        let Line::Record(record) = &line else {
            report.unreadable += 1;
            kept.push(line);
            continue;
        };
        match write_batch(pool, outbox, std::slice::from_ref(record)).await {
            Ok(new) if new.first() == Some(&true) => report.stored += 1,
            Ok(_) => report.duplicates += 1,
            Err(e) if crate::is_transient(&e) => {
                tracing::warn!(error = %e, "the database cannot be reached; the rest stays dead-lettered");
                report.not_tried += 1;
                kept.push(line);
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the database still refuses a record");
                report.refused += 1;
                kept.push(line);
            }
        }
    }
    for line in lines {
        match line {
            Line::Record(_) => report.not_tried += 1,
            Line::Unreadable { .. } => report.unreadable += 1,
        }
        kept.push(line);
    }
    give_back(dir, &kept)?;
    Ok(report)
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the dead-letter file could not be read or written: {0}")]
    Io(#[from] std::io::Error),
}

/// Moves the dead-lettered lines into the replaying file (with those of an unfinished replay),
/// and returns them all.
fn take(dir: &Path) -> std::io::Result<Vec<Line>> {
    let _locked = lock(dir)?;
    let file = dir.join(FILE);
    let replaying: PathBuf = dir.join(REPLAYING);
    let waiting = read(&file)?;
    if !waiting.is_empty() {
        write_lines(&mut open_for_append(&replaying)?, &waiting)?;
    }
    match fs::remove_file(&file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    sync_dir(&file)?;
    read(&replaying)
}

/// Puts `kept` back into the dead-letter file and deletes the replaying file.
fn give_back(dir: &Path, kept: &[Line]) -> std::io::Result<()> {
    let _locked = lock(dir)?;
    if !kept.is_empty() {
        write_lines(&mut open_for_append(&dir.join(FILE))?, kept)?;
    }
    match fs::remove_file(dir.join(REPLAYING)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    sync_dir(&dir.join(FILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;
    use voice_proxy_domain::{CallRecord, EventRecord};

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vp-dead-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn old_call() -> Record {
        Record::Call(CallRecord {
            id: voice_proxy_domain::CallId::new(),
            conversation_uuid: Some("CON-old".into()),
            uuid: None,
            pairing_id: None,
            caller: Some("16465550101".into()),
            proxy_number: Some("12125550123".into()),
            callee: Some("16465550102".into()),
            outcome: voice_proxy_domain::CallOutcome::Routed,
            started_at: Utc::now() - chrono::Duration::days(100),
            endpoint_type: None,
        })
    }

    fn new_event() -> Record {
        Record::Event(EventRecord {
            payload: json!({"conversation_uuid": "CON-new", "from": "16465550101"}),
            received_at: Utc::now(),
        })
    }

    #[test]
    fn the_purge_hashes_the_numbers_of_old_records_only_and_keeps_the_file_private() {
        let dir = temp_dir();
        append(&dir, &[old_call(), new_event()]).unwrap();
        let mode = fs::metadata(dir.join(FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(purge(&dir, chrono::Duration::days(90), "key").unwrap(), 1);
        let text = fs::read_to_string(dir.join(FILE)).unwrap();
        assert!(!text.contains("16465550102"), "{text}");
        assert!(text.contains(&keyed_hash("16465550102", "key")));
        assert!(text.contains("12125550123"), "the pool number stays");
        assert!(
            text.contains("\"from\":\"16465550101\""),
            "the new event keeps its number"
        );
        let mode = fs::metadata(dir.join(FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(purge(&dir, chrono::Duration::days(90), "key").unwrap(), 0);
        fs::remove_dir_all(dir).unwrap();
    }
}
