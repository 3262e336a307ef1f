//! The recorder's reads of `call_events` are index lookups even when Postgres has no statistics
//! of the table: it then guesses that each of the batch's conversations matches 0.5% of the
//! rows, and for a batch of many conversations a query asking for them all at once was planned
//! as a scan of the whole table, on every batch.

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use voice_proxy_persistence::callbacks::Outbox;
use voice_proxy_persistence::records::{Record, write_batch};

use crate::test_database::{call_record, create_database, event_record, migrated_database};

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
    // One connection, so that its statistics can be published on demand (see `seq_scans`).
    let (url, pool) = migrated_database(1).await;
    let mut conn = PgConnection::connect(&url).await.unwrap();
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
    let calls: Vec<Record> = conversations.iter().map(|c| call_record(c)).collect();
    write_batch(&pool, &Outbox::new(), &calls).await.unwrap();
    let events: Vec<Record> = conversations
        .iter()
        .flat_map(|c| {
            [
                event_record(c, "started", 1),
                event_record(c, "answered", 3),
            ]
        })
        .collect();
    let new = write_batch(&pool, &Outbox::new(), &events).await.unwrap();
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
