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

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use crate::numbers::{self, Country};

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

struct Cluster {
    script: PathBuf,
}

impl Cluster {
    /// Runs a command of the cluster script; its standard output, or an error with its output.
    async fn output(&self, args: &[&str]) -> anyhow::Result<String> {
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

async fn wait_for(
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
async fn metric(http: &reqwest::Client, base: &str, series: &str) -> f64 {
    let Ok(r) = http.get(format!("{base}/metrics")).send().await else {
        return -1.0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn ready(http: &reqwest::Client, base: &str) -> bool {
    http.get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn writable(db: &PgPool) -> bool {
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

async fn current_xid(db: &PgPool) -> Option<i64> {
    sqlx::query_scalar::<_, i64>("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(db)
        .await
        .ok()
}

/// Adds pool numbers and makes the pairings whose routes the calls use.
async fn setup(http: &reqwest::Client, bases: &[String], auth: &str) -> anyhow::Result<Vec<Route>> {
    let base = &bases[0];
    for n in 0..20 {
        let number = format!("1212555{:04}", 7000 + n);
        let r = http
            .post(format!("{base}/v1/numbers"))
            .header("authorization", auth)
            .json(&json!({"number": number}))
            .send()
            .await?;
        if !(r.status().is_success() || r.status() == reqwest::StatusCode::CONFLICT) {
            bail!("adding {number}: {}", r.status());
        }
    }
    let mut rng = fastrand::Rng::with_seed(42);
    let mut routes = Vec::new();
    while routes.len() < 2 * PAIRINGS {
        let (a, b) = numbers::two_people(&mut rng, Country::Us);
        let r = http
            .post(format!("{base}/v1/pairings"))
            .header("authorization", auth)
            .json(&json!({"participants": [{"number": a, "label": "driver"},
                                           {"number": b, "label": "passenger"}],
                          "ttl_seconds": 86400}))
            .send()
            .await?;
        if r.status() != reqwest::StatusCode::CREATED {
            bail!("creating a pairing: {}", r.status());
        }
        let p: Value = r.json().await?;
        for (me, i) in [(&a, 0), (&b, 1)] {
            let proxy = p["participants"][i]["proxy_number"]
                .as_str()
                .context("a proxy number")?;
            routes.push((me.clone(), proxy.to_owned()));
        }
    }
    Ok(routes)
}

/// Calls at `rate` per second, round-robin over the instances, until told to stop: each an
/// answer, then the events of a call whose callee answered and talked.
async fn calls(
    http: reqwest::Client,
    bases: Vec<String>,
    routes: Vec<Route>,
    rate: f64,
    seen: Shared,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut calls = JoinSet::new();
    let mut n = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let base = bases[n % bases.len()].clone();
        let route = routes[n % routes.len()].clone();
        n += 1;
        calls.spawn(call(http.clone(), base, route, seen.clone()));
        while calls.try_join_next().is_some() {}
    }
    while calls.join_next().await.is_some() {}
}

async fn call(http: reqwest::Client, base: String, (from, to): Route, seen: Shared) {
    let conversation = format!("CON-ha-{}", Uuid::now_v7());
    let inbound = format!("{conversation}-in");
    let outbound = format!("{conversation}-out");
    let started = Instant::now();
    let answer = http
        .get(format!("{base}/webhooks/answer"))
        .query(&[
            ("from", from.as_str()),
            ("to", to.as_str()),
            ("uuid", inbound.as_str()),
            ("conversation_uuid", conversation.as_str()),
        ])
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    let took = started.elapsed();
    let connected = match answer {
        Ok(r) if r.status().is_success() => r
            .json::<Value>()
            .await
            .is_ok_and(|ncco| ncco[0]["action"] == "connect"),
        _ => false,
    };
    {
        let mut seen = lock(&seen);
        seen.slowest_answer = seen.slowest_answer.max(took);
        if took > ANSWER_LIMIT {
            seen.answers_over_limit += 1;
        }
        if connected {
            seen.connected.push(conversation.clone());
        } else {
            seen.not_connected.push(conversation.clone());
        }
    }
    let t = chrono::Utc::now();
    let at = |ms: i64| (t + chrono::Duration::milliseconds(ms)).to_rfc3339();
    let events = [
        (&inbound, "inbound", "started", at(0), json!({})),
        (&outbound, "outbound", "ringing", at(100), json!({})),
        (&outbound, "outbound", "answered", at(200), json!({})),
        (
            &outbound,
            "outbound",
            "completed",
            at(300),
            json!({"duration": "12", "price": "0.0012"}),
        ),
    ];
    for (leg, direction, status, timestamp, extra) in events {
        let mut body = json!({"uuid": leg, "conversation_uuid": conversation,
            "status": status, "direction": direction, "timestamp": timestamp});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let r = http
            .post(format!("{base}/webhooks/event"))
            .json(&body)
            .send()
            .await;
        let mut seen = lock(&seen);
        match r {
            Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT => {
                seen.acknowledged
                    .push((conversation.clone(), leg.clone(), status.to_owned()))
            }
            Ok(r) => seen
                .not_acknowledged
                .push(format!("{conversation} {status}: {}", r.status())),
            Err(e) => seen
                .not_acknowledged
                .push(format!("{conversation} {status}: {e}")),
        }
    }
}

/// Creates pairings at `rate` per second, round-robin over the instances, until told to stop.
async fn creates(
    http: reqwest::Client,
    bases: Vec<String>,
    auth: String,
    rate: f64,
    seen: Shared,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut rng = fastrand::Rng::with_seed(7);
    let mut creates = JoinSet::new();
    let mut n = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let (a, b) = numbers::two_people(&mut rng, Country::Us);
        let url = format!("{}/v1/pairings", bases[n % bases.len()]);
        n += 1;
        let (http, auth, seen) = (http.clone(), auth.clone(), seen.clone());
        creates.spawn(async move {
            let r = http
                .post(url)
                .header("authorization", auth)
                .json(&json!({"participants": [{"number": a}, {"number": b}],
                              "reference": format!("ha-{}", Uuid::now_v7()),
                              "ttl_seconds": 3600}))
                .send()
                .await;
            let (status, id) = match r {
                Ok(r) => {
                    let status = r.status().as_u16().to_string();
                    let id = if r.status() == reqwest::StatusCode::CREATED {
                        r.json::<Value>()
                            .await
                            .ok()
                            .and_then(|p| p["id"].as_str()?.parse::<Uuid>().ok())
                    } else {
                        None
                    };
                    (status, id)
                }
                Err(e) if e.is_timeout() => ("timeout".to_owned(), None),
                Err(_) => ("connection error".to_owned(), None),
            };
            let mut seen = lock(&seen);
            *seen.create_statuses.entry(status).or_default() += 1;
            if let Some(id) = id {
                seen.created.push(id);
                seen.last_created = Some(Instant::now());
            }
        });
        while creates.try_join_next().is_some() {}
    }
    while creates.join_next().await.is_some() {}
}

/// A pairing created and closed through the first instance stops routing on every instance at
/// once: the close waits for every route mirror, which must be following the new leader.
async fn close_stops_routing_everywhere(
    http: &reqwest::Client,
    bases: &[String],
    auth: &str,
) -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::new();
    let (a, b) = numbers::two_people(&mut rng, Country::Us);
    let base = &bases[0];
    let r = http
        .post(format!("{base}/v1/pairings"))
        .header("authorization", auth)
        .json(&json!({"participants": [{"number": a}, {"number": b}]}))
        .send()
        .await?;
    if r.status() != reqwest::StatusCode::CREATED {
        bail!("create: {}", r.status());
    }
    let p: Value = r.json().await?;
    let id = p["id"].as_str().context("an id")?.to_owned();
    let proxy = p["participants"][0]["proxy_number"]
        .as_str()
        .context("a proxy number")?
        .to_owned();
    // Every instance connects it (from memory, or by asking the database).
    for base in bases {
        if action(http, base, &a, &proxy).await? != "connect" {
            bail!("{base} does not connect a new pairing");
        }
    }
    let r = http
        .post(format!("{base}/v1/pairings/{id}/close"))
        .header("authorization", auth)
        .json(&json!({}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("close: {}", r.status());
    }
    for base in bases {
        let got = action(http, base, &a, &proxy).await?;
        if got != "talk" {
            bail!(
                "{base} still answers {got} for a pairing closed through {}",
                bases[0]
            );
        }
    }
    Ok(())
}

async fn action(
    http: &reqwest::Client,
    base: &str,
    from: &str,
    to: &str,
) -> anyhow::Result<String> {
    let conversation = format!("CON-ha-check-{}", Uuid::now_v7());
    let ncco: Value = http
        .get(format!("{base}/webhooks/answer"))
        .query(&[
            ("from", from),
            ("to", to),
            ("uuid", &format!("{conversation}-in")),
            ("conversation_uuid", &conversation),
        ])
        .send()
        .await?
        .json()
        .await?;
    Ok(ncco[0]["action"].as_str().unwrap_or_default().to_owned())
}

/// What the database and the instances hold, against what was acknowledged.
async fn check(
    db: &PgPool,
    seen: &Seen,
    bases: &[String],
    http: &reqwest::Client,
    spool_dirs: &[PathBuf],
) -> anyhow::Result<Vec<String>> {
    let mut failures = Vec::new();
    if !seen.not_connected.is_empty() {
        failures.push(format!(
            "{} callers not connected, e.g. {:?}",
            seen.not_connected.len(),
            &seen.not_connected[..seen.not_connected.len().min(3)]
        ));
    }
    if seen.answers_over_limit > 0 {
        failures.push(format!(
            "{} answers took over {} ms (slowest {} ms)",
            seen.answers_over_limit,
            ANSWER_LIMIT.as_millis(),
            seen.slowest_answer.as_millis()
        ));
    }
    if !seen.not_acknowledged.is_empty() {
        failures.push(format!(
            "{} events not acknowledged, e.g. {:?}",
            seen.not_acknowledged.len(),
            &seen.not_acknowledged[..seen.not_acknowledged.len().min(3)]
        ));
    }
    let other: Vec<&String> = seen
        .create_statuses
        .keys()
        .filter(|s| *s != "201" && *s != "503")
        .collect();
    if !other.is_empty() {
        failures.push(format!(
            "creates answered other than 201 or 503: {:?}",
            seen.create_statuses
        ));
    }

    let stored_calls: Vec<String> =
        sqlx::query_scalar("SELECT conversation_uuid FROM calls WHERE conversation_uuid = ANY($1)")
            .bind(&seen.connected)
            .fetch_all(db)
            .await?;
    let stored_calls: HashSet<String> = stored_calls.into_iter().collect();
    let missing_calls = seen
        .connected
        .iter()
        .filter(|c| !stored_calls.contains(*c))
        .count();
    if missing_calls > 0 || stored_calls.len() != seen.connected.len() {
        failures.push(format!(
            "{} acknowledged calls are not in Postgres ({} stored of {})",
            missing_calls,
            stored_calls.len(),
            seen.connected.len()
        ));
    }

    let conversations: Vec<&String> = seen.acknowledged.iter().map(|e| &e.0).collect();
    let stored_events: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT conversation_uuid, leg_uuid, status, count(*) FROM call_events
          WHERE conversation_uuid = ANY($1) GROUP BY 1, 2, 3",
    )
    .bind(conversations)
    .fetch_all(db)
    .await?;
    let twice = stored_events.iter().filter(|e| e.3 != 1).count();
    let stored: HashSet<(String, String, String)> = stored_events
        .into_iter()
        .map(|(c, l, s, _)| (c, l, s))
        .collect();
    let missing_events = seen
        .acknowledged
        .iter()
        .filter(|e| !stored.contains(*e))
        .count();
    if missing_events > 0 || twice > 0 {
        failures.push(format!(
            "{missing_events} acknowledged events are not in Postgres, {twice} are there twice"
        ));
    }

    let stored_pairings: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pairings WHERE id = ANY($1)")
            .bind(&seen.created)
            .fetch_one(db)
            .await?;
    if stored_pairings != seen.created.len() as i64 {
        failures.push(format!(
            "{} of {} pairings answered 201 are not in Postgres",
            seen.created.len() as i64 - stored_pairings,
            seen.created.len()
        ));
    }

    for dir in spool_dirs {
        if dir.join("dead-letter.jsonl").exists() {
            failures.push(format!("{} holds dead-lettered records", dir.display()));
        }
    }
    for base in bases {
        let dead = metric(http, base, "records_dead_lettered_total").await;
        if dead > 0.0 {
            failures.push(format!("{base} dead-lettered {dead} records"));
        }
        if !ready(http, base).await {
            failures.push(format!("{base} is not ready"));
        }
        println!(
            "failover: {base}: route mirror reloads {}, spool writes failed {}",
            metric(http, base, "route_mirror_reloads_total").await,
            metric(http, base, "spool_write_failures_total").await
        );
    }
    println!(
        "failover: in Postgres: {} of {} calls, {} of {} events, {} of {} pairings",
        stored_calls.len(),
        seen.connected.len(),
        stored.len(),
        seen.acknowledged.len(),
        stored_pairings,
        seen.created.len()
    );
    Ok(failures)
}
