//! voice-proxy-bench: a load generator for voice-proxy over HTTP.
//!
//! - `pairings`: N clients create pairings (`POST /v1/pairings`) as fast as they are answered,
//!   each with two random people of one country; prints creates/s, latency percentiles and the
//!   count of each status.
//! - `answer`: M clients play Vonage's answer webhook (`GET /webhooks/answer`) for (caller, proxy
//!   number) pairs read from a file or sampled from the database, optionally at a fixed rate;
//!   prints requests/s, latency percentiles and how many calls were connected.
//!
//! - `receiver`: a callback endpoint that answers at once, or never (`just bench-callbacks`).
//!
//! - `failover`: steady calls and creates through a crash, a failover and a switchover of a
//!   Patroni cluster, then checks that nothing acknowledged was lost (`just test-ha`).
//!
//! `scripts/bench-pairings.sh` (`just bench-pairings`) seeds a database and runs both.

mod failover;
mod numbers;
mod receiver;
mod stats;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use crate::numbers::Country;
use crate::stats::Recorder;

#[derive(Debug, Parser)]
#[command(name = "voice-proxy-bench", about = "Load generator for voice-proxy")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Create pairings over HTTP with concurrent clients for a fixed time.
    Pairings(PairingsArgs),
    /// Call the answer webhook for known (caller, proxy number) pairs.
    Answer(AnswerArgs),
    /// Calls and creates through faults of a Patroni cluster; checks nothing acknowledged is lost.
    Failover(failover::FailoverArgs),
    /// A callback endpoint that answers 204 at once, or never.
    Receiver(receiver::ReceiverArgs),
}

#[derive(Debug, Clone, Args)]
struct Load {
    /// Base URL of the service.
    #[arg(long, env = "BENCH_BASE_URL", default_value = "http://127.0.0.1:8080")]
    base_url: String,
    /// Concurrent clients (each keeps one request in flight).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Measured duration, in seconds.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Unmeasured warm-up before it, in seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Total requests per second over all clients, paced evenly; unset: as fast as answered.
    /// Latency is then measured from each request's scheduled time.
    #[arg(long)]
    rate: Option<f64>,
    /// Per-request timeout, in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Also write the figures as KEY=value lines to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct PairingsArgs {
    #[command(flatten)]
    load: Load,
    /// Admin bearer token.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    /// TTL of each pairing created.
    #[arg(long, default_value_t = 3600)]
    ttl_seconds: u64,
    /// Send no `reference` (by default each pairing has a unique one, as an order id).
    #[arg(long)]
    no_reference: bool,
    /// Seed of the random people, for a repeatable sequence per client.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Debug, Args)]
struct AnswerArgs {
    #[command(flatten)]
    load: Load,
    /// File of `caller proxy_number` lines (whitespace-separated E.164 digits).
    #[arg(long, conflicts_with = "database_url")]
    pairs_file: Option<PathBuf>,
    /// Sample the pairs from active participants in this database instead.
    #[arg(long)]
    database_url: Option<String>,
    /// How many pairs to sample from the database.
    #[arg(long, default_value_t = 20_000)]
    sample: i64,
    /// A name for this run in the output (e.g. `small`, `1M`).
    #[arg(long, default_value = "answer")]
    label: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        Mode::Pairings(args) => pairings(args).await,
        Mode::Answer(args) => answer(args).await,
        Mode::Failover(args) => failover::run(args).await,
        Mode::Receiver(args) => receiver::run(args).await,
    }
}

fn client(load: &Load) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs_f64(load.timeout))
        .pool_max_idle_per_host(load.clients)
        .build()
        .context("building the HTTP client")
}

/// What one request came to: a label for the outcome count, and whether it did what was asked.
struct Outcome {
    label: String,
    ok: bool,
}

impl Outcome {
    fn error(e: &reqwest::Error) -> Self {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else {
            "other"
        };
        Self {
            label: format!("error: {kind}"),
            ok: false,
        }
    }
}

