//! Call recordings: the event Vonage sends when a recording is ready, stored once per recording,
//! and the queue of downloads to the archive (`migrations/V14__recordings.sql`).
//!
//! The queue lives in the table: a recording to archive is `pending` with a `next_attempt_at`.
//! [`claim`] takes due ones in one statement (`FOR UPDATE SKIP LOCKED`), counts the attempt and
//! pushes `next_attempt_at` past the end of the attempt: that is the claimer's lease, so no other
//! instance takes it meanwhile, and an instance that dies mid-download leaves it to be taken
//! again once the lease has passed. Each outcome is written only while the attempt still holds
//! the recording (its `attempts` is the fence), so a claimer whose lease ran out changes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Where a recording is, as far as the archive goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveState {
    /// Not archived (the service did not archive recordings when its event arrived): it is
    /// fetched from Vonage when asked for.
    None,
    /// To be downloaded to the archive.
    Pending,
    /// In the archive.
    Archived,
    /// The downloads failed too many times: it is fetched from Vonage when asked for.
    Failed,
    /// Past retention: the archived file is deleted, and a download not made is not made.
    Purged,
    /// The event's URL is not on Vonage's API hosts: it is never fetched.
    Refused,
}

impl ArchiveState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pending => "pending",
            Self::Archived => "archived",
            Self::Failed => "failed",
            Self::Purged => "purged",
            Self::Refused => "refused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::None,
            Self::Pending,
            Self::Archived,
            Self::Failed,
            Self::Purged,
            Self::Refused,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

/// A recording's event, as it is to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecording {
    /// Letters, digits, `-` and `_`, at most 64 (the table refuses anything else).
    pub recording_uuid: String,
    pub conversation_uuid: String,
    pub recording_url: String,
    pub size_bytes: Option<i64>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    /// [`ArchiveState::None`], [`ArchiveState::Pending`] (downloaded as soon as a worker is
    /// free) or [`ArchiveState::Refused`].
    pub archive: ArchiveState,
}

/// A stored recording.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Recording {
    pub recording_uuid: String,
    pub conversation_uuid: String,
    pub recording_url: String,
    pub size_bytes: Option<i64>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    #[sqlx(try_from = "String")]
    pub archive_state: ArchiveState,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// The file's name in the archive directory, while archived.
    pub archive_file: Option<String>,
    pub content_type: Option<String>,
    pub archived_bytes: Option<i64>,
    pub archived_at: Option<DateTime<Utc>>,
    pub purged_at: Option<DateTime<Utc>>,
}

impl TryFrom<String> for ArchiveState {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("unknown archive state {s:?}"))
    }
}

const SELECT_RECORDING: &str =
    "SELECT recording_uuid, conversation_uuid, recording_url, size_bytes,
        start_time, end_time, received_at, archive_state, attempts, last_error, archive_file,
        content_type, archived_bytes, archived_at, purged_at
   FROM recordings";

/// Stores a recording's event once: a repeated event (Vonage retries) changes nothing. Returns
/// whether it was new.
#[tracing::instrument(skip_all, fields(recording_uuid = %recording.recording_uuid))]
pub async fn insert(pool: &PgPool, recording: &NewRecording) -> Result<bool, sqlx::Error> {
    let pending = recording.archive == ArchiveState::Pending;
    let done = sqlx::query(
        "INSERT INTO recordings (recording_uuid, conversation_uuid, recording_url, size_bytes,
                                 start_time, end_time, archive_state, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $8 THEN now() END)
         ON CONFLICT (recording_uuid) DO NOTHING",
    )
    .bind(&recording.recording_uuid)
    .bind(&recording.conversation_uuid)
    .bind(&recording.recording_url)
    .bind(recording.size_bytes)
    .bind(recording.start_time)
    .bind(recording.end_time)
    .bind(recording.archive.as_str())
    .bind(pending)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The latest recording of a conversation (the call with that `conversation_uuid`), if any.
#[tracing::instrument(skip_all)]
pub async fn latest_of_conversation(
    pool: &PgPool,
    conversation_uuid: &str,
) -> Result<Option<Recording>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_RECORDING} WHERE conversation_uuid = $1
          ORDER BY received_at DESC, recording_uuid DESC LIMIT 1"
    )))
    .bind(conversation_uuid)
    .fetch_optional(pool)
    .await
}

#[tracing::instrument(skip_all, fields(recording_uuid))]
pub async fn get(pool: &PgPool, recording_uuid: &str) -> Result<Option<Recording>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_RECORDING} WHERE recording_uuid = $1"
    )))
    .bind(recording_uuid)
    .fetch_optional(pool)
    .await
}

/// A download claimed by [`claim`]: this attempt holds the recording until its lease passes.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Claimed {
    pub recording_uuid: String,
    pub recording_url: String,
    /// Which attempt this is (1 for the first): the fence of every outcome written for it.
    pub attempts: i32,
}

