//! The benchmark run: start the servers, measure every cell, run the scale checks, report.
//!
//! Order matters on a small machine: the three servers of a cell (direct, bare, gatewayd) are
//! measured back to back, so slow drift in the machine's state hits all three alike and the
//! ratios stay fair. Every server is its own process; the load generator runs here, on its
//! own runtime with a fixed thread count. Everything binds to 127.0.0.1 and every loop is
//! bounded by the cell's duration.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cluster::{self, Cluster};
use crate::gatewayd::{Gateway, Home, Launcher, seed_keys};
use crate::load::{self, Mode, Shape, Target};
use crate::process::Proc;
use crate::report::{Cell, Run, ScaleRow, Server};

/// What to run (from the command line).
#[derive(Clone, Debug)]
pub struct Options {
    pub gatewayd: Option<PathBuf>,
    pub bare_wrapper: Option<PathBuf>,
    /// CPU the `bare-work` server spends in every request.
    pub bare_work: Duration,
    pub duration: Duration,
    pub warmup: Duration,
    /// Interleaved rounds per cell (see `--rounds`).
    pub rounds: usize,
    pub concurrency: Vec<usize>,
    pub modes: Vec<Mode>,
    pub servers: Vec<Server>,
    pub workers: usize,
    pub workers_explicit: bool,
    pub mock_workers: usize,
    pub load_threads: usize,
    pub keys: usize,
    pub scale_keys: Vec<usize>,
    pub scale_concurrency: usize,
    pub api_sample: usize,
    pub out: Option<PathBuf>,
    /// Seconds to wait with everything running before the matrix (to attach a profiler).
    pub hold: Duration,
    /// The rate limit of the main run's keys (both gatewayds), which have a spend limit too;
    /// `None`: neither limit.
    pub key_rpm: Option<u64>,
    /// The cluster gatewayd's backends (used when `servers` has `gatewayd-cluster`).
    pub cluster: cluster::Settings,
}

pub const UPSTREAM_PATH: &str = "/v1/chat/completions";
pub const GATEWAY_PATH: &str = "/openai/v1/chat/completions";

