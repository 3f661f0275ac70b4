//! A Redis server of a test's own (`redis-server` from PATH), for the tests that stop,
//! pause or restart it; it keeps nothing on disk, so a restart starts empty. Killed on
//! drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(super) struct PrivateRedis {
    pub port: u16,
    pub password: &'static str,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    pub async fn start(password: &'static str) -> PrivateRedis {
        let dir = tempfile::Builder::new()
            .prefix("gw-limits-redis-")
            .tempdir()
            .expect("temp dir");
        let mut redis = PrivateRedis {
            port: 0,
            password,
            child: None,
            dir,
        };
        // A free port can be taken between finding it and binding it: try a few.
        for _ in 0..5 {
            redis.port = free_port();
            if redis.spawn().await {
                return redis;
            }
        }
        panic!("a private redis-server could not start on a free port");
    }

    pub fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}", self.password, self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn start_again(&mut self) {
        assert!(
            self.spawn().await,
            "the private Redis could not start again"
        );
    }

    /// SIGSTOP / SIGCONT: a server that accepts connections and never answers.
    pub fn pause(&self, paused: bool) {
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    async fn spawn(&mut self) -> bool {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                self.password,
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if self.answers().await {
                self.child = Some(child);
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    async fn answers(&self) -> bool {
        let probe = async {
            let client = redis::Client::open(self.url()).ok()?;
            let mut connection = client.get_multiplexed_async_connection().await.ok()?;
            let dir: (String, String) = redis::cmd("CONFIG")
                .arg("GET")
                .arg("dir")
                .query_async(&mut connection)
                .await
                .ok()?;
            Some(dir.1)
        };
        let dir = tokio::time::timeout(Duration::from_secs(1), probe).await;
        dir.ok()
            .flatten()
            .is_some_and(|dir| std::path::Path::new(&dir) == self.dir.path())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.pause(false);
        }
        self.kill();
    }
}

pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
