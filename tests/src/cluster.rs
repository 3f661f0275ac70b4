//! Several real `gatewayd` replicas sharing one PostgreSQL store (SPEC §9), in front of one
//! mock provider.
//!
//! The store URL reaches the replicas the way an operator's would: from a file readable by
//! its owner only (`postgres_url_file`), never on a command line or in the config itself.
//!
//! The limits engine is the shared Redis by default: each cluster's keys live under
//! `gw:<cluster id>:`, which no other test's cluster shares, and are deleted when the cluster
//! is dropped (its replicas killed first, so none writes after). A test that stops, restarts
//! or flushes Redis gives the cluster a [`PrivateRedis`](crate::PrivateRedis) of its own
//! ([`Cluster::start_on_redis`]).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::backends::{self, PgDatabase};
use crate::gateway::{Gateway, GatewayOptions};
use crate::mock::MockProvider;

/// The replicas, their mock provider and the files holding the backends' URLs.
pub struct Cluster {
    pub replicas: Vec<Gateway>,
    pub mock: MockProvider,
    /// Holds the URL files for the cluster's lifetime.
    secrets: tempfile::TempDir,
    /// The shared database, when the cluster made its own (dropped with the cluster).
    database: Option<PgDatabase>,
    postgres_url: String,
    /// The Redis the replicas use, and whether it is the shared one (whose keys of this
    /// cluster are deleted on drop).
    redis_url: String,
    shared_redis: bool,
}

impl Cluster {
    /// `n` replicas on a fresh database of the shared PostgreSQL server, started one after
    /// the other.
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, "").await
    }

    /// `n` replicas on a fresh database, each with `extra_config` appended to its config
    /// (right after the `[cluster]` lines: `hold_lease = "10s"` belongs there; a
    /// `[[prices]]` table may follow).
    pub async fn start_with(n: usize, extra_config: &str) -> Cluster {
        let database = backends::shared_postgres_database().await;
        let url = database.url().to_owned();
        let mut cluster = Cluster::prepare(&url, Some(database)).await;
        for _ in 0..n {
            cluster.add(extra_config).await;
        }
        cluster
    }

    /// `n` replicas on a fresh database whose limits engine is the Redis at `redis_url` (a
    /// private server's, to stop or flush), each with `extra_config`.
    pub async fn start_on_redis(n: usize, redis_url: &str, extra_config: &str) -> Cluster {
        let database = backends::shared_postgres_database().await;
        let url = database.url().to_owned();
        let mut cluster = Cluster::prepare_with_redis(&url, Some(database), redis_url).await;
        for _ in 0..n {
            cluster.add(extra_config).await;
        }
        cluster
    }

    /// `n` replicas on the database at `postgres_url` (a private server's, say), all started
    /// at the same instant.
    pub async fn start_together_on(n: usize, postgres_url: &str) -> Cluster {
        let mut cluster = Cluster::prepare(postgres_url, None).await;
        let starts: Vec<_> = (0..n)
            .map(|_| tokio::spawn(Gateway::start_with(cluster.options(""))))
            .collect();
        for start in starts {
            cluster
                .replicas
                .push(start.await.expect("a replica start panicked"));
        }
        cluster
    }

    /// A cluster with no replica yet, on `postgres_url`; add them with [`Cluster::add`].
    pub async fn prepare(postgres_url: &str, database: Option<PgDatabase>) -> Cluster {
        let mut cluster =
            Cluster::prepare_with_redis(postgres_url, database, &backends::shared_redis_url())
                .await;
        cluster.shared_redis = true;
        cluster
    }

    /// The same, with the Redis at `redis_url` as the limits engine.
    pub async fn prepare_with_redis(
        postgres_url: &str,
        database: Option<PgDatabase>,
        redis_url: &str,
    ) -> Cluster {
        crate::install_crypto_provider();
        let secrets = tempfile::Builder::new()
            .prefix("gw-cluster-")
            .tempdir()
            .expect("temp dir");
        for (name, url) in [
            ("postgres.url", with_password(postgres_url)),
            ("redis.url", redis_url.to_owned()),
        ] {
            let path = secrets.path().join(name);
            std::fs::write(&path, format!("{url}\n")).expect("writing a URL file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod 600");
        }
        Cluster {
            replicas: Vec::new(),
            mock: MockProvider::start().await,
            secrets,
            database,
            postgres_url: postgres_url.to_owned(),
            redis_url: redis_url.to_owned(),
            shared_redis: false,
        }
    }

    /// Starts one more replica, with `extra_config` appended to its config.
    pub async fn add(&mut self, extra_config: &str) -> &mut Gateway {
        let replica = Gateway::start_with(self.options(extra_config)).await;
        self.replicas.push(replica);
        self.replicas.last_mut().expect("just pushed")
    }

    /// The options of a replica of this cluster.
    pub fn options(&self, extra_config: &str) -> GatewayOptions {
        GatewayOptions {
            mock: Some(self.mock.clone()),
            extra_config: format!(
                "[cluster]\npostgres_url_file = {:?}\nredis_url_file = {:?}\n{extra_config}",
                self.url_file("postgres.url").display().to_string(),
                self.url_file("redis.url").display().to_string(),
            ),
            ..Default::default()
        }
    }

    /// Points every replica's next start at `postgres_url` (another database, say).
    pub fn point_at(&mut self, postgres_url: &str) {
        let path = self.url_file("postgres.url");
        std::fs::write(&path, format!("{}\n", with_password(postgres_url)))
            .expect("rewriting the URL file");
        self.postgres_url = postgres_url.to_owned();
    }

    /// The cluster's own database, when it made one ([`Cluster::start`]).
    pub fn database(&self) -> Option<&PgDatabase> {
        self.database.as_ref()
    }

    /// The shared store's URL (with its password, if any: for the test's own connections).
    pub fn postgres_url(&self) -> &str {
        &self.postgres_url
    }

    /// A new connection to the shared store, for the test's own queries.
    pub async fn store(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.postgres_url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connecting to the cluster's store: {e}"));
        tokio::spawn(connection);
        client
    }

    /// The cluster's id, from the `cluster-id` file of the first replica that has one.
    pub fn cluster_id(&self) -> Option<String> {
        self.replicas.iter().find_map(|replica| {
            std::fs::read_to_string(replica.data_dir.join("cluster-id"))
                .ok()
                .map(|id| id.trim().to_owned())
                .filter(|id| !id.is_empty())
        })
    }

    /// The prefix of this cluster's keys in Redis: `gw:<cluster id>:`.
    pub fn redis_prefix(&self) -> String {
        format!(
            "gw:{}:",
            self.cluster_id().expect("a replica has joined the cluster")
        )
    }

    /// This cluster's keys in its Redis, by SCAN.
    pub fn redis_keys(&self) -> Vec<String> {
        backends::redis_keys_matching(&self.redis_url, &format!("{}*", self.redis_prefix()))
            .unwrap_or_else(|e| panic!("listing the cluster's Redis keys: {e}"))
    }

    /// `kill -9` of replica `index`: its open requests and holds are left as a crash leaves
    /// them.
    pub async fn kill9(&mut self, index: usize) {
        self.replicas[index].kill9().await;
    }

    fn url_file(&self, name: &str) -> PathBuf {
        self.secrets.path().join(name)
    }
}

