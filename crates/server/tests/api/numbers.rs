use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn adding_a_number_returns_its_e164_digits_and_country() {
    let app = spawn_app().await;
    let r = app.add_number("+1 (212) 555-0123").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["number"], "12125550123");
    assert_eq!(body["country"], "US");
    assert_eq!(body["state"], "active");
    assert_eq!(body["reserved"], false);
    assert!(body["created_at"].is_string());

    let r = app.add_number("+44 20 7946 0018").await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["country"], "GB");
}

#[tokio::test]
async fn adding_a_number_twice_in_another_form_is_a_conflict() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123"]).await;
    let body = assert_problem(
        app.add_number("+1 212-555-0123").await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(body["code"], "number-exists");
}

#[tokio::test]
async fn invalid_numbers_are_refused_with_422() {
    let app = spawn_app().await;
    for bad in ["", "hello", "12", "+1 212 555 01234567", "447700900123"] {
        let body =
            assert_problem(app.add_number(bad).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(
            body["detail"].as_str().unwrap().starts_with("number:"),
            "{body}"
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM pool_numbers").await, 0);
}

#[tokio::test]
async fn malformed_bodies_get_problems_not_crashes() {
    let app = spawn_app().await;
    let send = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/v1/numbers"))
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_problem(
        send("{\"number\": ", "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        send("not json", "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        send("{\"number\": \"12125550123\"}", "text/plain")
            .await
            .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    assert_problem(
        send("{\"number\": 12125550123}", "application/json")
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let body = assert_problem(
        send(
            "{\"number\": \"12125550123\", \"colour\": \"red\"}",
            "application/json",
        )
        .await
        .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("colour"));
    let huge = format!("{{\"number\": \"{}\"}}", "1".repeat(100_000));
    let r = app
        .client
        .post(app.url("/v1/numbers"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(app.count("SELECT count(*) FROM pool_numbers").await, 0);
}

#[tokio::test]
async fn the_admin_api_requires_the_admin_token() {
    let app = spawn_app().await;
    let no_token = app
        .client
        .post(app.url("/v1/numbers"))
        .json(&json!({"number": "12125550123"}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(no_token, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["code"], "unauthorized");
    for path in ["/v1/numbers", "/v1/pairings", "/v1/calls"] {
        let wrong = app
            .client
            .get(app.url(path))
            .bearer_auth("not-the-token")
            .send()
            .await
            .unwrap();
        assert_problem(wrong, StatusCode::UNAUTHORIZED).await;
        let basic = app
            .client
            .get(app.url(path))
            .basic_auth("admin", Some(crate::helpers::ADMIN_TOKEN))
            .send()
            .await
            .unwrap();
        assert_problem(basic, StatusCode::UNAUTHORIZED).await;
    }
    assert_eq!(app.count("SELECT count(*) FROM pool_numbers").await, 0);
}

#[tokio::test]
async fn numbers_are_listed_page_by_page() {
    let app = spawn_app().await;
    let numbers: Vec<String> = (0..5).map(|i| format!("1212555012{i}")).collect();
    for n in &numbers {
        app.add_numbers(&[n]).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/numbers?limit=2&cursor={c}"),
            None => "/v1/numbers?limit=2".to_owned(),
        };
        let page: Value = app.get(&path).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|i| i["number"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, numbers);
    assert_problem(
        app.get("/v1/numbers?limit=0").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_problem(
        app.get("/v1/numbers?limit=abc").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        app.get("/v1/numbers?cursor=zzz").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn a_retired_number_is_not_allocated_but_its_pairings_keep_routing() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123"]).await;
    let pairing = app.pair("16465550101", "16465550102").await;
    assert_eq!(crate::helpers::proxy_of(&pairing, 0), "12125550123");

    let r = app.delete("/v1/numbers/12125550123").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["state"], "retired");

    // The existing pairing still routes.
    let ncco = app
        .answer("16465550101", "12125550123", "CON-retired-1")
        .await;
    assert_eq!(ncco[0]["action"], "connect");
    assert_eq!(ncco[0]["endpoint"][0]["number"], "16465550102");

    // New pairings do not get it.
    let r = app.create_pairing("16465550103", "16465550104").await;
    let body = assert_problem(r, StatusCode::CONFLICT).await;
    assert_eq!(body["code"], "pool-exhausted");

    assert_problem(
        app.delete("/v1/numbers/12125550199").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        app.delete("/v1/numbers/not-a-number").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}
