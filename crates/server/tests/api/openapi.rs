//! The OpenAPI document: served without credentials, OpenAPI 3.1, listing every admin route; and
//! every route it lists is guarded by its scope.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{assert_problem, spawn_app};

/// Every admin route the service registers, as (method, OpenAPI path).
const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/numbers"),
    ("get", "/v1/numbers"),
    ("get", "/v1/numbers/{number}"),
    ("patch", "/v1/numbers/{number}"),
    ("delete", "/v1/numbers/{number}"),
    ("get", "/v1/pool"),
    ("post", "/v1/pairings"),
    ("get", "/v1/pairings"),
    ("get", "/v1/pairings/{id}"),
    ("patch", "/v1/pairings/{id}"),
    ("post", "/v1/pairings/{id}/close"),
    ("get", "/v1/calls"),
    ("get", "/v1/calls/{id}"),
    ("get", "/v1/calls/{id}/recording"),
    ("post", "/v1/api-keys"),
    ("get", "/v1/api-keys"),
    ("get", "/v1/api-keys/{id}"),
    ("delete", "/v1/api-keys/{id}"),
    ("post", "/v1/webhook-endpoints"),
    ("get", "/v1/webhook-endpoints"),
    ("get", "/v1/webhook-endpoints/{id}"),
    ("patch", "/v1/webhook-endpoints/{id}"),
    ("delete", "/v1/webhook-endpoints/{id}"),
    ("post", "/v1/webhook-endpoints/{id}/rotate-secret"),
    ("get", "/v1/webhook-endpoints/{id}/deliveries"),
    ("get", "/v1/webhook-endpoints/{id}/deliveries/{message_id}"),
    (
        "post",
        "/v1/webhook-endpoints/{id}/deliveries/{message_id}/retry",
    ),
];

async fn fetch_document(app: &crate::helpers::TestApp) -> Value {
    let r = app
        .client
        .get(app.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    r.json().await.expect("the document is JSON")
}

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| {
                    matches!(
                        k.as_str(),
                        "get" | "put" | "post" | "delete" | "patch" | "head" | "options"
                    )
                })
                .map(|m| (m.clone(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_lists_every_admin_route() {
    let app = spawn_app().await;
    let doc = fetch_document(&app).await;

    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let expected: BTreeSet<(String, String)> = ADMIN_ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(operations(&doc), expected);

    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&bearer["type"], &bearer["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    let schemas = &doc["components"]["schemas"];
    for (method, path) in ADMIN_ROUTES {
        let op = &doc["paths"][path][method];
        let roles = &op["security"][0]["bearer"];
        let expected_role = if path.ends_with("/recording") {
            "recordings:read"
        } else if path.starts_with("/v1/calls") {
            "calls:read"
        } else {
            "admin"
        };
        assert_eq!(roles, &json!([expected_role]), "{method} {path}");
        let responses = op["responses"].as_object().unwrap();
        // Every route can be a 403: a key may hold only `calls:read` or `recordings:read`.
        for status in ["401", "403", "500", "503"] {
            assert!(responses.contains_key(status), "{method} {path} {status}");
        }
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path} {status}"
                );
            }
        }
        if matches!(*method, "post" | "patch") && op.get("requestBody").is_some() {
            for status in ["400", "413", "415", "422"] {
                assert!(responses.contains_key(status), "{method} {path} {status}");
            }
        }
    }

    // Exact response schemas: nullable fields are required and typed as nullable, with formats.
    let call = &schemas["CallResponse"];
    assert_eq!(call["properties"]["id"]["format"], "uuid");
    assert_eq!(call["properties"]["started_at"]["format"], "date-time");
    assert_eq!(
        call["properties"]["ended_at"]["type"],
        json!(["string", "null"])
    );
    assert!(
        call["required"]
            .as_array()
            .unwrap()
            .contains(&json!("ended_at"))
    );
    // `recording`: only in `GET /v1/calls/{id}`, where it is a recording or null.
    let recording = &call["properties"]["recording"]["oneOf"];
    assert_eq!(
        recording[0]["$ref"],
        "#/components/schemas/RecordingResponse"
    );
    assert_eq!(recording[1]["type"], "null");
    assert!(
        !call["required"]
            .as_array()
            .unwrap()
            .contains(&json!("recording"))
    );
    assert_eq!(
        schemas["RecordingResponse"]["properties"]["archived_at"]["type"],
        json!(["string", "null"])
    );
    assert_eq!(
        schemas["ApiKeyResponse"]["properties"]["revoked_at"]["type"],
        json!(["string", "null"])
    );
    assert_eq!(
        schemas["ScopeName"]["enum"],
        json!(["admin", "calls:read", "recordings:read"])
    );
    assert_eq!(
        schemas["Problem"]["required"],
        json!(["type", "title", "status", "detail", "code"])
    );
}

