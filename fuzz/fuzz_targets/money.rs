//! Amounts as Vonage writes them (`price`, `rate`): `Money::parse` on arbitrary text. Whatever
//! parses prints back (`Display`) to text that parses to the same amount, and prints that text
//! again unchanged (the printed form is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use voice_proxy_domain::Money;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Some(money) = Money::parse(&text) else {
        return;
    };
    let shown = money.to_string();
    let again = Money::parse(&shown)
        .unwrap_or_else(|| panic!("{shown:?} (from {text:?}) does not parse again"));
    assert_eq!(again, money, "{text:?} → {shown:?} → a different amount");
    assert_eq!(
        again.to_string(),
        shown,
        "Display of {text:?} is not canonical"
    );
    // Summing legs' prices must not panic either.
    let _ = money.checked_add(again);
});
