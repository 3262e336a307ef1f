//! No log line or span holds a participant's full number: the real binary runs a whole call flow
//! with debug logging, and its output is searched for the numbers.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::{ADMIN_TOKEN, create_database};

const DRIVER: &str = "16465550101";
const PASSENGER: &str = "16465550102";
const STRANGER: &str = "16465550199";

/// Every line until the pipe closes.
async fn collect_lines<R: tokio::io::AsyncBufRead + Unpin>(
    mut lines: tokio::io::Lines<R>,
) -> Vec<String> {
    let mut collected = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        collected.push(line);
    }
    collected
}

#[tokio::test]
async fn a_full_call_flow_logs_no_participant_number() {
    let database_url = create_database().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_voice-proxy"))
        .arg("serve")
        .env("DATABASE_URL", &database_url)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("ALLOW_UNSIGNED_WEBHOOKS", "true")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .env("HTTP_WORKERS", "1")
        .env("RETENTION_HASH_KEY", "test-retention-key-0123456789")
        .env(
            "SPOOL_DIR",
            std::env::temp_dir().join(format!("vp-test-spool-{}", uuid::Uuid::new_v4().simple())),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the voice-proxy binary starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut output = Vec::new();
    let port = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .expect("the service logs that it listens")
            .unwrap()
            .expect("the service is running");
        output.push(line.clone());
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if let Some(port) = v["fields"]["port"].as_u64() {
            break port;
        }
    };
    // Read both pipes all along: a pipe nobody reads fills up and blocks the service's logging.
    let stdout_lines = tokio::spawn(collect_lines(stdout));
    let stderr_lines = tokio::spawn(collect_lines(
        BufReader::new(child.stderr.take().unwrap()).lines(),
    ));
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let admin = |method: reqwest::Method, path: &str| {
        client
            .request(method, format!("{base}{path}"))
            .bearer_auth(ADMIN_TOKEN)
    };

    for n in ["12125550123", "12125550124"] {
        let r = admin(reqwest::Method::POST, "/v1/numbers")
            .json(&json!({"number": n}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let p: Value = admin(reqwest::Method::POST, "/v1/pairings")
        .json(&json!({"participants": [{"number": DRIVER, "label": "driver"}, {"number": PASSENGER}], "reference": "ride-1"}))
        .send().await.unwrap().json().await.unwrap();
    let proxy_a = p["participants"][0]["proxy_number"]
        .as_str()
        .unwrap()
        .to_owned();
    let proxy_b = p["participants"][1]["proxy_number"]
        .as_str()
        .unwrap()
        .to_owned();
    // Refusals that concern a participant: exhaustion, pool number as participant, bad input.
    let single = admin(reqwest::Method::POST, "/v1/pairings")
        .json(&json!({"participants": [{"number": DRIVER}, {"number": STRANGER}]}))
        .send()
        .await
        .unwrap();
    let _ = single.status();
    let _ = admin(reqwest::Method::POST, "/v1/pairings")
        .json(&json!({"participants": [{"number": DRIVER}, {"number": 16465550103u64}]}))
        .send()
        .await
        .unwrap();
    let _ = admin(reqwest::Method::POST, "/v1/pairings")
        .json(&json!({"participants": [{"number": DRIVER}, {"number": DRIVER}]}))
        .send()
        .await
        .unwrap();

    for (from, to, conv) in [
        (DRIVER, &proxy_a, "CON-p1"),
        (PASSENGER, &proxy_b, "CON-p2"),
        (STRANGER, &proxy_a, "CON-p3"),
    ] {
        let r = client
            .get(format!("{base}/webhooks/answer"))
            .query(&[
                ("from", from),
                ("to", to.as_str()),
                ("uuid", &format!("{conv}-in")),
                ("conversation_uuid", conv),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    for (leg, dir, status, from, to) in [
        ("CON-p1-in", "inbound", "started", DRIVER, proxy_a.as_str()),
        (
            "CON-p1-out",
            "outbound",
            "answered",
            proxy_b.as_str(),
            PASSENGER,
        ),
        (
            "CON-p1-out",
            "outbound",
            "completed",
            proxy_b.as_str(),
            PASSENGER,
        ),
    ] {
        let r = client.post(format!("{base}/webhooks/event"))
            .json(&json!({"uuid": leg, "conversation_uuid": "CON-p1", "direction": dir, "status": status,
                          "from": from, "to": to, "timestamp": "2024-05-01T10:00:00Z", "duration": "3"}))
            .send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    let _ = client
        .post(format!("{base}/webhooks/event"))
        .json(&json!({"from": DRIVER, "status": 5}))
        .send()
        .await
        .unwrap();
    let _ = admin(
        reqwest::Method::GET,
        &format!("/v1/pairings?number={DRIVER}"),
    )
    .send()
    .await
    .unwrap();
    let id = p["id"].as_str().unwrap();
    let _ = admin(reqwest::Method::POST, &format!("/v1/pairings/{id}/close"))
        .send()
        .await
        .unwrap();
    let _ = client
        .get(format!("{base}/webhooks/answer"))
        .query(&[
            ("from", DRIVER),
            ("to", proxy_a.as_str()),
            ("uuid", "x"),
            ("conversation_uuid", "CON-p4"),
        ])
        .send()
        .await
        .unwrap();
    let _ = admin(reqwest::Method::GET, "/v1/calls")
        .send()
        .await
        .unwrap();

    // Stop the service and collect everything it wrote.
    let pid = child.id().expect("running") as i32;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .await;
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "SIGTERM ends the service cleanly: {status}"
    );
    for pipe in [stdout_lines, stderr_lines] {
        output.extend(
            tokio::time::timeout(Duration::from_secs(5), pipe)
                .await
                .expect("the pipes close once the service has exited")
                .unwrap(),
        );
    }

    let all = output.join("\n");
    assert!(
        output.len() > 20,
        "the flow was logged: {} lines",
        output.len()
    );
    assert!(all.contains("***0101"), "numbers appear masked");
    for number in [DRIVER, PASSENGER, STRANGER, "16465550103"] {
        let national = &number[1..];
        assert!(
            !all.contains(national),
            "{number} appears in the logs:\n{}",
            output
                .iter()
                .filter(|l| l.contains(national))
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
