//! Asking the marketplace about a call while the caller waits: whether to connect it (the
//! intercept) and what to do with a caller who has no pairing on the number they dialled (the
//! out-of-session request). Each question is one signed POST with a hard deadline; it is never
//! retried, because the call cannot wait for a retry.

use std::time::Duration;

use voice_proxy_domain::MessageId;
use voice_proxy_domain::callbacks::{InterceptDecision, OutOfSessionReply, ReplyError};

use crate::client::{SendError, Sender};

/// Where a question goes and how it is signed.
#[derive(Debug, Clone)]
pub struct QuestionSettings {
    pub url: String,
    /// A Standard Webhooks secret (`whsec_...`).
    pub secret: String,
    /// The most the call waits for the answer.
    pub timeout: Duration,
}

/// What the intercept decides when it gets no usable answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Allow,
    Deny,
}

impl OnFailure {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Self::Allow),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("{0}")]
    Send(SendError),
    #[error("answered HTTP {0}, not 200")]
    Status(u16),
    #[error("{0}")]
    Reply(#[from] ReplyError),
}

impl AskError {
    /// The metric label for this failure.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout(_) | Self::Send(SendError::Timeout(_)) => "timeout",
            Self::Send(_) => "error",
            Self::Status(_) => "status",
            Self::Reply(_) => "bad_reply",
        }
    }
}

/// One question to one URL.
#[derive(Clone)]
pub struct Question {
    settings: QuestionSettings,
    sender: Sender,
}

impl Question {
    pub fn new(settings: QuestionSettings, sender: Sender) -> Self {
        Self { settings, sender }
    }

    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// POSTs `body` and returns the body of a 200 answer, within `within` (at most the
    /// question's timeout).
    async fn ask(&self, body: &str, within: Duration) -> Result<bytes::Bytes, AskError> {
        let within = within.min(self.settings.timeout);
        if within.is_zero() {
            return Err(AskError::Timeout(self.settings.timeout));
        }
        let answer = self
            .sender
            .post(
                &self.settings.url,
                &MessageId::new().to_string(),
                body,
                std::slice::from_ref(&self.settings.secret),
                within,
            )
            .await
            .map_err(|e| match e {
                SendError::Timeout(_) => AskError::Timeout(self.settings.timeout),
                other => AskError::Send(other),
            })?;
        if answer.status != 200 {
            return Err(AskError::Status(answer.status));
        }
        Ok(answer.body)
    }

    /// Asks the intercept whether to connect a call (`body`: `call.intercept`).
    pub async fn intercept(
        &self,
        body: &str,
        within: Duration,
    ) -> Result<InterceptDecision, AskError> {
        let reply = self.ask(body, within).await?;
        Ok(InterceptDecision::parse(&reply)?)
    }

    /// Asks what to do with a call from someone without a pairing on the number they dialled
    /// (`body`: `call.out_of_session`).
    pub async fn out_of_session(
        &self,
        body: &str,
        within: Duration,
    ) -> Result<OutOfSessionReply, AskError> {
        let reply = self.ask(body, within).await?;
        Ok(OutOfSessionReply::parse(&reply)?)
    }
}

/// The intercept: a question, and what to do without an answer.
#[derive(Clone)]
pub struct Intercept {
    pub question: Question,
    pub on_failure: OnFailure,
}
