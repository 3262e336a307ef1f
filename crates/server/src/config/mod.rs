//! Settings, read from the environment one section at a time, each parsed and validated in its
//! own module: the database, the server and admin API, signed webhooks, the call path, the
//! allocation policy, the spool, the route mirror, retention, callbacks to the marketplace, call
//! recordings. Every setting and its default is
//! listed in `.env.example`; a value that cannot be parsed stops the service with a message
//! naming it.

mod allocation;
mod callbacks;
mod calls;
mod database;
mod env;
mod recordings;
mod retention;
mod route_mirror;
mod server;
mod signatures;
mod spool;

use voice_proxy_http::HttpSettings;

pub use callbacks::CallbackSettings;
pub use calls::CallSettings;
pub use database::{DEFAULT_DATABASE_URL, DatabaseSettings};
pub use env::Env;
pub use recordings::RecordingSettings;
pub use retention::RetentionSettings;
pub use route_mirror::RouteMirrorSettings;
pub use server::{AdminSettings, LogFormat, ServerSettings};
pub use spool::{SpoolSettings, dir_from_process_env as spool_dir_from_env};

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub server: ServerSettings,
    /// What the HTTP handlers need: the admin API, the call path, the allocation policy, the
    /// signatures.
    pub http: HttpSettings,
    pub spool: SpoolSettings,
    pub route_mirror: RouteMirrorSettings,
    pub retention: RetentionSettings,
    pub callbacks: CallbackSettings,
    pub recordings: RecordingSettings,
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let env = Env::new(&lookup);
        let retention = RetentionSettings::from_env(&env)?;
        let database = DatabaseSettings::from_env(&env, "voice-proxy")?;
        let admin = AdminSettings::from_env(&env)?;
        let calls = CallSettings::from_env(&env)?;
        let allocation = allocation::from_env(&env)?;
        let signature = signatures::from_env(&env)?;
        let server = ServerSettings::from_env(&env)?;
        let callbacks = CallbackSettings::from_env(&env)?;
        let recordings = RecordingSettings::from_env(&env)?;
        Ok(Self {
            database,
            http: HttpSettings {
                admin_token: admin.admin_token,
                default_ttl_seconds: admin.default_ttl_seconds,
                no_route_message: calls.no_route_message,
                pairing_ended_message: calls.pairing_ended_message,
                callee_unavailable_message: calls.callee_unavailable_message,
                message_language: calls.message_language,
                public_base_url: calls.public_base_url,
                call_defaults: calls.call_defaults,
                pin: calls.pin,
                allocation,
                signature,
                answer_db_timeout: calls.answer_db_timeout,
                request_body_timeout: server.request_body_timeout,
                answer_deadline: calls.answer_deadline,
                callback_allow_http: callbacks.allow_http,
            },
            server,
            spool: SpoolSettings::from_env(&env)?,
            route_mirror: RouteMirrorSettings::from_env(&env)?,
            retention,
            callbacks,
            recordings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use voice_proxy_domain::allocation::AllocationPolicy;

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
        assert_eq!(s.server.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.http.default_ttl_seconds, 3600);
        assert_eq!(s.http.allocation, AllocationPolicy::default());
        assert_eq!(s.server.log_format, LogFormat::Json);
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
