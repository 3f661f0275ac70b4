//! `gateway-bench --callgrind`: instructions per request, counted by callgrind (issue #19).
//!
//! Why instructions: on 2 shared cores, wall-clock ratios move ±10 % from run to run, and a
//! throughput target of 0.9× the bare proxy is a budget of about 1 µs a request, which no
//! timed run can resolve. The instructions a process executes for the same binary and the
//! same input do not depend on what else the machine does.
//!
//! How: the mock runs natively; the bare proxy and gatewayd each run under `valgrind
//! --tool=callgrind`. Per mode, each gets `warmup` requests (connections, pools, caches and
//! lazily built state warm), then its counters are zeroed (`callgrind_control --zero`),
//! `requests` identical requests are sent one at a time on one connection, the process is
//! left idle for [`SETTLE`] (gatewayd's usage writer commits its last batch, its settler
//! flushes), and the counters are dumped (`callgrind_control --dump`). A dump covers the
//! whole process, every thread: the event loops, the usage writer and the timers. Its total
//! divided by `requests` is the figure; `callgrind_annotate` gives the functions.
//!
//! gatewayd's key is the benchmark's (every restriction and limit set), so every check and
//! every metering step runs. What still varies between runs: how the usage writer's
//! batches fall (its gather window is wall-clock time, and valgrind slows everything ~50×)
//! and the timers that fire during the window; bench/README says by how much.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::gatewayd::{Home, Launcher};
use crate::load::{self, Mode, Target};
use crate::process::Proc;
use crate::suite::{GATEWAY_PATH, Options, UPSTREAM_PATH, listening_addr, spawn_mock};

/// Idle time after the last request, before the dump.
const SETTLE: Duration = Duration::from_millis(500);
/// A server under valgrind starts slowly.
const START_UNDER_VALGRIND: Duration = Duration::from_secs(120);
/// Functions listed per server and mode.
const TOP: usize = 15;

/// The targets of issue #19: gatewayd's instructions per request ÷ the bare proxy's.
const MAX_RATIO_JSON: f64 = 1.5;
const MAX_RATIO_SSE: f64 = 1.4;

/// What the mode asks for.
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    pub requests: usize,
    pub warmup: usize,
}

/// One server's figure for one mode.
struct Measured {
    per_request: f64,
    /// Of which gatewayd's usage writer thread (`store::writer::run`, inclusive): the part
    /// that moves from run to run, as its batches are gathered over wall-clock time.
    writer: Option<f64>,
    /// `callgrind_annotate` lines: self (exclusive) cost, then inclusive.
    exclusive: Vec<String>,
    inclusive: Vec<String>,
}

/// The usage writer thread's entry point: its inclusive cost is the whole thread's.
const WRITER: &str = "gatewayd::store::writer::run";

/// A server under callgrind: its process, and where its dumps go.
struct Profiled {
    name: &'static str,
    proc: Proc,
    target: Target,
    out: PathBuf,
    dumps: usize,
}

impl Profiled {
    /// Warm-up, zero, the measured requests, settle, dump.
    async fn measure(&mut self, mode: Mode, counts: Counts) -> anyhow::Result<Measured> {
        load::sequential(&self.target, mode, counts.warmup)
            .await
            .with_context(|| format!("{} warm-up ({})", self.name, mode.name()))?;
        control(self.proc.pid(), &["--zero"])?;
        load::sequential(&self.target, mode, counts.requests)
            .await
            .with_context(|| format!("{} ({})", self.name, mode.name()))?;
        tokio::time::sleep(SETTLE).await;
        control(self.proc.pid(), &[&format!("--dump={}", mode.name())])?;
        self.dumps += 1;
        let dump = PathBuf::from(format!("{}.{}", self.out.display(), self.dumps));
        let text = std::fs::read_to_string(&dump)
            .with_context(|| format!("reading the dump {}", dump.display()))?;
        let total = totals(&text).with_context(|| format!("no totals in {}", dump.display()))?;
        let per_request = total as f64 / counts.requests as f64;
        let inclusive = annotate(&dump, true)?;
        Ok(Measured {
            per_request,
            writer: function_cost(&inclusive, WRITER).map(|n| n as f64 / counts.requests as f64),
            exclusive: function_lines(&annotate(&dump, false)?, counts.requests, false),
            inclusive: function_lines(&inclusive, counts.requests, true),
        })
    }
}

