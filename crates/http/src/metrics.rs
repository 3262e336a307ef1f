//! Prometheus metrics at `GET /metrics`. Labels are routes, outcomes and reasons: never numbers.

use std::sync::OnceLock;

use actix_web::{HttpResponse, web};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the process-wide recorder once and returns its handle.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("duration_seconds".to_owned()),
                LATENCY_BUCKETS,
            )
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests that embed the service); then this
        // handle renders only what it records, which is still a valid exposition.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(render));
}

async fn render(state: web::Data<AppState>) -> HttpResponse {
    let pool = &state.pool;
    metrics::gauge!("db_pool_connections").set(f64::from(pool.size()));
    metrics::gauge!("db_pool_idle_connections").set(pool.num_idle() as f64);
    let spool = state.recorder.spool();
    metrics::gauge!("spool_depth").set(spool.depth() as f64);
    metrics::gauge!("spool_memory_bytes").set(spool.memory_bytes() as f64);
    metrics::gauge!("spool_writable").set(if spool.writable() { 1.0 } else { 0.0 });
    // Each active pairing has two routes.
    metrics::gauge!("pairings_active").set((state.mirror.len() / 2) as f64);
    metrics::gauge!("webhook_signatures_enforced").set(if state.verifier.enabled() {
        1.0
    } else {
        0.0
    });
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle().render())
}