/// The password every replica's store URL carries (the test servers trust local
/// connections, so it is never checked, but the replicas hold it as they would a real one).
pub const STORE_PASSWORD: &str = "pg-pass-Zq8xW4vT1m";

/// `url` with [`STORE_PASSWORD`] as its password, unless it has one.
fn with_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user, host)) if !user.contains(':') => {
            format!("{scheme}://{user}:{STORE_PASSWORD}@{host}")
        }
        _ => url.to_owned(),
    }
}

impl Drop for Cluster {
    /// Every cluster test is also a leak test for the store's password: no replica's
    /// trace-level log may contain it. Then the replicas are killed and, on the shared Redis,
    /// the cluster's keys deleted (also when the test failed).
    fn drop(&mut self) {
        let cluster_id = self.cluster_id();
        if !std::thread::panicking() {
            for replica in &self.replicas {
                assert!(
                    !replica.logs().contains(STORE_PASSWORD),
                    "a replica's log contains the store's password"
                );
            }
        }
        let (Some(id), true) = (cluster_id, self.shared_redis) else {
            return;
        };
        for replica in &self.replicas {
            if let Some(pid) = replica.pid() {
                crate::gateway::signal(pid, rustix::process::Signal::KILL);
                wait_until_dead(pid);
            }
        }
        if let Err(e) = backends::delete_redis_keys_matching(&self.redis_url, &format!("gw:{id}:*"))
        {
            eprintln!("cluster: deleting the keys of cluster {id} on the shared Redis: {e}");
        }
    }
}

/// Waits (blocking, at most 5 s: this runs in `Drop`) until `pid` has exited: gone, or a
/// zombie, which holds no connection.
fn wait_until_dead(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let (_, fields) = stat.rsplit_once(')')?;
                fields.split_whitespace().next().map(str::to_owned)
            });
        match state.as_deref() {
            None | Some("Z" | "X") => return,
            Some(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}
