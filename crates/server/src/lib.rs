//! The voice-proxy service: configuration, telemetry and start-up, shared by the binary and the
//! integration tests.

pub mod config;
pub mod startup;
pub mod supervise;
pub mod telemetry;
