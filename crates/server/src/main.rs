//! `voice-proxy`: the number-masking voice proxy.

use std::str::FromStr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sqlx::postgres::PgConnectOptions;
use voice_proxy_persistence::api_keys::{self, ApiKey, ApiKeyId, NewApiKey, Scope};
use voice_proxy_persistence::callbacks::Outbox;
use voice_proxy_persistence::durable::dead_letter;
use voice_proxy_persistence::{PoolSettings, connect_lazy, migrate, retention};
use voice_proxy_server::config::{
    DatabaseSettings, RetentionSettings, Settings, spool_dir_from_env,
};
use voice_proxy_server::startup::Application;
use voice_proxy_server::telemetry;

#[derive(Parser)]
#[command(
    name = "voice-proxy",
    version,
    about = "A number-masking voice proxy for Vonage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations, then serve the webhooks and the admin API.
    Serve,
    /// Apply pending migrations and exit. Needs only DATABASE_URL.
    Migrate,
    /// Create, list and revoke admin API keys. Needs only DATABASE_URL; applies pending
    /// migrations first.
    #[command(subcommand, name = "api-keys")]
    ApiKeys(ApiKeysCommand),
    /// Replace the real numbers of pairings over for longer than RETENTION_DAYS by their keyed
    /// hash (RETENTION_HASH_KEY), in pairings, call records and events, and in the dead-letter
    /// file of SPOOL_DIR, then exit. Needs only DATABASE_URL, SPOOL_DIR and the RETENTION_
    /// settings.
    Purge,
    /// Records Postgres refused, kept in the dead-letter file of SPOOL_DIR.
    #[command(subcommand, name = "dead-letter")]
    DeadLetter(DeadLetterCommand),
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// Write every dead-lettered record to the database again, once the cause is fixed; those
    /// still refused stay in the file. Needs only DATABASE_URL and SPOOL_DIR; applies pending
    /// migrations first.
    Replay,
}

#[derive(Subcommand)]
enum ApiKeysCommand {
    /// Create a key and print its secret on standard output. The secret is shown this once.
    Create {
        /// Who or what uses the key, e.g. `backend` (1 to 64 characters).
        #[arg(long)]
        name: String,
        /// A scope of the key: `admin` (everything), `calls:read` (reading call records) or
        /// `recordings:read` (listening to call recordings).
        /// Repeat the option, or separate scopes with commas.
        #[arg(long = "scope", required = true, value_delimiter = ',', value_parser = parse_scope)]
        scopes: Vec<Scope>,
    },
    /// List every key (revoked ones too), without secrets.
    List,
    /// Revoke a key: it authenticates nothing from now on.
    Revoke {
        /// The key's id, as `list` shows it.
        id: String,
    },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s.trim()).ok_or_else(|| {
        let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown scope; use one of {}", known.join(", "))
    })
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve => serve().await,
        Command::Migrate => migrate_command().await,
        Command::ApiKeys(command) => api_keys_command(command).await,
        Command::Purge => purge_command().await,
        Command::DeadLetter(DeadLetterCommand::Replay) => replay_command().await,
    };
    if let Err(e) = result {
        match e.downcast_ref::<ConfigurationError>() {
            Some(ConfigurationError(e)) => {
                eprintln!("voice-proxy: configuration error: {e:#}");
                std::process::exit(2);
            }
            None => {
                eprintln!("voice-proxy: {e:#}");
                std::process::exit(1);
            }
        }
    }
}

/// Settings that stop the service before it starts (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct ConfigurationError(anyhow::Error);

/// Applies pending migrations, then serves until SIGINT or SIGTERM.
async fn serve() -> anyhow::Result<()> {
    let settings = Settings::from_env().map_err(ConfigurationError)?;
    telemetry::init(settings.server.log_format, std::io::stdout);
    let applied = migrate::run_with(&settings.database.options).await?;
    if !applied.is_empty() {
        tracing::info!(applied = ?applied, "migrations applied");
    }
    let listen_addr = settings.server.listen_addr;
    let app = Application::build(settings)?;
    tracing::info!(addr = %listen_addr, port = app.port(), "voice-proxy listening");
    app.run_until_stopped().await?;
    tracing::info!("voice-proxy stopped");
    Ok(())
}

/// The database of `DATABASE_URL` (the same default as `serve`), without the rest of the
/// settings: migrating and managing keys must not need `ADMIN_TOKEN`.
fn database_options() -> anyhow::Result<PgConnectOptions> {
    Ok(DatabaseSettings::from_process_env("voice-proxy cli")
        .map_err(ConfigurationError)?
        .options)
}

async fn migrate_command() -> anyhow::Result<()> {
    let applied = migrate::run_with(&database_options()?).await?;
    println!(
        "applied {} migration(s): {}",
        applied.len(),
        applied.join(", ")
    );
    Ok(())
}

