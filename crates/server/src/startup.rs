//! Building and running the application: the pools, the HTTP server, and the background tasks
//! (change listener, route mirror, spool drain, sweeper, retention purge, load-counter flush).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;

use actix_web::dev::{Server, Service};
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;
use voice_proxy_callbacks::archive;
use voice_proxy_callbacks::{Intercept, Question, Sender, VonageClient, dispatch_forever};
use voice_proxy_http::ask::Questions;
use voice_proxy_http::deadline::{Guarded, limit_body};
use voice_proxy_http::recordings::Recordings;
use voice_proxy_http::telemetry::{MaskedRootSpan, echo_request_id};
use voice_proxy_http::{Shared, configure};
use voice_proxy_persistence::callbacks::Outbox;
use voice_proxy_persistence::durable::health::DatabaseHealth;
use voice_proxy_persistence::durable::load_ledger::LoadLedger;
use voice_proxy_persistence::durable::recorder::Recorder;
use voice_proxy_persistence::durable::route_mirror::RouteMirror;
use voice_proxy_persistence::durable::spool::{self, Spool};
use voice_proxy_persistence::retention::{self, PurgeReport};
use voice_proxy_persistence::{PgListener, PgPool, PoolSettings, connect_lazy, pairings};

use crate::config::{RecordingSettings, RetentionSettings, Settings};
use crate::supervise::{RESTART_DELAY, supervised};

pub struct Application {
    port: u16,
    server: Server,
    pool: PgPool,
    recorder: Recorder,
    mirror: Arc<RouteMirror>,
    ledger: Arc<LoadLedger>,
    outbox: Arc<Outbox>,
    sender: Sender,
    recordings: Recordings,
    settings: Settings,
}

impl Application {
    /// Binds the listener (port 0 picks a free one), opens the spool and builds the server;
    /// nothing is served until [`Application::run_until_stopped`]. Must be called within a
    /// Tokio runtime.
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let workers = settings
            .server
            .http_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        // One share of the connection budget for each worker and one for the background tasks.
        let share = PoolSettings {
            max_connections: (settings.database.pool.max_connections / (workers as u32 + 1)).max(2),
            ..settings.database.pool.clone()
        };
        let pool = connect_lazy(settings.database.options.clone(), &share);
        let listener = TcpListener::bind(settings.server.listen_addr)?;
        let port = listener.local_addr()?.port();
        voice_proxy_http::metrics::handle();

