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
        (
            "VONAGE_APPLICATION_ID",
            "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        ),
        ("SIGNATURE_PAYLOAD_HASH", "enforce"),
    ])
    .await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let p = app.pair("16465550101", "16465550102").await;
    (app, p)
}

async fn answer_with(app: &TestApp, proxy: &str, token: Option<String>) -> reqwest::Response {
    let conversation = format!("CON-{}", uuid::Uuid::new_v4());
    answer_in(app, proxy, &conversation, token).await
}

async fn answer_in(
    app: &TestApp,
    proxy: &str,
    conversation: &str,
    token: Option<String>,
) -> reqwest::Response {
    let mut req = app.client.get(app.url("/webhooks/answer")).query(&[
        ("from", "16465550101"),
        ("to", proxy),
        ("uuid", "leg-1"),
        ("conversation_uuid", conversation),
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
    let wrong_application = {
        let mut c = claims(b"");
        c["application_id"] = json!("bbbbbbbb-bbbb-cccc-dddd-0123456789ab");
        mint(&hs256(), &c, SECRET)
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        (
            "wrong secret",
            Some(mint(&hs256(), &claims(b""), "guessed-secret")),
        ),
        ("alg none", Some(none)),
        ("stale iat", Some(stale)),
        ("wrong issuer", Some(wrong_issuer)),
        ("wrong api key", Some(wrong_key)),
        ("wrong application", Some(wrong_application)),
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
    // No signature at all: 503, which Vonage retries (it sends an unsigned callback only when it
    // has an internal error).
    let r = answer_with(&app, &proxy, None).await;
    assert_eq!(r.headers()["retry-after"], "1");
    let body = assert_problem(r, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["code"], "signature-missing");
    assert!(!body.to_string().contains("16465550102"));
    // A token reused on another request (another call) is refused.
    let token = mint(&hs256(), &claims(b""), SECRET);
    let first = answer_in(&app, &proxy, "CON-first", Some(token.clone())).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        answer_with(&app, &proxy, Some(token.clone()))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // The very same request again (Vonage retrying it) is answered again, the same way.
    let again = answer_in(&app, &proxy, "CON-first", Some(token)).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    // Refused requests record no call, and the retry no second one.
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
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    // Vonage's retry of the event, with the same token and body: accepted, stored once.
    let token = mint(&hs256(), &claims(body.as_bytes()), SECRET);
    for _ in 0..2 {
        assert_eq!(
            post(Some(token.clone()), body.clone())
                .await
                .unwrap()
                .status(),
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM call_events").await, 1);
}

#[tokio::test]
async fn unsigned_webhooks_are_served_only_when_allowed_and_the_metrics_say_so() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123"]).await;
    let ncco = app
        .answer("16465550101", "12125550123", "CON-unsigned")
        .await;
    assert_eq!(ncco[0]["action"], "talk");
    assert!(
        metrics(&app)
            .await
            .contains("webhook_signatures_enforced 0")
    );
    let (signed, _) = signed_app().await;
    assert!(
        metrics(&signed)
            .await
            .contains("webhook_signatures_enforced 1")
    );
}

async fn metrics(app: &TestApp) -> String {
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    r.text().await.unwrap()
}

#[tokio::test]
async fn claims_vonage_may_add_do_not_cause_a_refusal() {
    let (app, p) = signed_app().await;
    let mut c = claims(b"");
    c["aud"] = json!("https://proxy.example.com");
    c["nbf"] = json!(chrono::Utc::now().timestamp() - 5);
    let r = answer_with(&app, &proxy_of(&p, 0), Some(mint(&hs256(), &c, SECRET))).await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// A forged request is refused on its header: its body is never waited for.
#[tokio::test]
async fn a_forged_request_is_refused_before_its_body_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (app, _) = signed_app().await;
    let forged = mint(&hs256(), &claims(b"{}"), "guessed-secret");
    let mut socket = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    // Headers, and the first byte of a body of 10,000 that never comes.
    let head = format!(
        "POST /webhooks/event HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         authorization: Bearer {forged}\r\ncontent-length: 10000\r\n\r\n{{"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), socket.read(&mut answer))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

/// The safe setting is the default: the binary does not serve unauthenticated webhooks unless
/// told to, and says which settings to use.
#[tokio::test]
async fn the_service_refuses_to_start_without_a_signature_secret() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_voice-proxy"))
        .arg("serve")
        .env_clear()
        .env("ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN)
        .env("RETENTION_DAYS", "0")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("VONAGE_SIGNATURE_SECRET") && stderr.contains("ALLOW_UNSIGNED_WEBHOOKS"),
        "{stderr}"
    );
}
