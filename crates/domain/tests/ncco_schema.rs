//! Every NCCO the service can produce, for every combination of call options, checked against
//! Vonage's NCCO JSON Schema (`vonage-ncco-schema.json`: an unmodified copy of
//! `json-schemas/ncco-schema.json` from Nexmo/api-specification, MIT licence, commit feaf3168,
//! 2021-05-19), and, for the fields that schema predates (`onAnswer`, `channels`, the `dtmf`
//! object, `bargeIn` on a prompt), against the rules of Vonage's current NCCO reference.

use serde_json::{Value, json};
use voice_proxy_domain::Ncco;
use voice_proxy_domain::call_options::{CallOptions, MAX_CALL_SECONDS};
use voice_proxy_domain::ncco::RoutedCall;
use voice_proxy_domain::phone::PhoneNumber;

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(include_str!("vonage-ncco-schema.json")).unwrap();
    jsonschema::draft4::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

/// The schema's verdict and the current reference's rules for the newer fields; the errors, if
/// any.
fn problems(validator: &jsonschema::Validator, ncco: &Value) -> Vec<String> {
    let mut out: Vec<String> = validator
        .iter_errors(ncco)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    for action in ncco.as_array().into_iter().flatten() {
        let known: &[&str] = match action["action"].as_str() {
            Some("connect") => &[
                "action",
                "from",
                "eventType",
                "eventUrl",
                "timeout",
                "limit",
                "endpoint",
            ],
            Some("talk") => &["action", "text", "language", "bargeIn"],
            Some("record") => &["action", "eventUrl", "split", "channels", "format"],
            Some("input") => &["action", "type", "dtmf", "eventUrl"],
            other => {
                out.push(format!("an action this service never sends: {other:?}"));
                continue;
            }
        };
        for key in action.as_object().unwrap().keys() {
            if !known.contains(&key.as_str()) {
                out.push(format!("unexpected key {key} in {action}"));
            }
        }
        match action["action"].as_str() {
            Some("connect") => {
                if action["timeout"]
                    .as_u64()
                    .is_none_or(|t| !(3..=7200).contains(&t))
                {
                    out.push("connect.timeout must be 3 to 7200".into());
                }
                if let Some(limit) = action.get("limit")
                    && limit.as_u64().is_none_or(|l| !(1..=7200).contains(&l))
                {
                    out.push("connect.limit must be 1 to 7200".into());
                }
                let endpoints = action["endpoint"].as_array().unwrap();
                if endpoints.len() != 1 {
                    out.push("connect has exactly one endpoint".into());
                }
                for e in endpoints {
                    for key in e.as_object().unwrap().keys() {
                        if !["type", "number", "onAnswer"].contains(&key.as_str()) {
                            out.push(format!("unexpected endpoint key {key}"));
                        }
                    }
                    if let Some(on_answer) = e.get("onAnswer") {
                        let url = on_answer["url"].as_str().unwrap_or("");
                        if !(url.starts_with("https://") || url.starts_with("http://"))
                            || on_answer.as_object().unwrap().len() != 1
                        {
                            out.push(format!("onAnswer must be {{url}} with an http(s) URL: {e}"));
                        }
                    }
                }
            }
            Some("record")
                if action["channels"]
                    .as_u64()
                    .is_none_or(|c| !(1..=32).contains(&c))
                    || action["split"] != "conversation" =>
            {
                out.push("record.channels is 1 to 32, with split".into());
            }
            Some("input") => {
                if action["type"] != json!(["dtmf"]) {
                    out.push("input.type must be [\"dtmf\"]".into());
                }
                let dtmf = &action["dtmf"];
                let ok = dtmf["maxDigits"]
                    .as_u64()
                    .is_some_and(|d| (1..=20).contains(&d))
                    && dtmf["timeOut"].as_u64().is_some_and(|t| t <= 10)
                    && dtmf["submitOnHash"].is_boolean()
                    && dtmf.as_object().unwrap().len() == 3;
                if !ok {
                    out.push(format!("input.dtmf out of bounds: {dtmf}"));
                }
                if action["eventUrl"].as_array().is_none_or(|u| u.len() != 1) {
                    out.push("input.eventUrl is one URL".into());
                }
            }
            Some("talk") if action.get("bargeIn").is_some_and(|b| !b.is_boolean()) => {
                out.push("talk.bargeIn is a boolean".into());
            }
            _ => {}
        }
    }
    out
}

fn number(n: &str) -> PhoneNumber {
    PhoneNumber::parse(n).unwrap()
}

