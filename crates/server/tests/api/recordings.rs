//! Call recordings: the recording webhook, the `recording` object of a call, the audio streamed
//! from Vonage with the application's RS256 JWT, the archive (retries, restarts) and its
//! retention. Vonage's media API is faked in the test process: it verifies every token with the
//! application's PUBLIC key, as Vonage does, and refuses anything else with a 401.

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::binary;
use crate::helpers::{
    ADMIN_TOKEN, TestApp, assert_problem, create_database, proxy_of, spawn_app_on, spawn_app_with,
    wait_until,
};

const APPLICATION_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab";
const PRIVATE_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/vonage-test-private-key.pem"
);
const OTHER_PRIVATE_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/other-test-private-key.pem"
);
const PUBLIC_KEY: &[u8] = include_bytes!("../fixtures/vonage-test-public-key.pem");

/// How the fake answers a request that carries a valid token, when told to; otherwise with the
/// audio (200, `audio/mpeg`, with its length).
#[derive(Debug, Clone)]
enum Reply {
    /// This status, with an empty body.
    Status(u16),
    /// Holds the request this long, then answers with the audio.
    Hang(Duration),
}

/// A request the fake received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    /// Whether its token verified.
    authorized: bool,
}

struct FakeState {
    seen: Mutex<Vec<Seen>>,
    replies: Mutex<VecDeque<Reply>>,
    audio: web::Bytes,
}

/// Vonage's media API (`GET /v1/files/{id}`), in the test process.
struct FakeVonage {
    base: String,
    state: Arc<FakeState>,
    handle: ServerHandle,
}

impl FakeVonage {
    fn start() -> Self {
        let audio: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let state = Arc::new(FakeState {
            seen: Mutex::default(),
            replies: Mutex::default(),
            audio: web::Bytes::from(audio),
        });
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(serve))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("the fake Vonage binds");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            base: format!("http://127.0.0.1:{port}"),
            state,
            handle,
        }
    }

    fn url_of(&self, recording_uuid: &str) -> String {
        format!("{}/v1/files/{recording_uuid}", self.base)
    }

    /// Answers the next valid requests with these, in turn; then with the audio.
    fn queue(&self, replies: &[Reply]) {
        self.state
            .replies
            .lock()
            .unwrap()
            .extend(replies.iter().cloned());
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn audio(&self) -> &[u8] {
        &self.state.audio
    }

    async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// Verifies the application JWT as Vonage does: RS256 with the application's public key, the
/// application's id, `iat`, `exp` and `jti` present.
fn verifies(req: &HttpRequest) -> bool {
    let Some(token) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "jti"]);
    let key = DecodingKey::from_rsa_pem(PUBLIC_KEY).expect("the public key");
    match jsonwebtoken::decode::<Value>(token, &key, &validation) {
        Ok(data) => {
            let c = &data.claims;
            let now = chrono::Utc::now().timestamp();
            c["application_id"] == APPLICATION_ID
                && c["jti"].as_str().is_some_and(|j| !j.is_empty())
                && c["iat"].as_i64().is_some_and(|iat| (iat - now).abs() < 60)
        }
        Err(_) => false,
    }
}

async fn serve(req: HttpRequest, state: web::Data<FakeState>) -> HttpResponse {
    let authorized = verifies(&req);
    state.seen.lock().unwrap().push(Seen {
        path: req.path().to_owned(),
        authorized,
    });
    if !authorized {
        return HttpResponse::Unauthorized().finish();
    }
    if !req.path().starts_with("/v1/files/") {
        return HttpResponse::NotFound().finish();
    }
    let mut reply = state.replies.lock().unwrap().pop_front();
    loop {
        match reply {
            None => {
                return HttpResponse::Ok()
                    .content_type("audio/mpeg")
                    .body(state.audio.clone());
            }
            Some(Reply::Status(code)) => {
                return HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap())
                    .finish();
            }
            Some(Reply::Hang(wait)) => {
                tokio::time::sleep(wait).await;
                reply = None;
            }
        }
    }
}

/// The settings of a service that fetches recordings from `fake`, signing with `key`.
fn fetching(fake: &FakeVonage, key: &'static str) -> Vec<(&'static str, String)> {
    vec![
        ("VONAGE_APPLICATION_ID", APPLICATION_ID.to_owned()),
        ("VONAGE_PRIVATE_KEY_PATH", key.to_owned()),
        ("VONAGE_API_BASE_URL", fake.base.clone()),
    ]
}

