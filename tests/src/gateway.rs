//! A real `gatewayd` process in a temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::admin::Admin;
use crate::gwctl::{self, GwctlOutput};
use crate::mock::MockProvider;

/// How long a daemon may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct GatewayOptions {
    /// TOML appended to the generated config (which sets data_dir, admin.socket, the proxy
    /// listener on port 0 and, with a mock, the providers).
    pub extra_config: String,
    /// Lines for the `[proxy]` section (the harness writes the header and `listen`).
    pub proxy_config: String,
    /// Lines for the `[admin]` section (the harness writes the header, `socket` and `listen`).
    pub admin_config: String,
    /// `GATEWAYD_LOG` filter. Trace by default, so that secret-leak checks see everything.
    pub log_filter: String,
    /// Point all three providers at this mock, with credentials from `PROVIDER_KEYS`.
    pub mock: Option<MockProvider>,
    /// Start the daemon under this open-files limit (soft, hard), as `ulimit -n` would.
    pub open_files_limit: Option<(u64, u64)>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            extra_config: String::new(),
            proxy_config: String::new(),
            admin_config: String::new(),
            log_filter: "trace".into(),
            mock: None,
            open_files_limit: None,
        }
    }
}

/// The provider credentials the daemon is given in tests: (provider, env var, secret). The
/// mock checks it sees these; leak checks grep the logs for them.
pub const PROVIDER_KEYS: [(&str, &str, &str); 3] = [
    (
        "openai",
        "GW_TEST_OPENAI_KEY",
        "sk-upstream-openai-Q7ZLm2xVbN4kR8tY",
    ),
    (
        "anthropic",
        "GW_TEST_ANTHROPIC_KEY",
        "sk-ant-upstream-W3pHs9dKfJ6qA1zC",
    ),
    (
        "gemini",
        "GW_TEST_GEMINI_KEY",
        "AIzaUpstreamGemini5mT2vX8nB4cL7",
    ),
];

pub fn provider_key(provider: &str) -> &'static str {
    PROVIDER_KEYS
        .iter()
        .find(|(p, _, _)| *p == provider)
        .map(|(_, _, key)| *key)
        .expect("known provider")
}

pub struct Gateway {
    /// Holds the directory for the gateway's lifetime.
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub config_path: PathBuf,
    /// The proxy listener's address, from the ready line.
    pub proxy_addr: SocketAddr,
    /// The HTTPS management listener's address, from the ready line.
    pub admin_addr: SocketAddr,
    options: GatewayOptions,
    child: Option<Child>,
    /// Everything every run of this daemon wrote to stderr.
    logs: Arc<Mutex<String>>,
}

impl Gateway {
    pub async fn start() -> Gateway {
        Self::start_with(GatewayOptions::default()).await
    }

