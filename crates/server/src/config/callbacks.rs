//! Callbacks to the marketplace: where they may go, how they are retried, how many are sent at
//! once.

use std::time::Duration;

use voice_proxy_callbacks::{DispatchSettings, OnFailure, QuestionSettings, is_signing_secret};
use voice_proxy_domain::callbacks::{CallbackUrl, RetrySchedule};

use super::env::Env;

#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// `WEBHOOK_ALLOW_HTTP`: whether endpoint URLs may be plain `http://` (development and
    /// tests); by default only `https://`.
    pub allow_http: bool,
    /// `WEBHOOK_RETRY_SCHEDULE`, `WEBHOOK_TIMEOUT_MS`, `WEBHOOK_CONCURRENCY`,
    /// `WEBHOOK_ENDPOINT_CONCURRENCY`, `WEBHOOK_POLL_INTERVAL_MS`.
    pub dispatch: DispatchSettings,
    /// `INTERCEPT_URL`, `INTERCEPT_SECRET`, `INTERCEPT_TIMEOUT_MS` (default 300),
    /// `INTERCEPT_ON_FAILURE` (`allow`, the default, or `deny`); none without the URL.
    pub intercept: Option<(QuestionSettings, OnFailure)>,
    /// `OUT_OF_SESSION_URL`, `OUT_OF_SESSION_SECRET`, `OUT_OF_SESSION_TIMEOUT_MS` (default 500);
    /// none without the URL.
    pub out_of_session: Option<QuestionSettings>,
}

/// The longest a question may hold up the answer: Vonage waits a few seconds for it, and the
/// caller hears nothing meanwhile.
const MAX_QUESTION_MS: u64 = 3000;

/// A question's URL, secret and deadline, from `{prefix}_URL`, `{prefix}_SECRET` and
/// `{prefix}_TIMEOUT_MS`; none when the URL is unset. A URL without a secret is an error: a
/// question is never sent unsigned.
fn question(
    env: &Env,
    prefix: &str,
    default_timeout_ms: u64,
    allow_http: bool,
) -> anyhow::Result<Option<QuestionSettings>> {
    let (url_name, secret_name, timeout_name) = (
        format!("{prefix}_URL"),
        format!("{prefix}_SECRET"),
        format!("{prefix}_TIMEOUT_MS"),
    );
    let Some(url) = env.string(&url_name) else {
        return Ok(None);
    };
    let url = CallbackUrl::parse(url.trim(), allow_http)
        .map_err(|e| anyhow::anyhow!("{url_name}: {e}"))?;
    let secret = env.string(&secret_name).map(|s| s.trim().to_owned());
    let secret = match secret {
        Some(s) if is_signing_secret(&s) => s,
        Some(_) => anyhow::bail!(
            "{secret_name} is not a Standard Webhooks secret: `whsec_` followed by base64"
        ),
        None => anyhow::bail!(
            "{url_name} is set without {secret_name}: the requests must be signed; set a \
             `whsec_` secret (e.g. `whsec_` and `openssl rand -base64 32`)"
        ),
    };
    let timeout = env.within(&timeout_name, default_timeout_ms, 10..=MAX_QUESTION_MS)?;
    Ok(Some(QuestionSettings {
        url: url.as_str().to_owned(),
        secret,
        timeout: Duration::from_millis(timeout),
    }))
}

impl CallbackSettings {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let schedule = match env.string("WEBHOOK_RETRY_SCHEDULE") {
            None => RetrySchedule::default(),
            Some(s) => RetrySchedule::parse(s.trim())
                .map_err(|e| anyhow::anyhow!("WEBHOOK_RETRY_SCHEDULE: {e}"))?,
        };
        let allow_http = env.parse("WEBHOOK_ALLOW_HTTP", false)?;
        let on_failure = env.choice(
            "INTERCEPT_ON_FAILURE",
            OnFailure::Allow,
            OnFailure::parse,
            "allow, deny",
        )?;
        Ok(Self {
            allow_http,
            intercept: question(env, "INTERCEPT", 300, allow_http)?.map(|q| (q, on_failure)),
            out_of_session: question(env, "OUT_OF_SESSION", 500, allow_http)?,
            dispatch: DispatchSettings {
                schedule,
                timeout: Duration::from_millis(env.within(
                    "WEBHOOK_TIMEOUT_MS",
                    15_000,
                    100..=60_000,
                )?),
                concurrency: env.within("WEBHOOK_CONCURRENCY", 64, 1..=1024)?,
                per_endpoint: env.within("WEBHOOK_ENDPOINT_CONCURRENCY", 8, 1..=256)?,
                poll_interval: Duration::from_millis(env.within(
                    "WEBHOOK_POLL_INTERVAL_MS",
                    500,
                    10..=60_000,
                )?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::env::with;
    use super::*;

    #[test]
    fn defaults_are_https_only_and_the_standard_schedule() {
        with(&[], |env| {
            let s = CallbackSettings::from_env(env)?;
            assert!(!s.allow_http);
            assert_eq!(s.dispatch.schedule, RetrySchedule::default());
            assert_eq!(s.dispatch.timeout, Duration::from_secs(15));
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_schedule_is_read_and_bad_values_name_their_setting() {
        with(&[("WEBHOOK_RETRY_SCHEDULE", "1s,2s,4s")], |env| {
            let s = CallbackSettings::from_env(env)?;
            assert_eq!(s.dispatch.schedule.describe(), "1s,2s,4s");
            Ok(())
        })
        .unwrap();
        for (name, value) in [
            ("WEBHOOK_RETRY_SCHEDULE", "1s,soon"),
            ("WEBHOOK_ALLOW_HTTP", "yes"),
            ("WEBHOOK_TIMEOUT_MS", "0"),
            ("WEBHOOK_CONCURRENCY", "0"),
            ("INTERCEPT_ON_FAILURE", "maybe"),
        ] {
            let err = with(&[(name, value)], |env| {
                CallbackSettings::from_env(env).map(drop)
            })
            .unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn a_question_needs_a_signing_secret_and_a_short_deadline() {
        const URL: (&str, &str) = ("INTERCEPT_URL", "https://backend.example.com/intercept");
        const SECRET: (&str, &str) = ("INTERCEPT_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        with(&[URL, SECRET], |env| {
            let s = CallbackSettings::from_env(env)?;
            let (q, on_failure) = s.intercept.expect("an intercept");
            assert_eq!(q.timeout, Duration::from_millis(300));
            assert_eq!(on_failure, OnFailure::Allow);
            assert!(s.out_of_session.is_none());
            Ok(())
        })
        .unwrap();
        for (vars, named) in [
            (vec![URL], "INTERCEPT_SECRET"),
            (
                vec![URL, ("INTERCEPT_SECRET", "hunter2")],
                "INTERCEPT_SECRET",
            ),
            (
                vec![("INTERCEPT_URL", "http://backend.example.com/i"), SECRET],
                "INTERCEPT_URL",
            ),
            (
                vec![URL, SECRET, ("INTERCEPT_TIMEOUT_MS", "10000")],
                "INTERCEPT_TIMEOUT_MS",
            ),
            (
                vec![("OUT_OF_SESSION_URL", "https://backend.example.com/o")],
                "OUT_OF_SESSION_SECRET",
            ),
        ] {
            let err = with(&vars, |env| CallbackSettings::from_env(env).map(drop)).unwrap_err();
            assert!(err.to_string().contains(named), "{named}: {err}");
        }
    }
}
