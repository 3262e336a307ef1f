//! voice-proxy's HTTP layer: the Vonage webhooks, the REST admin API (with the marketplace's
//! callback endpoints) and health checks, on actix-web. Every error is an
//! `application/problem+json` body.

pub mod api_keys;
pub mod ask;
pub mod auth;
pub mod calls;
pub mod deadline;
pub mod error;
pub mod health;
pub mod ids;
pub mod metrics;
pub mod nccos;
pub mod numbers;
pub mod openapi;
pub mod pagination;
pub mod pairings;
pub mod pin;
pub mod recordings;
pub mod signature;
pub mod telemetry;
pub mod webhook_endpoints;
pub mod webhook_request;
pub mod webhooks;

use actix_web::web;
use voice_proxy_domain::allocation::AllocationPolicy;
use voice_proxy_persistence::PgPool;
use voice_proxy_persistence::callbacks::Outbox;
use voice_proxy_persistence::durable::health::DatabaseHealth;
use voice_proxy_persistence::durable::load_ledger::LoadLedger;
use voice_proxy_persistence::durable::recorder::Recorder;
use voice_proxy_persistence::durable::route_mirror::RouteMirror;
use voice_proxy_persistence::routing::Routing;

pub use error::ApiError;

/// Largest request body accepted anywhere.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Settings the handlers need.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The bootstrap admin credential.
    pub admin_token: String,
    /// TTL of a pairing created without `ttl_seconds`.
    pub default_ttl_seconds: i64,
    /// Played to callers we do not connect.
    pub no_route_message: String,
    /// Played to callers whose pairing on the dialled number has ended.
    pub pairing_ended_message: String,
    /// Played to a caller whose callee is busy, does not answer or cannot be reached (on a
    /// synchronous connect, that is with `public_base_url`).
    pub callee_unavailable_message: String,
    /// Language of the messages (`talk.language`).
    pub message_language: String,
    /// Public base URL of this service, for `eventUrl` in NCCOs; without it Vonage sends the
    /// connected leg's events to the application's event URL.
    pub public_base_url: Option<String>,
    /// The call options of a pairing that sets none: announcement, whisper, recording, the
    /// call's time limit and how long the callee's phone rings.
    pub call_defaults: voice_proxy_domain::call_options::CallOptions,
    pub pin: PinSettings,
    pub allocation: AllocationPolicy,
    pub signature: signature::SignatureSettings,
    /// How long the answer webhook waits for the database before it routes from memory.
    pub answer_db_timeout: std::time::Duration,
    /// How long a request's body may take to arrive, from when its head was read.
    pub request_body_timeout: std::time::Duration,
    /// The answer webhook returns its NCCO within this, even if the call record is not yet on
    /// disk (it is written as soon as the spool takes it).
    pub answer_deadline: std::time::Duration,
    /// Whether callback endpoints may be plain `http://` URLs.
    pub callback_allow_http: bool,
}

/// PIN access: how PINs are made and asked for.
#[derive(Debug, Clone)]
pub struct PinSettings {
    /// Digits in a PIN (`PIN_LENGTH`).
    pub digits: usize,
    /// PINs a caller may type in one call before the call is refused (`PIN_ATTEMPTS`).
    pub attempts: i64,
    /// The prompt, and the prompt after a wrong PIN.
    pub prompt: String,
    pub retry: String,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: std::sync::Arc<HttpSettings>,
    pub verifier: std::sync::Arc<signature::Verifier>,
    /// Writes call records and events, to Postgres or the local spool.
    pub recorder: Recorder,
    /// Every active route, for answering while the database is unreachable.
    pub mirror: std::sync::Arc<RouteMirror>,
    /// Load counter changes not yet written (one per process).
    pub ledger: std::sync::Arc<LoadLedger>,
    /// Resolving a call's route; closing and re-timing pairings on every instance.
    pub routing: Routing,
    /// Which callbacks endpoints want; the dispatcher's wake-up.
    pub outbox: std::sync::Arc<Outbox>,
    /// The intercept and out-of-session requests, where configured.
    pub questions: ask::Questions,
    /// Fetching and archiving call recordings.
    pub recordings: recordings::Recordings,
}

/// The parts of [`AppState`] shared by every worker.
#[derive(Clone)]
pub struct Shared {
    pub settings: std::sync::Arc<HttpSettings>,
    pub verifier: std::sync::Arc<signature::Verifier>,
    pub recorder: Recorder,
    pub mirror: std::sync::Arc<RouteMirror>,
    pub ledger: std::sync::Arc<LoadLedger>,
    /// Whether the database counts as down (the handle the recorder and the drainer share).
    pub health: std::sync::Arc<DatabaseHealth>,
    pub outbox: std::sync::Arc<Outbox>,
    pub questions: ask::Questions,
    pub recordings: recordings::Recordings,
}

impl Shared {
    pub fn new(
        settings: HttpSettings,
        recorder: Recorder,
        mirror: std::sync::Arc<RouteMirror>,
        ledger: std::sync::Arc<LoadLedger>,
        health: std::sync::Arc<DatabaseHealth>,
        outbox: std::sync::Arc<Outbox>,
        questions: ask::Questions,
    ) -> Self {
        let verifier = signature::Verifier::new(settings.signature.clone());
        Self {
            settings: std::sync::Arc::new(settings),
            verifier: std::sync::Arc::new(verifier),
            recorder,
            mirror,
            ledger,
            health,
            outbox,
            questions,
            recordings: recordings::Recordings::default(),
        }
    }

    /// With recordings fetched (and archived) as `recordings` says; without, the recording
    /// stream answers that the service has no credentials.
    pub fn with_recordings(mut self, recordings: recordings::Recordings) -> Self {
        self.recordings = recordings;
        self
    }

    /// The state of one worker, with the pool that worker's runtime drives.
    pub fn state(&self, pool: PgPool) -> AppState {
        let routing = Routing::new(
            pool.clone(),
            self.mirror.clone(),
            self.health.clone(),
            self.outbox.clone(),
            self.settings.answer_db_timeout,
        );
        AppState {
            pool,
            settings: self.settings.clone(),
            verifier: self.verifier.clone(),
            recorder: self.recorder.clone(),
            mirror: self.mirror.clone(),
            ledger: self.ledger.clone(),
            routing,
            outbox: self.outbox.clone(),
            questions: self.questions.clone(),
            recordings: self.recordings.clone(),
        }
    }
}

/// Registers every route and the extractor settings that turn bad input into problems.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY_BYTES)
            .error_handler(error::json_error),
    )
    .app_data(web::QueryConfig::default().error_handler(error::query_error))
    .app_data(web::PathConfig::default().error_handler(error::path_error))
    .app_data(web::PayloadConfig::default().limit(MAX_BODY_BYTES))
    .configure(health::configure)
    .configure(metrics::configure)
    .configure(webhooks::configure)
    .service(
        web::scope("/v1")
            .configure(numbers::configure)
            .configure(pairings::configure)
            .configure(webhook_endpoints::configure)
            .configure(calls::configure)
            .configure(recordings::configure)
            .configure(api_keys::configure)
            .configure(openapi::configure),
    )
    .default_service(web::to(not_found));
}

async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found("no such resource"))
}
