//! An in-memory copy of every active route, so that calls keep being connected while the
//! database is unreachable.
//!
//! It is loaded once at start-up and then follows the pairings' change feed (`changed_at`), so it
//! learns of pairings created, closed or re-timed through any instance. It is only ever a
//! fallback: while the database answers, routing asks the database.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::PgPool;
use uuid::Uuid;
use voice_proxy_domain::{PairingId, PhoneNumber};

use crate::pairings::Route;

/// How far back each poll looks before the previous one, to catch transactions that stamped
/// `changed_at` before that poll but committed after it.
const POLL_OVERLAP_SECONDS: f64 = 5.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    pairing_id: Uuid,
    callee: u64,
    callee_proxy: u64,
    ends_at: DateTime<Utc>,
}

#[derive(Default)]
struct State {
    routes: HashMap<(u64, u64), Entry>,
    /// The database time from which the next poll reads changes.
    since: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct RouteMirror {
    state: RwLock<State>,
    loaded: AtomicBool,
}

/// One participant row as the feed returns it.
type FeedRow = (Uuid, String, String, String, String, Option<DateTime<Utc>>);

fn digits(s: &str) -> Option<u64> {
    (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

impl RouteMirror {
    pub fn new() -> Self {
        Self::default()
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
            },
            Some(e) => Route::Ended {
                pairing_id: PairingId::from_uuid(e.pairing_id),
            },
            None => Route::None,
        }
    }

    /// Forgets a pairing at once (it was closed through this instance).
    pub fn forget_pairing(&self, id: PairingId) {
        if let Ok(mut state) = self.state.write() {
            state.routes.retain(|_, e| e.pairing_id != id.as_uuid());
        }
    }

    /// Loads every active route. Streams the rows, so memory holds only the map.
    #[tracing::instrument(skip_all)]
    pub async fn load(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        let started: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(pool)
            .await?;
        let mut routes = HashMap::new();
        let mut rows = sqlx::query_as::<_, FeedRow>(
            "SELECT pairing_id, number, proxy_number, counterpart_number, counterpart_proxy,
                    upper(active_during)
               FROM participants
              WHERE upper(active_during) > now()",
        )
        .fetch(pool);
        while let Some(row) = rows.try_next().await? {
            insert_row(&mut routes, &row);
        }
        drop(rows);
        let count = routes.len();
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            // Changes that arrived by polling during the load are newer; keep them.
            for (k, v) in state.routes.drain() {
                routes.insert(k, v);
            }
            state.routes = routes;
            state.since = Some(started);
        }
        self.loaded.store(true, Ordering::Release);
        Ok(count)
    }

    /// Applies the pairings changed since the previous poll. Returns how many changed.
    pub async fn poll(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        let since = self
            .state
            .read()
            .map(|s| s.since)
            .unwrap_or(None)
            .unwrap_or_else(Utc::now);
        let polled_at: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(pool)
            .await?;
        let rows: Vec<FeedRow> = sqlx::query_as(
            "SELECT pa.pairing_id, pa.number, pa.proxy_number, pa.counterpart_number,
                    pa.counterpart_proxy, upper(pa.active_during)
               FROM pairings p
               JOIN participants pa ON pa.pairing_id = p.id
              WHERE p.changed_at > $1 - make_interval(secs => $2)",
        )
        .bind(since)
        .bind(POLL_OVERLAP_SECONDS)
        .fetch_all(pool)
        .await?;
        let now = Utc::now();
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        for row in &rows {
            let ends_at = row.5;
            if ends_at.is_some_and(|e| e > now) {
                insert_row(&mut state.routes, row);
            } else if let (Some(caller), Some(proxy)) = (digits(&row.1), digits(&row.2))
                && state
                    .routes
                    .get(&(caller, proxy))
                    .is_some_and(|e| e.pairing_id == row.0)
            {
                state.routes.remove(&(caller, proxy));
            }
        }
        // Drop what expired by the clock alone.
        state.routes.retain(|_, e| e.ends_at > now);
        state.since = Some(polled_at);
        Ok(rows.len() / 2)
    }
}

fn insert_row(routes: &mut HashMap<(u64, u64), Entry>, row: &FeedRow) {
    let (pairing_id, number, proxy, counterpart, counterpart_proxy, ends_at) = row;
    let (Some(caller), Some(proxy), Some(callee), Some(callee_proxy), Some(ends_at)) = (
        digits(number),
        digits(proxy),
        digits(counterpart),
        digits(counterpart_proxy),
        *ends_at,
    ) else {
        return;
    };
    routes.insert(
        (caller, proxy),
        Entry {
            pairing_id: *pairing_id,
            callee,
            callee_proxy,
            ends_at,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_active_routes_and_reports_ended_ones() {
        let mirror = RouteMirror::new();
        let id = Uuid::now_v7();
        let now = Utc::now();
        {
            let mut state = mirror.state.write().unwrap();
            insert_row(
                &mut state.routes,
                &(
                    id,
                    "16465550101".into(),
                    "12125550123".into(),
                    "16465550102".into(),
                    "12125550124".into(),
                    Some(now + chrono::Duration::seconds(60)),
                ),
            );
        }
        match mirror.lookup("16465550101", "12125550123", now) {
            Route::Connect {
                callee,
                callee_proxy,
                ..
            } => {
                assert_eq!(callee.expose(), "16465550102");
                assert_eq!(callee_proxy.expose(), "12125550124");
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
        mirror.forget_pairing(PairingId::from_uuid(id));
        assert_eq!(
            mirror.lookup("16465550101", "12125550123", now),
            Route::None
        );
    }
}
