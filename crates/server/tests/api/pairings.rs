use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, proxy_of, spawn_app};

const POOL: [&str; 4] = ["12125550123", "12125550124", "12125550125", "12125550126"];

#[tokio::test]
async fn a_pairing_gives_each_participant_a_proxy_number_in_the_order_given() {
    let app = spawn_app().await;
    app.add_numbers(&POOL).await;
    let r = app
        .post_json(
            "/v1/pairings",
            &json!({
                "participants": [
                    {"number": "+1 (646) 555-0101", "label": "driver"},
                    {"number": "16465550102", "label": "passenger"}
                ],
                "ttl_seconds": 600,
                "reference": "ride-42"
            }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["status"], "active");
    assert_eq!(p["reference"], "ride-42");
    assert_eq!(p["participants"][0]["number"], "16465550101");
    assert_eq!(p["participants"][0]["label"], "driver");
    assert_eq!(p["participants"][1]["number"], "16465550102");
    assert_eq!(p["participants"][1]["label"], "passenger");
    for i in 0..2 {
        assert!(POOL.contains(&proxy_of(&p, i).as_str()));
    }
    assert_ne!(
        proxy_of(&p, 0),
        proxy_of(&p, 1),
        "an empty pool spreads the pair over two numbers"
    );
    let created = chrono::DateTime::parse_from_rfc3339(p["created_at"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(p["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_seconds(), 600);

    let id = p["id"].as_str().unwrap();
    let fetched: Value = app
        .get(&format!("/v1/pairings/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, p);
}

#[tokio::test]
async fn a_pairing_needs_exactly_two_different_real_people() {
    let app = spawn_app().await;
    app.add_numbers(&POOL).await;
    let cases = [
        json!({"participants": [{"number": "16465550101"}]}),
        json!({"participants": [{"number": "16465550101"}, {"number": "16465550102"}, {"number": "16465550103"}]}),
        json!({"participants": [{"number": "16465550101"}, {"number": "+1 646 555 0101"}]}),
        json!({"participants": [{"number": "16465550101"}, {"number": "12125550123"}]}),
        json!({"participants": [{"number": "16465550101"}, {"number": "not a number"}]}),
        json!({"participants": [{"number": "16465550101"}, {"number": "16465550102"}], "ttl_seconds": 0}),
        json!({"participants": [{"number": "16465550101"}, {"number": "16465550102"}], "reference": ""}),
        json!({"participants": [{"number": "16465550101", "label": "x".repeat(65)}, {"number": "16465550102"}]}),
    ];
    for body in cases {
        let r = app.post_json("/v1/pairings", &body).await;
        let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["code"], "validation-failed", "{body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM pairings").await, 0);
}

#[tokio::test]
async fn repeating_a_request_with_the_same_reference_returns_the_same_pairing() {
    let app = spawn_app().await;
    app.add_numbers(&POOL).await;
    let body = json!({"participants": [{"number": "16465550101", "label": "driver"},
                                        {"number": "16465550102", "label": "passenger"}],
                      "reference": "ride-7"});
    let first = app.post_json("/v1/pairings", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let again = app.post_json("/v1/pairings", &body).await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["participants"], first["participants"]);
    assert_eq!(app.count("SELECT count(*) FROM pairings").await, 1);

    let other = json!({"participants": [{"number": "16465550101", "label": "driver"},
                                         {"number": "16465550109", "label": "passenger"}],
                       "reference": "ride-7"});
    let problem = assert_problem(
        app.post_json("/v1/pairings", &other).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(problem["code"], "reference-conflict");

    // Once the pairing is closed the reference is free again.
    let id = first["id"].as_str().unwrap();
    app.close(id).await;
    let r = app.post_json("/v1/pairings", &other).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn concurrent_retries_of_one_reference_make_one_pairing() {
    let app = spawn_app().await;
    app.add_numbers(&POOL).await;
    let body = json!({"participants": [{"number": "16465550101"}, {"number": "16465550102"}],
                      "reference": "ride-race"});
    let responses = join_all((0..8).map(|_| app.post_json("/v1/pairings", &body))).await;
    let mut ids = HashSet::new();
    for r in responses {
        assert!(
            r.status() == StatusCode::CREATED || r.status() == StatusCode::OK,
            "{}",
            r.status()
        );
        let v: Value = r.json().await.unwrap();
        ids.insert(v["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(app.count("SELECT count(*) FROM pairings").await, 1);
}

#[tokio::test]
async fn an_exhausted_pool_is_a_conflict_that_names_whom_by_masked_number() {
    let app = spawn_app().await;
    app.add_numbers(&POOL[..1]).await;
    app.pair("16465550101", "16465550102").await;
    let r = app.create_pairing("16465550101", "16465550103").await;
    let problem = assert_problem(r, StatusCode::CONFLICT).await;
    assert_eq!(problem["type"], "urn:voice-proxy:problem:pool-exhausted");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("***0101"), "{detail}");
    assert!(detail.contains("US"), "{detail}");
    assert!(
        !detail.contains("6465550101"),
        "the full number must not leak: {detail}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM exhaustion_refusals").await,
        1
    );
}

#[tokio::test]
async fn unknown_and_malformed_pairing_ids() {
    let app = spawn_app().await;
    let problem = assert_problem(
        app.get("/v1/pairings/0194a0c2-0000-7000-8000-000000000000")
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(problem["code"], "not-found");
    assert_problem(
        app.get("/v1/pairings/ride-42").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        app.post_json(
            "/v1/pairings/0194a0c2-0000-7000-8000-000000000000/close",
            &json!({}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn a_pairing_reads_as_expired_the_moment_its_ttl_passes() {
    let app = spawn_app().await;
    app.add_numbers(&POOL).await;
    let p: Value = app
        .post_json(
            "/v1/pairings",
            &json!({"participants": [{"number": "16465550101"}, {"number": "16465550102"}],
                    "ttl_seconds": 2}),
        )
        .await
        .json()
        .await
        .unwrap();
    let proxy = proxy_of(&p, 0);
    let ncco = app.answer("16465550101", &proxy, "CON-exp-1").await;
    assert_eq!(ncco[0]["action"], "connect");

    // Read it until it says expired: that must happen just after its TTL, without a job.
    let id = p["id"].as_str().unwrap();
    let expires_at: chrono::DateTime<chrono::Utc> =
        p["expires_at"].as_str().unwrap().parse().unwrap();
    loop {
        let now: Value = app
            .get(&format!("/v1/pairings/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if now["status"] == "expired" {
            break;
        }
        assert_eq!(now["status"], "active");
        assert!(
            chrono::Utc::now() < expires_at + chrono::Duration::milliseconds(500),
            "still active 500 ms after it expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ncco = app.answer("16465550101", &proxy, "CON-exp-2").await;
    assert_eq!(
        ncco[0]["action"], "talk",
        "an expired pairing does not route, with no sweep"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM pairings WHERE load_released")
            .await,
        0,
        "nothing swept it"
    );

    // Its (person, number) combinations are free again.
    let again = app
        .post_json(
            "/v1/pairings",
            &json!({"participants": [
                {"number": "16465550101", "proxy_number": proxy},
                {"number": "16465550109"}]}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::CREATED);
    // Closing an expired pairing is harmless and it stays expired.
    let r = app.close(id).await;
    assert_eq!(r.status(), StatusCode::OK);
    let closed: Value = r.json().await.unwrap();
    assert_eq!(closed["status"], "expired");
}

#[tokio::test]
async fn closing_stops_routing_at_once_and_closing_again_is_harmless() {
    let app = spawn_app().await;
    app.add_numbers(&POOL).await;
    let p = app.pair("16465550101", "16465550102").await;
    let id = p["id"].as_str().unwrap();
    let r = app.close(id).await;
    assert_eq!(r.status(), StatusCode::OK);
    let closed: Value = r.json().await.unwrap();
    assert_eq!(closed["status"], "closed");
    assert!(closed["closed_at"].is_string());
    let ncco = app
        .answer("16465550101", &proxy_of(&p, 0), "CON-closed")
        .await;
    assert_eq!(ncco[0]["action"], "talk");

    let r = app.close(id).await;
    assert_eq!(r.status(), StatusCode::OK);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["status"], "closed");
    assert_eq!(again["closed_at"], closed["closed_at"]);
}

#[tokio::test]
async fn pairings_are_listed_by_reference_number_and_status() {
    let app = spawn_app().await;
    app.add_numbers(&POOL).await;
    let a = app
        .post_json("/v1/pairings", &json!({"participants": [{"number": "16465550101"}, {"number": "16465550102"}], "reference": "r-a"}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let b = app.pair("16465550103", "16465550104").await;
    let c = app.pair("16465550101", "16465550105").await;
    let c_id = c["id"].as_str().unwrap();
    app.close(c_id).await;

    let ids = |v: Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = ids(app.get("/v1/pairings").await.json().await.unwrap());
    assert_eq!(
        all,
        vec![
            c_id.to_owned(),
            b["id"].as_str().unwrap().to_owned(),
            a["id"].as_str().unwrap().to_owned()
        ],
        "newest first"
    );
    let by_ref = ids(app
        .get("/v1/pairings?reference=r-a")
        .await
        .json()
        .await
        .unwrap());
    assert_eq!(by_ref, vec![a["id"].as_str().unwrap().to_owned()]);
    let by_number = ids(app
        .get("/v1/pairings?number=%2B1%20646%20555%200101")
        .await
        .json()
        .await
        .unwrap());
    assert_eq!(by_number.len(), 2);
    let closed = ids(app
        .get("/v1/pairings?status=closed")
        .await
        .json()
        .await
        .unwrap());
    assert_eq!(closed, vec![c_id.to_owned()]);
    let active = ids(app
        .get("/v1/pairings?status=active")
        .await
        .json()
        .await
        .unwrap());
    assert_eq!(active.len(), 2);
    let page: Value = app.get("/v1/pairings?limit=2").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next_cursor"].as_str().unwrap();
    let rest = ids(app
        .get(&format!("/v1/pairings?limit=2&cursor={next}"))
        .await
        .json()
        .await
        .unwrap());
    assert_eq!(rest, vec![a["id"].as_str().unwrap().to_owned()]);
    assert_problem(
        app.get("/v1/pairings?status=sleeping").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
}

/// Invariant 4: many concurrent creations for one person never give them one proxy number
/// twice, and refuse only when the pool really has nothing left for them.
#[tokio::test]
async fn concurrent_pairings_for_one_person_never_share_a_proxy_number() {
    let app = spawn_app().await;
    let pool: Vec<String> = (0..6).map(|i| format!("1212555013{i}")).collect();
    for n in &pool {
        app.add_numbers(&[n]).await;
    }
    let counterparts: Vec<String> = (0..10).map(|i| format!("1646555020{i}")).collect();
    let responses = join_all(
        counterparts
            .iter()
            .map(|c| app.create_pairing("16465550101", c)),
    )
    .await;
    let mut created = Vec::new();
    for r in responses {
        match r.status() {
            StatusCode::CREATED => created.push(r.json::<Value>().await.unwrap()),
            StatusCode::CONFLICT => {
                let p: Value = r.json().await.unwrap();
                assert_eq!(p["code"], "pool-exhausted");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(
        created.len(),
        pool.len(),
        "exactly as many as the pool has numbers"
    );
    let proxies: HashSet<String> = created.iter().map(|p| proxy_of(p, 0)).collect();
    assert_eq!(
        proxies.len(),
        created.len(),
        "never the same proxy number twice"
    );
}
