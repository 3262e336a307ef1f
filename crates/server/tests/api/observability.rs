//! Health, readiness, metrics and request ids.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, proxy_of, spawn_app};

#[tokio::test]
async fn metrics_cover_the_call_path_without_phone_numbers() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123"]).await;
    let p = app.pair("16465550101", "16465550102").await;
    app.answer("16465550101", &proxy_of(&p, 0), "CON-m1").await;
    app.answer("16465550199", &proxy_of(&p, 0), "CON-m2").await;
    let e = json!({"uuid": "l", "conversation_uuid": "CON-m1", "status": "started", "timestamp": "2024-05-01T10:00:00Z"});
    app.post_event(&e).await;
    app.post_event(&e).await;
    assert_problem(
        app.create_pairing("16465550101", "16465550103").await,
        StatusCode::CONFLICT,
    )
    .await;
    let id = p["id"].as_str().unwrap();
    app.close(id).await;

    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    for needle in [
        "http_request_duration_seconds_bucket{route=\"/webhooks/answer\",status=\"2xx\"",
        "answer_outcomes_total{outcome=\"routed\"}",
        "answer_outcomes_total{outcome=\"no_pairing\"}",
        "events_received_total{result=\"stored\"}",
        "events_received_total{result=\"duplicate\"}",
        "pairings_created_total",
        "pairings_closed_total",
        "exhaustion_refusals_total{country=\"US\"}",
        "db_pool_connections",
        "spool_depth",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    for number in ["6465550101", "6465550102", "6465550199", "2125550123"] {
        assert!(!text.contains(number), "a phone number in a metric");
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_health_is_reported() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    let r = app.client.get(app.url("/v1/nowhere")).send().await.unwrap();
    assert!(r.headers().contains_key("x-request-id"));
    assert_problem(r, StatusCode::NOT_FOUND).await;
}
