//! Integration tests: the real application over HTTP, against the real Postgres server.

mod allocation;
mod calls;
mod helpers;
mod invariants;
mod numbers;
mod pairings;
mod webhooks;
