//! Signed Vonage webhooks: `Authorization: Bearer <JWT>`, HS256 with the account's signature
//! secret (see shared/reference/vonage/protocol.md, section 4).
//!
//! A token is accepted when: its header says HS256 (nothing else, `none` included); its
//! signature matches one of the configured secrets (several, for rotation; the comparison is
//! constant-time inside the HMAC library); `iss` is `Vonage`; `iat` is within the freshness
//! window of now; its `jti` has not been seen within that window; `api_key` matches when one is
//! configured; and, for requests with a body, `payload_hash` is the SHA-256 of the raw body
//! (enforced or only logged, by configuration, because Vonage does not document the exact form).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// What to do when a signed request's `payload_hash` does not match its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadHashMode {
    /// Refuse the request.
    Enforce,
    /// Accept it and log a warning.
    LogOnly,
}

impl PayloadHashMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enforce" => Some(Self::Enforce),
            "log" => Some(Self::LogOnly),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct SignatureSettings {
    /// The account signature secrets; empty means webhooks are not authenticated.
    pub secrets: Vec<String>,
    /// When set, the token's `api_key` claim must equal it.
    pub api_key: Option<String>,
    /// How far `iat` may be from now, in seconds, either way; also how long a `jti` is remembered.
    pub max_age_seconds: i64,
    pub payload_hash: PayloadHashMode,
}

impl std::fmt::Debug for SignatureSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureSettings")
            .field("secrets", &format!("{} configured", self.secrets.len()))
            .field("api_key", &self.api_key)
            .field("max_age_seconds", &self.max_age_seconds)
            .field("payload_hash", &self.payload_hash)
            .finish()
    }
}

#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum SignatureError {
    #[error("no bearer token")]
    Missing,
    #[error("the token is not a valid HS256 JWT signed with a configured secret")]
    Invalid,
    #[error("the token's issuer is not Vonage")]
    WrongIssuer,
    #[error("the token's iat is outside the accepted window")]
    Stale,
    #[error("the token was already used")]
    Replayed,
    #[error("the token's api_key is not the configured one")]
    WrongApiKey,
    #[error("the token's payload_hash does not match the body")]
    PayloadHashMismatch,
}

impl SignatureError {
    /// A short label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::WrongIssuer => "wrong_issuer",
            Self::Stale => "stale",
            Self::Replayed => "replayed",
            Self::WrongApiKey => "wrong_api_key",
            Self::PayloadHashMismatch => "payload_hash",
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    iat: i64,
    jti: String,
    iss: String,
    #[serde(default)]
    payload_hash: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
}

/// Checks webhook signatures and remembers recent token ids to refuse replays.
pub struct Verifier {
    settings: SignatureSettings,
    keys: Vec<DecodingKey>,
    seen: Mutex<SeenTokens>,
}

#[derive(Default)]
struct SeenTokens {
    by_id: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
}