#[test]
fn every_routed_call_ncco_is_valid_for_every_combination_of_options() {
    let validator = validator();
    let callee = number("447400123456");
    let shown = number("447400123789");
    let base = "https://proxy.example.com";
    let mut checked = 0;
    for announcement in [None, Some("This call may be recorded for quality.")] {
        for whisper in [None, Some("Your passenger for ride 42")] {
            for record in [false, true] {
                for synchronous in [false, true] {
                    for max_call_seconds in [1, 1800, MAX_CALL_SECONDS] {
                        for ring_timeout_seconds in [3, 45, 7200] {
                            let options = CallOptions {
                                announcement: announcement.map(str::to_owned),
                                whisper: whisper.map(str::to_owned),
                                record,
                                max_call_seconds,
                                ring_timeout_seconds,
                            };
                            let ncco = Ncco::routed(RoutedCall {
                                callee: &callee,
                                shown_number: &shown,
                                event_url: synchronous.then(|| format!("{base}/webhooks/event")),
                                options: &options,
                                whisper_url: Some(format!(
                                    "{base}/webhooks/whisper?text=Your+passenger"
                                )),
                                recording_url: Some(format!("{base}/webhooks/recording")),
                                language: "en-US",
                            });
                            let value = serde_json::to_value(&ncco).unwrap();
                            let found = problems(&validator, &value);
                            assert!(found.is_empty(), "{value}: {found:?}");
                            // What was asked for is there, in order.
                            let actions: Vec<&str> = value
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|a| a["action"].as_str().unwrap())
                                .collect();
                            let mut expected = vec![];
                            if announcement.is_some() {
                                expected.push("talk");
                            }
                            if record {
                                expected.push("record");
                            }
                            expected.push("connect");
                            assert_eq!(actions, expected);
                            let connect = value.as_array().unwrap().last().unwrap();
                            assert_eq!(connect["limit"], max_call_seconds);
                            assert_eq!(connect["timeout"], ring_timeout_seconds);
                            assert_eq!(
                                connect["endpoint"][0].get("onAnswer").is_some(),
                                whisper.is_some()
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 2 * 2 * 2 * 2 * 3 * 3);
}

#[test]
fn messages_whispers_and_pin_prompts_are_valid() {
    let validator = validator();
    let samples = [
        Ncco::talk("Sorry, this number cannot connect your call.", "en-US"),
        Ncco::talk(&"a".repeat(3000), "en-GB"),
        Ncco::pin_prompt(
            "Please enter your PIN, then press hash.",
            "en-US",
            4,
            "https://proxy.example.com/webhooks/pin?attempt=1".into(),
        ),
        Ncco::pin_prompt(
            "Please enter your PIN.",
            "en-US",
            8,
            "http://localhost:8080/webhooks/pin".into(),
        ),
    ];
    for ncco in samples {
        let value = serde_json::to_value(&ncco).unwrap();
        let found = problems(&validator, &value);
        assert!(found.is_empty(), "{value}: {found:?}");
    }
}

/// The checks above are not vacuous: what Vonage would refuse, they refuse.
#[test]
fn the_checks_refuse_what_vonage_refuses() {
    let validator = validator();
    for bad in [
        json!([]),
        json!([{"action": "connect", "from": "447400123789", "timeout": 45, "limit": 7201,
                "endpoint": [{"type": "phone", "number": "447400123456"}]}]),
        json!([{"action": "connect", "from": "+447400123789", "timeout": 45,
                "endpoint": [{"type": "phone", "number": "447400123456"}]}]),
        json!([{"action": "connect", "timeout": 45,
                "endpoint": [{"type": "phone", "number": "447400123456",
                              "onAnswer": {"url": "ftp://x"}}]}]),
        json!([{"action": "talk", "text": "a".repeat(1501)}]),
        json!([{"action": "talk", "text": "hi", "language": "xx-XX"}]),
        json!([{"action": "record", "format": "flac", "eventUrl": ["https://x.example"],
                "split": "conversation", "channels": 2}]),
        json!([{"action": "record", "eventUrl": ["https://x.example"], "channels": 2}]),
        json!([{"action": "input", "type": ["dtmf"], "eventUrl": ["https://x.example"],
                "dtmf": {"maxDigits": 21, "submitOnHash": true, "timeOut": 5}}]),
        json!([{"action": "stream", "streamUrl": ["https://x.example/a.mp3"]}]),
    ] {
        assert!(!problems(&validator, &bad).is_empty(), "accepted {bad}");
    }
}
