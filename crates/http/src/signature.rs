//! Signed Vonage webhooks: `Authorization: Bearer <JWT>`, HS256 with the account's signature
//! secret (see shared/reference/vonage/protocol.md, section 4).
//!
//! A request is checked in two steps, so that a forged request is refused before its body is
//! read:
//! 1. [`Verifier::verify_token`], on the header alone: the header says HS256 (nothing else,
//!    `none` included); the signature matches one of the configured secrets (several, for
//!    rotation; the comparison is constant-time inside the HMAC library); `iss` is `Vonage`;
//!    `iat` is within the freshness window of now; `api_key` and `application_id` match when
//!    configured. Claims we do not use (`aud`, say) are ignored.
//! 2. [`Verifier::accept`], once the body is read: for requests with a body, `payload_hash` is
//!    the SHA-256 of the raw body (enforced or only logged, by configuration, because Vonage does
//!    not document the exact form); and the token id (`jti`) has not been used for a different
//!    request. Vonage retries a request it got no answer to with the same token: the same token
//!    on the same request (method, path, query and body) is accepted again, and the handlers
//!    process it idempotently. A token id is remembered until its token could no longer pass
//!    step 1: `max(now, iat) + SIGNATURE_MAX_AGE_SECONDS`.

use std::collections::{BTreeSet, HashMap};
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
    /// The account signature secrets; empty means webhooks are not authenticated (only allowed
    /// with `ALLOW_UNSIGNED_WEBHOOKS=true`).
    pub secrets: Vec<String>,
    /// When set, the token's `api_key` claim must equal it.
    pub api_key: Option<String>,
    /// When set, the token's `application_id` claim must equal it.
    pub application_id: Option<String>,
    /// How far `iat` may be from now, in seconds, either way.
    pub max_age_seconds: i64,
    pub payload_hash: PayloadHashMode,
}

impl std::fmt::Debug for SignatureSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureSettings")
            .field("secrets", &format!("{} configured", self.secrets.len()))
            .field("api_key", &self.api_key)
            .field("application_id", &self.application_id)
            .field("max_age_seconds", &self.max_age_seconds)
            .field("payload_hash", &self.payload_hash)
            .finish()
    }
}

#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum SignatureError {
    /// No `Authorization` header at all. Vonage sends an unsigned callback only when it has an
    /// internal error, and retries one answered with a 5xx.
    #[error("no Authorization header")]
    Missing,
    #[error("the token is not a valid HS256 JWT signed with a configured secret")]
    Invalid,
    #[error("the token's issuer is not Vonage")]
    WrongIssuer,
    #[error(
        "the token's iat is outside the accepted window (are both clocks right?), or it has expired"
    )]
    Stale,
    #[error("the token was already used for another request")]
    Replayed,
    #[error("the token's api_key is not the configured one")]
    WrongApiKey,
    #[error("the token's application_id is not the configured one")]
    WrongApplication,
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
            Self::WrongApplication => "wrong_application",
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
    #[serde(default)]
    application_id: Option<String>,
    /// Vonage sends none; a token that carries one is refused once it has passed.
    #[serde(default)]
    exp: Option<i64>,
}

/// A token that passed the first step; [`Verifier::accept`] finishes the check.
#[derive(Debug)]
pub struct VerifiedToken {
    jti: String,
    iat: i64,
    payload_hash: Option<String>,
}

/// What identifies one request, so that a retry of it can be told from another request that
/// reuses its token.
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    /// The raw body of a request that has one (None for GET).
    pub body: Option<&'a [u8]>,
}

impl RequestParts<'_> {
    fn fingerprint(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for part in [
            self.method.as_bytes(),
            self.path.as_bytes(),
            self.query.as_bytes(),
        ] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        if let Some(body) = self.body {
            hash.update(body);
        }
        hash.finalize().into()
    }
}

/// Checks webhook signatures and remembers the token ids of accepted requests.
pub struct Verifier {
    settings: SignatureSettings,
    keys: Vec<DecodingKey>,
    seen: Mutex<SeenTokens>,
}

/// Token ids in use: each with the request it was accepted for, until it expires.
#[derive(Default)]
struct SeenTokens {
    by_id: HashMap<String, ([u8; 32], i64)>,
    /// (expires at, token id), soonest first.
    expiry: BTreeSet<(i64, String)>,
}