#[tokio::test]
async fn every_documented_route_is_guarded_by_its_scope() {
    let app = spawn_app().await;
    let doc = fetch_document(&app).await;
    let created: Value = app
        .post_json(
            "/v1/api-keys",
            &json!({"name": "reader", "scopes": ["calls:read"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let reader = created["secret"].as_str().unwrap().to_owned();
    let id = Uuid::new_v4().to_string();

    for (method, path) in operations(&doc) {
        let url = app.url(
            &path
                .replace("{id}", &id)
                .replace("{message_id}", &id)
                .replace("{number}", "12125550123"),
        );
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let anonymous = app
            .client
            .request(method.clone(), &url)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;

        let as_reader = app
            .client
            .request(method.clone(), &url)
            .bearer_auth(&reader)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        if path.starts_with("/v1/calls") && !path.ends_with("/recording") {
            assert_ne!(as_reader.status(), StatusCode::FORBIDDEN, "{method} {path}");
            assert_ne!(
                as_reader.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path}"
            );
        } else {
            let body = assert_problem(as_reader, StatusCode::FORBIDDEN).await;
            assert_eq!(body["code"], "forbidden", "{method} {path}");
        }
    }
}

#[tokio::test]
async fn a_method_a_documented_path_does_not_serve_is_a_405_naming_those_it_does() {
    let app = spawn_app().await;
    let doc = fetch_document(&app).await;
    let mut allowed: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for (method, path) in operations(&doc) {
        allowed
            .entry(path)
            .or_default()
            .insert(method.to_uppercase());
    }
    allowed
        .entry("/v1/openapi.json".to_owned())
        .or_default()
        .insert("GET".to_owned());
    for (path, methods) in allowed {
        let url = app.url(
            &path
                .replace("{id}", &Uuid::new_v4().to_string())
                .replace("{message_id}", &Uuid::new_v4().to_string())
                .replace("{number}", "12125550123"),
        );
        for method in ["PUT", "TRACE", "OPTIONS", "POST", "DELETE", "PATCH"] {
            if methods.contains(method) {
                continue;
            }
            let r = app
                .client
                .request(Method::from_bytes(method.as_bytes()).unwrap(), &url)
                .bearer_auth(crate::helpers::ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            let allow: BTreeSet<String> = r.headers()["allow"]
                .to_str()
                .unwrap()
                .split(',')
                .map(|m| m.trim().to_owned())
                .collect();
            assert_eq!(allow, methods, "{method} {path}");
            let body = assert_problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
            assert_eq!(body["code"], "method-not-allowed");
        }
    }
}

/// Inputs found while fuzzing the API against its document: each got a 500 before.
#[tokio::test]
async fn text_postgres_cannot_hold_is_refused_as_bad_input_not_a_500() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let app = spawn_app().await;
    app.add_numbers(&["12125550123"]).await;
    // A NUL byte in the reference filter.
    for query in ["reference=%00", "reference=ride%0042", "reference="] {
        let r = app.get(&format!("/v1/pairings?{query}")).await;
        let body = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["code"], "validation-failed", "{query}");
    }
    let r = app
        .get(&format!("/v1/pairings?reference={}", "r".repeat(129)))
        .await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    // A forged cursor whose key holds a NUL byte, for the list keyed by text.
    let forged = URL_SAFE_NO_PAD.encode("numbers:\u{0}");
    let r = app.get(&format!("/v1/numbers?cursor={forged}")).await;
    assert_problem(r, StatusCode::BAD_REQUEST).await;
    // The lists still answer.
    assert_eq!(
        app.get("/v1/pairings?reference=ride-42").await.status(),
        200
    );
    assert_eq!(app.get("/v1/numbers").await.status(), 200);
}

/// Every `$ref` in the document names a schema it defines (an unresolvable one makes clients and
/// schemathesis skip that part of the schema).
#[tokio::test]
async fn every_reference_in_the_document_resolves() {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let app = spawn_app().await;
    let doc = fetch_document(&app).await;
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in found {
        let pointer = r.strip_prefix('#').expect("a local reference");
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
}
