//! voice-proxy's domain: phone numbers, pairings, the allocation policy, NCCOs, call records and
//! the callbacks that tell the marketplace about them.
//! Pure types and rules; no I/O.

pub mod allocation;
pub mod call;
pub mod call_options;
pub mod callbacks;
pub mod id;
pub mod ncco;
pub mod pairing;
pub mod phone;
pub mod pool;
pub mod redact;
pub mod routing;
pub mod text;

pub use call::{CallEvent, CallOutcome, CallProgress, CallRecord, CallStatus, EventRecord, Money};
pub use id::{ApiKeyId, CallId, EndpointId, MessageId, PairingId};
pub use ncco::Ncco;
pub use pairing::{NewPairing, PairingStatus, ParticipantRequest};
pub use phone::{CallerId, CountryCode, PhoneNumber, PhoneNumberError};
