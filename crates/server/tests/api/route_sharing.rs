//! Two instances on one database: a close through one stops routing on the other at once, and
//! what an instance does not hold in memory is asked of the database.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{TestApp, proxy_of, spawn_app, spawn_app_on, wait_for_mirrors};

#[tokio::test]
async fn a_pairing_closed_through_one_instance_stops_routing_on_the_other_at_once() {
    let first = spawn_app().await;
    let second = spawn_app_on(&first.database_url, &[]).await;
    first.add_numbers(&["12125550123", "12125550124"]).await;
    for round in 0..5 {
        let (maker, closer, asked): (&TestApp, &TestApp, &TestApp) = if round % 2 == 0 {
            (&first, &second, &first)
        } else {
            (&second, &first, &second)
        };
        let p = maker
            .pair(&format!("1646555020{round}"), &format!("1646555030{round}"))
            .await;
        let proxy = proxy_of(&p, 0);
        // Both instances hold the pairing in memory: the asked one connects from memory.
        wait_for_mirrors(&first.pool, 2).await;
        let from_memory = asked
            .metric(r#"answer_route_source_total{source="memory"}"#)
            .await;
        let ncco = asked
            .answer(
                &format!("1646555020{round}"),
                &proxy,
                &format!("CON-two-{round}-a"),
            )
            .await;
        assert_eq!(ncco[0]["action"], "connect");
        assert_eq!(
            asked
                .metric(r#"answer_route_source_total{source="memory"}"#)
                .await,
            from_memory + 1.0,
            "round {round}: the call was connected from memory"
        );
        let id = p["id"].as_str().unwrap();
        assert_eq!(closer.close(id).await.status(), StatusCode::OK);
        let ncco = asked
            .answer(
                &format!("1646555020{round}"),
                &proxy,
                &format!("CON-two-{round}-b"),
            )
            .await;
        assert_eq!(
            ncco[0]["action"], "talk",
            "round {round}: routed after the close returned"
        );
    }
}

#[tokio::test]
async fn a_close_waits_for_a_live_instance_that_has_not_caught_up_but_at_most_one_lease() {
    let lease = Duration::from_millis(1500);
    let app = crate::helpers::spawn_app_with(&[
        ("ROUTE_POLL_INTERVAL_MS", "100"),
        ("ROUTE_MIRROR_LEASE_MS", "1500"),
    ])
    .await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let pair = async |a: &str, b: &str| {
        let p = app.pair(a, b).await;
        wait_for_mirrors(&app.pool, 1).await;
        p["id"].as_str().unwrap().to_owned()
    };
    let close = async |id: String| {
        let started = Instant::now();
        let r = app.close(&id).await;
        assert_eq!(r.status(), StatusCode::OK);
        started.elapsed()
    };
    // Only this instance, which learns of its own close at once.
    let alone = close(pair("16465550201", "16465550301").await).await;
    assert!(
        alone < lease,
        "a close with every instance caught up took {alone:?}"
    );
    // Another instance that is alive (a heartbeat just now) but has not read past the close: the
    // close waits for it, but not beyond the lease, after which it no longer routes from memory.
    let id = pair("16465550202", "16465550302").await;
    // The lease runs from the heartbeat, which is stamped after this moment.
    let before_heartbeat = Instant::now();
    sqlx::query(
        "INSERT INTO route_mirrors (instance_id, seen_at, heartbeat_at)
         VALUES (gen_random_uuid(), '-infinity', clock_timestamp())",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let waited = close(id).await;
    let since_heartbeat = before_heartbeat.elapsed();
    assert!(
        since_heartbeat >= lease - Duration::from_millis(100) && waited < lease * 3,
        "a close with a lagging live instance took {waited:?}, {since_heartbeat:?} after the heartbeat"
    );
    // Its heartbeat is now older than the lease: it is no longer waited for.
    let after = close(pair("16465550203", "16465550303").await).await;
    assert!(
        after < lease,
        "a close after the lagging instance went quiet took {after:?}"
    );
}

#[tokio::test]
async fn a_stranger_and_an_unknown_route_are_asked_of_the_database() {
    let app = crate::helpers::spawn_app_with(&[("ROUTE_POLL_INTERVAL_MS", "100")]).await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair("16465550201", "16465550301").await;
    // At once, before any poll: memory does not hold it yet, the database does.
    let from_db = app
        .metric(r#"answer_route_source_total{source="database"}"#)
        .await;
    let ncco = app
        .answer("16465550201", &proxy_of(&p, 0), "CON-new-a")
        .await;
    assert_eq!(ncco[0]["action"], "connect");
    wait_for_mirrors(&app.pool, 1).await;
    let ncco = app
        .answer("16465550299", &proxy_of(&p, 0), "CON-new-b")
        .await;
    assert_eq!(ncco[0]["action"], "talk");
    assert!(
        app.metric(r#"answer_route_source_total{source="database"}"#)
            .await
            >= from_db + 1.0
    );
}
