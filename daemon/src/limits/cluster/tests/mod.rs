//! The settler, the sweeper and the rebuild against a real Redis: the shared one
//! (`GATEWAY_TEST_REDIS_URL`, default redis://127.0.0.1:6379) under a random prefix of each
//! test's own, deleted when the test ends (never FLUSHALL: the server is shared), and a
//! private `redis-server` for the tests that pause it. The shared Redis's [`Harness`] is the
//! engine's own (`limits::redis::tests`).

mod rebuild;
mod settler;
mod sweeper;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::limits::redis::{
    Admission, Finished, HoldId, Outcome, RedisLimits, SettleResult, SpendAsk,
};

use crate::config::SecretUrl;
pub(super) use crate::limits::redis::tests::{Harness, seeded};

pub(super) fn hold(seq: u64) -> HoldId {
    HoldId { instance: 3, seq }
}

/// An admission against a spend limit of `limit`, holding `worst`, charged `estimate` if
/// swept, under `lease`.
pub(super) fn spending(
    owner: &str,
    hold: HoldId,
    limit: u64,
    worst: u64,
    estimate: u64,
    lease: Duration,
) -> Admission<'_> {
    Admission {
        what: "",
        owner,
        key_id: owner,
        version: 1,
        hold,
        rate_limit: None,
        spend: Some(SpendAsk {
            limit,
            reset: None,
            worst,
            min: None,
        }),
        estimate,
        lease,
    }
}

pub(super) async fn admitted(limits: &RedisLimits, admission: &Admission<'_>) {
    let outcome = limits.admit(admission).await.expect("admit");
    assert!(
        matches!(outcome, Outcome::Admitted { .. }),
        "{:?}: {outcome:?}",
        admission.hold
    );
}

/// Polls `done` every 10 ms until it holds or `within` passed.
pub(super) async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

/// A `redis-server` of a test's own (from PATH), keeping nothing on disk, with a password;
/// paused with SIGSTOP (it accepts connections and never answers). Killed on drop.
pub(crate) struct PrivateRedis {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

const PASSWORD: &str = "hunter2-settler-secret";

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        let dir = tempfile::Builder::new()
            .prefix("gw-cluster-redis-")
            .tempdir()
            .expect("temp dir");
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port();
            if let Some(child) = spawn(port, dir.path()).await {
                return PrivateRedis { port, child, dir };
            }
        }
        panic!("a private redis-server could not start on a free port");
    }

    /// SIGKILL, then a new server on the same port: empty, as after a restart without
    /// persistence.
    pub async fn restart_empty(&mut self) {
        self.pause(false);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.port, self.dir.path())
            .await
            .expect("the private Redis could not start again");
    }

    pub fn url(&self) -> String {
        format!("redis://:{PASSWORD}@127.0.0.1:{}", self.port)
    }

    pub async fn limits(&self, timeout: Duration) -> RedisLimits {
        let url = SecretUrl::redis(&self.url()).expect("url");
        RedisLimits::connect(&url, "gwc", timeout)
            .await
            .expect("the private Redis")
    }

    /// SIGSTOP / SIGCONT.
    pub fn pause(&self, paused: bool) {
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

async fn spawn(port: u16, dir: &std::path::Path) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            PASSWORD,
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if answers(&url).await {
            return Some(child);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

async fn answers(url: &str) -> bool {
    let probe = async {
        let client = redis::Client::open(url).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Some(_))
    )
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.pause(false);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