impl SeenTokens {
    /// Records `jti` for `request` until `expires`; false if it is in use for another request.
    fn insert(&mut self, jti: &str, request: [u8; 32], now: i64, expires: i64) -> bool {
        while let Some((at, _)) = self.expiry.first() {
            if *at >= now {
                break;
            }
            if let Some((_, old)) = self.expiry.pop_first() {
                self.by_id.remove(&old);
            }
        }
        match self.by_id.get(jti) {
            Some((seen, _)) => *seen == request,
            None => {
                self.by_id.insert(jti.to_owned(), (request, expires));
                self.expiry.insert((expires, jti.to_owned()));
                true
            }
        }
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

    /// Checks the `Authorization` header of a webhook request (step 1). `now` is Unix seconds.
    pub fn verify_token(
        &self,
        authorization: Option<&str>,
        now: i64,
    ) -> Result<VerifiedToken, SignatureError> {
        let header = authorization.ok_or(SignatureError::Missing)?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or(SignatureError::Invalid)?;

        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
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
        if now.abs_diff(claims.iat) > self.settings.max_age_seconds.unsigned_abs()
            || claims.exp.is_some_and(|exp| exp < now)
        {
            return Err(SignatureError::Stale);
        }
        if let Some(expected) = &self.settings.api_key
            && claims.api_key.as_deref() != Some(expected.as_str())
        {
            return Err(SignatureError::WrongApiKey);
        }
        if let Some(expected) = &self.settings.application_id
            && claims.application_id.as_deref() != Some(expected.as_str())
        {
            return Err(SignatureError::WrongApplication);
        }
        Ok(VerifiedToken {
            jti: claims.jti,
            iat: claims.iat,
            payload_hash: claims.payload_hash,
        })
    }

    /// Finishes the check of a request whose token passed [`Verifier::verify_token`] (step 2).
    pub fn accept(
        &self,
        token: &VerifiedToken,
        request: &RequestParts<'_>,
        now: i64,
    ) -> Result<(), SignatureError> {
        if let Some(body) = request.body {
            let actual = hex_sha256(body);
            let matches = token
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
        let expires = now.max(token.iat) + self.settings.max_age_seconds;
        let fresh = self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(
            &token.jti,
            request.fingerprint(),
            now,
            expires,
        );
        if fresh {
            Ok(())
        } else {
            Err(SignatureError::Replayed)
        }
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
            application_id: Some("app".into()),
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

    fn post(body: &[u8]) -> RequestParts<'_> {
        RequestParts {
            method: "POST",
            path: "/webhooks/event",
            query: "",
            body: Some(body),
        }
    }

    /// Both steps, as a handler runs them.
    fn verify(
        v: &Verifier,
        auth: Option<&str>,
        request: &RequestParts<'_>,
        now: i64,
    ) -> Result<(), SignatureError> {
        let token = v.verify_token(auth, now)?;
        v.accept(&token, request, now)
    }

    #[test]
    fn a_genuine_token_passes_again_for_the_same_request_only() {
        let v = verifier(PayloadHashMode::Enforce);
        let now = 1_700_000_000;
        let body = br#"{"status":"answered"}"#;
        let auth = format!("Bearer {}", token(claims(now, "j1", body), SECRET));
        assert_eq!(verify(&v, Some(&auth), &post(body), now), Ok(()));
        assert_eq!(
            verify(&v, Some(&auth), &post(body), now + 1),
            Ok(()),
            "Vonage's retry of the same request"
        );
        let other = RequestParts {
            path: "/webhooks/answer",
            ..post(body)
        };
        assert_eq!(
            verify(&v, Some(&auth), &other, now + 2),
            Err(SignatureError::Replayed),
            "the token on another request"
        );
        let rotated = format!("Bearer {}", token(claims(now, "j2", body), "old-secret"));
        assert_eq!(verify(&v, Some(&rotated), &post(body), now), Ok(()));
    }

    #[test]
    fn forged_stale_and_mismatched_tokens_are_refused() {
        let v = verifier(PayloadHashMode::Enforce);
        let now = 1_700_000_000;
        let body = b"{}";
        assert_eq!(
            verify(&v, None, &post(body), now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(&v, Some("Basic abc"), &post(body), now),
            Err(SignatureError::Invalid)
        );
        let wrong = format!("Bearer {}", token(claims(now, "a", body), "wrong"));
        assert_eq!(
            verify(&v, Some(&wrong), &post(body), now),
            Err(SignatureError::Invalid)
        );
        let stale = format!("Bearer {}", token(claims(now - 301, "b", body), SECRET));
        assert_eq!(
            verify(&v, Some(&stale), &post(body), now),
            Err(SignatureError::Stale)
        );
        let future = format!("Bearer {}", token(claims(now + 301, "c", body), SECRET));
        assert_eq!(
            verify(&v, Some(&future), &post(body), now),
            Err(SignatureError::Stale)
        );
        let mut c = claims(now, "d", body);
        c["iss"] = json!("Mallory");
        let issuer = format!("Bearer {}", token(c, SECRET));
        assert_eq!(
            verify(&v, Some(&issuer), &post(body), now),
            Err(SignatureError::WrongIssuer)
        );
        let mut c = claims(now, "e", body);
        c["api_key"] = json!("other");
        let key = format!("Bearer {}", token(c, SECRET));
        assert_eq!(
            verify(&v, Some(&key), &post(body), now),
            Err(SignatureError::WrongApiKey)
        );
        let mut c = claims(now, "e2", body);
        c["application_id"] = json!("someone-elses-app");
        let app = format!("Bearer {}", token(c, SECRET));
        assert_eq!(
            verify(&v, Some(&app), &post(body), now),
            Err(SignatureError::WrongApplication)
        );
        let tampered = format!("Bearer {}", token(claims(now, "f", body), SECRET));
        assert_eq!(
            verify(&v, Some(&tampered), &post(b"{\"x\":1}"), now),
            Err(SignatureError::PayloadHashMismatch)
        );
        // `alg: none` with an empty signature.
        let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = base64_url(claims(now, "g", body).to_string().as_bytes());
        let none = format!("Bearer {header}.{payload}.");
        assert_eq!(
            verify(&v, Some(&none), &post(body), now),
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
            verify(&v, Some(&format!("Bearer {hs512}")), &post(body), now),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn an_expired_token_or_an_absurd_iat_is_refused() {
        let v = verifier(PayloadHashMode::Enforce);
        let now = 1_700_000_000;
        let mut c = claims(now, "exp", b"{}");
        c["exp"] = json!(now - 1);
        let expired = format!("Bearer {}", token(c, SECRET));
        assert_eq!(
            verify(&v, Some(&expired), &post(b"{}"), now),
            Err(SignatureError::Stale)
        );
        for iat in [i64::MIN, i64::MAX, now - (1 << 62)] {
            let mut c = claims(now, "iat", b"{}");
            c["iat"] = json!(iat);
            let absurd = format!("Bearer {}", token(c, SECRET));
            assert_eq!(
                verify(&v, Some(&absurd), &post(b"{}"), now),
                Err(SignatureError::Stale),
                "iat {iat}"
            );
        }
    }

    #[test]
    fn claims_we_do_not_use_are_ignored() {
        let v = verifier(PayloadHashMode::Enforce);
        let now = 1_700_000_000;
        let mut c = claims(now, "aud", b"{}");
        c["aud"] = json!("https://proxy.example.com");
        c["sub"] = json!("something");
        c["exp"] = json!(now + 60);
        let auth = format!("Bearer {}", token(c, SECRET));
        assert_eq!(verify(&v, Some(&auth), &post(b"{}"), now), Ok(()));
    }

    #[test]
    fn payload_hash_mismatches_are_only_logged_in_log_mode() {
        let v = verifier(PayloadHashMode::LogOnly);
        let now = 1_700_000_000;
        let auth = format!("Bearer {}", token(claims(now, "x", b"{}"), SECRET));
        assert_eq!(
            verify(&v, Some(&auth), &post(b"{\"other\":1}"), now),
            Ok(())
        );
    }

    #[test]
    fn a_token_id_is_remembered_for_as_long_as_its_token_is_fresh() {
        let v = verifier(PayloadHashMode::Enforce);
        let now = 1_700_000_000;
        // Issued 200 s ahead of our clock: fresh until now + 500.
        let auth = format!("Bearer {}", token(claims(now + 200, "skew", b"{}"), SECRET));
        assert_eq!(verify(&v, Some(&auth), &post(b"{}"), now), Ok(()));
        let other = RequestParts {
            query: "x=1",
            ..post(b"{}")
        };
        // A later request with the token, while it is still fresh, is refused...
        assert_eq!(
            verify(&v, Some(&auth), &other, now + 499),
            Err(SignatureError::Replayed)
        );
        // ...and once it is not fresh any more, step 1 refuses it.
        assert_eq!(
            verify(&v, Some(&auth), &other, now + 501),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn remembered_token_ids_are_forgotten_once_expired() {
        let mut seen = SeenTokens::default();
        assert!(seen.insert("a", [1; 32], 100, 110));
        assert!(!seen.insert("a", [2; 32], 105, 115));
        assert!(
            seen.insert("a", [1; 32], 106, 116),
            "the same request again"
        );
        assert!(seen.insert("b", [1; 32], 120, 130));
        assert!(
            seen.insert("a", [2; 32], 121, 131),
            "forgotten after it expired"
        );
        assert_eq!(seen.by_id.len(), 2);
        assert_eq!(seen.expiry.len(), 2);
    }

    fn base64_url(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}