/// Claims up to `limit` due downloads, oldest due first, each for `lease` (longer than an
/// attempt can take). Race-free across instances: one statement, skipping rows another
/// transaction is claiming.
#[tracing::instrument(skip_all)]
pub async fn claim(
    pool: &PgPool,
    limit: u32,
    lease: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE recordings r
            SET attempts = r.attempts + 1,
                next_attempt_at = now() + make_interval(secs => $2)
          WHERE r.recording_uuid IN (
                SELECT recording_uuid FROM recordings
                 WHERE archive_state = 'pending' AND next_attempt_at <= now()
                 ORDER BY next_attempt_at
                 LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING r.recording_uuid, r.recording_url, r.attempts",
    )
    .bind(i64::from(limit))
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// The archived file of a claimed download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedFile {
    /// Its name in the archive directory.
    pub file: String,
    pub content_type: String,
    pub bytes: i64,
}

/// Records that the claimed download is archived. `false` when the attempt no longer holds the
/// recording (its lease ran out and another attempt took it, or retention purged it).
#[tracing::instrument(skip_all, fields(recording_uuid = %claimed.recording_uuid))]
pub async fn mark_archived(
    pool: &PgPool,
    claimed: &Claimed,
    archived: &ArchivedFile,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE recordings
            SET archive_state = 'archived', next_attempt_at = NULL, last_error = NULL,
                archive_file = $3, content_type = $4, archived_bytes = $5, archived_at = now()
          WHERE recording_uuid = $1 AND attempts = $2 AND archive_state = 'pending'",
    )
    .bind(&claimed.recording_uuid)
    .bind(claimed.attempts)
    .bind(&archived.file)
    .bind(&archived.content_type)
    .bind(archived.bytes)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a failed attempt: tried again after `retry_in`, or, with `None`, given up (state
/// `failed`). `false` when the attempt no longer holds the recording.
#[tracing::instrument(skip_all, fields(recording_uuid = %claimed.recording_uuid))]
pub async fn mark_failed(
    pool: &PgPool,
    claimed: &Claimed,
    retry_in: Option<Duration>,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let error: String = error.chars().take(1024).collect();
    let done = sqlx::query(
        "UPDATE recordings
            SET archive_state = CASE WHEN $3::float8 IS NULL THEN 'failed' ELSE 'pending' END,
                next_attempt_at = now() + make_interval(secs => $3),
                last_error = $4
          WHERE recording_uuid = $1 AND attempts = $2 AND archive_state = 'pending'",
    )
    .bind(&claimed.recording_uuid)
    .bind(claimed.attempts)
    .bind(retry_in.map(|d| d.as_secs_f64()))
    .bind(error)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// When the next pending download comes due (now or in the past if one is due already).
pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT min(next_attempt_at) FROM recordings WHERE archive_state = 'pending'",
    )
    .fetch_one(pool)
    .await
}

/// How many downloads are waiting (due or not).
pub async fn backlog(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM recordings WHERE archive_state = 'pending'")
        .fetch_one(pool)
        .await
}

/// A recording past retention whose archived file is to be deleted.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Expired {
    pub recording_uuid: String,
    /// The archived file's name, when it was archived; `None` for a download not made yet.
    pub archive_file: Option<String>,
}

/// Up to `limit` recordings received more than `older_than` ago that are archived or waiting to
/// be: their files are to be deleted, then [`mark_purged`].
pub async fn past_retention(
    pool: &PgPool,
    older_than: chrono::Duration,
    limit: u32,
) -> Result<Vec<Expired>, sqlx::Error> {
    sqlx::query_as(
        "SELECT recording_uuid, archive_file FROM recordings
          WHERE archive_state IN ('archived', 'pending')
            AND received_at < now() - make_interval(secs => $1)
          ORDER BY received_at LIMIT $2",
    )
    .bind(older_than.num_seconds() as f64)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
}

/// Marks recordings purged (their files deleted). Returns how many changed.
pub async fn mark_purged(pool: &PgPool, recording_uuids: &[String]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE recordings
            SET archive_state = 'purged', purged_at = now(), archive_file = NULL,
                next_attempt_at = NULL
          WHERE recording_uuid = ANY($1) AND archive_state IN ('archived', 'pending')",
    )
    .bind(recording_uuids)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_states_read_back() {
        for s in [
            ArchiveState::None,
            ArchiveState::Pending,
            ArchiveState::Archived,
            ArchiveState::Failed,
            ArchiveState::Purged,
            ArchiveState::Refused,
        ] {
            assert_eq!(ArchiveState::parse(s.as_str()), Some(s));
        }
        assert_eq!(ArchiveState::parse("deleted"), None);
    }
}