/// Runs the callgrind mode and prints its report (and writes it to `--out`).
pub fn run(options: &Options, counts: Counts) -> anyhow::Result<()> {
    if counts.requests == 0 {
        bail!("--callgrind-requests must be positive");
    }
    for tool in ["valgrind", "callgrind_control", "callgrind_annotate"] {
        let found = Command::new(tool)
            .arg("--help")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !found {
            bail!("{tool} not found: install valgrind (apt-get install valgrind)");
        }
    }
    let exe = std::env::current_exe().context("locating gateway-bench")?;
    let binary = crate::suite::gatewayd_binary(options, &exe)?;
    let work = tempfile::Builder::new()
        .prefix("gateway-bench-callgrind-")
        .disable_cleanup(std::env::var_os("GATEWAY_BENCH_KEEP").is_some())
        .tempdir()
        .context("creating a scratch directory")?;
    let mock = spawn_mock(&exe, options)?;
    let mock_addr = listening_addr(&mock)?;

    let bare_out = work.path().join("bare.callgrind");
    let mut bare_cmd = valgrind(&bare_out);
    bare_cmd.arg(&exe).args([
        "bare-proxy",
        "--workers",
        &options.workers.to_string(),
        "--upstream",
        &mock_addr.to_string(),
    ]);
    let bare = Proc::spawn("bare proxy", bare_cmd, "listening", START_UNDER_VALGRIND)?;
    let bare_addr = listening_addr(&bare)?;

    // gatewayd through a wrapper that execs it under valgrind: the launcher starts it as
    // it starts the plain binary (config, environment, ready line).
    let accepts_workers = Launcher::accepts_worker_threads(&binary, work.path())?;
    let gatewayd_out = work.path().join("gatewayd.callgrind");
    let wrapper = write_wrapper(work.path(), &binary, &gatewayd_out)?;
    let launcher = Launcher {
        binary: wrapper,
        upstream: mock_addr,
        worker_threads: accepts_workers.then_some(options.workers),
    };
    let runtime = crate::runtime(options.load_threads)?;
    let report = runtime.block_on(async {
        let home = Home::new(work.path().join("main"))?;
        launcher.write_config(&home)?;
        let gateway = launcher.start(&home)?;
        let mut admin = gateway.admin().connect().await?;
        let (_, secret) = admin.create_key_with("bench", options.key_rpm).await?;
        let mut servers = [
            Profiled {
                name: "bare proxy",
                target: Target {
                    addr: bare_addr,
                    path: UPSTREAM_PATH.into(),
                    bearer: None,
                },
                proc: bare,
                out: bare_out,
                dumps: 0,
            },
            Profiled {
                name: "gatewayd",
                target: Target {
                    addr: gateway.proxy,
                    path: GATEWAY_PATH.into(),
                    bearer: Some(secret),
                },
                proc: gateway.proc,
                out: gatewayd_out,
                dumps: 0,
            },
        ];
        let mut rows = Vec::new();
        for &mode in &options.modes {
            let bare = servers[0].measure(mode, counts).await?;
            let gatewayd = servers[1].measure(mode, counts).await?;
            eprintln!(
                "  {:<9} bare proxy {:>9.0} instr/req  gatewayd {:>9.0} instr/req  {:.2}×",
                mode.name(),
                bare.per_request,
                gatewayd.per_request,
                gatewayd.per_request / bare.per_request
            );
            rows.push((mode, bare, gatewayd));
        }
        drop(admin);
        for server in &mut servers {
            if let Err(err) = server.proc.stop(Duration::from_secs(60)) {
                eprintln!("gateway-bench: stopping {}: {err:#}", server.name);
            }
        }
        anyhow::Ok(render(&rows, counts, options))
    })?;
    #[expect(clippy::print_stdout, reason = "the report is the command's output")]
    {
        print!("{report}");
    }
    if let Some(out) = &options.out {
        std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
    }
    drop(mock);
    Ok(())
}