/// Runs `clients` loops of `request` for the warm-up then the measured time; records the requests
/// started in the measured window. Returns the merged record and the measured seconds (until
/// the last request in flight at the end was answered).
async fn run<F, Fut>(load: &Load, request: F) -> anyhow::Result<(Recorder, f64)>
where
    F: Fn(usize, u64) -> Fut + Clone + 'static,
    Fut: Future<Output = Outcome> + 'static,
{
    if load.clients == 0 || load.duration <= 0.0 {
        bail!("--clients and --duration must be positive");
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(load.warmup.max(0.0));
    let end = measure_from + Duration::from_secs_f64(load.duration);
    // Each client sends one request every `interval` when paced.
    let interval = load
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(load.clients as f64 / r));
    let clients = load.clients as f64;
    let local = tokio::task::LocalSet::new();
    let mut handles = Vec::with_capacity(load.clients);
    for client_no in 0..load.clients {
        let request = request.clone();
        handles.push(local.spawn_local(async move {
            let mut rec = Recorder::default();
            // Paced clients start spread over one interval, not all at once.
            let mut next =
                start + interval.map_or(Duration::ZERO, |i| i.mul_f64(client_no as f64 / clients));
            let mut n: u64 = 0;
            loop {
                if interval.is_none() {
                    next = Instant::now();
                } else if next > Instant::now() {
                    tokio::time::sleep_until(next).await;
                }
                if next >= end {
                    break;
                }
                let outcome = request(client_no, n).await;
                n += 1;
                if next >= measure_from {
                    rec.record(next.elapsed(), &outcome.label, outcome.ok);
                }
                if let Some(i) = interval {
                    next += i;
                }
            }
            rec
        }));
    }
    let merged = local
        .run_until(async move {
            let mut merged = Recorder::default();
            for h in handles {
                merged.merge(&h.await.context("a client task failed")?);
            }
            anyhow::Ok(merged)
        })
        .await?;
    let measured = Instant::now()
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(load.duration);
    Ok((merged, measured))
}

fn report(
    title: &str,
    load: &Load,
    rec: &Recorder,
    measured: f64,
    ok_name: &str,
    prefix: &str,
) -> anyhow::Result<String> {
    let ok_rate = rec.ok() as f64 / measured;
    let mut out = String::new();
    writeln!(
        out,
        "{title}: {} clients, {:.1} s measured after {:.1} s warm-up, {}{}",
        load.clients,
        measured,
        load.warmup,
        load.base_url,
        load.rate
            .map(|r| format!(", paced at {r}/s"))
            .unwrap_or_default()
    )?;
    writeln!(
        out,
        "  requests   {:>9}  ({:.1}/s)",
        rec.requests(),
        rec.requests() as f64 / measured
    )?;
    writeln!(out, "  {ok_name:<10} {:>9}  ({ok_rate:.1}/s)", rec.ok())?;
    writeln!(
        out,
        "  latency of {ok_name} (ms): {}",
        rec.ok_latency().line()
    )?;
    if rec.ok() != rec.requests() {
        writeln!(
            out,
            "  latency of all requests (ms): {}",
            rec.all_latency().line()
        )?;
    }
    let counts: Vec<String> = rec
        .outcomes()
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    writeln!(out, "  by outcome: {}", counts.join("; "))?;
    print!("{out}");

    if let Some(path) = &load.summary {
        let mut s = String::new();
        writeln!(s, "{prefix}CLIENTS={}", load.clients)?;
        writeln!(s, "{prefix}SECONDS={measured:.3}")?;
        writeln!(s, "{prefix}REQUESTS={}", rec.requests())?;
        writeln!(s, "{prefix}OK={}", rec.ok())?;
        writeln!(s, "{prefix}NOT_OK={}", rec.requests() - rec.ok())?;
        writeln!(s, "{prefix}OK_PER_SEC={ok_rate:.2}")?;
        s.push_str(&rec.ok_latency().env_lines(prefix));
        let outcomes = counts.join("; ").replace('\'', "");
        writeln!(s, "{prefix}OUTCOMES='{outcomes}'")?;
        std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(out)
}

async fn pairings(args: PairingsArgs) -> anyhow::Result<()> {
    let http = client(&args.load)?;
    let url: Rc<str> = format!("{}/v1/pairings", args.load.base_url.trim_end_matches('/')).into();
    let auth: Rc<str> = format!("Bearer {}", args.token).into();
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let ttl = args.ttl_seconds;
    let with_reference = !args.no_reference;
    let rngs: Rc<Vec<std::cell::RefCell<fastrand::Rng>>> = Rc::new(
        (0..args.load.clients)
            .map(|c| std::cell::RefCell::new(fastrand::Rng::with_seed(seed ^ ((c as u64) << 32))))
            .collect(),
    );
    let (rec, measured) = run(&args.load, move |client_no, _n| {
        let (http, url, auth, rngs) = (http.clone(), url.clone(), auth.clone(), rngs.clone());
        async move {
            let (a, b) = {
                let mut rng = rngs[client_no].borrow_mut();
                let country = Country::random(&mut rng);
                numbers::two_people(&mut rng, country)
            };
            let mut body = json!({
                "participants": [
                    {"number": a, "label": "driver"},
                    {"number": b, "label": "passenger"},
                ],
                "ttl_seconds": ttl,
            });
            if with_reference {
                body["reference"] = json!(format!("bench-{}", Uuid::now_v7()));
            }
            let sent = http
                .post(&*url)
                .header(reqwest::header::AUTHORIZATION, &*auth)
                .json(&body)
                .send()
                .await;
            match sent {
                Err(e) => Outcome::error(&e),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if status == 201 {
                        // Read the body so the connection is reused.
                        let _ = resp.bytes().await;
                        Outcome {
                            label: "201".into(),
                            ok: true,
                        }
                    } else {
                        let code =
                            resp.json::<Value>().await.ok().and_then(|v| {
                                v.get("code").and_then(Value::as_str).map(str::to_owned)
                            });
                        Outcome {
                            label: match code {
                                Some(code) => format!("{status} {code}"),
                                None => status.to_string(),
                            },
                            ok: false,
                        }
                    }
                }
            }
        }
    })
    .await?;
    report("pairings", &args.load, &rec, measured, "created", "CREATE_")?;
    Ok(())
}

