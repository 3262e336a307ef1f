//! `voice-proxy`: the number-masking voice proxy.

use clap::{Parser, Subcommand};
use voice_proxy_persistence::migrate;
use voice_proxy_server::config::Settings;
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
    /// Apply pending migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("voice-proxy: configuration error: {e:#}");
            std::process::exit(2);
        }
    };
    telemetry::init(settings.log_format, std::io::stdout);
    match cli.command {
        Command::Migrate => {
            let applied = migrate::run_with(&settings.database).await?;
            tracing::info!(applied = ?applied, "migrations applied");
        }
        Command::Serve => {
            let applied = migrate::run_with(&settings.database).await?;
            if !applied.is_empty() {
                tracing::info!(applied = ?applied, "migrations applied");
            }
            let app = Application::build(settings.clone())?;
            tracing::info!(addr = %settings.listen_addr, port = app.port(), "voice-proxy listening");
            app.run_until_stopped().await?;
            tracing::info!("voice-proxy stopped");
        }
    }
    Ok(())
}
