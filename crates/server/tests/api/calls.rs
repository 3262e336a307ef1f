use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, proxy_of, spawn_app};

pub struct CallSetup {
    pub proxy_a: String,
    pub proxy_b: String,
    pub pairing_id: String,
}

pub async fn routed_call(app: &TestApp, conversation: &str) -> CallSetup {
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair("16465550101", "16465550102").await;
    let setup = CallSetup {
        proxy_a: proxy_of(&p, 0),
        proxy_b: proxy_of(&p, 1),
        pairing_id: p["id"].as_str().unwrap().to_owned(),
    };
    let ncco = app
        .answer("16465550101", &setup.proxy_a, conversation)
        .await;
    assert_eq!(ncco[0]["action"], "connect");
    setup
}

/// The events Vonage sends for a call that was answered and talked for 132 s: both legs.
pub fn completed_call_events(conversation: &str, s: &CallSetup) -> Vec<Value> {
    let inbound = format!("{conversation}-in");
    let outbound = format!("{conversation}-out");
    let leg = |uuid: &str, dir: &str, status: &str, ts: &str, from: &str, to: &str| {
        json!({"uuid": uuid, "conversation_uuid": conversation, "status": status,
               "direction": dir, "timestamp": ts, "from": from, "to": to, "headers": {}})
    };
    let mut completed_out = leg(
        &outbound,
        "outbound",
        "completed",
        "2024-05-01T10:02:17.412Z",
        &s.proxy_b,
        "16465550102",
    );
    completed_out.as_object_mut().unwrap().extend(
        json!({"start_time": "2024-05-01T10:00:05.000Z", "end_time": "2024-05-01T10:02:17.000Z",
               "duration": "132", "rate": "0.01200000", "price": "0.02640000", "network": "310260",
               "disconnected_by": "user"})
        .as_object()
        .unwrap()
        .clone(),
    );
    let mut completed_in = leg(
        &inbound,
        "inbound",
        "completed",
        "2024-05-01T10:02:17.500Z",
        "16465550101",
        &s.proxy_a,
    );
    completed_in.as_object_mut().unwrap().extend(
        json!({"duration": 137, "rate": 0.0045, "price": 0.0102750})
            .as_object()
            .unwrap()
            .clone(),
    );
    vec![
        leg(
            &inbound,
            "inbound",
            "started",
            "2024-05-01T10:00:00.000Z",
            "16465550101",
            &s.proxy_a,
        ),
        leg(
            &inbound,
            "inbound",
            "answered",
            "2024-05-01T10:00:00.500Z",
            "16465550101",
            &s.proxy_a,
        ),
        leg(
            &outbound,
            "outbound",
            "started",
            "2024-05-01T10:00:01.000Z",
            &s.proxy_b,
            "16465550102",
        ),
        leg(
            &outbound,
            "outbound",
            "ringing",
            "2024-05-01T10:00:02.000Z",
            &s.proxy_b,
            "16465550102",
        ),
        leg(
            &outbound,
            "outbound",
            "answered",
            "2024-05-01T10:00:05.000Z",
            &s.proxy_b,
            "16465550102",
        ),
        completed_out,
        completed_in,
    ]
}

