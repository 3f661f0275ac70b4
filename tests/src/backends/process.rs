//! One server process of a private backend: spawned with its output in a log file, stopped by
//! a signal, killed together with the processes it started, and never left running.
//!
//! A PostgreSQL server is a postmaster and one process per connection and helper; the children
//! call `setsid()`, so killing a process group does not reach them. Killed alone, a postmaster
//! leaves its children attached to the shared memory, and a new postmaster on the same data
//! refuses to start ("pre-existing shared memory block is still in use") until they notice.
//! So a kill stops the parent first (it can neither fork nor restart a child), kills every
//! child, then the parent: the whole server dies at once, as in a crash of its machine.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

pub(super) struct ServerProcess {
    /// "PostgreSQL" or "Redis", for messages.
    what: &'static str,
    log: PathBuf,
    /// `None` once the process has exited and been reaped.
    child: Option<Child>,
}

impl ServerProcess {
    /// Spawns `command` with stdin closed and stdout and stderr appended to `log`.
    pub(super) fn spawn(what: &'static str, mut command: Command, log: &Path) -> Self {
        let output = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening the {what} log {}: {e}", log.display()));
        let stderr = output
            .try_clone()
            .unwrap_or_else(|e| panic!("duplicating the {what} log's handle: {e}"));
        command.stdin(Stdio::null()).stdout(output).stderr(stderr);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {what} ({}): {e}",
                command.get_program().to_string_lossy()
            )
        });
        Self {
            what,
            log: log.to_path_buf(),
            child: Some(child),
        }
    }

    /// Whether the process has exited (reaping it if so).
    pub(super) fn has_exited(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            None | Some(Ok(Some(_))) => {
                self.child = None;
                true
            }
            Some(Ok(None)) => false,
            Some(Err(e)) => panic!("waiting for {}: {e}", self.what),
        }
    }

    /// Sends `signal` and waits (without blocking the runtime) until the process has exited.
    pub(super) async fn signal_and_wait(&mut self, signal: Signal, timeout: Duration) {
        if let Some(pid) = self.pid() {
            let _ = rustix::process::kill_process(pid, signal);
        }
        let deadline = Instant::now() + timeout;
        while !self.has_exited() {
            if Instant::now() > deadline {
                panic!(
                    "{} did not exit within {timeout:?} of {signal:?}\n{}",
                    self.what,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the process and every process it started, and reaps it. Never panics: it runs
    /// in `Drop`. Blocks for at most a few seconds (a killed process exits at once).
    pub(super) fn kill_all(&mut self) {
        let Some(pid) = self.pid() else {
            return;
        };
        // Stopped, the parent cannot start a new child between the listing and the kills,
        // nor react to its children's deaths.
        let _ = rustix::process::kill_process(pid, Signal::STOP);
        let children = children_of(pid);
        for &child in &children {
            let _ = rustix::process::kill_process(child, Signal::KILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while children.iter().any(|&child| is_alive(child)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = rustix::process::kill_process(pid, Signal::KILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// The last lines of the server's log, for a failure message.
    pub(super) fn log_tail(&self) -> String {
        log_tail(self.what, &self.log)
    }

    fn pid(&self) -> Option<Pid> {
        let child = self.child.as_ref()?;
        i32::try_from(child.id()).ok().and_then(Pid::from_raw)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The last 30 lines of `log`, introduced by what they are.
/// Stops a private server with `signal` (its own clean shutdown) and waits until it has
/// exited and `port` refuses connections.
pub(super) async fn stop(
    server: &mut Option<ServerProcess>,
    what: &str,
    port: u16,
    signal: Signal,
) {
    let mut running = server
        .take()
        .unwrap_or_else(|| panic!("stop: {what} is not running"));
    running
        .signal_and_wait(signal, Duration::from_secs(30))
        .await;
    super::wait_until_refused(what, port).await;
}

/// Kills every process of a private server at once, as a crash would, and waits until `port`
/// refuses connections.
pub(super) async fn kill(server: &mut Option<ServerProcess>, what: &str, port: u16) {
    let mut running = server
        .take()
        .unwrap_or_else(|| panic!("kill: {what} is not running"));
    running.kill_all();
    super::wait_until_refused(what, port).await;
}

pub(super) fn log_tail(what: &str, log: &Path) -> String {
    match std::fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            format!("--- {what} log {} (tail) ---\n{tail}", log.display())
        }
        Err(e) => format!("--- {what} log {}: unreadable: {e}", log.display()),
    }
}

/// The pids whose parent is `parent`, from `/proc/<pid>/stat`.
fn children_of(parent: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let (_, parent_pid) = stat(pid)?;
            (parent_pid == parent.as_raw_nonzero().get())
                .then(|| Pid::from_raw(pid))
                .flatten()
        })
        .collect()
}

/// Whether `pid` still runs: it exists and is not a zombie (a zombie holds no memory).
fn is_alive(pid: Pid) -> bool {
    stat(pid.as_raw_nonzero().get()).is_some_and(|(state, _)| state != 'Z')
}

/// State and parent pid of `pid`. The command name in parentheses may itself hold spaces
/// and parentheses, so the fields are read after its last `)`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    let mut fields = fields.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_all_kills_the_children_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new("sh");
        // Two children that would outlive a parent killed alone.
        command.args(["-c", "sleep 60 & sleep 60 & echo started; wait"]);
        let mut server = ServerProcess::spawn("sh", command, &dir.path().join("log"));
        let parent = server.pid().expect("running");
        let deadline = Instant::now() + Duration::from_secs(10);
        let children = loop {
            let children = children_of(parent);
            if children.len() == 2 || Instant::now() > deadline {
                break children;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(children.len(), 2, "{}", server.log_tail());
        server.kill_all();
        assert!(server.has_exited());
        for child in children {
            assert!(!is_alive(child), "child {child:?} survived");
        }
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("log");
        let text: String = (0..100).map(|n| format!("line {n}\n")).collect();
        std::fs::write(&log, text).expect("write log");
        let tail = log_tail("Test", &log);
        assert!(
            tail.contains("line 99") && tail.contains("line 70"),
            "{tail}"
        );
        assert!(!tail.contains("line 69"), "{tail}");
    }
}