    pub async fn start_with(options: GatewayOptions) -> Gateway {
        crate::install_crypto_provider();
        let dir = tempfile::Builder::new()
            .prefix("gw-e2e-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().to_path_buf();
        let data_dir = root.join("data");
        let socket = root.join("run/admin.sock");
        let config_path = root.join("gatewayd.toml");
        let mut config = format!(
            "data_dir = {data_dir:?}\n[admin]\nsocket = {socket:?}\nlisten = \"127.0.0.1:0\"\n{}\n[proxy]\n{}\n{}\n",
            options.admin_config,
            if options.proxy_config.contains("listen") {
                ""
            } else {
                "listen = \"127.0.0.1:0\""
            },
            options.proxy_config,
            data_dir = data_dir.display().to_string(),
            socket = socket.display().to_string(),
        );
        if let Some(mock) = &options.mock {
            for (provider, env, _) in PROVIDER_KEYS {
                config.push_str(&format!(
                    "[providers.{provider}]\nbase_url = {:?}\napi_key_env = {env:?}\n",
                    mock.base_url(provider)
                ));
            }
        }
        config.push_str(&options.extra_config);
        std::fs::write(&config_path, config).expect("writing config");
        let mut gateway = Gateway {
            _dir: dir,
            root,
            data_dir,
            socket,
            config_path,
            proxy_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            options,
            child: None,
            logs: Arc::new(Mutex::new(String::new())),
        };
        gateway.spawn().await;
        gateway
    }

    /// A gateway whose providers are a fresh mock, with `[proxy]` lines and extra TOML.
    pub async fn with_mock(proxy_config: &str, extra_config: &str) -> (Gateway, MockProvider) {
        let mock = MockProvider::start().await;
        let gateway = Gateway::start_with(GatewayOptions {
            mock: Some(mock.clone()),
            proxy_config: proxy_config.to_owned(),
            extra_config: extra_config.to_owned(),
            ..Default::default()
        })
        .await;
        (gateway, mock)
    }

    /// Starts the daemon and waits for its ready line.
    async fn spawn(&mut self) {
        let mut child = gatewayd_command_limited(
            &self.config_path,
            &self.options.log_filter,
            self.options.open_files_limit,
        )
        .spawn()
        .expect("spawning gatewayd");
        let stderr = child.stderr.take().expect("piped stderr");
        let (ready_tx, ready_rx) = oneshot::channel::<String>();
        let logs = Arc::clone(&self.logs);
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let is_ready = line.contains("gatewayd: ready");
                {
                    let mut logs = logs.lock().unwrap_or_else(|p| p.into_inner());
                    logs.push_str(&line);
                    logs.push('\n');
                }
                if is_ready && let Some(tx) = ready_tx.take() {
                    let _ = tx.send(line);
                }
            }
        });
        match tokio::time::timeout(START_TIMEOUT, ready_rx).await {
            Ok(Ok(line)) => {
                let field = |name: &str| -> SocketAddr {
                    line.split_whitespace()
                        .find_map(|field| field.strip_prefix(name))
                        .and_then(|addr| addr.parse().ok())
                        .unwrap_or_else(|| panic!("no {name} address in the ready line: {line}"))
                };
                self.proxy_addr = field("proxy=");
                self.admin_addr = field("admin=");
            }
            _ => {
                let status = child.try_wait().ok().flatten();
                panic!(
                    "gatewayd did not become ready (exit: {status:?}); log:\n{}",
                    self.logs()
                );
            }
        }
        self.child = Some(child);
    }

    /// `http://127.0.0.1:PORT` of the proxy listener.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }

    /// `https://127.0.0.1:PORT` of the management listener.
    pub fn admin_url(&self) -> String {
        format!("https://{}", self.admin_addr)
    }

    /// The self-signed certificate the daemon generated for its HTTPS listener.
    pub fn admin_cert(&self) -> PathBuf {
        self.data_dir.join("tls/cert.pem")
    }

    pub fn admin(&self) -> Admin {
        Admin {
            socket: self.socket.clone(),
        }
    }

    pub async fn gwctl(&self, args: &[&str]) -> GwctlOutput {
        gwctl::run(&self.socket, args).await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("gateway is running");
        let pid = child.id().expect("running child has a pid");
        signal(pid, rustix::process::Signal::TERM);
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("gatewayd exits within 30 s of SIGTERM")
            .expect("waiting for gatewayd")
    }

    /// SIGKILL: no chance to clean up.
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().expect("gateway is running");
        child.kill().await.expect("kill -9");
    }

    /// Starts the daemon again on the same directory and config.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "stop the gateway first");
        self.spawn().await;
    }

    pub async fn restart(&mut self) {
        let status = self.stop().await;
        assert!(
            status.success(),
            "gatewayd exited with {status:?}; log:\n{}",
            self.logs()
        );
        self.start_again().await;
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The command that starts gatewayd with a config, logs piped.
pub fn gatewayd_command(config: &Path, log_filter: &str) -> Command {
    gatewayd_command_limited(config, log_filter, None)
}

/// The same, under an open-files limit (soft, hard) set by `sh` before it execs gatewayd
/// (the same process, so its pid and signals are gatewayd's).
pub fn gatewayd_command_limited(
    config: &Path,
    log_filter: &str,
    open_files_limit: Option<(u64, u64)>,
) -> Command {
    let mut command = match open_files_limit {
        None => Command::new(crate::binaries::gatewayd()),
        Some((soft, hard)) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(r#"ulimit -Sn "$1" && ulimit -Hn "$0" && shift && exec "$@""#)
                .arg(hard.to_string())
                .arg(soft.to_string())
                .arg(crate::binaries::gatewayd());
            sh
        }
    };
    command
        .arg("--config")
        .arg(config)
        .env("GATEWAYD_LOG", log_filter)
        .env_remove("GATEWAYD_CONFIG")
        .env_remove("GATEWAYD_LOG_FORMAT")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("GEMINI_API_KEY")
        .envs(PROVIDER_KEYS.iter().map(|(_, env, key)| (*env, *key)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Sends `signal` to `pid`; a process that has already exited is not an error.
pub fn signal(pid: u32, signal: rustix::process::Signal) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process(pid, signal);
}

impl Drop for Gateway {
    /// Every test is also a leak test: whatever it did, the daemon's trace-level log and the
    /// text columns of its usage table (the model as the client named it) must not contain a
    /// raw proxy key or a provider credential.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_no_secrets("the gatewayd log", &self.logs());
            assert_no_secrets("the usage table", &usage_text(&self.data_dir));
        }
    }
}

/// Every text column of every usage row in the database under `data_dir`, one row a line
/// (empty when the daemon never created its usage table).
pub fn usage_text(data_dir: &Path) -> String {
    let path = data_dir.join("gateway.db");
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return String::new();
    };
    let Ok(mut statement) = conn
        .prepare("SELECT key_id || ' ' || provider || ' ' || model || ' ' || source FROM usage")
    else {
        return String::new();
    };
    let rows = statement
        .query_map([], |row| row.get::<_, String>(0))
        .expect("query usage");
    rows.map(|row| row.expect("row") + "\n").collect()
}

/// Fails if `text` contains a provider credential or anything shaped like a raw proxy key
/// (`sk-proxy-` and 38 base62 characters; display prefixes have only 4) or a raw admin token
/// (`gwadm-` and its secret part).
pub fn assert_no_secrets(what: &str, text: &str) {
    for (provider, _, key) in PROVIDER_KEYS {
        assert!(
            !text.contains(key),
            "{what} contains the {provider} provider key"
        );
    }
    for (at, _) in text.match_indices("gwadm-") {
        let tail = &text[at + "gwadm-".len()..];
        let run = tail.bytes().take_while(u8::is_ascii_alphanumeric).count();
        assert!(
            run < 16,
            "{what} contains a raw admin token: {}…",
            &text[at..at + 10]
        );
    }
    for (at, _) in text.match_indices("sk-proxy-") {
        let tail = &text[at + "sk-proxy-".len()..];
        let run = tail.bytes().take_while(u8::is_ascii_alphanumeric).count();
        assert!(
            run < 32,
            "{what} contains a raw proxy key: {}…",
            &text[at..at + 13]
        );
    }
}
