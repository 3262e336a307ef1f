//! The in-memory copy of the routes: how often it follows the change feed, and how long it may
//! connect calls on its own.

use std::time::Duration;

use anyhow::bail;

use super::env::Env;

#[derive(Debug, Clone)]
pub struct RouteMirrorSettings {
    /// `ROUTE_POLL_INTERVAL_MS`: how often it follows the pairings' change feed (besides at once
    /// when Postgres notifies a change).
    pub poll_interval: Duration,
    /// `ROUTE_MIRROR_LEASE_MS`: how long after a poll started it may connect calls on its own;
    /// also the longest a close waits for an instance that has stopped polling.
    pub lease: Duration,
}

impl RouteMirrorSettings {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let poll_interval = Duration::from_millis(env.parse("ROUTE_POLL_INTERVAL_MS", 500)?);
        let lease = Duration::from_millis(env.parse("ROUTE_MIRROR_LEASE_MS", 2000)?);
        if lease <= poll_interval {
            bail!(
                "ROUTE_MIRROR_LEASE_MS ({} ms) must be longer than ROUTE_POLL_INTERVAL_MS ({} ms)",
                lease.as_millis(),
                poll_interval.as_millis()
            );
        }
        Ok(Self {
            poll_interval,
            lease,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::env::with;
    use super::*;

    #[test]
    fn the_lease_outlasts_a_poll() {
        let err = with(
            &[
                ("ROUTE_POLL_INTERVAL_MS", "2000"),
                ("ROUTE_MIRROR_LEASE_MS", "1000"),
            ],
            |env| RouteMirrorSettings::from_env(env).map(drop),
        )
        .unwrap_err();
        assert!(err.to_string().contains("ROUTE_MIRROR_LEASE_MS"), "{err}");
    }
}
