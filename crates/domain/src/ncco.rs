//! NCCOs: the JSON array of actions the answer webhook returns to Vonage.
//!
//! Only the two actions this proxy needs are modelled: `connect` to a phone endpoint, and `talk`.

use serde::Serialize;

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
        endpoint: Vec<Endpoint>,
    },
    #[serde(rename_all = "camelCase")]
    Talk { text: String, language: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Endpoint {
    Phone { number: String },
}

impl Ncco {
    /// Connects the caller to `callee`, showing `shown_number` (the callee's own proxy number, so
    /// that a call back reaches the caller again). With an `event_url`, the connect is
    /// synchronous: the callee leg's events go there, and what it answers is played.
    pub fn connect(
        callee: &PhoneNumber,
        shown_number: &PhoneNumber,
        event_url: Option<String>,
        ring_timeout_seconds: u32,
    ) -> Self {
        Self(vec![Action::Connect {
            from: shown_number.expose().to_owned(),
            event_type: event_url.as_ref().map(|_| "synchronous"),
            event_url: event_url.map(|u| vec![u]),
            timeout: ring_timeout_seconds,
            endpoint: vec![Endpoint::Phone {
                number: callee.expose().to_owned(),
            }],
        }])
    }

    /// Plays `text` to the caller, then Vonage hangs up.
    pub fn talk(text: &str, language: &str) -> Self {
        Self(vec![Action::Talk {
            text: text.chars().take(MAX_TALK_TEXT_CHARS).collect(),
            language: language.to_owned(),
        }])
    }

    pub fn actions(&self) -> &[Action] {
        &self.0
    }

    pub fn is_connect(&self) -> bool {
        matches!(self.0.first(), Some(Action::Connect { .. }))
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
        let ncco = Ncco::connect(
            &callee,
            &shown,
            Some("https://proxy.example.com/webhooks/event".into()),
            45,
        );
        assert_eq!(
            serde_json::to_value(&ncco).unwrap(),
            json!([{
                "action": "connect",
                "from": "447400123789",
                "eventType": "synchronous",
                "eventUrl": ["https://proxy.example.com/webhooks/event"],
                "timeout": 45,
                "endpoint": [{"type": "phone", "number": "447400123456"}]
            }])
        );
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