async fn purge_command() -> anyhow::Result<()> {
    let retention = RetentionSettings::from_process_env().map_err(ConfigurationError)?;
    let Some(after) = retention.after else {
        eprintln!("voice-proxy: RETENTION_DAYS is 0: numbers are kept; nothing to purge");
        return Ok(());
    };
    let options = database_options()?;
    migrate::run_with(&options)
        .await
        .context("could not apply migrations")?;
    let pool = connect_lazy(options, &PoolSettings::default());
    let report = retention::purge(&pool, after, &retention.hash_key).await?;
    let spool_dir = spool_dir_from_env();
    let dead_letters = if spool_dir.is_dir() {
        dead_letter::purge(&spool_dir, after, &retention.hash_key)
            .with_context(|| format!("could not purge {}", spool_dir.display()))?
    } else {
        0
    };
    println!(
        "replaced the numbers of {} participants, {} calls and {} events older than {} days, \
         and of {} dead-lettered records; deleted {} callback messages",
        report.participants,
        report.calls,
        report.events,
        after.num_days(),
        dead_letters,
        report.callback_messages,
    );
    Ok(())
}

async fn replay_command() -> anyhow::Result<()> {
    let options = database_options()?;
    migrate::run_with(&options)
        .await
        .context("could not apply migrations")?;
    let spool_dir = spool_dir_from_env();
    if !spool_dir.is_dir() {
        anyhow::bail!(
            "SPOOL_DIR {} is not a folder: set SPOOL_DIR to the spool of the instance whose dead-letter file to replay",
            spool_dir.display()
        );
    }
    let pool = connect_lazy(options, &PoolSettings::default());
    // The messages the replayed records make are written for every endpoint that wants them;
    // a running instance's dispatcher sends them.
    let report = dead_letter::replay(&pool, &Outbox::new(), &spool_dir).await?;
    pool.close().await;
    println!(
        "replayed the dead-letter file of {}: {} stored, {} already stored, {} refused again, {} not tried (database unreachable), {} lines that are not records",
        spool_dir.display(),
        report.stored,
        report.duplicates,
        report.refused,
        report.not_tried,
        report.unreadable
    );
    let left = report.refused + report.not_tried + report.unreadable;
    if left > 0 {
        anyhow::bail!(
            "{left} lines stay in {}",
            spool_dir.join(dead_letter::FILE).display()
        );
    }
    Ok(())
}

async fn api_keys_command(command: ApiKeysCommand) -> anyhow::Result<()> {
    let options = database_options()?;
    let applied = migrate::run_with(&options)
        .await
        .context("could not apply migrations")?;
    if !applied.is_empty() {
        eprintln!("voice-proxy: applied migrations {}", applied.join(", "));
    }
    let pool = connect_lazy(
        options,
        &PoolSettings {
            max_connections: 1,
            ..PoolSettings::default()
        },
    );
    let result = match command {
        ApiKeysCommand::Create { name, scopes } => {
            let new = NewApiKey::new(&name, &scopes).map_err(|e| anyhow::anyhow!("{e}"))?;
            let issued = api_keys::create(&pool, &new).await?;
            println!("{}", issued.secret.expose());
            eprintln!(
                "voice-proxy: created API key {} ({:?}, scopes {}). The secret above is shown \
                 only now: store it, then send it as `Authorization: Bearer <secret>`.",
                issued.key.id,
                issued.key.name,
                scope_list(&issued.key),
            );
            Ok(())
        }
        ApiKeysCommand::List => {
            let mut keys = Vec::new();
            let mut after = None;
            loop {
                let page = api_keys::list(&pool, after, 500).await?;
                keys.extend(page.items);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            print_table(&keys);
            Ok(())
        }
        ApiKeysCommand::Revoke { id } => {
            let id = ApiKeyId::from_str(&id).map_err(|e| anyhow::anyhow!("{id:?} is {e}"))?;
            match api_keys::revoke(&pool, id).await? {
                Some(key) => {
                    println!(
                        "revoked API key {} ({:?}) at {}",
                        key.id,
                        key.name,
                        key.revoked_at.map(|t| t.to_rfc3339()).unwrap_or_default()
                    );
                    Ok(())
                }
                None => Err(anyhow::anyhow!("no API key {id}")),
            }
        }
    };
    pool.close().await;
    result
}

fn scope_list(key: &ApiKey) -> String {
    key.scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// One key per line, in aligned columns.
fn print_table(keys: &[ApiKey]) {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| "-".to_owned())
    };
    let mut rows = vec![[
        "ID".to_owned(),
        "NAME".to_owned(),
        "SCOPES".to_owned(),
        "CREATED".to_owned(),
        "LAST USED".to_owned(),
        "REVOKED".to_owned(),
    ]];
    rows.extend(keys.iter().map(|k| {
        [
            k.id.to_string(),
            k.name.clone(),
            scope_list(k),
            time(Some(k.created_at)),
            time(k.last_used_at),
            time(k.revoked_at),
        ]
    }));
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
