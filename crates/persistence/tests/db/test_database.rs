//! A database of its own for each test, on the real Postgres server (`TEST_DATABASE_URL`,
//! 127.0.0.1:5432 by default), and the records the tests write. Shared by the persistence tests
//! and the server's API tests (which include this file by path).

#![allow(dead_code)] // each test binary uses part of it

use serde_json::json;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use uuid::Uuid;
use voice_proxy_domain::{CallRecord, EventRecord};
use voice_proxy_persistence::migrate;
use voice_proxy_persistence::records::Record;

/// The server that holds the test databases.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Creates an empty database and returns its URL.
pub async fn create_database() -> String {
    let name = format!("vp_test_{}", Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&server_url())
        .await
        .expect("Postgres must answer at TEST_DATABASE_URL (default 127.0.0.1:5432)");
    conn.execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .await
        .expect("create test database");
    let base = server_url();
    let (prefix, _) = base.rsplit_once('/').expect("URL with a database");
    format!("{prefix}/{name}")
}

/// A new database, migrated, and a pool of `connections` to it; with one connection, views of
/// the session (`pg_prepared_statements`, the statistics it publishes) show what the tests ran.
pub async fn migrated_database(connections: u32) -> (String, PgPool) {
    let url = create_database().await;
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("a database URL");
    let mut conn = PgConnection::connect_with(&options)
        .await
        .expect("connect to the test database");
    migrate::run(&mut conn).await.expect("migrate");
    let _ = conn.close().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(options)
        .await
        .expect("a pool");
    (url, pool)
}

/// An answered call's record, as the answer webhook makes it, for `conversation`.
pub fn call_record(conversation: &str) -> Record {
    Record::Call(CallRecord {
        id: voice_proxy_domain::CallId::new(),
        conversation_uuid: Some(conversation.to_owned()),
        uuid: Some(format!("{conversation}-in")),
        pairing_id: None,
        caller: None,
        proxy_number: None,
        callee: None,
        outcome: voice_proxy_domain::CallOutcome::Anonymous,
        started_at: chrono::Utc::now(),
        endpoint_type: None,
    })
}

/// An event of the inbound leg of `conversation`, `second` seconds into the minute.
pub fn event_record(conversation: &str, status: &str, second: u32) -> Record {
    Record::Event(EventRecord {
        payload: json!({
            "uuid": format!("{conversation}-in"),
            "conversation_uuid": conversation,
            "status": status,
            "direction": "inbound",
            "from": "12125550000",
            "to": "16465550000",
            "timestamp": format!("2026-01-01T00:00:{second:02}.000Z"),
        }),
        received_at: chrono::Utc::now(),
    })
}
