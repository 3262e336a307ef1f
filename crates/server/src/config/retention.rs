//! Retention of real numbers.

use std::time::Duration;

use anyhow::bail;

use super::env::Env;

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
    /// `RETENTION_DAYS` (0 keeps numbers), `RETENTION_HASH_KEY` (required while it is above 0),
    /// `RETENTION_INTERVAL_SECONDS`.
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let days = env.within("RETENTION_DAYS", 90, 0..=36_500)?;
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

    /// The retention settings of the process's environment.
    pub fn from_process_env() -> anyhow::Result<Self> {
        let lookup = |name: &str| std::env::var(name).ok();
        Self::from_env(&Env::new(&lookup))
    }
}

#[cfg(test)]
mod tests {
    use super::super::env::with;
    use super::*;

    #[test]
    fn a_key_is_required_while_numbers_are_purged() {
        let err = with(&[], |env| RetentionSettings::from_env(env).map(drop)).unwrap_err();
        assert!(err.to_string().contains("RETENTION_HASH_KEY"), "{err}");
        with(&[("RETENTION_DAYS", "0")], |env| {
            assert_eq!(RetentionSettings::from_env(env)?.after, None);
            Ok(())
        })
        .unwrap();
        let err = with(&[("RETENTION_DAYS", "-1")], |env| {
            RetentionSettings::from_env(env).map(drop)
        })
        .unwrap_err();
        assert!(err.to_string().contains("RETENTION_DAYS"), "{err}");
    }
}