pub fn run(options: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let exe = std::env::current_exe().context("locating gateway-bench")?;
    let binary = gatewayd_binary(options, &exe)?;
    let work = tempfile::Builder::new()
        .prefix("gateway-bench-")
        .tempdir()
        .context("creating a scratch directory")?;

    let mock = spawn_mock(&exe, options)?;
    let mock_addr = listening_addr(&mock)?;
    let bare = spawn_bare(&exe, options, mock_addr, Duration::ZERO)?;
    let bare_addr = listening_addr(&bare)?;
    let bare_work = if options.servers.contains(&Server::BareWork) {
        let proc = spawn_bare(&exe, options, mock_addr, options.bare_work)?;
        let addr = listening_addr(&proc)?;
        Some((proc, addr))
    } else {
        None
    };

    // nginx, a reference, when asked for and installed (else a line in the header says so).
    let nginx = match (
        options.servers.contains(&Server::Nginx),
        crate::nginx::find(),
    ) {
        (true, Some(nginx)) => Some(crate::nginx::spawn(
            &nginx,
            &work.path().join("nginx"),
            mock_addr,
            options.workers,
        )?),
        _ => None,
    };

    let accepts_workers = Launcher::accepts_worker_threads(&binary, work.path())?;
    if options.workers_explicit && !accepts_workers {
        eprintln!(
            "gateway-bench: this gatewayd has no worker_threads setting; it runs its default (one worker per core)"
        );
    }
    let launcher = Launcher {
        binary: binary.clone(),
        upstream: mock_addr,
        worker_threads: accepts_workers.then_some(options.workers),
    };

    let runtime = crate::runtime(options.load_threads)?;
    let mut run = runtime.block_on(async {
        let home = Home::new(work.path().join("main"))?;
        launcher.write_config(&home)?;
        let gateway = launcher.start(&home)?;
        let mut admin = gateway.admin().connect().await?;
        let (_, secret) = admin.create_key_with("bench", options.key_rpm).await?;
        for i in 1..options.keys {
            admin.create_key_with(&format!("filler-{i}"), options.key_rpm).await?;
        }
        let cluster = if options.servers.contains(&Server::GatewaydCluster) {
            let home = Home::new(work.path().join("cluster"))?;
            let cluster = Cluster::start(&launcher, home, &options.cluster).await?;
            let mut admin = cluster.gateway.admin().connect().await?;
            let (_, secret) = admin.create_key_with("bench", options.key_rpm).await?;
            for i in 1..options.keys {
                admin.create_key_with(&format!("filler-{i}"), options.key_rpm).await?;
            }
            let observer = cluster.observer().await?;
            Some((cluster, secret, observer))
        } else {
            None
        };
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let mut header = vec![
            format!(
                "gateway-bench {} — loopback, closed loop; each cell {} round(s) of {} s after {} s warm-up, the servers taking turns; {cores} cores",
                env!("CARGO_PKG_VERSION"),
                options.rounds,
                options.duration.as_secs_f64(),
                options.warmup.as_secs_f64()
            ),
            String::new(),
            format!(
                "Worker threads: bare proxy {} (tokio multi-thread); gatewayd {} (threads seen at ready: {} proxy event loops, {} tokio worker or blocking-pool threads); mock {}; load generator {}.",
                options.workers,
                if accepts_workers {
                    format!("worker_threads = {} in its config", options.workers)
                } else {
                    "its default, one per core: this build has no worker_threads setting".to_owned()
                },
                gateway.proc.threads_named(&["gatewayd-loop-"]),
                // tokio's thread name, `tokio-runtime-worker`, was cut to 15 bytes; newer
                // tokio names them `tokio-rt-worker`.
                gateway
                    .proc
                    .threads_named(&["tokio-runtime-w", "tokio-rt-worker"]),
                options.mock_workers,
                options.load_threads
            ),
            format!(
                "gatewayd: {} (pid {}), one key with {} among {} keys. Bare proxy pid {}, mock pid {}.",
                binary.display(),
                gateway.proc.pid(),
                match options.key_rpm {
                    Some(rpm) => format!("every restriction and limit set (providers, model glob, IP CIDR, {rpm} rpm, spend with monthly reset, expiry)"),
                    None => "every restriction but no rate or spend limit (--unlimited-key: providers, model glob, IP CIDR, expiry)".to_owned(),
                },
                options.keys,
                bare.pid(),
                mock.pid()
            ),
        ];
        match &nginx {
            Some((proc, addr)) => header.push(format!(
                "nginx: pid {} at {addr}, {} worker processes, keepalive upstream, proxy_buffering off (a reference).",
                proc.pid(),
                options.workers
            )),
            None if options.servers.contains(&Server::Nginx) => header.push(
                "nginx: not installed (apt-get install nginx), not measured.".to_owned(),
            ),
            None => {}
        }
        if let Some((cluster, _, _)) = &cluster {
            header.push(String::new());
            header.push(format!("{} The same keys as gatewayd's.", cluster.describe()));
        }
        for line in &header {
            eprintln!("{line}");
        }
        let mut targets = vec![
            (Server::Direct, Target { addr: mock_addr, path: UPSTREAM_PATH.into(), bearer: None }, mock.pid(), None),
            (Server::Bare, Target { addr: bare_addr, path: UPSTREAM_PATH.into(), bearer: None }, bare.pid(), None),
        ];
        if let Some((proc, addr)) = &bare_work {
            eprintln!(
                "bare + work: the bare proxy spinning {} µs in every request (pid {}), a calibration",
                options.bare_work.as_secs_f64() * 1e6,
                proc.pid()
            );
            targets.push((Server::BareWork, Target { addr: *addr, path: UPSTREAM_PATH.into(), bearer: None }, proc.pid(), None));
        }
        if let Some((proc, addr)) = &nginx {
            targets.push((Server::Nginx, Target { addr: *addr, path: UPSTREAM_PATH.into(), bearer: None }, proc.pid(), None));
        }
        targets.push((Server::Gatewayd, Target { addr: gateway.proxy, path: GATEWAY_PATH.into(), bearer: Some(secret.clone()) }, gateway.proc.pid(), None));
        if let Some((cluster, secret, observer)) = &cluster {
            let target = Target { addr: cluster.gateway.proxy, path: GATEWAY_PATH.into(), bearer: Some(secret.clone()) };
            targets.push((Server::GatewaydCluster, target, cluster.gateway.proc.pid(), Some(observer.clone())));
        }
        for (server, target, _, _) in &targets {
            for mode in &options.modes {
                load::probe(target, *mode).await.with_context(|| {
                    let hint = if *server == Server::GatewaydCluster && options.key_rpm.is_some() {
                        " (if it answered 503 limits_unavailable, this gatewayd does not enforce limits in cluster mode yet: --unlimited-key measures it with keys it serves)"
                    } else {
                        ""
                    };
                    format!("{} does not answer {} requests{hint}", server.name(), mode.name())
                })?;
            }
        }
        if !options.hold.is_zero() {
            eprintln!("holding {:?} before the matrix", options.hold);
            tokio::time::sleep(options.hold).await;
        }
        let shape = |concurrency| Shape { concurrency, warmup: options.warmup, duration: options.duration };
        let mut run = Run {
            header,
            main_keys: options.keys,
            scale_concurrency: options.scale_concurrency,
            ..Run::default()
        };
        for &mode in &options.modes {
            for &concurrency in &options.concurrency {
                let measured: Vec<_> = targets
                    .iter()
                    .filter(|(server, _, _, _)| options.servers.contains(server))
                    .collect();
                let mut samples: Vec<Option<load::Sample>> = measured.iter().map(|_| None).collect();
                for _ in 0..options.rounds {
                    for ((_, target, pid, redis), merged) in measured.iter().zip(&mut samples) {
                        let round = load::run(target, mode, shape(concurrency), Some(*pid), redis.as_ref()).await?;
                        load::Sample::pool(merged, round);
                    }
                }
                for ((server, _, pid, _), sample) in measured.iter().zip(samples) {
                    let Some(sample) = sample else { continue };
                    let peak = crate::process::peak_rss_kib(*pid).ok();
                    eprintln!(
                        "  {:<9} c{:<3} {:<16} {:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms  cpu {} µs/req  errors {}{}",
                        mode.name(),
                        concurrency,
                        server.name(),
                        sample.rps(),
                        sample.percentile_ms(0.5),
                        sample.percentile_ms(0.99),
                        sample.cpu_us_per_request().map_or_else(|| "?".into(), |c| format!("{c:.1}")),
                        sample.errors,
                        cluster::report::progress(&sample)
                    );
                    run.cells.push(Cell { mode, concurrency, server: *server, sample, peak_rss_kib: peak });
                }
            }
        }
        if let Some((cluster, _, _)) = &cluster {
            run.redis_floor = Some(cluster.floor().context("timing a bare Redis round trip")?);
        }
        drop(admin);
        // Stopped before the scale runs, its Redis keys and its database removed.
        drop(cluster);
        // The main gatewayd stays up through the scale runs: their JSON rounds take turns
        // with it, so "unchanged with many keys" compares like with like.
        let (_, main_target, main_pid, _) = targets
            .iter()
            .find(|(server, _, _, _)| *server == Server::Gatewayd)
            .context("the gatewayd target")?;
        for &keys in &options.scale_keys {
            let row = scale(&launcher, work.path(), keys, options, (main_target, *main_pid)).await
                .with_context(|| format!("scale run with {keys} keys"))?;
            run.scale.push(row);
        }
        let mut gateway = gateway;
        gateway.proc.stop(Duration::from_secs(30))?;
        anyhow::Ok(run)
    })?;
    run.header.push(format!(
        "Run took {:.0} s.",
        started.elapsed().as_secs_f64()
    ));
    let report = run.render();
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(report.as_bytes())?;
    stdout.flush()?;
    if let Some(path) = &options.out {
        std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?;
    }
    drop(mock);
    drop(bare);
    drop(bare_work);
    Ok(())
}

