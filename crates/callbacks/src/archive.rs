//! The recording archive: each recording whose event arrived while `RECORDING_ARCHIVE_DIR` was
//! set is downloaded from Vonage into that directory, and deleted from it once past
//! `RECORDING_RETENTION_DAYS`.
//!
//! The queue is the `recordings` table (`voice_proxy_persistence::recordings`): a download is
//! claimed with a lease, so it survives restarts and no two instances make it at once. A file is
//! written under a temporary name (mode 0600), synced, then renamed to `<recording_uuid>.<ext>`,
//! so the archive never holds a partial recording under its real name. A failed attempt is
//! retried after an exponential backoff (with jitter, at least what Vonage's `Retry-After`
//! asks), up to a maximum number of attempts.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use voice_proxy_persistence::PgPool;
use voice_proxy_persistence::recordings::{self, ArchivedFile, Claimed};

use crate::vonage::{FetchError, VonageClient};

/// The most of one recording written to the archive: a recording is at most a few hours of
/// compressed audio.
pub const MAX_RECORDING_BYTES: u64 = 2 << 30;
/// How long the worker waits, with nothing to do, before it asks the database again (for
/// recordings queued by other instances).
const POLL_INTERVAL: Duration = Duration::from_secs(10);
/// Downloads made at once by one instance.
const CONCURRENCY: usize = 2;
/// How long a chunk of a download may take to arrive.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Recordings purged per batch.
const PURGE_BATCH: u32 = 500;
/// Temporary files are named `.<recording_uuid>.<random>.tmp`.
const TEMP_SUFFIX: &str = ".tmp";

/// How the archive works.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    /// Where archived recordings are kept (created 0700 at start).
    pub dir: PathBuf,
    /// Attempts per recording before it is given up (state `failed`).
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each one.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub backoff_cap: Duration,
    /// How long one download may take in all.
    pub timeout: Duration,
}

impl ArchiveSettings {
    /// The lease of a claimed download: longer than the download may take.
    pub fn lease(&self) -> Duration {
        self.timeout + self.timeout.min(Duration::from_secs(60))
    }

    /// The wait before attempt `attempts + 1` after attempt `attempts` failed; `None` when
    /// `attempts` was the last. `jitter` (0 to 1) adds up to a tenth; `retry_after` is what the
    /// server asked for (capped like the rest).
    pub fn retry_in(
        &self,
        attempts: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let doublings = attempts.saturating_sub(1).min(32);
        let wait = self
            .backoff
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.backoff_cap);
        let jittered = wait.mul_f64(1.0 + 0.1 * jitter.clamp(0.0, 1.0));
        Some(
            jittered
                .max(retry_after.unwrap_or_default())
                .min(self.backoff_cap.max(wait)),
        )
    }
}

/// Creates the archive directory if it is missing (mode 0700) and checks it can be written.
pub fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let probe = dir.join(format!(
        ".probe-{}{TEMP_SUFFIX}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::File::create(&probe)?;
    std::fs::remove_file(&probe)
}

/// Downloads due recordings until the task is aborted: at once when `wake` is notified (a new
/// recording event on this instance), when a retry comes due, and every few seconds otherwise.
pub async fn archive_forever(
    pool: PgPool,
    client: VonageClient,
    settings: ArchiveSettings,
    wake: Arc<Notify>,
) {
    let settings = Arc::new(settings);
    remove_stale_temp_files(&settings.dir, settings.lease()).await;
    loop {
        let claimed = match recordings::claim(&pool, CONCURRENCY as u32, settings.lease()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "could not claim recording downloads; will retry");
                Vec::new()
            }
        };
        if !claimed.is_empty() {
            let downloads = claimed
                .into_iter()
                .map(|c| download(&pool, &client, &settings, c));
            futures_util::future::join_all(downloads).await;
            continue;
        }
        if let Ok(n) = recordings::backlog(&pool).await {
            metrics::gauge!("recording_archive_backlog").set(n as f64);
        }
        let wait = match recordings::next_due(&pool).await {
            Ok(Some(due)) => (due - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
                .clamp(Duration::from_millis(10), POLL_INTERVAL),
            _ => POLL_INTERVAL,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
        }
    }
}

