//! NCCOs: the JSON array of actions the answer webhook returns to Vonage.
//!
//! Only the actions this proxy uses are modelled: `connect` to a phone endpoint, `talk`,
//! `record` and `input` (keypad digits).

use serde::Serialize;

use crate::call_options::CallOptions;
use crate::phone::PhoneNumber;

/// Vonage's limit on the text of a `talk` action.
pub const MAX_TALK_TEXT_CHARS: usize = 1500;

/// The languages Vonage's text-to-speech speaks (the `language` of a `talk` action), as its
/// Voice API documents them (the list in Vonage's Java SDK, `TextToSpeechLanguage`, 2026). A
/// `talk` in any other language fails, and the caller hears nothing.
pub const TTS_LANGUAGES: [&str; 67] = [
    "af-ZA",
    "ar",
    "bg-BG",
    "bn-IN",
    "ca-ES",
    "cmn-CN",
    "cmn-TW",
    "cs-CZ",
    "cy-GB",
    "da-DK",
    "de-AT",
    "de-DE",
    "el-GR",
    "en-AU",
    "en-GB",
    "en-GB-SCT",
    "en-GB-WLS",
    "en-IE",
    "en-IN",
    "en-NZ",
    "en-US",
    "en-ZA",
    "es-CO",
    "es-ES",
    "es-MX",
    "es-US",
    "eu-ES",
    "fi-FI",
    "fil-PH",
    "fr-CA",
    "fr-FR",
    "gl-ES",
    "gu-IN",
    "he-IL",
    "hi-IN",
    "hu-HU",
    "id-ID",
    "is-IS",
    "it-IT",
    "ja-JP",
    "kn-IN",
    "ko-KR",
    "lt-LT",
    "lv-LV",
    "ml-IN",
    "mr-IN",
    "ms-MY",
    "nb-NO",
    "nl-BE",
    "nl-NL",
    "no-NO",
    "pa-IN",
    "pl-PL",
    "pt-BR",
    "pt-PT",
    "ro-RO",
    "ru-RU",
    "sk-SK",
    "sr-RS",
    "sv-SE",
    "ta-IN",
    "te-IN",
    "th-TH",
    "tr-TR",
    "uk-UA",
    "vi-VN",
    "yue-CN",
];

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Ncco(Vec<Action>);

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    #[serde(rename_all = "camelCase")]
    Connect {
        /// The caller id the callee sees: one of our pool numbers.
        from: String,
        /// `synchronous` with an `eventUrl`: Vonage waits for what the event webhook answers to
        /// the callee leg's state changes, so it can tell the caller that nobody answered.
        #[serde(skip_serializing_if = "Option::is_none")]
        event_type: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        event_url: Option<Vec<String>>,
        /// Seconds to ring before giving up.
        timeout: u32,
        /// The longest the call may last, in seconds.
        limit: u32,
        endpoint: Vec<Endpoint>,
    },
    #[serde(rename_all = "camelCase")]
    Talk {
        text: String,
        language: String,
        /// Whether a key press stops the speech (so the caller can type a PIN over a prompt).
        #[serde(skip_serializing_if = "Option::is_none")]
        barge_in: Option<bool>,
    },
    /// Records the conversation from here on, both sides, one channel each; the recording's
    /// event (with its URL) goes to `event_url`.
    #[serde(rename_all = "camelCase")]
    Record {
        event_url: Vec<String>,
        split: &'static str,
        channels: u8,
        format: &'static str,
    },
    /// Collects keypad digits; what was typed goes to `event_url`, whose answer is the next NCCO.
    #[serde(rename_all = "camelCase")]
    Input {
        #[serde(rename = "type")]
        kinds: Vec<&'static str>,
        dtmf: Dtmf,
        event_url: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dtmf {
    pub max_digits: u8,
    pub submit_on_hash: bool,
    /// Seconds of silence after the last key before the digits are sent.
    pub time_out: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Endpoint {
    #[serde(rename_all = "camelCase")]
    Phone {
        number: String,
        /// Fetched when the callee picks up; its NCCO (the whisper) plays to the callee alone,
        /// before the two legs are bridged.
        #[serde(skip_serializing_if = "Option::is_none")]
        on_answer: Option<OnAnswer>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnAnswer {
    pub url: String,
}

/// A routed call: who is connected to whom, and how.
#[derive(Debug, Clone)]
pub struct RoutedCall<'a> {
    pub callee: &'a PhoneNumber,
    /// The callee's own proxy number, so that a call back reaches the caller again.
    pub shown_number: &'a PhoneNumber,
    /// Where the callee leg's events go (a synchronous connect); `None` for the application's.
    pub event_url: Option<String>,
    pub options: &'a CallOptions,
    /// Our whisper webhook for this call, with the rendered whisper; needed for a whisper.
    pub whisper_url: Option<String>,
    /// Our recording webhook; needed to record.
    pub recording_url: Option<String>,
    /// The language of the announcement.
    pub language: &'a str,
}

/// Seconds the PIN prompt waits after the last key before it takes what was typed.
pub const PIN_INPUT_TIMEOUT_SECONDS: u8 = 5;

impl Ncco {
    /// A routed call with its options: the announcement to the caller, the recording, then the
    /// connect with its limit and ring timeout, and the whisper on the callee's answer.
    pub fn routed(call: RoutedCall<'_>) -> Self {
        let options = call.options;
        let mut actions = Vec::with_capacity(3);
        if let Some(text) = &options.announcement {
            actions.push(talk_action(text, call.language, None));
        }
        if let (true, Some(url)) = (options.record, call.recording_url) {
            actions.push(Action::Record {
                event_url: vec![url],
                split: "conversation",
                channels: 2,
                format: "mp3",
            });
        }
        let on_answer = options
            .whisper
            .as_ref()
            .and(call.whisper_url)
            .map(|url| OnAnswer { url });
        actions.push(connect_action(
            call.callee,
            call.shown_number,
            call.event_url,
            options.ring_timeout_seconds,
            options.max_call_seconds,
            on_answer,
        ));
        Self(actions)
    }

    /// Plays `text` to the caller, then Vonage hangs up.
    pub fn talk(text: &str, language: &str) -> Self {
        Self(vec![talk_action(text, language, None)])
    }

    /// Asks for a PIN: `prompt` (which a key press cuts short), then up to `digits` keys, ended
    /// early by `#`; what was typed goes to `event_url`.
    pub fn pin_prompt(prompt: &str, language: &str, digits: u8, event_url: String) -> Self {
        Self(vec![
            talk_action(prompt, language, Some(true)),
            Action::Input {
                kinds: vec!["dtmf"],
                dtmf: Dtmf {
                    max_digits: digits,
                    submit_on_hash: true,
                    time_out: PIN_INPUT_TIMEOUT_SECONDS,
                },
                event_url: vec![event_url],
            },
        ])
    }

    pub fn actions(&self) -> &[Action] {
        &self.0
    }

    /// Whether the call is connected to someone.
    pub fn is_connect(&self) -> bool {
        self.0.iter().any(|a| matches!(a, Action::Connect { .. }))
    }
}

fn talk_action(text: &str, language: &str, barge_in: Option<bool>) -> Action {
    Action::Talk {
        text: text.chars().take(MAX_TALK_TEXT_CHARS).collect(),
        language: language.to_owned(),
        barge_in,
    }
}

fn connect_action(
    callee: &PhoneNumber,
    shown_number: &PhoneNumber,
    event_url: Option<String>,
    timeout: u32,
    limit: u32,
    on_answer: Option<OnAnswer>,
) -> Action {
    Action::Connect {
        from: shown_number.expose().to_owned(),
        event_type: event_url.as_ref().map(|_| "synchronous"),
        event_url: event_url.map(|u| vec![u]),
        timeout,
        limit,
        endpoint: vec![Endpoint::Phone {
            number: callee.expose().to_owned(),
            on_answer,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn connect_shows_the_callees_proxy_number_and_dials_the_real_one() {
        let callee = PhoneNumber::parse("447400123456").unwrap();
        let shown = PhoneNumber::parse("447400123789").unwrap();
        let options = CallOptions {
            announcement: None,
            whisper: None,
            record: false,
            max_call_seconds: 600,
            ring_timeout_seconds: 45,
        };
        let ncco = Ncco::routed(RoutedCall {
            callee: &callee,
            shown_number: &shown,
            event_url: Some("https://proxy.example.com/webhooks/event".into()),
            options: &options,
            whisper_url: Some("https://proxy.example.com/webhooks/whisper?text=x".into()),
            recording_url: Some("https://proxy.example.com/webhooks/recording".into()),
            language: "en-US",
        });
        assert_eq!(
            serde_json::to_value(&ncco).unwrap(),
            json!([{
                "action": "connect",
                "from": "447400123789",
                "eventType": "synchronous",
                "eventUrl": ["https://proxy.example.com/webhooks/event"],
                "timeout": 45,
                "limit": 600,
                "endpoint": [{"type": "phone", "number": "447400123456"}]
            }])
        );
        assert!(ncco.is_connect());
    }

    #[test]
    fn talk_is_cut_to_vonages_limit() {
        let ncco = Ncco::talk(&"a".repeat(2000), "en-US");
        let v = serde_json::to_value(&ncco).unwrap();
        assert_eq!(v[0]["action"], "talk");
        assert_eq!(v[0]["text"].as_str().unwrap().len(), MAX_TALK_TEXT_CHARS);
        assert!(!ncco.is_connect());
    }
}
