//! The questions the answer webhook asks the marketplace: the intercept (allow, deny, and no
//! answer in time under both failure policies) and the out-of-session request (a message, and
//! a pairing made on the fly in which the caller keeps the number they dialled).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, proxy_of, spawn_app_with};
use crate::receiver::{Receiver, Reply};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NO_ROUTE: &str = "This number is not in service.";
const DRIVER: &str = "16465550101";
const PASSENGER: &str = "16465550102";

async fn app_asking(prefix: &str, receiver: &Receiver, extra: &[(&str, &str)]) -> TestApp {
    let (url, secret) = (format!("{prefix}_URL"), format!("{prefix}_SECRET"));
    let mut vars = vec![
        ("WEBHOOK_ALLOW_HTTP", "true"),
        ("NO_ROUTE_MESSAGE", NO_ROUTE),
        (url.as_str(), receiver.url.as_str()),
        (secret.as_str(), SECRET),
    ];
    vars.extend_from_slice(extra);
    let app = spawn_app_with(&vars).await;
    app.add_numbers(&["12125550123", "12125550124", "12125550125"])
        .await;
    app
}

/// The outcome the call of `conversation` was recorded with.
async fn outcome_of(app: &TestApp, conversation: &str) -> Value {
    app.settle().await;
    let calls: Value = app.get("/v1/calls").await.json().await.unwrap();
    calls["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["conversation_uuid"] == conversation)
        .map(|c| c["outcome"].clone())
        .expect("the call is recorded")
}

/// The answer to a call, and how long it took.
async fn timed_answer(
    app: &TestApp,
    from: &str,
    to: &str,
    conversation: &str,
) -> (Value, Duration) {
    let started = Instant::now();
    let ncco = app.answer(from, to, conversation).await;
    (ncco, started.elapsed())
}

fn assert_talk(ncco: &Value, text: &str) {
    assert_eq!(ncco[0]["action"], "talk", "{ncco}");
    assert_eq!(ncco[0]["text"], text, "{ncco}");
}

#[tokio::test]
async fn an_intercept_that_allows_connects_and_is_told_the_call_without_a_number() {
    let receiver = Receiver::start(Reply::Json(json!({"action": "allow"})));
    let app = app_asking("INTERCEPT", &receiver, &[]).await;
    let p = app
        .post_json(
            "/v1/pairings",
            &json!({"participants": [{"number": DRIVER, "label": "driver"},
                                     {"number": PASSENGER, "label": "passenger"}],
                    "reference": "trip-42"}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let ncco = app.answer(DRIVER, &proxy_of(&p, 0), "CON-i-allow").await;
    assert_eq!(ncco[0]["action"], "connect");
    assert_eq!(ncco[0]["endpoint"][0]["number"], PASSENGER);
    assert_eq!(outcome_of(&app, "CON-i-allow").await, "routed");

    let asked = receiver.received();
    assert_eq!(asked.len(), 1);
    assert!(asked[0].verifies_with(SECRET));
    let body = asked[0].json();
    assert_eq!(body["type"], "call.intercept");
    let data = &body["data"];
    assert_eq!(data["pairing_id"], p["id"]);
    assert_eq!(data["reference"], "trip-42");
    assert_eq!(data["caller_label"], "driver");
    assert_eq!(data["callee_label"], "passenger");
    assert_eq!(data["proxy_number"], proxy_of(&p, 0).as_str());
    assert_eq!(data["conversation_uuid"], "CON-i-allow");
    let raw = String::from_utf8(asked[0].body.clone()).unwrap();
    assert!(!raw.contains(DRIVER) && !raw.contains(PASSENGER), "{raw}");
    assert_eq!(
        app.metric("intercept_requests_total{result=\"allow\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_intercept_that_denies_plays_its_message_or_the_no_route_one() {
    let receiver = Receiver::start(Reply::Json(
        json!({"action": "deny", "message": "Calls for this trip are paused."}),
    ));
    let app = app_asking("INTERCEPT", &receiver, &[]).await;
    let p = app.pair(DRIVER, PASSENGER).await;
    let ncco = app.answer(DRIVER, &proxy_of(&p, 0), "CON-i-deny").await;
    assert_talk(&ncco, "Calls for this trip are paused.");
    assert_eq!(outcome_of(&app, "CON-i-deny").await, "intercepted");

    receiver.set_reply(Reply::Json(json!({"action": "deny"})));
    let ncco = app
        .answer(PASSENGER, &proxy_of(&p, 1), "CON-i-deny-2")
        .await;
    assert_talk(&ncco, NO_ROUTE);
    assert_eq!(outcome_of(&app, "CON-i-deny-2").await, "intercepted");
    assert_eq!(
        app.metric("intercept_requests_total{result=\"deny\"}")
            .await,
        2.0
    );
    // The call is recorded against its pairing, with nobody connected.
    let calls: Value = app.get("/v1/calls").await.json().await.unwrap();
    let call = &calls["items"][0];
    assert_eq!(call["pairing_id"], p["id"]);
    assert_eq!(call["callee"], Value::Null);
}

#[tokio::test]
async fn without_an_answer_in_time_the_allow_policy_connects() {
    let receiver = Receiver::start(Reply::After(
        Duration::from_secs(5),
        Box::new(Reply::Json(json!({"action": "deny"}))),
    ));
    let app = app_asking("INTERCEPT", &receiver, &[("INTERCEPT_TIMEOUT_MS", "200")]).await;
    let p = app.pair(DRIVER, PASSENGER).await;
    let (ncco, took) = timed_answer(&app, DRIVER, &proxy_of(&p, 0), "CON-i-slow").await;
    assert_eq!(ncco[0]["action"], "connect", "{ncco}");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(outcome_of(&app, "CON-i-slow").await, "routed");

    // An error answer and a reply that is not a decision are failures too.
    for reply in [Reply::Status(500), Reply::Json(json!({"action": "maybe"}))] {
        receiver.set_reply(reply);
        let ncco = app.answer(PASSENGER, &proxy_of(&p, 1), "CON-i-bad").await;
        assert_eq!(ncco[0]["action"], "connect", "{ncco}");
    }
    assert_eq!(
        app.metric("intercept_requests_total{result=\"failed_allow\"}")
            .await,
        3.0
    );
}

#[tokio::test]
async fn without_an_answer_in_time_the_deny_policy_refuses() {
    let receiver = Receiver::start(Reply::After(
        Duration::from_secs(5),
        Box::new(Reply::Json(json!({"action": "allow"}))),
    ));
    let app = app_asking(
        "INTERCEPT",
        &receiver,
        &[
            ("INTERCEPT_TIMEOUT_MS", "200"),
            ("INTERCEPT_ON_FAILURE", "deny"),
        ],
    )
    .await;
    let p = app.pair(DRIVER, PASSENGER).await;
    let (ncco, took) = timed_answer(&app, DRIVER, &proxy_of(&p, 0), "CON-i-deny-slow").await;
    assert_talk(&ncco, NO_ROUTE);
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(outcome_of(&app, "CON-i-deny-slow").await, "intercepted");
    receiver.set_reply(Reply::Status(503));
    let ncco = app.answer(PASSENGER, &proxy_of(&p, 1), "CON-i-503").await;
    assert_talk(&ncco, NO_ROUTE);
    assert_eq!(
        app.metric("intercept_requests_total{result=\"failed_deny\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn an_out_of_session_caller_hears_the_marketplaces_message() {
    let receiver = Receiver::start(Reply::Json(
        json!({"action": "message", "text": "Your trip has ended. Please use the app."}),
    ));
    let app = app_asking("OUT_OF_SESSION", &receiver, &[]).await;
    let p = app
        .post_json(
            "/v1/pairings",
            &json!({"participants": [{"number": DRIVER, "label": "driver"},
                                     {"number": PASSENGER, "label": "passenger"}],
                    "reference": "trip-9"}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let proxy = proxy_of(&p, 0);
    assert_eq!(
        app.close(p["id"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );

    let ncco = app.answer(DRIVER, &proxy, "CON-o-msg").await;
    assert_talk(&ncco, "Your trip has ended. Please use the app.");
    assert_eq!(
        outcome_of(&app, "CON-o-msg").await,
        "out_of_session_message"
    );
    let asked = receiver.received();
    assert_eq!(asked.len(), 1);
    assert!(asked[0].verifies_with(SECRET));
    let body = asked[0].json();
    assert_eq!(body["type"], "call.out_of_session");
    let data = &body["data"];
    assert_eq!(data["dialled_number"], proxy.as_str());
    assert_eq!(data["conversation_uuid"], "CON-o-msg");
    assert_eq!(data["recent_pairing"]["pairing_id"], p["id"]);
    assert_eq!(data["recent_pairing"]["reference"], "trip-9");
    assert_eq!(data["recent_pairing"]["status"], "closed");
    assert_eq!(data["recent_pairing"]["caller_position"], 0);
    assert_eq!(data["recent_pairing"]["caller_label"], "driver");
    let raw = String::from_utf8(asked[0].body.clone()).unwrap();
    assert!(
        !raw.contains(DRIVER),
        "the caller's number is masked: {raw}"
    );
    assert!(data["caller_masked"].as_str().unwrap().ends_with("0101"));

    // A stranger: no recent pairing to name.
    app.answer("16465550177", &proxy, "CON-o-stranger").await;
    let stranger = receiver.received()[1].json();
    assert_eq!(stranger["data"]["recent_pairing"], Value::Null);
}

#[tokio::test]
async fn an_out_of_session_connect_makes_a_pairing_in_which_the_caller_keeps_the_dialled_number() {
    let receiver = Receiver::start(Reply::Json(json!({"action": "connect", "pairing": {
        "participants": [{"number": PASSENGER, "label": "passenger"},
                         {"number": DRIVER, "label": "driver"}],
        "reference": "trip-10", "ttl_seconds": 600}})));
    let app = app_asking("OUT_OF_SESSION", &receiver, &[]).await;
    // The driver dials a pool number they were never given: with the pairing made on the fly,
    // it is theirs.
    let dialled = "12125550125";
    let ncco = app.answer(DRIVER, dialled, "CON-o-connect").await;
    assert_eq!(ncco[0]["action"], "connect", "{ncco}");
    assert_eq!(ncco[0]["endpoint"][0]["number"], PASSENGER);
    assert_eq!(
        outcome_of(&app, "CON-o-connect").await,
        "out_of_session_connected"
    );

    let pairings: Value = app
        .get("/v1/pairings?reference=trip-10")
        .await
        .json()
        .await
        .unwrap();
    let made = &pairings["items"][0];
    let driver = made["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["number"] == DRIVER)
        .unwrap();
    assert_eq!(
        driver["proxy_number"], dialled,
        "the caller keeps the number"
    );
    let passenger_proxy = made["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["number"] == PASSENGER)
        .unwrap()["proxy_number"]
        .clone();
    assert_eq!(
        ncco[0]["from"], passenger_proxy,
        "the callee sees their own proxy"
    );

    // The next call is routed by the pairing, without asking.
    let again = app.answer(DRIVER, dialled, "CON-o-again").await;
    assert_eq!(again[0]["endpoint"][0]["number"], PASSENGER);
    assert_eq!(outcome_of(&app, "CON-o-again").await, "routed");
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn an_out_of_session_connect_that_cannot_keep_the_dialled_number_is_refused() {
    let receiver = Receiver::start(Reply::Json(json!({"action": "connect", "pairing": {
        "participants": [{"number": DRIVER, "proxy_number": "12125550123"},
                         {"number": PASSENGER}]}})));
    let app = app_asking("OUT_OF_SESSION", &receiver, &[]).await;
    let ncco = app.answer(DRIVER, "12125550125", "CON-o-other").await;
    assert_talk(&ncco, NO_ROUTE);
    assert_eq!(
        outcome_of(&app, "CON-o-other").await,
        "out_of_session_refused"
    );

    // A pairing the caller is not in, and one the database refuses (the dialled number is
    // retired), are refused the same way.
    receiver.set_reply(Reply::Json(json!({"action": "connect", "pairing": {
        "participants": [{"number": "16465550150"}, {"number": PASSENGER}]}})));
    let ncco = app.answer(DRIVER, "12125550125", "CON-o-stranger").await;
    assert_talk(&ncco, NO_ROUTE);
    receiver.set_reply(Reply::Json(json!({"action": "connect", "pairing": {
        "participants": [{"number": DRIVER}, {"number": PASSENGER}]}})));
    let r = app
        .client
        .delete(app.url("/v1/numbers/12125550125"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let ncco = app.answer(DRIVER, "12125550125", "CON-o-retired").await;
    assert_talk(&ncco, NO_ROUTE);
    assert_eq!(
        outcome_of(&app, "CON-o-retired").await,
        "out_of_session_refused"
    );
    assert_eq!(
        app.metric("out_of_session_requests_total{result=\"refused\"}")
            .await,
        3.0
    );
}

#[tokio::test]
async fn without_an_out_of_session_answer_the_call_goes_on_as_usual() {
    let receiver = Receiver::start(Reply::After(
        Duration::from_secs(5),
        Box::new(Reply::Json(json!({"action": "message", "text": "late"}))),
    ));
    let app = app_asking(
        "OUT_OF_SESSION",
        &receiver,
        &[("OUT_OF_SESSION_TIMEOUT_MS", "200")],
    )
    .await;
    let (ncco, took) = timed_answer(&app, DRIVER, "12125550123", "CON-o-slow").await;
    assert_talk(&ncco, NO_ROUTE);
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(outcome_of(&app, "CON-o-slow").await, "no_pairing");
    assert_eq!(
        app.metric("out_of_session_requests_total{result=\"timeout\"}")
            .await,
        1.0
    );
}