/// One attempt at one claimed download, and its outcome written.
async fn download(pool: &PgPool, client: &VonageClient, settings: &ArchiveSettings, c: Claimed) {
    let attempt = u32::try_from(c.attempts).unwrap_or(u32::MAX);
    let fetched = tokio::time::timeout(settings.timeout, fetch_to_file(client, &settings.dir, &c))
        .await
        .unwrap_or(Err(DownloadError::Fetch(FetchError::Timeout(
            settings.timeout,
        ))));
    match fetched {
        Ok(archived) => match recordings::mark_archived(pool, &c, &archived).await {
            Ok(true) => {
                metrics::counter!("recording_downloads_total", "result" => "archived").increment(1);
                tracing::info!(
                    recording_uuid = %c.recording_uuid,
                    bytes = archived.bytes,
                    attempt,
                    "archived a recording"
                );
            }
            Ok(false) => {
                metrics::counter!("recording_downloads_total", "result" => "superseded")
                    .increment(1);
                tracing::info!(
                    recording_uuid = %c.recording_uuid,
                    "a recording's download outlived its lease or its retention"
                );
                discard_unless_archived(pool, &settings.dir, &c.recording_uuid, &archived.file)
                    .await;
            }
            Err(e) => {
                // The file is in place; the next claim (after the lease) downloads it again and
                // writes the outcome.
                tracing::warn!(
                    recording_uuid = %c.recording_uuid,
                    error = %e,
                    "archived a recording but could not record it; it will be downloaded again"
                );
            }
        },
        Err(e) => {
            let retry_in = match &e {
                // Nothing fetched, ever: the URL is not Vonage's.
                DownloadError::Fetch(FetchError::Refused(_)) => None,
                DownloadError::Fetch(f) => {
                    settings.retry_in(attempt, f.retry_after(), fastrand::f64())
                }
                DownloadError::Disk(_) | DownloadError::TooLarge => {
                    settings.retry_in(attempt, None, fastrand::f64())
                }
            };
            let result = if retry_in.is_some() {
                "retry"
            } else {
                "failed"
            };
            metrics::counter!("recording_downloads_total", "result" => result).increment(1);
            metrics::counter!("recording_download_failures_total", "reason" => e.reason())
                .increment(1);
            match retry_in {
                Some(wait) => tracing::warn!(
                    recording_uuid = %c.recording_uuid,
                    attempt,
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64,
                    "a recording's download failed; will retry"
                ),
                None => tracing::error!(
                    recording_uuid = %c.recording_uuid,
                    attempt,
                    error = %e,
                    "a recording's download failed for the last time; it stays with Vonage"
                ),
            }
            if let Err(db) = recordings::mark_failed(pool, &c, retry_in, &e.to_string()).await {
                tracing::warn!(
                    recording_uuid = %c.recording_uuid,
                    error = %db,
                    "could not record a failed download; it is retried after its lease"
                );
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum DownloadError {
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("could not write the archive: {0}")]
    Disk(#[from] std::io::Error),
    #[error("the recording is larger than {MAX_RECORDING_BYTES} bytes")]
    TooLarge,
}

impl DownloadError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Fetch(f) => f.reason(),
            Self::Disk(_) => "disk",
            Self::TooLarge => "too_large",
        }
    }
}

/// Fetches the recording into a temporary file (0600), syncs it, and renames it into place.
async fn fetch_to_file(
    client: &VonageClient,
    dir: &Path,
    c: &Claimed,
) -> Result<ArchivedFile, DownloadError> {
    let media = client.fetch(&c.recording_url, IDLE_TIMEOUT).await?;
    if media
        .content_length
        .is_some_and(|n| n > MAX_RECORDING_BYTES)
    {
        return Err(DownloadError::TooLarge);
    }
    let content_type = media
        .content_type
        .clone()
        .unwrap_or_else(|| "audio/mpeg".to_owned());
    let file_name = format!("{}.{}", c.recording_uuid, extension(&content_type));
    let temp = dir.join(format!(
        ".{}.{}{TEMP_SUFFIX}",
        c.recording_uuid,
        uuid::Uuid::new_v4().simple()
    ));
    let written = write_temp(&temp, media.into_stream(IDLE_TIMEOUT)).await;
    let bytes = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e);
        }
    };
    if let Err(e) = tokio::fs::rename(&temp, dir.join(&file_name)).await {
        let _ = tokio::fs::remove_file(&temp).await;
        return Err(e.into());
    }
    sync_dir(dir).await?;
    Ok(ArchivedFile {
        file: file_name,
        content_type,
        bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
    })
}

async fn write_temp(
    temp: &Path,
    body: impl futures_util::Stream<Item = Result<bytes::Bytes, FetchError>>,
) -> Result<u64, DownloadError> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .await?;
    let mut body = std::pin::pin!(body);
    let mut bytes: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        if bytes > MAX_RECORDING_BYTES {
            return Err(DownloadError::TooLarge);
        }
        file.write_all(&chunk).await?;
        metrics::counter!("recording_download_bytes_total").increment(chunk.len() as u64);
    }
    file.flush().await?;
    file.sync_all().await?;
    Ok(bytes)
}

