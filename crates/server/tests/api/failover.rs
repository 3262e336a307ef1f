//! The database failing over under the service, on one server: a server that can only read (a
//! standby, a leader still in recovery), and a server restarted under the route mirror. The
//! whole cluster (Patroni, etcd, HAProxy) is exercised by `just test-ha`.

use std::time::Duration;

use reqwest::StatusCode;
use sqlx::{Connection, Executor, PgConnection};

use crate::helpers::{
    TestApp, assert_problem, create_database, leg_event, proxy_of, server_url, spawn_app_on,
    wait_until,
};
use crate::private_pg::PrivatePostgres;

const FAST: [(&str, &str); 4] = [
    ("ROUTE_POLL_INTERVAL_MS", "100"),
    ("ANSWER_DB_TIMEOUT_MS", "300"),
    ("SPOOL_DRAIN_INTERVAL_MS", "200"),
    ("DATABASE_ACQUIRE_TIMEOUT_MS", "500"),
];

/// Makes every new session of `database` read-only (or not), and ends its current sessions so
/// that the service's next ones are.
async fn set_read_only(database: &str, read_only: bool) {
    let mut admin = PgConnection::connect(&server_url()).await.unwrap();
    let setting = if read_only {
        format!(r#"ALTER DATABASE "{database}" SET default_transaction_read_only = on"#)
    } else {
        format!(r#"ALTER DATABASE "{database}" RESET default_transaction_read_only"#)
    };
    admin.execute(sqlx::AssertSqlSafe(setting)).await.unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(database)
    .execute(&mut admin)
    .await
    .unwrap();
}

async fn event(app: &TestApp, conversation: &str, status: &str, second: u32) -> StatusCode {
    let leg = format!("{conversation}-in");
    app.post_event(&leg_event(conversation, &leg, "inbound", status, second))
        .await
        .status()
}

#[tokio::test]
async fn a_read_only_database_delays_records_and_answers_creates_503_losing_nothing() {
    let url = create_database().await;
    let database = url.rsplit('/').next().unwrap().to_owned();
    let spool = std::env::temp_dir().join(format!("vp-ro-{}", uuid::Uuid::new_v4().simple()));
    let vars: Vec<(&str, &str)> = FAST
        .into_iter()
        .chain([("SPOOL_DIR", spool.to_str().unwrap())])
        .collect();
    let app = spawn_app_on(&url, &vars).await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair("16465550101", "16465550102").await;
    let proxy = proxy_of(&p, 0);
    wait_until(
        "the routes in memory",
        Duration::from_secs(10),
        async || app.metric("routes_in_memory").await == 2.0,
    )
    .await;

    set_read_only(&database, true).await;
    // Reads work on a read-only server; let the service's sessions come back, read-only.
    for _ in 0..10 {
        let _ = app.get("/v1/pairings?limit=1").await;
    }
    for i in 0..5 {
        let r = app
            .create_pairing(&format!("1646555020{i}"), &format!("1646555030{i}"))
            .await;
        assert_eq!(r.headers()["retry-after"], "1", "create {i}");
        let body = assert_problem(r, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(body["code"], "unavailable");
    }
    // Calls connect and events are acknowledged, into the spool.
    for (i, conversation) in ["CON-ro-1", "CON-ro-2", "CON-ro-3"].iter().enumerate() {
        let r = app
            .client
            .get(app.url("/webhooks/answer"))
            .query(&[
                ("from", "16465550101"),
                ("to", proxy.as_str()),
                ("uuid", &format!("{conversation}-in")),
                ("conversation_uuid", conversation),
            ])
            .send()
            .await
            .unwrap();
        let ncco: serde_json::Value = r.json().await.unwrap();
        assert_eq!(ncco[0]["action"], "connect");
        for (s, status) in ["started", "answered", "completed"].iter().enumerate() {
            assert_eq!(
                event(&app, conversation, status, (i * 3 + s) as u32).await,
                StatusCode::NO_CONTENT
            );
        }
    }
    assert!(app.spool.depth() > 0, "held in the spool meanwhile");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        app.spool.depth() > 0,
        "not drained into a server that cannot write"
    );

    set_read_only(&database, false).await;
    app.settle().await;
    let (calls, events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM calls WHERE conversation_uuid LIKE 'CON-ro-%'),
                (SELECT count(*) FROM call_events WHERE conversation_uuid LIKE 'CON-ro-%')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((calls, events), (3, 9), "every acknowledged record, once");
    assert!(
        !spool.join("dead-letter.jsonl").exists(),
        "nothing set aside: the server was unavailable, the records were fine"
    );
    assert_eq!(app.metric("records_dead_lettered_total").await, 0.0);
    let status: String =
        sqlx::query_scalar("SELECT status FROM calls WHERE conversation_uuid = 'CON-ro-1'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "completed");
    // Creates work again without a restart (a client retries a 503: the first request may meet
    // a connection the server ended).
    wait_until("a create to succeed", Duration::from_secs(10), async || {
        let r = app.create_pairing("16465550201", "16465550301").await;
        assert!(
            [StatusCode::CREATED, StatusCode::SERVICE_UNAVAILABLE].contains(&r.status()),
            "{}",
            r.status()
        );
        r.status() == StatusCode::CREATED
    })
    .await;
}

#[tokio::test]
async fn after_the_server_restarts_the_route_mirror_reads_every_route_again() {
    let pg = PrivatePostgres::start();
    let url = pg.create_database("restart").await;
    let app = spawn_app_on(&url, &FAST).await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let kept = app.pair("16465550101", "16465550102").await;
    let closed = app.pair("16465550103", "16465550104").await;
    wait_until(
        "the routes in memory",
        Duration::from_secs(10),
        async || app.metric("routes_in_memory").await == 4.0,
    )
    .await;
    assert_eq!(app.metric("route_mirror_reloads_total").await, 0.0);

    pg.stop_server();
    pg.start_server();
    wait_until(
        "a reload of the routes",
        Duration::from_secs(15),
        async || app.metric("route_mirror_reloads_total").await >= 1.0,
    )
    .await;
    // Closed behind the service's back, in SQL, on the restarted server.
    sqlx::query("UPDATE pairings SET closed_at = now() WHERE id = $1::uuid")
        .bind(closed["id"].as_str().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let closed_proxy = proxy_of(&closed, 0);
    wait_until(
        "the close to reach memory",
        Duration::from_secs(10),
        async || {
            app.answer(
                "16465550103",
                &closed_proxy,
                &format!("CON-{}", uuid::Uuid::new_v4()),
            )
            .await[0]["action"]
                == "talk"
        },
    )
    .await;
    let ncco = app
        .answer("16465550101", &proxy_of(&kept, 0), "CON-kept")
        .await;
    assert_eq!(ncco[0]["action"], "connect");
}
