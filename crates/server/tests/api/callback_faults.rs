//! Callbacks under faults: a restart and a `kill -9` while a delivery is being retried, and a
//! database outage while calls come in. Nothing is lost; at worst a message is sent again,
//! with the same `webhook-id`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::binary::{self, Service};
use crate::callbacks::{CALLBACKS, add_endpoint};
use crate::helpers::{
    ADMIN_TOKEN, create_database, leg_event, proxy_of, spawn_app_on, wait_for_mirrors, wait_until,
};
use crate::private_pg::PrivatePostgres;
use crate::receiver::{Receiver, Reply};

async fn admin_post(service: &Service, path: &str, body: &Value) -> Value {
    let r = reqwest::Client::new()
        .post(service.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

async fn delivery_state(database_url: &str, message: &str) -> (String, i64) {
    let pool = sqlx::PgPool::connect(database_url).await.unwrap();
    let row: (String, i64) = sqlx::query_as(
        "SELECT d.state, (SELECT count(*) FROM webhook_attempts a
                           WHERE a.message_id = d.message_id)
           FROM webhook_deliveries d WHERE d.message_id = $1::uuid",
    )
    .bind(message)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    row
}

#[tokio::test]
async fn a_restart_and_a_kill_mid_retry_lose_no_callback() {
    let database = create_database().await;
    let vars: Vec<(&str, &str)> = [("DATABASE_URL", database.as_str())]
        .into_iter()
        .chain(CALLBACKS)
        .collect();
    let receiver = Receiver::start(Reply::Status(503));
    let first = binary::start(&vars).await;
    let endpoint = admin_post(
        &first,
        "/v1/webhook-endpoints",
        &json!({"url": receiver.url, "event_types": ["pairing.created"]}),
    )
    .await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    for n in ["12125550123", "12125550124", "12125550125", "12125550126"] {
        admin_post(&first, "/v1/numbers", &json!({"number": n})).await;
    }
    let pair = |a: &str, b: &str| json!({"participants": [{"number": a}, {"number": b}]});

    // A restart between two attempts: the next instance makes the next one.
    admin_post(&first, "/v1/pairings", &pair("16465550101", "16465550102")).await;
    let failed = receiver.wait_for(1, Duration::from_secs(10)).await;
    let restarted = failed[0].id().to_owned();
    first.signal("TERM");
    receiver.set_reply(Reply::Status(200));
    let second = binary::start(&vars).await;
    let count_of = |id: &str| receiver.received().iter().filter(|r| r.id() == id).count();
    wait_until(
        "the retry after the restart",
        Duration::from_secs(15),
        async || count_of(&restarted) >= 2,
    )
    .await;

    // A kill -9 in the middle of an attempt: the attempt's lease runs out (the 1 s timeout plus
    // 10 s) and another instance sends the message again.
    receiver.set_reply(Reply::After(
        Duration::from_secs(60),
        Box::new(Reply::Status(200)),
    ));
    let before = receiver.received().len();
    admin_post(&second, "/v1/pairings", &pair("16465550103", "16465550104")).await;
    let hanging = receiver
        .wait_for(before + 1, Duration::from_secs(10))
        .await
        .pop()
        .unwrap();
    let killed = hanging.id().to_owned();
    second.signal("KILL");
    receiver.set_reply(Reply::Status(200));
    let _third = binary::start(&vars).await;
    wait_until(
        "the message in flight at the kill to be sent again",
        Duration::from_secs(30),
        async || count_of(&killed) >= 2,
    )
    .await;

    for id in [&restarted, &killed] {
        wait_until(
            "the delivery to be recorded",
            Duration::from_secs(10),
            async || delivery_state(&database, id).await.0 == "succeeded",
        )
        .await;
    }
    for r in receiver.received() {
        assert!(r.verifies_with(&secret));
    }
}

#[tokio::test]
async fn a_database_outage_delays_the_call_callbacks_and_loses_none() {
    let pg = PrivatePostgres::start();
    let url = pg.create_database("callbacks").await;
    let vars: Vec<(&str, &str)> = [
        ("ROUTE_POLL_INTERVAL_MS", "100"),
        ("ANSWER_DB_TIMEOUT_MS", "300"),
        ("SPOOL_DRAIN_INTERVAL_MS", "200"),
        ("DATABASE_ACQUIRE_TIMEOUT_MS", "500"),
    ]
    .into_iter()
    .chain(CALLBACKS)
    .collect();
    let app = spawn_app_on(&url, &vars).await;
    let receiver = Receiver::start(Reply::Status(200));
    add_endpoint(&app, &receiver.url, None).await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair("16465550101", "16465550102").await;
    let pairing = p["id"].as_str().unwrap().to_owned();
    receiver.wait_for(1, Duration::from_secs(10)).await;
    wait_for_mirrors(&app.pool, 1).await;

    pg.stop_server();
    let client = reqwest::Client::new();
    let r = client
        .get(app.url("/webhooks/answer"))
        .query(&[
            ("from", "16465550101"),
            ("to", proxy_of(&p, 0).as_str()),
            ("uuid", "CON-dark-in"),
            ("conversation_uuid", "CON-dark"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ncco: Value = r.json().await.unwrap();
    assert_eq!(ncco[0]["action"], "connect", "calls connect in the outage");
    for (i, (leg, dir, status)) in [
        ("CON-dark-out", "outbound", "answered"),
        ("CON-dark-out", "outbound", "completed"),
        ("CON-dark-in", "inbound", "completed"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = app
            .post_event(&leg_event("CON-dark", leg, dir, status, i as u32 + 1))
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "nothing about the call can be told while the database is down"
    );

    pg.start_server();
    let got = receiver.wait_for(4, Duration::from_secs(30)).await;
    let types: Vec<String> = got[1..].iter().map(|r| r.event_type()).collect();
    assert_eq!(types, ["call.started", "call.answered", "call.ended"]);
    for r in &got[1..] {
        assert_eq!(r.json()["data"]["pairing_id"], pairing.as_str());
        assert_eq!(r.json()["data"]["conversation_uuid"], "CON-dark");
    }
}