#[tokio::test]
async fn a_completed_call_is_recorded_with_status_talk_time_price_and_outcome() {
    let app = spawn_app().await;
    let s = routed_call(&app, "CON-call-1").await;
    let events = completed_call_events("CON-call-1", &s);
    for e in &events {
        let r = app.post_event(e).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    let list: Value = app.get("/v1/calls").await.json().await.unwrap();
    let calls = list["items"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call["conversation_uuid"], "CON-call-1");
    assert_eq!(call["uuid"], "CON-call-1-in");
    assert_eq!(call["pairing_id"], s.pairing_id.as_str());
    assert_eq!(call["caller"], "16465550101");
    assert_eq!(call["proxy_number"], s.proxy_a.as_str());
    assert_eq!(call["callee"], "16465550102");
    assert_eq!(call["outcome"], "routed");
    assert_eq!(call["status"], "completed");
    assert_eq!(call["duration_seconds"], 132);
    assert_eq!(call["price"], "0.036675");
    assert_eq!(call["answered_at"], "2024-05-01T10:00:05Z");
    assert_eq!(call["ended_at"], "2024-05-01T10:02:17.500Z");
    assert!(call.get("events").is_none());

    let id = call["id"].as_str().unwrap();
    let detail: Value = app
        .get(&format!("/v1/calls/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let stored = detail["events"].as_array().unwrap();
    assert_eq!(stored.len(), events.len());
    assert_eq!(
        stored[5]["payload"]["network"], "310260",
        "unknown fields are kept"
    );
}

#[tokio::test]
async fn retried_events_are_stored_once_and_late_ones_never_move_the_status_back() {
    let app = spawn_app().await;
    let s = routed_call(&app, "CON-call-2").await;
    let events = completed_call_events("CON-call-2", &s);
    // Out of order, with every event delivered twice.
    for e in events.iter().rev().chain(events.iter()) {
        let r = app.post_event(e).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(
        app.count("SELECT count(*) FROM call_events").await,
        events.len() as i64
    );
    let list: Value = app.get("/v1/calls").await.json().await.unwrap();
    let call = &list["items"][0];
    assert_eq!(call["status"], "completed");
    assert_eq!(call["duration_seconds"], 132);
    assert_eq!(call["price"], "0.036675", "each leg's price counted once");
}

#[tokio::test]
async fn events_that_arrive_before_the_answer_request_are_folded_in_later() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair("16465550101", "16465550102").await;
    let s = CallSetup {
        proxy_a: proxy_of(&p, 0),
        proxy_b: proxy_of(&p, 1),
        pairing_id: String::new(),
    };
    for e in completed_call_events("CON-early", &s) {
        assert_eq!(app.post_event(&e).await.status(), StatusCode::NO_CONTENT);
    }
    app.answer("16465550101", &s.proxy_a, "CON-early").await;
    let list: Value = app.get("/v1/calls").await.json().await.unwrap();
    assert_eq!(list["items"][0]["status"], "completed");
    assert_eq!(list["items"][0]["duration_seconds"], 132);
}

#[tokio::test]
async fn unknown_statuses_and_fields_are_accepted_and_malformed_events_refused() {
    let app = spawn_app().await;
    let s = routed_call(&app, "CON-call-3").await;
    let _ = s;
    let odd = json!({"uuid": "CON-call-3-out", "conversation_uuid": "CON-call-3", "status": "teleported",
                     "timestamp": "2024-05-01T10:00:00Z", "brand_new": [1, 2, 3]});
    assert_eq!(app.post_event(&odd).await.status(), StatusCode::NO_CONTENT);
    let record = json!({"conversation_uuid": "CON-call-3", "recording_url": "https://api.nexmo.com/v1/files/x",
                        "recording_uuid": "r1", "size": 12222, "start_time": "2020-07-14T01:23:04Z",
                        "end_time": "2020-07-14T01:23:10Z", "timestamp": "2020-07-14T01:23:10Z"});
    assert_eq!(
        app.post_event(&record).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.post_event(&record).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.count("SELECT count(*) FROM call_events").await, 2);

    for bad in [
        json!([1, 2]),
        json!({"status": "answered"}),
        json!({"uuid": "x", "status": 7}),
        json!({"uuid": "x", "duration": "long"}),
        json!({"uuid": "x", "timestamp": "not a time"}),
    ] {
        let p = assert_problem(app.post_event(&bad).await, StatusCode::BAD_REQUEST).await;
        assert!(
            p["detail"].as_str().unwrap().starts_with("malformed event"),
            "{p}"
        );
    }
    let r = app
        .client
        .post(app.url("/webhooks/event"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(app.count("SELECT count(*) FROM call_events").await, 2);
}

#[tokio::test]
async fn calls_are_listed_newest_first_and_filtered() {
    let app = spawn_app().await;
    let s = routed_call(&app, "CON-l1").await;
    app.answer("16465550199", &s.proxy_a, "CON-l2").await;
    app.answer("16465550101", &s.proxy_a, "CON-l3").await;
    let convs = |v: Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["conversation_uuid"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        convs(app.get("/v1/calls").await.json().await.unwrap()),
        ["CON-l3", "CON-l2", "CON-l1"]
    );
    assert_eq!(
        convs(
            app.get(&format!("/v1/calls?pairing_id={}", s.pairing_id))
                .await
                .json()
                .await
                .unwrap()
        ),
        ["CON-l3", "CON-l1"]
    );
    let page: Value = app.get("/v1/calls?limit=2").await.json().await.unwrap();
    let next = page["next_cursor"].as_str().unwrap();
    assert_eq!(
        convs(
            app.get(&format!("/v1/calls?limit=2&cursor={next}"))
                .await
                .json()
                .await
                .unwrap()
        ),
        ["CON-l1"]
    );
    assert!(
        convs(
            app.get("/v1/calls?from=2999-01-01T00:00:00Z")
                .await
                .json()
                .await
                .unwrap()
        )
        .is_empty()
    );
    assert_eq!(
        convs(
            app.get("/v1/calls?to=2999-01-01T00:00:00Z")
                .await
                .json()
                .await
                .unwrap()
        )
        .len(),
        3
    );
    assert_problem(
        app.get("/v1/calls?from=yesterday").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_problem(
        app.get("/v1/calls?pairing_id=nope").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_problem(app.get("/v1/calls/nope").await, StatusCode::BAD_REQUEST).await;
    assert_problem(
        app.get("/v1/calls/0194a0c2-0000-7000-8000-000000000000")
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}
