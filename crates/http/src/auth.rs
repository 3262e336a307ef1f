//! Admin API authentication and authorisation: `Authorization: Bearer <token>`, where the token
//! is either the bootstrap `ADMIN_TOKEN` (every scope) or an API key (`vpk_<id>_<secret>`, its
//! own scopes). No or a bad credential is a 401; a good one without the scope an endpoint needs
//! is a 403.

use actix_web::body::BoxBody;
use actix_web::dev::ServiceRequest;
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpMessage, HttpRequest, Route, web};
use subtle::ConstantTimeEq;
use voice_proxy_persistence::api_keys::{self, ApiKey, ApiKeyId};

pub use voice_proxy_persistence::api_keys::Scope;

use crate::{ApiError, AppState};

/// Who made an authorised request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The bootstrap `ADMIN_TOKEN`: every scope.
    AdminToken,
    /// An API key, with its scopes.
    ApiKey { id: ApiKeyId, scopes: Vec<Scope> },
}

impl Principal {
    pub fn grants(&self, needed: Scope) -> bool {
        match self {
            Self::AdminToken => true,
            Self::ApiKey { scopes, .. } => scopes.iter().any(|s| s.grants(needed)),
        }
    }
}

/// Guards a route with `needed`: the request is authorised before anything else of it is read,
/// so a request without the credential or the scope gets its 401 or 403 whatever its body or
/// query holds. The [`Principal`] is left in the request's extensions.
///
/// A refusal is answered here, as a response rather than an error, so that the request (and its
/// unread body) stays with the response until it is sent (see `crate::deadline`).
pub fn require(needed: Scope, route: Route) -> Route {
    route.wrap(from_fn(
        move |req: ServiceRequest, next: Next<BoxBody>| async move {
            let authorized = match req.app_data::<web::Data<AppState>>().cloned() {
                Some(state) => authorize(req.request(), &state, needed).await,
                None => Err(ApiError::unexpected(anyhow::anyhow!("no AppState"))),
            };
            match authorized {
                Ok(principal) => {
                    req.extensions_mut().insert(principal);
                    next.call(req).await
                }
                Err(refusal) => Ok(req.error_response(refusal)),
            }
        },
    ))
}

/// A route only the `admin` scope may use.
pub fn admin(route: Route) -> Route {
    require(Scope::Admin, route)
}

/// Authenticates the request and checks that its credential holds `needed`: 401 without a valid
/// credential (a revoked key is not valid), 403 with one that lacks the scope.
pub async fn authorize(
    req: &HttpRequest,
    state: &AppState,
    needed: Scope,
) -> Result<Principal, ApiError> {
    let token = bearer_token(req).ok_or_else(ApiError::unauthorized)?;
    let principal = authenticate(state, token)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    if principal.grants(needed) {
        Ok(principal)
    } else {
        if let Principal::ApiKey { id, .. } = &principal {
            tracing::info!(key_id = %id, scope = %needed, "API key lacks the scope");
        }
        Err(ApiError::forbidden(format!(
            "this API key does not have the `{needed}` scope this endpoint needs"
        )))
    }
}

/// The principal a bearer token stands for, if any.
async fn authenticate(state: &AppState, token: &str) -> Result<Option<Principal>, ApiError> {
    let expected = state.settings.admin_token.as_bytes();
    if !expected.is_empty() && bool::from(token.as_bytes().ct_eq(expected)) {
        return Ok(Some(Principal::AdminToken));
    }
    if !api_keys::looks_like_key(token) {
        return Ok(None);
    }
    let Some(key) = api_keys::authenticate(&state.pool, token).await? else {
        return Ok(None);
    };
    record_use(state, &key);
    Ok(Some(Principal::ApiKey {
        id: key.id,
        scopes: key.scopes,
    }))
}

/// Updates the key's `last_used_at` in the background, at most once a minute, so that requests
/// never wait for that write.
fn record_use(state: &AppState, key: &ApiKey) {
    if !key.touch_due(chrono::Utc::now()) {
        return;
    }
    let pool = state.pool.clone();
    let id = key.id;
    actix_web::rt::spawn(async move {
        if let Err(e) = api_keys::touch(&pool, id).await {
            tracing::warn!(key_id = %id, error = %e, "could not record the use of an API key");
        }
    });
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
