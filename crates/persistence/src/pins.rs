//! PIN access: a caller from a phone that is not a participant's types the PIN of the participant
//! whose proxy number they dialled, and is connected as that participant. What is stored: each
//! PIN typed that did not connect (`pin_failures`), to count a call's attempts and to throttle a
//! caller who guesses. PINs themselves are never written anywhere else, nor logged.

use sqlx::PgPool;
use voice_proxy_domain::routing::Route;
use voice_proxy_domain::{CallOutcome, PairingId, PhoneNumber};

use crate::pairings::RouteRow;

/// Wrong PINs from one caller number within [`THROTTLE_WINDOW_SECONDS`] after which that caller is
/// no longer prompted.
pub const THROTTLE_WRONG_PINS: i64 = 5;
pub const THROTTLE_WINDOW_SECONDS: i64 = 3600;
/// Failures older than this are deleted: neither a call nor the throttle looks back further.
const KEEP_FAILURES_SECONDS: f64 = 86_400.0;

/// For a caller without an active route on `dialled`: `None` when no active pairing with PIN
/// access gives a participant that proxy number, else the caller's standing. One statement: the
/// answer webhook waits for it.
#[tracing::instrument(skip_all)]
pub async fn prompt_standing(
    pool: &PgPool,
    caller: &str,
    dialled: &str,
    conversation_uuid: &str,
) -> Result<Option<Standing>, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pin_failures WHERE conversation_uuid = $2),
                (SELECT count(*) FROM pin_failures
                  WHERE caller = $1 AND wrong
                    AND failed_at > now() - make_interval(secs => $4))
          WHERE EXISTS (SELECT 1 FROM participants
                         WHERE proxy_number = $3 AND pin IS NOT NULL AND NOT released
                           AND upper(active_during) > now())",
    )
    .bind(caller)
    .bind(conversation_uuid)
    .bind(dialled)
    .bind(THROTTLE_WINDOW_SECONDS as f64)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(attempts, recent_wrong)| Standing {
        attempts,
        recent_wrong,
    }))
}

/// A participant found by their PIN: their own number, and their route, as if they called from
/// their own phone.
#[derive(Debug)]
pub struct PinRoute {
    pub participant: PhoneNumber,
    pub route: Route,
}

/// The route of the active participant on `dialled` whose PIN is `pin`; `None` if no active
/// participant there has it.
#[tracing::instrument(skip_all)]
pub async fn route_by_pin(
    pool: &PgPool,
    dialled: &str,
    pin: &str,
) -> Result<Option<PinRoute>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct PinRow {
        number: String,
        #[sqlx(flatten)]
        route: RouteRow,
    }
    let row: Option<PinRow> = sqlx::query_as(
        "SELECT pa.number, pa.pairing_id, pa.counterpart_number, pa.counterpart_proxy,
                pa.active_during @> now() AS active, pa.label, p.reference, p.call_options
           FROM participants pa
           JOIN pairings p ON p.id = pa.pairing_id
          WHERE pa.proxy_number = $1 AND pa.pin = $2 AND NOT pa.released
            AND pa.active_during @> now()",
    )
    .bind(dialled)
    .bind(pin)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| PinRoute {
        participant: PhoneNumber::from_trusted_digits(row.number),
        route: row.route.into_route(),
    }))
}

/// The id of the call recorded for `conversation_uuid`, if it is in the database.
#[tracing::instrument(skip_all)]
pub async fn call_id(
    pool: &PgPool,
    conversation_uuid: &str,
) -> Result<Option<voice_proxy_domain::CallId>, sqlx::Error> {
    let id: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM calls WHERE conversation_uuid = $1")
            .bind(conversation_uuid)
            .fetch_optional(pool)
            .await?;
    Ok(id.map(voice_proxy_domain::CallId::from_uuid))
}

/// How a caller stands: the PINs that failed in this call (`attempts`), and their wrong PINs
/// within the throttle window, from any call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub attempts: i64,
    pub recent_wrong: i64,
}

impl Standing {
    pub fn throttled(&self) -> bool {
        self.recent_wrong >= THROTTLE_WRONG_PINS
    }
}

#[tracing::instrument(skip_all)]
pub async fn standing(
    pool: &PgPool,
    caller: &str,
    conversation_uuid: &str,
) -> Result<Standing, sqlx::Error> {
    let (attempts, recent_wrong): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pin_failures WHERE conversation_uuid = $2),
                (SELECT count(*) FROM pin_failures
                  WHERE caller = $1 AND wrong
                    AND failed_at > now() - make_interval(secs => $3))",
    )
    .bind(caller)
    .bind(conversation_uuid)
    .bind(THROTTLE_WINDOW_SECONDS as f64)
    .fetch_one(pool)
    .await?;
    Ok(Standing {
        attempts,
        recent_wrong,
    })
}

/// Records a PIN that did not connect: `wrong` when one was typed, not when nothing was.
/// Returns the caller's standing after it.
#[tracing::instrument(skip_all)]
pub async fn record_failure(
    pool: &PgPool,
    caller: &str,
    conversation_uuid: &str,
    wrong: bool,
) -> Result<Standing, sqlx::Error> {
    sqlx::query("INSERT INTO pin_failures (caller, conversation_uuid, wrong) VALUES ($1, $2, $3)")
        .bind(caller)
        .bind(conversation_uuid)
        .bind(wrong)
        .execute(pool)
        .await?;
    standing(pool, caller, conversation_uuid).await
}

/// Writes what the PIN decided into the call the answer webhook recorded (as `pin_prompted`):
/// its outcome and, when connected, the pairing and the callee. `false` if that call is not in
/// the database (its record is still on its way from the spool).
#[tracing::instrument(skip_all)]
pub async fn settle_call(
    pool: &PgPool,
    conversation_uuid: &str,
    outcome: CallOutcome,
    pairing_id: Option<PairingId>,
    callee: Option<&PhoneNumber>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE calls SET outcome = $2, pairing_id = COALESCE($3, pairing_id),
                          callee = COALESCE($4, callee)
          WHERE conversation_uuid = $1 AND outcome = 'pin_prompted'",
    )
    .bind(conversation_uuid)
    .bind(outcome.as_str())
    .bind(pairing_id.map(|p| p.as_uuid()))
    .bind(callee.map(PhoneNumber::expose))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes failures older than a day; returns how many.
#[tracing::instrument(skip_all)]
pub async fn purge_failures(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query("DELETE FROM pin_failures WHERE failed_at < now() - make_interval(secs => $1)")
            .bind(KEEP_FAILURES_SECONDS)
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}