fn render(rows: &[(Mode, Measured, Measured)], counts: Counts, options: &Options) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Instructions per request (callgrind)\n\n{} requests per mode and server after {} \
         of warm-up, one connection, one at a time; the whole process under `valgrind \
         --tool=callgrind` (every thread), counters zeroed before and dumped {} ms after the \
         last request. gatewayd's key has every restriction and limit ({}); {} event loops.\n",
        counts.requests,
        counts.warmup,
        SETTLE.as_millis(),
        options.key_rpm.map_or_else(
            || "no rate or spend limit".to_owned(),
            |r| format!("{r} rpm")
        ),
        options.workers
    );
    let _ = writeln!(
        out,
        "| mode | bare proxy instr/req | gatewayd instr/req | ×bare | target | of which usage writer | without it ×bare |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|");
    let mut verdicts = Vec::new();
    for (mode, bare, gatewayd) in rows {
        let ratio = gatewayd.per_request / bare.per_request;
        let target = match mode {
            Mode::Json => Some(MAX_RATIO_JSON),
            Mode::Sse | Mode::SseSplit => Some(MAX_RATIO_SSE),
        };
        let (writer, without) = gatewayd.writer.map_or_else(
            // No row for the writer's function (renamed, or inlined into its thread): said,
            // not left blank.
            || ("not found".to_owned(), String::new()),
            |writer| {
                (
                    format!("{writer:.0}"),
                    format!("{:.2}", (gatewayd.per_request - writer) / bare.per_request),
                )
            },
        );
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {ratio:.2} | {} | {writer} | {without} |",
            mode.name(),
            bare.per_request,
            gatewayd.per_request,
            target.map_or_else(String::new, |t| format!("≤ {t:.1}×"))
        );
        if let Some(target) = target {
            verdicts.push(format!(
                "- {} gatewayd ≤ {target:.1}× the bare proxy's instructions per {} request: {ratio:.2}× ({:.0} vs {:.0})",
                if ratio <= target { "PASS" } else { "FAIL" },
                mode.name(),
                gatewayd.per_request,
                bare.per_request
            ));
        }
    }
    let _ = writeln!(
        out,
        "\nThe targets count the whole process. The usage writer's share moves from run to run (its \
         batches gather over wall-clock time, and valgrind runs requests ~50× slower, so they \
         hold a few rows where natively they hold dozens to hundreds); the rest moves far less.\n\n{}\n",
        verdicts.join("\n")
    );
    for (mode, bare, gatewayd) in rows {
        for (server, measured) in [("gatewayd", gatewayd), ("bare proxy", bare)] {
            let _ = writeln!(
                out,
                "### {server}, {}: top functions, instructions per request\n\nself (exclusive):\n```\n{}\n```\ninclusive:\n```\n{}\n```\n",
                mode.name(),
                measured.exclusive.join("\n"),
                measured.inclusive.join("\n")
            );
        }
    }
    out
}

/// `valgrind --tool=callgrind` writing to `out` (dumps to `out.1`, `out.2`, …).
fn valgrind(out: &Path) -> Command {
    let mut command = Command::new("valgrind");
    command
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()));
    command
}

