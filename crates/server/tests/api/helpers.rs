//! Test harness: each test gets a database of its own on the real Postgres server, and the real
//! application listening on a free port.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use uuid::Uuid;
use voice_proxy_domain::{CallRecord, EventRecord};
use voice_proxy_persistence::durable::spool::Spool;
use voice_proxy_persistence::migrate;
use voice_proxy_persistence::records::Record;
use voice_proxy_server::config::{LogFormat, Settings};
use voice_proxy_server::startup::Application;
use voice_proxy_server::telemetry;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        telemetry::init(LogFormat::Pretty, std::io::stdout);
    }
});

/// The server that holds the test databases.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Creates an empty database and returns its URL.
pub async fn create_database() -> String {
    let name = format!("vp_test_{}", Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&server_url())
        .await
        .expect("Postgres must answer at TEST_DATABASE_URL (default 127.0.0.1:5432)");
    conn.execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .await
        .expect("create test database");
    let base = server_url();
    let (prefix, _) = base.rsplit_once('/').expect("URL with a database");
    format!("{prefix}/{name}")
}

/// A new database, migrated, and a pool of `connections` to it; with one connection, views of
/// the session (`pg_prepared_statements`, the statistics it publishes) show what the tests ran.
pub async fn migrated_database(connections: u32) -> (String, PgPool) {
    let url = create_database().await;
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("a database URL");
    let mut conn = PgConnection::connect_with(&options)
        .await
        .expect("connect to the test database");
    migrate::run(&mut conn).await.expect("migrate");
    let _ = conn.close().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(options)
        .await
        .expect("a pool");
    (url, pool)
}

/// An answered call's record, as the answer webhook makes it, for `conversation`.
pub fn call_record(conversation: &str) -> Record {
    Record::Call(CallRecord {
        id: voice_proxy_domain::CallId::new(),
        conversation_uuid: Some(conversation.to_owned()),
        uuid: Some(format!("{conversation}-in")),
        pairing_id: None,
        caller: None,
        proxy_number: None,
        callee: None,
        outcome: voice_proxy_domain::CallOutcome::Anonymous,
        started_at: chrono::Utc::now(),
        endpoint_type: None,
    })
}

/// An event of the inbound leg of `conversation`, `second` seconds into the minute.
pub fn event_record(conversation: &str, status: &str, second: u32) -> Record {
    Record::Event(EventRecord {
        payload: json!({
            "uuid": format!("{conversation}-in"),
            "conversation_uuid": conversation,
            "status": status,
            "direction": "inbound",
            "from": "12125550000",
            "to": "16465550000",
            "timestamp": format!("2026-01-01T00:00:{second:02}.000Z"),
        }),
        received_at: chrono::Utc::now(),
    })
}

pub struct TestApp {
    pub address: String,
    pub pool: PgPool,
    #[allow(dead_code)]
    pub database_url: String,
    pub client: reqwest::Client,
    /// The instance's spool: call records pass through it on their way to Postgres.
    pub spool: Arc<Spool>,
}

