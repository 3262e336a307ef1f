//! Admin API keys. A key is handed out once, as `vpk_<id>_<secret>`; only the SHA-256 of the
//! secret is stored. Authentication looks the key up by its id and compares the hashes in
//! constant time.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use voice_proxy_domain::text;

use crate::pagination::Page;

/// What every key starts with, so that a leaked one is easy to recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "vpk_";
/// Longest key name, in characters.
pub const MAX_NAME_LEN: usize = 64;
/// `last_used_at` is written at most this often per key.
pub const TOUCH_INTERVAL: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// Random bytes in a secret (256 bits).
const SECRET_BYTES: usize = 32;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Everything in the admin API.
    Admin,
    /// Reading call records: `GET /v1/calls` and `GET /v1/calls/{id}`.
    CallsRead,
    /// Listening to call recordings: `GET /v1/calls/{id}/recording`.
    RecordingsRead,
}

impl Scope {
    pub const ALL: [Self; 3] = [Self::Admin, Self::CallsRead, Self::RecordingsRead];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::CallsRead => "calls:read",
            Self::RecordingsRead => "recordings:read",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    /// Whether holding this scope allows what `needed` guards. `admin` allows everything.
    pub fn grants(self, needed: Scope) -> bool {
        self == Self::Admin || self == needed
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub use voice_proxy_domain::ApiKeyId;

/// A stored key, without anything secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn grants(&self, needed: Scope) -> bool {
        self.scopes.iter().any(|s| s.grants(needed))
    }

    /// Whether `last_used_at` is old enough to be written again.
    pub fn touch_due(&self, now: DateTime<Utc>) -> bool {
        self.last_used_at
            .is_none_or(|last| now - last >= TOUCH_INTERVAL)
    }
}

/// The full key, `vpk_<id>_<secret>`. Shown once; its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeySecret(***)")
    }
}

/// A key as just created: the only time its secret exists outside the client.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub secret: ApiKeySecret,
}

/// A valid name and set of scopes for a new key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    name: String,
    scopes: Vec<Scope>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidApiKey {
    #[error(
        "name must be 1 to {MAX_NAME_LEN} characters, without control or invisible formatting \
         characters (such as bidirectional overrides or zero-width spaces)"
    )]
    Name,
    #[error("give at least one scope")]
    NoScope,
}

impl NewApiKey {
    /// Trims the name and removes repeated scopes.
    pub fn new(name: &str, scopes: &[Scope]) -> Result<Self, InvalidApiKey> {
        let name = name.trim();
        if !text::is_clean(name, MAX_NAME_LEN) {
            return Err(InvalidApiKey::Name);
        }
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            return Err(InvalidApiKey::NoScope);
        }
        Ok(Self {
            name: name.to_owned(),
            scopes,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateKeyError {
    #[error("the system's random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Splits `vpk_<id>_<secret>` into the id and the secret; `None` if it is not shaped so.
fn parse_token(token: &str) -> Option<(ApiKeyId, &str)> {
    let (id, secret) = token.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
    if secret.is_empty() {
        return None;
    }
    // The id as keys are issued: 32 lowercase hex digits, no other spelling of the UUID.
    let id = Uuid::try_parse(id)
        .ok()
        .filter(|u| u.simple().to_string() == id)?;
    Some((ApiKeyId::from_uuid(id), secret))
}

/// Whether a bearer token claims to be an API key (rather than the bootstrap admin token).
pub fn looks_like_key(token: &str) -> bool {
    token.starts_with(TOKEN_PREFIX)
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    name: String,
    scopes: Vec<String>,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<Row> for ApiKey {
    type Error = sqlx::Error;
    fn try_from(r: Row) -> Result<Self, sqlx::Error> {
        let scopes = r
            .scopes
            .iter()
            .map(|s| {
                Scope::parse(s)
                    .ok_or_else(|| sqlx::Error::Decode(format!("unknown scope {s:?}").into()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            id: ApiKeyId::from_uuid(r.id),
            name: r.name,
            scopes,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        })
    }
}

const COLUMNS: &str = "id, name, scopes, created_at, last_used_at, revoked_at";

/// Creates a key with a fresh random secret and stores the secret's hash only.
#[tracing::instrument(skip_all, fields(name = %new.name))]
pub async fn create(pool: &PgPool, new: &NewApiKey) -> Result<IssuedKey, CreateKeyError> {
    let mut random = [0u8; SECRET_BYTES];
    getrandom::fill(&mut random).map_err(CreateKeyError::Random)?;
    let secret = URL_SAFE_NO_PAD.encode(random);
    let id = ApiKeyId::new();
    let scopes: Vec<&str> = new.scopes.iter().map(|s| s.as_str()).collect();
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_keys (id, name, scopes, secret_hash) VALUES ($1, $2, $3, $4)
         RETURNING {COLUMNS}"
    )))
    .bind(id.as_uuid())
    .bind(&new.name)
    .bind(&scopes)
    .bind(&hash_secret(&secret)[..])
    .fetch_one(pool)
    .await?;
    Ok(IssuedKey {
        key: row.try_into()?,
        secret: ApiKeySecret(format!("{TOKEN_PREFIX}{}_{secret}", id.as_uuid().simple())),
    })
}

/// The key a bearer token names, if the token is a key, its secret matches and it is not
/// revoked. The secret hashes are compared in constant time.
#[tracing::instrument(skip_all)]
pub async fn authenticate(pool: &PgPool, token: &str) -> Result<Option<ApiKey>, sqlx::Error> {
    let Some((id, secret)) = parse_token(token) else {
        return Ok(None);
    };
    let row: Option<HashedRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT secret_hash, {COLUMNS} FROM api_keys WHERE id = $1"
    )))
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await?;
    let Some(HashedRow { secret_hash, key }) = row else {
        return Ok(None);
    };
    let matches = bool::from(secret_hash.as_slice().ct_eq(&hash_secret(secret)[..]));
    if !matches || key.revoked_at.is_some() {
        return Ok(None);
    }
    key.try_into().map(Some)
}

#[derive(sqlx::FromRow)]
struct HashedRow {
    secret_hash: Vec<u8>,
    #[sqlx(flatten)]
    key: Row,
}

/// Records a use of the key, unless one was recorded less than [`TOUCH_INTERVAL`] ago.
#[tracing::instrument(skip_all, fields(key_id = %id))]
pub async fn touch(pool: &PgPool, id: ApiKeyId) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys SET last_used_at = now()
          WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= now() - $2::interval)",
    )
    .bind(id.as_uuid())
    .bind(format!("{} seconds", TOUCH_INTERVAL.num_seconds()))
    .execute(pool)
    .await?;
    Ok(())
}

