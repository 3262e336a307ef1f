//! Admin API keys: created through the API and the CLI, scoped, revocable, stored as hashes.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem, spawn_app};

/// Creates a key through the API with the bootstrap token; returns the creation response.
async fn create_key(app: &TestApp, name: &str, scopes: &[&str]) -> Value {
    let r = app
        .post_json("/v1/api-keys", &json!({"name": name, "scopes": scopes}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.expect("json")
}

fn secret_of(created: &Value) -> String {
    created["secret"].as_str().expect("secret").to_owned()
}

/// `vpk_<id>_<random>` into its id and random part (which may itself hold `_`).
fn split_key(secret: &str) -> (&str, &str) {
    secret
        .strip_prefix("vpk_")
        .and_then(|rest| rest.split_once('_'))
        .expect("vpk_<id>_<random>")
}

async fn get_with(app: &TestApp, key: &str, path: &str) -> Response {
    app.client
        .get(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("request")
}

async fn post_with(app: &TestApp, key: &str, path: &str, body: &Value) -> Response {
    app.client
        .post(app.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("request")
}

/// Polls the key until `last_used_at` is set (it is written in the background).
async fn wait_for_last_used(app: &TestApp, id: &str) -> Value {
    for _ in 0..50 {
        let key: Value = app
            .get(&format!("/v1/api-keys/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if !key["last_used_at"].is_null() {
            return key;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("last_used_at was never set");
}

#[tokio::test]
async fn an_admin_key_created_through_the_api_is_shown_once_and_works_like_the_admin_token() {
    let app = spawn_app().await;

    let created = create_key(&app, "backend", &["admin"]).await;
    let secret = secret_of(&created);
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with(&format!("vpk_{}_", Uuid::parse_str(&id).unwrap().simple())),
        "{secret}"
    );
    assert_eq!(created["name"], "backend");
    assert_eq!(created["scopes"], json!(["admin"]));
    assert!(created["last_used_at"].is_null() && created["revoked_at"].is_null());

    // Listed and read back without the secret.
    let list: Value = app.get("/v1/api-keys").await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert!(list["items"][0].get("secret").is_none());
    assert!(!list.to_string().contains(&secret));
    let one: Value = app
        .get(&format!("/v1/api-keys/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(one.get("secret").is_none());

    // The key does what the admin token does.
    let r = post_with(
        &app,
        &secret,
        "/v1/numbers",
        &json!({"number": "12125550123"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(get_with(&app, &secret, "/v1/numbers").await.status(), 200);
    assert_eq!(get_with(&app, &secret, "/v1/calls").await.status(), 200);
    let r = post_with(
        &app,
        &secret,
        "/v1/api-keys",
        &json!({"name": "made-by-a-key", "scopes": ["calls:read"]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_calls_read_key_reads_call_records_and_nothing_else() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let pairing = app.pair("16465550101", "16465550102").await;
    let pairing_id = pairing["id"].as_str().unwrap();
    let reader = secret_of(&create_key(&app, "compliance", &["calls:read"]).await);

    let r = get_with(&app, &reader, "/v1/calls").await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = get_with(&app, &reader, &format!("/v1/calls?pairing_id={pairing_id}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Allowed to look, so a missing call is a 404, not a 403.
    let r = get_with(&app, &reader, &format!("/v1/calls/{}", Uuid::new_v4())).await;
    assert_problem(r, StatusCode::NOT_FOUND).await;

    let refused = [
        post_with(
            &app,
            &reader,
            "/v1/pairings",
            &json!({"participants": [{"number": "16465550103"}, {"number": "16465550104"}]}),
        )
        .await,
        // The scope is checked before the body is read: a bad body is still a 403.
        post_with(&app, &reader, "/v1/pairings", &json!({"nonsense": true})).await,
        get_with(&app, &reader, "/v1/pairings").await,
        get_with(&app, &reader, &format!("/v1/pairings/{pairing_id}")).await,
        post_with(
            &app,
            &reader,
            &format!("/v1/pairings/{pairing_id}/close"),
            &json!({}),
        )
        .await,
        get_with(&app, &reader, "/v1/numbers").await,
        get_with(&app, &reader, "/v1/pool").await,
        post_with(
            &app,
            &reader,
            "/v1/numbers",
            &json!({"number": "12125550125"}),
        )
        .await,
        get_with(&app, &reader, "/v1/api-keys").await,
        post_with(
            &app,
            &reader,
            "/v1/api-keys",
            &json!({"name": "escalate", "scopes": ["admin"]}),
        )
        .await,
    ];
    for r in refused {
        let body = assert_problem(r, StatusCode::FORBIDDEN).await;
        assert_eq!(body["code"], "forbidden");
        assert_eq!(body["type"], "urn:voice-proxy:problem:forbidden");
    }
    // Nothing was changed by the refused requests.
    assert_eq!(app.count("SELECT count(*) FROM pairings").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM pairings WHERE closed_at IS NULL")
            .await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM pool_numbers").await, 2);
    assert_eq!(app.count("SELECT count(*) FROM api_keys").await, 1);
}

#[tokio::test]
async fn a_revoked_key_is_refused_with_401() {
    let app = spawn_app().await;
    let created = create_key(&app, "leaked", &["admin"]).await;
    let secret = secret_of(&created);
    let id = created["id"].as_str().unwrap();
    assert_eq!(get_with(&app, &secret, "/v1/numbers").await.status(), 200);

    let r = app.delete(&format!("/v1/api-keys/{id}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let revoked: Value = r.json().await.unwrap();
    let revoked_at = revoked["revoked_at"]
        .as_str()
        .expect("revoked_at")
        .to_owned();

    for path in ["/v1/numbers", "/v1/calls", "/v1/api-keys"] {
        let body = assert_problem(
            get_with(&app, &secret, path).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert_eq!(body["code"], "unauthorized");
    }
    // Revoking again changes nothing; the key stays listed as revoked.
    let again: Value = app
        .delete(&format!("/v1/api-keys/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["revoked_at"], revoked_at.as_str());
    let list: Value = app.get("/v1/api-keys").await.json().await.unwrap();
    assert_eq!(list["items"][0]["revoked_at"], revoked_at.as_str());
    // Unknown and malformed ids.
    let r = app
        .delete(&format!("/v1/api-keys/{}", Uuid::new_v4()))
        .await;
    assert_problem(r, StatusCode::NOT_FOUND).await;
    let r = app.delete("/v1/api-keys/not-a-uuid").await;
    assert_problem(r, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn bad_credentials_are_refused_with_401_whatever_the_request_holds() {
    let app = spawn_app().await;
    let created = create_key(&app, "real", &["admin"]).await;
    let secret = secret_of(&created);
    let id = Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
    let (id_hex, real_secret) = split_key(&secret);
    assert_eq!(id_hex, id.simple().to_string());
    let prefix = format!("vpk_{id_hex}");

    let bad = [
        format!("{prefix}_{}", "A".repeat(43)),
        format!("{prefix}_"),
        format!("vpk_{}_{real_secret}", Uuid::new_v4().simple()),
        format!("vpk_{}_{real_secret}", id.simple()).replace("vpk_", "vpk_x"),
        "vpk_".to_owned(),
        "vpk_garbage".to_owned(),
        format!("{secret}x"),
        secret[..secret.len() - 1].to_owned(),
    ];
    for token in &bad {
        let r = get_with(&app, token, "/v1/calls").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{token}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_problem(r, StatusCode::UNAUTHORIZED).await;
    }
    // No credential, with a body that would be refused anyway: 401 first.
    let r = app
        .client
        .post(app.url("/v1/api-keys"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(app.count("SELECT count(*) FROM api_keys").await, 1);
}

#[tokio::test]
async fn the_secret_is_stored_only_as_its_sha256() {
    let app = spawn_app().await;
    let created = create_key(&app, "hashed", &["admin", "calls:read"]).await;
    let secret = secret_of(&created);
    let (_, random_part) = split_key(&secret);
    assert!(
        random_part.len() >= 43,
        "256 bits of randomness: {random_part}"
    );

    // No column of the row holds the secret or its random part, in any form Postgres prints.
    let leaks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_keys
          WHERE row_to_json(api_keys)::text LIKE '%' || $1 || '%'
             OR row_to_json(api_keys)::text LIKE '%' || $2 || '%'
             OR encode(secret_hash, 'escape') LIKE '%' || $2 || '%'",
    )
    .bind(&secret)
    .bind(random_part)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(leaks, 0);
    // What is stored is the SHA-256 of the random part, 32 bytes.
    let matches: bool = sqlx::query_scalar(
        "SELECT secret_hash = sha256(convert_to($1, 'UTF8')) AND octet_length(secret_hash) = 32
           FROM api_keys WHERE id = $2",
    )
    .bind(random_part)
    .bind(Uuid::parse_str(created["id"].as_str().unwrap()).unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(matches);
    let scopes: Vec<String> = sqlx::query_scalar("SELECT scopes FROM api_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(scopes, ["admin", "calls:read"]);
}

#[tokio::test]
async fn last_used_at_is_set_on_use_and_written_at_most_once_a_minute() {
    let app = spawn_app().await;
    let created = create_key(&app, "busy", &["calls:read"]).await;
    let secret = secret_of(&created);
    let id = created["id"].as_str().unwrap();
    // Creating and listing with the admin token is not a use of the key.
    let listed: Value = app.get("/v1/api-keys").await.json().await.unwrap();
    assert!(listed["items"][0]["last_used_at"].is_null());

    assert_eq!(get_with(&app, &secret, "/v1/calls").await.status(), 200);
    let used = wait_for_last_used(&app, id).await;
    let first = used["last_used_at"].as_str().unwrap().to_owned();

    for _ in 0..5 {
        assert_eq!(get_with(&app, &secret, "/v1/calls").await.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: Value = app
        .get(&format!("/v1/api-keys/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(after["last_used_at"], first.as_str());

    // A minute later (moved back in the table rather than waited for), the next use is recorded.
    sqlx::query("UPDATE api_keys SET last_used_at = last_used_at - interval '2 minutes'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(get_with(&app, &secret, "/v1/calls").await.status(), 200);
    for _ in 0..50 {
        let moved: bool =
            sqlx::query_scalar("SELECT last_used_at > now() - interval '1 minute' FROM api_keys")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if moved {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the use after a minute was not recorded");
}

#[tokio::test]
async fn key_requests_are_validated() {
    let app = spawn_app().await;
    for body in [
        json!({"name": "", "scopes": ["admin"]}),
        json!({"name": "   ", "scopes": ["admin"]}),
        json!({"name": "x".repeat(65), "scopes": ["admin"]}),
        json!({"name": "tab\there", "scopes": ["admin"]}),
        json!({"name": "nul\u{0}", "scopes": ["admin"]}),
        json!({"name": "ok", "scopes": []}),
        json!({"name": "ok", "scopes": ["root"]}),
        json!({"name": "ok", "scopes": "admin"}),
        json!({"name": "ok"}),
        json!({"name": "ok", "scopes": ["admin"], "secret": "chosen"}),
    ] {
        let r = app.post_json("/v1/api-keys", &body).await;
        let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["code"], "validation-failed", "{body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM api_keys").await, 0);
    // A repeated scope is kept once; names are trimmed.
    let created = create_key(&app, "  twice ", &["calls:read", "calls:read"]).await;
    assert_eq!(created["name"], "twice");
    assert_eq!(created["scopes"], json!(["calls:read"]));
}

/// Runs the real binary's `api-keys` subcommand against the test database, without
/// `ADMIN_TOKEN`: managing keys needs only the database.
async fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_voice-proxy"))
        .arg("api-keys")
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .env_remove("ADMIN_TOKEN")
        .env_remove("RUST_BACKTRACE")
        .output()
        .await
        .expect("run voice-proxy")
}

#[tokio::test]
async fn the_cli_creates_lists_and_revokes_keys() {
    let app = spawn_app().await;

    let out = cli(
        &app,
        &[
            "create",
            "--name",
            "nightly-export",
            "--scope",
            "calls:read",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let secret = stdout.trim().to_owned();
    assert!(
        secret.starts_with("vpk_") && !secret.contains('\n'),
        "stdout is the secret alone: {stdout:?}"
    );
    let note = String::from_utf8(out.stderr).unwrap();
    assert!(note.contains("shown only now"), "{note}");

    // The key works, with its scope only.
    assert_eq!(get_with(&app, &secret, "/v1/calls").await.status(), 200);
    assert_problem(
        get_with(&app, &secret, "/v1/numbers").await,
        StatusCode::FORBIDDEN,
    )
    .await;

    // Listed by the CLI and the API, without the secret.
    let keys: Value = app.get("/v1/api-keys").await.json().await.unwrap();
    let id = keys["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(keys["items"][0]["name"], "nightly-export");
    let out = cli(&app, &["list"]).await;
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains(&id) && table.contains("nightly-export") && table.contains("calls:read"),
        "{table}"
    );
    assert!(!table.contains(&secret), "{table}");

    let out = cli(&app, &["revoke", &id]).await;
    assert!(out.status.success(), "{out:?}");
    assert_problem(
        get_with(&app, &secret, "/v1/calls").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let table = String::from_utf8(cli(&app, &["list"]).await.stdout).unwrap();
    let row = table.lines().find(|l| l.contains(&id)).unwrap();
    assert!(!row.trim_end().ends_with('-'), "revoked time shown: {row}");

    // Refusals: an unknown scope, no scope, an unknown id.
    let out = cli(&app, &["create", "--name", "x", "--scope", "root"]).await;
    assert!(!out.status.success());
    let out = cli(&app, &["create", "--name", "x"]).await;
    assert!(!out.status.success());
    let out = cli(&app, &["revoke", &Uuid::new_v4().to_string()]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("no API key")
    );
    assert_eq!(app.count("SELECT count(*) FROM api_keys").await, 1);
}