impl SeenTokens {
    /// Records `jti` seen at `now`; false if it was already seen within the window.
    fn insert(&mut self, jti: &str, now: i64, window: i64) -> bool {
        while let Some((at, _)) = self.order.front() {
            if *at >= now - window {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
        if self.by_id.contains_key(jti) {
            return false;
        }
        self.by_id.insert(jti.to_owned(), now);
        self.order.push_back((now, jti.to_owned()));
        true
    }
}

impl Verifier {
    pub fn new(settings: SignatureSettings) -> Self {
        let keys = settings
            .secrets
            .iter()
            .map(|s| DecodingKey::from_secret(s.as_bytes()))
            .collect();
        Self {
            settings,
            keys,
            seen: Mutex::new(SeenTokens::default()),
        }
    }

    /// Whether webhooks must be signed.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Verifies the `Authorization` header of a webhook request. `body` is the raw body of a
    /// POST (None for GET). `now` is Unix seconds.
    pub fn verify(
        &self,
        authorization: Option<&str>,
        body: Option<&[u8]>,
        now: i64,
    ) -> Result<(), SignatureError> {
        let token = authorization
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or(SignatureError::Missing)?;

        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let claims = self
            .keys
            .iter()
            .find_map(|key| decode::<Claims>(token, key, &validation).ok())
            .ok_or(SignatureError::Invalid)?
            .claims;

        if claims.iss != "Vonage" {
            return Err(SignatureError::WrongIssuer);
        }
        let window = self.settings.max_age_seconds;
        if (now - claims.iat).abs() > window {
            return Err(SignatureError::Stale);
        }
        if let Some(expected) = &self.settings.api_key
            && claims.api_key.as_deref() != Some(expected.as_str())
        {
            return Err(SignatureError::WrongApiKey);
        }
        if let Some(body) = body {
            let actual = hex_sha256(body);
            let matches = claims
                .payload_hash
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(&actual));
            if !matches {
                match self.settings.payload_hash {
                    PayloadHashMode::Enforce => return Err(SignatureError::PayloadHashMismatch),
                    PayloadHashMode::LogOnly => tracing::warn!(
                        "signed webhook's payload_hash does not match its body; accepted (payload hash mode: log)"
                    ),
                }
            }
        }
        let fresh = self
            .seen
            .lock()
            .map(|mut seen| seen.insert(&claims.jti, now, window))
            .unwrap_or(true);
        if !fresh {
            return Err(SignatureError::Replayed);
        }
        Ok(())
    }
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "signature-secret-1";

    fn verifier(mode: PayloadHashMode) -> Verifier {
        Verifier::new(SignatureSettings {
            secrets: vec!["old-secret".into(), SECRET.into()],
            api_key: Some("abcd1234".into()),
            max_age_seconds: 300,
            payload_hash: mode,
        })
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn claims(now: i64, jti: &str, body: &[u8]) -> serde_json::Value {
        json!({"iat": now, "jti": jti, "iss": "Vonage", "api_key": "abcd1234",
               "application_id": "app", "payload_hash": hex_sha256(body)})
    }

    #[test]
    fn a_genuine_token_passes_once_and_a_replay_is_refused() {
        let v = verifier(PayloadHashMode::Enforce);
        let now = 1_700_000_000;
        let body = br#"{"status":"answered"}"#;
        let auth = format!("Bearer {}", token(claims(now, "j1", body), SECRET));
        assert_eq!(v.verify(Some(&auth), Some(body), now), Ok(()));
        assert_eq!(
            v.verify(Some(&auth), Some(body), now + 1),
            Err(SignatureError::Replayed)
        );
        let rotated = format!("Bearer {}", token(claims(now, "j2", body), "old-secret"));
        assert_eq!(v.verify(Some(&rotated), Some(body), now), Ok(()));
    }

    #[test]
    fn forged_stale_and_mismatched_tokens_are_refused() {
        let v = verifier(PayloadHashMode::Enforce);
        let now = 1_700_000_000;
        let body = b"{}";
        assert_eq!(
            v.verify(None, Some(body), now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            v.verify(Some("Basic abc"), Some(body), now),
            Err(SignatureError::Missing)
        );
        let wrong = format!("Bearer {}", token(claims(now, "a", body), "wrong"));
        assert_eq!(
            v.verify(Some(&wrong), Some(body), now),
            Err(SignatureError::Invalid)
        );
        let stale = format!("Bearer {}", token(claims(now - 301, "b", body), SECRET));
        assert_eq!(
            v.verify(Some(&stale), Some(body), now),
            Err(SignatureError::Stale)
        );
        let future = format!("Bearer {}", token(claims(now + 301, "c", body), SECRET));
        assert_eq!(
            v.verify(Some(&future), Some(body), now),
            Err(SignatureError::Stale)
        );
        let mut c = claims(now, "d", body);
        c["iss"] = json!("Mallory");
        let issuer = format!("Bearer {}", token(c, SECRET));
        assert_eq!(
            v.verify(Some(&issuer), Some(body), now),
            Err(SignatureError::WrongIssuer)
        );
        let mut c = claims(now, "e", body);
        c["api_key"] = json!("other");
        let key = format!("Bearer {}", token(c, SECRET));
        assert_eq!(
            v.verify(Some(&key), Some(body), now),
            Err(SignatureError::WrongApiKey)
        );
        let tampered = format!("Bearer {}", token(claims(now, "f", body), SECRET));
        assert_eq!(
            v.verify(Some(&tampered), Some(b"{\"x\":1}"), now),
            Err(SignatureError::PayloadHashMismatch)
        );
        // `alg: none` with an empty signature.
        let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = base64_url(claims(now, "g", body).to_string().as_bytes());
        let none = format!("Bearer {header}.{payload}.");
        assert_eq!(
            v.verify(Some(&none), Some(body), now),
            Err(SignatureError::Invalid)
        );
        // HS512 with the right secret is still refused: only HS256 is accepted.
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &claims(now, "h", body),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            v.verify(Some(&format!("Bearer {hs512}")), Some(body), now),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn payload_hash_mismatches_are_only_logged_in_log_mode() {
        let v = verifier(PayloadHashMode::LogOnly);
        let now = 1_700_000_000;
        let auth = format!("Bearer {}", token(claims(now, "x", b"{}"), SECRET));
        assert_eq!(v.verify(Some(&auth), Some(b"{\"other\":1}"), now), Ok(()));
    }

    #[test]
    fn remembered_token_ids_expire_with_the_window() {
        let mut seen = SeenTokens::default();
        assert!(seen.insert("a", 100, 10));
        assert!(!seen.insert("a", 105, 10));
        assert!(seen.insert("b", 120, 10));
        assert!(seen.insert("a", 121, 10), "forgotten after the window");
        assert_eq!(seen.by_id.len(), 2);
    }

    fn base64_url(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}
