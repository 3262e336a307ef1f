//! The call path: what callers hear, where the callee leg's events go, how long an answer may
//! take, the default call options and PIN access.

use std::time::Duration;

use anyhow::{Context, bail};
use voice_proxy_domain::call_options::{
    CallOptions, MAX_CALL_SECONDS, MAX_RING_TIMEOUT_SECONDS, MIN_RING_TIMEOUT_SECONDS,
};
use voice_proxy_domain::ncco::TTS_LANGUAGES;
use voice_proxy_domain::pairing::{MAX_PIN_LENGTH, MIN_PIN_LENGTH};
use voice_proxy_http::PinSettings;

use super::env::Env;

#[derive(Debug, Clone)]
pub struct CallSettings {
    pub no_route_message: String,
    pub pairing_ended_message: String,
    pub callee_unavailable_message: String,
    pub message_language: String,
    pub public_base_url: Option<String>,
    /// `DEFAULT_ANNOUNCEMENT`, `DEFAULT_WHISPER`, `RECORD_CALLS`, `MAX_CALL_SECONDS`,
    /// `RING_TIMEOUT_SECONDS`.
    pub call_defaults: CallOptions,
    pub pin: PinSettings,
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
        let call_defaults = CallOptions {
            announcement: env.string("DEFAULT_ANNOUNCEMENT"),
            whisper: env.string("DEFAULT_WHISPER"),
            record: env.parse("RECORD_CALLS", false)?,
            max_call_seconds: env.within(
                "MAX_CALL_SECONDS",
                MAX_CALL_SECONDS,
                1..=MAX_CALL_SECONDS,
            )?,
            ring_timeout_seconds: env.within(
                "RING_TIMEOUT_SECONDS",
                45,
                MIN_RING_TIMEOUT_SECONDS..=MAX_RING_TIMEOUT_SECONDS,
            )?,
        };
        call_defaults
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("DEFAULT_ANNOUNCEMENT or DEFAULT_WHISPER is not valid")?;
        if let (Some(feature), None) = (call_defaults.needs_callback(), &public_base_url) {
            bail!(
                "{} needs PUBLIC_BASE_URL: Vonage calls this service back for it",
                match feature {
                    "whisper" => "DEFAULT_WHISPER",
                    _ => "RECORD_CALLS=true",
                }
            );
        }
        let pin = PinSettings {
            digits: env.within("PIN_LENGTH", 4, MIN_PIN_LENGTH..=MAX_PIN_LENGTH)?,
            attempts: env.within("PIN_ATTEMPTS", 3, 1..=10)?,
            prompt: message(
                "PIN_PROMPT_MESSAGE",
                "Please enter the PIN of the person you are calling for, then press the hash key.",
            ),
            retry: message(
                "PIN_RETRY_MESSAGE",
                "That PIN is not valid. Please try again, then press the hash key.",
            ),
        };
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
            call_defaults,
            pin,
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
        with(
            &[
                ("DEFAULT_ANNOUNCEMENT", "Calls may be recorded."),
                ("MAX_CALL_SECONDS", "1800"),
            ],
            |env| {
                let defaults = CallSettings::from_env(env)?.call_defaults;
                assert_eq!(
                    defaults.announcement.as_deref(),
                    Some("Calls may be recorded.")
                );
                assert_eq!(defaults.max_call_seconds, 1800);
                assert!(!defaults.record);
                Ok(())
            },
        )?;
        // What needs a callback needs the public URL.
        for (name, value) in [
            ("RECORD_CALLS", "true"),
            ("DEFAULT_WHISPER", "Your {label}"),
        ] {
            let err = with(&[(name, value)], |env| {
                CallSettings::from_env(env).map(drop)
            })
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("PUBLIC_BASE_URL") && err.contains(name),
                "{err}"
            );
            with(
                &[
                    (name, value),
                    ("PUBLIC_BASE_URL", "https://proxy.example.com"),
                ],
                |env| CallSettings::from_env(env).map(drop),
            )?;
        }
        for (name, value) in [
            ("RING_TIMEOUT_SECONDS", "2"),
            ("MAX_CALL_SECONDS", "7201"),
            ("RECORD_CALLS", "maybe"),
            ("PIN_LENGTH", "3"),
            ("PIN_ATTEMPTS", "0"),
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
