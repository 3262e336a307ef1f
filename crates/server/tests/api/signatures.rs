//! Signed webhooks against the running service. Tokens are minted here by hand with HMAC-SHA256
//! (an implementation independent of the JWT library the service verifies with), as Vonage does.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, assert_problem, proxy_of, spawn_app, spawn_app_with};

const SECRET: &str = "vonage-signature-secret";

fn mint(header: &Value, claims: &Value, secret: &str) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{h}.{c}").as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{h}.{c}.{sig}")
}

fn claims(body: &[u8]) -> Value {
    let hash: String = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    json!({"iat": chrono::Utc::now().timestamp(), "jti": uuid::Uuid::new_v4().to_string(),
           "iss": "Vonage", "payload_hash": hash, "api_key": "abcd1234",
           "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"})
}

fn hs256() -> Value {
    json!({"alg": "HS256", "typ": "JWT"})
}

async fn signed_app() -> (TestApp, Value) {
    let app = spawn_app_with(&[
        (
            "VONAGE_SIGNATURE_SECRET",
            &format!("retired-secret, {SECRET}"),
        ),
        ("VONAGE_API_KEY", "abcd1234"),
        ("SIGNATURE_PAYLOAD_HASH", "enforce"),
    ])
    .await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair("16465550101", "16465550102").await;
    (app, p)
}

async fn answer_with(app: &TestApp, proxy: &str, token: Option<String>) -> reqwest::Response {
    let mut req = app.client.get(app.url("/webhooks/answer")).query(&[
        ("from", "16465550101"),
        ("to", proxy),
        ("uuid", "leg-1"),
        (
            "conversation_uuid",
            &format!("CON-{}", uuid::Uuid::new_v4()),
        ),
    ]);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_genuine_signed_answer_is_connected() {
    let (app, p) = signed_app().await;
    let token = mint(&hs256(), &claims(b""), SECRET);
    let r = answer_with(&app, &proxy_of(&p, 0), Some(token)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let ncco: Value = r.json().await.unwrap();
    assert_eq!(ncco[0]["action"], "connect");
    // A token signed with the retired secret still works during rotation.
    let token = mint(&hs256(), &claims(b""), "retired-secret");
    assert_eq!(
        answer_with(&app, &proxy_of(&p, 0), Some(token))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn forged_answer_requests_are_refused_and_learn_nothing() {
    let (app, p) = signed_app().await;
    let proxy = proxy_of(&p, 0);
    let stale = {
        let mut c = claims(b"");
        c["iat"] = json!(chrono::Utc::now().timestamp() - 3600);
        mint(&hs256(), &c, SECRET)
    };
    let none = {
        let h = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
        let c = URL_SAFE_NO_PAD.encode(claims(b"").to_string());
        format!("{h}.{c}.")
    };
    let wrong_issuer = {
        let mut c = claims(b"");
        c["iss"] = json!("NotVonage");
        mint(&hs256(), &c, SECRET)
    };
    let wrong_key = {
        let mut c = claims(b"");
        c["api_key"] = json!("someone-else");
        mint(&hs256(), &c, SECRET)
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no signature", None),
        (
            "wrong secret",
            Some(mint(&hs256(), &claims(b""), "guessed-secret")),
        ),
        ("alg none", Some(none)),
        ("stale iat", Some(stale)),
        ("wrong issuer", Some(wrong_issuer)),
        ("wrong api key", Some(wrong_key)),
        ("garbage", Some("not.a.jwt".to_owned())),
    ];
    for (what, token) in cases {
        let r = answer_with(&app, &proxy, token).await;
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("16465550102") && !body.contains("connect"),
            "{what}: {body}"
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], 401, "{what}");
        assert_eq!(v["code"], "invalid-signature", "{what}");
    }
    // A replayed token: the first use is answered, the second refused.
    let token = mint(&hs256(), &claims(b""), SECRET);
    assert_eq!(
        answer_with(&app, &proxy, Some(token.clone()))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        answer_with(&app, &proxy, Some(token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Refused requests record no call: only the one genuine request did.
    assert_eq!(app.count("SELECT count(*) FROM calls").await, 1);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("webhook_signature_refusals_total"),
        "refusals are counted"
    );
}

#[tokio::test]
async fn signed_events_are_checked_against_their_body() {
    let (app, _) = signed_app().await;
    let body = json!({"uuid": "leg", "conversation_uuid": "CON-sig", "status": "started",
                      "timestamp": "2024-05-01T10:00:00Z"})
    .to_string();
    let post = |token: Option<String>, body: String| {
        let mut req = app
            .client
            .post(app.url("/webhooks/event"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let good = mint(&hs256(), &claims(body.as_bytes()), SECRET);
    assert_eq!(
        post(Some(good), body.clone()).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let tampered = body.replace("started", "completed");
    let for_original = mint(&hs256(), &claims(body.as_bytes()), SECRET);
    assert_problem(
        post(Some(for_original), tampered).await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_problem(
        post(None, body.clone()).await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM call_events").await, 1);
}

#[tokio::test]
async fn without_a_secret_webhooks_are_accepted_unsigned() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123"]).await;
    let ncco = app
        .answer("16465550101", "12125550123", "CON-unsigned")
        .await;
    assert_eq!(ncco[0]["action"], "talk");
}
