//! Vonage's REST API, as the Vonage application: fetching call recordings.
//!
//! Every request carries an application JWT (RS256, signed with the application's private key;
//! claims `application_id`, `iat`, `exp`, `jti`), minted for that request. And every URL is
//! checked against [`ApiOrigin`] before anything is sent: a recording's URL comes from a webhook,
//! and the JWT must never go anywhere but Vonage's API (nor the service fetch anything else).
//! The check is here, in the client, so no caller can skip it. Redirects are not followed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use url::{Host, Url};

use crate::client::{ClientError, describe, https_client, user_agent};

/// Where recordings are: `<origin>/v1/files/<id>`.
pub const FILES_PATH: &str = "/v1/files/";
/// How long an application JWT is valid.
const TOKEN_LIFETIME_SECONDS: i64 = 300;
/// Longest URL fetched.
const MAX_URL_CHARS: usize = 2048;

/// The origins the service may fetch from, and so send its application JWT to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ApiOrigin {
    /// Vonage's API hosts, over HTTPS on the default port: `api.nexmo.com`, `api-XX.nexmo.com`,
    /// `api.vonage.com`, `api-XX.vonage.com`.
    #[default]
    Vonage,
    /// Only this origin (scheme, host and port), under its path: `VONAGE_API_BASE_URL`.
    Only(Url),
}

/// Why a URL is not fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("it is not a URL")]
    NotAUrl,
    #[error("it is longer than {MAX_URL_CHARS} characters")]
    TooLong,
    #[error("its scheme is not the API's")]
    Scheme,
    #[error("its host is not one of Vonage's API hosts")]
    Host,
    #[error("its port is not the API's")]
    Port,
    #[error("it carries credentials")]
    Credentials,
    #[error("its path is not under {FILES_PATH}")]
    Path,
}

impl UrlRefused {
    /// A short label, for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotAUrl => "not_a_url",
            Self::TooLong => "too_long",
            Self::Scheme => "scheme",
            Self::Host => "host",
            Self::Port => "port",
            Self::Credentials => "credentials",
            Self::Path => "path",
        }
    }
}

impl ApiOrigin {
    /// `VONAGE_API_BASE_URL`: an `http` or `https` URL without credentials, query or fragment.
    pub fn base(raw: &str) -> Result<Self, String> {
        let url = Url::parse(raw.trim()).map_err(|e| e.to_string())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("use an http:// or https:// URL".to_owned());
        }
        if url.host().is_none() {
            return Err("the URL has no host".to_owned());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("the URL may not carry credentials".to_owned());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("the URL may not have a query or a fragment".to_owned());
        }
        Ok(Self::Only(url))
    }

    /// `url`, parsed, if it may be fetched: on an allowed origin, under [`FILES_PATH`], without
    /// credentials. The URL returned (without its fragment) is the one to fetch.
    pub fn check(&self, raw: &str) -> Result<Url, UrlRefused> {
        if raw.chars().count() > MAX_URL_CHARS {
            return Err(UrlRefused::TooLong);
        }
        let mut url = Url::parse(raw.trim()).map_err(|_| UrlRefused::NotAUrl)?;
        url.set_fragment(None);
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRefused::Credentials);
        }
        let prefix = match self {
            Self::Vonage => {
                if url.scheme() != "https" {
                    return Err(UrlRefused::Scheme);
                }
                match url.host() {
                    Some(Host::Domain(host)) if is_vonage_api_host(host) => {}
                    _ => return Err(UrlRefused::Host),
                }
                if url.port().is_some() {
                    return Err(UrlRefused::Port);
                }
                FILES_PATH.to_owned()
            }
            Self::Only(base) => {
                if url.scheme() != base.scheme() {
                    return Err(UrlRefused::Scheme);
                }
                if url.host() != base.host() {
                    return Err(UrlRefused::Host);
                }
                if url.port_or_known_default() != base.port_or_known_default() {
                    return Err(UrlRefused::Port);
                }
                format!("{}{FILES_PATH}", base.path().trim_end_matches('/'))
            }
        };
        // The path is normalised by the parser (dot segments removed), so the prefix holds for
        // what is fetched.
        match url.path().strip_prefix(prefix.as_str()) {
            Some(rest) if !rest.is_empty() => Ok(url),
            _ => Err(UrlRefused::Path),
        }
    }

    /// The origin, for messages: `Vonage's API hosts` or the base URL.
    pub fn describe(&self) -> String {
        match self {
            Self::Vonage => "Vonage's API hosts (https://api.nexmo.com and the like)".to_owned(),
            Self::Only(base) => base.as_str().to_owned(),
        }
    }
}

/// `api.nexmo.com`, `api.vonage.com`, or `api-<region>.` either (`api-us-3.vonage.com`,
/// `api-eu.nexmo.com`).
fn is_vonage_api_host(host: &str) -> bool {
    let Some(name) = host
        .strip_suffix(".nexmo.com")
        .or_else(|| host.strip_suffix(".vonage.com"))
    else {
        return false;
    };
    if name == "api" {
        return true;
    }
    name.strip_prefix("api-").is_some_and(|region| {
        (1..=20).contains(&region.len())
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !region.starts_with('-')
            && !region.ends_with('-')
    })
}

