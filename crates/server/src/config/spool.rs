//! The spool: where call records and events wait on their way to Postgres.

use std::path::PathBuf;
use std::time::Duration;

use voice_proxy_persistence::durable::spool::{DEFAULT_MEMORY_BYTES, DEFAULT_SEGMENT_BYTES};

use super::env::Env;

#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// `SPOOL_DIR`: one per instance.
    pub dir: PathBuf,
    /// `SPOOL_SEGMENT_KIB`: each segment is zero-filled to it before use.
    pub segment_bytes: u64,
    /// `SPOOL_MEMORY_MIB`: the most bytes of spooled records kept in memory; past it events are
    /// refused (503).
    pub memory_bytes: u64,
    /// `SPOOL_DRAIN_INTERVAL_MS`: the drainer's retry and probe interval.
    pub drain_interval: Duration,
}

impl SpoolSettings {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        // At least a batch of events; at most what may be zero-filled while appends wait.
        let segment_kib = env.within(
            "SPOOL_SEGMENT_KIB",
            DEFAULT_SEGMENT_BYTES / 1024,
            1024..=65_536,
        )?;
        let memory_mib = env.within("SPOOL_MEMORY_MIB", DEFAULT_MEMORY_BYTES >> 20, 1..=65_536)?;
        let drain_ms = env.within("SPOOL_DRAIN_INTERVAL_MS", 1000, 1..=3_600_000)?;
        Ok(Self {
            dir: dir(env),
            segment_bytes: segment_kib * 1024,
            memory_bytes: memory_mib << 20,
            drain_interval: Duration::from_millis(drain_ms),
        })
    }
}

/// `SPOOL_DIR`, default `spool` (relative to the working directory).
pub fn dir(env: &Env) -> PathBuf {
    env.string("SPOOL_DIR")
        .unwrap_or_else(|| "spool".to_owned())
        .into()
}

/// `SPOOL_DIR` of the process's environment (for the subcommands that work on a spool).
pub fn dir_from_process_env() -> PathBuf {
    let lookup = |name: &str| std::env::var(name).ok();
    dir(&Env::new(&lookup))
}

#[cfg(test)]
mod tests {
    use super::super::env::with;
    use super::*;

    #[test]
    fn sizes_and_intervals_are_bounded() -> anyhow::Result<()> {
        with(&[("SPOOL_MEMORY_MIB", "2")], |env| {
            let s = SpoolSettings::from_env(env)?;
            assert_eq!(s.memory_bytes, 2 << 20);
            assert_eq!(s.segment_bytes, DEFAULT_SEGMENT_BYTES);
            assert_eq!(s.dir, PathBuf::from("spool"));
            Ok(())
        })?;
        for (name, value) in [
            ("SPOOL_DRAIN_INTERVAL_MS", "0"),
            ("SPOOL_SEGMENT_KIB", "64"),
            ("SPOOL_SEGMENT_KIB", "1048576"),
            ("SPOOL_MEMORY_MIB", "0"),
        ] {
            let err = with(&[(name, value)], |env| {
                SpoolSettings::from_env(env).map(drop)
            })
            .unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        Ok(())
    }
}
