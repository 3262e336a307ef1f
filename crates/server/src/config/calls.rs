//! The call path: what callers hear, where the callee leg's events go, and how long an answer
//! may take.

use std::time::Duration;

use anyhow::bail;
use voice_proxy_domain::ncco::TTS_LANGUAGES;

use super::env::Env;

#[derive(Debug, Clone)]
pub struct CallSettings {
    pub no_route_message: String,
    pub pairing_ended_message: String,
    pub callee_unavailable_message: String,
    pub message_language: String,
    pub public_base_url: Option<String>,
    pub ring_timeout_seconds: u32,
    pub answer_db_timeout: Duration,
    pub answer_deadline: Duration,
}

impl CallSettings {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let message_language = env
            .string("MESSAGE_LANGUAGE")
            .map(|l| l.trim().to_owned())
            .unwrap_or_else(|| "en-US".to_owned());
        if !TTS_LANGUAGES.contains(&message_language.as_str()) {
            bail!(
                "MESSAGE_LANGUAGE={message_language:?} is not a language Vonage's text-to-speech \
                 speaks (every message would fail); use one of {}",
                TTS_LANGUAGES.join(", ")
            );
        }
        let public_base_url = env.string("PUBLIC_BASE_URL");
        if let Some(url) = &public_base_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            bail!("PUBLIC_BASE_URL must start with https:// or http://");
        }
        let message =
            |name: &str, default: &str| env.string(name).unwrap_or_else(|| default.to_owned());
        Ok(Self {
            no_route_message: message(
                "NO_ROUTE_MESSAGE",
                "The number you have called cannot be connected. Goodbye.",
            ),
            pairing_ended_message: message(
                "PAIRING_ENDED_MESSAGE",
                "This number is no longer connected to your contact. Please use the app to reach them. Goodbye.",
            ),
            callee_unavailable_message: message(
                "CALLEE_UNAVAILABLE_MESSAGE",
                "The person you are calling is not available. Please try again later.",
            ),
            message_language,
            public_base_url,
            ring_timeout_seconds: env.within("RING_TIMEOUT_SECONDS", 45, 3..=7200)?,
            answer_db_timeout: Duration::from_millis(env.parse("ANSWER_DB_TIMEOUT_MS", 300)?),
            // Vonage waits 5 s at most for the answer.
            answer_deadline: Duration::from_millis(env.within(
                "ANSWER_DEADLINE_MS",
                1000,
                50..=4000,
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::env::with;
    use super::*;

    #[test]
    fn the_language_must_be_one_vonage_speaks_and_times_are_bounded() -> anyhow::Result<()> {
        with(&[("MESSAGE_LANGUAGE", "cmn-TW")], |env| {
            assert_eq!(CallSettings::from_env(env)?.message_language, "cmn-TW");
            Ok(())
        })?;
        let err = with(&[("MESSAGE_LANGUAGE", "en-UK")], |env| {
            CallSettings::from_env(env).map(drop)
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("MESSAGE_LANGUAGE") && err.contains("en-GB"),
            "{err}"
        );
        for (name, value) in [
            ("RING_TIMEOUT_SECONDS", "2"),
            ("ANSWER_DEADLINE_MS", "5000"),
            ("PUBLIC_BASE_URL", "ftp://x"),
        ] {
            let err = with(&[(name, value)], |env| {
                CallSettings::from_env(env).map(drop)
            })
            .unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        Ok(())
    }
}
