//! The marketplace's callback endpoints and their signing secrets.
//!
//! A secret is `whsec_` and 32 random bytes in base64 (Standard Webhooks' form). It is shown
//! once, when made; the service keeps it, as it must sign with it. A rotation makes a new one
//! and keeps the old one signing beside it for a while, so that receivers can switch without
//! refusing a message.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use uuid::Uuid;
use voice_proxy_domain::EndpointId;
use voice_proxy_domain::callbacks::{CallbackUrl, EventType, EventTypes};

use crate::pagination::Page;

/// Random bytes in a secret.
const SECRET_BYTES: usize = 32;
/// The longest description, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 256;

/// An endpoint, without its secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: EndpointId,
    pub url: String,
    pub event_types: EventTypes,
    pub description: Option<String>,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A signing secret, `whsec_...`; its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct EndpointSecret(String);

impl EndpointSecret {
    fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Self(format!("whsec_{}", STANDARD.encode(bytes))))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EndpointSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EndpointSecret(***)")
    }
}

/// A new endpoint, checked.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: CallbackUrl,
    pub event_types: EventTypes,
    pub description: Option<String>,
}

/// What a change sets; `None` leaves a field as it is (`description: Some(None)` clears it).
#[derive(Debug, Clone, Default)]
pub struct EndpointChanges {
    pub url: Option<CallbackUrl>,
    pub event_types: Option<EventTypes>,
    pub description: Option<Option<String>>,
    pub disabled: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("could not make a secret: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    url: String,
    event_types: Option<Vec<String>>,
    description: Option<String>,
    disabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Row> for Endpoint {
    fn from(r: Row) -> Self {
        let event_types = match r.event_types {
            None => EventTypes::All,
            // Checked on the way in; a name this version does not know is left out.
            Some(names) => {
                EventTypes::Only(names.iter().filter_map(|n| EventType::parse(n)).collect())
            }
        };
        Self {
            id: EndpointId::from_uuid(r.id),
            url: r.url,
            event_types,
            description: r.description,
            disabled: r.disabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const COLUMNS: &str = "id, url, event_types, description, disabled, created_at, updated_at";

/// Creates an endpoint and its first secret.
#[tracing::instrument(skip_all)]
pub async fn create(
    pool: &PgPool,
    new: &NewEndpoint,
) -> Result<(Endpoint, EndpointSecret), EndpointError> {
    let secret = EndpointSecret::generate().map_err(EndpointError::Random)?;
    let mut tx = pool.begin().await?;
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhook_endpoints (id, url, event_types, description)
         VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
    )))
    .bind(EndpointId::new().as_uuid())
    .bind(new.url.as_str())
    .bind(new.event_types.names())
    .bind(new.description.as_deref())
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO webhook_endpoint_secrets (endpoint_id, secret) VALUES ($1, $2)")
        .bind(row.id)
        .bind(secret.expose())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((row.into(), secret))
}

pub async fn get(pool: &PgPool, id: EndpointId) -> Result<Option<Endpoint>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1"
    )))
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Into::into))
}

/// Endpoints, oldest first.
pub async fn list(
    pool: &PgPool,
    after: Option<EndpointId>,
    limit: u32,
) -> Result<Page<Endpoint, EndpointId>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE ($1::uuid IS NULL OR id > $1)
         ORDER BY id LIMIT $2"
    )))
    .bind(after.map(|a| a.as_uuid()))
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(
        rows.into_iter().map(Into::into).collect(),
        limit,
        |e: &Endpoint| e.id,
    ))
}

/// Changes an endpoint; `None` if there is no such endpoint.
#[tracing::instrument(skip_all, fields(endpoint_id = %id))]
pub async fn update(
    pool: &PgPool,
    id: EndpointId,
    changes: &EndpointChanges,
) -> Result<Option<Endpoint>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_endpoints
            SET url = COALESCE($2, url),
                event_types = CASE WHEN $3 THEN $4 ELSE event_types END,
                description = CASE WHEN $5 THEN $6 ELSE description END,
                disabled = COALESCE($7, disabled),
                updated_at = now()
          WHERE id = $1
         RETURNING {COLUMNS}"
    )))
    .bind(id.as_uuid())
    .bind(changes.url.as_ref().map(CallbackUrl::as_str))
    .bind(changes.event_types.is_some())
    .bind(changes.event_types.as_ref().and_then(EventTypes::names))
    .bind(changes.description.is_some())
    .bind(changes.description.clone().flatten())
    .bind(changes.disabled)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Into::into))
}

/// Deletes an endpoint with its secrets and deliveries; whether there was one.
#[tracing::instrument(skip_all, fields(endpoint_id = %id))]
pub async fn delete(pool: &PgPool, id: EndpointId) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await?;
    // Its deliveries (and their attempts) go with it; nothing else points at an endpoint.
    sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(deleted.rows_affected() > 0)
}

/// Makes a new current secret; the one it replaces keeps signing for `overlap`, and secrets
/// retired before now are dropped. `None` if there is no such endpoint.
#[tracing::instrument(skip_all, fields(endpoint_id = %id))]
pub async fn rotate_secret(
    pool: &PgPool,
    id: EndpointId,
    overlap: Duration,
) -> Result<Option<EndpointSecret>, EndpointError> {
    let secret = EndpointSecret::generate().map_err(EndpointError::Random)?;
    let mut tx = pool.begin().await?;
    // Locks the endpoint, so that two rotations at once take turns.
    let found: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM webhook_endpoints WHERE id = $1 FOR UPDATE")
            .bind(id.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
    if found.is_none() {
        return Ok(None);
    }
    sqlx::query(
        "DELETE FROM webhook_endpoint_secrets WHERE endpoint_id = $1 AND retires_at <= now()",
    )
    .bind(id.as_uuid())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE webhook_endpoint_secrets
            SET retires_at = now() + make_interval(secs => $2)
          WHERE endpoint_id = $1 AND retires_at IS NULL",
    )
    .bind(id.as_uuid())
    .bind(overlap.num_milliseconds() as f64 / 1000.0)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO webhook_endpoint_secrets (endpoint_id, secret) VALUES ($1, $2)")
        .bind(id.as_uuid())
        .bind(secret.expose())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(secret))
}
