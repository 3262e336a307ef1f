//! Test harness: each test gets a database of its own on the real Postgres server, and the real
//! application listening on a free port.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use voice_proxy_persistence::durable::spool::Spool;
use voice_proxy_persistence::migrate;
use voice_proxy_server::config::{LogFormat, Settings};
use voice_proxy_server::startup::Application;
use voice_proxy_server::telemetry;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        telemetry::init(LogFormat::Pretty, std::io::stdout);
    }
});

#[path = "../../../persistence/tests/db/test_database.rs"]
mod test_database;
pub use test_database::{create_database, server_url};

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

    pub async fn patch_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .patch(self.url(path))
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

    /// Closes a pairing by its id.
    pub async fn close(&self, pairing_id: &str) -> Response {
        self.post_json(&format!("/v1/pairings/{pairing_id}/close"), &json!({}))
            .await
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

/// An event about one leg of a call, as Vonage posts it: `status` at second `second` past
/// 10:00 on 1 May 2024.
pub fn leg_event(
    conversation: &str,
    leg: &str,
    direction: &str,
    status: &str,
    second: u32,
) -> Value {
    json!({"uuid": leg, "conversation_uuid": conversation, "status": status,
           "direction": direction, "timestamp": format!("2024-05-01T10:00:{second:02}Z")})
}

/// Waits until `instances` instances have read the pairings' change feed past this moment, so
/// that what was committed before is in their routes in memory.
pub async fn wait_for_mirrors(pool: &PgPool, instances: i64) {
    let now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await
        .unwrap();
    wait_until(
        "the routes in memory to catch up",
        Duration::from_secs(10),
        async || {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM route_mirrors WHERE seen_at > $1")
                .bind(now)
                .fetch_one(pool)
                .await
                .unwrap_or(0)
                >= instances
        },
    )
    .await;
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
