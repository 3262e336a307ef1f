//! An in-memory copy of every active route: the answer webhook connects calls from it without a
//! database round trip, and keeps connecting them while the database is unreachable.
//!
//! It is loaded once at start-up and then follows the pairings' change feed (`changed_xid`, the
//! transaction that created, closed or re-timed a pairing), so it learns of pairings created,
//! closed or re-timed through any instance: at once when Postgres notifies a change
//! (`voice_proxy_routes`), and every poll interval regardless. Each poll reads the changes of the
//! transactions that were still running, or had not started, when the previous poll began (all
//! others had finished by then, so that poll saw them): a change is read once or a few times,
//! and never missed however late its transaction commits.
//!
//! When it may connect a call on its own: a pairing that is closed (or whose expiry is brought
//! forward) must stop routing on every instance before the request that closed it returns. So
//! after each poll an instance writes, in `route_mirrors`, the database time its poll read from
//! (`seen_at`); the request that closed a pairing waits until every live instance has read from
//! a time after its commit ([`await_mirrors`]). An instance connects a call from memory only
//! while its last successful poll *started* less than a lease ago; past that (the database is
//! slow or unreachable) it asks the database again, and the closer stops waiting for it after
//! one lease. A miss or an ended route in memory is always checked in the database: the pairing
//! may have been created, or extended, through another instance a moment ago.
//!
//! Across a failover: transaction ids are a server's counter. A standby promoted after a failover
//! continues the counter from the write-ahead log it received, and the mirror moves its horizon
//! forward only after a commit of its own (its heartbeat), so the ids below the horizon were on
//! record before the switch (see `RouteMirror::advance`). Besides, when a poll finds another
//! server (or the same one restarted: `pg_postmaster_start_time()` differs), the mirror reads
//! every route again instead of trusting the ids (`route_mirror_reloads_total`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::PgPool;
use uuid::Uuid;
use voice_proxy_domain::{PairingId, PhoneNumber};

use sqlx::types::Json;
use voice_proxy_domain::call_options::CallOptionsOverrides;
use voice_proxy_domain::routing::{Route, RouteDetails};

/// A poll that reads more participant rows than this is worth a warning (it holds them all in
/// memory at once).
const LARGE_POLL_ROWS: usize = 200_000;
/// How often routes that expired by the clock are dropped from memory.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    pairing_id: Uuid,
    callee: u64,
    callee_proxy: u64,
    ends_at: DateTime<Utc>,
    /// Only for pairings that set call options, or, when the service has a default whisper,
    /// have a label or reference for it to name: most routes carry nothing more.
    details: Option<Arc<RouteDetails>>,
}

#[derive(Default)]
struct State {
    routes: HashMap<(u64, u64), Entry>,
    /// Which transactions the next poll reads the changes of: those still running or not yet
    /// started when the previous poll or the load began.
    since: Option<Horizon>,
    /// When routes that expired by the clock alone were last dropped.
    pruned: Option<Instant>,
}

pub struct RouteMirror {
    state: RwLock<State>,
    loaded: AtomicBool,
    /// This instance's row in `route_mirrors`.
    instance_id: Uuid,
    /// How long after a poll started its result may connect calls without asking the database.
    lease: Duration,
    /// When the last successful load or poll started, in microseconds after `created` plus
    /// one; 0 when none (an atomic: every answer reads it).
    synced: AtomicU64,
    created: Instant,
    /// Whether the warning about a poll that read very many rows was given for the current run
    /// of such polls.
    large_poll_warned: AtomicBool,
    /// Whether every route keeps its caller's label and pairing's reference (a default whisper
    /// may name them), or only the routes of pairings that set call options.
    keep_names: bool,
}

/// One participant row as the feed returns it.
#[derive(sqlx::FromRow)]
struct FeedRow {
    pairing_id: Uuid,
    number: String,
    proxy_number: String,
    counterpart_number: String,
    counterpart_proxy: String,
    ends_at: Option<DateTime<Utc>>,
    label: Option<String>,
    reference: Option<String>,
    call_options: Option<Json<CallOptionsOverrides>>,
}

/// The columns of a [`FeedRow`], from `participants pa` joined with `pairings p`.
const FEED_COLUMNS: &str = "pa.pairing_id, pa.number, pa.proxy_number, pa.counterpart_number,
        pa.counterpart_proxy, upper(pa.active_during) AS ends_at, pa.label, p.reference,
        p.call_options";

