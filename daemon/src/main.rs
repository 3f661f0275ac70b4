//! `gatewayd` entry point: flags, config, logging, signals. Everything else is in `run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use gatewayd::config::SecretUrl;
use gatewayd::store::migrate::{self, MigrateOptions};
use gatewayd::{Config, Listeners, SystemClock};

mod manual;

/// Gateway AI daemon: proxies OpenAI, Anthropic and Gemini behind scoped, metered proxy keys.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML config file; every field is optional and defaults are embedded.
    #[arg(long, env = "GATEWAYD_CONFIG", hide_env_values = true, global = true)]
    config: Option<PathBuf>,
    /// Check the configuration (FILE, else --config's, else the embedded defaults) as start-up
    /// would, and exit: 0 when it is valid, 1 with every error and its line on stderr.
    /// Binds nothing and creates nothing, so it runs beside a live daemon (like `nginx -t`).
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    check_config: Option<Option<PathBuf>>,
    /// Validate the configuration, print the data directory it resolves to, and exit (for
    /// scripts: install.sh finds a kept config's pid file and log there).
    #[arg(long)]
    print_data_dir: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Without a command, gatewayd serves.
#[derive(Debug, Subcommand)]
enum Command {
    /// Copy a stopped single server's SQLite data (keys as hashes, admin tokens, rotations,
    /// audit, usage) into an empty PostgreSQL store, for cluster mode (SPEC §9).
    ///
    /// Everything is copied in one transaction and counted on both sides before it commits:
    /// on any error or difference the PostgreSQL store is left as it was. Refused while a
    /// gatewayd runs on the data directory, and when the PostgreSQL store is not empty. Run
    /// it before starting the replicas.
    MigrateStore(MigrateStoreArgs),
    /// Print the manual page, or write every page into a directory (for packagers).
    #[command(hide = true)]
    Man(ManArgs),
}

