//! Integration tests: the real application over HTTP, against the real Postgres server.

mod allocation;
mod api_keys;
mod binary;
mod callback_faults;
mod callbacks;
mod calls;
mod change_feed;
mod failover;
mod helpers;
mod hygiene;
mod invariants;
mod numbers;
mod observability;
mod openapi;
mod pairings;
mod privacy;
mod private_pg;
mod receiver;
mod resilience;
mod retention;
mod route_sharing;
mod signatures;
mod spool_safety;
mod stalled;
mod vonage_traffic;
mod webhooks;
