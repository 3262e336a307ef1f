//! Callbacks: endpoints managed over the API, every event of a flow delivered in order and
//! signed per Standard Webhooks (checked with the `standardwebhooks` crate), retries on the
//! schedule, rotation, and two instances sharing the work without sending a message twice at
//! once.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::calls::{completed_call_events, routed_call};
use crate::helpers::{
    TestApp, assert_problem, create_database, spawn_app_on, spawn_app_with, wait_until,
};
use crate::receiver::{Receiver, Reply};

/// Settings for a test with callbacks: a receiver on plain HTTP, a short retry schedule, a
/// dispatcher that looks often.
pub const CALLBACKS: [(&str, &str); 4] = [
    ("WEBHOOK_ALLOW_HTTP", "true"),
    ("WEBHOOK_RETRY_SCHEDULE", "1s,2s,4s"),
    ("WEBHOOK_POLL_INTERVAL_MS", "100"),
    ("WEBHOOK_TIMEOUT_MS", "1000"),
];

const PARTICIPANTS: [&str; 2] = ["16465550101", "16465550102"];

/// Adds an endpoint for `url` and returns its body (with its `secret`).
pub async fn add_endpoint(app: &TestApp, url: &str, event_types: Option<&[&str]>) -> Value {
    let mut body = json!({"url": url, "description": "test receiver"});
    if let Some(types) = event_types {
        body["event_types"] = json!(types);
    }
    let r = app.post_json("/v1/webhook-endpoints", &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

/// The `type`s of the messages about `pairing`, in the order they arrived, each message once.
fn types_for(received: &[crate::receiver::Received], pairing: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    received
        .iter()
        .filter(|r| r.json()["data"]["pairing_id"] == pairing && seen.insert(r.id().to_owned()))
        .map(|r| r.event_type())
        .collect()
}

#[tokio::test]
async fn a_whole_flow_is_told_in_order_signed_and_without_a_real_number() {
    let app = spawn_app_with(&CALLBACKS).await;
    let receiver = Receiver::start(Reply::Status(204));
    let endpoint = add_endpoint(&app, &receiver.url, None).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));

    let call = routed_call(&app, "CON-cb-1").await;
    for e in completed_call_events("CON-cb-1", &call) {
        assert_eq!(app.post_event(&e).await.status(), StatusCode::NO_CONTENT);
    }
    app.settle().await;
    let pairing = &call.pairing_id;
    let r = app
        .patch_json(
            &format!("/v1/pairings/{pairing}"),
            &json!({"ttl_seconds": 7200}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.close(pairing).await.status(), StatusCode::OK);

    let expected = [
        "pairing.created",
        "call.started",
        "call.answered",
        "call.ended",
        "pairing.updated",
        "pairing.closed",
    ];
    wait_until(
        "the whole flow to be delivered",
        Duration::from_secs(20),
        async || types_for(&receiver.received(), pairing).len() >= expected.len(),
    )
    .await;
    let received = receiver.received();
    assert_eq!(types_for(&received, pairing), expected);

    for r in &received {
        assert!(r.verifies_with(&secret), "every delivery verifies");
        let raw = String::from_utf8(r.body.clone()).unwrap();
        for number in PARTICIPANTS {
            assert!(!raw.contains(number), "a real number in {raw}");
        }
        let body = r.json();
        assert!(chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).is_ok());
        assert_eq!(r.headers["content-type"], "application/json");
    }
    let ids: HashSet<&str> = received.iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), received.len(), "one webhook-id per message");

    let by_type: HashMap<String, Value> = received
        .iter()
        .map(|r| (r.event_type(), r.json()["data"].clone()))
        .collect();
    let created = &by_type["pairing.created"];
    assert_eq!(created["status"], "active");
    assert_eq!(created["participants"][0]["label"], "driver");
    assert_eq!(created["participants"][0]["proxy_number"], call.proxy_a);
    let started = &by_type["call.started"];
    assert_eq!(started["outcome"], "routed");
    assert_eq!(started["caller_label"], "driver");
    assert_eq!(started["callee_label"], "passenger");
    assert_eq!(started["proxy_number"], call.proxy_a);
    assert_eq!(
        by_type["call.answered"]["answered_at"],
        "2024-05-01T10:00:05.000Z"
    );
    let ended = &by_type["call.ended"];
    assert_eq!(ended["status"], "completed");
    assert_eq!(ended["talk_seconds"], 132);
    assert_eq!(ended["price"], "0.036675");
    assert_eq!(by_type["pairing.closed"]["status"], "closed");

    // What was delivered is listed with its attempt.
    let id = endpoint["id"].as_str().unwrap();
    let list: Value = app
        .get(&format!("/v1/webhook-endpoints/{id}/deliveries"))
        .await
        .json()
        .await
        .unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), received.len());
    for item in items {
        assert_eq!(item["state"], "succeeded");
        assert_eq!(item["next_attempt_at"], Value::Null);
        assert_eq!(item["attempts"].as_array().unwrap().len(), 1);
        assert_eq!(item["attempts"][0]["status_code"], 204);
        assert_eq!(item["attempts"][0]["error"], Value::Null);
    }
    assert!(
        app.metric("callback_deliveries_total{result=\"succeeded\"}")
            .await
            >= expected.len() as f64
    );
}