#[tracing::instrument(skip_all, fields(key_id = %id))]
pub async fn get(pool: &PgPool, id: ApiKeyId) -> Result<Option<ApiKey>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE id = $1"
    )))
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await?;
    row.map(TryInto::try_into).transpose()
}

/// Keys in the order they were created, after `after`; revoked ones included.
#[tracing::instrument(skip_all)]
pub async fn list(
    pool: &PgPool,
    after: Option<ApiKeyId>,
    limit: u32,
) -> Result<Page<ApiKey, ApiKeyId>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE ($1::uuid IS NULL OR id > $1)
         ORDER BY id LIMIT $2"
    )))
    .bind(after.map(|a| a.as_uuid()))
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let items = rows
        .into_iter()
        .map(TryInto::try_into)
        .collect::<Result<Vec<ApiKey>, _>>()?;
    Ok(Page::from_rows(items, limit, |k| k.id))
}

/// Revokes a key: it authenticates nothing from now on. Revoking a revoked key keeps its first
/// revocation time. `None` if there is no such key.
#[tracing::instrument(skip_all, fields(key_id = %id))]
pub async fn revoke(pool: &PgPool, id: ApiKeyId) -> Result<Option<ApiKey>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1
         RETURNING {COLUMNS}"
    )))
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await?;
    row.map(TryInto::try_into).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_grants_everything_and_calls_read_only_itself() {
        assert!(Scope::Admin.grants(Scope::CallsRead));
        assert!(Scope::Admin.grants(Scope::Admin));
        assert!(Scope::CallsRead.grants(Scope::CallsRead));
        assert!(!Scope::CallsRead.grants(Scope::Admin));
        assert!(Scope::Admin.grants(Scope::RecordingsRead));
        assert!(!Scope::CallsRead.grants(Scope::RecordingsRead));
        assert!(!Scope::RecordingsRead.grants(Scope::CallsRead));
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Scope::parse("calls:write"), None);
    }

    #[test]
    fn tokens_parse_only_in_their_own_shape() {
        let id = Uuid::now_v7();
        let token = format!("vpk_{}_abc-_def", id.simple());
        assert_eq!(
            parse_token(&token),
            Some((ApiKeyId::from_uuid(id), "abc-_def"))
        );
        assert_eq!(parse_token(&format!("vpk_{}_", id.simple())), None);
        assert_eq!(parse_token(&format!("vpk_{}", id.simple())), None);
        assert_eq!(parse_token("vpk_nothex_secret"), None);
        let upper = id.simple().to_string().to_uppercase();
        assert_eq!(parse_token(&format!("vpk_{upper}_abc")), None);
        assert_eq!(parse_token(&format!("vpk_{}_abc", id.hyphenated())), None);
        assert_eq!(parse_token("Bearer"), None);
    }

    #[test]
    fn new_keys_need_a_sensible_name_and_a_scope() {
        let k = NewApiKey::new(
            "  backend ",
            &[Scope::CallsRead, Scope::Admin, Scope::Admin],
        )
        .unwrap();
        assert_eq!(k.name, "backend");
        assert_eq!(k.scopes, vec![Scope::Admin, Scope::CallsRead]);
        assert_eq!(
            NewApiKey::new("", &[Scope::Admin]),
            Err(InvalidApiKey::Name)
        );
        assert_eq!(
            NewApiKey::new("a\nb", &[Scope::Admin]),
            Err(InvalidApiKey::Name)
        );
        assert_eq!(
            NewApiKey::new(&"x".repeat(MAX_NAME_LEN + 1), &[Scope::Admin]),
            Err(InvalidApiKey::Name)
        );
        assert_eq!(NewApiKey::new("ok", &[]), Err(InvalidApiKey::NoScope));
    }

    #[test]
    fn touching_is_due_once_a_minute() {
        let now = Utc::now();
        let mut key = ApiKey {
            id: ApiKeyId::new(),
            name: "k".into(),
            scopes: vec![Scope::Admin],
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        };
        assert!(key.touch_due(now));
        key.last_used_at = Some(now - chrono::TimeDelta::seconds(30));
        assert!(!key.touch_due(now));
        key.last_used_at = Some(now - chrono::TimeDelta::seconds(61));
        assert!(key.touch_due(now));
    }
}
