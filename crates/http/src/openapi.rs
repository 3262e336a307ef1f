//! The OpenAPI 3.1 document of the admin API, generated from the handlers' and DTOs' annotations
//! and served at `GET /v1/openapi.json` (no credential needed).

use std::sync::LazyLock;

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::Problem;
use crate::{api_keys, calls, numbers, pairings, recordings, webhook_endpoints};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "voice-proxy admin API",
        description = "Manage the pool of proxy numbers and the pairings, read the call audit, \
            manage API keys and the endpoints that receive callbacks. Every operation needs \
            `Authorization: Bearer <token>`, where the token is the bootstrap `ADMIN_TOKEN` or an API key (`vpk_...`). A key's scopes are \
            listed as the roles of each operation's `bearer` requirement: `admin` allows \
            everything, `calls:read` only reading call records, `recordings:read` only \
            listening to call recordings. Errors are \
            `application/problem+json` (RFC 9457).",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        numbers::add_number,
        numbers::list_numbers,
        numbers::get_number,
        numbers::update_number,
        numbers::retire_number,
        numbers::pool_report,
        pairings::create_pairing,
        pairings::list_pairings,
        pairings::get_pairing,
        pairings::change_pairing,
        pairings::close_pairing,
        calls::list_calls,
        calls::get_call,
        recordings::get_recording,
        api_keys::create_key,
        api_keys::list_keys,
        api_keys::get_key,
        api_keys::revoke_key,
        webhook_endpoints::create_endpoint,
        webhook_endpoints::list_endpoints,
        webhook_endpoints::get_endpoint,
        webhook_endpoints::update_endpoint,
        webhook_endpoints::delete_endpoint,
        webhook_endpoints::rotate_secret,
        webhook_endpoints::deliveries::list_deliveries,
        webhook_endpoints::deliveries::get_delivery,
        webhook_endpoints::deliveries::retry_delivery,
    ),
    components(schemas(Problem, calls::CallStatusName)),
    modifiers(&BearerScheme),
    tags(
        (name = "numbers", description = "The pool of proxy numbers."),
        (name = "pairings", description = "Pairs of people who may call each other."),
        (name = "calls", description = "The call audit (scope `calls:read`) and the calls' recordings (scope `recordings:read`)."),
        (name = "api-keys", description = "Credentials for the admin API."),
        (name = "webhook-endpoints", description = "Where the marketplace receives signed callbacks (Standard Webhooks), and what was delivered."),
    )
)]
pub struct AdminApi;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The bootstrap `ADMIN_TOKEN`, or an API key `vpk_<id>_<secret>`.",
                    ))
                    .build(),
            ),
        );
    }
}

const PROBLEM_REF: &str = "#/components/schemas/Problem";

/// The document as JSON: utoipa's output, with the responses every operation shares added (401,
/// 403, 500, 503) and every error response given its `application/problem+json` body.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(AdminApi::openapi()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document does not serialise");
        Value::Null
    });
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in item.iter_mut() {
            if !matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "patch" | "head" | "options" | "trace"
            ) {
                continue;
            }
            add_shared_responses(operation);
        }
    }
    doc
}

fn add_shared_responses(operation: &mut Value) {
    let roles: Vec<String> = operation["security"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|req| req.get("bearer").and_then(Value::as_array))
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let forbidden = match roles.iter().find(|r| *r != "admin") {
        Some(scope) => format!("A valid API key with neither the `{scope}` nor the `admin` scope."),
        None => "A valid API key without the `admin` scope.".to_owned(),
    };
    let shared = [
        (
            "401",
            "No credential, or one that is not valid (unknown or revoked key).".to_owned(),
        ),
        ("403", forbidden),
        (
            "500",
            "An error on the service's side; it has been logged.".to_owned(),
        ),
        (
            "503",
            "The database is unavailable; retry after `Retry-After` seconds.".to_owned(),
        ),
    ];
    for (status, description) in shared {
        responses
            .entry(status)
            .or_insert_with(|| json!({ "description": description }));
    }
    for (status, response) in responses.iter_mut() {
        let is_error = status.starts_with('4') || status.starts_with('5');
        if !is_error || response.get("content").is_some() {
            continue;
        }
        response["content"] = json!({
            "application/problem+json": { "schema": { "$ref": PROBLEM_REF } }
        });
        if status == "401" {
            response["headers"] = json!({
                "WWW-Authenticate": {
                    "description": "`Bearer`.",
                    "schema": { "type": "string" }
                }
            });
        }
        if status == "503" {
            response["headers"] = json!({
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": { "type": "integer", "minimum": 0 }
                }
            });
        }
    }
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| document().to_string());

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/openapi.json")
            .route(web::get().to(openapi_json))
            .default_service(crate::error::method_not_allowed("GET")),
    );
}

/// `GET /v1/openapi.json`: this document.
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_problem_bodies_on_every_error() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let mut errors = 0;
        for item in doc["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        errors += 1;
                        assert_eq!(
                            response["content"]["application/problem+json"]["schema"]["$ref"],
                            PROBLEM_REF,
                            "{status}"
                        );
                    }
                }
            }
        }
        assert!(errors > 40, "{errors}");
    }
}
