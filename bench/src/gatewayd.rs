//! Driving a real `gatewayd`: its config file, start and stop, its management API over the
//! Unix socket, and seeding its database with many keys.
//!
//! The daemon is measured as operators run it: the release binary, its own process, a config
//! file, keys created through the management API. The one shortcut is for scale: creating
//! 100,000 keys one committed transaction at a time takes longer than the benchmark's time
//! budget, so after a sample created through the API (timed, to report the API's rate) the
//! rest are cloned from the benchmark key's own row straight into SQLite while the daemon is
//! stopped, with fresh ids, secrets and hashes from `gateway-shared` (the same code the daemon
//! uses). Cloning the row, with the column list read from the table itself, keeps the seeding
//! right whatever migrations add.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::process::Proc;

/// Environment variable holding the (fake) OpenAI credential gatewayd sends to the mock.
const UPSTREAM_KEY_ENV: &str = "GATEWAY_BENCH_OPENAI_KEY";
/// How long a daemon may take to print its ready line (100k keys included).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How to start daemons for this run.
#[derive(Clone, Debug)]
pub struct Launcher {
    pub binary: PathBuf,
    pub upstream: SocketAddr,
    /// `worker_threads` to write into the config; `None` leaves the daemon's default.
    pub worker_threads: Option<usize>,
}

/// A daemon's directory: config, data and socket live under it.
#[derive(Clone, Debug)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    pub fn new(dir: PathBuf) -> anyhow::Result<Home> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Home { dir })
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("gatewayd.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn database(&self) -> PathBuf {
        self.data().join("gateway.db")
    }
}

impl Launcher {
    /// Writes the daemon's config: loopback listeners on free ports, the mock as OpenAI, a
    /// price for the benchmark model.
    pub fn write_config(&self, home: &Home) -> anyhow::Result<()> {
        self.write_config_with(home, "")
    }

    /// The same config with `extra` (whole sections, e.g. `[cluster]`) appended.
    pub fn write_config_with(&self, home: &Home, extra: &str) -> anyhow::Result<()> {
        let mut config = config_text(
            &home.data(),
            &home.socket(),
            self.upstream,
            self.worker_threads,
        );
        config.push_str(extra);
        std::fs::write(home.config(), config).context("writing gatewayd config")
    }

    /// Whether this build of gatewayd accepts a `worker_threads` config field.
    pub fn accepts_worker_threads(binary: &Path, scratch: &Path) -> anyhow::Result<bool> {
        let path = scratch.join("check-worker-threads.toml");
        let config = config_text(
            &scratch.join("check-data"),
            &scratch.join("check.sock"),
            "127.0.0.1:9".parse()?,
            Some(1),
        );
        std::fs::write(&path, config)?;
        let status = Command::new(binary)
            .arg("--config")
            .arg(&path)
            .arg("--check-config")
            .env_remove("GATEWAYD_CONFIG")
            .stderr(std::process::Stdio::null())
            .status()
            .with_context(|| format!("running {}", binary.display()))?;
        Ok(status.success())
    }

    /// Starts the daemon on `home` and waits for its ready line.
    pub fn start(&self, home: &Home) -> anyhow::Result<Gateway> {
        let mut command = Command::new(&self.binary);
        command
            .arg("--config")
            .arg(home.config())
            .env("GATEWAYD_LOG", "warn,gatewayd=info")
            .env_remove("GATEWAYD_LOG_FORMAT")
            .env_remove("GATEWAYD_CONFIG")
            .env(UPSTREAM_KEY_ENV, "sk-bench-upstream-credential");
        let proc = Proc::spawn("gatewayd", command, "gatewayd: ready", START_TIMEOUT)?;
        let proxy = proc
            .ready_line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("proxy="))
            .and_then(|addr| addr.parse().ok())
            .with_context(|| format!("no proxy address in the ready line: {}", proc.ready_line))?;
        Ok(Gateway {
            proc,
            proxy,
            socket: home.socket(),
        })
    }
}

fn config_text(
    data: &Path,
    socket: &Path,
    upstream: SocketAddr,
    worker_threads: Option<usize>,
) -> String {
    let workers = worker_threads
        .map(|n| format!("worker_threads = {n}\n"))
        .unwrap_or_default();
    format!(
        r#"# Written by gateway-bench.
data_dir = "{data}"
{workers}
[proxy]
listen = "127.0.0.1:0"

[admin]
socket = "{socket}"
listen = "127.0.0.1:0"

[providers.openai]
base_url = "http://{upstream}"
api_key_env = "{UPSTREAM_KEY_ENV}"

[[prices]]
model = "bench-model"
input = 1
output = 2
max_output_tokens = 1000
"#,
        data = data.display(),
        socket = socket.display(),
    )
}

/// A running daemon.
pub struct Gateway {
    pub proc: Proc,
    pub proxy: SocketAddr,
    pub socket: PathBuf,
}

impl Gateway {
    pub fn admin(&self) -> Admin {
        Admin {
            socket: self.socket.clone(),
        }
    }
}

/// The benchmark key's rate limit: never reached by the benchmark's load.
pub const DEFAULT_RPM: u64 = 1_000_000;

