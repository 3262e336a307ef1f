//! Settings, read from the environment. Every setting and its default is listed in
//! `.env.example`; a value that cannot be parsed stops the service with a message naming it.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::postgres::PgConnectOptions;
use voice_proxy_domain::allocation::{AllocationPolicy, CoolOffMode, GeoMatch, Stickiness};
use voice_proxy_domain::ncco::TTS_LANGUAGES;
use voice_proxy_domain::pairing::{MAX_TTL_SECONDS, MIN_TTL_SECONDS};
use voice_proxy_http::HttpSettings;
use voice_proxy_http::signature::{PayloadHashMode, SignatureSettings};
use voice_proxy_persistence::PoolSettings;
use voice_proxy_persistence::durable::spool;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/voice_proxy";

/// `SPOOL_DIR`: where this instance's spool (and its dead-letter file) is.
pub fn spool_dir_from_env() -> std::path::PathBuf {
    spool_dir(&Env(|name: &str| std::env::var(name).ok()))
}

fn spool_dir<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> std::path::PathBuf {
    env.string("SPOOL_DIR")
        .unwrap_or_else(|| "spool".to_owned())
        .into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Retention of real numbers.
#[derive(Clone)]
pub struct RetentionSettings {
    /// Numbers of pairings over for longer than this are replaced by a keyed hash; `None` keeps
    /// them forever.
    pub after: Option<chrono::Duration>,
    /// The key of the hash. Keep it secret and stable: the same number hashes the same way only
    /// under the same key.
    pub hash_key: String,
    /// How often the service runs the purge.
    pub interval: Duration,
}

impl std::fmt::Debug for RetentionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetentionSettings")
            .field("after", &self.after)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl RetentionSettings {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let env = Env(lookup);
        let days: i64 = env.parse("RETENTION_DAYS", 90)?;
        if days < 0 {
            bail!("RETENTION_DAYS must not be negative (0 keeps numbers forever)");
        }
        let hash_key = env.string("RETENTION_HASH_KEY").unwrap_or_default();
        if days > 0 && hash_key.len() < 16 {
            bail!(
                "RETENTION_HASH_KEY must be set (at least 16 characters) while RETENTION_DAYS is \
                 above 0: it keys the hash that replaces old numbers. Set RETENTION_DAYS=0 to keep \
                 numbers forever instead"
            );
        }
        Ok(Self {
            after: (days > 0).then(|| chrono::Duration::days(days)),
            hash_key,
            interval: Duration::from_secs(env.parse("RETENTION_INTERVAL_SECONDS", 3600)?.max(1)),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: PgConnectOptions,
    pub pool: PoolSettings,
    pub listen_addr: SocketAddr,
    /// HTTP worker threads; defaults to the number of CPUs.
    pub http_workers: Option<usize>,
    pub http: HttpSettings,
    pub sweep_interval: Duration,
    /// Where call records and events wait while the database is unreachable.
    pub spool_dir: std::path::PathBuf,
    /// The size of a spool segment file (each is zero-filled to it before use).
    pub spool_segment_bytes: u64,
    /// The most bytes of spooled records kept in memory; past it events are refused (503).
    pub spool_memory_bytes: u64,
    pub spool_drain_interval: Duration,
    /// How often the in-memory routes follow the pairings' change feed (besides at once when
    /// Postgres notifies a change).
    pub route_poll_interval: Duration,
    /// How long after a poll started the in-memory routes may connect calls on their own; also
    /// the longest a close waits for an instance that has stopped polling.
    pub route_mirror_lease: Duration,
    pub retention: RetentionSettings,
    pub log_format: LogFormat,
}

/// Reads a setting through `lookup` (the environment, or a map in tests).
struct Env<F: Fn(&str) -> Option<String>>(F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn string(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn parse<T: FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.string(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("{name}={raw:?} is not valid: {e}")),
        }
    }

    fn choice<T>(
        &self,
        name: &str,
        default: T,
        parse: fn(&str) -> Option<T>,
        allowed: &str,
    ) -> anyhow::Result<T> {
        match self.string(name) {
            None => Ok(default),
            Some(raw) => parse(raw.trim()).ok_or_else(|| {
                anyhow::anyhow!("{name}={raw:?} is not valid: use one of {allowed}")
            }),
        }
    }
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let retention = RetentionSettings::from_lookup(&lookup)?;
        let env = Env(lookup);
        let database_url = env
            .string("DATABASE_URL")
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            bail!("DATABASE_URL must be a postgres:// or postgresql:// URL");
        }
        let database = PgConnectOptions::from_str(&database_url)
            .context("DATABASE_URL is not a valid postgres:// URL")?
            .application_name("voice-proxy");

        let admin_token = env.string("ADMIN_TOKEN").context(
            "ADMIN_TOKEN is not set: choose a long random secret (e.g. `openssl rand -hex 32`)",
        )?;
        if admin_token.len() < 16 {
            bail!("ADMIN_TOKEN must be at least 16 characters long");
        }

        let default_ttl_seconds: i64 = env.parse("DEFAULT_PAIRING_TTL_SECONDS", 3600)?;
        if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&default_ttl_seconds) {
            bail!(
                "DEFAULT_PAIRING_TTL_SECONDS must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS}"
            );
        }
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
        let spool_segment_kib: u64 =
            env.parse("SPOOL_SEGMENT_KIB", spool::DEFAULT_SEGMENT_BYTES / 1024)?;
        // At least a batch of events; at most what may be zero-filled while appends wait.
        if !(1024..=65_536).contains(&spool_segment_kib) {
            bail!("SPOOL_SEGMENT_KIB must be between 1024 and 65536");
        }
        let spool_memory_mib: u64 =
            env.parse("SPOOL_MEMORY_MIB", spool::DEFAULT_MEMORY_BYTES >> 20)?;
        if !(1..=65_536).contains(&spool_memory_mib) {
            bail!("SPOOL_MEMORY_MIB must be between 1 and 65536");
        }
        let answer_deadline_ms: u64 = env.parse("ANSWER_DEADLINE_MS", 1000)?;
        if !(50..=4000).contains(&answer_deadline_ms) {
            bail!(
                "ANSWER_DEADLINE_MS must be between 50 and 4000 (Vonage waits 5 s at most for \
                 the answer)"
            );
        }
        let spool_drain_interval_ms: u64 = env.parse("SPOOL_DRAIN_INTERVAL_MS", 1000)?;
        if spool_drain_interval_ms == 0 {
            bail!("SPOOL_DRAIN_INTERVAL_MS must be at least 1");
        }
        let ring_timeout_seconds: u32 = env.parse("RING_TIMEOUT_SECONDS", 45)?;
        if !(3..=7200).contains(&ring_timeout_seconds) {
            bail!("RING_TIMEOUT_SECONDS must be between 3 and 7200");
        }
        let cool_off_seconds: i64 = env.parse("COOL_OFF_SECONDS", 24 * 3600)?;
        if cool_off_seconds < 0 {
            bail!("COOL_OFF_SECONDS must not be negative");
        }
        let allocation = AllocationPolicy {
            geo: env.choice(
                "GEO_MATCH",
                GeoMatch::Strict,
                GeoMatch::parse,
                "strict, prefer, off",
            )?,
            stickiness: env.choice(
                "STICKINESS",
                Stickiness::PreferSticky,
                Stickiness::parse,
                "prefer-sticky, avoid-sticky",
            )?,
            cool_off: chrono::Duration::seconds(cool_off_seconds),
            cool_off_mode: env.choice(
                "COOL_OFF_MODE",
                CoolOffMode::Soft,
                CoolOffMode::parse,
                "soft, strict",
            )?,
        };
        let http_workers: usize = env.parse("HTTP_WORKERS", 0)?;
        let signature = SignatureSettings {
            secrets: env
                .string("VONAGE_SIGNATURE_SECRET")
                .map(|s| {
                    s.split(',')
                        .map(|p| p.trim().to_owned())
                        .filter(|p| !p.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            api_key: env.string("VONAGE_API_KEY"),
            application_id: env.string("VONAGE_APPLICATION_ID"),
            max_age_seconds: env.parse("SIGNATURE_MAX_AGE_SECONDS", 300)?,
            payload_hash: env.choice(
                "SIGNATURE_PAYLOAD_HASH",
                PayloadHashMode::LogOnly,
                PayloadHashMode::parse,
                "enforce, log",
            )?,
        };
        if signature.max_age_seconds < 1 {
            bail!("SIGNATURE_MAX_AGE_SECONDS must be at least 1");
        }
        let allow_unsigned_webhooks: bool = env.parse("ALLOW_UNSIGNED_WEBHOOKS", false)?;
        if signature.secrets.is_empty() && !allow_unsigned_webhooks {
            bail!(
                "VONAGE_SIGNATURE_SECRET is not set: without it anyone who can reach the webhooks \
                 can ask whom a pool number connects to. Set it to your Vonage account's \
                 signature secret, or, for local development only, set \
                 ALLOW_UNSIGNED_WEBHOOKS=true to serve the webhooks unauthenticated"
            );
        }
        let request_body_timeout_ms: u64 = env.parse("REQUEST_BODY_TIMEOUT_MS", 5000)?;
        if !(100..=60_000).contains(&request_body_timeout_ms) {
            bail!("REQUEST_BODY_TIMEOUT_MS must be between 100 and 60000");
        }
        let route_poll_interval = Duration::from_millis(env.parse("ROUTE_POLL_INTERVAL_MS", 500)?);
        let route_mirror_lease = Duration::from_millis(env.parse("ROUTE_MIRROR_LEASE_MS", 2000)?);
        if route_mirror_lease <= route_poll_interval {
            bail!(
                "ROUTE_MIRROR_LEASE_MS ({} ms) must be longer than ROUTE_POLL_INTERVAL_MS ({} ms)",
                route_mirror_lease.as_millis(),
                route_poll_interval.as_millis()
            );
        }

        Ok(Self {
            database,
            pool: PoolSettings {
                max_connections: env.parse("DATABASE_MAX_CONNECTIONS", 24)?,
                acquire_timeout: Duration::from_millis(env.parse("DATABASE_ACQUIRE_TIMEOUT_MS", 2000)?),
            },
            listen_addr: env.parse("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            http_workers: (http_workers > 0).then_some(http_workers),
            http: HttpSettings {
                admin_token,
                default_ttl_seconds,
                no_route_message: env.string("NO_ROUTE_MESSAGE").unwrap_or_else(|| {
                    "The number you have called cannot be connected. Goodbye.".to_owned()
                }),
                pairing_ended_message: env.string("PAIRING_ENDED_MESSAGE").unwrap_or_else(|| {
                    "This number is no longer connected to your contact. Please use the app to reach them. Goodbye."
                        .to_owned()
                }),
                callee_unavailable_message: env
                    .string("CALLEE_UNAVAILABLE_MESSAGE")
                    .unwrap_or_else(|| {
                        "The person you are calling is not available. Please try again later."
                            .to_owned()
                    }),
                message_language,
                public_base_url,
                ring_timeout_seconds,
                allocation,
                signature,
                answer_db_timeout: Duration::from_millis(env.parse("ANSWER_DB_TIMEOUT_MS", 300)?),
                request_body_timeout: Duration::from_millis(request_body_timeout_ms),
                answer_deadline: Duration::from_millis(answer_deadline_ms),
            },
            sweep_interval: Duration::from_secs(env.parse("SWEEP_INTERVAL_SECONDS", 60)?),
            spool_dir: spool_dir(&env),
            spool_segment_bytes: spool_segment_kib * 1024,
            spool_memory_bytes: spool_memory_mib << 20,
            spool_drain_interval: Duration::from_millis(spool_drain_interval_ms),
            route_poll_interval,
            route_mirror_lease,
            retention,
            log_format: env.choice(
                "LOG_FORMAT",
                LogFormat::Json,
                |s| match s {
                    "json" => Some(LogFormat::Json),
                    "pretty" => Some(LogFormat::Pretty),
                    _ => None,
                },
                "json, pretty",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Settings from `vars` alone.
    fn exactly(vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    /// Settings from `vars`, serving unsigned webhooks unless `vars` say otherwise.
    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let mut all = vec![("ALLOW_UNSIGNED_WEBHOOKS", "true")];
        all.extend_from_slice(vars);
        exactly(&all)
    }

    #[test]
    fn webhooks_must_be_signed_unless_unsigned_ones_are_allowed_explicitly() {
        let base = [("ADMIN_TOKEN", "0123456789abcdef"), ("RETENTION_DAYS", "0")];
        let err = exactly(&base).unwrap_err().to_string();
        assert!(
            err.contains("VONAGE_SIGNATURE_SECRET") && err.contains("ALLOW_UNSIGNED_WEBHOOKS"),
            "{err}"
        );
        let err = exactly(&[base[0], base[1], ("ALLOW_UNSIGNED_WEBHOOKS", "false")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("VONAGE_SIGNATURE_SECRET"), "{err}");
        let err = exactly(&[base[0], base[1], ("ALLOW_UNSIGNED_WEBHOOKS", "yes")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ALLOW_UNSIGNED_WEBHOOKS"), "{err}");
        let unsigned = exactly(&[base[0], base[1], ("ALLOW_UNSIGNED_WEBHOOKS", "true")]).unwrap();
        assert!(unsigned.http.signature.secrets.is_empty());
        let signed = exactly(&[base[0], base[1], ("VONAGE_SIGNATURE_SECRET", "a, b")]).unwrap();
        assert_eq!(signed.http.signature.secrets, ["a", "b"]);
    }

    #[test]
    fn defaults_apply_when_only_the_admin_token_is_set() {
        let s = settings(&[
            ("ADMIN_TOKEN", "0123456789abcdef"),
            ("RETENTION_HASH_KEY", "0123456789abcdef"),
            ("VONAGE_SIGNATURE_SECRET", "signature-secret"),
        ])
        .unwrap();
        assert_eq!(s.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.http.default_ttl_seconds, 3600);
        assert_eq!(s.http.allocation, AllocationPolicy::default());
        assert_eq!(s.log_format, LogFormat::Json);
    }

    #[test]
    fn a_missing_admin_token_or_a_bad_value_names_the_setting() {
        let err = settings(&[("RETENTION_DAYS", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ADMIN_TOKEN"), "{err}");
        let err = settings(&[("ADMIN_TOKEN", "0123456789abcdef")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("RETENTION_HASH_KEY"), "{err}");
        let err = settings(&[
            ("ADMIN_TOKEN", "0123456789abcdef"),
            ("RETENTION_DAYS", "0"),
            ("LISTEN_ADDR", "nowhere"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("LISTEN_ADDR"), "{err}");
        for (name, value) in [
            ("SPOOL_DRAIN_INTERVAL_MS", "0"),
            ("SPOOL_SEGMENT_KIB", "64"),
            ("SPOOL_SEGMENT_KIB", "1048576"),
        ] {
            let err = settings(&[
                ("ADMIN_TOKEN", "0123456789abcdef"),
                ("RETENTION_DAYS", "0"),
                (name, value),
            ])
            .unwrap_err()
            .to_string();
            assert!(err.contains(name), "{err}");
        }
        let err = settings(&[
            ("ADMIN_TOKEN", "0123456789abcdef"),
            ("RETENTION_DAYS", "0"),
            ("MESSAGE_LANGUAGE", "en-UK"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("MESSAGE_LANGUAGE") && err.contains("en-GB"),
            "{err}"
        );
        let ok = settings(&[
            ("ADMIN_TOKEN", "0123456789abcdef"),
            ("RETENTION_DAYS", "0"),
            ("MESSAGE_LANGUAGE", "cmn-TW"),
        ])
        .unwrap();
        assert_eq!(ok.http.message_language, "cmn-TW");
        let err = settings(&[
            ("ADMIN_TOKEN", "0123456789abcdef"),
            ("RETENTION_DAYS", "0"),
            ("GEO_MATCH", "maybe"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("GEO_MATCH") && err.contains("strict"), "{err}");
        let err = settings(&[
            ("ADMIN_TOKEN", "0123456789abcdef"),
            ("RETENTION_DAYS", "0"),
            ("DATABASE_URL", "mysql://x"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
    }
}