/// The application's credentials: its id and its private key.
#[derive(Clone)]
pub struct Credentials {
    application_id: String,
    key: EncodingKey,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("application_id", &self.application_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("it is not an RSA private key in PEM form ({0})")]
    Pem(jsonwebtoken::errors::Error),
    #[error("it cannot sign a token ({0})")]
    Sign(jsonwebtoken::errors::Error),
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    application_id: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
}

impl Credentials {
    /// The application `application_id` with its private key (PEM, PKCS#8 as Vonage hands it
    /// out, or PKCS#1). A key that cannot sign is refused here, not at the first request.
    pub fn new(application_id: &str, private_key_pem: &[u8]) -> Result<Self, KeyError> {
        let key = EncodingKey::from_rsa_pem(private_key_pem).map_err(KeyError::Pem)?;
        let credentials = Self {
            application_id: application_id.to_owned(),
            key,
        };
        credentials.token(0).map_err(KeyError::Sign)?;
        Ok(credentials)
    }

    pub fn application_id(&self) -> &str {
        &self.application_id
    }

    /// An application JWT issued at `now` (seconds since the epoch), valid for 5 minutes.
    pub fn token(&self, now: i64) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            application_id: &self.application_id,
            iat: now,
            exp: now + TOKEN_LIFETIME_SECONDS,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the URL is not fetched: {0}")]
    Refused(#[from] UrlRefused),
    #[error("Vonage answered {status}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("could not reach Vonage: {0}")]
    Connection(String),
    #[error("the body broke off: {0}")]
    Body(String),
    #[error("the body stalled for {0:?}")]
    Stalled(Duration),
    #[error("could not sign the request: {0}")]
    Token(String),
}

impl FetchError {
    /// A short label, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Refused(_) => "refused",
            Self::Status { .. } => "status",
            Self::Timeout(_) => "timeout",
            Self::Connection(_) => "connection",
            Self::Body(_) => "body",
            Self::Stalled(_) => "stalled",
            Self::Token(_) => "token",
        }
    }

    /// How long Vonage asked to wait (`Retry-After`, in seconds).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A file Vonage is sending: its head; the body is read with [`Media::into_stream`].
pub struct Media {
    /// Vonage's `Content-Type`, when it is a plausible media type.
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    body: Incoming,
}

impl Media {
    /// The body, chunk by chunk; a chunk that takes longer than `idle` to come ends it with
    /// [`FetchError::Stalled`].
    pub fn into_stream(
        self,
        idle: Duration,
    ) -> impl Stream<Item = Result<Bytes, FetchError>> + Send + 'static {
        futures_util::stream::unfold(Some(self.body), move |body| async move {
            let mut body = body?;
            loop {
                match tokio::time::timeout(idle, body.frame()).await {
                    Err(_) => return Some((Err(FetchError::Stalled(idle)), None)),
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => {
                        return Some((Err(FetchError::Body(describe(&e))), None));
                    }
                    Ok(Some(Ok(frame))) => {
                        // Trailers carry no data; skip them.
                        if let Ok(data) = frame.into_data()
                            && !data.is_empty()
                        {
                            return Some((Ok(data), Some(body)));
                        }
                    }
                }
            }
        })
    }
}

/// Fetches from Vonage's API as the application. Cheap to clone.
#[derive(Clone)]
pub struct VonageClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    credentials: Credentials,
    origin: ApiOrigin,
}

impl VonageClient {
    pub fn new(credentials: Credentials, origin: ApiOrigin) -> Result<Self, ClientError> {
        Ok(Self {
            inner: Arc::new(Inner {
                client: https_client()?,
                credentials,
                origin,
            }),
        })
    }

    pub fn origin(&self) -> &ApiOrigin {
        &self.inner.origin
    }

