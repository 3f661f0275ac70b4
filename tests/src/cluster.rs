//! Several real `gatewayd` replicas sharing one PostgreSQL store (SPEC §9), in front of one
//! mock provider.
//!
//! The store URL reaches the replicas the way an operator's would: from a file readable by
//! its owner only (`postgres_url_file`), never on a command line or in the config itself.

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
}

impl Cluster {
    /// `n` replicas on a fresh database of the shared PostgreSQL server, started one after
    /// the other.
    pub async fn start(n: usize) -> Cluster {
        let database = backends::shared_postgres_database().await;
        let url = database.url().to_owned();
        let mut cluster = Cluster::prepare(&url, Some(database)).await;
        for _ in 0..n {
            let replica = Gateway::start_with(cluster.options("")).await;
            cluster.replicas.push(replica);
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
        crate::install_crypto_provider();
        let secrets = tempfile::Builder::new()
            .prefix("gw-cluster-")
            .tempdir()
            .expect("temp dir");
        for (name, url) in [
            ("postgres.url", with_password(postgres_url)),
            ("redis.url", backends::shared_redis_url()),
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
    /// trace-level log may contain it.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for replica in &self.replicas {
            assert!(
                !replica.logs().contains(STORE_PASSWORD),
                "a replica's log contains the store's password"
            );
        }
    }
}
