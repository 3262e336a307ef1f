//! The spool against a real database: draining the segment being appended to keeps that file
//! (one file a segment, not one a drain), each record reaches Postgres once, and a clean exit
//! leaves no file behind; and the database counts as down until the drainer's probe reaches it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;
use voice_proxy_persistence::durable::recorder::Recorder;
use voice_proxy_persistence::durable::spool::{Spool, drain_forever};

use crate::test_database::{call_record, migrated_database};

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn migrated_pool() -> PgPool {
    migrated_database(5).await.1
}

async fn stored_calls(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM calls")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn draining_keeps_the_segment_in_use_and_stores_each_record_once() {
    let pool = migrated_pool().await;
    let dir = std::env::temp_dir().join(format!("vp-spool-db-{}", Uuid::new_v4().simple()));
    let spool = Spool::open(&dir, 1 << 20).unwrap();

    spool
        .append(vec![call_record("CON-1"), call_record("CON-2")])
        .unwrap();
    let first = files(&dir);
    assert_eq!(first.len(), 1);
    assert_eq!(spool.drain(&pool).await.unwrap(), 2);
    assert_eq!(spool.depth(), 0);

    spool.append(vec![call_record("CON-3")]).unwrap();
    assert_eq!(spool.drain(&pool).await.unwrap(), 1, "only the new record");
    assert_eq!(spool.drain(&pool).await.unwrap(), 0, "nothing twice");
    assert_eq!(
        files(&dir),
        first,
        "the appends after a drain went to the same file"
    );
    assert_eq!(stored_calls(&pool).await, 3);

    spool.seal_for_exit();
    assert_eq!(spool.drain(&pool).await.unwrap(), 0);
    assert!(
        files(&dir).is_empty(),
        "a clean exit leaves no segment: {:?}",
        files(&dir)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn full_segments_are_deleted_once_drained_and_a_restart_replays_the_rest_once() {
    let pool = migrated_pool().await;
    let dir = std::env::temp_dir().join(format!("vp-spool-db-{}", Uuid::new_v4().simple()));
    // 64 KiB segments: a few hundred records fill several.
    let spool = Spool::open(&dir, 64 * 1024).unwrap();
    let mut appended = 0;
    for round in 0..6 {
        for i in 0..100 {
            spool
                .append(vec![call_record(&format!("CON-{round}-{i}"))])
                .unwrap();
            appended += 1;
        }
        spool.drain(&pool).await.unwrap();
    }
    assert_eq!(
        files(&dir).len(),
        1,
        "the full segments were deleted once drained; the one in use stays"
    );
    assert_eq!(spool.depth(), 0);
    assert_eq!(stored_calls(&pool).await, appended);
    // A restart replays whatever segment is left, which may store nothing new.
    drop(spool);
    let reopened = Spool::open(&dir, 64 * 1024).unwrap();
    reopened.drain(&pool).await.unwrap();
    assert_eq!(stored_calls(&pool).await, appended);
    assert!(files(&dir).is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_database_counts_as_down_until_the_drainers_probe_reaches_it() {
    let pool = migrated_pool().await;
    let dir = std::env::temp_dir().join(format!("vp-spool-db-{}", Uuid::new_v4().simple()));
    let spool = Arc::new(Spool::open(&dir, 64 * 1024).unwrap());
    spool.health().mark_down();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        spool.health().is_down(),
        "time alone does not send callers back to a database that failed"
    );

    // A drainer whose database does not answer keeps it down.
    let nowhere = voice_proxy_persistence::connect_lazy(
        "postgres://postgres@127.0.0.1:1/none".parse().unwrap(),
        &voice_proxy_persistence::PoolSettings {
            max_connections: 1,
            acquire_timeout: Duration::from_millis(100),
        },
    );
    let every = Duration::from_millis(50);
    let blind = tokio::spawn(drain_forever(spool.clone(), nowhere, every));
    tokio::time::sleep(Duration::from_millis(500)).await;
    blind.abort();
    assert!(spool.health().is_down());

    let drainer = tokio::spawn(drain_forever(spool.clone(), pool, every));
    let started = Instant::now();
    while spool.health().is_down() && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drainer.abort();
    assert!(!spool.health().is_down(), "the probe found the database");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_drained_segment_in_use_is_deleted_once_old_enough() {
    let pool = migrated_pool().await;
    let dir = std::env::temp_dir().join(format!("vp-spool-db-{}", Uuid::new_v4().simple()));
    let spool = Spool::open(&dir, 1 << 20).unwrap();
    spool.append(vec![call_record("CON-old")]).unwrap();
    spool.drain(&pool).await.unwrap();
    spool.retire_drained_segment(Duration::from_secs(3600));
    spool.drain(&pool).await.unwrap();
    assert_eq!(files(&dir).len(), 1, "younger than the age given: kept");
    spool.retire_drained_segment(Duration::ZERO);
    spool.drain(&pool).await.unwrap();
    assert!(files(&dir).is_empty(), "{:?}", files(&dir));
    // Appends go on in a new segment.
    spool.append(vec![call_record("CON-new")]).unwrap();
    assert_eq!(spool.drain(&pool).await.unwrap(), 1);
    assert_eq!(stored_calls(&pool).await, 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_segment_file_gone_from_disk_does_not_stop_the_drain() {
    let pool = migrated_pool().await;
    let dir = std::env::temp_dir().join(format!("vp-spool-db-{}", Uuid::new_v4().simple()));
    drop({
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        spool.append(vec![call_record("CON-gone")]).unwrap();
        spool
    });
    let reopened = Spool::open(&dir, 1 << 20).unwrap();
    for name in files(&dir) {
        std::fs::remove_file(dir.join(name)).unwrap();
    }
    reopened.append(vec![call_record("CON-after")]).unwrap();
    reopened.drain(&pool).await.unwrap();
    assert_eq!(
        stored_calls(&pool).await,
        1,
        "the record after it reached Postgres"
    );
    assert!(!reopened.health().is_down());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn appends_and_drains_at_once_store_every_record_once_with_or_without_copies() {
    let pool = migrated_pool().await;
    let dir = std::env::temp_dir().join(format!("vp-spool-db-{}", Uuid::new_v4().simple()));
    // Small segments fill while being drained; with room for about 10 copies, most records go
    // to segments without one and are read back from their files, skipping what was drained.
    let spool = Arc::new(
        Spool::open(&dir, 64 * 1024)
            .unwrap()
            .with_memory_limit(2_500),
    );
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                for i in 0..150 {
                    spool
                        .append(vec![call_record(&format!("CON-{t}-{i}"))])
                        .unwrap();
                }
            })
        })
        .collect();
    let mut drained = 0;
    while writers.iter().any(|w| !w.is_finished()) {
        let n = spool.drain(&pool).await.unwrap();
        if n == 0 {
            // Nothing new yet: leave the core to the writers (and to the tests beside this one).
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drained += n;
    }
    for w in writers {
        w.join().unwrap();
    }
    drained += spool.drain(&pool).await.unwrap();
    assert_eq!(drained, 600, "each record drained once");
    assert_eq!(spool.depth(), 0);
    assert_eq!(stored_calls(&pool).await, 600);
    spool.seal_for_exit();
    assert_eq!(spool.drain(&pool).await.unwrap(), 0);
    assert!(files(&dir).is_empty(), "{:?}", files(&dir));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_recorder_has_a_segment_ready_before_the_first_call() {
    let pool = migrated_pool().await;
    let dir = std::env::temp_dir().join(format!("vp-spool-db-{}", Uuid::new_v4().simple()));
    let size = 1 << 20;
    let recorder = Recorder::start(
        pool.clone(),
        &dir,
        size,
        1 << 20,
        Default::default(),
        Default::default(),
    )
    .unwrap();
    let ready = files(&dir);
    assert_eq!(ready.len(), 1, "one segment, prepared at start");
    assert_eq!(std::fs::metadata(dir.join(&ready[0])).unwrap().len(), size);
    recorder.record(call_record("CON-first")).await.unwrap();
    assert_eq!(files(&dir), ready, "the first call went into it");
    let spool = recorder.spool().clone();
    drop(recorder);
    spool.seal_for_exit();
    spool.drain(&pool).await.unwrap();
    assert_eq!(stored_calls(&pool).await, 1);
    std::fs::remove_dir_all(dir).unwrap();
}
