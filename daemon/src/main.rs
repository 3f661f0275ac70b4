//! `gatewayd` entry point: flags, config, logging, signals. Everything else is in `run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use gatewayd::{Config, Listeners, SystemClock};

/// Gateway AI daemon: proxies OpenAI, Anthropic and Gemini behind scoped, metered proxy keys.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML config file; every field is optional and defaults are embedded.
    #[arg(long, env = "GATEWAYD_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration, print nothing, and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    let config = match Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("gatewayd: invalid configuration: {err:#}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    if args.check_config {
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("gatewayd: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listeners = Listeners::bind(&config).await?;
        gatewayd::run(config, listeners, Arc::new(SystemClock), shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "gatewayd stopped with an error");
            eprintln!("gatewayd: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `GATEWAYD_LOG` takes an EnvFilter (default `info`); `GATEWAYD_LOG_FORMAT=json` for JSON
/// lines. Logs go to stderr (journald under systemd).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEWAYD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("GATEWAYD_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.with_ansi(false).init();
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT"),
    }
}