#[tokio::test]
async fn an_endpoint_gets_only_the_types_it_asked_for_and_nothing_while_disabled() {
    let app = spawn_app_with(&CALLBACKS).await;
    let all = Receiver::start(Reply::Status(200));
    let ended_only = Receiver::start(Reply::Status(200));
    let disabled = Receiver::start(Reply::Status(200));
    add_endpoint(&app, &all.url, None).await;
    let picky = add_endpoint(&app, &ended_only.url, Some(&["pairing.closed"])).await;
    assert_eq!(picky["event_types"], json!(["pairing.closed"]));
    let off = add_endpoint(&app, &disabled.url, None).await;
    let r = app
        .patch_json(
            &format!("/v1/webhook-endpoints/{}", off["id"].as_str().unwrap()),
            &json!({"disabled": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["disabled"], true);

    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair(PARTICIPANTS[0], PARTICIPANTS[1]).await;
    assert_eq!(
        app.close(p["id"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );
    all.wait_for(2, Duration::from_secs(10)).await;
    let closed = ended_only.wait_for(1, Duration::from_secs(10)).await;
    // The others are sent by now: the picky endpoint was sent nothing else.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(closed.len(), 1);
    assert_eq!(ended_only.received().len(), 1);
    assert_eq!(closed[0].event_type(), "pairing.closed");
    assert!(disabled.received().is_empty());
}

#[tokio::test]
async fn failed_attempts_are_retried_on_the_schedule_with_the_same_id() {
    let app = spawn_app_with(&CALLBACKS).await;
    let receiver = Receiver::start(Reply::Status(200));
    // Two 5xx, then an answer after the 1 s timeout, then a 200.
    receiver.queue_replies(vec![
        Reply::Status(503),
        Reply::Status(500),
        Reply::After(Duration::from_millis(1500), Box::new(Reply::Status(200))),
    ]);
    let endpoint = add_endpoint(&app, &receiver.url, Some(&["pairing.created"])).await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    app.pair(PARTICIPANTS[0], PARTICIPANTS[1]).await;

    let got = receiver.wait_for(4, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|r| r.id() == got[0].id()), "one webhook-id");
    assert!(got.iter().all(|r| r.body == got[0].body), "the same body");
    // Waits of 1 s, 2 s and 4 s (each plus up to a tenth), counted from the end of the attempt
    // before; the third attempt took the 1 s timeout.
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    let within = |gap: Duration, low: f64, high: f64| {
        gap >= Duration::from_secs_f64(low) && gap <= Duration::from_secs_f64(high)
    };
    assert!(within(gaps[0], 1.0, 1.9), "{gaps:?}");
    assert!(within(gaps[1], 2.0, 2.9), "{gaps:?}");
    assert!(within(gaps[2], 5.0, 6.0), "{gaps:?}");

    let id = endpoint["id"].as_str().unwrap();
    let message = got[0].id();
    let path = format!("/v1/webhook-endpoints/{id}/deliveries/{message}");
    let mut delivery = Value::Null;
    wait_until(
        "the last attempt to be recorded",
        Duration::from_secs(5),
        async || {
            delivery = app.get(&path).await.json().await.unwrap();
            delivery["state"] == "succeeded"
        },
    )
    .await;
    let codes: Vec<Value> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, [json!(503), json!(500), Value::Null, json!(200)]);
    assert_eq!(delivery["attempts"][0]["error"], "answered HTTP 503");
    assert_eq!(delivery["attempts"][2]["error"], "no answer within 1000 ms");
    assert_eq!(delivery["payload"]["type"], "pairing.created");
}

#[tokio::test]
async fn a_message_that_fails_every_attempt_is_marked_failed_and_can_be_sent_again() {
    let app = spawn_app_with(&[
        ("WEBHOOK_ALLOW_HTTP", "true"),
        ("WEBHOOK_RETRY_SCHEDULE", "200ms,200ms"),
        ("WEBHOOK_POLL_INTERVAL_MS", "100"),
    ])
    .await;
    let receiver = Receiver::start(Reply::Status(410));
    let endpoint = add_endpoint(&app, &receiver.url, Some(&["pairing.created"])).await;
    let id = endpoint["id"].as_str().unwrap();
    app.add_numbers(&["12125550123", "12125550124"]).await;
    app.pair(PARTICIPANTS[0], PARTICIPANTS[1]).await;

    let failed = format!("/v1/webhook-endpoints/{id}/deliveries?state=failed");
    let mut list = Value::Null;
    wait_until(
        "the delivery to fail",
        Duration::from_secs(10),
        async || {
            list = app.get(&failed).await.json().await.unwrap();
            !list["items"].as_array().unwrap().is_empty()
        },
    )
    .await;
    assert_eq!(
        receiver.received().len(),
        3,
        "the first attempt and two retries"
    );
    let delivery = &list["items"][0];
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 3);
    let message = delivery["message_id"].as_str().unwrap();
    let pending: Value = app
        .get(&format!(
            "/v1/webhook-endpoints/{id}/deliveries?state=pending"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pending["items"], json!([]));

    // Sent again by hand, now that the receiver is back.
    receiver.set_reply(Reply::Status(200));
    let r = app
        .post_json(
            &format!("/v1/webhook-endpoints/{id}/deliveries/{message}/retry"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "pending");
    let again = receiver.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(again[3].id(), message);
    wait_until(
        "the retry to be recorded",
        Duration::from_secs(5),
        async || {
            let d: Value = app
                .get(&format!("/v1/webhook-endpoints/{id}/deliveries/{message}"))
                .await
                .json()
                .await
                .unwrap();
            d["state"] == "succeeded" && d["attempts"].as_array().unwrap().len() == 4
        },
    )
    .await;

    let unknown = uuid::Uuid::new_v4();
    let r = app
        .post_json(
            &format!("/v1/webhook-endpoints/{id}/deliveries/{unknown}/retry"),
            &json!({}),
        )
        .await;
    assert_problem(r, StatusCode::NOT_FOUND).await;

    // Deleting the endpoint deletes its deliveries and their attempts.
    let r = app.delete(&format!("/v1/webhook-endpoints/{id}")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_deliveries").await,
        0
    );
    assert_eq!(app.count("SELECT count(*) FROM webhook_attempts").await, 0);
}

#[tokio::test]
async fn a_rotated_secret_keeps_signing_beside_the_new_one() {
    let app = spawn_app_with(&CALLBACKS).await;
    let receiver = Receiver::start(Reply::Status(200));
    let endpoint = add_endpoint(&app, &receiver.url, Some(&["pairing.created"])).await;
    let old = endpoint["secret"].as_str().unwrap().to_owned();
    let id = endpoint["id"].as_str().unwrap();
    app.add_numbers(&["12125550123", "12125550124", "12125550125", "12125550126"])
        .await;
    app.pair(PARTICIPANTS[0], PARTICIPANTS[1]).await;
    let before = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(before[0].signatures(), 1);

    let r = app
        .post_json(
            &format!("/v1/webhook-endpoints/{id}/rotate-secret"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let rotated: Value = r.json().await.unwrap();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let retires: chrono::DateTime<chrono::Utc> = rotated["previous_secret_retires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let in_a_day = chrono::Utc::now() + chrono::Duration::hours(24);
    assert!((retires - in_a_day).num_seconds().abs() < 60);

    app.pair("16465550103", "16465550104").await;
    let after = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(after[1].signatures(), 2);
    assert!(after[1].verifies_with(&new));
    assert!(after[1].verifies_with(&old));
    assert!(!before[0].verifies_with(&new));

    // Neither the endpoint nor its list shows a secret again.
    let shown = app
        .get(&format!("/v1/webhook-endpoints/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!shown.contains("whsec_"), "{shown}");
}

#[tokio::test]
async fn two_instances_share_the_deliveries_and_never_send_one_message_twice_at_once() {
    let database = create_database().await;
    let first = spawn_app_on(&database, &CALLBACKS).await;
    let second = spawn_app_on(&database, &CALLBACKS).await;
    // Slow answers, so that a message sent twice at once would overlap.
    let receiver = Receiver::start(Reply::After(
        Duration::from_millis(200),
        Box::new(Reply::Status(200)),
    ));
    add_endpoint(&first, &receiver.url, Some(&["pairing.created"])).await;
    let numbers: Vec<String> = (0..12).map(|i| format!("121255501{i:02}")).collect();
    first
        .add_numbers(&numbers.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let made = 12;
    for i in 0..made {
        let app = if i % 2 == 0 { &first } else { &second };
        app.pair(&format!("164655502{i:02}"), &format!("164655503{i:02}"))
            .await;
    }
    let got = receiver.wait_for(made, Duration::from_secs(20)).await;
    // Every message delivered, and nothing sent again after its success.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got_after = receiver.received();
    let ids: HashSet<&str> = got_after.iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), made);
    assert_eq!(got_after.len(), got.len());
    assert_eq!(got.len(), made, "each message sent once");
    assert!(!receiver.overlapped());
}

#[tokio::test]
async fn a_pairing_expiry_is_told_once_within_seconds_by_one_of_two_instances() {
    let database = create_database().await;
    let first = spawn_app_on(&database, &CALLBACKS).await;
    let _second = spawn_app_on(&database, &CALLBACKS).await;
    let receiver = Receiver::start(Reply::Status(200));
    add_endpoint(&first, &receiver.url, Some(&["pairing.expired"])).await;
    first.add_numbers(&["12125550123", "12125550124"]).await;
    let r = first
        .post_json(
            "/v1/pairings",
            &json!({"participants": [{"number": PARTICIPANTS[0]}, {"number": PARTICIPANTS[1]}],
                    "ttl_seconds": 2}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let p: Value = r.json().await.unwrap();
    let expires_at: chrono::DateTime<chrono::Utc> =
        p["expires_at"].as_str().unwrap().parse().unwrap();

    let expired = receiver.wait_for(1, Duration::from_secs(10)).await;
    let told_after = chrono::Utc::now() - expires_at;
    assert!(
        told_after < chrono::Duration::seconds(5),
        "told {told_after} after the expiry"
    );
    assert_eq!(expired[0].json()["data"]["pairing_id"], p["id"]);
    assert_eq!(expired[0].json()["data"]["status"], "expired");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.received().len(), 1, "told once");
}

#[tokio::test]
async fn a_refusal_for_want_of_a_number_is_told_with_its_country_and_no_number() {
    let app = spawn_app_with(&CALLBACKS).await;
    let receiver = Receiver::start(Reply::Status(200));
    add_endpoint(&app, &receiver.url, Some(&["pool.exhausted"])).await;
    let r = app
        .post_json(
            "/v1/pairings",
            &json!({"participants": [{"number": PARTICIPANTS[0]}, {"number": PARTICIPANTS[1]}],
                    "reference": "trip-7"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    let body = got[0].json();
    assert_eq!(body["type"], "pool.exhausted");
    assert_eq!(body["data"]["reference"], "trip-7");
    let raw = String::from_utf8(got[0].body.clone()).unwrap();
    assert!(PARTICIPANTS.iter().all(|n| !raw.contains(n)), "{raw}");
}

#[tokio::test]
async fn endpoints_are_checked_and_their_secret_is_shown_once() {
    let strict = spawn_app_with(&[]).await;
    let r = strict
        .post_json(
            "/v1/webhook-endpoints",
            &json!({"url": "http://backend.example.com/hooks"}),
        )
        .await;
    let body = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body["detail"].as_str().unwrap().contains("https"), "{body}");

    for bad in [
        json!({"url": "https://user:pw@backend.example.com/hooks"}),
        json!({"url": "https://backend.example.com/hooks#frag"}),
        json!({"url": "ftp://backend.example.com/hooks"}),
        json!({"url": "https://backend.example.com/hooks", "event_types": []}),
        json!({"url": "https://backend.example.com/hooks", "event_types": ["call.nope"]}),
        json!({"url": "https://backend.example.com/hooks",
               "event_types": ["call.ended", "call.ended"]}),
        json!({"url": "https://backend.example.com/hooks", "description": "a\u{200b}b"}),
        json!({"url": "https://backend.example.com/hooks", "secret": "whsec_AAAA"}),
    ] {
        let r = strict.post_json("/v1/webhook-endpoints", &bad).await;
        assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    }

    let r = strict
        .post_json(
            "/v1/webhook-endpoints",
            &json!({"url": "https://backend.example.com/hooks"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["event_types"], Value::Null);
    assert_eq!(created["disabled"], false);
    let id = created["id"].as_str().unwrap();
    let listed = strict
        .get("/v1/webhook-endpoints")
        .await
        .text()
        .await
        .unwrap();
    assert!(listed.contains(id) && !listed.contains("whsec_"));

    let r = strict
        .patch_json(
            &format!("/v1/webhook-endpoints/{id}"),
            &json!({"event_types": ["call.ended"], "description": null}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let changed: Value = r.json().await.unwrap();
    assert_eq!(changed["event_types"], json!(["call.ended"]));
    assert_eq!(changed["description"], Value::Null);
    for cleared in [json!({"url": null}), json!({"disabled": null})] {
        let r = strict
            .patch_json(&format!("/v1/webhook-endpoints/{id}"), &cleared)
            .await;
        let body = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(body["detail"].as_str().unwrap().contains("cannot be null"));
    }
    // null is what the API shows for "every type", and may be sent back.
    let r = strict
        .post_json(
            "/v1/webhook-endpoints",
            &json!({"url": "https://backend.example.com/other", "event_types": null,
                    "description": null}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.json::<Value>().await.unwrap()["event_types"], Value::Null);

    assert_eq!(
        strict
            .delete(&format!("/v1/webhook-endpoints/{id}"))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let r = strict.get(&format!("/v1/webhook-endpoints/{id}")).await;
    assert_problem(r, StatusCode::NOT_FOUND).await;
    let r = strict.get("/v1/webhook-endpoints/not-a-uuid").await;
    assert_problem(r, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_dead_endpoint_does_not_hold_up_the_others() {
    let app = spawn_app_with(&[
        ("WEBHOOK_ALLOW_HTTP", "true"),
        ("WEBHOOK_POLL_INTERVAL_MS", "100"),
        ("WEBHOOK_TIMEOUT_MS", "20000"),
        ("WEBHOOK_ENDPOINT_CONCURRENCY", "2"),
    ])
    .await;
    // Accepts every request and answers none within the 20 s timeout.
    let dead = Receiver::start(Reply::After(
        Duration::from_secs(60),
        Box::new(Reply::Status(200)),
    ));
    let live = Receiver::start(Reply::Status(200));
    add_endpoint(&app, &dead.url, None).await;
    add_endpoint(&app, &live.url, None).await;
    let numbers: Vec<String> = (0..10).map(|i| format!("121255501{i:02}")).collect();
    app.add_numbers(&numbers.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let made = 10;
    for i in 0..made {
        app.pair(&format!("164655502{i:02}"), &format!("164655503{i:02}"))
            .await;
    }
    // Every message reaches the live endpoint long before the dead one's first attempts time
    // out, while the dead one holds only its own two slots.
    live.wait_for(made, Duration::from_secs(10)).await;
    assert!(dead.received().len() <= 2, "{}", dead.received().len());
}

#[tokio::test]
async fn messages_queued_behind_a_retrying_one_are_not_due_before_it() {
    let app = spawn_app_with(&[
        ("WEBHOOK_ALLOW_HTTP", "true"),
        ("WEBHOOK_RETRY_SCHEDULE", "1h"),
        ("WEBHOOK_POLL_INTERVAL_MS", "100"),
    ])
    .await;
    // Fails each attempt after a second, while more messages about the pairing are written.
    let failing = Receiver::start(Reply::After(
        Duration::from_secs(1),
        Box::new(Reply::Status(503)),
    ));
    let live = Receiver::start(Reply::Status(200));
    let stuck = add_endpoint(&app, &failing.url, None).await;
    add_endpoint(&app, &live.url, None).await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair(PARTICIPANTS[0], PARTICIPANTS[1]).await;
    let id = p["id"].as_str().unwrap();
    failing.wait_for(1, Duration::from_secs(10)).await;
    // The first attempt is under way; what follows about the pairing queues behind it, and
    // when the attempt fails, waits the hour of its retry with it.
    for ttl in [7200, 7300, 7400] {
        let r = app
            .patch_json(&format!("/v1/pairings/{id}"), &json!({"ttl_seconds": ttl}))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    live.wait_for(4, Duration::from_secs(10)).await;
    wait_until(
        "the first attempt to fail",
        Duration::from_secs(5),
        async || {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_attempts")
                .fetch_one(&app.pool)
                .await
                .unwrap_or(0)
                >= 5
        },
    )
    .await;
    let early: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_deliveries d
          WHERE d.endpoint_id = $1::uuid AND d.state = 'pending'
            AND d.next_attempt_at < now() + interval '50 minutes'",
    )
    .bind(stuck["id"].as_str().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(early, 0, "every queued message waits for the retrying one");
    assert_eq!(failing.received().len(), 1, "and none is sent meanwhile");
}
