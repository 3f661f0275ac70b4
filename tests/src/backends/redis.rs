//! Redis for tests: a key prefix of one's own on the shared server, or a private server.
//!
//! On the shared server a test never flushes: it writes under its prefix, and the prefix's
//! keys are deleted on drop (SCAN + UNLINK of `<prefix>*`). A private server keeps nothing on
//! disk (`--save '' --appendonly no`), so a restart starts empty, as the shared one does here.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use rustix::process::Signal;

use super::process::{self, ServerProcess, log_tail};

const WHAT: &str = "the private Redis";
use super::{shared_redis_url, unique_name, url_host_port};

/// How long a server may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A key prefix of its own on the shared Redis; its keys are deleted on drop.
pub struct RedisPrefix {
    prefix: String,
    server_url: String,
}

/// A prefix (`gw_t_<pid>_<counter>_<random>:`) no other test uses, on the shared Redis
/// (`GATEWAY_TEST_REDIS_URL`), which must answer: a panic names it otherwise.
pub async fn shared_redis_prefix() -> RedisPrefix {
    let server_url = shared_redis_url();
    let mut connection = connect(&server_url, "the shared Redis (GATEWAY_TEST_REDIS_URL)").await;
    let _: String = redis::cmd("PING")
        .query_async(&mut connection)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the shared Redis at {} does not answer PING: {e}",
                url_host_port(&server_url)
            )
        });
    RedisPrefix {
        prefix: format!("{}:", unique_name()),
        server_url,
    }
}

impl RedisPrefix {
    /// The prefix, ending with `:`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix><name>`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The shared server's URL.
    pub fn url(&self) -> &str {
        &self.server_url
    }

    /// A new connection to the shared server.
    pub async fn connect(&self) -> MultiplexedConnection {
        connect(&self.server_url, "the shared Redis").await
    }

    /// The keys under the prefix, by SCAN (never KEYS, which blocks the server).
    pub fn keys(&self) -> redis::RedisResult<Vec<String>> {
        let mut connection = sync_connection(&self.server_url)?;
        scan(&mut connection, &format!("{}*", self.prefix))
    }

    fn delete_keys(&self) -> redis::RedisResult<()> {
        delete_matching(&self.server_url, &format!("{}*", self.prefix))
    }
}

impl Drop for RedisPrefix {
    /// Uses the synchronous client: Drop cannot await, and it needs no runtime. A failure is
    /// reported, never a panic.
    fn drop(&mut self) {
        if let Err(e) = self.delete_keys() {
            eprintln!(
                "backends: deleting the keys of test prefix {} on {}: {e}",
                self.prefix,
                url_host_port(&self.server_url)
            );
        }
    }
}

/// The keys matching `pattern` (a SCAN glob) on the server at `url`, by SCAN. For what a
/// test did not name itself: a cluster's keys live under `gw:<cluster id>:`.
pub fn keys_matching(url: &str, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let mut connection = sync_connection(url)?;
    scan(&mut connection, pattern)
}

