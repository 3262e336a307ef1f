//! Real Vonage traffic, replayed: the request shapes of shared/reference/vonage/protocol.md
//! (answer by GET and POST, events as strings and as numbers, `answered` with null fields,
//! `completed`, a transfer, a recording event by GET, an error), each acknowledged and shown with
//! its call; calls that did not connect, told as they happened; callers that are not phone numbers.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, proxy_of, spawn_app, spawn_app_with};

const A: &str = "16465550101";
const B: &str = "16465550102";

async fn paired(app: &TestApp) -> (String, String) {
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair(A, B).await;
    (proxy_of(&p, 0), proxy_of(&p, 1))
}

async fn get_event(app: &TestApp, query: &[(&str, &str)]) -> reqwest::Response {
    app.client
        .get(app.url("/webhooks/event"))
        .query(query)
        .send()
        .await
        .unwrap()
}

/// The call record of `conversation`, with its events.
async fn call_of(app: &TestApp, conversation: &str) -> Value {
    app.settle().await;
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM calls WHERE conversation_uuid = $1")
        .bind(conversation)
        .fetch_one(&app.pool)
        .await
        .expect("a call record");
    let r = app.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

fn event_count(call: &Value) -> usize {
    call["events"].as_array().unwrap().len()
}

#[tokio::test]
async fn every_shape_vonage_sends_is_acknowledged_and_shown_with_its_call() {
    let app = spawn_app().await;
    let (proxy_a, proxy_b) = paired(&app).await;
    let con = "CON-2541d01c-253e-48be-a8e0-da4bbe4c3722";
    let inbound = "0A0000000123ABCD1";
    let outbound = "63f61863a5114f6b86e146edebcf9356";

    // The answer, as the captured GET request had it.
    let r = app
        .client
        .get(app.url("/webhooks/answer"))
        .query(&[
            ("to", proxy_a.as_str()),
            ("from", A),
            ("conversation_uuid", con),
            ("uuid", inbound),
        ])
        .header("user-agent", "Apache-HttpAsyncClient/4.1 (Java/1.8.0_66)")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ncco: Value = r.json().await.unwrap();
    assert_eq!(ncco[0]["action"], "connect");
    assert_eq!(ncco[0]["endpoint"][0]["number"], B);

    let posted = [
        json!({"from": A, "to": proxy_a, "uuid": inbound, "conversation_uuid": con,
               "status": "started", "direction": "inbound",
               "timestamp": "2020-07-01T20:45:33.796Z", "headers": {}}),
        json!({"from": A, "to": proxy_a, "uuid": inbound, "conversation_uuid": con,
               "status": "answered", "direction": "inbound", "start_time": null, "rate": null,
               "network": null, "timestamp": "2020-07-01T20:45:34.000Z", "headers": {}}),
        json!({"from": proxy_b, "to": B, "uuid": outbound, "conversation_uuid": con,
               "status": "ringing", "direction": "outbound",
               "timestamp": "2020-07-01T20:45:35.000Z"}),
        json!({"from": proxy_b, "to": B, "uuid": outbound, "conversation_uuid": con,
               "status": "answered", "direction": "outbound", "start_time": null, "rate": null,
               "network": null, "timestamp": "2020-07-01T20:45:40.000Z"}),
        json!({"call_uuid": outbound, "conversation_uuid": con, "status": "human",
               "timestamp": "2020-07-01T20:45:41.000Z"}),
        // Duration, rate and price as strings (the captured payload) ...
        json!({"from": proxy_b, "to": B, "uuid": outbound, "conversation_uuid": con,
               "status": "completed", "direction": "outbound",
               "start_time": "2020-07-01T20:45:40.000Z", "end_time": "2020-07-01T20:45:47.000Z",
               "duration": "7", "rate": "0.00450000", "price": "0.00052500",
               "network": "GB-FIXED", "disconnected_by": "user", "sip_code": 200,
               "timestamp": "2020-07-01T20:45:47.100Z"}),
        // ... and as numbers (the Java SDK's tests).
        json!({"from": A, "to": proxy_a, "uuid": inbound, "conversation_uuid": con,
               "status": "completed", "direction": "inbound",
               "start_time": "2020-07-01T20:45:34.000Z", "end_time": "2020-07-01T20:45:47.000Z",
               "duration": 13, "rate": 0.0045, "price": 0.000975, "network": "310260",
               "timestamp": "2020-07-01T20:45:47.200Z"}),
    ];
    for event in &posted {
        let r = app.post_event(event).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{event}");
    }
    // A recording event, sent by GET (captured so: no milliseconds, no uuid, no status).
    let r = get_event(
        &app,
        &[
            ("start_time", "2020-07-14T01:23:04Z"),
            ("end_time", "2020-07-14T01:23:10Z"),
            ("size", "12345"),
            ("recording_uuid", "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"),
            (
                "recording_url",
                "https://api.nexmo.com/v1/files/aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
            ),
            ("conversation_uuid", con),
            ("timestamp", "2020-07-14T01:23:10.000Z"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // An error event, by GET: a `reason` and no status.
    let r = get_event(
        &app,
        &[
            (
                "reason",
                "Syntax error in NCCO. Invalid value type or action.",
            ),
            ("conversation_uuid", con),
            ("timestamp", "2020-07-14T01:23:11.000Z"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // A transfer of the callee's leg into another call's conversation: shown with both calls.
    let other = "CON-99999999-253e-48be-a8e0-da4bbe4c3722";
    app.answer(B, &proxy_b, other).await;
    let transfer = json!({"uuid": outbound, "conversation_uuid_from": con,
        "conversation_uuid_to": other, "type": "transfer",
        "timestamp": "2020-07-01T20:45:48.000Z"});
    assert_eq!(
        app.post_event(&transfer).await.status(),
        StatusCode::NO_CONTENT
    );

    let call = call_of(&app, con).await;
    assert_eq!(call["status"], "completed");
    assert_eq!(call["duration_seconds"], 7);
    assert_eq!(call["price"], "0.0015");
    assert_eq!(call["answered_at"], "2020-07-01T20:45:40Z");
    assert_eq!(event_count(&call), posted.len() + 3);
    let payloads: Vec<&Value> = call["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["payload"])
        .collect();
    assert!(payloads.iter().any(|p| p["size"] == "12345"), "recording");
    assert!(
        payloads.iter().any(|p| p["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("Syntax"))),
        "error"
    );
    assert!(payloads.iter().any(|p| p["type"] == "transfer"), "transfer");
    let other_call = call_of(&app, other).await;
    assert_eq!(
        event_count(&other_call),
        1,
        "the transfer, in the call it joined"
    );
    assert_eq!(other_call["events"][0]["payload"]["type"], "transfer");

    // Delivered again (Vonage retries): acknowledged, stored once.
    for event in &posted {
        assert_eq!(app.post_event(event).await.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(event_count(&call_of(&app, con).await), posted.len() + 3);
}

#[tokio::test]
async fn the_answer_by_post_keeps_the_endpoint_type() {
    let app = spawn_app().await;
    let (proxy_a, _) = paired(&app).await;
    let r = app
        .client
        .post(app.url("/webhooks/answer"))
        .json(
            &json!({"to": proxy_a, "from": A, "uuid": "63f61863a5114f6b86e146edebcf9356",
            "conversation_uuid": "CON-post", "endpoint_type": "phone",
            "region_url": "https://api-eu-3.vonage.com", "custom_data": {"x": 1}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()[0]["action"], "connect");
    let call = call_of(&app, "CON-post").await;
    assert_eq!(call["endpoint_type"], "phone");
    assert_eq!(call["outcome"], "routed");
}

#[tokio::test]
async fn in_app_and_sip_callers_hear_the_message_and_are_not_called_anonymous() {
    let app = spawn_app_with(&[("NO_ROUTE_MESSAGE", "Not connected.")]).await;
    let (proxy_a, _) = paired(&app).await;
    let cases = [
        (
            "CON-app",
            json!({"to": proxy_a, "from_user": "alice", "uuid": "u1",
                   "conversation_uuid": "CON-app", "endpoint_type": "app"}),
            "unsupported_caller",
        ),
        (
            "CON-sip",
            json!({"to": proxy_a, "from": "sip:alice@sip.example.com", "uuid": "u2",
                   "conversation_uuid": "CON-sip", "endpoint_type": "sip"}),
            "unsupported_caller",
        ),
        (
            "CON-websocket",
            json!({"to": proxy_a, "from": "wss://media.example.com/socket", "uuid": "u4",
                   "conversation_uuid": "CON-websocket", "endpoint_type": "websocket"}),
            "unsupported_caller",
        ),
        (
            "CON-withheld",
            json!({"to": proxy_a, "from": "Restricted", "uuid": "u3",
                   "conversation_uuid": "CON-withheld", "endpoint_type": "phone"}),
            "anonymous",
        ),
    ];
    for (conversation, body, outcome) in cases {
        let r = app
            .client
            .post(app.url("/webhooks/answer"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let ncco: Value = r.json().await.unwrap();
        assert_eq!(
            ncco,
            json!([{"action": "talk", "text": "Not connected.", "language": "en-US"}])
        );
        let call = call_of(&app, conversation).await;
        assert_eq!(call["outcome"], outcome, "{conversation}");
        assert_eq!(call["caller"], Value::Null);
        assert_eq!(call["endpoint_type"], body["endpoint_type"]);
    }
    let r = app.get("/v1/calls?limit=10").await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn events_that_cannot_be_filed_are_refused_and_odd_fields_are_kept() {
    let app = spawn_app().await;
    let refused = [
        json!([1, 2]),
        json!("started"),
        json!({"uuid": "leg", "status": "started"}),
        json!({"conversation_uuid": "C".repeat(101), "status": "started"}),
        json!({"conversation_uuid": "CON-1", "uuid": "x".repeat(60_000)}),
    ];
    for event in refused {
        let r = app.post_event(&event).await;
        let body = assert_problem(r, StatusCode::BAD_REQUEST).await;
        assert!(!body["detail"].as_str().unwrap().contains("xxxxxxxxxx"));
    }
    let r = get_event(&app, &[("status", "started"), ("uuid", "leg")]).await;
    assert_problem(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(app.count("SELECT count(*) FROM call_events").await, 0);

    // Fields of unexpected types or values: kept as received, left out of the call.
    app.add_numbers(&["12125550123"]).await;
    app.answer(A, "12125550123", "CON-odd").await;
    let odd = json!({"uuid": "CON-odd-in", "conversation_uuid": "CON-odd",
        "status": "answered", "timestamp": "2020-07-01T20:45:34Z", "price": "2e18",
        "duration": {"seconds": 4}, "start_time": "-5000-01-01T00:00:00Z",
        "brand_new": [1, 2, 3]});
    assert_eq!(app.post_event(&odd).await.status(), StatusCode::NO_CONTENT);
    let call = call_of(&app, "CON-odd").await;
    assert_eq!(call["events"][0]["payload"], odd);
    assert_eq!(call["status"], "answered");
    assert_eq!(call["price"], Value::Null);
    assert_eq!(call["duration_seconds"], Value::Null);
}

/// A busy callee: Vonage reports `busy` for the callee's leg, then `completed` for it.
fn unconnected_events(conversation: &str, status: &str) -> Vec<Value> {
    let inbound = format!("{conversation}-in");
    let outbound = format!("{conversation}-out");
    let ev = |leg: &str, dir: &str, status: &str, ts: &str| {
        json!({"uuid": leg, "conversation_uuid": conversation, "status": status,
               "direction": dir, "timestamp": ts})
    };
    vec![
        ev(&inbound, "inbound", "started", "2024-05-01T10:00:00.000Z"),
        ev(&inbound, "inbound", "answered", "2024-05-01T10:00:00.500Z"),
        ev(&outbound, "outbound", "started", "2024-05-01T10:00:01.000Z"),
        ev(&outbound, "outbound", "ringing", "2024-05-01T10:00:01.500Z"),
        ev(&outbound, "outbound", status, "2024-05-01T10:00:20.000Z"),
        ev(
            &outbound,
            "outbound",
            "completed",
            "2024-05-01T10:00:20.100Z",
        ),
        ev(&inbound, "inbound", "completed", "2024-05-01T10:00:25.000Z"),
    ]
}

#[tokio::test]
async fn a_call_the_callee_did_not_take_keeps_that_status_and_can_be_listed_by_it() {
    let app = spawn_app_with(&[(
        "CALLEE_UNAVAILABLE_MESSAGE",
        "Your driver cannot take the call.",
    )])
    .await;
    let (proxy_a, _) = paired(&app).await;
    for status in [
        "busy",
        "timeout",
        "unanswered",
        "cancelled",
        "rejected",
        "failed",
    ] {
        let conversation = format!("CON-{status}");
        app.answer(A, &proxy_a, &conversation).await;
        for event in unconnected_events(&conversation, status) {
            let r = app.post_event(&event).await;
            let told = event["direction"] == "outbound" && event["status"] == status;
            if told && status != "cancelled" {
                // A synchronous connect: what we answer is played to the caller.
                assert_eq!(r.status(), StatusCode::OK, "{status}");
                let ncco: Value = r.json().await.unwrap();
                assert_eq!(
                    ncco,
                    json!([{"action": "talk", "text": "Your driver cannot take the call.",
                            "language": "en-US"}])
                );
            } else {
                assert_eq!(r.status(), StatusCode::NO_CONTENT, "{event}");
            }
        }
        let call = call_of(&app, &conversation).await;
        assert_eq!(call["status"], status);
        assert_eq!(call["answered_at"], Value::Null, "{status}");
        assert_eq!(call["duration_seconds"], Value::Null, "{status}");
        assert_eq!(event_count(&call), 7, "{status}: every event stored");
    }
    let r = app.get("/v1/calls?status=busy").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["conversation_uuid"], "CON-busy");
    let r = app.get("/v1/calls?status=bussy").await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[tokio::test]
async fn without_a_public_url_the_connect_is_not_synchronous_and_events_get_no_ncco() {
    let app = spawn_app_with(&[("PUBLIC_BASE_URL", "")]).await;
    let (proxy_a, _) = paired(&app).await;
    let ncco = app.answer(A, &proxy_a, "CON-plain").await;
    assert_eq!(ncco[0]["action"], "connect");
    assert!(ncco[0].get("eventType").is_none() && ncco[0].get("eventUrl").is_none());
    for event in unconnected_events("CON-plain", "busy") {
        assert_eq!(
            app.post_event(&event).await.status(),
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(call_of(&app, "CON-plain").await["status"], "busy");
}

#[tokio::test]
async fn dates_the_database_cannot_hold_are_refused_as_invalid() {
    let app = spawn_app().await;
    for query in [
        "from=-5000-01-01T00:00:00Z",
        "to=%2B10000-01-01T00:00:00Z",
        "from=0000-12-31T23:59:59Z",
    ] {
        let r = app.get(&format!("/v1/calls?{query}")).await;
        assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let r = app.get("/v1/calls?from=0001-01-01T00:00:00Z").await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_answer_with_an_oversized_identifier_is_invalid_and_none_of_it_is_stored() {
    let app = spawn_app().await;
    let (proxy_a, _) = paired(&app).await;
    let huge = "C".repeat(60_000);
    let r = app
        .client
        .post(app.url("/webhooks/answer"))
        .json(&json!({"to": proxy_a, "from": A, "uuid": "leg", "conversation_uuid": huge}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ncco: Value = r.json().await.unwrap();
    assert_eq!(ncco[0]["action"], "talk", "never connected");
    assert_eq!(
        app.count("SELECT count(*) FROM calls WHERE outcome = 'invalid_request' AND conversation_uuid IS NULL")
            .await,
        1
    );
}

/// The answer's call record reaches Postgres through the spool while the call's events are
/// written directly, at the same moment: every event is folded into its call all the same.
#[tokio::test]
async fn events_written_while_their_call_is_being_written_are_folded() {
    let app = spawn_app().await;
    let (proxy_a, _) = paired(&app).await;
    let calls = (0..400).map(|i| {
        let (client, base, proxy) = (app.client.clone(), app.address.clone(), proxy_a.clone());
        async move {
            let conversation = format!("CON-race-{i}");
            let answer = async {
                let r = client
                    .get(format!("{base}/webhooks/answer"))
                    .query(&[
                        ("from", A),
                        ("to", proxy.as_str()),
                        ("uuid", &format!("{conversation}-in")),
                        ("conversation_uuid", &conversation),
                    ])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
            };
            // The events race the answer, as Vonage's separate requests may.
            let events = [
                ("ringing", "2024-05-01T10:00:01Z"),
                ("busy", "2024-05-01T10:00:09Z"),
                ("completed", "2024-05-01T10:00:09.100Z"),
            ]
            .map(|(status, ts)| {
                let event = json!({"uuid": format!("{conversation}-out"),
                    "conversation_uuid": conversation, "status": status,
                    "direction": "outbound", "timestamp": ts});
                let (client, base) = (client.clone(), base.clone());
                async move {
                    let r = client
                        .post(format!("{base}/webhooks/event"))
                        .json(&event)
                        .send()
                        .await
                        .unwrap();
                    // 200 with the callee-unavailable NCCO for `busy`, 204 otherwise.
                    assert!(r.status().is_success(), "{}", r.status());
                }
            });
            let [a, b, c] = events;
            tokio::join!(answer, a, b, c);
        }
    });
    futures_util::future::join_all(calls).await;
    app.settle().await;
    let statuses: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT conversation_uuid, status FROM calls WHERE conversation_uuid LIKE 'CON-race-%'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(statuses.len(), 400);
    let wrong: Vec<_> = statuses
        .iter()
        .filter(|(_, s)| s.as_deref() != Some("busy"))
        .collect();
    assert!(wrong.is_empty(), "not folded: {wrong:?}");
}
