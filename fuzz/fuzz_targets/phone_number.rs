//! Phone numbers as they arrive from the admin API and the answer webhook.
//!
//! Arbitrary bytes, read as text, go through `PhoneNumber::parse`, `CallerId::from_webhook` and
//! `mask_digit_runs`. Besides not panicking:
//! - a parsed number's `expose()` is 6 to 15 ASCII digits, parsing it again gives the same number,
//!   and neither `Display` nor `Debug` shows the full digits;
//! - a caller id taken as a number is 6 to 15 ASCII digits, and its `Debug` hides them;
//! - `mask_digit_runs` leaves no run of five or more ASCII digits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voice_proxy_domain::phone::mask_digit_runs;
use voice_proxy_domain::{CallerId, PhoneNumber};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text: &str = &text;

    if let Ok(number) = PhoneNumber::parse(text) {
        let digits = number.expose();
        assert!(
            digits.bytes().all(|b| b.is_ascii_digit()),
            "expose() holds a non-digit: {digits:?} (input {text:?})"
        );
        assert!(
            (6..=15).contains(&digits.len()),
            "expose() is {} digits long: {digits:?} (input {text:?})",
            digits.len()
        );
        let again = PhoneNumber::parse(digits).unwrap_or_else(|e| {
            panic!("expose() {digits:?} does not parse again: {e} (input {text:?})")
        });
        assert_eq!(
            again, number,
            "re-parsing expose() changed the number (input {text:?})"
        );
        for shown in [number.to_string(), format!("{number:?}"), number.masked()] {
            assert!(
                !shown.contains(digits),
                "{shown:?} shows the full number {digits:?} (input {text:?})"
            );
        }
        // Reached for every stored number (pool reports); must not panic either.
        let _ = number.country();
    }

    for from in [Some(text), None] {
        if let CallerId::Number(d) = CallerId::from_webhook(from, None, None) {
            assert!(
                (6..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()),
                "caller id {d:?} is not 6 to 15 digits (input {text:?})"
            );
            let shown = format!("{:?}", CallerId::Number(d.clone()));
            assert!(!shown.contains(&d), "{shown:?} shows the caller's number");
        }
    }

    let masked = mask_digit_runs(text);
    let mut run = 0usize;
    for b in masked.bytes() {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        assert!(
            run < 5,
            "mask_digit_runs left a run of 5+ digits: {masked:?} (input {text:?})"
        );
    }
});
