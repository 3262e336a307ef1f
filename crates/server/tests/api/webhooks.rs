use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{proxy_of, spawn_app, spawn_app_with};

#[tokio::test]
async fn each_side_is_connected_to_the_other_showing_a_number_that_calls_back() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair("16465550101", "16465550102").await;
    let (proxy_a, proxy_b) = (proxy_of(&p, 0), proxy_of(&p, 1));

    let ncco = app.answer("16465550101", &proxy_a, "CON-a").await;
    assert_eq!(
        ncco,
        json!([{
            "action": "connect",
            "from": proxy_b,
            "eventType": "synchronous",
            "eventUrl": ["https://proxy.example.com/webhooks/event"],
            "timeout": 45,
            "limit": 7200,
            "endpoint": [{"type": "phone", "number": "16465550102"}]
        }])
    );
    let ncco = app.answer("16465550102", &proxy_b, "CON-b").await;
    assert_eq!(ncco[0]["action"], "connect");
    assert_eq!(ncco[0]["from"], proxy_a.as_str());
    assert_eq!(ncco[0]["endpoint"][0]["number"], "16465550101");
}

#[tokio::test]
async fn anyone_else_hears_the_message_and_is_never_connected() {
    let app = spawn_app_with(&[("NO_ROUTE_MESSAGE", "Sorry, not available.")]).await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair("16465550101", "16465550102").await;
    let proxy_a = proxy_of(&p, 0);

    let stranger = app.answer("16465550199", &proxy_a, "CON-s").await;
    assert_eq!(
        stranger,
        json!([{"action": "talk", "text": "Sorry, not available.", "language": "en-US"}])
    );
    // A participant dialling a pool number that is not theirs.
    let other_number = if proxy_a == "12125550123" {
        "12125550124"
    } else {
        "12125550123"
    };
    if proxy_of(&p, 0) != proxy_of(&p, 1) {
        let wrong = app.answer("16465550101", other_number, "CON-w").await;
        assert_eq!(wrong[0]["action"], "talk");
    }
    for withheld in ["", "Restricted", "anonymous"] {
        let ncco = app
            .answer(withheld, &proxy_a, &format!("CON-withheld-{withheld}"))
            .await;
        assert_eq!(ncco[0]["action"], "talk");
    }
    // Missing uuid, missing everything, garbage query.
    for query in [
        format!("from=16465550101&to={proxy_a}&conversation_uuid=CON-x"),
        String::new(),
        "from=%ZZ&to=%%".to_owned(),
    ] {
        let r = app
            .client
            .get(app.url(&format!("/webhooks/answer?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let ncco: Value = r.json().await.unwrap();
        assert_eq!(ncco[0]["action"], "talk", "{query}");
    }
    app.settle().await;
    let outcomes: Vec<(String, i64)> =
        sqlx::query_as("SELECT outcome, count(*) FROM calls GROUP BY outcome ORDER BY outcome")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let get = |o: &str| {
        outcomes
            .iter()
            .find(|(k, _)| k == o)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    assert_eq!(get("routed"), 0);
    assert!(get("no_pairing") >= 1);
    assert_eq!(get("anonymous"), 3);
    assert!(get("invalid_request") >= 1);
}

#[tokio::test]
async fn the_answer_webhook_takes_post_json_and_survives_garbage() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair("16465550101", "16465550102").await;
    let proxy_a = proxy_of(&p, 0);
    let r = app
        .client
        .post(app.url("/webhooks/answer"))
        .json(
            &json!({"from": "16465550101", "to": proxy_a, "uuid": "u-post",
                      "conversation_uuid": "CON-post", "endpoint_type": "phone",
                      "region_url": "https://api-eu-3.vonage.com", "custom_data": {"a": 1}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ncco: Value = r.json().await.unwrap();
    assert_eq!(ncco[0]["action"], "connect");

    for body in ["", "not json", "[1,2,3]", "{\"from\": 5}"] {
        let r = app
            .client
            .post(app.url("/webhooks/answer"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{body}");
        let ncco: Value = r.json().await.unwrap();
        assert_eq!(ncco[0]["action"], "talk", "{body}");
    }
}

#[tokio::test]
async fn a_caller_whose_pairing_ended_hears_the_ended_message() {
    let app = spawn_app_with(&[("PAIRING_ENDED_MESSAGE", "This contact has ended.")]).await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair("16465550101", "16465550102").await;
    let id = p["id"].as_str().unwrap();
    app.close(id).await;
    let ncco = app
        .answer("16465550101", &proxy_of(&p, 0), "CON-ended")
        .await;
    assert_eq!(ncco[0]["text"], "This contact has ended.");
    let (outcome, pairing): (String, Option<uuid::Uuid>) = sqlx::query_as(
        "SELECT outcome, pairing_id FROM calls WHERE conversation_uuid = 'CON-ended'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(outcome, "pairing_ended");
    assert_eq!(pairing.unwrap().to_string(), id);
}

#[tokio::test]
async fn a_retried_answer_request_records_one_call() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair("16465550101", "16465550102").await;
    let proxy_a = proxy_of(&p, 0);
    let first = app.answer("16465550101", &proxy_a, "CON-retry").await;
    let second = app.answer("16465550101", &proxy_a, "CON-retry").await;
    assert_eq!(first, second);
    let third = futures_util::future::join_all(
        (0..5).map(|_| app.answer("16465550101", &proxy_a, "CON-retry")),
    )
    .await;
    assert!(third.iter().all(|n| n == &first));
    assert_eq!(app.count("SELECT count(*) FROM calls").await, 1);
}
