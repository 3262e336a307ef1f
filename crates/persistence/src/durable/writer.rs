//! Writing records to Postgres without letting one bad record hold back the others: what
//! Postgres refuses outright goes to the dead-letter file, what fails for a while is left to
//! retry.

use sqlx::PgPool;

use super::dead_letter::DeadLetters;
use crate::callbacks::Outbox;
use crate::records::{Record, write_batch};

/// What writing one record came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    New,
    /// It was in the database already (a retry, or a spool segment replayed).
    Duplicate,
    /// The database refused it; it is in the dead-letter file.
    DeadLettered,
}

/// Writes a batch; if Postgres refuses its data (rather than being unreachable), writes the
/// records one by one and sets aside, in the spool's dead-letter file, those it refuses, so that
/// one bad record never holds back the others. Fails only on a transient error.
pub(crate) async fn write_isolating(
    pool: &PgPool,
    outbox: &Outbox,
    dead_letters: &DeadLetters,
    records: &[Record],
) -> Result<Vec<Written>, sqlx::Error> {
    match write_batch(pool, outbox, records).await {
        Ok(new) => return Ok(new.into_iter().map(written).collect()),
        Err(e) if crate::is_transient(&e) => return Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "the database refused a batch; writing its records one by one")
        }
    }
    let mut outcomes = Vec::with_capacity(records.len());
    for record in records {
        match write_batch(pool, outbox, std::slice::from_ref(record)).await {
            Ok(n) => outcomes.push(written(n.first().copied().unwrap_or(false))),
            Err(e) if crate::is_transient(&e) => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, "the database refused a record; kept in the dead-letter file");
                metrics::counter!("records_dead_lettered_total").increment(1);
                dead_letters.set_aside(record).map_err(sqlx::Error::Io)?;
                outcomes.push(Written::DeadLettered);
            }
        }
    }
    Ok(outcomes)
}

fn written(new: bool) -> Written {
    if new {
        Written::New
    } else {
        Written::Duplicate
    }
}