/// Deletes the keys matching `pattern` on the server at `url` (SCAN + UNLINK). Synchronous,
/// for `Drop`.
pub fn delete_matching(url: &str, pattern: &str) -> redis::RedisResult<()> {
    // A blocking socket call interrupted by a signal (the test process's children exiting:
    // EINTR) fails the whole attempt: tried again, a few times (SCAN and UNLINK may repeat).
    let mut attempt = 0;
    loop {
        attempt += 1;
        match delete_matching_once(url, pattern) {
            Err(e) if attempt < 5 => {
                eprintln!("backends: deleting {pattern} failed ({e}); trying again");
                std::thread::sleep(Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

fn delete_matching_once(url: &str, pattern: &str) -> redis::RedisResult<()> {
    let mut connection = sync_connection(url)?;
    for chunk in scan(&mut connection, pattern)?.chunks(500) {
        redis::cmd("UNLINK")
            .arg(chunk)
            .query::<()>(&mut connection)?;
    }
    Ok(())
}

/// A Redis server of its own: stop, restart and flush it without disturbing other tests.
/// Killed, and its directory removed, on drop.
pub struct PrivateRedis {
    port: u16,
    /// Declared before `dir`: the server is killed before its directory is removed.
    server: Option<ServerProcess>,
    /// Its working directory (it writes nothing there) and `redis.log`.
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gw-test-redis-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp dir for a private Redis: {e}"));
        let mut redis = Self {
            port: 0,
            server: None,
            dir,
        };
        // The free port is found by binding and releasing it, so another process may take it
        // before the server binds it: then try another.
        for _ in 0..5 {
            redis.port = super::free_port();
            if redis.spawn_and_wait().await {
                return redis;
            }
        }
        panic!(
            "a private Redis could not bind a free port in 5 tries\n{}",
            redis.log_tail()
        );
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new connection.
    pub async fn connect(&self) -> MultiplexedConnection {
        connect(&self.url(), "the private Redis").await
    }

    /// Deletes every key of this server (its own: no other test uses it).
    pub async fn flushall(&self) {
        let mut connection = self.connect().await;
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("FLUSHALL on the private Redis: {e}"));
    }

    /// SIGTERM (the server closes its connections and exits, saving nothing); returns once it
    /// has exited and its port refuses connections.
    pub async fn stop(&mut self) {
        process::stop(&mut self.server, WHAT, self.port, Signal::TERM).await;
    }

    /// SIGKILL; returns once its port refuses connections.
    pub async fn kill(&mut self) {
        process::kill(&mut self.server, WHAT, self.port).await;
    }

    /// Starts the server again on the same port (empty: it keeps nothing); returns once it
    /// answers.
    pub async fn start_again(&mut self) {
        assert!(
            self.server.is_none(),
            "start_again: the private Redis is already running"
        );
        if !self.spawn_and_wait().await {
            panic!(
                "the private Redis could not start again on port {}\n{}",
                self.port,
                self.log_tail()
            );
        }
    }

    /// Spawns the server and waits until it answers. `false` when it exited because its port
    /// was taken; a panic for any other failure.
    async fn spawn_and_wait(&mut self) -> bool {
        let log = self.dir.path().join("redis.log");
        let mut command = Command::new(redis_server());
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--logfile", "", "--databases", "16"])
            .arg("--dir")
            .arg(self.dir.path());
        let log_before = std::fs::metadata(&log).map_or(0, |m| m.len());
        let mut server = ServerProcess::spawn("Redis", command, &log);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.answers().await {
                self.server = Some(server);
                return true;
            }
            if server.has_exited() {
                let new_log = std::fs::read(&log).unwrap_or_default();
                let new_log = String::from_utf8_lossy(
                    new_log
                        .get(usize::try_from(log_before).unwrap_or(0)..)
                        .unwrap_or_default(),
                );
                if new_log.contains("Address already in use") {
                    return false;
                }
                panic!(
                    "the private Redis exited at start-up\n{}",
                    server.log_tail()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "the private Redis did not answer within {START_TIMEOUT:?}\n{}",
                    server.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether this server (not another one that took the port) answers: its working
    /// directory is ours.
    async fn answers(&self) -> bool {
        let probe = async {
            let client = redis::Client::open(self.url()).ok()?;
            let mut connection = client.get_multiplexed_async_connection().await.ok()?;
            let (_, dir): (String, String) = redis::cmd("CONFIG")
                .arg("GET")
                .arg("dir")
                .query_async(&mut connection)
                .await
                .ok()?;
            Some(dir)
        };
        let dir = tokio::time::timeout(Duration::from_secs(2), probe).await;
        dir.ok()
            .flatten()
            .is_some_and(|dir| Path::new(&dir) == self.dir.path())
    }

    fn log_tail(&self) -> String {
        log_tail("Redis", &self.dir.path().join("redis.log"))
    }
}

/// `redis-server` from `PATH`; a clear panic when it is not installed.
fn redis_server() -> &'static str {
    let installed = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("redis-server").is_file())
    });
    assert!(
        installed,
        "redis-server is not installed (not in PATH). ./scripts/test installs it (as root on \
         Debian), or: apt-get install redis-server"
    );
    "redis-server"
}

/// A multiplexed connection to `url`. Panics naming `what` and the server's host and port
/// (never the URL: it may hold a password).
async fn connect(url: &str, what: &str) -> MultiplexedConnection {
    try_connect(url, what)
        .await
        .unwrap_or_else(|message| panic!("{message}"))
}

async fn try_connect(url: &str, what: &str) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(url)
        .map_err(|e| format!("{what}: not a Redis URL ({}): {e}", url_host_port(url)))?;
    match tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(format!(
            "cannot connect to {what} at {}: {e} (./scripts/test finds or starts one)",
            url_host_port(url)
        )),
        Err(_) => Err(format!(
            "cannot connect to {what} at {}: no answer within 10 s",
            url_host_port(url)
        )),
    }
}

fn sync_connection(url: &str) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(url)?;
    let connection = client.get_connection_with_timeout(Duration::from_secs(5))?;
    connection.set_read_timeout(Some(Duration::from_secs(10)))?;
    connection.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(connection)
}

/// Every key matching `pattern`, by SCAN.
fn scan(connection: &mut redis::Connection, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor = 0_u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(connection)?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_that_does_not_answer_is_named_without_the_password() {
        let port = crate::backends::free_port();
        let url = format!("redis://gw:hunter2secret@127.0.0.1:{port}/0");
        let Err(message) = try_connect(&url, "the test server").await else {
            panic!("connected to a closed port");
        };
        assert!(
            message.contains(&format!("the test server at 127.0.0.1:{port}")),
            "{message}"
        );
        assert!(!message.contains("hunter2secret"), "{message}");
    }
}
