//! The spool on a bad disk: stalled, full, shared with others, or refused by Postgres. The answer
//! never waits long, the files are private, memory is bounded, and the instance says when it
//! cannot keep what it is given.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, create_database, proxy_of, spawn_app_on, spawn_app_with, wait_until,
};
use crate::private_pg::PrivatePostgres;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn temp_spool() -> PathBuf {
    std::env::temp_dir().join(format!("vp-spool-{}", uuid::Uuid::new_v4().simple()))
}

async fn answer_timed(app: &TestApp, to: &str, conversation: &str) -> (Value, Duration) {
    let started = Instant::now();
    let r = app
        .client
        .get(app.url("/webhooks/answer"))
        .query(&[
            ("from", "16465550101"),
            ("to", to),
            ("uuid", &format!("{conversation}-in")),
            ("conversation_uuid", conversation),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    (r.json().await.unwrap(), started.elapsed())
}

#[tokio::test]
async fn the_answer_does_not_wait_for_a_stalled_disk_and_the_record_still_arrives() {
    let app = spawn_app_with(&[("ANSWER_DEADLINE_MS", "300")]).await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair("16465550101", "16465550102").await;
    app.spool
        .stall_fsyncs_until(Instant::now() + Duration::from_secs(4));
    let (ncco, took) = answer_timed(&app, &proxy_of(&p, 0), "CON-stall").await;
    assert_eq!(ncco[0]["action"], "connect");
    assert!(
        took < Duration::from_millis(1500),
        "the answer waited {took:?} for a disk stalled for 4 s"
    );
    assert_eq!(app.metric("call_records_late_total").await, 1.0);
    let pool = app.pool.clone();
    wait_until("the late record in Postgres", Duration::from_secs(15), async || {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM calls WHERE conversation_uuid = 'CON-stall' AND outcome = 'routed'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
            == 1
    })
    .await;
}

#[tokio::test]
async fn the_spool_folder_and_files_are_private_to_the_service() {
    let dir = temp_spool();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let left = dir.join("dead-letter.jsonl");
    std::fs::write(&left, "").unwrap();
    std::fs::set_permissions(&left, std::fs::Permissions::from_mode(0o644)).unwrap();
    let url = create_database().await;
    let app = spawn_app_on(&url, &[("SPOOL_DIR", dir.to_str().unwrap())]).await;
    app.add_numbers(&["12125550123"]).await;
    app.answer("16465550101", "12125550123", "CON-private")
        .await;
    assert_eq!(mode(&dir), 0o700, "the folder is fixed at start");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.to_str().unwrap().contains("segment-"))
    );
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[tokio::test]
async fn past_its_memory_budget_the_spool_refuses_events_but_never_calls() {
    let pg = PrivatePostgres::start();
    let url = pg.create_database("budget").await;
    let app = spawn_app_on(
        &url,
        &[
            ("SPOOL_MEMORY_MIB", "1"),
            ("SPOOL_DRAIN_INTERVAL_MS", "200"),
            ("ANSWER_DB_TIMEOUT_MS", "300"),
            ("DATABASE_ACQUIRE_TIMEOUT_MS", "500"),
        ],
    )
    .await;
    app.add_numbers(&["12125550123"]).await;
    pg.stop_server();

    // Events of about 50 kB each: about 20 fit in 1 MiB.
    let padding = "x".repeat(50_000);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..60 {
        let event = json!({"uuid": format!("leg-{i}"), "conversation_uuid": "CON-big",
            "status": "started", "timestamp": format!("2024-05-01T10:00:{:02}Z", i % 60),
            "padding": padding});
        let r = app.post_event(&event).await;
        match r.status() {
            StatusCode::NO_CONTENT => accepted.push(i),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(r.headers()["retry-after"], "1");
                refused += 1;
            }
            other => panic!("event {i}: {other}"),
        }
        // Calls are never refused: past the budget they are kept on disk only.
        let (ncco, _) = answer_timed(&app, "12125550123", &format!("CON-call-{i}")).await;
        assert_eq!(ncco[0]["action"], "talk");
    }
    assert!(
        (10..=25).contains(&accepted.len()),
        "{} events accepted",
        accepted.len()
    );
    assert_eq!(refused, 60 - accepted.len());
    assert!(app.spool.memory_bytes() <= (1 << 20) + 60_000);
    assert_eq!(
        app.metric("spool_memory_full_refusals_total").await,
        refused as f64
    );

    pg.start_server();
    app.settle().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM call_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, accepted.len() as i64, "every accepted event, once");
    let calls: i64 = sqlx::query_scalar("SELECT count(*) FROM calls")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(calls, 60, "every call, once");
    assert_eq!(app.spool.memory_bytes(), 0);
}

