//! Persistence against the real Postgres server, without the HTTP application: the spool and
//! its drainer, and the plans Postgres makes for the create path's and the recorder's
//! statements. Each test has a database of its own.

mod plans;
mod recorder_plans;
mod spool;
mod test_database;