/// And archives them into `dir`, retrying after 100 ms (then 200 ms, ...).
fn archiving(fake: &FakeVonage, dir: &Path) -> Vec<(&'static str, String)> {
    let mut vars = fetching(fake, PRIVATE_KEY);
    vars.extend([
        ("RECORDING_ARCHIVE_DIR", dir.display().to_string()),
        ("RECORDING_DOWNLOAD_BACKOFF_MS", "100".to_owned()),
        ("RECORDING_DOWNLOAD_TIMEOUT_SECONDS", "2".to_owned()),
    ]);
    vars
}

async fn spawn(vars: &[(&'static str, String)]) -> TestApp {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_app_with(&vars).await
}

/// A directory for the archive that does not exist yet (the service creates it).
fn archive_dir() -> PathBuf {
    std::env::temp_dir().join(format!("vp-test-archive-{}", Uuid::new_v4().simple()))
}

/// A connected call; returns its id and conversation uuid.
async fn call(app: &TestApp) -> (String, String) {
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let pairing = app.pair("16465550101", "16465550102").await;
    let conversation = format!("CON-{}", Uuid::new_v4());
    app.answer("16465550101", &proxy_of(&pairing, 0), &conversation)
        .await;
    let id: Uuid = sqlx::query_scalar("SELECT id FROM calls WHERE conversation_uuid = $1")
        .bind(&conversation)
        .fetch_one(&app.pool)
        .await
        .expect("the call is recorded");
    (id.to_string(), conversation)
}

/// The recording event Vonage sends for a conversation's recording at `url`.
fn event(conversation: &str, recording_uuid: &str, url: &str) -> Value {
    json!({
        "start_time": "2024-05-01T10:00:00.000Z",
        "recording_url": url,
        "size": 300_000,
        "recording_uuid": recording_uuid,
        "end_time": "2024-05-01T10:01:55.000Z",
        "conversation_uuid": conversation,
        "timestamp": "2024-05-01T10:01:56.000Z"
    })
}

async fn post_recording(base: &str, event: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/webhooks/recording"))
        .json(event)
        .send()
        .await
        .expect("request")
}

async fn state_of(app: &TestApp, recording_uuid: &str) -> (String, i32) {
    sqlx::query_as("SELECT archive_state, attempts FROM recordings WHERE recording_uuid = $1")
        .bind(recording_uuid)
        .fetch_one(&app.pool)
        .await
        .expect("the recording is stored")
}

async fn wait_for_state(app: &TestApp, recording_uuid: &str, state: &str, limit: Duration) {
    wait_until(&format!("the recording to be {state}"), limit, async || {
        state_of(app, recording_uuid).await.0 == state
    })
    .await;
}

async fn stream(app: &TestApp, call_id: &str, token: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/v1/calls/{call_id}/recording")))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

async fn key_with(app: &TestApp, scope: &str) -> String {
    let r = app
        .post_json(
            "/v1/api-keys",
            &json!({"name": format!("{scope} key"), "scopes": [scope]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    body["secret"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_recording_event_is_stored_once_and_shown_on_its_call() {
    let app = spawn_app_with(&[]).await;
    let (id, conversation) = call(&app).await;
    let call: Value = app
        .get(&format!("/v1/calls/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(call["recording"], Value::Null, "{call}");

    let recording_uuid = Uuid::new_v4().to_string();
    let url = format!("https://api.nexmo.com/v1/files/{recording_uuid}");
    let e = event(&conversation, &recording_uuid, &url);
    assert_eq!(post_recording(&app.address, &e).await.status(), 204);
    // Vonage retries: the same event again, as JSON and in the GET form.
    assert_eq!(post_recording(&app.address, &e).await.status(), 204);
    let as_query: Vec<(String, String)> = e
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_owned)))
        .collect();
    let r = app
        .client
        .get(app.url("/webhooks/recording"))
        .query(&as_query)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(app.count("SELECT count(*) FROM recordings").await, 1);
    assert_eq!(
        app.metric("recording_events_total{result=\"duplicate\"}")
            .await,
        2.0
    );

    let call: Value = app
        .get(&format!("/v1/calls/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let recording = &call["recording"];
    assert_eq!(recording["recording_uuid"], recording_uuid.as_str());
    assert_eq!(recording["size"], 300_000);
    assert_eq!(recording["start_time"], "2024-05-01T10:00:00Z");
    assert_eq!(recording["end_time"], "2024-05-01T10:01:55Z");
    assert_eq!(recording["archive_state"], "not_archived");
    assert_eq!(recording["archived_at"], Value::Null);
    assert!(
        !call.to_string().contains("api.nexmo.com"),
        "the Vonage URL is not shown: {call}"
    );
    // The list leaves recordings out, as it does events.
    let list: Value = app.get("/v1/calls").await.json().await.unwrap();
    assert!(list["items"][0].get("recording").is_none(), "{list}");

    // An event without its ids, or with a path for a uuid, is refused.
    let mut bad = e.clone();
    bad["recording_uuid"] = json!("../../etc/passwd");
    let r = post_recording(&app.address, &bad).await;
    assert_problem(r, StatusCode::BAD_REQUEST).await;
    let r = post_recording(&app.address, &json!({"recording_url": url})).await;
    assert_problem(r, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn the_recording_webhook_is_signed_like_the_others() {
    let app = spawn_app_with(&[
        ("ALLOW_UNSIGNED_WEBHOOKS", "false"),
        ("VONAGE_SIGNATURE_SECRET", "vonage-signature-secret"),
    ])
    .await;
    let e = event("CON-1", "rec-1", "https://api.nexmo.com/v1/files/rec-1");
    let r = post_recording(&app.address, &e).await;
    assert_problem(r, StatusCode::SERVICE_UNAVAILABLE).await;
    let r = app
        .client
        .post(app.url("/webhooks/recording"))
        .bearer_auth("e30.e30.forged")
        .json(&e)
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(app.count("SELECT count(*) FROM recordings").await, 0);
}

#[tokio::test]
async fn the_recording_streams_from_vonage_with_an_rs256_application_jwt() {
    let fake = FakeVonage::start();
    let app = spawn(&fetching(&fake, PRIVATE_KEY)).await;
    let (id, conversation) = call(&app).await;
    let r = stream(&app, &id, ADMIN_TOKEN).await;
    assert_problem(r, StatusCode::NOT_FOUND).await;

    let recording_uuid = Uuid::new_v4().to_string();
    let e = event(
        &conversation,
        &recording_uuid,
        &fake.url_of(&recording_uuid),
    );
    assert_eq!(post_recording(&app.address, &e).await.status(), 204);
    assert!(fake.seen().is_empty(), "nothing is fetched without archive");

    let r = stream(&app, &id, ADMIN_TOKEN).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "audio/mpeg");
    assert_eq!(
        r.headers()["content-length"],
        fake.audio().len().to_string().as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), fake.audio());
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].authorized);
    assert_eq!(seen[0].path, format!("/v1/files/{recording_uuid}"));

    // The scope: recordings:read (or admin), not calls:read.
    let reader = key_with(&app, "calls:read").await;
    let r = stream(&app, &id, &reader).await;
    assert_problem(r, StatusCode::FORBIDDEN).await;
    let listener = key_with(&app, "recordings:read").await;
    let r = stream(&app, &id, &listener).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), fake.audio());
    let r = app
        .client
        .get(app.url(&format!("/v1/calls/{id}")))
        .bearer_auth(&listener)
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::FORBIDDEN).await;

    // Vonage failing is a 502, at once.
    fake.queue(&[Reply::Status(500)]);
    let r = stream(&app, &id, ADMIN_TOKEN).await;
    let body = assert_problem(r, StatusCode::BAD_GATEWAY).await;
    assert_eq!(body["code"], "recording-fetch-failed");
    assert!(body["detail"].as_str().unwrap().contains("500"), "{body}");
    assert_eq!(
        app.metric("recording_streams_total{source=\"vonage\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_token_signed_with_another_key_is_refused_by_vonage_and_the_stream_is_a_502() {
    let fake = FakeVonage::start();
    let app = spawn(&fetching(&fake, OTHER_PRIVATE_KEY)).await;
    let (id, conversation) = call(&app).await;
    let recording_uuid = Uuid::new_v4().to_string();
    let e = event(
        &conversation,
        &recording_uuid,
        &fake.url_of(&recording_uuid),
    );
    assert_eq!(post_recording(&app.address, &e).await.status(), 204);

    let r = stream(&app, &id, ADMIN_TOKEN).await;
    let body = assert_problem(r, StatusCode::BAD_GATEWAY).await;
    assert!(body["detail"].as_str().unwrap().contains("401"), "{body}");
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].authorized, "the fake refused the token");
}

#[tokio::test]
async fn without_credentials_the_stream_is_a_503_that_says_so() {
    let app = spawn_app_with(&[]).await;
    let (id, conversation) = call(&app).await;
    let e = event(
        &conversation,
        "rec-1",
        "https://api.nexmo.com/v1/files/rec-1",
    );
    assert_eq!(post_recording(&app.address, &e).await.status(), 204);
    let r = stream(&app, &id, ADMIN_TOKEN).await;
    let body = assert_problem(r, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["code"], "recordings-not-configured");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("VONAGE_PRIVATE_KEY_PATH"),
        "{body}"
    );
}

#[tokio::test]
async fn a_recording_url_off_vonage_is_acknowledged_but_never_fetched() {
    let fake = FakeVonage::start();
    // Somewhere else the forged events point to; it must never be asked anything either.
    let elsewhere = FakeVonage::start();
    let dir = archive_dir();
    let app = spawn(&archiving(&fake, &dir)).await;
    let (id, conversation) = call(&app).await;
    let port = fake
        .base
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    let forged = [
        elsewhere.url_of("rec"),
        "https://api.nexmo.com/v1/files/rec".to_owned(),
        format!("http://localhost:{port}/v1/files/rec"),
        format!("{}/v2/applications?token=secret", fake.base),
        format!("{}/v1/files/../../v2/applications", fake.base),
        format!("http://user:pw@127.0.0.1:{port}/v1/files/rec"),
    ];
    for (i, url) in forged.iter().enumerate() {
        let recording_uuid = format!("forged-{i}");
        let e = event(&conversation, &recording_uuid, url);
        assert_eq!(
            post_recording(&app.address, &e).await.status(),
            204,
            "{url}"
        );
        assert_eq!(
            state_of(&app, &recording_uuid).await,
            ("refused".to_owned(), 0)
        );
    }
    for (reason, n) in [("port", 1.0), ("scheme", 1.0), ("host", 1.0), ("path", 2.0)] {
        let series = format!("recording_urls_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(app.metric(&series).await, n, "{reason}");
    }
    assert_eq!(
        app.metric("recording_urls_refused_total{reason=\"credentials\"}")
            .await,
        1.0
    );

    let call: Value = app
        .get(&format!("/v1/calls/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(call["recording"]["archive_state"], "refused");
    let r = stream(&app, &id, ADMIN_TOKEN).await;
    let body = assert_problem(r, StatusCode::CONFLICT).await;
    assert_eq!(body["code"], "recording-url-refused");

    // Give a worker every chance to fetch something, then check nothing was.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.seen().is_empty(), "{:?}", fake.seen());
    assert!(elsewhere.seen().is_empty(), "{:?}", elsewhere.seen());
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(files.is_empty(), "{files:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Archives a recording of a new call; returns the call id, the recording uuid and its file.
async fn archived(app: &TestApp, fake: &FakeVonage, dir: &Path) -> (String, String, PathBuf) {
    let (id, conversation) = call(app).await;
    let recording_uuid = Uuid::new_v4().to_string();
    let e = event(
        &conversation,
        &recording_uuid,
        &fake.url_of(&recording_uuid),
    );
    assert_eq!(post_recording(&app.address, &e).await.status(), 204);
    wait_for_state(app, &recording_uuid, "archived", Duration::from_secs(10)).await;
    (
        id,
        recording_uuid.clone(),
        dir.join(format!("{recording_uuid}.mp3")),
    )
}

#[tokio::test]
async fn a_recording_is_archived_0600_and_then_served_from_the_archive() {
    let fake = FakeVonage::start();
    let dir = archive_dir();
    let app = spawn(&archiving(&fake, &dir)).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "the service creates the archive private");

    let (id, _, file) = archived(&app, &fake, &dir).await;
    assert_eq!(std::fs::read(&file).unwrap(), fake.audio());
    assert_eq!(mode(&file), 0o600);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
    assert_eq!(fake.seen().len(), 1);
    let call: Value = app
        .get(&format!("/v1/calls/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(call["recording"]["archive_state"], "archived");
    assert!(call["recording"]["archived_at"].is_string(), "{call}");
    assert_eq!(
        app.metric("recording_downloads_total{result=\"archived\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("recording_download_bytes_total").await,
        fake.audio().len() as f64
    );

    // Vonage gone: the archive serves it.
    fake.stop().await;
    let r = stream(&app, &id, ADMIN_TOKEN).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "audio/mpeg");
    assert_eq!(
        r.headers()["content-length"],
        fake.audio().len().to_string().as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), fake.audio());
    assert_eq!(fake.seen().len(), 1, "served without asking Vonage");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_download_that_gets_a_5xx_is_retried_after_a_backoff() {
    let fake = FakeVonage::start();
    fake.queue(&[Reply::Status(503), Reply::Status(500)]);
    let dir = archive_dir();
    let app = spawn(&archiving(&fake, &dir)).await;
    let (_, recording_uuid, file) = archived(&app, &fake, &dir).await;
    assert_eq!(std::fs::read(&file).unwrap(), fake.audio());
    assert_eq!(state_of(&app, &recording_uuid).await.1, 3, "three attempts");
    let seen = fake.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.authorized));
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM recordings WHERE recording_uuid = $1")
            .bind(&recording_uuid)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(last_error, None);
    assert_eq!(
        app.metric("recording_downloads_total{result=\"retry\"}")
            .await,
        2.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_download_cut_short_by_a_crash_is_made_by_the_next_instance() {
    let fake = FakeVonage::start();
    // The first instance's download hangs until it is killed.
    fake.queue(&[Reply::Hang(Duration::from_secs(30))]);
    let dir = archive_dir();
    let database_url = create_database().await;
    let mut vars = archiving(&fake, &dir);
    vars.push(("DATABASE_URL", database_url.clone()));
    let first = binary::start(
        &vars
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    )
    .await;
    let recording_uuid = Uuid::new_v4().to_string();
    let e = event(
        "CON-restart",
        &recording_uuid,
        &fake.url_of(&recording_uuid),
    );
    assert_eq!(post_recording(&first.base, &e).await.status(), 204);
    wait_until(
        "the first instance to start the download",
        Duration::from_secs(10),
        async || !fake.seen().is_empty(),
    )
    .await;
    // Killed in the middle of the download: its lease (4 s here) still holds the recording.
    drop(first);

    let vars = archiving(&fake, &dir);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let second = spawn_app_on(&database_url, &vars).await;
    wait_for_state(
        &second,
        &recording_uuid,
        "archived",
        Duration::from_secs(20),
    )
    .await;
    let file = dir.join(format!("{recording_uuid}.mp3"));
    assert_eq!(std::fs::read(&file).unwrap(), fake.audio());
    assert_eq!(state_of(&second, &recording_uuid).await.1, 2);
    assert_eq!(fake.seen().len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn retention_deletes_old_archived_recordings_and_their_stream_is_gone() {
    let fake = FakeVonage::start();
    let dir = archive_dir();
    let mut vars = archiving(&fake, &dir);
    vars.extend([
        ("RECORDING_RETENTION_DAYS", "30".to_owned()),
        ("RETENTION_INTERVAL_SECONDS", "1".to_owned()),
    ]);
    let app = spawn(&vars).await;
    let (old_id, old_uuid, old_file) = archived(&app, &fake, &dir).await;
    // A second call on other numbers, recent.
    let (new_id, new_uuid, new_file) = {
        app.add_numbers(&["12125550125", "12125550126"]).await;
        let pairing = app.pair("16465550103", "16465550104").await;
        let conversation = format!("CON-{}", Uuid::new_v4());
        app.answer("16465550103", &proxy_of(&pairing, 0), &conversation)
            .await;
        let id: Uuid = sqlx::query_scalar("SELECT id FROM calls WHERE conversation_uuid = $1")
            .bind(&conversation)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        let recording_uuid = Uuid::new_v4().to_string();
        let e = event(
            &conversation,
            &recording_uuid,
            &fake.url_of(&recording_uuid),
        );
        assert_eq!(post_recording(&app.address, &e).await.status(), 204);
        wait_for_state(&app, &recording_uuid, "archived", Duration::from_secs(10)).await;
        let file = dir.join(format!("{recording_uuid}.mp3"));
        (id.to_string(), recording_uuid, file)
    };
    sqlx::query(
        "UPDATE recordings SET received_at = now() - interval '31 days' WHERE recording_uuid = $1",
    )
    .bind(&old_uuid)
    .execute(&app.pool)
    .await
    .unwrap();

    wait_for_state(&app, &old_uuid, "purged", Duration::from_secs(10)).await;
    assert!(!old_file.exists(), "the old recording's file is deleted");
    assert!(new_file.exists(), "a recent one stays");
    assert_eq!(state_of(&app, &new_uuid).await.0, "archived");
    let r = stream(&app, &old_id, ADMIN_TOKEN).await;
    let body = assert_problem(r, StatusCode::GONE).await;
    assert_eq!(body["code"], "recording-purged");
    let call: Value = app
        .get(&format!("/v1/calls/{old_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(call["recording"]["archive_state"], "purged");
    assert!(call["recording"]["purged_at"].is_string(), "{call}");
    assert_eq!(app.metric("recordings_purged_total").await, 1.0);
    assert_eq!(stream(&app, &new_id, ADMIN_TOKEN).await.status(), 200);
    let _ = std::fs::remove_dir_all(&dir);
}