async fn load_pairs(args: &AnswerArgs) -> anyhow::Result<Vec<(String, String)>> {
    if let Some(path) = &args.pairs_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let pairs: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.to_owned(), f.next()?.to_owned()))
            })
            .collect();
        return Ok(pairs);
    }
    let Some(url) = &args.database_url else {
        bail!("give --pairs-file or --database-url");
    };
    let pool = sqlx::PgPool::connect(url)
        .await
        .context("connecting to the database to sample pairs")?;
    let pairs: Vec<(String, String)> = sqlx::query_as(
        "SELECT number, proxy_number FROM participants
          WHERE active_during @> now() ORDER BY random() LIMIT $1",
    )
    .bind(args.sample)
    .fetch_all(&pool)
    .await
    .context("sampling (caller, proxy number) pairs")?;
    pool.close().await;
    Ok(pairs)
}

async fn answer(args: AnswerArgs) -> anyhow::Result<()> {
    let pairs = load_pairs(&args).await?;
    if pairs.is_empty() {
        bail!("no (caller, proxy number) pairs to call with");
    }
    println!(
        "{}: {} (caller, proxy number) pairs",
        args.label,
        pairs.len()
    );
    let http = client(&args.load)?;
    let url: Rc<str> = format!(
        "{}/webhooks/answer",
        args.load.base_url.trim_end_matches('/')
    )
    .into();
    let pairs = Rc::new(pairs);
    let clients = args.load.clients;
    let (rec, measured) = run(&args.load, move |client_no, n| {
        let (http, url, pairs) = (http.clone(), url.clone(), pairs.clone());
        async move {
            // Each client walks the pairs from its own offset, so the whole list is used.
            let i = (client_no as u64 + n * clients as u64) as usize % pairs.len();
            let (from, to) = &pairs[i];
            let leg = Uuid::new_v4().to_string();
            let conversation = format!("CON-{}", Uuid::new_v4());
            let sent = http
                .get(&*url)
                .query(&[
                    ("from", from.as_str()),
                    ("to", to.as_str()),
                    ("uuid", leg.as_str()),
                    ("conversation_uuid", conversation.as_str()),
                ])
                .send()
                .await;
            match sent {
                Err(e) => Outcome::error(&e),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.text().await.unwrap_or_default();
                    let action = if body.contains("\"action\":\"connect\"") {
                        "connect"
                    } else if body.contains("\"action\":\"talk\"") {
                        "talk"
                    } else {
                        "other"
                    };
                    Outcome {
                        label: format!("{status} {action}"),
                        ok: status == 200,
                    }
                }
            }
        }
    })
    .await?;
    report(
        &format!("answer ({})", args.label),
        &args.load,
        &rec,
        measured,
        "answered",
        "ANSWER_",
    )?;
    Ok(())
}
