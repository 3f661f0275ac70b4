//! `gateway-bench`: measures what gatewayd adds to a request, against a bare hyper proxy and
//! a direct baseline, on loopback, in a few minutes.
//!
//! Performance is a feature of the product, so it is measured by a command anyone can run
//! (`cargo run --release -p gateway-bench`), never by timing in unit tests. One binary plays
//! every role: run without a subcommand it is the benchmark, and it starts itself again as
//! the mock provider (`mock`) and the reference proxy (`bare-proxy`), so each server is a
//! process of its own whose CPU and memory `/proc` can tell apart.
//!
//! With `--cluster` it also measures gatewayd in cluster mode (a fresh PostgreSQL database
//! and Redis) beside the single-server one: [`cluster`].
//!
//! With `--callgrind` it counts instructions per request instead, the bare proxy and
//! gatewayd each under callgrind: [`callgrind`].
//!
//! Modules: [`suite`] runs everything, [`load`] is the closed-loop load generator, [`mock`]
//! and [`bare_proxy`] are the servers ([`nginx`] a reference when installed), [`gatewayd`]
//! drives the daemon, [`process`] reads `/proc`, [`report`] prints tables and judges the
//! targets.

mod bare_proxy;
mod callgrind;
mod cluster;
mod gatewayd;
mod load;
mod mock;
mod nginx;
mod process;
mod report;
mod suite;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Benchmarks gatewayd against a bare hyper pass-through proxy on loopback.
///
/// Starts a fast mock provider, the bare proxy and gatewayd (with a key that has every
/// restriction and limit set), drives identical closed-loop load at each concurrency, JSON
/// and streaming, and prints req/s, p50/p99, added latency, CPU per request and peak RSS,
/// each as a ratio to the bare proxy; then the scale runs (many keys). Build gatewayd first:
/// `cargo build --release -p gatewayd -p gateway-bench`.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// Seconds measured per cell and round.
    #[arg(long, default_value_t = 1.5)]
    duration: f64,
    /// Seconds of warm-up per cell and round (connections open, nothing recorded). Under
    /// a second, gatewayd's p99 right after the bare proxy's round still shows the switch.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Rounds per cell: the servers take turns, round after round, and each cell reports
    /// all its rounds together. This machine's speed drifts by ±15 % over seconds (shared
    /// host); interleaving gives the proxies the same conditions, so their ratios hold.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrency levels (connections), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Modes: json, sse (events back to back), sse-split (one write per event).
    #[arg(long, value_delimiter = ',', default_value = "json,sse,sse-split")]
    modes: Vec<String>,
    /// Servers to measure: direct, bare, gatewayd, nginx (a streaming reverse proxy, for
    /// reference; measured only when installed), gatewayd-cluster (gatewayd with a
    /// PostgreSQL and a Redis: see --cluster), and bare-work (the bare proxy spinning
    /// --bare-work-us in every request: a calibration of what per-request work costs here).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,bare,gatewayd,nginx"
    )]
    servers: Vec<String>,
    /// Also measure gatewayd in cluster mode (adds gatewayd-cluster to --servers).
    #[arg(long)]
    cluster: bool,
    /// PostgreSQL server for cluster mode: a database of the run's own is created on it
    /// (the role must be allowed to CREATE DATABASE) and dropped at the end.
    #[arg(
        long,
        env = "GATEWAY_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// Redis for cluster mode; the daemon's keys (`gw:<cluster id>:…`) are deleted at the end.
    #[arg(
        long,
        env = "GATEWAY_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Start a redis-server of the run's own (from PATH) instead of --redis-url, so Redis's
    /// CPU and command counts are the benchmark's alone.
    #[arg(long)]
    private_redis: bool,
    /// Connect the cluster gatewayd straight to Redis: no relay hop in its latency, but no
    /// round trips counted.
    #[arg(long)]
    no_redis_relay: bool,
    /// The main run's benchmark keys (both gatewayds) without rate and spend limits.
    #[arg(long)]
    unlimited_key: bool,
    /// The rate limit (requests per minute) of the main run's benchmark keys (both
    /// gatewayds); keep it above what a minute of the run sends, or requests are refused.
    #[arg(long, default_value_t = gatewayd::DEFAULT_RPM)]
    key_rpm: u64,
    /// Microseconds of CPU the bare-work server spends in every request.
    #[arg(long, default_value_t = 3.0)]
    bare_work_us: f64,
    /// Runtime worker threads of the bare proxy and of gatewayd (its `worker_threads`
    /// setting, when the build has one). Default: one per core.
    #[arg(long)]
    workers: Option<usize>,
    /// Runtime worker threads of the mock provider.
    #[arg(long, default_value_t = 1)]
    mock_workers: usize,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    load_threads: usize,
    /// Keys in the main run's gatewayd (one is the benchmark's, the rest fillers).
    #[arg(long, default_value_t = 10)]
    keys: usize,
    /// Key counts for the scale runs, comma-separated; 0 for none.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    scale_keys: Vec<usize>,
    /// Concurrency of the scale runs.
    #[arg(long, default_value_t = 64)]
    scale_concurrency: usize,
    /// Keys created through the management API (timed) before the rest are seeded in SQLite.
    #[arg(long, default_value_t = 300)]
    api_sample: usize,
    /// The gatewayd binary; default: next to this one (target/release/gatewayd).
    #[arg(long)]
    gatewayd: Option<PathBuf>,
    /// Run the bare proxy through this program (it gets the bare proxy's command line), e.g.
    /// a script that execs it under valgrind, to profile the reference the same way.
    #[arg(long)]
    bare_wrapper: Option<PathBuf>,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Quick smoke run: 1 s cells, 0.3 s warm-up, JSON and SSE, 10,000 keys for scale.
    #[arg(long)]
    quick: bool,
    /// Seconds to wait, everything started, before the matrix (to attach a profiler).
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Count instructions per request instead: the bare proxy and gatewayd each under
    /// `valgrind --tool=callgrind`, a fixed number of identical requests per --modes (default
    /// here: json,sse), one at a time; prints each one's instructions per request, their
    /// ratio against issue #19's targets, and the top functions.
    #[arg(long)]
    callgrind: bool,
    /// Requests counted per mode and server in --callgrind (after --callgrind-warmup).
    #[arg(long, default_value_t = 2000)]
    callgrind_requests: usize,
    /// Requests sent before the counters are zeroed, per mode and server.
    #[arg(long, default_value_t = 200)]
    callgrind_warmup: usize,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// (internal) Run the mock provider.
    #[command(hide = true)]
    Mock {
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// (internal) Run the bare reference proxy in front of `upstream`.
    #[command(hide = true)]
    BareProxy {
        #[arg(long)]
        workers: usize,
        #[arg(long)]
        upstream: SocketAddr,
        /// Nanoseconds spent spinning in every request.
        #[arg(long, default_value_t = 0)]
        work_ns: u64,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.role {
        Some(Role::Mock { workers }) => mock::serve(*workers),
        Some(Role::BareProxy {
            workers,
            upstream,
            work_ns,
        }) => bare_proxy::serve(*workers, *upstream, Duration::from_nanos(*work_ns)),
        None if args.callgrind => options(&args).and_then(|mut options| {
            if args.modes == default_modes() {
                options.modes = vec![load::Mode::Json, load::Mode::Sse];
            }
            callgrind::run(
                &options,
                callgrind::Counts {
                    requests: args.callgrind_requests,
                    warmup: args.callgrind_warmup,
                },
            )
        }),
        None => options(&args).and_then(|options| suite::run(&options)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gateway-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--modes`'s default, as parsed.
fn default_modes() -> Vec<String> {
    ["json", "sse", "sse-split"].map(String::from).to_vec()
}

fn options(args: &Args) -> anyhow::Result<suite::Options> {
    let seconds = |what: &str, s: f64| {
        Duration::try_from_secs_f64(s)
            .with_context(|| format!("--{what} must be a duration in seconds"))
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut options = suite::Options {
        gatewayd: args.gatewayd.clone(),
        bare_wrapper: args.bare_wrapper.clone(),
        bare_work: Duration::try_from_secs_f64(args.bare_work_us / 1e6)
            .context("--bare-work-us must be a duration in microseconds")?,
        duration: seconds("duration", args.duration)?,
        warmup: seconds("warmup", args.warmup)?,
        rounds: args.rounds.max(1),
        concurrency: args.concurrency.clone(),
        modes: args
            .modes
            .iter()
            .map(|m| load::Mode::parse(m.trim()))
            .collect::<anyhow::Result<_>>()?,
        servers: args
            .servers
            .iter()
            .map(|s| report::Server::parse(s.trim()))
            .collect::<anyhow::Result<_>>()?,
        workers: args.workers.unwrap_or(cores).max(1),
        workers_explicit: args.workers.is_some(),
        mock_workers: args.mock_workers.max(1),
        load_threads: args.load_threads.max(1),
        keys: args.keys.max(1),
        scale_keys: args.scale_keys.iter().copied().filter(|&k| k > 0).collect(),
        scale_concurrency: args.scale_concurrency.max(1),
        api_sample: args.api_sample,
        out: args.out.clone(),
        hold: seconds("hold", args.hold)?,
        key_rpm: (!args.unlimited_key).then_some(args.key_rpm),
        cluster: cluster::Settings {
            postgres_url: args.postgres_url.clone(),
            redis_url: args.redis_url.clone(),
            private_redis: args.private_redis,
            relay: !args.no_redis_relay,
        },
    };
    if args.cluster && !options.servers.contains(&report::Server::GatewaydCluster) {
        options.servers.push(report::Server::GatewaydCluster);
    }
    if args.quick {
        options.duration = Duration::from_secs(1);
        options.warmup = Duration::from_millis(300);
        options.rounds = 1;
        options.modes.retain(|m| *m != load::Mode::SseSplit);
        options.scale_keys = vec![10_000];
    }
    if options.duration.is_zero() || options.concurrency.contains(&0) {
        anyhow::bail!("--duration and every --concurrency must be positive");
    }
    Ok(options)
}

/// The tokio runtime every role uses: multi-thread with `workers` workers, like gatewayd's.
pub fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .context("building the tokio runtime")
}
