//! Callbacks to the marketplace, as stored: its endpoints and their secrets ([`endpoints`]), the
//! messages written with the changes they tell ([`outbox`]), and their deliveries with every
//! attempt ([`deliveries`]). Sending them is the `voice-proxy-callbacks` crate's.

pub mod deliveries;
pub mod endpoints;
pub mod outbox;

pub use outbox::Outbox;
