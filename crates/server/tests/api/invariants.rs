//! The invariants of ARCHITECTURE.md, checked at the database itself: each write below goes around the
//! application, and Postgres must refuse it.

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{proxy_of, spawn_app};

async fn insert_pairing(pool: &PgPool, ttl_seconds: i64) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO pairings (id, expires_at) VALUES ($1, now() + make_interval(secs => $2))",
    )
    .bind(id)
    .bind(ttl_seconds as f64)
    .execute(pool)
    .await
    .unwrap();
    id
}

/// Ends a pairing by expiry: its expiry moves to 1 ms after its creation, and this returns once the
/// clock has passed that, so the next statement's `now()` sees it expired. (Without the wait, the
/// next statement can start within that millisecond on a fast machine.)
async fn expire(pool: &PgPool, id: Uuid) {
    sqlx::query(
        "UPDATE pairings SET expires_at = created_at + interval '1 millisecond' WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
}

async fn insert_participants(
    pool: &PgPool,
    id: Uuid,
    a: &str,
    b: &str,
    proxy: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO participants (pairing_id, position, number, proxy_number, counterpart_number, counterpart_proxy)
         VALUES ($1, 0, $2, $4, $3, $4), ($1, 1, $3, $4, $2, $4)",
    )
    .bind(id)
    .bind(a)
    .bind(b)
    .bind(proxy)
    .execute(pool)
    .await
    .map(|_| ())
}

fn constraint(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.constraint())
        .map(str::to_owned)
}

/// Invariant 1: one active (person, proxy number), enforced by Postgres.
#[tokio::test]
async fn the_database_refuses_a_second_active_route_for_one_person_and_number() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123"]).await;
    let first = insert_pairing(&app.pool, 600).await;
    insert_participants(
        &app.pool,
        first,
        "16465550101",
        "16465550102",
        "12125550123",
    )
    .await
    .unwrap();
    let second = insert_pairing(&app.pool, 600).await;
    let err = insert_participants(
        &app.pool,
        second,
        "16465550101",
        "16465550103",
        "12125550123",
    )
    .await
    .unwrap_err();
    assert_eq!(constraint(&err).as_deref(), Some("participants_one_route"));

    // Once the first is closed, the same route may be given to a pairing made after the close.
    sqlx::query("UPDATE pairings SET closed_at = now() WHERE id = $1")
        .bind(first)
        .execute(&app.pool)
        .await
        .unwrap();
    let third = insert_pairing(&app.pool, 600).await;
    insert_participants(
        &app.pool,
        third,
        "16465550101",
        "16465550103",
        "12125550123",
    )
    .await
    .unwrap();
    // And the closed pairing cannot be reopened (to route again beside the new one).
    let err = sqlx::query("UPDATE pairings SET closed_at = NULL WHERE id = $1")
        .bind(first)
        .execute(&app.pool)
        .await
        .unwrap_err();
    assert_eq!(constraint(&err).as_deref(), Some("pairings_ended_is_final"));
    // Nor an expired one re-timed.
    let expired = insert_pairing(&app.pool, 600).await;
    expire(&app.pool, expired).await;
    let err =
        sqlx::query("UPDATE pairings SET expires_at = now() + interval '1 hour' WHERE id = $1")
            .bind(expired)
            .execute(&app.pool)
            .await
            .unwrap_err();
    assert_eq!(constraint(&err).as_deref(), Some("pairings_ended_is_final"));
}

/// Invariant 2: expiry needs no background job; the participants' ranges follow their pairing.
#[tokio::test]
async fn participants_follow_their_pairings_validity_without_a_job() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123"]).await;
    let id = insert_pairing(&app.pool, 600).await;
    insert_participants(&app.pool, id, "16465550101", "16465550102", "12125550123")
        .await
        .unwrap();
    expire(&app.pool, id).await;
    let active: i64 =
        sqlx::query_scalar("SELECT count(*) FROM participants WHERE active_during @> now()")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(active, 0);
    let ncco = app.answer("16465550101", "12125550123", "CON-inv2").await;
    assert_eq!(ncco[0]["action"], "talk");
}

/// Invariant 3: a participant is never a pool number, and the two participants differ.
#[tokio::test]
async fn the_database_refuses_pool_numbers_as_participants_and_self_pairings() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let id = insert_pairing(&app.pool, 600).await;
    let err = insert_participants(&app.pool, id, "12125550124", "16465550102", "12125550123")
        .await
        .unwrap_err();
    assert_eq!(
        constraint(&err).as_deref(),
        Some("participants_not_pool_number")
    );
    let err = insert_participants(&app.pool, id, "16465550102", "16465550102", "12125550123")
        .await
        .unwrap_err();
    assert_eq!(constraint(&err).as_deref(), Some("participants_two_people"));

    // And the other way round: a number in an active pairing cannot join the pool.
    let p = app.pair("16465550101", "16465550102").await;
    let _ = proxy_of(&p, 0);
    let r = app.add_number("16465550101").await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "number-is-participant");
}

/// Invariant 5: what was acknowledged is in Postgres.
#[tokio::test]
async fn acknowledged_writes_are_in_postgres() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair("16465550101", "16465550102").await;
    let id: Uuid = p["id"].as_str().unwrap().parse().unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM participants WHERE pairing_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 2);
    let r = app
        .post_event(
            &json!({"uuid": "leg", "conversation_uuid": "CON-ack", "status": "started",
                            "timestamp": "2024-05-01T10:00:00Z"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.count("SELECT count(*) FROM call_events WHERE conversation_uuid = 'CON-ack'")
            .await,
        1
    );
}
