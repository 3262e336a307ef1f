//! Callbacks to the marketplace: where they may go, how they are retried, how many are sent at
//! once.

use std::time::Duration;

use voice_proxy_callbacks::DispatchSettings;
use voice_proxy_domain::callbacks::RetrySchedule;

use super::env::Env;

#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// `WEBHOOK_ALLOW_HTTP`: whether endpoint URLs may be plain `http://` (development and
    /// tests); by default only `https://`.
    pub allow_http: bool,
    /// `WEBHOOK_RETRY_SCHEDULE`, `WEBHOOK_TIMEOUT_MS`, `WEBHOOK_CONCURRENCY`,
    /// `WEBHOOK_ENDPOINT_CONCURRENCY`, `WEBHOOK_POLL_INTERVAL_MS`.
    pub dispatch: DispatchSettings,
}

impl CallbackSettings {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let schedule = match env.string("WEBHOOK_RETRY_SCHEDULE") {
            None => RetrySchedule::default(),
            Some(s) => RetrySchedule::parse(s.trim())
                .map_err(|e| anyhow::anyhow!("WEBHOOK_RETRY_SCHEDULE: {e}"))?,
        };
        Ok(Self {
            allow_http: env.parse("WEBHOOK_ALLOW_HTTP", false)?,
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
        ] {
            let err = with(&[(name, value)], |env| {
                CallbackSettings::from_env(env).map(drop)
            })
            .unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
    }
}
