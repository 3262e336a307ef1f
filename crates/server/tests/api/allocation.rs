//! The allocation policy end to end: geo-match, stickiness, cool-off, reserved numbers, explicit
//! proxy numbers, exhaustion per country, spread, and the race between two service processes.

use std::collections::{HashMap, HashSet};

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, proxy_of, spawn_app, spawn_app_on, spawn_app_with};

const US: [&str; 4] = ["12125550123", "12125550124", "12125550125", "12125550126"];
const GB: [&str; 2] = ["442079460018", "442079460019"];

async fn close(app: &TestApp, pairing: &Value) {
    let id = pairing["id"].as_str().unwrap();
    let r = app.close(id).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn strict_geo_match_gives_own_country_numbers_and_refuses_naming_the_country() {
    let app = spawn_app().await;
    app.add_numbers(&GB).await;
    app.add_numbers(&US[..1]).await;
    // A GB caller and a US caller each get a number of their own country.
    let p = app.pair("447400123456", "16465550101").await;
    assert!(GB.contains(&proxy_of(&p, 0).as_str()));
    assert_eq!(proxy_of(&p, 1), US[0]);
    // The US person holds the only US number: the next pairing for them is refused, although GB
    // numbers are free.
    let r = app.create_pairing("447400123457", "16465550101").await;
    let problem = assert_problem(r, StatusCode::CONFLICT).await;
    assert_eq!(problem["code"], "pool-exhausted");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("of US") && detail.contains("participants[1]"),
        "{detail}"
    );

    let report: Value = app.get("/v1/pool").await.json().await.unwrap();
    let us = report["countries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["country"] == "US")
        .unwrap();
    assert_eq!(us["exhaustion_refusals_24h"], 1);
    assert_eq!(us["numbers"]["active"], 1);
    assert_eq!(us["max_pairings_per_person"], 1);
    assert_eq!(us["headroom"], 0);
    let gb = report["countries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["country"] == "GB")
        .unwrap();
    assert_eq!(gb["exhaustion_refusals_24h"], 0);
    assert_eq!(gb["numbers"]["active"], 2);
    assert_eq!(gb["active_pairings"], 1);
    assert_eq!(gb["headroom"], 1);
}

#[tokio::test]
async fn prefer_geo_match_falls_back_to_another_country_and_off_ignores_it() {
    for mode in ["prefer", "off"] {
        let app = spawn_app_with(&[("GEO_MATCH", mode)]).await;
        app.add_numbers(&GB[..1]).await;
        let p = app.pair("16465550101", "16465550102").await;
        assert_eq!(proxy_of(&p, 0), GB[0], "{mode}");
    }
    let app = spawn_app_with(&[("GEO_MATCH", "prefer")]).await;
    app.add_numbers(&GB).await;
    app.add_numbers(&US[..1]).await;
    for _ in 0..3 {
        let p = app
            .pair("16465550101", &format!("1646555{}", 1000 + rand_suffix()))
            .await;
        let first = proxy_of(&p, 0);
        if US.contains(&first.as_str()) {
            close(&app, &p).await;
        } else {
            panic!("prefer must take the US number while it is free, got {first}");
        }
    }
}

fn rand_suffix() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32 % 8000
}

#[tokio::test]
async fn the_same_two_people_get_their_numbers_again() {
    let app = spawn_app().await;
    app.add_numbers(&US).await;
    let first = app.pair("16465550101", "16465550102").await;
    let mut current = first.clone();
    for _ in 0..3 {
        close(&app, &current).await;
        current = app.pair("16465550101", "16465550102").await;
        assert_eq!(proxy_of(&current, 0), proxy_of(&first, 0));
        assert_eq!(proxy_of(&current, 1), proxy_of(&first, 1));
    }

    let avoid = spawn_app_with(&[("STICKINESS", "avoid-sticky")]).await;
    avoid.add_numbers(&US).await;
    let mut previous = avoid.pair("16465550101", "16465550102").await;
    for _ in 0..3 {
        close(&avoid, &previous).await;
        let again = avoid.pair("16465550101", "16465550102").await;
        assert_ne!(proxy_of(&again, 0), proxy_of(&previous, 0));
        assert_ne!(proxy_of(&again, 1), proxy_of(&previous, 1));
        previous = again;
    }
}

#[tokio::test]
async fn cool_off_keeps_an_ended_number_from_a_new_counterpart_and_redials_hear_the_ended_message()
{
    let app = spawn_app_with(&[
        ("COOL_OFF_SECONDS", "86400"),
        ("PAIRING_ENDED_MESSAGE", "Your contact has ended."),
    ])
    .await;
    app.add_numbers(&US[..3]).await;
    let with_b = app.pair("16465550101", "16465550102").await;
    let old = proxy_of(&with_b, 0);
    close(&app, &with_b).await;

    // New counterparts get the other numbers first, although the ended one is as lightly loaded.
    let mut given = HashSet::new();
    for i in 0..2 {
        let with_c = app.pair("16465550101", &format!("1646555020{i}")).await;
        let proxy = proxy_of(&with_c, 0);
        assert_ne!(proxy, old, "a cooling number went to a new counterpart");
        given.insert(proxy);
        // Someone redialling the old number from their call history hears the ended message.
        let ncco = app
            .answer("16465550101", &old, &format!("CON-cool-{i}"))
            .await;
        assert_eq!(ncco[0]["action"], "talk");
        assert_eq!(ncco[0]["text"], "Your contact has ended.");
    }
    assert_eq!(given.len(), 2);

    // Soft mode: when nothing else is free, the cooling number is given after all.
    let last = app.pair("16465550101", "16465550302").await;
    assert_eq!(proxy_of(&last, 0), old);
}

#[tokio::test]
async fn strict_cool_off_refuses_instead_of_reusing() {
    let app = spawn_app_with(&[("COOL_OFF_SECONDS", "86400"), ("COOL_OFF_MODE", "strict")]).await;
    app.add_numbers(&US[..1]).await;
    let p = app.pair("16465550101", "16465550102").await;
    close(&app, &p).await;
    let problem = assert_problem(
        app.create_pairing("16465550101", "16465550103").await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(problem["code"], "pool-exhausted");
    // The same counterpart may have it back.
    let again = app.pair("16465550101", "16465550102").await;
    assert_eq!(proxy_of(&again, 0), US[0]);
}

#[tokio::test]
async fn reserved_numbers_are_only_used_when_asked_for() {
    let app = spawn_app().await;
    let r = app
        .post_json("/v1/numbers", &json!({"number": US[0], "reserved": true}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.json::<Value>().await.unwrap()["reserved"], true);
    app.add_numbers(&US[1..2]).await;

    let p = app.pair("16465550101", "16465550102").await;
    assert_eq!(proxy_of(&p, 0), US[1]);
    assert_problem(
        app.create_pairing("16465550101", "16465550103").await,
        StatusCode::CONFLICT,
    )
    .await;

    let explicit = app
        .post_json(
            "/v1/pairings",
            &json!({"participants": [
            {"number": "16465550101", "proxy_number": US[0]}, {"number": "16465550103"}]}),
        )
        .await;
    assert_eq!(explicit.status(), StatusCode::CREATED);
    let explicit: Value = explicit.json().await.unwrap();
    assert_eq!(proxy_of(&explicit, 0), US[0]);
    assert_eq!(
        proxy_of(&explicit, 1),
        US[1],
        "the other participant still gets an unreserved one"
    );

    // Un-reserve: now allocation may use it.
    let r = app
        .client
        .patch(app.url(&format!("/v1/numbers/{}", US[0])))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&json!({"reserved": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["reserved"], false);
    let p = app.pair("16465550104", "16465550105").await;
    assert!(US[..2].contains(&proxy_of(&p, 0).as_str()));
}

#[tokio::test]
async fn an_explicit_proxy_number_must_be_an_active_pool_number_that_keeps_the_invariant() {
    let app = spawn_app().await;
    app.add_numbers(&US[..2]).await;
    let with = |proxy: &str| {
        json!({"participants": [
        {"number": "16465550101", "proxy_number": proxy}, {"number": "16465550102"}]})
    };
    let not_pool = app.post_json("/v1/pairings", &with("12125550199")).await;
    assert_eq!(
        assert_problem(not_pool, StatusCode::UNPROCESSABLE_ENTITY).await["code"],
        "validation-failed"
    );
    let first = app.post_json("/v1/pairings", &with(US[0])).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let held = app
        .post_json(
            "/v1/pairings",
            &json!({"participants": [
        {"number": "16465550101", "proxy_number": US[0]}, {"number": "16465550103"}]}),
        )
        .await;
    assert_eq!(
        assert_problem(held, StatusCode::CONFLICT).await["code"],
        "proxy-number-unavailable"
    );
    app.delete(&format!("/v1/numbers/{}", US[1])).await;
    let retired = app
        .post_json(
            "/v1/pairings",
            &json!({"participants": [
        {"number": "16465550109", "proxy_number": US[1]}, {"number": "16465550103"}]}),
        )
        .await;
    assert_eq!(
        assert_problem(retired, StatusCode::CONFLICT).await["code"],
        "proxy-number-unavailable"
    );
}

#[tokio::test]
async fn new_pairings_spread_over_the_least_loaded_numbers() {
    let app = spawn_app().await;
    app.add_numbers(&US).await;
    for i in 0..8 {
        app.pair(
            &format!("1646555{:04}", 1000 + 2 * i),
            &format!("1646555{:04}", 1001 + 2 * i),
        )
        .await;
    }
    let loads: Vec<(String, i64)> =
        sqlx::query_as("SELECT proxy_number, count(*) FROM participants GROUP BY proxy_number")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(loads.len(), 4);
    assert!(
        loads.iter().all(|(_, n)| *n == 4),
        "16 participants over 4 numbers: {loads:?}"
    );
}

/// The load counters are written in batches, off the create path; they reach the database soon
/// after, creates and closes alike, and match the active pairings.
#[tokio::test]
async fn load_counters_reach_the_database_after_creates_and_closes() {
    let app = spawn_app().await;
    app.add_numbers(&US).await;
    let mut made = Vec::new();
    for i in 0..6 {
        made.push(
            app.pair(
                &format!("1646555{:04}", 1000 + 2 * i),
                &format!("1646555{:04}", 1001 + 2 * i),
            )
            .await,
        );
    }
    close(&app, &made[0]).await;
    close(&app, &made[3]).await;
    const MISMATCHED: &str = "SELECT count(*) FROM pool_numbers n
        LEFT JOIN (SELECT proxy_number, count(*) AS c FROM participants
                    WHERE active_during @> now() GROUP BY proxy_number) a
               ON a.proxy_number = n.number
        WHERE n.active_load <> coalesce(a.c, 0)";
    const TOTAL: &str = "SELECT coalesce(sum(active_load), 0)::bigint FROM pool_numbers";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if app.count(MISMATCHED).await == 0 && app.count(TOTAL).await == 8 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the load counters did not reach the database: {} numbers off, {} in total",
            app.count(MISMATCHED).await,
            app.count(TOTAL).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_pairings_expiry_can_change_until_it_ends() {
    let app = spawn_app().await;
    app.add_numbers(&US).await;
    let p = app.pair("16465550101", "16465550102").await;
    let id = p["id"].as_str().unwrap();
    let patch = |body: Value| {
        app.client
            .patch(app.url(&format!("/v1/pairings/{id}")))
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    let r = patch(json!({"ttl_seconds": 7200})).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    let in_two_hours = chrono::Utc::now() + chrono::Duration::seconds(7200);
    assert!(
        (expires.with_timezone(&chrono::Utc) - in_two_hours)
            .num_seconds()
            .abs()
            < 30
    );

    let r = patch(json!({"expires_at": "2999-01-01T00:00:00Z"}))
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    let r = patch(json!({"expires_at": "2001-01-01T00:00:00Z"}))
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    let r = patch(json!({})).await.unwrap();
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    let r = patch(json!({"ttl_seconds": 60, "expires_at": "2999-01-01T00:00:00Z"}))
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc3339();
    let r = patch(json!({"expires_at": soon})).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    close(&app, &p).await;
    let r = patch(json!({"ttl_seconds": 60})).await.unwrap();
    assert_eq!(
        assert_problem(r, StatusCode::CONFLICT).await["code"],
        "pairing-ended"
    );
    let r = app
        .client
        .patch(app.url("/v1/pairings/0194a0c2-0000-7000-8000-000000000000"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&json!({"ttl_seconds": 60}))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::NOT_FOUND).await;
}

/// Invariant 4 across processes: two service instances on one database, many concurrent creates
/// for the same person through both.
#[tokio::test]
async fn two_instances_racing_never_give_one_person_a_number_twice() {
    let first = spawn_app().await;
    let second = spawn_app_on(&first.database_url, &[]).await;
    let pool: Vec<String> = (0..8).map(|i| format!("1212555014{i}")).collect();
    for n in &pool {
        first.add_numbers(&[n]).await;
    }
    let counterparts: Vec<String> = (0..16).map(|i| format!("164655503{i:02}")).collect();
    let requests = counterparts.iter().enumerate().map(|(i, c)| {
        let app = if i % 2 == 0 { &first } else { &second };
        app.create_pairing("16465550101", c)
    });
    let mut created = Vec::new();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for r in join_all(requests).await {
        *statuses.entry(r.status().as_u16()).or_default() += 1;
        if r.status() == StatusCode::CREATED {
            created.push(r.json::<Value>().await.unwrap());
        }
    }
    assert_eq!(created.len(), pool.len(), "statuses: {statuses:?}");
    assert_eq!(statuses.get(&409), Some(&8), "statuses: {statuses:?}");
    let proxies: HashSet<String> = created.iter().map(|p| proxy_of(p, 0)).collect();
    assert_eq!(proxies.len(), pool.len());
    let overlaps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM participants a JOIN participants b
           ON a.number = b.number AND a.proxy_number = b.proxy_number
          AND (a.pairing_id, a.position) < (b.pairing_id, b.position)
          AND a.active_during && b.active_during",
    )
    .fetch_one(&first.pool)
    .await
    .unwrap();
    assert_eq!(overlaps, 0);
}
