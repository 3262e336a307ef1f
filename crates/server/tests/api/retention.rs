//! Retention: old real numbers are replaced by a keyed hash; rows, counts and timings stay.

use serde_json::{Value, json};

use crate::helpers::{TestApp, proxy_of, spawn_app, spawn_app_with};

/// A pairing with one call and its events, all moved 100 days into the past, and a current one.
async fn old_and_new_history(app: &TestApp) -> (String, String) {
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let old = app.pair("16465550101", "16465550102").await;
    let proxy = proxy_of(&old, 0);
    app.answer("16465550101", &proxy, "CON-old").await;
    let e = json!({"uuid": "CON-old-in", "conversation_uuid": "CON-old", "status": "completed",
                   "direction": "inbound", "from": "16465550101", "to": proxy,
                   "timestamp": "2024-05-01T10:00:00Z"});
    assert_eq!(app.post_event(&e).await.status(), 204);
    let new = app.pair("16465550103", "16465550104").await;
    app.answer("16465550103", &proxy_of(&new, 0), "CON-new")
        .await;
    let old_id: uuid::Uuid = old["id"].as_str().unwrap().parse().unwrap();
    for sql in [
        "UPDATE pairings SET created_at = now() - interval '100 days', expires_at = now() - interval '99 days' WHERE id = $1",
        "UPDATE calls SET started_at = now() - interval '100 days' WHERE pairing_id = $1",
    ] {
        sqlx::query(sql)
            .bind(old_id)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE call_events SET received_at = now() - interval '100 days' WHERE conversation_uuid = 'CON-old'")
        .execute(&app.pool)
        .await
        .unwrap();
    (old["id"].as_str().unwrap().to_owned(), proxy)
}

async fn assert_purged(app: &TestApp, proxy: &str) {
    let old: Vec<(String, String)> = sqlx::query_as(
        "SELECT number, counterpart_number FROM participants WHERE upper(active_during) < now() - interval '30 days'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(old.len(), 2, "rows stay");
    assert!(
        old.iter()
            .all(|(n, c)| n.starts_with("hmac:") && c.starts_with("hmac:")),
        "{old:?}"
    );
    let fresh: i64 = app
        .count("SELECT count(*) FROM participants WHERE number IN ('16465550103', '16465550104')")
        .await;
    assert_eq!(fresh, 2, "a current pairing keeps its numbers");

    let (caller, callee, outcome, status): (String, String, String, Option<String>) =
        sqlx::query_as(
            "SELECT caller, callee, outcome, status FROM calls WHERE conversation_uuid = 'CON-old'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(caller.starts_with("hmac:") && callee.starts_with("hmac:"));
    assert_eq!(
        (outcome.as_str(), status.as_deref()),
        ("routed", Some("completed")),
        "facts stay"
    );
    let same_person: String = sqlx::query_scalar(
        "SELECT number FROM participants WHERE position = 0 AND number LIKE 'hmac:%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(caller, same_person, "one number, one hash, in every table");

    let payload: Value =
        sqlx::query_scalar("SELECT payload FROM call_events WHERE conversation_uuid = 'CON-old'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(payload["from"], caller.as_str());
    assert_eq!(payload["to"], proxy, "pool numbers are ours and stay");
    let everything: String = sqlx::query_scalar(
        "SELECT concat_ws(' ', (SELECT string_agg(p::text, ' ') FROM participants p),
                              (SELECT string_agg(c::text, ' ') FROM calls c WHERE conversation_uuid = 'CON-old'),
                              (SELECT string_agg(e.payload::text, ' ') FROM call_events e))",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(!everything.contains("6465550101") && !everything.contains("6465550102"));
}

/// Runs `voice-proxy purge` with a 30-day retention on the app's database; returns its stdout.
async fn run_purge(app: &TestApp) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_voice-proxy"))
        .arg("purge")
        .env("DATABASE_URL", &app.database_url)
        .env("RETENTION_DAYS", "30")
        .env("RETENTION_HASH_KEY", "test-retention-key-0123456789")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_purge_command_replaces_old_numbers_by_their_keyed_hash() {
    let app = spawn_app().await;
    let (_, proxy) = old_and_new_history(&app).await;
    let stdout = run_purge(&app).await;
    assert!(
        stdout.contains("2 participants, 1 calls and 1 events"),
        "{stdout}"
    );
    assert_purged(&app, &proxy).await;

    // Running it again changes nothing.
    assert!(
        run_purge(&app)
            .await
            .contains("0 participants, 0 calls and 0 events")
    );
    // The record is still listed, with the hashed numbers.
    let calls: Value = app.get("/v1/calls").await.json().await.unwrap();
    assert_eq!(calls["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_service_purges_periodically() {
    let app = spawn_app_with(&[
        ("RETENTION_DAYS", "30"),
        ("RETENTION_INTERVAL_SECONDS", "1"),
    ])
    .await;
    let (_, proxy) = old_and_new_history(&app).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while app
        .count("SELECT count(*) FROM participants WHERE number LIKE 'hmac:%'")
        .await
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the periodic purge did not run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_purged(&app, &proxy).await;
}

#[tokio::test]
async fn numbers_are_purged_wherever_they_are_in_an_event() {
    let app = spawn_app().await;
    let (_, proxy) = old_and_new_history(&app).await;
    let nested = json!({"uuid": "CON-old-out", "conversation_uuid": "CON-old",
        "status": "answered", "direction": "outbound", "from": 16465550101_u64, "to": proxy,
        "headers": {"x-caller": "+16465550101", "list": [16465550102_u64, "CON-old"]},
        "size": 12345678, "duration": "1234567", "timestamp": "2024-05-01T10:00:01Z"});
    assert_eq!(app.post_event(&nested).await.status(), 204);
    sqlx::query("UPDATE call_events SET received_at = now() - interval '100 days' WHERE conversation_uuid = 'CON-old'")
        .execute(&app.pool)
        .await
        .unwrap();
    run_purge(&app).await;
    let payload: Value =
        sqlx::query_scalar("SELECT payload FROM call_events WHERE leg_uuid = 'CON-old-out'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let caller: String =
        sqlx::query_scalar("SELECT caller FROM calls WHERE conversation_uuid = 'CON-old'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(payload["from"], caller.as_str(), "a JSON number, hashed");
    assert_eq!(
        payload["headers"]["x-caller"],
        caller.as_str(),
        "nested, with a +"
    );
    assert!(
        payload["headers"]["list"][0]
            .as_str()
            .unwrap()
            .starts_with("hmac:")
    );
    assert_eq!(payload["headers"]["list"][1], "CON-old");
    assert_eq!(payload["to"], proxy, "pool numbers are ours and stay");
    assert_eq!(payload["size"], 12345678, "not a number of a person");
    assert_eq!(payload["duration"], "1234567");
    assert!(!payload.to_string().contains("6465550101"));
}

/// The dead-letter file's purge finds and hashes numbers in the service, the database's purge
/// in Postgres: the same payload must come out the same.
#[tokio::test]
async fn the_service_and_the_database_purge_a_payload_alike() {
    let app = spawn_app().await;
    let payload = json!({"from": "16465550101", "to": 447700900123_u64,
        "headers": {"x": ["sip:+16465550101@sip.example.com", "tel:0016465550102"]},
        "reason": "Unable to connect to 16465550102 (code 1234567890123456789).",
        "size": 12345678, "network": "23415", "duration": "1234567",
        "conversation_uuid": "CON-12345678-aaaa-bbbb-cccc-123456789012",
        "deep": {"size": {"n": 16465550103_u64}}, "short": "123456", "zero": "0123456789"});
    let in_postgres: Value = sqlx::query_scalar(
        "SELECT voice_proxy_redact_numbers($1, 'test-retention-key-0123456789')",
    )
    .bind(&payload)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let mut in_the_service = payload.clone();
    voice_proxy_domain::redact::redact_numbers(&mut in_the_service, &mut |digits| {
        voice_proxy_persistence::durable::dead_letter::keyed_hash(
            digits,
            "test-retention-key-0123456789",
        )
    });
    assert_eq!(in_the_service, in_postgres);
    assert!(!in_postgres.to_string().contains("646555010"));
    assert_eq!(in_postgres["size"], 12345678);
    assert_eq!(in_postgres["zero"], "0123456789");
}

/// The dead-letter file's purge hashes numbers in the service, the database's in Postgres: the
/// same number must come out the same.
#[tokio::test]
async fn the_services_keyed_hash_is_the_databases() {
    let app = spawn_app().await;
    let in_postgres: String = sqlx::query_scalar(
        "SELECT 'hmac:' || encode(hmac('16465550101', 'test-retention-key-0123456789', 'sha256'), 'hex')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        voice_proxy_persistence::durable::dead_letter::keyed_hash(
            "16465550101",
            "test-retention-key-0123456789"
        ),
        in_postgres
    );
}

#[tokio::test]
async fn old_callback_messages_are_deleted_once_no_endpoint_waits_for_them() {
    use crate::receiver::{Receiver, Reply};
    let app = spawn_app_with(&crate::callbacks::CALLBACKS).await;
    let receiver = Receiver::start(Reply::Status(200));
    let endpoint =
        crate::callbacks::add_endpoint(&app, &receiver.url, Some(&["pairing.created"])).await;
    let id = endpoint["id"].as_str().unwrap();
    app.add_numbers(&["12125550123", "12125550124", "12125550125", "12125550126"])
        .await;
    app.pair("16465550101", "16465550102").await;
    app.pair("16465550103", "16465550104").await;
    app.pair("16465550105", "16465550106").await;
    receiver
        .wait_for(3, std::time::Duration::from_secs(10))
        .await;
    crate::helpers::wait_until(
        "the three deliveries to be recorded",
        std::time::Duration::from_secs(10),
        async || {
            app.count("SELECT count(*) FROM webhook_deliveries WHERE state = 'succeeded'")
                .await
                == 3
        },
    )
    .await;
    // The endpoint is disabled and the second message sent again by hand: it waits, pending.
    let r = app
        .patch_json(
            &format!("/v1/webhook-endpoints/{id}"),
            &serde_json::json!({"disabled": true}),
        )
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM webhook_messages ORDER BY seq")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let r = app
        .post_json(
            &format!("/v1/webhook-endpoints/{id}/deliveries/{}/retry", ids[1]),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
    // The first two are 31 days old; the third is new.
    sqlx::query(
        "UPDATE webhook_messages SET created_at = now() - interval '31 days' WHERE id = ANY($1)",
    )
    .bind(&ids[..2])
    .execute(&app.pool)
    .await
    .unwrap();

    let stdout = run_purge(&app).await;
    assert!(stdout.contains("deleted 1 callback messages"), "{stdout}");
    let left: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM webhook_messages ORDER BY seq")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, ids[1..]);
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_attempts").await,
        2,
        "the deleted message's attempt went with it"
    );
}