/// The JSON of a key with every restriction and limit set, so every check and the metering
/// run on each request; limits high enough never to refuse the benchmark's load
/// ([`DEFAULT_RPM`] unless `--key-rpm`). Without a rate limit (`None`), the same key with no
/// rate or spend limit (`--unlimited-key`).
pub fn key_request(name: &str, rpm: Option<u64>) -> serde_json::Value {
    let mut key = serde_json::json!({
        "name": name,
        "allowed_providers": ["openai"],
        "allowed_models": ["bench-*"],
        "allowed_ips": ["127.0.0.0/8"],
        "expires_at": "2030-01-01T00:00:00Z"
    });
    if let Some(rpm) = rpm {
        key["rate_limit_rpm"] = rpm.into();
        key["spend_limit_usd"] = 1_000_000.into();
        key["spend_reset"] = "monthly".into();
    }
    key
}

/// The management API over the daemon's Unix socket, one keep-alive connection.
pub struct Admin {
    socket: PathBuf,
}

pub struct AdminConnection {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Admin {
    pub async fn connect(&self) -> anyhow::Result<AdminConnection> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .with_context(|| format!("connecting to {}", self.socket.display()))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(AdminConnection { sender })
    }
}

impl AdminConnection {
    /// One request; the status and the body.
    pub async fn send(
        &mut self,
        method: http::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "localhost");
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let request = request.body(Full::new(body))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    /// Creates a key with every limit; its id and raw secret.
    pub async fn create_key(&mut self, name: &str) -> anyhow::Result<(String, String)> {
        self.create_key_with(name, Some(DEFAULT_RPM)).await
    }

    /// Creates a key, with or without its rate and spend limits; its id and raw secret.
    pub async fn create_key_with(
        &mut self,
        name: &str,
        rpm: Option<u64>,
    ) -> anyhow::Result<(String, String)> {
        let (status, body) = self
            .send(
                http::Method::POST,
                "/v1/keys",
                Some(&key_request(name, rpm)),
            )
            .await?;
        if status != 201 {
            bail!(
                "creating a key answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let json: serde_json::Value = serde_json::from_slice(&body)?;
        let field = |name: &str| {
            json[name]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("no {name} in the create answer: {json}"))
        };
        Ok((field("id")?, field("secret")?))
    }

    /// Times `GET /v1/keys?limit=100`: the first call, then the median of `repeats` more.
    pub async fn time_first_page(&mut self, repeats: usize) -> anyhow::Result<PageTiming> {
        let mut times = Vec::with_capacity(repeats + 1);
        let mut items = 0;
        for _ in 0..=repeats {
            let started = Instant::now();
            let (status, body) = self
                .send(http::Method::GET, "/v1/keys?limit=100", None)
                .await?;
            times.push(started.elapsed());
            if status != 200 {
                bail!(
                    "listing keys answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            let json: serde_json::Value = serde_json::from_slice(&body)?;
            items = json
                .get("keys")
                .or_else(|| json.get("items"))
                .or_else(|| json.get("data"))
                .and_then(serde_json::Value::as_array)
                .map_or(0, Vec::len);
        }
        let first = times[0];
        let mut rest = times[1..].to_vec();
        rest.sort_unstable();
        let median = rest.get(rest.len() / 2).copied().unwrap_or(first);
        Ok(PageTiming {
            first,
            median,
            items,
        })
    }
}

/// Latency of the management API's first page of keys.
#[derive(Clone, Copy, Debug)]
pub struct PageTiming {
    pub first: Duration,
    pub median: Duration,
    pub items: usize,
}

/// Adds `count` keys to a stopped daemon's database, each a clone of `template_id`'s row
/// (same restrictions and limits) with a fresh id, secret hash, display prefix and name.
pub fn seed_keys(database: &Path, template_id: &str, count: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut conn = rusqlite::Connection::open(database)
        .with_context(|| format!("opening {}", database.display()))?;
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('keys')")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for needed in ["id", "hash", "prefix", "name"] {
        if !columns.iter().any(|c| c == needed) {
            bail!("the keys table has no {needed} column");
        }
    }
    let selected: Vec<&str> = columns
        .iter()
        .map(|column| match column.as_str() {
            "id" => "?1",
            "hash" => "?2",
            "prefix" => "?3",
            "name" => "?4",
            other => other,
        })
        .collect();
    let sql = format!(
        "INSERT INTO keys ({}) SELECT {} FROM keys WHERE id = ?5",
        columns.join(", "),
        selected.join(", ")
    );
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(&sql)?;
        for i in 0..count {
            let key = gateway_shared::ProxyKey::generate()?;
            let id = gateway_shared::key::new_key_id()?;
            let inserted = insert.execute(rusqlite::params![
                id,
                key.hash().to_hex(),
                key.display_prefix(),
                format!("seeded-{i}"),
                template_id,
            ])?;
            if inserted != 1 {
                bail!("the template key {template_id} is not in the database");
            }
        }
    }
    tx.commit()?;
    Ok(started.elapsed())
}