/// A tmpfs of a given size, mounted for one test.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(kib: u64) -> Self {
        let dir = temp_spool();
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k,mode=0700")])
            .arg("tmpfs")
            .arg(&dir)
            .output()
            .expect("mount(8)");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs (it runs as root in CI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[tokio::test]
async fn a_full_spool_makes_the_instance_not_ready_and_loses_no_call() {
    // Room for the start's probe, not for a segment of 1 MiB.
    let disk = SmallDisk::mount(900);
    let url = create_database().await;
    let app = spawn_app_on(
        &url,
        &[
            ("SPOOL_DIR", disk.0.to_str().unwrap()),
            ("SPOOL_SEGMENT_KIB", "1024"),
        ],
    )
    .await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert!(body["reason"].as_str().unwrap().contains("spool"), "{body}");
    app.add_numbers(&["12125550123"]).await;
    let (ncco, _) = answer_timed(&app, "12125550123", "CON-full").await;
    assert_eq!(ncco[0]["action"], "talk");
    // The spool could not take it: it went to Postgres directly.
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM calls WHERE conversation_uuid = 'CON-full'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, 1);
    assert!(app.metric("spool_write_failures_total").await >= 1.0);
    assert_eq!(app.metric("spool_writable").await, 0.0);
}

#[tokio::test]
async fn the_service_refuses_to_start_on_a_spool_it_cannot_write() {
    let url = create_database().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_voice-proxy"))
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN)
        .env("ALLOW_UNSIGNED_WEBHOOKS", "true")
        .env("RETENTION_DAYS", "0")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("SPOOL_DIR", "/proc/voice-proxy-spool")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SPOOL_DIR"), "{stderr}");
}

/// A second instance pointed at a running instance's spool folder does not start: it would
/// drain and delete the segments the first is appending to.
#[tokio::test]
async fn a_second_instance_on_the_same_spool_folder_refuses_to_start() {
    let dir = temp_spool();
    let url = create_database().await;
    let _running = spawn_app_on(&url, &[("SPOOL_DIR", dir.to_str().unwrap())]).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_voice-proxy"))
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN)
        .env("ALLOW_UNSIGNED_WEBHOOKS", "true")
        .env("RETENTION_DAYS", "0")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("SPOOL_DIR", &dir)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SPOOL_DIR"), "{stderr}");
    assert!(
        stderr.contains("in use by another voice-proxy process"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_record_postgres_refuses_is_dead_lettered_not_a_duplicate_and_replays_once_fixed() {
    let dir = temp_spool();
    let url = create_database().await;
    let app = spawn_app_on(&url, &[("SPOOL_DIR", dir.to_str().unwrap())]).await;
    sqlx::query(
        "ALTER TABLE call_events ADD CONSTRAINT refuse_for_the_test
         CHECK (conversation_uuid <> 'CON-refused')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let event = json!({"uuid": "leg", "conversation_uuid": "CON-refused", "status": "started",
                       "timestamp": "2024-05-01T10:00:00Z", "from": "16465550101"});
    assert_eq!(
        app.post_event(&event).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.metric("events_received_total{result=\"dead_lettered\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("events_received_total{result=\"duplicate\"}")
            .await,
        0.0
    );
    let dead = dir.join("dead-letter.jsonl");
    assert!(
        std::fs::read_to_string(&dead)
            .unwrap()
            .contains("CON-refused")
    );
    assert_eq!(mode(&dead), 0o600);

    let replay = || {
        Command::new(env!("CARGO_BIN_EXE_voice-proxy"))
            .args(["dead-letter", "replay"])
            .env("DATABASE_URL", &url)
            .env("SPOOL_DIR", &dir)
            .output()
            .unwrap()
    };
    // Still refused: it stays.
    let out = replay();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 refused again"));
    assert!(
        std::fs::read_to_string(&dead)
            .unwrap()
            .contains("CON-refused")
    );
    // The cause fixed: it goes in, once.
    sqlx::query("ALTER TABLE call_events DROP CONSTRAINT refuse_for_the_test")
        .execute(&app.pool)
        .await
        .unwrap();
    let out = replay();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 stored"));
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM call_events WHERE conversation_uuid = 'CON-refused'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, 1);
    assert!(
        std::fs::read_to_string(&dead)
            .unwrap_or_default()
            .is_empty()
    );
}
