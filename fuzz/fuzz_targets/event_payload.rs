//! The event webhook's body: bytes → `serde_json::Value` → `CallEvent::parse`, exactly what
//! `POST /webhooks/event` does with a JSON body.
//!
//! For an event that parses, besides not panicking:
//! - `dedup_key()` survives a serde round trip of the payload (the payload is stored and may be
//!   delivered again, re-serialised), and the round-tripped payload still parses;
//! - `CallProgress::fold` is idempotent: folding `[event]` and `[event, event]` (a retried
//!   delivery) gives the same progress, whichever leg is taken as the inbound one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use voice_proxy_domain::{CallEvent, CallProgress};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(event) = CallEvent::parse(value) else {
        return;
    };
    let key = event.dedup_key();

    let bytes = serde_json::to_vec(&event.payload).expect("a Value always serialises");
    let value_again: Value =
        serde_json::from_slice(&bytes).expect("serde_json reads back what it wrote");
    let again = CallEvent::parse(value_again).unwrap_or_else(|e| {
        panic!(
            "the round-tripped payload no longer parses: {e}\n  payload: {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(
        again.dedup_key(),
        key,
        "dedup_key changed across a serde round trip\n  payload: {}",
        String::from_utf8_lossy(&bytes)
    );

    let once = std::slice::from_ref(&event);
    let twice = [event.clone(), event.clone()];
    let leg = event.leg_uuid.as_deref();
    for inbound in [None, leg, Some("some-other-leg")] {
        assert_eq!(
            CallProgress::fold(inbound, once),
            CallProgress::fold(inbound, &twice),
            "folding the same event twice differs from once (inbound leg {inbound:?})\n  payload: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
});
