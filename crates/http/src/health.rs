//! Liveness and readiness.

use actix_web::{HttpResponse, web};
use serde_json::json;
use voice_proxy_persistence::migrate;

use crate::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

/// The process is alive and serving HTTP.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The spool can be written, and the database answers and has every migration this binary knows
/// of.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if !state.recorder.spool().writable() {
        return HttpResponse::ServiceUnavailable().json(json!({
            "status": "not ready",
            "reason": "spool not writable: call records and events may not survive an outage",
        }));
    }
    let expected = migrate::latest_version();
    match migrate::applied_version(&state.pool).await {
        Ok(Some(applied)) if applied >= expected => {
            HttpResponse::Ok().json(json!({"status": "ready", "schema_version": applied}))
        }
        Ok(applied) => HttpResponse::ServiceUnavailable().json(json!({
            "status": "not ready",
            "reason": "migrations pending",
            "schema_version": applied,
            "expected_schema_version": expected,
        })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: database unreachable");
            HttpResponse::ServiceUnavailable()
                .json(json!({"status": "not ready", "reason": "database unreachable"}))
        }
    }
}