        // Whether the database counts as down: set by the recorder and the answer path when it
        // fails them, cleared by the spool drainer's probe.
        let health = Arc::new(DatabaseHealth::new());
        // Which callbacks endpoints want: read by everything that writes messages.
        let outbox = Arc::new(Outbox::new());
        let sender = Sender::new()?;
        let recorder = Recorder::start(
            pool.clone(),
            &settings.spool.dir,
            settings.spool.segment_bytes,
            settings.spool.memory_bytes,
            health.clone(),
            outbox.clone(),
        )
        .with_context(|| {
            format!(
                "SPOOL_DIR {} cannot be used: the service needs a folder it can write",
                settings.spool.dir.display()
            )
        })?;
        // A default whisper may name any pairing's labels and reference: then every route in
        // memory keeps them.
        let mirror = Arc::new(
            RouteMirror::new(settings.route_mirror.lease)
                .keeping_names(settings.http.call_defaults.whisper.is_some()),
        );
        let ledger = Arc::new(LoadLedger::new());
        let questions = Questions {
            intercept: settings
                .callbacks
                .intercept
                .clone()
                .map(|(question, on_failure)| Intercept {
                    question: Question::new(question, sender.clone()),
                    on_failure,
                }),
            out_of_session: settings
                .callbacks
                .out_of_session
                .clone()
                .map(|question| Question::new(question, sender.clone())),
        };
        if let Some((q, on_failure)) = &settings.callbacks.intercept {
            tracing::info!(
                timeout_ms = q.timeout.as_millis() as u64,
                on_failure = ?on_failure,
                "calls are put to the intercept (INTERCEPT_URL) before they are connected"
            );
        }
        if let Some(q) = &settings.callbacks.out_of_session {
            tracing::info!(
                timeout_ms = q.timeout.as_millis() as u64,
                "calls without an active pairing are put to OUT_OF_SESSION_URL"
            );
        }
        let recordings = recordings(&settings.recordings)?;
        let shared = Shared::new(
            settings.http.clone(),
            recorder.clone(),
            mirror.clone(),
            ledger.clone(),
            health,
            outbox.clone(),
            questions,
        )
        .with_recordings(recordings.clone());
        if !shared.verifier.enabled() {
            tracing::warn!(
                "ALLOW_UNSIGNED_WEBHOOKS=true and no VONAGE_SIGNATURE_SECRET: the answer and \
                 event webhooks are NOT authenticated, so anyone who can reach them can ask whom \
                 a pool number connects to and rewrite call records. For local development only; \
                 set VONAGE_SIGNATURE_SECRET to your Vonage account's signature secret."
            );
        }
        let body_timeout = settings.http.request_body_timeout;
        let database = settings.database.options.clone();
        let mut server = HttpServer::new(move || {
            // Each worker gets its own pool, so its connections are driven by the runtime of the
            // worker that awaits them.
            let state = web::Data::new(shared.state(connect_lazy(database.clone(), &share)));
            App::new()
                .wrap_fn(move |mut req, srv| {
                    let request_body = limit_body(&mut req, body_timeout);
                    let response = srv.call(req);
                    async move {
                        let response = response.await?;
                        Ok(response.map_body(|_, body| Guarded::new(body, request_body)))
                    }
                })
                .wrap_fn(|req, srv| {
                    let response = srv.call(req);
                    async move { response.await.map(echo_request_id) }
                })
                .wrap(TracingLogger::<MaskedRootSpan>::new())
                .app_data(state)
                .configure(configure)
        })
        .workers(workers)
        .shutdown_timeout(10);
        server = server.backlog(2048);
        let server = server.listen(listener)?.run();
        Ok(Self {
            port,
            server,
            pool,
            recorder,
            mirror,
            ledger,
            outbox,
            sender,
            recordings,
            settings,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The local spool call records (and, during an outage, events) pass through.
    pub fn spool(&self) -> &Arc<Spool> {
        self.recorder.spool()
    }

    pub fn mirror(&self) -> &Arc<RouteMirror> {
        &self.mirror
    }

    /// Serves until the server stops (SIGINT/SIGTERM: it stops accepting and lets requests in
    /// flight finish), with the background tasks beside it; then drains what it can of the spool.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let spool = self.recorder.spool().clone();
        let routes_changed = Arc::new(Notify::new());
        let (stop_flushing, stop) = tokio::sync::watch::channel(false);
        let flusher = tokio::spawn(flush_load_forever(
            self.ledger.clone(),
            self.pool.clone(),
            LOAD_FLUSH_INTERVAL,
            stop,
        ));
        // Each runs for the life of the server, started again if it panics.
        let tasks = [
            tokio::spawn(supervised("change_listener", RESTART_DELAY, {
                let (pool, changed) = (self.pool.clone(), routes_changed.clone());
                let outbox = self.outbox.clone();
                move || listen_for_changes(pool.clone(), changed.clone(), outbox.clone())
            })),
            tokio::spawn(supervised("sweeper", RESTART_DELAY, {
                let (pool, every) = (self.pool.clone(), self.settings.server.sweep_interval);
                let outbox = self.outbox.clone();
                move || sweep_forever(pool.clone(), outbox.clone(), every)
            })),
            tokio::spawn(supervised("callback_dispatcher", RESTART_DELAY, {
                let (pool, outbox) = (self.pool.clone(), self.outbox.clone());
                let (sender, settings) = (
                    self.sender.clone(),
                    self.settings.callbacks.dispatch.clone(),
                );
                move || {
                    dispatch_forever(
                        pool.clone(),
                        outbox.clone(),
                        sender.clone(),
                        settings.clone(),
                    )
                }
            })),
            tokio::spawn(supervised("route_mirror", RESTART_DELAY, {
                let (mirror, pool) = (self.mirror.clone(), self.pool.clone());
                let every = self.settings.route_mirror.poll_interval;
                move || mirror_forever(mirror.clone(), pool.clone(), every, routes_changed.clone())
            })),
            tokio::spawn(supervised("retention_purge", RESTART_DELAY, {
                let (pool, retention) = (self.pool.clone(), self.settings.retention.clone());
                let spool = spool.clone();
                move || purge_forever(pool.clone(), spool.clone(), retention.clone())
            })),
            tokio::spawn(supervised("spool_drain", RESTART_DELAY, {
                let (spool, pool) = (spool.clone(), self.pool.clone());
                let every = self.settings.spool.drain_interval;
                move || spool::drain_forever(spool.clone(), pool.clone(), every)
            })),
            tokio::spawn(supervised("recording_archive", RESTART_DELAY, {
                let pool = self.pool.clone();
                let (recordings, settings) =
                    (self.recordings.clone(), self.settings.recordings.clone());
                move || archive_recordings(pool.clone(), recordings.clone(), settings.clone())
            })),
            tokio::spawn(supervised("recording_retention", RESTART_DELAY, {
                let pool = self.pool.clone();
                let settings = self.settings.recordings.clone();
                let every = self.settings.retention.interval;
                move || purge_recordings(pool.clone(), settings.clone(), every)
            })),
        ];
        let result = self.server.await;
        for task in &tasks {
            task.abort();
        }
        if let Err(e) = self.mirror.leave(&self.pool).await {
            tracing::debug!(error = %e, "could not take this instance out of route_mirrors");
        }
        // The flusher is stopped, not aborted: aborted in the middle of its statement, it could
        // not know whether the statement committed. Its last flush writes what is left.
        let _ = stop_flushing.send(true);
        if let Err(e) = flusher.await {
            tracing::warn!(error = %e, "the load counter flusher failed");
        }
        drop(self.recorder);
        // Sealed, the segment being appended to is deleted once drained, and the prepared one
        // is deleted now. (A spare whose preparation was still running, or a segment made by an
        // append after this point, stays; the next start drains and deletes it.)
        spool.seal_for_exit();
        match spool.drain(&self.pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "drained the spool before exiting"),
            Err(e) => tracing::warn!(
                error = %e,
                left = spool.depth(),
                "the spool keeps records for the next start"
            ),
        }
        self.pool.close().await;
        result
    }
}

