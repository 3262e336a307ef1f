//! voice-proxy's outbound HTTP: telling the marketplace what happened, and asking it.
//!
//! - [`client`]: the one HTTP client, signing per Standard Webhooks;
//! - [`dispatcher`]: sends the deliveries `voice_proxy_persistence::callbacks` holds, retries
//!   them on the schedule, records every attempt.
//!
//! What a message says is `voice_proxy_domain::callbacks`'; when it is written is the store's
//! (in the transaction of the change it tells).

pub mod client;
pub mod dispatcher;

pub use client::{Answer, SendError, Sender};
pub use dispatcher::{DispatchSettings, dispatch_forever};
