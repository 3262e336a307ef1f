//! Finding people's phone numbers in what Vonage sent, so that retention can replace them: the
//! rule the service applies to its dead-letter file, and the database (migration V11) to stored
//! events.

/// Whether a value in an event could be a person's phone number: E.164 digits (7 to 15, not
/// starting with 0), with or without a leading `+`.
pub fn looks_like_phone_number(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Keys of Vonage's events whose scalar values are never a person's number, though they may be
/// digits: a recording's size in bytes, a duration, a price, a SIP code, a network code, and the
/// identifiers (a uuid may have a group of digits only).
pub const NOT_NUMBER_KEYS: [&str; 14] = [
    "size",
    "duration",
    "price",
    "rate",
    "sip_code",
    "network",
    "uuid",
    "call_uuid",
    "conversation_uuid",
    "conversation_uuid_from",
    "conversation_uuid_to",
    "recording_uuid",
    "recording_url",
    "region_url",
];

/// The phone numbers written in `text`: runs of 7 to 15 digits not starting with 0, with no
/// digit right before or after, optionally written with `+` or `00` before them (`16465550101`,
/// `+16465550101`, `0016465550101`, inside `sip:+16465550101@host` or a sentence). Returns, for
/// each, the byte range of what is written and the digits. The same rule as the database's
/// `voice_proxy_redact_text` (migration V11):
/// `(?<![0-9+])(\+|00)?([1-9][0-9]{6,14})(?![0-9])`.
pub fn numbers_in(text: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let run = &text[start..i];
        let plus = start > 0 && bytes[start - 1] == b'+';
        // What is before the run (or its `+`) must not be a digit or another `+`.
        let before = if plus {
            start.checked_sub(2)
        } else {
            start.checked_sub(1)
        };
        if before.is_some_and(|b| bytes[b].is_ascii_digit() || bytes[b] == b'+') {
            continue;
        }
        let number = |d: &str| (7..=15).contains(&d.len()) && !d.starts_with('0');
        if !plus && run.len() > 2 && run.starts_with("00") && number(&run[2..]) {
            found.push((start..i, &run[2..]));
        } else if number(run) {
            found.push((if plus { start - 1 } else { start }..i, run));
        }
    }
    found
}

/// `text` with every phone number in it ([`numbers_in`]) replaced by `replace(digits)`; `None`
/// when it holds none.
pub fn redact_text(text: &str, replace: &mut dyn FnMut(&str) -> String) -> Option<String> {
    let found = numbers_in(text);
    if found.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (range, digits) in found {
        out.push_str(&text[at..range.start]);
        out.push_str(&replace(digits));
        at = range.end;
    }
    out.push_str(&text[at..]);
    Some(out)
}

/// Replaces, anywhere in a JSON value (nested objects and arrays), every phone number by
/// `replace(digits)`: in strings wherever it is written ([`numbers_in`]), and JSON numbers that
/// are one. Scalar values under [`NOT_NUMBER_KEYS`] stay. Returns how many values it changed.
pub fn redact_numbers(
    value: &mut serde_json::Value,
    replace: &mut dyn FnMut(&str) -> String,
) -> usize {
    use serde_json::Value;
    match value {
        Value::String(s) => match redact_text(s, replace) {
            Some(redacted) => {
                *s = redacted;
                1
            }
            None => 0,
        },
        Value::Number(n) if looks_like_phone_number(&n.to_string()) => {
            *value = Value::String(replace(&n.to_string()));
            1
        }
        Value::Array(items) => items.iter_mut().map(|v| redact_numbers(v, replace)).sum(),
        Value::Object(map) => map
            .iter_mut()
            .filter(|(k, v)| {
                !NOT_NUMBER_KEYS.contains(&k.as_str()) || v.is_object() || v.is_array()
            })
            .map(|(_, v)| redact_numbers(v, replace))
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_redacted_wherever_they_are_in_an_event() {
        let mut event = serde_json::json!({
            "from": "447700900456", "to": 447700900123_u64, "size": 12345678,
            "duration": "1234567", "headers": {"x-caller": "+16465550101"},
            "list": [16465550102_u64, "CON-1", "0123456789"], "network": "23415",
            "uri": "sip:+16465550101@sip.example.com", "tel": "tel:+16465550102",
            "reason": "Unable to connect to 16465550102.", "intl": "0016465550101",
            "conversation_uuid": "CON-12345678-aaaa-bbbb-cccc-123456789012",
            "long": "1234567890123456789", "network_info": {"network": {"x": "16465550103"}},
        });
        let n = redact_numbers(&mut event, &mut |s| format!("h({s})"));
        assert_eq!(n, 9);
        assert_eq!(
            event,
            serde_json::json!({
                "from": "h(447700900456)", "to": "h(447700900123)", "size": 12345678,
                "duration": "1234567", "headers": {"x-caller": "h(16465550101)"},
                "list": ["h(16465550102)", "CON-1", "0123456789"], "network": "23415",
                "uri": "sip:h(16465550101)@sip.example.com", "tel": "tel:h(16465550102)",
                "reason": "Unable to connect to h(16465550102).", "intl": "h(16465550101)",
                "conversation_uuid": "CON-12345678-aaaa-bbbb-cccc-123456789012",
                "long": "1234567890123456789", "network_info": {"network": {"x": "h(16465550103)"}},
            })
        );
    }

    #[test]
    fn a_number_is_found_only_on_its_own() {
        let digits = |t: &str| -> Vec<String> {
            numbers_in(t)
                .into_iter()
                .map(|(_, d)| d.to_owned())
                .collect()
        };
        assert_eq!(digits("call 16465550101 now"), ["16465550101"]);
        assert_eq!(digits("a+16465550101b"), ["16465550101"]);
        assert_eq!(digits("++16465550101"), Vec::<String>::new());
        assert_eq!(digits("123456"), Vec::<String>::new(), "too short");
        assert_eq!(digits("1234567890123456"), Vec::<String>::new(), "too long");
        assert_eq!(digits("0123456789"), Vec::<String>::new(), "starts with 0");
        assert_eq!(digits("2024-05-01T10:00:05.000Z"), Vec::<String>::new());
        assert_eq!(
            digits("1646555010 and 447700900123"),
            ["1646555010", "447700900123"]
        );
    }
}
