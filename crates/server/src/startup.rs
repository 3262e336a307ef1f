//! Building and running the application: the pool, the HTTP server, the sweeper.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::dev::Service;
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;
use voice_proxy_http::telemetry::{MaskedRootSpan, echo_request_id};
use voice_proxy_http::{AppState, configure};
use voice_proxy_persistence::{PgPool, connect_lazy, pairings};

use crate::config::Settings;

pub struct Application {
    port: u16,
    server: Server,
    pool: PgPool,
    settings: Settings,
}

impl Application {
    /// Binds the listener (port 0 picks a free one) and builds the server; nothing runs until
    /// [`Application::run_until_stopped`].
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = connect_lazy(settings.database.clone(), &settings.pool);
        let listener = TcpListener::bind(settings.listen_addr)?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            pool: pool.clone(),
            settings: Arc::new(settings.http.clone()),
        });
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap_fn(|req, srv| {
                    let response = srv.call(req);
                    async move { response.await.map(echo_request_id) }
                })
                .wrap(TracingLogger::<MaskedRootSpan>::new())
                .app_data(state.clone())
                .configure(configure)
        })
        .shutdown_timeout(10);
        if let Some(workers) = settings.http_workers {
            server = server.workers(workers);
        }
        let server = server.listen(listener)?.run();
        Ok(Self {
            port,
            server,
            pool,
            settings,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until the server stops (SIGINT/SIGTERM), running the sweeper beside it.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let sweeper = tokio::spawn(sweep_forever(
            self.pool.clone(),
            self.settings.sweep_interval,
        ));
        let result = self.server.await;
        sweeper.abort();
        self.pool.close().await;
        result
    }
}

/// Housekeeping only: correctness never waits for it.
async fn sweep_forever(pool: PgPool, every: std::time::Duration) {
    let mut ticker = tokio::time::interval(every.max(std::time::Duration::from_secs(1)));
    loop {
        ticker.tick().await;
        match pairings::sweep_expired(&pool, 1000).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(swept = n, "released the load of expired pairings"),
            Err(e) => tracing::warn!(error = %e, "sweep failed; will retry"),
        }
    }
}
