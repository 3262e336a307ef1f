//! `failover`: voice-proxy on a highly available Postgres cluster (`scripts/ha-cluster.sh`)
//! under steady calls (an answer and four events each) and pairing creates, through a crash of
//! the leader's Postgres, a failover (the leader's Patroni and Postgres killed) and a planned
//! switchover. Then checks what was promised:
//!
//! - every caller was connected, each answer within a second;
//! - every answer and every event was acknowledged;
//! - creates were answered 201 or 503, nothing else;
//! - every acknowledged call and event is in Postgres exactly once, and every 201 pairing is
//!   there (nothing acknowledged was lost);
//! - nothing was dead-lettered;
//! - every instance is ready again, without a restart, and a pairing closed through one instance
//!   stops routing on the others (the route mirrors follow the new leader);
//!
//! and prints how long each step took to recover. Exits non-zero when a check fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

mod check;
mod cluster;
mod load;

use check::check;
use cluster::{Cluster, current_xid, metric, ready, wait_for, writable};
use load::{calls, close_stops_routing_everywhere, creates, setup};

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// Base URLs of the service's instances, comma-separated (all on the same database).
    #[arg(long, value_delimiter = ',', required = true)]
    base_urls: Vec<String>,
    /// Admin bearer token of the instances.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    /// The database the instances use (through HAProxy): what was acknowledged is checked there.
    #[arg(long)]
    database_url: String,
    /// The cluster's control script.
    #[arg(long, default_value = "scripts/ha-cluster.sh")]
    cluster: PathBuf,
    /// Seconds of steady load before the first fault, between faults, and after the last.
    #[arg(long, default_value_t = 20.0)]
    steady: f64,
    /// Calls per second over all instances (each an answer and four events).
    #[arg(long, default_value_t = 20.0)]
    call_rate: f64,
    /// Pairing creates per second over all instances.
    #[arg(long, default_value_t = 5.0)]
    create_rate: f64,
    /// The instances' spool folders: nothing may be dead-lettered there.
    #[arg(long, value_delimiter = ',')]
    spool_dirs: Vec<PathBuf>,
    /// Also write the figures as KEY=value lines to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
}

/// Pairings made before the load, whose routes every call uses.
const PAIRINGS: usize = 40;
/// The longest an answer may take.
const ANSWER_LIMIT: Duration = Duration::from_secs(1);

/// (caller, dialled proxy number) of a route every instance holds in memory.
type Route = (String, String);

/// What the load saw.
#[derive(Default)]
struct Seen {
    /// Conversations whose answer was a 200 with a connect NCCO.
    connected: Vec<String>,
    /// Answers that were not (status or error, conversation).
    not_connected: Vec<String>,
    slowest_answer: Duration,
    answers_over_limit: u64,
    /// Events answered 204: (conversation, leg, status).
    acknowledged: Vec<(String, String, String)>,
    /// Events answered otherwise.
    not_acknowledged: Vec<String>,
    /// Pairings answered 201.
    created: Vec<Uuid>,
    /// Creates by status (or error).
    create_statuses: BTreeMap<String, u64>,
    /// When the last 201 was answered.
    last_created: Option<Instant>,
}

type Shared = Arc<Mutex<Seen>>;