/// A script that execs `binary` under callgrind with the arguments it is given.
fn write_wrapper(dir: &Path, binary: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("gatewayd-under-callgrind");
    let script = format!(
        "#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file='{}' '{}' \"$@\"\n",
        out.display(),
        binary.display()
    );
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

fn control(pid: u32, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .context("running callgrind_control")?;
    if !output.status.success() {
        bail!(
            "callgrind_control {args:?} {pid}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The instructions a dump counts: its `summary:` line (the events of its time range),
/// else its `totals:` line.
fn totals(dump: &str) -> Option<u64> {
    let line = |prefix: &str| {
        dump.lines()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    line("summary:").or_else(|| line("totals:"))
}

/// `callgrind_annotate`'s table of `dump`'s functions by self or inclusive cost.
fn annotate(dump: &Path, inclusive: bool) -> anyhow::Result<String> {
    // A call made before the counters were zeroed and still running (a thread's entry
    // point, a loop's `block_on`) is dumped as `calls=0`, which callgrind_annotate 3.19
    // then takes for self cost: the thread's whole cost lands on `clone`. Its count, not
    // its cost, is what is wrong; one call is the truth.
    let text = std::fs::read_to_string(dump)?;
    let fixed = dump.with_extension("annotatable");
    std::fs::write(&fixed, text.replace("\ncalls=0 ", "\ncalls=1 "))?;
    let output = Command::new("callgrind_annotate")
        .arg(format!(
            "--inclusive={}",
            if inclusive { "yes" } else { "no" }
        ))
        .arg("--threshold=100")
        .arg("--auto=no")
        .arg(&fixed)
        .output()
        .context("running callgrind_annotate")?;
    if !output.status.success() {
        bail!(
            "callgrind_annotate {}: {}",
            dump.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The first row of `callgrind_annotate`'s table that is `function` (any file, any object):
/// its count.
fn function_cost(text: &str, function: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (count, rest) = line.trim().split_once(' ')?;
        let name = rest.split_once(" [").map_or(rest, |(name, _)| name);
        let named = name.ends_with(&format!(":{function}"));
        named.then(|| count.replace(',', "").parse().ok()).flatten()
    })
}

/// From `callgrind_annotate`'s table (`1,234 (12.3%)  file:function [object]`), the first
/// [`TOP`] rows, their counts per request; by inclusive cost, without the threads' and
/// runtimes' frames that include everything.
fn function_lines(text: &str, requests: usize, inclusive: bool) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let (count, rest) = line.split_once(' ')?;
            let count: u64 = count.replace(',', "").parse().ok()?;
            let rest = rest.trim_start();
            let (share, function) = rest.strip_prefix('(')?.split_once(')')?;
            let function = function.trim();
            // Skip the totals line and per-file rows.
            if function.is_empty() || function.starts_with("PROGRAM TOTALS") {
                return None;
            }
            // `file:function [object]`: the function alone (a file path has no `:`; a
            // name's first `:` starts a `::`).
            let function = function.split_once(" [").map_or(function, |(name, _)| name);
            let function = match function.split_once(':') {
                Some((_, name)) if !name.starts_with(':') => name,
                _ => function,
            };
            if inclusive && is_plumbing(function) {
                return None;
            }
            Some(format!(
                "{:>9.0}  {share:>7}  {function}",
                count as f64 / requests as f64
            ))
        })
        .take(TOP)
        .collect()
}

/// A frame every thread or task passes through: the inclusive list skips it.
fn is_plumbing(function: &str) -> bool {
    [
        "std::",
        "core::",
        "<std::",
        "<core::",
        "tokio::runtime::",
        "clone",
        "start_thread",
    ]
    .iter()
    .any(|prefix| function.starts_with(prefix))
        || function.contains("EventLoops::spawn")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dumps_totals_and_annotates_rows_are_read() {
        assert_eq!(
            totals("events: Ir\nsummary: 12\ntotals: 123456\n"),
            Some(12)
        );
        assert_eq!(totals("events: Ir\ntotals: 7\n"), Some(7));
        assert_eq!(totals("events: Ir\n"), None);
        let table = "\
--------------------------------------------------------------------------------
Ir                 file:function
--------------------------------------------------------------------------------
2,000,000 (100.0%)  PROGRAM TOTALS
1,000,000 (50.00%)  ???:gatewayd::proxy::Proxy::pipeline [/work/gatewayd]
  400,000 (20.00%)  ./malloc/./malloc/malloc.c:malloc [/usr/lib/libc.so.6]
";
        let rows = function_lines(table, 1000, false);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(
            rows[0].contains("1000") && rows[0].ends_with("  gatewayd::proxy::Proxy::pipeline")
        );
        assert!(
            rows[1].contains("400") && rows[1].contains("20.00%") && rows[1].ends_with("  malloc")
        );
        let writer = "9 (9.0%)  /src/writer.rs:gatewayd::store::writer::run::{{closure}} [x]\n\
                      7 (7.0%)  /src/writer.rs:gatewayd::store::writer::run [x]\n";
        assert_eq!(
            function_cost(writer, WRITER),
            Some(7),
            "the function, not a closure"
        );
        assert_eq!(function_cost(table, WRITER), None);
        let plumbing = "5 (1.0%)  ???:std::rt::lang_start [x]\n4 (0.5%)  ???:start_thread [x]\n";
        assert!(function_lines(plumbing, 1, true).is_empty());
        assert_eq!(function_lines(plumbing, 1, false).len(), 2);
    }
}