/// Starts a bare proxy (through `--bare-wrapper` if given) spending `work` in every request.
fn spawn_bare(
    exe: &std::path::Path,
    options: &Options,
    upstream: std::net::SocketAddr,
    work: Duration,
) -> anyhow::Result<Proc> {
    let mut command = match &options.bare_wrapper {
        Some(wrapper) => {
            let mut cmd = Command::new(wrapper);
            cmd.arg(exe);
            cmd
        }
        None => Command::new(exe),
    };
    command.args([
        "bare-proxy",
        "--workers",
        &options.workers.to_string(),
        "--upstream",
        &upstream.to_string(),
        "--work-ns",
        &work.as_nanos().to_string(),
    ]);
    let name = if work.is_zero() {
        "bare proxy"
    } else {
        "bare + work"
    };
    Proc::spawn(name, command, "bare listening", Duration::from_secs(10))
}

/// A fresh daemon with `keys` keys: how they got there, start-up, memory, the first page of
/// the management API, and load at the scale concurrency.
async fn scale(
    launcher: &Launcher,
    work: &Path,
    keys: usize,
    options: &Options,
    baseline: (&Target, u32),
) -> anyhow::Result<ScaleRow> {
    eprintln!("scale: {keys} keys");
    let home = Home::new(work.join(format!("scale-{keys}")))?;
    launcher.write_config(&home)?;
    let mut first = launcher.start(&home)?;
    let mut admin = first.admin().connect().await?;
    let (bench_id, secret) = admin.create_key("bench").await?;
    let api_created = keys.saturating_sub(1).min(options.api_sample);
    let api_started = Instant::now();
    for i in 0..api_created {
        admin.create_key(&format!("api-{i}")).await?;
    }
    let api_time = api_started.elapsed();
    drop(admin);
    first.proc.stop(Duration::from_secs(30))?;
    drop(first);
    let seeded = keys.saturating_sub(1 + api_created);
    let seed_time = if seeded > 0 {
        seed_keys(&home.database(), &bench_id, seeded)?
    } else {
        Duration::ZERO
    };

    let gateway: Gateway = launcher.start(&home)?;
    let start_time = gateway.proc.start_time;
    // Let start-up settle (the blocking pool, the first usage batch) before reading memory.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle_rss_kib = gateway.proc.rss_kib()?;
    let mut admin = gateway.admin().connect().await?;
    let first_page = admin.time_first_page(20).await?;
    let target = Target {
        addr: gateway.proxy,
        path: GATEWAY_PATH.into(),
        bearer: Some(secret),
    };
    let shape = Shape {
        concurrency: options.scale_concurrency,
        warmup: options.warmup,
        duration: options.duration,
    };
    let mut cells = Vec::new();
    let mut baseline_json = None;
    for mode in [Mode::Json, Mode::Sse] {
        if !options.modes.contains(&mode) {
            continue;
        }
        let mut sample: Option<load::Sample> = None;
        let mut base: Option<load::Sample> = None;
        for _ in 0..options.rounds {
            let round = load::run(&target, mode, shape, Some(gateway.proc.pid()), None).await?;
            load::Sample::pool(&mut sample, round);
            if mode == Mode::Json {
                let round = load::run(baseline.0, mode, shape, Some(baseline.1), None).await?;
                load::Sample::pool(&mut base, round);
            }
        }
        let Some(sample) = sample else { continue };
        if let Some(base) = base {
            baseline_json = Some(Cell {
                mode,
                concurrency: shape.concurrency,
                server: Server::Gatewayd,
                sample: base,
                peak_rss_kib: None,
            });
        }
        eprintln!(
            "  {keys} keys {:<5} c{} {:>8.0} req/s  p50 {:.3} ms  errors {}",
            mode.name(),
            shape.concurrency,
            sample.rps(),
            sample.percentile_ms(0.5),
            sample.errors
        );
        cells.push(Cell {
            mode,
            concurrency: shape.concurrency,
            server: Server::Gatewayd,
            sample,
            peak_rss_kib: gateway.proc.peak_rss_kib().ok(),
        });
    }
    let peak_rss_kib = gateway.proc.peak_rss_kib()?;
    drop(admin);
    let mut gateway = gateway;
    gateway.proc.stop(Duration::from_secs(30))?;
    Ok(ScaleRow {
        keys,
        api_created,
        api_time,
        seeded,
        seed_time,
        start_time,
        idle_rss_kib,
        first_page,
        cells,
        baseline_json,
        peak_rss_kib,
    })
}

/// The gatewayd binary: `--gatewayd`, else the one beside this benchmark.
pub fn gatewayd_binary(options: &Options, exe: &Path) -> anyhow::Result<PathBuf> {
    let binary = match &options.gatewayd {
        Some(path) => path.clone(),
        None => exe
            .parent()
            .map(|dir| dir.join("gatewayd"))
            .context("gateway-bench has no parent directory")?,
    };
    if !binary.exists() {
        bail!(
            "{} not found: build it first with `cargo build --release -p gatewayd`, or pass --gatewayd",
            binary.display()
        );
    }
    Ok(binary)
}

/// The mock provider: this binary again, as `mock`.
pub fn spawn_mock(exe: &Path, options: &Options) -> anyhow::Result<Proc> {
    let mut mock_cmd = Command::new(exe);
    mock_cmd.args(["mock", "--workers", &options.mock_workers.to_string()]);
    Proc::spawn("mock", mock_cmd, "mock listening", Duration::from_secs(10))
}

pub fn listening_addr(proc: &Proc) -> anyhow::Result<SocketAddr> {
    proc.ready_line
        .rsplit(' ')
        .next()
        .and_then(|addr| addr.trim().parse().ok())
        .with_context(|| format!("no address in {:?}", proc.ready_line))
}
