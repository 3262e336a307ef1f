//! The HTTP server and the admin API's own settings.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use voice_proxy_domain::pairing::{MAX_TTL_SECONDS, MIN_TTL_SECONDS};

use super::env::Env;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl LogFormat {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Self::Json),
            "pretty" => Some(Self::Pretty),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen_addr: SocketAddr,
    /// HTTP worker threads; defaults to the number of CPUs.
    pub http_workers: Option<usize>,
    /// How long a request's body may take to arrive after its head.
    pub request_body_timeout: Duration,
    /// The interval of the housekeeping sweep over expired pairings.
    pub sweep_interval: Duration,
    pub log_format: LogFormat,
}

impl ServerSettings {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let http_workers: usize = env.within("HTTP_WORKERS", 0, 0..=1024)?;
        Ok(Self {
            listen_addr: env.parse("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            http_workers: (http_workers > 0).then_some(http_workers),
            request_body_timeout: Duration::from_millis(env.within(
                "REQUEST_BODY_TIMEOUT_MS",
                5000,
                100..=60_000,
            )?),
            sweep_interval: Duration::from_secs(env.within(
                "SWEEP_INTERVAL_SECONDS",
                2,
                1..=3600,
            )?),
            log_format: env.choice(
                "LOG_FORMAT",
                LogFormat::Json,
                LogFormat::parse,
                "json, pretty",
            )?,
        })
    }
}

/// The admin API: its bootstrap credential and the default lifetime of a pairing.
#[derive(Clone)]
pub struct AdminSettings {
    pub admin_token: String,
    pub default_ttl_seconds: i64,
}

impl AdminSettings {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let admin_token = env.string("ADMIN_TOKEN").context(
            "ADMIN_TOKEN is not set: choose a long random secret (e.g. `openssl rand -hex 32`)",
        )?;
        if admin_token.len() < 16 {
            bail!("ADMIN_TOKEN must be at least 16 characters long");
        }
        Ok(Self {
            admin_token,
            default_ttl_seconds: env.within(
                "DEFAULT_PAIRING_TTL_SECONDS",
                3600,
                MIN_TTL_SECONDS..=MAX_TTL_SECONDS,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::env::with;
    use super::*;

    #[test]
    fn the_admin_token_is_required_and_long() {
        for vars in [vec![], vec![("ADMIN_TOKEN", "short")]] {
            let err = with(&vars, |env| AdminSettings::from_env(env).map(drop)).unwrap_err();
            assert!(err.to_string().contains("ADMIN_TOKEN"), "{err}");
        }
        let err = with(
            &[
                ("ADMIN_TOKEN", "0123456789abcdef"),
                ("DEFAULT_PAIRING_TTL_SECONDS", "0"),
            ],
            |env| AdminSettings::from_env(env).map(drop),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("DEFAULT_PAIRING_TTL_SECONDS"),
            "{err}"
        );
    }

    #[test]
    fn the_listen_address_and_log_format_are_checked() {
        for (name, value) in [("LISTEN_ADDR", "nowhere"), ("LOG_FORMAT", "xml")] {
            let err = with(&[(name, value)], |env| {
                ServerSettings::from_env(env).map(drop)
            })
            .unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
