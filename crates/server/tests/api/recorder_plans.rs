//! The recorder's reads of `call_events` are index lookups even when Postgres has no statistics
//! of the table: it then guesses that each of the batch's conversations matches 0.5% of the
//! rows, and for a batch of many conversations a query asking for them all at once was planned
//! as a scan of the whole table, on every batch.

use chrono::Utc;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;
use voice_proxy_persistence::migrate;
use voice_proxy_persistence::recorder::{CallRecord, EventRecord, Record, write_batch};

use crate::helpers::create_database;

fn call(conversation: &str) -> Record {
    Record::Call(CallRecord {
        id: Uuid::now_v7(),
        conversation_uuid: Some(conversation.to_owned()),
        uuid: Some(format!("{conversation}-in")),
        pairing_id: None,
        caller: None,
        proxy_number: None,
        callee: None,
        outcome: "anonymous".into(),
        started_at: Utc::now(),
    })
}

fn event(conversation: &str, status: &str, second: u32) -> Record {
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
        received_at: Utc::now(),
    })
}

/// Sequential scans of `call_events` so far, as Postgres counts them. `pool` has one connection,
/// the one that ran the batches: it is told to publish its counts first.
async fn seq_scans(pool: &PgPool) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'call_events'")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_of_many_conversations_looks_each_up_without_planner_statistics() {
    let url = create_database().await;
    let options: PgConnectOptions = url.parse().unwrap();
    let mut conn = PgConnection::connect_with(&options).await.unwrap();
    migrate::run(&mut conn).await.unwrap();
    // One connection, so that its statistics can be published on demand (see `seq_scans`).
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    // call_events holds the events of many other conversations, and Postgres has no statistics
    // of it (never analyzed: autovacuum is off for it here, as it may be on other servers).
    sqlx::query("ALTER TABLE call_events SET (autovacuum_enabled = off)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO call_events (dedup_key, conversation_uuid, leg_uuid, status, payload)
         SELECT 'k' || g, 'CON-other-' || (g / 7), 'L' || g, 'ringing', '{}'::jsonb
           FROM generate_series(1, 200000) g",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let analyzed: Option<i64> = sqlx::query_scalar(
        "SELECT analyze_count + autoanalyze_count FROM pg_stat_user_tables
          WHERE relname = 'call_events'",
    )
    .fetch_optional(&mut conn)
    .await
    .unwrap();
    assert_eq!(analyzed.unwrap_or(0), 0);

    // One batch of new calls and one of their events, 64 conversations each, as under load.
    let conversations: Vec<String> = (0..64).map(|i| format!("CON-late-{i}")).collect();
    let before = seq_scans(&pool).await;
    let calls: Vec<Record> = conversations.iter().map(|c| call(c)).collect();
    write_batch(&pool, &calls).await.unwrap();
    let events: Vec<Record> = conversations
        .iter()
        .flat_map(|c| [event(c, "started", 1), event(c, "answered", 3)])
        .collect();
    let new = write_batch(&pool, &events).await.unwrap();
    assert!(new.iter().all(|n| *n));
    let after = seq_scans(&pool).await;
    assert_eq!(
        after - before,
        0,
        "a batch scanned the whole of call_events instead of looking its conversations up"
    );
    // The events were folded into their calls all the same.
    let answered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM calls WHERE conversation_uuid LIKE 'CON-late-%' AND status = 'answered'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(answered, 64);
    pool.close().await;
    let _ = conn.close().await;
}

#[tokio::test]
async fn the_service_sessions_run_without_jit() {
    let url = create_database().await;
    let options: PgConnectOptions = url.parse().unwrap();
    let pool = voice_proxy_persistence::connect_lazy(options, &Default::default());
    let jit: String = sqlx::query_scalar("SHOW jit")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jit, "off");
    pool.close().await;
}