pub fn base_env(database_url: &str) -> HashMap<String, String> {
    [
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("DATABASE_URL", database_url),
        // Most tests call the webhooks unsigned; signatures.rs signs its requests.
        ("ALLOW_UNSIGNED_WEBHOOKS", "true"),
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("HTTP_WORKERS", "2"),
        ("PUBLIC_BASE_URL", "https://proxy.example.com"),
        ("COOL_OFF_SECONDS", "0"),
        ("RETENTION_HASH_KEY", "test-retention-key-0123456789"),
        // Small spool segments: every instance zero-fills two of them.
        ("SPOOL_SEGMENT_KIB", "1024"),
        // The answer webhook's lookup includes taking a connection, which in a loaded parallel
        // run can take longer than the production limit (300 ms); past it the answer falls back
        // to the routes in memory, which a test's fresh pairing may not have reached yet. The
        // outage tests set their own limit.
        ("ANSWER_DB_TIMEOUT_MS", "5000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Spawns the application with extra environment settings.
pub async fn spawn_app_with(vars: &[(&str, &str)]) -> TestApp {
    let database_url = create_database().await;
    spawn_app_on(&database_url, vars).await
}

/// Spawns an application on an existing database (a second instance, say).
pub async fn spawn_app_on(database_url: &str, vars: &[(&str, &str)]) -> TestApp {
    LazyLock::force(&TRACING);
    let mut env = base_env(database_url);
    let spool = std::env::temp_dir().join(format!("vp-test-spool-{}", Uuid::new_v4().simple()));
    env.insert("SPOOL_DIR".to_owned(), spool.display().to_string());
    for (k, v) in vars {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let settings = Settings::from_lookup(|k| env.get(k).cloned()).expect("test settings");
    migrate::run_with(&settings.database.options)
        .await
        .expect("migrations apply");
    let app = Application::build(settings).expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let pool = app.pool().clone();
    let spool = app.spool().clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        pool,
        spool,
        database_url: database_url.to_owned(),
        client: reqwest::Client::new(),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request")
    }

    pub async fn add_number(&self, number: &str) -> Response {
        self.post_json("/v1/numbers", &json!({ "number": number }))
            .await
    }

    /// Adds pool numbers, asserting each is created.
    pub async fn add_numbers(&self, numbers: &[&str]) {
        for n in numbers {
            let r = self.add_number(n).await;
            assert_eq!(r.status(), StatusCode::CREATED, "adding {n}");
        }
    }

    pub async fn create_pairing(&self, a: &str, b: &str) -> Response {
        self.post_json(
            "/v1/pairings",
            &json!({"participants": [
                {"number": a, "label": "driver"},
                {"number": b, "label": "passenger"}
            ]}),
        )
        .await
    }

    /// Creates a pairing and returns its body, asserting 201.
    pub async fn pair(&self, a: &str, b: &str) -> Value {
        let r = self.create_pairing(a, b).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.expect("json")
    }

    /// Calls the answer webhook as Vonage does by default (GET with a query string).
    pub async fn answer(&self, from: &str, to: &str, conversation: &str) -> Value {
        let r = self
            .client
            .get(self.url("/webhooks/answer"))
            .query(&[
                ("from", from),
                ("to", to),
                ("uuid", &format!("{conversation}-in")),
                ("conversation_uuid", conversation),
            ])
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/json"
        );
        let ncco = r.json().await.expect("NCCO json");
        self.settle().await;
        ncco
    }

    /// Waits (up to 10 s) until the spool is empty: every call record acknowledged so far is in
    /// Postgres.
    pub async fn settle(&self) {
        for _ in 0..1000 {
            if self.spool.depth() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the spool still holds {} records after 10 s",
            self.spool.depth()
        );
    }

    pub async fn post_event(&self, event: &Value) -> Response {
        self.client
            .post(self.url("/webhooks/event"))
            .json(event)
            .send()
            .await
            .expect("request")
    }

    /// Runs a count query once every acknowledged record is in Postgres.
    pub async fn count(&self, sql: &'static str) -> i64 {
        self.settle().await;
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count query")
    }
}

/// Asserts a problem+json response and returns its body.
pub async fn assert_problem(r: Response, status: StatusCode) -> Value {
    assert_eq!(r.status(), status);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = r.json().await.expect("problem json");
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:voice-proxy:problem:")
    );
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

/// The proxy number of participant `i` in a pairing body.
pub fn proxy_of(pairing: &Value, i: usize) -> String {
    pairing["participants"][i]["proxy_number"]
        .as_str()
        .expect("proxy_number")
        .to_owned()
}

/// Waits (up to `limit`) until `check` holds; panics naming `what` otherwise.
pub async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

impl TestApp {
    /// The value of one series of `/metrics`, e.g. `events_received_total{result="stored"}`;
    /// 0 when it is not there.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().expect("a number"))
    }
}