/// Loads the routes into memory, then follows the change feed: every `every`, and at once when
/// Postgres notifies that a pairing was closed or re-timed. Until the first load succeeds it
/// retries; the service answers from the database meanwhile.
async fn mirror_forever(
    mirror: Arc<RouteMirror>,
    pool: PgPool,
    every: Duration,
    changed: Arc<Notify>,
) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(50)));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = changed.notified() => {}
        }
        if !mirror.is_loaded() {
            match mirror.load(&pool).await {
                Ok(n) => {
                    metrics::gauge!("routes_in_memory").set(n as f64);
                    tracing::info!(routes = n, "loaded the routes into memory");
                }
                Err(e) => tracing::debug!(error = %e, "could not load the routes yet"),
            }
            continue;
        }
        match mirror.poll(&pool).await {
            Ok(_) => metrics::gauge!("routes_in_memory").set(mirror.len() as f64),
            Err(e) => tracing::debug!(error = %e, "route feed poll failed; will retry"),
        }
    }
}

/// Listens for Postgres's notifications: of closed or re-timed pairings
/// (`voice_proxy_routes`, passed on to the route mirror) and of changed callback endpoints
/// (`voice_proxy_webhook_endpoints`: the outbox reads which events they want). Reconnects after
/// a failure, once a second.
async fn listen_for_changes(pool: PgPool, changed: Arc<Notify>, outbox: Arc<Outbox>) {
    const ROUTES: &str = "voice_proxy_routes";
    const ENDPOINTS: &str = "voice_proxy_webhook_endpoints";
    let refresh = async |outbox: &Outbox| {
        if let Err(e) = outbox.refresh(&pool).await {
            tracing::debug!(error = %e, "could not read which events callback endpoints want");
        }
    };
    loop {
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen_all([ROUTES, ENDPOINTS]).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listening.await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "could not listen for route changes yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Either may have changed while we were not listening.
        changed.notify_one();
        refresh(&outbox).await;
        // Until the connection is lost (`None`) or fails.
        while let Ok(Some(notification)) = listener.try_recv().await {
            if notification.channel() == ENDPOINTS {
                refresh(&outbox).await;
            } else {
                changed.notify_one();
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What the recording handlers and the archive need: the Vonage client (with credentials), the
/// URLs it may fetch, and the archive directory, created (0700) if missing.
fn recordings(settings: &RecordingSettings) -> anyhow::Result<Recordings> {
    let client = settings
        .credentials
        .clone()
        .map(|credentials| VonageClient::new(credentials, settings.origin.clone()))
        .transpose()?;
    if let Some(archive) = &settings.archive {
        archive::prepare_dir(&archive.dir).with_context(|| {
            format!(
                "RECORDING_ARCHIVE_DIR {} cannot be used: the service needs a folder it can write",
                archive.dir.display()
            )
        })?;
        tracing::info!(
            max_attempts = archive.max_attempts,
            "call recordings are archived (RECORDING_ARCHIVE_DIR)"
        );
    }
    Ok(Recordings {
        client,
        origin: settings.origin.clone(),
        archive_dir: settings.archive.as_ref().map(|a| a.dir.clone()),
        wake: Arc::new(Notify::new()),
    })
}

/// Downloads recordings into the archive, when there is one.
async fn archive_recordings(pool: PgPool, recordings: Recordings, settings: RecordingSettings) {
    let (Some(client), Some(archive)) = (recordings.client, settings.archive) else {
        return;
    };
    archive::archive_forever(pool, client, archive, recordings.wake).await;
}

/// Deletes archived recordings past `RECORDING_RETENTION_DAYS`, every `every`.
async fn purge_recordings(pool: PgPool, settings: RecordingSettings, every: Duration) {
    let (Some(archive), Some(after)) = (settings.archive, settings.retention) else {
        return;
    };
    let lease = archive.lease();
    archive::purge_forever(pool, archive.dir, after, every, lease).await;
}

/// Replaces old real numbers by their keyed hash, every `interval`: in the database, and in this
/// instance's dead-letter file.
async fn purge_forever(pool: PgPool, spool: Arc<Spool>, retention: RetentionSettings) {
    let Some(after) = retention.after else {
        return;
    };
    let mut ticker = tokio::time::interval(retention.interval);
    loop {
        ticker.tick().await;
        let key = retention.hash_key.clone();
        let purged = tokio::task::spawn_blocking({
            let spool = spool.clone();
            move || spool.dead_letters().purge(after, &key)
        })
        .await;
        match purged {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(
                records = n,
                "replaced old numbers in the dead-letter file by their keyed hash"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "dead-letter purge failed; will retry"),
            Err(e) => tracing::warn!(error = %e, "dead-letter purge failed; will retry"),
        }
        match retention::purge(&pool, after, &retention.hash_key).await {
            Ok(r) if r == PurgeReport::default() => {}
            Ok(r) => tracing::info!(
                participants = r.participants,
                calls = r.calls,
                events = r.events,
                callback_messages = r.callback_messages,
                "replaced old numbers by their keyed hash, deleted old callback messages"
            ),
            Err(e) => tracing::warn!(error = %e, "retention purge failed; will retry"),
        }
    }
}

/// How often the load counter changes of this process are written to the database.
const LOAD_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Writes the pool numbers' load counter changes every `every`, and once more when `stop` says
/// so. Housekeeping: the counters only steer the spread of new pairings.
async fn flush_load_forever(
    ledger: Arc<LoadLedger>,
    pool: PgPool,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(e) = ledger.flush(&pool).await {
                    tracing::debug!(error = %e, "load counter flush failed; will retry");
                }
            }
            _ = stop.changed() => break,
        }
    }
    if let Err(e) = ledger.flush(&pool).await {
        tracing::warn!(error = %e, "could not write the last load counter changes");
    }
}

/// Pairings swept in one transaction.
const SWEEP_BATCH: i64 = 1000;

/// Releases the load of expired pairings and tells their expiry (`pairing.expired`), every
/// `every`, and again at once while a sweep finds a full batch; and deletes PIN failures too old
/// to count. Routing never waits for it.
async fn sweep_forever(pool: PgPool, outbox: Arc<Outbox>, every: Duration) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = voice_proxy_persistence::pins::purge_failures(&pool).await {
            tracing::debug!(error = %e, "could not delete old PIN failures; will retry");
        }
        loop {
            match pairings::sweep_expired(&pool, &outbox, SWEEP_BATCH).await {
                Ok(0) => break,
                Ok(n) => {
                    tracing::info!(swept = n, "released the load of expired pairings");
                    if n < SWEEP_BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "sweep failed; will retry");
                    break;
                }
            }
        }
    }
}
