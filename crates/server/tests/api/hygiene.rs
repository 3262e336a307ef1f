//! Input that would mislead whoever reads it later: invisible characters in names, other
//! spellings of an id, a language Vonage cannot speak.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_problem, spawn_app};

const HIDDEN: [&str; 7] = [
    "\u{202E}", "\u{200B}", "\u{2066}", "\u{FEFF}", "\u{2028}", "\u{3164}", "\u{034F}",
];

#[tokio::test]
async fn labels_references_and_key_names_with_invisible_characters_are_refused() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    for hidden in HIDDEN {
        let label = format!("driver{hidden}revird");
        let r = app
            .post_json(
                "/v1/pairings",
                &json!({"participants": [
                    {"number": "16465550101", "label": label},
                    {"number": "16465550102", "label": "passenger"}]}),
            )
            .await;
        let body = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(body["detail"].as_str().unwrap().contains("label"), "{body}");
        let r = app
            .post_json(
                "/v1/pairings",
                &json!({"reference": format!("ride-42{hidden}"), "participants": [
                    {"number": "16465550101"}, {"number": "16465550102"}]}),
            )
            .await;
        assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        let r = app
            .post_json(
                "/v1/api-keys",
                &json!({"name": format!("back{hidden}end"), "scopes": ["admin"]}),
            )
            .await;
        assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    assert_eq!(app.count("SELECT count(*) FROM pairings").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM api_keys").await, 0);
    // Ordinary text in any script is fine.
    let r = app
        .post_json(
            "/v1/pairings",
            &json!({"reference": "Fahrt 42 – Jürgen", "participants": [
                {"number": "16465550101", "label": "運転手"},
                {"number": "16465550102", "label": "🚕 passenger"}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn pairing_and_call_ids_are_read_only_as_issued() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair("16465550101", "16465550102").await;
    let id: uuid::Uuid = p["id"].as_str().unwrap().parse().unwrap();
    app.answer(
        "16465550101",
        p["participants"][0]["proxy_number"].as_str().unwrap(),
        "CON-id",
    )
    .await;
    let call: uuid::Uuid = sqlx::query_scalar("SELECT id FROM calls")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        app.get(&format!("/v1/pairings/{id}")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/v1/calls/{call}")).await.status(),
        StatusCode::OK
    );
    for (kind, id) in [("pairings", id), ("calls", call)] {
        for other in [
            id.simple().to_string(),
            id.braced().to_string(),
            id.urn().to_string(),
            id.to_string().to_uppercase(),
        ] {
            let r = app.get(&format!("/v1/{kind}/{other}")).await;
            assert_problem(r, StatusCode::BAD_REQUEST).await;
        }
    }
}

#[tokio::test]
async fn an_api_key_id_is_read_only_as_issued() {
    let app = spawn_app().await;
    let r = app
        .post_json(
            "/v1/api-keys",
            &json!({"name": "backend", "scopes": ["admin"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let key: serde_json::Value = r.json().await.unwrap();
    let id: uuid::Uuid = key["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        app.get(&format!("/v1/api-keys/{id}")).await.status(),
        StatusCode::OK
    );
    for other in [
        id.simple().to_string(),
        id.braced().to_string(),
        id.urn().to_string(),
        id.to_string().to_uppercase(),
    ] {
        let r = app.get(&format!("/v1/api-keys/{other}")).await;
        assert_problem(r, StatusCode::BAD_REQUEST).await;
        let r = app.delete(&format!("/v1/api-keys/{other}")).await;
        assert_problem(r, StatusCode::BAD_REQUEST).await;
    }
    let revoked: i64 = app
        .count("SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL")
        .await;
    assert_eq!(revoked, 0);
}

#[tokio::test]
async fn the_service_refuses_a_message_language_vonage_cannot_speak() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_voice-proxy"))
        .arg("serve")
        .env_clear()
        .env("ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN)
        .env("ALLOW_UNSIGNED_WEBHOOKS", "true")
        .env("RETENTION_DAYS", "0")
        .env("MESSAGE_LANGUAGE", "en-UK")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MESSAGE_LANGUAGE") && stderr.contains("en-GB"),
        "{stderr}"
    );
}
