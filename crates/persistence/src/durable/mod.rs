//! The in-process machinery that keeps the call path answering and nothing acknowledged lost,
//! whatever the database does:
//!
//! - [`recorder`]: the front door for call records and events; batches them, writes events to
//!   Postgres and call records through the spool;
//! - [`spool`]: the local, fsynced write-ahead file of records on their way to Postgres, and its
//!   drainer;
//! - [`writer`]: writes a batch so that a record Postgres refuses never holds back the others;
//! - [`dead_letter`]: the file of records Postgres refused, its replay and its retention;
//! - [`health`]: whether the database counts as down, shared by all of the above and the answer
//!   webhook;
//! - [`route_mirror`]: the in-memory copy of every active route, following the pairings' change
//!   feed;
//! - [`load_ledger`]: the pool numbers' load counter changes not yet written.
//!
//! Each talks to Postgres only through the store's modules (`crate::records`, ...) or its own
//! statements, and nothing outside reaches into them but through these interfaces.

pub mod dead_letter;
pub mod health;
pub mod load_ledger;
pub mod recorder;
pub mod route_mirror;
pub mod spool;
pub mod writer;
