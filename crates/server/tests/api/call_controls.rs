//! Call controls: call options per pairing (announcement, whisper, recording, limits) and the
//! NCCOs they give, and PIN access from another phone.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, proxy_of, spawn_app, spawn_app_with};

const DRIVER: &str = "14155550101";
const RIDER: &str = "14155550102";
const STRANGER: &str = "14155550199";

async fn pair_with(app: &TestApp, extra: Value) -> Value {
    let mut body = json!({
        "participants": [
            {"number": DRIVER, "label": "driver"},
            {"number": RIDER, "label": "passenger"}
        ],
        "reference": "ride-42"
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = app.post_json("/v1/pairings", &body).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    r.json().await.unwrap()
}

fn actions(ncco: &Value) -> Vec<&str> {
    ncco.as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect()
}

/// Fetches one of our own URLs that an NCCO names (they carry the public base URL).
async fn fetch_own(app: &TestApp, public_url: &str) -> reqwest::Response {
    let path = public_url
        .strip_prefix("https://proxy.example.com")
        .unwrap_or_else(|| panic!("not one of our URLs: {public_url}"));
    app.client.get(app.url(path)).send().await.unwrap()
}

#[tokio::test]
async fn a_pairing_without_options_gets_the_defaults_and_a_plain_connect() {
    let app = spawn_app_with(&[("RING_TIMEOUT_SECONDS", "30"), ("MAX_CALL_SECONDS", "3600")]).await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let pairing = pair_with(&app, json!({})).await;
    assert_eq!(
        pairing["call_options"],
        json!({"announcement": null, "whisper": null, "record": false,
               "max_call_seconds": 3600, "ring_timeout_seconds": 30})
    );
    assert_eq!(pairing["pin_access"], false);
    assert_eq!(pairing["participants"][0]["pin"], Value::Null);
    let ncco = app
        .answer(DRIVER, &proxy_of(&pairing, 0), "CON-plain")
        .await;
    assert_eq!(actions(&ncco), ["connect"]);
    assert_eq!(ncco[0]["limit"], 3600);
    assert_eq!(ncco[0]["timeout"], 30);
    assert!(ncco[0]["endpoint"][0].get("onAnswer").is_none());
}

#[tokio::test]
async fn every_option_shapes_the_ncco_and_the_whisper_names_label_and_reference() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let pairing = pair_with(
        &app,
        json!({"call_options": {
            "announcement": "This call may be recorded.",
            "whisper": "Your {label} for {reference} is calling",
            "record": true,
            "max_call_seconds": 1800,
            "ring_timeout_seconds": 25
        }}),
    )
    .await;
    assert_eq!(
        pairing["call_options"],
        json!({"announcement": "This call may be recorded.",
               "whisper": "Your {label} for {reference} is calling", "record": true,
               "max_call_seconds": 1800, "ring_timeout_seconds": 25})
    );
    // The rider calls the driver: the whisper names the rider's label.
    let ncco = app
        .answer(RIDER, &proxy_of(&pairing, 1), "CON-options")
        .await;
    assert_eq!(actions(&ncco), ["talk", "record", "connect"], "{ncco}");
    assert_eq!(ncco[0]["text"], "This call may be recorded.");
    assert_eq!(
        ncco[1],
        json!({"action": "record", "eventUrl": ["https://proxy.example.com/webhooks/recording"],
               "split": "conversation", "channels": 2, "format": "mp3"})
    );
    let connect = &ncco[2];
    assert_eq!(connect["limit"], 1800);
    assert_eq!(connect["timeout"], 25);
    assert_eq!(connect["endpoint"][0]["number"], DRIVER);
    assert_eq!(connect["from"], proxy_of(&pairing, 0));
    let on_answer = connect["endpoint"][0]["onAnswer"]["url"].as_str().unwrap();
    assert!(on_answer.starts_with("https://proxy.example.com/webhooks/whisper?"));

    // The whisper webhook: what Vonage fetches when the driver picks up.
    let r = fetch_own(&app, on_answer).await;
    assert_eq!(r.status(), StatusCode::OK);
    let whisper: Value = r.json().await.unwrap();
    assert_eq!(
        whisper,
        json!([{"action": "talk", "text": "Your passenger for ride-42 is calling",
                "language": "en-US"}])
    );
    // A whisper request without its text is refused, never answered with something invented.
    let r = app
        .client
        .get(app.url("/webhooks/whisper"))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_patch_changes_the_options_of_the_next_call() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let pairing = pair_with(&app, json!({"call_options": {"record": true}})).await;
    let id = pairing["id"].as_str().unwrap();
    let r = app
        .patch_json(
            &format!("/v1/pairings/{id}"),
            &json!({"call_options": {"record": false, "announcement": "Hello there."}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let changed: Value = r.json().await.unwrap();
    assert_eq!(changed["call_options"]["record"], false);
    assert_eq!(changed["call_options"]["announcement"], "Hello there.");
    assert_eq!(
        changed["expires_at"], pairing["expires_at"],
        "expiry untouched"
    );
    let ncco = app
        .answer(DRIVER, &proxy_of(&pairing, 0), "CON-patched")
        .await;
    assert_eq!(actions(&ncco), ["talk", "connect"], "{ncco}");
    // Turning the announcement off again with null; the rest stays.
    let r = app
        .patch_json(
            &format!("/v1/pairings/{id}"),
            &json!({"call_options": {"announcement": null}}),
        )
        .await;
    let changed: Value = r.json().await.unwrap();
    assert_eq!(changed["call_options"]["announcement"], Value::Null);
    assert_eq!(changed["call_options"]["record"], false);
    let ncco = app
        .answer(DRIVER, &proxy_of(&pairing, 0), "CON-patched-2")
        .await;
    assert_eq!(actions(&ncco), ["connect"], "{ncco}");
    // A PATCH with nothing to change, or both expiry fields, is refused.
    for body in [
        json!({}),
        json!({"ttl_seconds": 60, "expires_at": "2030-01-01T00:00:00Z"}),
    ] {
        let r = app.patch_json(&format!("/v1/pairings/{id}"), &body).await;
        assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
}

#[tokio::test]
async fn options_out_of_bounds_or_needing_a_public_url_are_refused() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    for options in [
        json!({"max_call_seconds": 7201}),
        json!({"max_call_seconds": 0}),
        json!({"ring_timeout_seconds": 2}),
        json!({"announcement": ""}),
        json!({"whisper": "call me on 4155550100"}),
        json!({"whisper": "for {number}"}),
        json!({"colour": "red"}),
        json!([null, null]),
        json!(null),
        json!("record"),
    ] {
        let r = app
            .post_json(
                "/v1/pairings",
                &json!({"participants": [{"number": DRIVER}, {"number": RIDER}],
                        "call_options": options}),
            )
            .await;
        assert!(
            r.status() == StatusCode::UNPROCESSABLE_ENTITY,
            "{options}: {}",
            r.status()
        );
    }

    let no_url = spawn_app_with(&[("PUBLIC_BASE_URL", "")]).await;
    no_url.add_numbers(&["12125550123", "12125550124"]).await;
    for (extra, field) in [
        (
            json!({"call_options": {"whisper": "Hello"}}),
            "call_options.whisper",
        ),
        (
            json!({"call_options": {"record": true}}),
            "call_options.record",
        ),
        (json!({"pin_access": true}), "pin_access"),
    ] {
        let mut body = json!({"participants": [{"number": DRIVER}, {"number": RIDER}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = no_url.post_json("/v1/pairings", &body).await;
        let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(field) && detail.contains("PUBLIC_BASE_URL"),
            "{detail}"
        );
    }
    // An announcement needs no callback.
    pair_with(&no_url, json!({"call_options": {"announcement": "Hi."}})).await;
}

/// The participant's PINs, by position.
fn pins(pairing: &Value) -> [String; 2] {
    std::array::from_fn(|i| {
        pairing["participants"][i]["pin"]
            .as_str()
            .expect("a pin")
            .to_owned()
    })
}

async fn type_pin(app: &TestApp, from: &str, to: &str, conversation: &str, digits: &str) -> Value {
    let r = app
        .client
        .post(app.url("/webhooks/pin"))
        .json(&json!({
            "from": from, "to": to, "uuid": format!("{conversation}-in"),
            "conversation_uuid": conversation, "timestamp": "2026-11-26T10:00:00.000Z",
            "dtmf": {"digits": digits, "timed_out": digits.is_empty()}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn outcome(app: &TestApp, conversation: &str) -> (String, Option<uuid::Uuid>) {
    app.settle().await;
    sqlx::query_as("SELECT outcome, pairing_id FROM calls WHERE conversation_uuid = $1")
        .bind(conversation)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

fn is_prompt(ncco: &Value) -> bool {
    actions(ncco) == ["talk", "input"]
        && ncco[0]["bargeIn"] == true
        && ncco[1]["eventUrl"] == json!(["https://proxy.example.com/webhooks/pin"])
        && ncco[1]["dtmf"]["maxDigits"] == 4
}

#[tokio::test]
async fn a_pin_from_another_phone_connects_as_the_participant() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let pairing = pair_with(&app, json!({"pin_access": true})).await;
    assert_eq!(pairing["pin_access"], true);
    let [driver_pin, rider_pin] = pins(&pairing);
    assert!(driver_pin.len() == 4 && driver_pin.bytes().all(|b| b.is_ascii_digit()));
    let driver_proxy = proxy_of(&pairing, 0);

    // The driver calls their proxy number from a borrowed phone.
    let ncco = app.answer(STRANGER, &driver_proxy, "CON-pin").await;
    assert!(is_prompt(&ncco), "{ncco}");
    assert_eq!(outcome(&app, "CON-pin").await.0, "pin_prompted");
    // A wrong PIN (the rider's, on the driver's number, unless the two share one) asks again.
    let wrong = if proxy_of(&pairing, 1) == driver_proxy {
        "0000".to_owned()
    } else {
        rider_pin.clone()
    };
    let wrong = if wrong == driver_pin {
        "9999".to_owned()
    } else {
        wrong
    };
    let again = type_pin(&app, STRANGER, &driver_proxy, "CON-pin", &wrong).await;
    assert!(is_prompt(&again), "{again}");
    assert_ne!(
        again[0]["text"], ncco[0]["text"],
        "the retry prompt says so"
    );
    // The right one connects to the rider, showing the rider's proxy number.
    let connect = type_pin(
        &app,
        STRANGER,
        &driver_proxy,
        "CON-pin",
        &format!("{driver_pin}#"),
    )
    .await;
    assert_eq!(actions(&connect), ["connect"], "{connect}");
    assert_eq!(connect[0]["endpoint"][0]["number"], RIDER);
    assert_eq!(connect[0]["from"], proxy_of(&pairing, 1));
    let (outcome_now, pairing_id) = outcome(&app, "CON-pin").await;
    assert_eq!(outcome_now, "pin_routed");
    assert_eq!(
        pairing_id.unwrap().to_string(),
        pairing["id"].as_str().unwrap()
    );

    // The participant on their own phone is connected without a prompt.
    let own = app.answer(DRIVER, &driver_proxy, "CON-own").await;
    assert_eq!(actions(&own), ["connect"]);
    // Once the pairing is closed, the number has no PIN access: a stranger is refused at once.
    let r = app.close(pairing["id"].as_str().unwrap()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let ncco = app.answer(STRANGER, &driver_proxy, "CON-no-pin").await;
    assert_eq!(actions(&ncco), ["talk"], "{ncco}");
    assert_eq!(outcome(&app, "CON-no-pin").await.0, "no_pairing");
}

#[tokio::test]
async fn wrong_pins_are_limited_per_call_and_throttled_per_caller() {
    let app = spawn_app_with(&[("PIN_ATTEMPTS", "3")]).await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let pairing = pair_with(&app, json!({"pin_access": true})).await;
    let used: HashSet<String> = pins(&pairing).into_iter().collect();
    let wrong: Vec<String> = (0..10_000)
        .map(|n| format!("{n:04}"))
        .filter(|p| !used.contains(p))
        .take(8)
        .collect();
    let proxy = proxy_of(&pairing, 0);

    // Call 1: three wrong PINs; the third ends the call.
    assert!(is_prompt(&app.answer(STRANGER, &proxy, "CON-w1").await));
    for (i, pin) in wrong[..3].iter().enumerate() {
        let next = type_pin(&app, STRANGER, &proxy, "CON-w1", pin).await;
        if i < 2 {
            assert!(is_prompt(&next), "attempt {i}: {next}");
        } else {
            assert_eq!(actions(&next), ["talk"], "{next}");
        }
    }
    assert_eq!(outcome(&app, "CON-w1").await.0, "pin_refused");
    // Nothing typed counts as an attempt, not as a wrong PIN.
    assert!(is_prompt(&app.answer(STRANGER, &proxy, "CON-w2").await));
    assert!(is_prompt(
        &type_pin(&app, STRANGER, &proxy, "CON-w2", "").await
    ));
    // Call 2 goes on: two more wrong PINs make five within the hour; the fifth ends it.
    assert!(is_prompt(
        &type_pin(&app, STRANGER, &proxy, "CON-w2", &wrong[3]).await
    ));
    let last = type_pin(&app, STRANGER, &proxy, "CON-w2", &wrong[4]).await;
    assert_eq!(actions(&last), ["talk"], "{last}");
    // Call 3: throttled; not even prompted, even with the right PIN at hand.
    let ncco = app.answer(STRANGER, &proxy, "CON-w3").await;
    assert_eq!(actions(&ncco), ["talk"], "{ncco}");
    assert_eq!(outcome(&app, "CON-w3").await.0, "pin_refused");
    let typed = type_pin(&app, STRANGER, &proxy, "CON-w3", &pins(&pairing)[0]).await;
    assert_eq!(
        actions(&typed),
        ["talk"],
        "a throttled caller is not connected: {typed}"
    );
    // Another caller is not throttled by it.
    assert!(is_prompt(
        &app.answer("14155550198", &proxy, "CON-w4").await
    ));
    // No PIN reached the logs' metric labels or the stored failures.
    let failures: i64 = app.count("SELECT count(*) FROM pin_failures").await;
    assert_eq!(failures, 6);
}

#[tokio::test]
async fn the_database_keeps_pins_unique_per_proxy_number_under_concurrent_creates() {
    // One pool number pair: every pairing gets the same two proxy numbers.
    let app = spawn_app().await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let creates = (0..40).map(|i| {
        let app = &app;
        async move {
            let body = json!({
                "participants": [{"number": format!("1415555{:04}", 2 * i)},
                                 {"number": format!("1415555{:04}", 2 * i + 1)}],
                "pin_access": true
            });
            let r = app.post_json("/v1/pairings", &body).await;
            assert_eq!(r.status(), StatusCode::CREATED);
            r.json::<Value>().await.unwrap()
        }
    });
    let made = futures_util::future::join_all(creates).await;
    let mut seen = HashSet::new();
    for pairing in &made {
        for i in 0..2 {
            let key = (
                proxy_of(pairing, i),
                pairing["participants"][i]["pin"].clone(),
            );
            assert!(
                seen.insert(key.clone()),
                "a PIN given twice on one number: {key:?}"
            );
        }
    }
    // The database refuses a duplicate whatever the application does.
    let (pairing_id, pin): (uuid::Uuid, String) =
        sqlx::query_as("SELECT pairing_id, pin FROM participants WHERE position = 0 LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let clash = sqlx::query(
        "UPDATE participants SET pin = $2
          WHERE position = 0 AND pairing_id <> $1
            AND proxy_number = (SELECT proxy_number FROM participants
                                 WHERE pairing_id = $1 AND position = 0)",
    )
    .bind(pairing_id)
    .bind(&pin)
    .execute(&app.pool)
    .await
    .unwrap_err();
    assert!(
        clash.to_string().contains("participants_one_pin"),
        "{clash}"
    );
    // Once a pairing is closed its PIN may be given again.
    let r = app.close(&pairing_id.to_string()).await;
    assert_eq!(r.status(), StatusCode::OK);
    sqlx::query(
        "UPDATE participants SET pin = $2
          WHERE pairing_id = (SELECT pairing_id FROM participants
                               WHERE position = 0 AND pairing_id <> $1 AND NOT released
                                 AND proxy_number = (SELECT proxy_number FROM participants
                                                      WHERE pairing_id = $1 AND position = 0)
                               LIMIT 1)
            AND position = 0",
    )
    .bind(pairing_id)
    .bind(&pin)
    .execute(&app.pool)
    .await
    .unwrap();
}

/// With a default whisper, the routes in memory keep every pairing's names: a call answered from
/// memory alone is whispered with the caller's label and the reference.
#[tokio::test]
async fn a_default_whisper_names_the_caller_when_answered_from_memory() {
    let app = spawn_app_with(&[("DEFAULT_WHISPER", "Call from your {label}, {reference}")]).await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let pairing = pair_with(&app, json!({})).await;
    assert_eq!(
        pairing["call_options"]["whisper"],
        "Call from your {label}, {reference}"
    );
    let from_memory = r#"answer_route_source_total{source="memory"}"#;
    let mut ncco = Value::Null;
    let mut n = 0;
    crate::helpers::wait_until(
        "an answer from memory",
        std::time::Duration::from_secs(10),
        async || {
            let before = app.metric(from_memory).await;
            n += 1;
            ncco = app
                .answer(DRIVER, &proxy_of(&pairing, 0), &format!("CON-mem-{n}"))
                .await;
            app.metric(from_memory).await > before
        },
    )
    .await;
    let url = ncco[0]["endpoint"][0]["onAnswer"]["url"].as_str().unwrap();
    let whisper: Value = fetch_own(&app, url).await.json().await.unwrap();
    assert_eq!(whisper[0]["text"], "Call from your driver, ride-42");
}

/// A call connected by a PIN is asked about like the participant's own call: the intercept can
/// refuse it, and is told the participant as the caller.
#[tokio::test]
async fn the_intercept_is_asked_about_a_call_connected_by_pin() {
    use crate::receiver::{Receiver, Reply};
    let receiver = Receiver::start(Reply::Json(
        json!({"action": "deny", "message": "Calls for this ride are paused."}),
    ));
    let app = spawn_app_with(&[
        ("WEBHOOK_ALLOW_HTTP", "true"),
        ("INTERCEPT_URL", receiver.url.as_str()),
        ("INTERCEPT_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ])
    .await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let pairing = pair_with(&app, json!({"pin_access": true})).await;
    let proxy = proxy_of(&pairing, 0);
    let [pin, _] = pins(&pairing);

    assert!(is_prompt(&app.answer(STRANGER, &proxy, "CON-pi").await));
    let refused = type_pin(&app, STRANGER, &proxy, "CON-pi", &pin).await;
    assert_eq!(
        refused,
        json!([{"action": "talk", "text": "Calls for this ride are paused.", "language": "en-US"}])
    );
    let (outcome_now, pairing_id) = outcome(&app, "CON-pi").await;
    assert_eq!(outcome_now, "intercepted");
    assert_eq!(
        pairing_id.unwrap().to_string(),
        pairing["id"].as_str().unwrap()
    );
    let asked = receiver.received();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].json()["data"]["caller_label"], "driver");

    receiver.set_reply(Reply::Json(json!({"action": "allow"})));
    assert!(is_prompt(&app.answer(STRANGER, &proxy, "CON-pi-2").await));
    let connect = type_pin(&app, STRANGER, &proxy, "CON-pi-2", &pin).await;
    assert_eq!(actions(&connect), ["connect"], "{connect}");
    assert_eq!(outcome(&app, "CON-pi-2").await.0, "pin_routed");
}