fn lock(seen: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

pub async fn run(args: FailoverArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let bases: Vec<String> = args
        .base_urls
        .iter()
        .map(|b| b.trim_end_matches('/').to_owned())
        .collect();
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(&args.database_url)?;
    let cluster = Cluster {
        script: args.cluster.clone(),
    };
    let auth = format!("Bearer {}", args.token);

    let routes = setup(&http, &bases, &auth).await?;
    println!(
        "failover: {} routes, {} instances",
        routes.len(),
        bases.len()
    );
    for base in &bases {
        wait_for(&format!("the routes in memory of {base}"), 60, async || {
            metric(&http, base, "routes_in_memory").await >= routes.len() as f64
        })
        .await?;
    }

    let seen: Shared = Arc::default();
    let (stop_tx, stop) = watch::channel(false);
    let mut load = JoinSet::new();
    load.spawn(calls(
        http.clone(),
        bases.clone(),
        routes.clone(),
        args.call_rate,
        seen.clone(),
        stop.clone(),
    ));
    load.spawn(creates(
        http.clone(),
        bases.clone(),
        auth.clone(),
        args.create_rate,
        seen.clone(),
        stop.clone(),
    ));

    let steady = Duration::from_secs_f64(args.steady);
    let mut report = Vec::new();
    let mut failures = Vec::new();
    tokio::time::sleep(steady).await;
    for step in [Step::CrashLeader, Step::KillLeader, Step::Switchover] {
        let xid_before = current_xid(&db).await;
        let leader_before = cluster
            .output(&["leader"])
            .await
            .unwrap_or_default()
            .trim()
            .to_owned();
        println!("failover: {} (leader {leader_before})", step.name());
        let t0 = Instant::now();
        let killed = cluster.output(&[step.command()]).await?;
        let db_writable = wait_for("the database to take writes", 120, async || {
            writable(&db).await
        })
        .await
        .map(|()| t0.elapsed());
        let ready = wait_for("every instance ready", 120, async || {
            let mut all = true;
            for base in &bases {
                all &= ready(&http, base).await;
            }
            all
        })
        .await
        .map(|()| t0.elapsed());
        let created = wait_for("a pairing created", 120, async || {
            lock(&seen).last_created.is_some_and(|at| at > t0)
        })
        .await
        .map(|()| t0.elapsed());
        if let Step::KillLeader = step {
            let node = killed
                .split_whitespace()
                .find(|w| w.starts_with("node"))
                .unwrap_or_default()
                .trim_matches(|c: char| !c.is_alphanumeric())
                .to_owned();
            if let Err(e) = cluster.output(&["revive", &node]).await {
                failures.push(format!("could not revive {node}: {e:#}"));
            }
        }
        if let Err(e) = cluster.output(&["wait-healthy", "180"]).await {
            failures.push(format!(
                "the cluster did not heal after {}: {e:#}",
                step.name()
            ));
        }
        let healed = t0.elapsed();
        let leader_after = cluster
            .output(&["leader"])
            .await
            .unwrap_or_default()
            .trim()
            .to_owned();
        let xid_after = current_xid(&db).await;
        let close_ok = close_stops_routing_everywhere(&http, &bases, &auth).await;
        let line = format!(
            "{}: leader {} -> {}; writes after {}, every instance ready after {}, first 201 after {}, cluster healed after {:.1} s; xid {} -> {}; a close stops routing on every instance: {}",
            step.name(),
            leader_before,
            leader_after,
            secs(&db_writable),
            secs(&ready),
            secs(&created),
            healed.as_secs_f64(),
            xid_before.map_or("?".into(), |x| x.to_string()),
            xid_after.map_or("?".into(), |x| x.to_string()),
            close_ok
                .as_ref()
                .map_or_else(|e| format!("NO ({e:#})"), |()| "yes".into()),
        );
        println!("failover: {line}");
        for (what, r) in [
            ("writes", &db_writable),
            ("ready", &ready),
            ("201", &created),
        ] {
            if let Err(e) = r {
                failures.push(format!("{}: {what}: {e:#}", step.name()));
            }
        }
        if let Err(e) = close_ok {
            failures.push(format!(
                "{}: a close did not stop routing: {e:#}",
                step.name()
            ));
        }
        if let (Some(before), Some(after)) = (xid_before, xid_after)
            && after <= before
        {
            failures.push(format!(
                "{}: the transaction ids went back ({before} -> {after})",
                step.name()
            ));
        }
        report.push((step, db_writable, ready, created, healed));
        tokio::time::sleep(steady).await;
    }
    let _ = stop_tx.send(true);
    while let Some(done) = load.join_next().await {
        done.context("a load task failed")?;
    }

    // Everything acknowledged has reached Postgres once the spools are empty.
    for base in &bases {
        wait_for(&format!("the spool of {base} to drain"), 120, async || {
            metric(&http, base, "spool_depth").await == 0.0
        })
        .await?;
    }
    let seen = std::mem::take(&mut *lock(&seen));
    failures.extend(check(&db, &seen, &bases, &http, &args.spool_dirs).await?);

    let mut summary = String::new();
    summary.push_str(&format!(
        "HA_CALLS={}\nHA_EVENTS={}\nHA_CREATED={}\nHA_CREATES={}\nHA_SLOWEST_ANSWER_MS={}\n",
        seen.connected.len() + seen.not_connected.len(),
        seen.acknowledged.len() + seen.not_acknowledged.len(),
        seen.created.len(),
        seen.create_statuses.values().sum::<u64>(),
        seen.slowest_answer.as_millis()
    ));
    for (step, writes, ready, created, healed) in &report {
        let key = step.name().to_uppercase().replace('-', "_");
        summary.push_str(&format!(
            "HA_{key}_WRITES_S={}\nHA_{key}_READY_S={}\nHA_{key}_FIRST_201_S={}\nHA_{key}_HEALED_S={:.1}\n",
            secs(writes),
            secs(ready),
            secs(created),
            healed.as_secs_f64()
        ));
    }
    println!(
        "failover: {} calls ({} connected, slowest answer {} ms, {} over {} ms), {} events acknowledged of {}, creates {:?}",
        seen.connected.len() + seen.not_connected.len(),
        seen.connected.len(),
        seen.slowest_answer.as_millis(),
        seen.answers_over_limit,
        ANSWER_LIMIT.as_millis(),
        seen.acknowledged.len(),
        seen.acknowledged.len() + seen.not_acknowledged.len(),
        seen.create_statuses
    );
    for (step, writes, ready, created, healed) in &report {
        println!(
            "failover: recovery of {:<13} writes {:>6}  ready {:>6}  first 201 {:>6}  healed {:>5.1} s",
            step.name(),
            secs(writes),
            secs(ready),
            secs(created),
            healed.as_secs_f64()
        );
    }
    if let Some(path) = &args.summary {
        std::fs::write(path, &summary).with_context(|| format!("writing {}", path.display()))?;
    }
    if failures.is_empty() {
        println!("failover: every check passed");
        Ok(())
    } else {
        for f in &failures {
            println!("failover: FAILED: {f}");
        }
        bail!("{} checks failed", failures.len())
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    CrashLeader,
    KillLeader,
    Switchover,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Self::CrashLeader => "crash-leader",
            Self::KillLeader => "kill-leader",
            Self::Switchover => "switchover",
        }
    }

    fn command(self) -> &'static str {
        self.name()
    }
}

fn secs(r: &anyhow::Result<Duration>) -> String {
    match r {
        Ok(d) => format!("{:.1} s", d.as_secs_f64()),
        Err(_) => "never".into(),
    }
}
