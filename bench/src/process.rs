//! Child processes of the benchmark (mock provider, bare proxy, gatewayd) and what the kernel
//! says about them.
//!
//! Every server under test runs in a process of its own, so its CPU time and memory can be
//! read from `/proc` without counting the load generator's: CPU per request is the delta of
//! `utime + stime` over a cell divided by the requests served, peak memory is `VmHWM`.
//! A child announces readiness with a line (on stdout or stderr) that we wait for; its output
//! is drained on threads so a chatty child never blocks on a full pipe, and its last lines are
//! kept to explain a failure.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Lines of a child's output kept for error messages.
const LOG_TAIL: usize = 60;

/// A running child process; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    name: String,
    child: Child,
    /// The line that announced readiness.
    pub ready_line: String,
    /// From spawn to the ready line.
    pub start_time: Duration,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Proc {
    /// Spawns `command` and waits up to `timeout` for a line containing `marker`.
    pub fn spawn(
        name: &str,
        mut command: Command,
        marker: &str,
        timeout: Duration,
    ) -> anyhow::Result<Proc> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name} ({command:?})"))?;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        if let Some(stdout) = child.stdout.take() {
            drain(
                stdout,
                marker.to_owned(),
                ready_tx.clone(),
                Arc::clone(&log),
            );
        }
        if let Some(stderr) = child.stderr.take() {
            drain(stderr, marker.to_owned(), ready_tx, Arc::clone(&log));
        }
        let mut proc = Proc {
            name: name.to_owned(),
            child,
            ready_line: String::new(),
            start_time: Duration::ZERO,
            log,
        };
        let deadline = started + timeout;
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => {
                    proc.start_time = started.elapsed();
                    proc.ready_line = line;
                    return Ok(proc);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both pipes closed: the child is gone. Give its status a moment.
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            if let Some(status) = proc.child.try_wait()? {
                bail!(
                    "{name} exited ({status}) before it was ready; its output:\n{}",
                    proc.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} was not ready within {timeout:?}; its output:\n{}",
                    proc.log_tail()
                );
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Peak resident set size so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        status_kib(self.pid(), "VmHWM:")
    }

    /// Current resident set size (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        status_kib(self.pid(), "VmRSS:")
    }

    /// Threads whose name starts with one of `prefixes` (`/proc/PID/task/*/comm`, which the
    /// kernel cuts to 15 bytes).
    pub fn threads_named(&self, prefixes: &[&str]) -> usize {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return 0;
        };
        tasks
            .filter_map(Result::ok)
            .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
            .filter(|comm| prefixes.iter().any(|prefix| comm.starts_with(prefix)))
            .count()
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        if let Some(pid) = i32::try_from(self.pid())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            // An already-exited child is not an error.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child.kill().ok();
        self.child.wait().ok();
        bail!(
            "{} did not stop within {grace:?} of SIGTERM; killed",
            self.name
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.stop(Duration::from_secs(5));
        }
    }
}

fn drain(
    stream: impl Read + Send + 'static,
    marker: String,
    ready: mpsc::Sender<String>,
    log: Arc<Mutex<VecDeque<String>>>,
) {
    std::thread::spawn(move || {
        let mut ready = Some(ready);
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if line.contains(&marker)
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(line.clone());
            }
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            if log.len() == LOG_TAIL {
                log.pop_front();
            }
            log.push_back(line);
        }
    });
}

/// Clock ticks per second for `/proc/PID/stat` (USER_HZ): asked of `getconf`, else 100,
/// its value on every mainstream Linux architecture.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// `utime + stime` of a process (all its threads, living and exited).
/// CPU time (user + system) of `pid` and of its live children (a master process's
/// workers, as nginx runs; the servers that are one process have none).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let mut total = own_cpu_time(pid)?;
    for child in children(pid) {
        // A child that exited meanwhile has nothing left to count here.
        total += own_cpu_time(child).unwrap_or_default();
    }
    Ok(total)
}

/// Peak resident set size (`VmHWM`, KiB) of `pid` plus its live children's.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let mut total = status_kib(pid, "VmHWM:")?;
    for child in children(pid) {
        total += status_kib(child, "VmHWM:").unwrap_or(0);
    }
    Ok(total)
}

/// The live children of `pid` (`/proc/PID/task/*/children`).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn own_cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<u64>()
            .context("bad number in /proc/PID/stat")
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_nanos(
        total.saturating_mul(1_000_000_000) / clock_ticks(),
    ))
}

pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}