    /// GETs `url`, if [`ApiOrigin`] allows it, with a fresh application JWT, and waits at most
    /// `timeout` for the head of a 2xx answer. Any other status is an error (its body unread).
    pub async fn fetch(&self, url: &str, timeout: Duration) -> Result<Media, FetchError> {
        let url = self.inner.origin.check(url)?;
        let token = self
            .inner
            .credentials
            .token(chrono::Utc::now().timestamp())
            .map_err(|e| FetchError::Token(e.to_string()))?;
        let request = hyper::Request::get(url.as_str())
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(USER_AGENT, user_agent())
            .body(Empty::new())
            .map_err(|_| FetchError::Refused(UrlRefused::NotAUrl))?;
        let response = tokio::time::timeout(timeout, self.inner.client.request(request))
            .await
            .map_err(|_| FetchError::Timeout(timeout))?
            .map_err(|e| FetchError::Connection(describe(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(FetchError::Status {
                status: status.as_u16(),
                retry_after,
            });
        }
        let headers = response.headers();
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| is_media_type(v))
            .map(str::to_owned);
        let content_length = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        Ok(Media {
            content_type,
            content_length,
            body: response.into_body(),
        })
    }
}

/// `type/subtype`, with parameters, in visible ASCII: safe to pass on as a `Content-Type`.
fn is_media_type(v: &str) -> bool {
    let essence = v.split(';').next().unwrap_or("").trim();
    v.len() <= 128
        && v.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
        && essence
            .split_once('/')
            .is_some_and(|(t, s)| !t.is_empty() && !s.is_empty() && !s.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_on_vonage_api_hosts_over_https_are_fetched() {
        let vonage = ApiOrigin::Vonage;
        for ok in [
            "https://api.nexmo.com/v1/files/aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
            "https://api-us.nexmo.com/v1/files/x",
            "https://api-eu-3.vonage.com/v1/files/x",
            "https://API.Vonage.com/v1/files/x",
            "https://api.nexmo.com:443/v1/files/x",
            "https://api.nexmo.com/v1/files/x#fragment",
        ] {
            assert!(vonage.check(ok).is_ok(), "{ok}");
        }
        for (refused, why) in [
            ("http://api.nexmo.com/v1/files/x", UrlRefused::Scheme),
            ("https://evil.example.com/v1/files/x", UrlRefused::Host),
            (
                "https://api.nexmo.com.evil.example/v1/files/x",
                UrlRefused::Host,
            ),
            ("https://evilapi.nexmo.com/v1/files/x", UrlRefused::Host),
            ("https://api-.nexmo.com/v1/files/x", UrlRefused::Host),
            ("https://rest.nexmo.com/v1/files/x", UrlRefused::Host),
            ("https://169.254.169.254/v1/files/x", UrlRefused::Host),
            ("https://api.nexmo.com:8443/v1/files/x", UrlRefused::Port),
            (
                "https://user:pw@api.nexmo.com/v1/files/x",
                UrlRefused::Credentials,
            ),
            ("https://api.nexmo.com/v2/applications", UrlRefused::Path),
            ("https://api.nexmo.com/v1/files/", UrlRefused::Path),
            (
                "https://api.nexmo.com/v1/files/../../v2/applications",
                UrlRefused::Path,
            ),
            (
                "https://api.nexmo.com/v1/files/%2e%2e/%2e%2e/v2/x",
                UrlRefused::Path,
            ),
            ("file:///etc/passwd", UrlRefused::Scheme),
            ("not a url", UrlRefused::NotAUrl),
        ] {
            assert_eq!(vonage.check(refused), Err(why), "{refused}");
        }
        let long = format!("https://api.nexmo.com/v1/files/{}", "x".repeat(3000));
        assert_eq!(vonage.check(&long), Err(UrlRefused::TooLong));
    }

    #[test]
    fn a_base_url_allows_its_origin_and_nothing_else() {
        let only = ApiOrigin::base("http://127.0.0.1:4000").unwrap();
        assert!(only.check("http://127.0.0.1:4000/v1/files/x").is_ok());
        assert_eq!(
            only.check("https://api.nexmo.com/v1/files/x"),
            Err(UrlRefused::Scheme)
        );
        assert_eq!(
            only.check("http://127.0.0.1:4001/v1/files/x"),
            Err(UrlRefused::Port)
        );
        assert_eq!(
            only.check("http://localhost:4000/v1/files/x"),
            Err(UrlRefused::Host)
        );
        let under = ApiOrigin::base("https://proxy.example.com/vonage/").unwrap();
        assert!(
            under
                .check("https://proxy.example.com/vonage/v1/files/x")
                .is_ok()
        );
        assert_eq!(
            under.check("https://proxy.example.com/v1/files/x"),
            Err(UrlRefused::Path)
        );
        assert!(ApiOrigin::base("ftp://x").is_err());
        assert!(ApiOrigin::base("https://u:p@x").is_err());
        assert!(ApiOrigin::base("https://x/?q").is_err());
    }

    const PRIVATE_KEY: &str =
        include_str!("../../server/tests/fixtures/vonage-test-private-key.pem");
    const PUBLIC_KEY: &str = include_str!("../../server/tests/fixtures/vonage-test-public-key.pem");

    #[test]
    fn tokens_are_rs256_with_the_application_claims() {
        let credentials = Credentials::new("app-1", PRIVATE_KEY.as_bytes()).unwrap();
        let now = chrono::Utc::now().timestamp();
        let token = credentials.token(now).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.set_required_spec_claims(&["exp", "iat", "jti"]);
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
        let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["application_id"], "app-1");
        assert_eq!(claims["iat"], now);
        assert_eq!(claims["exp"], now + TOKEN_LIFETIME_SECONDS);
        assert_ne!(credentials.token(now).unwrap(), token, "a jti per token");
        assert!(!format!("{credentials:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_key_that_is_not_an_rsa_private_key_is_refused() {
        for bad in ["", "not a key", PUBLIC_KEY] {
            assert!(Credentials::new("app-1", bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn media_types_are_passed_on_only_when_plausible() {
        assert!(is_media_type("audio/mpeg"));
        assert!(is_media_type("audio/wav; codec=1"));
        assert!(!is_media_type("audio"));
        assert!(!is_media_type("audio/mpeg\r\nSet-Cookie: x"));
        assert!(!is_media_type("a/b/c"));
    }
}
