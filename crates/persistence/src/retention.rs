//! Retention: after a pairing has been over for the retention period, the participants' real
//! numbers are replaced by a keyed hash in pairings, call records and stored events. Rows,
//! counts and timings stay; the same number always hashes to the same value under one key, so
//! "how many calls did this (hashed) person make" stays answerable. Callback messages (which
//! carry no real number) are deleted after the same period, once no endpoint is waiting for them.

use chrono::Duration;
use sqlx::PgPool;

/// How many rows one statement changes, so that a purge never holds long locks.
const BATCH: i64 = 5000;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    pub participants: u64,
    pub calls: u64,
    pub events: u64,
    /// Callback messages deleted, with their deliveries and attempts.
    pub callback_messages: u64,
}

/// Replaces real numbers older than `older_than` by `hmac:<hex>` computed with `key`. Runs in
/// batches until nothing is left; safe to run on several instances at once.
#[tracing::instrument(skip_all)]
pub async fn purge(
    pool: &PgPool,
    older_than: Duration,
    key: &str,
) -> Result<PurgeReport, sqlx::Error> {
    let secs = older_than.num_seconds() as f64;
    Ok(PurgeReport {
        participants: in_batches(pool, PURGE_PARTICIPANTS, secs, key).await?,
        calls: in_batches(pool, PURGE_CALLS, secs, key).await?,
        events: in_batches(pool, PURGE_EVENTS, secs, key).await?,
        callback_messages: delete_old_messages(pool, secs).await?,
    })
}

/// Deletes the callback messages made more than `secs` ago whose every delivery has finished
/// (their deliveries and attempts go with them), in batches.
async fn delete_old_messages(pool: &PgPool, secs: f64) -> Result<u64, sqlx::Error> {
    until_short_batch(|| async move {
        let done = sqlx::query(
            "DELETE FROM webhook_messages
              WHERE id IN (
                    SELECT m.id FROM webhook_messages m
                     WHERE m.created_at < now() - make_interval(secs => $1)
                       AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                                        WHERE d.message_id = m.id AND d.state = 'pending')
                     LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(secs)
        .bind(BATCH)
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    })
    .await
}

/// Runs one purge statement (binds: period in seconds, key, batch size) until a batch changes
/// fewer rows than it could; returns the rows changed.
async fn in_batches(
    pool: &PgPool,
    sql: &'static str,
    secs: f64,
    key: &str,
) -> Result<u64, sqlx::Error> {
    until_short_batch(|| async move {
        let done = sqlx::query(sql)
            .bind(secs)
            .bind(key)
            .bind(BATCH)
            .execute(pool)
            .await?;
        Ok(done.rows_affected())
    })
    .await
}

/// Runs `batch` (which changes at most [`BATCH`] rows) until it changes fewer; returns the rows
/// changed in all.
async fn until_short_batch<F, Fut>(mut batch: F) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let n = batch().await?;
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Participants of pairings over for the period.
const PURGE_PARTICIPANTS: &str = "UPDATE participants p
                SET number = 'hmac:' || encode(hmac(p.number, $2, 'sha256'), 'hex'),
                    counterpart_number = CASE WHEN p.counterpart_number LIKE 'hmac:%'
                        THEN p.counterpart_number
                        ELSE 'hmac:' || encode(hmac(p.counterpart_number, $2, 'sha256'), 'hex') END
              WHERE (p.pairing_id, p.position) IN (
                    SELECT pairing_id, position FROM participants
                     WHERE number NOT LIKE 'hmac:%'
                       AND upper(active_during) < now() - make_interval(secs => $1)
                     LIMIT $3 FOR UPDATE SKIP LOCKED)";

/// Calls whose pairing has been over for the period, or, without a pairing, that started that
/// long ago.
const PURGE_CALLS: &str = "UPDATE calls c
                SET caller = 'hmac:' || encode(hmac(c.caller, $2, 'sha256'), 'hex'),
                    callee = CASE WHEN c.callee IS NULL OR c.callee LIKE 'hmac:%' THEN c.callee
                        ELSE 'hmac:' || encode(hmac(c.callee, $2, 'sha256'), 'hex') END
              WHERE c.id IN (
                    SELECT k.id FROM calls k
                      LEFT JOIN pairings p ON p.id = k.pairing_id
                     WHERE k.caller IS NOT NULL AND k.caller NOT LIKE 'hmac:%'
                       AND k.started_at < now() - make_interval(secs => $1)
                       AND (p.id IS NULL OR upper(p.active_during) < now() - make_interval(secs => $1))
                     LIMIT $3 FOR UPDATE OF k SKIP LOCKED)";

/// Events: numbers may be anywhere in their payload (`voice_proxy_redact_numbers`, V11); pool
/// numbers are ours and stay.
const PURGE_EVENTS: &str = "UPDATE call_events e
                SET purged = true, payload = voice_proxy_redact_numbers(e.payload, $2)
              WHERE e.id IN (
                    SELECT id FROM call_events
                     WHERE NOT purged AND received_at < now() - make_interval(secs => $1)
                     LIMIT $3 FOR UPDATE SKIP LOCKED)";
