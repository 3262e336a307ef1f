//! Call recordings: the Vonage application's credentials (to fetch recordings with), which URLs
//! may be fetched, the archive, and its retention.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use voice_proxy_callbacks::archive::ArchiveSettings;
use voice_proxy_callbacks::vonage::{ApiOrigin, Credentials};

use super::env::Env;

#[derive(Debug, Clone)]
pub struct RecordingSettings {
    /// The application id and private key: `VONAGE_APPLICATION_ID`, `VONAGE_PRIVATE_KEY_PATH`.
    /// Without them recordings are stored but cannot be fetched.
    pub credentials: Option<Credentials>,
    /// Where recordings may be fetched from: Vonage's API hosts, or `VONAGE_API_BASE_URL`.
    pub origin: ApiOrigin,
    /// `RECORDING_ARCHIVE_DIR` and how downloads are made; `None`: not archived.
    pub archive: Option<ArchiveSettings>,
    /// Archived recordings received longer ago than this are deleted; `None` keeps them.
    pub retention: Option<chrono::Duration>,
}

impl RecordingSettings {
    /// `VONAGE_APPLICATION_ID` + `VONAGE_PRIVATE_KEY_PATH`, `VONAGE_API_BASE_URL`,
    /// `RECORDING_ARCHIVE_DIR`, `RECORDING_RETENTION_DAYS`, `RECORDING_DOWNLOAD_MAX_ATTEMPTS`,
    /// `RECORDING_DOWNLOAD_BACKOFF_MS`, `RECORDING_DOWNLOAD_BACKOFF_MAX_SECONDS`,
    /// `RECORDING_DOWNLOAD_TIMEOUT_SECONDS`.
    ///
    /// `VONAGE_APPLICATION_ID` alone stays what it was (the claim signed webhooks must carry);
    /// the private key needs it. The key file is read and checked here, so a key that does not
    /// parse stops the service at start with a message that says so.
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let application_id = env.string("VONAGE_APPLICATION_ID");
        let key_path = env.string("VONAGE_PRIVATE_KEY_PATH").map(PathBuf::from);
        let credentials = match (application_id, key_path) {
            (Some(id), Some(path)) => {
                let pem = std::fs::read(&path).with_context(|| {
                    format!("VONAGE_PRIVATE_KEY_PATH={} cannot be read", path.display())
                })?;
                let credentials = Credentials::new(id.trim(), &pem).map_err(|e| {
                    anyhow::anyhow!(
                        "VONAGE_PRIVATE_KEY_PATH={} is not the Vonage application's private key: \
                         {e}",
                        path.display()
                    )
                })?;
                Some(credentials)
            }
            (None, Some(_)) => bail!(
                "VONAGE_PRIVATE_KEY_PATH is set without VONAGE_APPLICATION_ID: set both (the \
                 application the private key belongs to), or neither"
            ),
            _ => None,
        };
        let origin = match env.string("VONAGE_API_BASE_URL") {
            None => ApiOrigin::Vonage,
            Some(raw) => ApiOrigin::base(&raw)
                .map_err(|e| anyhow::anyhow!("VONAGE_API_BASE_URL={raw:?} is not valid: {e}"))?,
        };
        let archive = match env.string("RECORDING_ARCHIVE_DIR") {
            None => None,
            Some(_) if credentials.is_none() => bail!(
                "RECORDING_ARCHIVE_DIR is set, but recordings can only be downloaded with the \
                 Vonage application's credentials: set VONAGE_APPLICATION_ID and \
                 VONAGE_PRIVATE_KEY_PATH too"
            ),
            Some(dir) => Some(ArchiveSettings {
                dir: PathBuf::from(dir.trim()),
                max_attempts: env.within("RECORDING_DOWNLOAD_MAX_ATTEMPTS", 10, 1..=100)?,
                backoff: Duration::from_millis(env.within(
                    "RECORDING_DOWNLOAD_BACKOFF_MS",
                    30_000,
                    1..=86_400_000,
                )?),
                backoff_cap: Duration::from_secs(env.within(
                    "RECORDING_DOWNLOAD_BACKOFF_MAX_SECONDS",
                    3600,
                    1..=604_800,
                )?),
                timeout: Duration::from_secs(env.within(
                    "RECORDING_DOWNLOAD_TIMEOUT_SECONDS",
                    600,
                    1..=86_400,
                )?),
            }),
        };
        let days = env.within("RECORDING_RETENTION_DAYS", 90, 0..=36_500)?;
        Ok(Self {
            credentials,
            origin,
            archive,
            retention: (days > 0).then(|| chrono::Duration::days(days)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::env::with;
    use super::*;

    const KEY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/vonage-test-private-key.pem"
    );
    const PUBLIC_KEY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/vonage-test-public-key.pem"
    );

    fn read(vars: &[(&str, &str)]) -> anyhow::Result<RecordingSettings> {
        let mut out = None;
        with(vars, |env| {
            out = Some(RecordingSettings::from_env(env)?);
            Ok(())
        })?;
        Ok(out.unwrap())
    }

    #[test]
    fn without_credentials_recordings_are_stored_but_not_fetched() {
        let s = read(&[]).unwrap();
        assert!(s.credentials.is_none() && s.archive.is_none());
        assert_eq!(s.origin, ApiOrigin::Vonage);
        assert_eq!(s.retention, Some(chrono::Duration::days(90)));
        // The application id alone is the signed webhooks' claim, as before.
        assert!(
            read(&[("VONAGE_APPLICATION_ID", "app")])
                .unwrap()
                .credentials
                .is_none()
        );
    }

    #[test]
    fn the_private_key_needs_its_application_and_must_parse() {
        let err = read(&[("VONAGE_PRIVATE_KEY_PATH", KEY)]).unwrap_err();
        assert!(err.to_string().contains("VONAGE_APPLICATION_ID"), "{err}");
        let ok = read(&[
            ("VONAGE_APPLICATION_ID", "app"),
            ("VONAGE_PRIVATE_KEY_PATH", KEY),
        ])
        .unwrap();
        assert_eq!(ok.credentials.unwrap().application_id(), "app");
        for path in [PUBLIC_KEY, "/nonexistent/key.pem"] {
            let err = read(&[
                ("VONAGE_APPLICATION_ID", "app"),
                ("VONAGE_PRIVATE_KEY_PATH", path),
            ])
            .unwrap_err();
            assert!(
                format!("{err:#}").contains("VONAGE_PRIVATE_KEY_PATH"),
                "{err:#}"
            );
        }
    }

    #[test]
    fn the_archive_needs_credentials() {
        let err = read(&[("RECORDING_ARCHIVE_DIR", "/tmp/archive")]).unwrap_err();
        assert!(err.to_string().contains("VONAGE_PRIVATE_KEY_PATH"), "{err}");
        let s = read(&[
            ("VONAGE_APPLICATION_ID", "app"),
            ("VONAGE_PRIVATE_KEY_PATH", KEY),
            ("RECORDING_ARCHIVE_DIR", "/tmp/archive"),
            ("RECORDING_DOWNLOAD_BACKOFF_MS", "100"),
            ("RECORDING_RETENTION_DAYS", "0"),
        ])
        .unwrap();
        let archive = s.archive.unwrap();
        assert_eq!(archive.backoff, Duration::from_millis(100));
        assert_eq!(archive.max_attempts, 10);
        assert_eq!(s.retention, None);
    }

    #[test]
    fn a_base_url_must_be_an_http_url() {
        let err = read(&[("VONAGE_API_BASE_URL", "api.nexmo.com")]).unwrap_err();
        assert!(err.to_string().contains("VONAGE_API_BASE_URL"), "{err}");
        let s = read(&[("VONAGE_API_BASE_URL", "http://127.0.0.1:9")]).unwrap();
        assert!(matches!(s.origin, ApiOrigin::Only(_)));
    }
}
