//! voice-proxy's outbound HTTP: telling the marketplace what happened, and asking it.
//!
//! - [`client`]: the one HTTP client, signing per Standard Webhooks;
//! - [`ask`]: questions asked while a caller waits (the intercept, the out-of-session request);
//! - [`dispatcher`]: sends the deliveries `voice_proxy_persistence::callbacks` holds, retries
//!   them on the schedule, records every attempt.
//!
//! What a message says is `voice_proxy_domain::callbacks`'; when it is written is the store's
//! (in the transaction of the change it tells).

pub mod ask;
pub mod client;
pub mod dispatcher;

pub use ask::{AskError, Intercept, OnFailure, Question, QuestionSettings};
pub use client::{Answer, SendError, Sender, is_signing_secret};
pub use dispatcher::{DispatchSettings, dispatch_forever};
