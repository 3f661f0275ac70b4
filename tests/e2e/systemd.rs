//! `gatewayd` as the unit `install.sh --systemd` writes runs it: as its own user, with only
//! the environment systemd gives a service (`HOME` from the user's entry, `RUNTIME_DIRECTORY`
//! from `RuntimeDirectory=`, `STATE_DIRECTORY`, `NOTIFY_SOCKET` for `Type=notify`; no `XDG_*`
//! at all) and the unit's umask, on a config that does not name the socket.
//!
//! The socket must then be `$RUNTIME_DIRECTORY/admin.sock`, mode 0660 in the daemon's group,
//! so that an operator added to the group (`usermod -aG gatewayd`) can use it and nobody else
//! can; `gwctl` in the same environment must find it without `--socket`; `READY=1` must reach
//! the notify socket once the listeners answer, and `STOPPING=1` when draining starts
//! (issue #20 (6): the daemon used to bind the socket deep in its 0700 data directory).
//!
//! Nothing here touches `/run/gatewayd` or the user database: the unit's directories are
//! temporary ones, its users plain numeric ids. What needs root (other users) is skipped,
//! saying so on stderr, when the test does not run as root.

use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `User=gatewayd` and `Group=gatewayd`: the daemon's uid and gid when the test runs as root.
const DAEMON_ID: u32 = 64_100;
/// An operator added to the daemon's group (`usermod -aG gatewayd`), in no other group.
const OPERATOR_ID: u32 = 64_101;
/// Another user, in no group of the daemon's.
const OUTSIDER_ID: u32 = 64_102;
/// How long the daemon may take to print its ready line, and to exit after SIGTERM.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn under_its_unit_the_daemon_serves_the_runtime_directory_socket_and_notifies() {
    let unit = Unit::new();
    let mut daemon = unit.start().await;
    let socket = unit.runtime_dir.join("admin.sock");

    // Readiness is sent before the ready line is logged, so by now it has arrived: exactly
    // one message, READY=1 with a status naming the listeners, and nothing before it.
    let messages = unit.notifications();
    assert_eq!(
        messages.len(),
        1,
        "one readiness message expected, got {messages:?}; log:\n{}",
        daemon.log
    );
    let ready = &messages[0];
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS= in {ready:?}"));
    assert!(
        status.contains(&daemon.proxy) && status.contains(&socket.display().to_string()),
        "the status names the proxy listener and the socket: {status:?}"
    );
    // The listeners answer (READY=1 came once they were bound and served).
    let health = reqwest::get(format!("http://{}/healthz", daemon.proxy))
        .await
        .expect("proxy answers");
    assert_eq!(health.status(), 200);

    // The socket is in the runtime directory, usable by the daemon's group only.
    let meta = std::fs::symlink_metadata(&socket).unwrap_or_else(|e| {
        panic!(
            "no socket at {} ({e}); log:\n{}",
            socket.display(),
            daemon.log
        )
    });
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "socket mode");
    assert_eq!(meta.gid(), unit.daemon_gid(), "socket group");

    // gwctl in the unit's environment finds it with no --socket.
    let created = unit
        .gwctl(
            Who::Daemon,
            &["-o", "json", "keys", "create", "--name", "unit"],
        )
        .await;
    assert_eq!(created.code, 0, "gwctl as the daemon's user: {created:?}");

    if unit.as_root {
        // What install.sh advises (usermod -aG gatewayd USER) works: a member of the group
        // manages keys, anyone else is refused with a message that says why.
        let socket_arg = socket.to_str().expect("utf-8 path");
        let listed = unit
            .gwctl(
                Who::Operator,
                &["--socket", socket_arg, "-o", "json", "keys", "list"],
            )
            .await;
        assert_eq!(listed.code, 0, "gwctl as a member of the group: {listed:?}");
        assert!(listed.stdout.contains("\"unit\""), "{listed:?}");
        let refused = unit
            .gwctl(Who::Outsider, &["--socket", socket_arg, "keys", "list"])
            .await;
        assert_eq!(refused.code, 5, "gwctl as another user: {refused:?}");
        assert!(refused.stderr.contains("no permission"), "{refused:?}");
    } else {
        eprintln!(
            "systemd test: not root, so the group member's and the outsider's access to the \
             socket were not checked (they need other users)"
        );
    }

    // SIGTERM: STOPPING=1 is sent when draining starts, and the socket goes away.
    let pid = daemon.child.id().expect("running");
    gateway_tests::gateway::signal(pid, rustix::process::Signal::TERM);
    let status = tokio::time::timeout(PROCESS_TIMEOUT, daemon.child.wait())
        .await
        .expect("gatewayd exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "exit {status:?}; log:\n{}", daemon.log);
    let messages = unit.notifications();
    assert!(
        messages
            .iter()
            .any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "{messages:?}"
    );
    assert!(!socket.exists(), "the socket is removed on shutdown");
}

/// The unit's world in a temporary directory: binaries, config, state and runtime
/// directories, and the notify socket systemd would listen on.
struct Unit {
    _dir: tempfile::TempDir,
    as_root: bool,
    bin: PathBuf,
    config: PathBuf,
    /// `StateDirectory=gatewayd`, also the user's home (`useradd --home-dir`) and data_dir.
    state_dir: PathBuf,
    /// `RuntimeDirectory=gatewayd` with `RuntimeDirectoryMode=0750`.
    runtime_dir: PathBuf,
    notify_path: PathBuf,
    notify: UnixDatagram,
}

