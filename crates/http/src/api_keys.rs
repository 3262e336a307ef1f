//! `/v1/api-keys`: admin API keys. A key's secret is in the creation response only; the service
//! keeps its hash.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use voice_proxy_domain::id::InvalidId;
use voice_proxy_persistence::api_keys::{
    self, ApiKey, ApiKeyId, CreateKeyError, MAX_NAME_LEN, NewApiKey,
};

use crate::auth::{Scope, admin};
use crate::error::method_not_allowed;
use crate::pagination::{ListResponse, decode_cursor, encode_cursor, page_size};
use crate::{ApiError, AppState};

/// Every route needs the `admin` scope, checked before the request is read.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api-keys")
            .route(admin(web::post().to(create_key)))
            .route(admin(web::get().to(list_keys)))
            .default_service(method_not_allowed("GET, POST")),
    )
    .service(
        web::resource("/api-keys/{id}")
            .route(admin(web::get().to(get_key)))
            .route(admin(web::delete().to(revoke_key)))
            .default_service(method_not_allowed("GET, DELETE")),
    );
}

/// What a key may do: `admin` is everything; `calls:read` is `GET /v1/calls` and
/// `GET /v1/calls/{id}` only; `recordings:read` is `GET /v1/calls/{id}/recording` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum ScopeName {
    #[serde(rename = "admin")]
    Admin,
    #[serde(rename = "calls:read")]
    CallsRead,
    #[serde(rename = "recordings:read")]
    RecordingsRead,
}

impl From<ScopeName> for Scope {
    fn from(s: ScopeName) -> Self {
        match s {
            ScopeName::Admin => Scope::Admin,
            ScopeName::CallsRead => Scope::CallsRead,
            ScopeName::RecordingsRead => Scope::RecordingsRead,
        }
    }
}

impl From<Scope> for ScopeName {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Admin => ScopeName::Admin,
            Scope::CallsRead => ScopeName::CallsRead,
            Scope::RecordingsRead => ScopeName::RecordingsRead,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"name": "compliance", "scopes": ["calls:read"]})))]
pub struct CreateApiKeyRequest {
    /// A name to recognise the key by (who or what uses it); 1 to 64 characters.
    #[schema(min_length = 1, max_length = 64, examples("backend"))]
    pub name: String,
    /// At least one scope.
    #[schema(min_items = 1)]
    pub scopes: Vec<ScopeName>,
}

/// An API key, without its secret.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyResponse {
    pub id: Uuid,
    pub name: String,
    pub scopes: Vec<ScopeName>,
    pub created_at: DateTime<Utc>,
    /// When the key last authenticated a request, to the minute; `null` if never.
    #[schema(required = true)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// When the key was revoked; `null` while it is valid.
    #[schema(required = true)]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for ApiKeyResponse {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id.as_uuid(),
            name: k.name,
            scopes: k.scopes.into_iter().map(ScopeName::from).collect(),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A key as just created, with its secret: shown this once, never again.
#[derive(Serialize, ToSchema)]
pub struct CreatedApiKeyResponse {
    #[serde(flatten)]
    pub key: ApiKeyResponse,
    /// The credential, `vpk_<id>_<secret>`: send it as `Authorization: Bearer <secret>`.
    #[schema(pattern = "^vpk_[0-9a-f]{32}_[A-Za-z0-9_-]+$")]
    pub secret: String,
}

/// `POST /v1/api-keys`: creates a key and returns its secret, once.
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    tag = "api-keys",
    request_body = CreateApiKeyRequest,
    responses(
        (status = 201, description = "The key, with its secret: store it now, it is never shown again.", body = CreatedApiKeyResponse, links(
            ("get" = (operation_id = "get_key", parameters(("id" = "$response.body#/id")))),
            ("revoke" = (operation_id = "revoke_key", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 400, description = "The body is not JSON."),
        (status = 413, description = "The body is too large."),
        (status = 415, description = "The body is not `application/json`."),
        (status = 422, description = "The name or the scopes are not valid, or a field is unknown."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn create_key(
    state: web::Data<AppState>,
    body: web::Json<CreateApiKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let scopes: Vec<Scope> = body.scopes.iter().copied().map(Scope::from).collect();
    let new =
        NewApiKey::new(&body.name, &scopes).map_err(|e| ApiError::validation(e.to_string()))?;
    let issued = api_keys::create(&state.pool, &new)
        .await
        .map_err(|e| match e {
            CreateKeyError::Database(e) => ApiError::from(e),
            other => ApiError::unexpected(other),
        })?;
    tracing::info!(key_id = %issued.key.id, name = %issued.key.name, "API key created");
    Ok(HttpResponse::Created().json(CreatedApiKeyResponse {
        key: issued.key.into(),
        secret: issued.secret.expose().to_owned(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

const CURSOR_KIND: &str = "api-keys";

/// `GET /v1/api-keys`: every key, revoked ones included, oldest first; no secrets.
#[utoipa::path(
    get,
    path = "/v1/api-keys",
    tag = "api-keys",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of keys.", body = ListResponse<ApiKeyResponse>),
        (status = 400, description = "Malformed query string or cursor."),
        (status = 422, description = "`limit` out of range."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn list_keys(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_size(query.limit)?;
    let after = decode_cursor(CURSOR_KIND, query.cursor.as_deref())?
        .map(|k| parse_key_id(&k))
        .transpose()
        .map_err(|_| ApiError::bad_request("malformed cursor"))?;
    let page = api_keys::list(&state.pool, after, limit).await?;
    Ok(HttpResponse::Ok().json(ListResponse {
        items: page.items.into_iter().map(ApiKeyResponse::from).collect(),
        next_cursor: page
            .next
            .map(|k| encode_cursor(CURSOR_KIND, &k.to_string())),
    }))
}

fn parse_key_id(raw: &str) -> Result<ApiKeyId, ApiError> {
    raw.parse()
        .map_err(|e: InvalidId| ApiError::bad_request(format!("the API key id is {e}")))
}

/// `GET /v1/api-keys/{id}`: one key, without its secret.
#[utoipa::path(
    get,
    path = "/v1/api-keys/{id}",
    tag = "api-keys",
    params(("id" = Uuid, Path, description = "The key's id.")),
    responses(
        (status = 200, description = "The key.", body = ApiKeyResponse),
        (status = 400, description = "The id is not a UUID."),
        (status = 404, description = "No such key."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn get_key(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_key_id(&path)?;
    let key = api_keys::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no API key {id}")))?;
    Ok(HttpResponse::Ok().json(ApiKeyResponse::from(key)))
}

/// `DELETE /v1/api-keys/{id}`: revokes a key; it authenticates nothing from now on. Revoking a
/// revoked key changes nothing.
#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    tag = "api-keys",
    params(("id" = Uuid, Path, description = "The key's id.")),
    responses(
        (status = 200, description = "The key, revoked.", body = ApiKeyResponse),
        (status = 400, description = "The id is not a UUID."),
        (status = 404, description = "No such key."),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn revoke_key(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_key_id(&path)?;
    let key = api_keys::revoke(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no API key {id}")))?;
    tracing::info!(key_id = %id, "API key revoked");
    Ok(HttpResponse::Ok().json(ApiKeyResponse::from(key)))
}

const _: () = assert!(MAX_NAME_LEN == 64, "keep the schema's max_length in step");
