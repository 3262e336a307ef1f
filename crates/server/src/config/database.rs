//! `DATABASE_URL` and the connection pool, read once for `serve` and every other subcommand.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::postgres::PgConnectOptions;
use voice_proxy_persistence::PoolSettings;

use super::env::Env;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/voice_proxy";

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub options: PgConnectOptions,
    pub pool: PoolSettings,
}

impl DatabaseSettings {
    /// `DATABASE_URL` (its sessions named `application_name` in `pg_stat_activity`),
    /// `DATABASE_MAX_CONNECTIONS`, `DATABASE_ACQUIRE_TIMEOUT_MS`.
    pub fn from_env(env: &Env, application_name: &str) -> anyhow::Result<Self> {
        let url = env
            .string("DATABASE_URL")
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!("DATABASE_URL must be a postgres:// or postgresql:// URL");
        }
        let options = PgConnectOptions::from_str(&url)
            .context("DATABASE_URL is not a valid postgres:// URL")?
            .application_name(application_name);
        Ok(Self {
            options,
            pool: PoolSettings {
                max_connections: env.within("DATABASE_MAX_CONNECTIONS", 24, 1..=10_000)?,
                acquire_timeout: Duration::from_millis(
                    env.parse("DATABASE_ACQUIRE_TIMEOUT_MS", 2000)?,
                ),
            },
        })
    }

    /// The database settings of the process's environment.
    pub fn from_process_env(application_name: &str) -> anyhow::Result<Self> {
        let lookup = |name: &str| std::env::var(name).ok();
        Self::from_env(&Env::new(&lookup), application_name)
    }
}

#[cfg(test)]
mod tests {
    use super::super::env::with;
    use super::*;

    #[test]
    fn the_url_must_be_a_postgres_one_and_the_pool_is_bounded() -> anyhow::Result<()> {
        with(&[], |env| {
            let db = DatabaseSettings::from_env(env, "test")?;
            assert_eq!(db.options.get_database(), Some("voice_proxy"));
            assert_eq!(db.pool.max_connections, 24);
            Ok(())
        })?;
        for (name, value) in [
            ("DATABASE_URL", "mysql://x"),
            ("DATABASE_URL", "postgres://[::1"),
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("DATABASE_ACQUIRE_TIMEOUT_MS", "soon"),
        ] {
            let err = with(&[(name, value)], |env| {
                DatabaseSettings::from_env(env, "test").map(drop)
            })
            .unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        Ok(())
    }
}
