//! voice-proxy's domain: phone numbers, pairings, the allocation policy, NCCOs and call records.
//! Pure types and rules; no I/O.

pub mod allocation;
pub mod call;
pub mod id;
pub mod ncco;
pub mod pairing;
pub mod phone;
pub mod text;

pub use call::{CallEvent, CallId, CallOutcome, CallProgress, CallStatus, Money};
pub use ncco::Ncco;
pub use pairing::{NewPairing, PairingId, PairingStatus, ParticipantRequest};
pub use phone::{CallerId, CountryCode, PhoneNumber, PhoneNumberError};
