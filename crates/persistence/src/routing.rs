//! The operations that make a route true on every instance: resolving an inbound call's route,
//! and closing or re-timing a pairing. The HTTP handlers call each once; the rules live here, not
//! in the handlers:
//!
//! - **Resolve** (the answer webhook): an active route in memory connects at once while the
//!   route mirror is fresh; anything else (a miss, an ended route, a stale copy) is asked of the
//!   database, for at most the answer's database timeout; when the database counts as down, or
//!   does not answer in time, memory decides alone, so that calls keep connecting through an
//!   outage.
//! - **Close / change expiry**: the change is committed, this instance's copy forgets a closed
//!   pairing at once, and the operation returns only once every live instance has read the
//!   change (or, for one that stopped polling, its lease has run out): no instance connects a
//!   call to a pairing closed before the close returned.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use voice_proxy_domain::PairingId;
use voice_proxy_domain::pairing::Pairing;
use voice_proxy_domain::routing::Route;

use crate::callbacks::Outbox;
use crate::durable::health::DatabaseHealth;
use crate::durable::load_ledger::LoadLedger;
use crate::durable::route_mirror::{RouteMirror, await_mirrors};
use crate::pairings::{self, ChangePairingError, PairingChange};

/// What routing needs: the database (a worker's pool), the instance's route mirror, the
/// database's health, and the outbox that tells the marketplace of closes and expiry changes.
#[derive(Clone)]
pub struct Routing {
    pool: PgPool,
    mirror: Arc<RouteMirror>,
    health: Arc<DatabaseHealth>,
    outbox: Arc<Outbox>,
    /// How long an answer waits for the database before routing from memory.
    db_timeout: Duration,
}

impl Routing {
    pub fn new(
        pool: PgPool,
        mirror: Arc<RouteMirror>,
        health: Arc<DatabaseHealth>,
        outbox: Arc<Outbox>,
        db_timeout: Duration,
    ) -> Self {
        Self {
            pool,
            mirror,
            health,
            outbox,
            db_timeout,
        }
    }

    /// The route of a call from `caller` to the proxy number `dialled`.
    pub async fn resolve(&self, caller: &str, dialled: &str) -> Route {
        if let Some(route) = self.mirror.connect_from_memory(caller, dialled, Utc::now()) {
            metrics::counter!("answer_route_source_total", "source" => "memory").increment(1);
            return route;
        }
        if !self.health.is_down() {
            let lookup = pairings::route(&self.pool, caller, dialled);
            match tokio::time::timeout(self.db_timeout, lookup).await {
                Ok(Ok(route)) => {
                    metrics::counter!("answer_route_source_total", "source" => "database")
                        .increment(1);
                    return route;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "routing lookup failed; routing from memory")
                }
                Err(_) => tracing::warn!("routing lookup timed out; routing from memory"),
            }
            self.health.mark_down();
        }
        metrics::counter!("answer_route_source_total", "source" => "memory_database_down")
            .increment(1);
        self.mirror.lookup(caller, dialled, Utc::now())
    }

    /// Closes a pairing (see [`pairings::close`]); returns once no instance routes it any more.
    /// `None` if there is no such pairing.
    pub async fn close(
        &self,
        ledger: &LoadLedger,
        id: PairingId,
    ) -> Result<Option<Pairing>, sqlx::Error> {
        let Some(pairing) = pairings::close(&self.pool, ledger, &self.outbox, id).await? else {
            return Ok(None);
        };
        // This instance's routes in memory forget it now; the other instances' before we return.
        let routes = pairing
            .participants
            .each_ref()
            .map(|p| (p.number.expose(), p.proxy_number.expose()));
        self.mirror.forget_pairing(id, &routes);
        await_mirrors(&self.pool, self.mirror.lease()).await;
        Ok(Some(pairing))
    }

    /// Changes an active pairing's expiry or call options (see [`pairings::change`]); returns once
    /// every instance routes by the change (an expiry brought forward must hold everywhere, and
    /// a call placed after the change gets the new options).
    pub async fn change(
        &self,
        id: PairingId,
        change: &PairingChange,
        max_ttl: chrono::Duration,
    ) -> Result<Pairing, ChangePairingError> {
        let pairing = pairings::change(&self.pool, &self.outbox, id, change, max_ttl).await?;
        await_mirrors(&self.pool, self.mirror.lease()).await;
        Ok(pairing)
    }
}
