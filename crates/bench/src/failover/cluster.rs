//! The HA cluster and the instances, as the failover run sees them: the cluster script's
//! commands, a database probe, and the instances' `/readyz` and `/metrics`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::PgPool;
use tokio::time::Instant;

pub(super) struct Cluster {
    pub(super) script: PathBuf,
}

impl Cluster {
    /// Runs a command of the cluster script; its standard output, or an error with its output.
    pub(super) async fn output(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = tokio::process::Command::new(&self.script)
            .args(args)
            .output()
            .await
            .with_context(|| format!("running {} {}", self.script.display(), args.join(" ")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "{} {} failed: {stdout}{}",
                self.script.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }
}

pub(super) async fn wait_for(
    what: &str,
    seconds: u64,
    mut check: impl AsyncFnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out after {seconds} s waiting for {what}")
}

/// A series of an instance's `/metrics`, or -1 when it cannot be read.
pub(super) async fn metric(http: &reqwest::Client, base: &str, series: &str) -> f64 {
    let Ok(r) = http.get(format!("{base}/metrics")).send().await else {
        return -1.0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

pub(super) async fn ready(http: &reqwest::Client, base: &str) -> bool {
    http.get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

pub(super) async fn writable(db: &PgPool) -> bool {
    let probe = async {
        sqlx::query("CREATE TABLE IF NOT EXISTS ha_probe (at timestamptz NOT NULL)")
            .execute(db)
            .await?;
        sqlx::query("INSERT INTO ha_probe VALUES (now())")
            .execute(db)
            .await?;
        anyhow::Ok(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(()))
    )
}

pub(super) async fn current_xid(db: &PgPool) -> Option<i64> {
    sqlx::query_scalar::<_, i64>("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(db)
        .await
        .ok()
}
