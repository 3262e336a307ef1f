//! voice-proxy's storage, over Postgres with sqlx. Two ideas, kept apart:
//!
//! - **The store**: SQL, one module per aggregate ([`numbers`], [`pairings`], [`calls`] and
//!   [`records`], [`recordings`], [`api_keys`], [`callbacks`], [`retention`]), plus the schema migrations embedded from
//!   `migrations/` ([`migrate`]), error classification ([`db_error`]) and pagination. Each
//!   function takes a pool or a transaction and decides nothing the domain crate could: the
//!   allocation policy, the call fold, the routing rules are `voice_proxy_domain`'s.
//! - **The durable machinery** ([`durable`]): what runs in the process to keep calls answered
//!   and nothing acknowledged lost whatever the database does: the recorder and its spool, the
//!   dead-letter file, the database's health, the in-memory route mirror, the load ledger.
//!
//! And [`routing`], the two operations that need both: resolving an inbound call's route (from
//! memory, the database, or memory again when the database is down), and closing or re-timing
//! a pairing so that every instance stops routing it before the request returns.

pub mod api_keys;
pub mod callbacks;
pub mod calls;
pub mod db_error;
pub mod durable;
pub mod migrate;
pub mod numbers;
pub mod pagination;
pub mod pairings;
pub mod pins;
pub mod recordings;
pub mod records;
pub mod retention;
pub mod routing;

use std::time::Duration;

pub use db_error::is_transient;
pub use sqlx::PgPool;
pub use sqlx::postgres::PgListener;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Connection pool settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a request waits for a free connection before it fails.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(2),
        }
    }
}

/// Builds a pool that connects lazily, so the service starts (and answers) while the database is
/// still coming up. Its sessions run with JIT compilation off: every statement here is a short
/// lookup or write, and Postgres compiles a plan whose estimated cost passes `jit_above_cost`,
/// which it does for lookups on tables it has no statistics of, costing tens of milliseconds
/// per statement.
pub fn connect_lazy(options: PgConnectOptions, settings: &PoolSettings) -> PgPool {
    let options = options.options([("jit", "off")]);
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        // A broken connection surfaces as an error on use and is dropped; pinging before every
        // acquire would add a round trip to every request.
        .test_before_acquire(false)
        .connect_lazy_with(options)
}

/// Begins a transaction whose statements run with their generic plans (`plan_cache_mode`, set
/// for this transaction only, in the same round trip as `BEGIN`).
///
/// For a prepared statement Postgres plans the first five executions with the values given,
/// then keeps planning each execution anew whenever it estimates the plan made without values
/// to cost more than those. Statements over arrays (`= ANY($1)`, `unnest($1)`) always look
/// costlier without values (an array of unknown length is guessed at 10 elements), so they were
/// planned on every execution: on the pairing create path that was about a third of Postgres's
/// CPU time. Their generic plans are the same index lookups. Used by the pairing create and the
/// recorder's batches.
pub(crate) async fn begin_generic(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    pool.begin_with("BEGIN; SET LOCAL plan_cache_mode = force_generic_plan")
        .await
}

/// Whether an error is Postgres refusing a write because of the named constraint.
pub(crate) fn violates(err: &sqlx::Error, constraint: &str) -> bool {
    err.as_database_error()
        .and_then(|e| e.constraint())
        .is_some_and(|c| c == constraint)
}
