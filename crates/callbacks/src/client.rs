//! The one HTTP client for everything sent to the marketplace: JSON bodies signed per Standard
//! Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`), a timeout on connecting
//! and one on the whole exchange, no redirects followed (a redirect is a failed attempt), and a
//! bounded read of the answer.
//!
//! TLS is rustls with the *ring* provider, given to this client alone; the certificates trusted
//! are the system's (or, on a system without any, the Mozilla set built in).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use standardwebhooks::Webhook;

/// The most of an answer's body that is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the other side answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Its `Retry-After`, in seconds.
    pub retry_after: Option<Duration>,
    /// Its body, at most 64 KiB (an answer cut short is an error).
    pub body: Bytes,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("could not send: {0}")]
    Connection(String),
    #[error("the answer's body is over {MAX_ANSWER_BYTES} bytes or broken")]
    Body,
    #[error("the URL cannot be sent to: {0}")]
    Url(String),
    #[error("a signing secret is not valid")]
    Secret,
}

#[derive(Debug, thiserror::Error)]
#[error("could not set up TLS for outbound HTTPS: {0}")]
pub struct ClientError(String);

/// Sends signed JSON. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    user_agent: HeaderValue,
}

impl Sender {
    pub fn new() -> Result<Self, ClientError> {
        let client = https_client()?;
        Ok(Self {
            client,
            user_agent: user_agent(),
        })
    }

    /// POSTs `body` to `url`, signed with each of `secrets` (`whsec_...`; none: unsigned) as
    /// message `id`, and reads the answer, all within `timeout`.
    pub async fn post(
        &self,
        url: &str,
        id: &str,
        body: &str,
        secrets: &[String],
        timeout: Duration,
    ) -> Result<Answer, SendError> {
        let timestamp = chrono::Utc::now().timestamp();
        let signatures = secrets
            .iter()
            .map(|s| {
                Webhook::new(s)
                    .and_then(|w| w.sign(id, timestamp, body.as_bytes()))
                    .map_err(|_| SendError::Secret)
            })
            .collect::<Result<Vec<String>, _>>()?;
        let mut request = hyper::Request::post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, self.user_agent.clone())
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string());
        if !signatures.is_empty() {
            request = request.header("webhook-signature", signatures.join(" "));
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .map_err(|e| SendError::Url(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| SendError::Connection(describe(&e)))?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|_| SendError::Body)?
                .to_bytes();
            Ok(Answer {
                status,
                retry_after,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| SendError::Timeout(timeout))?
    }
}

/// The HTTP(S) client every outbound request goes through: rustls with the *ring* provider, the
/// system's certificates (or the built-in Mozilla set), a timeout on connecting, HTTP/1.1, idle
/// connections kept 30 s. It follows no redirects.
pub(crate) fn https_client<B>() -> Result<Client<HttpsConnector<HttpConnector>, B>, ClientError>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider.clone())
    {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no system certificates found; outbound HTTPS trusts the built-in Mozilla set");
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(provider)
                .map_err(|e| ClientError(e.to_string()))?
        }
    };
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}

/// `voice-proxy/<version>`.
pub(crate) fn user_agent() -> HeaderValue {
    HeaderValue::from_static(concat!("voice-proxy/", env!("CARGO_PKG_VERSION")))
}

/// Whether `secret` is a Standard Webhooks signing secret: `whsec_` and base64.
pub fn is_signing_secret(secret: &str) -> bool {
    secret.starts_with("whsec_") && Webhook::new(secret).is_ok()
}

/// The innermost cause of a client error: "connection refused", "dns error: ...".
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