/// Makes a rename in `dir` durable.
async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

/// The file extension for a content type.
fn extension(content_type: &str) -> &'static str {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => "wav",
        "audio/ogg" | "application/ogg" => "ogg",
        _ => "bin",
    }
}

/// After an attempt lost its hold on a recording: deletes the file it wrote unless the
/// recording is archived as that very file (by the attempt that took over, which wrote the
/// same name).
async fn discard_unless_archived(pool: &PgPool, dir: &Path, recording_uuid: &str, file: &str) {
    match recordings::get(pool, recording_uuid).await {
        Ok(Some(r)) if r.archive_file.as_deref() == Some(file) => {}
        Ok(_) => {
            if let Err(e) = remove_if_present(&dir.join(file)).await {
                tracing::warn!(recording_uuid, error = %e, "could not delete a superseded download");
            }
        }
        Err(e) => tracing::warn!(
            recording_uuid,
            error = %e,
            "could not check a superseded download; its file stays until retention"
        ),
    }
}

async fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Deletes temporary files older than `age`: downloads cut short by a crash. (A younger one may
/// be another instance's download in progress.)
async fn remove_stale_temp_files(dir: &Path, age: Duration) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.ends_with(TEMP_SUFFIX)) {
            continue;
        }
        let old = entry
            .metadata()
            .await
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|elapsed| elapsed > age);
        if old && remove_if_present(&entry.path()).await.is_ok() {
            tracing::info!(file = %name, "deleted the temporary file of an interrupted download");
        }
    }
}

/// Deletes the archived recordings received more than `older_than` ago, and gives up the
/// downloads of those not yet archived; returns how many were purged. Each file is deleted
/// before its row says so: a crash in between leaves a row that the next run purges again.
pub async fn purge(
    pool: &PgPool,
    dir: &Path,
    older_than: chrono::Duration,
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let expired = recordings::past_retention(pool, older_than, PURGE_BATCH).await?;
        let mut deleted = Vec::with_capacity(expired.len());
        for e in &expired {
            match &e.archive_file {
                Some(file) => match remove_if_present(&dir.join(file)).await {
                    Ok(()) => deleted.push(e.recording_uuid.clone()),
                    Err(err) => tracing::warn!(
                        recording_uuid = %e.recording_uuid,
                        error = %err,
                        "could not delete an archived recording past retention; will retry"
                    ),
                },
                None => deleted.push(e.recording_uuid.clone()),
            }
        }
        let n = recordings::mark_purged(pool, &deleted).await?;
        total += n;
        metrics::counter!("recordings_purged_total").increment(n);
        if expired.len() < PURGE_BATCH as usize || deleted.is_empty() {
            return Ok(total);
        }
    }
}

/// Runs [`purge`] every `interval`, and clears out temporary files left by crashes.
pub async fn purge_forever(
    pool: PgPool,
    dir: PathBuf,
    older_than: chrono::Duration,
    interval: Duration,
    lease: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match purge(&pool, &dir, older_than).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(recordings = n, "deleted archived recordings past retention"),
            Err(e) => tracing::warn!(error = %e, "recording retention failed; will retry"),
        }
        remove_stale_temp_files(&dir, lease).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ArchiveSettings {
        ArchiveSettings {
            dir: PathBuf::from("/nowhere"),
            max_attempts: 5,
            backoff: Duration::from_secs(30),
            backoff_cap: Duration::from_secs(300),
            timeout: Duration::from_secs(600),
        }
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap_then_give_up() {
        let s = settings();
        let waits: Vec<_> = (1..=5).map(|a| s.retry_in(a, None, 0.0)).collect();
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(waits, vec![secs(30), secs(60), secs(120), secs(240), None]);
        let mut capped = s.clone();
        capped.max_attempts = 40;
        assert_eq!(capped.retry_in(39, None, 0.0), secs(300));
        assert_eq!(s.retry_in(1, None, 1.0), secs(33));
    }

    #[test]
    fn retry_after_is_honoured_within_the_cap() {
        let s = settings();
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(s.retry_in(1, secs(90), 0.0), secs(90));
        assert_eq!(s.retry_in(1, secs(86_400), 0.0), secs(300));
    }

    #[test]
    fn a_lease_outlasts_the_download() {
        let mut s = settings();
        assert!(s.lease() > s.timeout);
        s.timeout = Duration::from_secs(1);
        assert_eq!(s.lease(), Duration::from_secs(2));
    }

    #[test]
    fn extensions_follow_the_content_type() {
        assert_eq!(extension("audio/mpeg"), "mp3");
        assert_eq!(extension("Audio/WAV; x=1"), "wav");
        assert_eq!(extension("text/html"), "bin");
    }
}