fn digits(s: &str) -> Option<u64> {
    (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

impl RouteMirror {
    /// A mirror whose polls may connect calls for `lease` after they start.
    pub fn new(lease: Duration) -> Self {
        Self {
            state: RwLock::default(),
            loaded: AtomicBool::new(false),
            instance_id: Uuid::new_v4(),
            lease,
            synced: AtomicU64::new(0),
            created: Instant::now(),
            large_poll_warned: AtomicBool::new(false),
            keep_names: false,
        }
    }

    /// Keeps every route's caller label and pairing reference (for a default whisper).
    pub fn keeping_names(mut self, keep: bool) -> Self {
        self.keep_names = keep;
        self
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Whether the last successful poll started less than a lease ago.
    pub fn is_fresh(&self) -> bool {
        match self.synced.load(Ordering::Acquire) {
            0 => false,
            n => self.created.elapsed() < Duration::from_micros(n - 1).saturating_add(self.lease),
        }
    }

    /// The route for a call when memory alone may decide it: an active route, while the
    /// mirror is fresh. `None` means "ask the database".
    pub fn connect_from_memory(
        &self,
        caller: &str,
        proxy_number: &str,
        now: DateTime<Utc>,
    ) -> Option<Route> {
        if !self.is_fresh() {
            return None;
        }
        match self.lookup(caller, proxy_number, now) {
            route @ Route::Connect { .. } => Some(route),
            Route::Ended { .. } | Route::None => None,
        }
    }

    /// Whether the initial load has finished.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Routes currently held (participants of active pairings).
    pub fn len(&self) -> usize {
        self.state.read().map(|s| s.routes.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The route for a call from `caller` to `proxy_number`, if an active pairing has one.
    pub fn lookup(&self, caller: &str, proxy_number: &str, now: DateTime<Utc>) -> Route {
        let (Some(caller), Some(proxy)) = (digits(caller), digits(proxy_number)) else {
            return Route::None;
        };
        let state = match self.state.read() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        match state.routes.get(&(caller, proxy)) {
            Some(e) if e.ends_at > now => Route::Connect {
                pairing_id: PairingId::from_uuid(e.pairing_id),
                callee: PhoneNumber::from_trusted_digits(e.callee.to_string()),
                callee_proxy: PhoneNumber::from_trusted_digits(e.callee_proxy.to_string()),
                details: e.details.clone(),
            },
            Some(e) => Route::Ended {
                pairing_id: PairingId::from_uuid(e.pairing_id),
            },
            None => Route::None,
        }
    }

    /// Forgets a pairing's routes at once (it was closed through this instance): `routes` are its
    /// participants' (number, proxy number).
    pub fn forget_pairing(&self, id: PairingId, routes: &[(&str, &str)]) {
        let Ok(mut state) = self.state.write() else {
            return;
        };
        for (number, proxy) in routes {
            remove_route(&mut state.routes, number, proxy, id.as_uuid());
        }
    }

    /// Loads every active route. Streams the rows, so memory holds only the map.
    #[tracing::instrument(skip_all)]
    pub async fn load(&self, pool: &PgPool) -> Result<usize, MirrorError> {
        self.read_all(pool, false).await
    }

    /// Reads every active route; `replace`: instead of what memory holds (a reload), else beside
    /// it.
    async fn read_all(&self, pool: &PgPool, replace: bool) -> Result<usize, MirrorError> {
        let began = Instant::now();
        let (started, horizon) = Horizon::read(pool).await?;
        let mut routes = HashMap::new();
        let query = format!(
            "SELECT {FEED_COLUMNS}
               FROM participants pa
               JOIN pairings p ON p.id = pa.pairing_id
              WHERE upper(pa.active_during) > now()"
        );
        let mut rows = sqlx::query_as::<_, FeedRow>(sqlx::AssertSqlSafe(query)).fetch(pool);
        while let Some(row) = rows.try_next().await? {
            insert_row(&mut routes, row, self.keep_names);
        }
        drop(rows);
        let count = routes.len();
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            if !replace {
                // Changes that arrived by polling during the load are newer; keep them.
                for (k, v) in state.routes.drain() {
                    routes.insert(k, v);
                }
            }
            state.routes = routes;
        }
        self.synced(pool, began, started).await?;
        self.advance(horizon);
        self.loaded.store(true, Ordering::Release);
        Ok(count)
    }

    /// Marks the mirror as synced from `began` and tells the other instances (and ourselves,
    /// closing through this one) which database time it has read up to.
    async fn synced(
        &self,
        pool: &PgPool,
        began: Instant,
        seen_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let micros = began.saturating_duration_since(self.created).as_micros();
        self.synced.store(
            u64::try_from(micros).unwrap_or(u64::MAX - 1) + 1,
            Ordering::Release,
        );
        sqlx::query(
            "INSERT INTO route_mirrors (instance_id, seen_at, heartbeat_at)
             VALUES ($1, $2, clock_timestamp())
             ON CONFLICT (instance_id)
             DO UPDATE SET seen_at = EXCLUDED.seen_at, heartbeat_at = EXCLUDED.heartbeat_at",
        )
        .bind(self.instance_id)
        .bind(seen_at)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// The next poll reads the changes of the transactions not finished at `horizon`. Called
    /// only once this instance's heartbeat, written after reading up to `horizon`, committed:
    /// that commit waited for the WAL before it to be flushed (and, with synchronous
    /// replication, to reach a standby), so every transaction id below the horizon that is not
    /// in its running list is on record, and a server that takes over after a crash or a
    /// failover does not give it out again.
    fn advance(&self, horizon: Horizon) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.since = Some(horizon);
    }

    /// Takes this instance out of `route_mirrors` (at shutdown), so that nobody waits for it.
    pub async fn leave(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        self.synced.store(0, Ordering::Release);
        sqlx::query("DELETE FROM route_mirrors WHERE instance_id = $1")
            .bind(self.instance_id)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Applies the pairings changed since the previous poll. Returns how many changed.
    pub async fn poll(&self, pool: &PgPool) -> Result<usize, MirrorError> {
        // Before the first load there is nothing to bring up to date: the load reads it all.
        let Some(since) = self.state.read().map(|s| s.since.clone()).unwrap_or(None) else {
            return Ok(0);
        };
        let began = Instant::now();
        let (polled_at, horizon) = Horizon::read(pool).await?;
        if horizon.server != since.server {
            // Another server, or the same one restarted (a failover, a switchover, a crash): it
            // may give out again transaction ids the previous one gave out but never wrote, so
            // the feed read by transaction id could miss changes. Read everything again.
            tracing::warn!(
                "the database server changed (failover, switchover or restart); reloading the routes"
            );
            metrics::counter!("route_mirror_reloads_total").increment(1);
            return self.read_all(pool, true).await;
        }
        let query = format!(
            "SELECT {FEED_COLUMNS}
               FROM pairings p
               JOIN participants pa ON pa.pairing_id = p.id
              WHERE p.changed_xid >= $1::text::xid8
                 OR p.changed_xid = ANY($2::bigint[]::text[]::xid8[])"
        );
        let rows: Vec<FeedRow> = sqlx::query_as(sqlx::AssertSqlSafe(query))
            .bind(since.next.to_string())
            .bind(&since.running)
            .fetch_all(pool)
            .await?;
        if rows.len() > LARGE_POLL_ROWS {
            // Once for each run of such polls.
            if !self.large_poll_warned.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    rows = rows.len(),
                    "a poll of the route feed read very many changes: many pairings closed or \
                     re-timed at once, or a transaction that changed many pairings committed"
                );
            }
        } else {
            self.large_poll_warned.store(false, Ordering::Release);
        }
        let changed = rows.len();
        {
            let now = Utc::now();
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            for row in rows {
                if row.ends_at.is_some_and(|e| e > now) {
                    insert_row(&mut state.routes, row, self.keep_names);
                } else {
                    remove_route(
                        &mut state.routes,
                        &row.number,
                        &row.proxy_number,
                        row.pairing_id,
                    );
                }
            }
            // Drop what expired by the clock alone, now and then: it walks every route under the
            // write lock, and lookups judge expiry by themselves meanwhile.
            if state.pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                state.routes.retain(|_, e| e.ends_at > now);
                state.pruned = Some(Instant::now());
            }
        }
        self.synced(pool, began, polled_at).await?;
        self.advance(horizon);
        Ok(changed / 2)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The connection reached a standby (during a failover or a switchover, before the proxy
    /// in front of the cluster follows the new leader): the mirror waits for the leader rather
    /// than read from a server about to be left behind.
    #[error("the database server is a standby (in recovery); waiting for the leader")]
    Standby,
}

/// Where the change feed stands at a moment: the transactions whose changes may not have been
/// visible then. Every other transaction had committed or aborted, so what it wrote was visible
/// to every statement that began after that moment.
#[derive(Debug, Clone)]
struct Horizon {
    /// The first transaction id not yet given out (`pg_snapshot_xmax`).
    next: i64,
    /// Transactions below `next` still running (`pg_snapshot_xip`).
    running: Vec<i64>,
    /// Which server gave out these ids: its postmaster's start time, which differs from node to
    /// node of a cluster and changes when a server restarts.
    server: DateTime<Utc>,
}

impl Horizon {
    /// The database's time now, and its horizon; an error on a standby.
    async fn read(pool: &PgPool) -> Result<(DateTime<Utc>, Self), MirrorError> {
        let (at, next, running, server, standby): (
            DateTime<Utc>,
            i64,
            Vec<i64>,
            DateTime<Utc>,
            bool,
        ) = sqlx::query_as(
            "SELECT clock_timestamp(), pg_snapshot_xmax(s)::text::bigint,
                    ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(s) AS x),
                    pg_postmaster_start_time(), pg_is_in_recovery()
               FROM pg_current_snapshot() AS s",
        )
        .fetch_one(pool)
        .await?;
        if standby {
            return Err(MirrorError::Standby);
        }
        Ok((
            at,
            Self {
                next,
                running,
                server,
            },
        ))
    }
}

/// Waits until no live instance can still connect calls from a copy of the routes older than
/// now: call it after committing a change that stops or shortens a pairing, before answering.
///
/// Returns once every instance that polled within the last `lease` has polled again since this
/// call began, or after `lease` (and a little): by then an instance that has not polled no
/// longer connects calls from memory. A database error only makes it wait the whole lease.
pub async fn await_mirrors(pool: &PgPool, lease: Duration) {
    let deadline = Instant::now() + lease + Duration::from_millis(50);
    let after: DateTime<Utc> = match sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await
    {
        Ok(t) => t,
        Err(_) => {
            tokio::time::sleep_until(deadline.into()).await;
            return;
        }
    };
    while Instant::now() < deadline {
        let behind: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "SELECT count(*) FROM route_mirrors
              WHERE seen_at < $1 AND heartbeat_at > clock_timestamp() - make_interval(secs => $2)",
        )
        .bind(after)
        .bind(lease.as_secs_f64())
        .fetch_one(pool)
        .await;
        if matches!(behind, Ok(0)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Removes the route of `number` on `proxy` if it is still this pairing's (a newer pairing may
/// hold the same combination by now).
fn remove_route(
    routes: &mut HashMap<(u64, u64), Entry>,
    number: &str,
    proxy: &str,
    pairing_id: Uuid,
) {
    if let (Some(caller), Some(proxy)) = (digits(number), digits(proxy))
        && routes
            .get(&(caller, proxy))
            .is_some_and(|e| e.pairing_id == pairing_id)
    {
        routes.remove(&(caller, proxy));
    }
}

fn insert_row(routes: &mut HashMap<(u64, u64), Entry>, row: FeedRow, keep_names: bool) {
    let (Some(caller), Some(proxy), Some(callee), Some(callee_proxy), Some(ends_at)) = (
        digits(&row.number),
        digits(&row.proxy_number),
        digits(&row.counterpart_number),
        digits(&row.counterpart_proxy),
        row.ends_at,
    ) else {
        return;
    };
    let wanted = row.call_options.is_some()
        || (keep_names && (row.label.is_some() || row.reference.is_some()));
    let details = wanted.then(|| {
        Arc::new(RouteDetails {
            options: row.call_options.map(|j| j.0).unwrap_or_default(),
            caller_label: row.label,
            reference: row.reference,
        })
    });
    routes.insert(
        (caller, proxy),
        Entry {
            pairing_id: row.pairing_id,
            callee,
            callee_proxy,
            ends_at,
            details,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_active_routes_and_reports_ended_ones() {
        let mirror = RouteMirror::new(Duration::from_secs(2));
        let id = Uuid::now_v7();
        let now = Utc::now();
        {
            let mut state = mirror.state.write().unwrap();
            insert_row(
                &mut state.routes,
                FeedRow {
                    pairing_id: id,
                    number: "16465550101".into(),
                    proxy_number: "12125550123".into(),
                    counterpart_number: "16465550102".into(),
                    counterpart_proxy: "12125550124".into(),
                    ends_at: Some(now + chrono::Duration::seconds(60)),
                    label: Some("driver".into()),
                    reference: None,
                    call_options: None,
                },
                false,
            );
        }
        match mirror.lookup("16465550101", "12125550123", now) {
            Route::Connect {
                callee,
                callee_proxy,
                details,
                ..
            } => {
                assert_eq!(callee.expose(), "16465550102");
                assert_eq!(callee_proxy.expose(), "12125550124");
                assert_eq!(details, None, "no options, and no default whisper to name");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            mirror.lookup(
                "16465550101",
                "12125550123",
                now + chrono::Duration::seconds(61)
            ),
            Route::Ended { .. }
        ));
        assert_eq!(
            mirror.lookup("16465550109", "12125550123", now),
            Route::None
        );
        assert_eq!(mirror.lookup("withheld", "12125550123", now), Route::None);
        mirror.forget_pairing(PairingId::from_uuid(id), &[("16465550101", "12125550123")]);
        assert_eq!(
            mirror.lookup("16465550101", "12125550123", now),
            Route::None
        );
    }
}
