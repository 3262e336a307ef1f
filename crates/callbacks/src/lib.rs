//! voice-proxy's outbound HTTP: telling the marketplace what happened, and asking it; fetching
//! call recordings from Vonage.
//!
//! - [`client`]: the one HTTP client, signing per Standard Webhooks;
//! - [`ask`]: questions asked while a caller waits (the intercept, the out-of-session request);
//! - [`dispatcher`]: sends the deliveries `voice_proxy_persistence::callbacks` holds, retries
//!   them on the schedule, records every attempt;
//! - [`vonage`]: Vonage's API as the application (RS256 application JWTs), limited to Vonage's
//!   API hosts;
//! - [`archive`]: downloads recordings into the archive directory, and deletes them after their
//!   retention.
//!
//! What a message says is `voice_proxy_domain::callbacks`'; when it is written is the store's
//! (in the transaction of the change it tells).

pub mod archive;
pub mod ask;
pub mod client;
pub mod dispatcher;
pub mod vonage;

pub use ask::{AskError, Intercept, OnFailure, Question, QuestionSettings};
pub use client::{Answer, SendError, Sender, is_signing_secret};
pub use dispatcher::{DispatchSettings, dispatch_forever};
pub use vonage::{ApiOrigin, Credentials, VonageClient};