#[derive(Debug, clap::Args)]
struct ManArgs {
    /// Write every page (gatewayd.1 and one per command) into DIR instead of gatewayd.1 to
    /// stdout.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct MigrateStoreArgs {
    /// The PostgreSQL store to copy into (postgres://user:password@host:port/database).
    /// Default: the config's [cluster] postgres_url_env or postgres_url_file, which is the
    /// better way: a URL given here, password and all, is visible to every user of this
    /// machine in `ps` and may land in the shell's history.
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// The single server's data directory (its gateway.db). Default: the config's data_dir.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.command.is_some() && (args.check_config.is_some() || args.print_data_dir) {
        use clap::CommandFactory;
        Args::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--check-config and --print-data-dir are not used with a command",
            )
            .exit();
    }
    if let Some(Command::Man(man)) = &args.command {
        return manual::run(man.out_dir.as_deref());
    }
    init_logging();
    if let Some(file) = args.check_config {
        return check_config(file.or(args.config).as_deref());
    }
    if args.print_data_dir && args.command.is_none() {
        use std::io::Write;
        let data_dir = match Config::data_dir_in(args.config.as_deref()) {
            Ok(data_dir) => data_dir,
            Err(err) => {
                eprintln!("gatewayd: invalid configuration: {err:#}");
                return ExitCode::from(78); // EX_CONFIG
            }
        };
        let mut out = std::io::stdout().lock();
        return match writeln!(out, "{}", data_dir.display()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let config = match Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("gatewayd: invalid configuration: {err:#}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    match args.command {
        Some(Command::MigrateStore(migrate)) => return migrate_store(migrate, config),
        Some(Command::Man(_)) | None => {}
    }
    // Before any listener: the connection caps must fit the open-files limit (raised if
    // need be), or a flood of one listener could starve the others (`fd_budget`).
    if let Err(err) = gatewayd::fd_budget::apply(&config) {
        tracing::error!(error = format!("{err:#}"), "cannot start");
        eprintln!("gatewayd: {err:#}");
        return ExitCode::FAILURE;
    }
    // The main runtime runs the control plane (management API, usage writer, accepting proxy
    // connections); proxy connections are served on their own per-core event loops
    // (`gatewayd::event_loops`), started by `run`.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("gatewayd: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Handlers are installed before anything is announced as ready, so a SIGTERM sent
        // the moment the ready line appears still drains instead of killing the process.
        let shutdown = shutdown_signal()?;
        let listeners = Listeners::bind(&config).await?;
        let socket = listeners.admin_socket_path.clone();
        let result = gatewayd::run(config, listeners, Arc::new(SystemClock::new()), shutdown).await;
        if result.is_err() {
            // Bound by this process (a live daemon's socket refuses the bind): a start that
            // failed after it leaves no stale socket behind.
            let _ = std::fs::remove_file(&socket);
        }
        result
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

/// `gatewayd --check-config`: warnings and errors on stderr, each naming the file and its
/// line; 0 when there is no error, 1 otherwise (what `nginx -t` answers, and what
/// `install.sh` tests before it restarts anything).
fn check_config(path: Option<&std::path::Path>) -> ExitCode {
    use std::io::Write;
    let report = gatewayd::config_check::check_file(path);
    let shown = path.map_or_else(
        || "(embedded defaults)".to_owned(),
        |path| path.display().to_string(),
    );
    let mut stderr = std::io::stderr().lock();
    let mut text = String::new();
    for warning in &report.warnings {
        text.push_str(&format!(
            "gatewayd: {shown}: warning: {}\n",
            warning.message
        ));
    }
    for error in &report.errors {
        text.push_str(&format!("gatewayd: {shown}: {}\n", error.message));
    }
    let valid = report.errors.is_empty();
    text.push_str(&match (report.errors.len(), report.stopped_early) {
        (0, _) => format!("gatewayd: {shown}: the configuration is valid\n"),
        (1, _) => format!("gatewayd: {shown}: the configuration is invalid (1 error)\n"),
        (n, false) => format!("gatewayd: {shown}: the configuration is invalid ({n} errors)\n"),
        (n, true) => format!(
            "gatewayd: {shown}: the configuration is invalid (the check stopped after {n} \
             errors: correct them and check again)\n"
        ),
    });
    // Nothing else to report to if stderr is gone; the exit code still says it.
    drop(stderr.write_all(text.as_bytes()));
    if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `gatewayd migrate-store`: the summary on stdout, errors on stderr. Neither ever shows the
/// database password (errors name host, port and database).
fn migrate_store(args: MigrateStoreArgs, config: Config) -> ExitCode {
    let postgres_url = match (args.to, config.cluster) {
        (Some(text), _) => match SecretUrl::postgres(&text) {
            Ok(url) => url,
            Err(err) => {
                eprintln!("gatewayd migrate-store: --to: {err}");
                return ExitCode::from(64); // EX_USAGE
            }
        },
        (None, Some(cluster)) => cluster.postgres_url,
        (None, None) => {
            eprintln!(
                "gatewayd migrate-store: no PostgreSQL store to copy into: give the config a \
                 [cluster] section (postgres_url_env or postgres_url_file), or --to URL"
            );
            return ExitCode::from(64); // EX_USAGE
        }
    };
    let data_dir = args.data_dir.unwrap_or(config.data_dir);
    tracing::info!(data_dir = %data_dir.display(), postgres = %postgres_url, "copying the SQLite store into PostgreSQL");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("gatewayd: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let options = MigrateOptions {
        data_dir,
        postgres_url: postgres_url.expose(),
    };
    match runtime.block_on(migrate::run(&options)) {
        Ok(summary) => {
            use std::io::Write;
            match writeln!(std::io::stdout().lock(), "{summary}") {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(err) => {
            eprintln!("gatewayd migrate-store: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `GATEWAYD_LOG` takes an EnvFilter (default `info`); `GATEWAYD_LOG_FORMAT=json` for JSON
/// lines. Logs go to stderr (journald under systemd).
/// Logging from `GATEWAYD_LOG` (a tracing filter, default `info`) and `GATEWAYD_LOG_FORMAT`
/// (`json` or `text`). A value that cannot be used is said once, in the log itself, and the
/// default kept: silently ignoring it left operators without the debug log they asked for.
fn init_logging() {
    let mut problems = Vec::new();
    let filter = match std::env::var("GATEWAYD_LOG") {
        Err(_) => tracing_subscriber::EnvFilter::new("info"),
        Ok(text) => tracing_subscriber::EnvFilter::try_new(&text).unwrap_or_else(|err| {
            problems.push(format!(
                "GATEWAYD_LOG={text:?} is not a log filter ({err}); using \"info\""
            ));
            tracing_subscriber::EnvFilter::new("info")
        }),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let format = std::env::var("GATEWAYD_LOG_FORMAT").ok();
    match format.as_deref() {
        Some("json") => builder.json().init(),
        None | Some("text") => builder.with_ansi(false).init(),
        Some(other) => {
            problems.push(format!(
                "GATEWAYD_LOG_FORMAT={other:?} is neither \"json\" nor \"text\"; using text"
            ));
            builder.with_ansi(false).init();
        }
    }
    for problem in problems {
        tracing::warn!("{problem}");
    }
}

/// Installs SIGTERM and SIGINT handlers now; the returned future completes on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("received SIGTERM"),
            _ = int.recv() => tracing::info!("received SIGINT"),
        }
    })
}