#[derive(Clone, Copy)]
enum Who {
    Daemon,
    Operator,
    Outsider,
}

struct Running {
    child: Child,
    proxy: String,
    /// Everything the daemon logged up to its ready line.
    log: String,
}

impl Unit {
    fn new() -> Unit {
        gateway_tests::install_crypto_provider();
        let dir = tempfile::Builder::new()
            .prefix("gw-systemd-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().to_path_buf();
        let as_root = rustix::process::geteuid().is_root();
        // Other users must reach what is theirs inside.
        chmod(&root, 0o755);

        // Installed binaries, as ExecStart= names them (the build directory may not be
        // reachable by other users).
        let bin = root.join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        for name in ["gatewayd", "gwctl"] {
            let built = gateway_tests::binaries::built().join(name);
            if std::fs::hard_link(&built, bin.join(name)).is_err() {
                std::fs::copy(&built, bin.join(name)).expect("copying a binary");
            }
        }

        let state_dir = root.join("state");
        let runtime_dir = root.join("run");
        std::fs::create_dir(&state_dir).expect("state dir");
        chmod(&state_dir, 0o700);
        std::fs::create_dir(&runtime_dir).expect("runtime dir");
        chmod(&runtime_dir, 0o750);

        // The config as install.sh wrote it before it named the socket: data_dir and the
        // listeners, the socket left to the daemon's default.
        let config = root.join("gatewayd.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\n\
                 listen = \"127.0.0.1:0\"\n",
                state_dir.display().to_string()
            ),
        )
        .expect("config");
        chmod(&config, 0o640);

        let notify_path = root.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
        notify.set_nonblocking(true).expect("nonblocking");
        chmod(&notify_path, 0o666);

        if as_root {
            for path in [&state_dir, &runtime_dir] {
                chown(path, DAEMON_ID, DAEMON_ID);
            }
            chown(&config, 0, DAEMON_ID);
        }
        Unit {
            _dir: dir,
            as_root,
            bin,
            config,
            state_dir,
            runtime_dir,
            notify_path,
            notify,
        }
    }

    fn daemon_gid(&self) -> u32 {
        if self.as_root {
            DAEMON_ID
        } else {
            rustix::process::getegid().as_raw()
        }
    }

    /// The environment systemd gives the unit's processes: nothing inherited, no `XDG_*`.
    fn environment(&self) -> Vec<(&'static str, OsString)> {
        vec![
            (
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin".into(),
            ),
            ("HOME", self.state_dir.clone().into_os_string()),
            ("USER", "gatewayd".into()),
            ("LOGNAME", "gatewayd".into()),
            ("SHELL", "/usr/sbin/nologin".into()),
            ("INVOCATION_ID", "4f6e0c1d2b3a49d8a7c6b5e4f3a2b1c0".into()),
            (
                "RUNTIME_DIRECTORY",
                self.runtime_dir.clone().into_os_string(),
            ),
            ("STATE_DIRECTORY", self.state_dir.clone().into_os_string()),
        ]
    }

    /// Starts `gatewayd --config` as the unit does (its user, environment and `UMask=0077`)
    /// and waits for its ready line.
    async fn start(&self) -> Running {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg("umask 0077 && exec \"$0\" --config \"$1\"")
            .arg(self.bin.join("gatewayd"))
            .arg(&self.config)
            .env_clear()
            .envs(self.environment())
            .env("NOTIFY_SOCKET", &self.notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if self.as_root {
            command.uid(DAEMON_ID).gid(DAEMON_ID);
        }
        let mut child = command.spawn().expect("spawning gatewayd");
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let mut log = String::new();
        let ready = tokio::time::timeout(PROCESS_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                log.push_str(&line);
                log.push('\n');
                if line.contains("gatewayd: ready") {
                    return Some(line);
                }
            }
            None
        })
        .await;
        let Ok(Some(line)) = ready else {
            panic!("gatewayd did not become ready; log:\n{log}");
        };
        // The rest of the log is drained so the daemon never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let proxy = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("proxy="))
            .unwrap_or_else(|| panic!("no proxy address in {line}"))
            .to_owned();
        Running { child, proxy, log }
    }

    /// The datagrams received on the notify socket so far.
    fn notifications(&self) -> Vec<String> {
        let mut messages = Vec::new();
        let mut buffer = vec![0u8; 4096];
        while let Ok(n) = self.notify.recv(&mut buffer) {
            messages.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
        messages
    }

    /// Runs the installed `gwctl` as `who`, with the unit's environment (no NOTIFY_SOCKET).
    async fn gwctl(&self, who: Who, args: &[&str]) -> gateway_tests::GwctlOutput {
        let gwctl = self.bin.join("gwctl");
        let mut command = match who {
            Who::Daemon => {
                let mut command = Command::new(&gwctl);
                if self.as_root {
                    command.uid(DAEMON_ID).gid(DAEMON_ID);
                }
                command
            }
            Who::Operator | Who::Outsider => {
                let (id, groups) = match who {
                    Who::Operator => (OPERATOR_ID, format!("--groups={DAEMON_ID}")),
                    _ => (OUTSIDER_ID, "--clear-groups".to_owned()),
                };
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={id}"))
                    .arg(format!("--regid={id}"))
                    .arg(groups)
                    .arg(&gwctl);
                command
            }
        };
        let output = command
            .args(args)
            .env_clear()
            .envs(self.environment())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("running gwctl");
        gateway_tests::GwctlOutput {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
}
