//! PostgreSQL for tests: a database of one's own on the shared server, or a private server.
//!
//! A private server's data directory is a copy of a template made by `initdb` once per
//! machine and PostgreSQL version (under `target/test-backends/`): copying 40 MB takes about
//! a tenth of what `initdb` does. As root the server runs as the `postgres` user (PostgreSQL
//! refuses to run as root); as anyone else, as that user. It listens on 127.0.0.1 on a free
//! port and on a Unix socket in its own temporary directory, with `fsync` off: a test server
//! must be fast, and a kill (SIGKILL of every process) still tests crash recovery, because
//! the operating system keeps what was written. `synchronous_commit` stays on: with it off,
//! a kill loses transactions that were reported committed (a test caught that).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use tokio_postgres::{Client, NoTls};

use super::process::{self, ServerProcess, log_tail};

const WHAT: &str = "the private PostgreSQL";
use super::{shared_postgres_url, unique_name, url_host_port};

mod backup;

/// How long a server may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A database of its own on the shared server, dropped (with its connections) on drop.
pub struct PgDatabase {
    name: String,
    url: String,
    server_url: String,
}

/// Creates a database with a name no other test uses on the shared server
/// (`GATEWAY_TEST_POSTGRES_URL`). Panics, naming the server, when it cannot.
pub async fn shared_postgres_database() -> PgDatabase {
    let server_url = shared_postgres_url();
    let name = unique_name();
    let client = connect(
        &server_url,
        "the shared PostgreSQL (GATEWAY_TEST_POSTGRES_URL)",
    )
    .await;
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "creating database {name} on the shared PostgreSQL at {}: {e} \
                 (GATEWAY_TEST_POSTGRES_URL must name a role that may CREATE DATABASE)",
                url_host_port(&server_url)
            )
        });
    PgDatabase {
        url: with_database(&server_url, &name),
        name,
        server_url,
    }
}

impl PgDatabase {
    /// A URL of the database, with the shared server's user, password and options.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new connection to the database (its driver task runs on the current runtime).
    pub async fn connect(&self) -> Client {
        connect(&self.url, &format!("test database {}", self.name)).await
    }
}

impl Drop for PgDatabase {
    /// Drop is synchronous and may run on a runtime's thread, where blocking on that runtime
    /// is not allowed: the `DROP DATABASE` runs on a thread of its own with its own runtime.
    /// `WITH (FORCE)` ends the connections a test left open. A failure is reported, never
    /// a panic (this may run while a test is already panicking).
    fn drop(&mut self) {
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("building a runtime: {e}"))?;
            runtime.block_on(async {
                let drop_database = async {
                    let (client, connection) = tokio_postgres::connect(&server_url, NoTls).await?;
                    tokio::spawn(connection);
                    client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await
                };
                match tokio::time::timeout(Duration::from_secs(30), drop_database).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out after 30 s".to_owned()),
                }
            })
        })
        .join();
        let error = match dropped {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(_) => "the thread dropping it panicked".to_owned(),
        };
        eprintln!(
            "backends: dropping test database {} on {}: {error}",
            self.name,
            url_host_port(&self.server_url)
        );
    }
}

/// A PostgreSQL server of its own: stop, restart and kill it without disturbing other tests.
/// Killed, and its directory removed, on drop.
pub struct PrivatePostgres {
    port: u16,
    /// The binaries' directory (`postgres`, `initdb`).
    bin_dir: PathBuf,
    /// `Some((uid, gid))` of the `postgres` user when running as root.
    run_as: Option<(u32, u32)>,
    /// Declared before `dir`: the server is killed before its directory is removed.
    server: Option<ServerProcess>,
    /// Holds `data/`, the Unix socket and `postgres.log`.
    dir: tempfile::TempDir,
}

impl PrivatePostgres {
    /// initdb (a copy of the template), then start on a free port and wait until it answers.
    pub async fn start() -> Self {
        let bin_dir = postgres_bin_dir().to_path_buf();
        let run_as = server_user();
        let template = template_data_dir();
        let dir = tempfile::Builder::new()
            .prefix("gw-test-postgres-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp dir for a private PostgreSQL: {e}"));
        let data = dir.path().join("data");
        copy_dir(template, &data);
        if let Some((uid, gid)) = run_as {
            chown(dir.path(), uid, gid);
        }
        let mut postgres = Self {
            port: 0,
            bin_dir,
            run_as,
            server: None,
            dir,
        };
        // The free port is found by binding and releasing it, so another process may take it
        // before the server binds it: then try another.
        for _ in 0..5 {
            postgres.port = super::free_port();
            if postgres.spawn_and_wait().await {
                return postgres;
            }
        }
        panic!(
            "a private PostgreSQL could not bind a free port in 5 tries\n{}",
            postgres.log_tail()
        );
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of database `name` on this server.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new connection to the `postgres` database.
    pub async fn connect(&self) -> Client {
        connect(&self.url(), "the private PostgreSQL").await
    }

    /// Fast shutdown (SIGINT: connections are ended, no new ones accepted); returns once the
    /// server has exited and its port refuses connections.
    pub async fn stop(&mut self) {
        process::stop(&mut self.server, WHAT, self.port, Signal::INT).await;
    }

    /// Kills every process of the server at once (SIGKILL), as a crash would; returns once
    /// its port refuses connections. [`Self::start_again`] then runs crash recovery.
    pub async fn kill(&mut self) {
        process::kill(&mut self.server, WHAT, self.port).await;
    }

    /// Starts the server again on the same port and data; returns once it answers.
    pub async fn start_again(&mut self) {
        assert!(
            self.server.is_none(),
            "start_again: the private PostgreSQL is already running"
        );
        if !self.spawn_and_wait().await {
            panic!(
                "the private PostgreSQL could not start again on port {}\n{}",
                self.port,
                self.log_tail()
            );
        }
    }

    /// Spawns the server and waits until it answers. `false` when it exited because its port
    /// was taken; a panic for any other failure.
    async fn spawn_and_wait(&mut self) -> bool {
        let log = self.dir.path().join("postgres.log");
        let mut command = Command::new(self.bin_dir.join("postgres"));
        command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1"])
            // fsync off, but commits still write their WAL before they return
            // (synchronous_commit stays on): a killed server keeps every committed
            // transaction, as a real one does, so crash tests mean something.
            .args(["-c", "fsync=off", "-c", "shared_buffers=32MB"])
            .args(["-c", "max_connections=100"]);
        // Its own directory as the working directory: the `postgres` user may not be allowed
        // into the test's (a checkout under /root, say).
        command.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt as _;
            command.uid(uid).gid(gid);
        }
        let url = self.url();
        let log_before = std::fs::metadata(&log).map_or(0, |m| m.len());
        let mut server = ServerProcess::spawn("PostgreSQL", command, &log);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.answers(&url).await {
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
                if new_log.contains("could not bind") || new_log.contains("already in use") {
                    return false;
                }
                panic!(
                    "the private PostgreSQL exited at start-up\n{}",
                    server.log_tail()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "the private PostgreSQL did not answer within {START_TIMEOUT:?}\n{}",
                    server.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether this server (not another one that took the port) answers at `url`.
    async fn answers(&self, url: &str) -> bool {
        let probe = async {
            let (client, connection) = tokio_postgres::connect(url, NoTls).await.ok()?;
            let connection = tokio::spawn(connection);
            let row = client
                .query_one("SELECT current_setting('data_directory')", &[])
                .await
                .ok();
            drop(client);
            let _ = connection.await;
            row?.try_get::<_, String>(0).ok()
        };
        let data_directory = tokio::time::timeout(Duration::from_secs(2), probe).await;
        data_directory.ok().flatten().is_some_and(|data_directory| {
            Path::new(&data_directory) == self.dir.path().join("data")
        })
    }

    fn log_tail(&self) -> String {
        log_tail("PostgreSQL", &self.dir.path().join("postgres.log"))
    }
}

/// Connects to `url`, spawning the connection's driver on the current runtime. Panics naming
/// `what` and the server's host and port (never the URL: it may hold a password).
async fn connect(url: &str, what: &str) -> Client {
    try_connect(url, what)
        .await
        .unwrap_or_else(|message| panic!("{message}"))
}

async fn try_connect(url: &str, what: &str) -> Result<Client, String> {
    let connected =
        tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(url, NoTls)).await;
    match connected {
        Ok(Ok((client, connection))) => {
            tokio::spawn(connection);
            Ok(client)
        }
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

/// `url` with its database replaced by `database`; the user, password, host and options kept.
fn with_database(url: &str, database: &str) -> String {
    let (base, options) = url
        .split_once('?')
        .map_or((url, None), |(b, o)| (b, Some(o)));
    let Some((scheme, rest)) = base.split_once("://") else {
        panic!(
            "GATEWAY_TEST_POSTGRES_URL must be a URL (postgres://user@host:port/database), \
             not a key=value connection string"
        );
    };
    // The path starts at the first `/` after the last `@` (a password may hold a `/`).
    let authority_end = rest.rfind('@').map_or(0, |at| at + 1);
    let authority = match rest[authority_end..].find('/') {
        Some(slash) => &rest[..authority_end + slash],
        None => rest,
    };
    match options {
        Some(options) => format!("{scheme}://{authority}/{database}?{options}"),
        None => format!("{scheme}://{authority}/{database}"),
    }
}

/// The directory holding `postgres` and `initdb`: the one in `PATH`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian does not put them in `PATH`).
fn postgres_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let in_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .find(|dir| dir.join("postgres").is_file() && dir.join("initdb").is_file())
        });
        let debian = || {
            let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .filter_map(|entry| {
                    let entry = entry.ok()?;
                    let version = entry.file_name().to_str()?.parse().ok()?;
                    let bin = entry.path().join("bin");
                    bin.join("postgres").is_file().then_some((version, bin))
                })
                .collect();
            versions.sort();
            versions.pop().map(|(_, bin)| bin)
        };
        in_path.or_else(debian).unwrap_or_else(|| {
            panic!(
                "PostgreSQL's server binaries (initdb, postgres) are not installed: not in PATH \
                 nor in /usr/lib/postgresql/*/bin. ./scripts/test installs them (as root on \
                 Debian), or: apt-get install postgresql"
            )
        })
    })
}

/// The `postgres` user's uid and gid when running as root (PostgreSQL refuses root); `None`
/// otherwise (the server runs as the current user).
fn server_user() -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap_or_else(|e| panic!("running id {flag} postgres: {e}"));
        assert!(
            output.status.success(),
            "running as root, a private PostgreSQL needs a `postgres` user to run as (PostgreSQL \
             refuses root); there is none: apt-get install postgresql creates it"
        );
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("id {flag} postgres printed no number: {e}"))
    };
    Some((id("-u"), id("-g")))
}

/// A data directory made by `initdb`, made once per machine, PostgreSQL version and user
/// under `target/test-backends/`, never started: servers start on copies of it.
fn template_data_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let bin_dir = postgres_bin_dir();
        let run_as = server_user();
        let version = Command::new(bin_dir.join("postgres"))
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("running postgres --version: {e}"));
        let version: String = String::from_utf8_lossy(&version.stdout)
            .split_whitespace()
            .nth(2)
            .unwrap_or("unknown")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect();
        let uid = rustix::process::geteuid().as_raw();
        let cache = cache_dir();
        let template = cache.join(format!("postgres-template-{version}-uid{uid}"));
        if template.join("PG_VERSION").is_file() {
            return template;
        }
        // initdb in a temp dir (the `postgres` user may not reach target/), then move the
        // result into place with a rename, which is atomic: a process running at the same
        // time sees either no template or a whole one.
        let scratch = tempfile::Builder::new()
            .prefix("gw-test-initdb-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp dir for initdb: {e}"));
        if let Some((uid, gid)) = run_as {
            chown(scratch.path(), uid, gid);
        }
        let data = scratch.path().join("data");
        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .args(["-E", "UTF8", "--locale=C"])
            .current_dir(scratch.path());
        if let Some((uid, gid)) = run_as {
            use std::os::unix::process::CommandExt as _;
            initdb.uid(uid).gid(gid);
        }
        let output = initdb
            .output()
            .unwrap_or_else(|e| panic!("running initdb: {e}"));
        assert!(
            output.status.success(),
            "initdb failed for a private PostgreSQL:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::create_dir_all(&cache)
            .unwrap_or_else(|e| panic!("creating {}: {e}", cache.display()));
        let staged = cache.join(format!("{}.{}", unique_name(), "partial"));
        copy_dir(&data, &staged);
        if std::fs::rename(&staged, &template).is_err() {
            // Another process put its template there first; it is as good as ours.
            let _ = std::fs::remove_dir_all(&staged);
            assert!(
                template.join("PG_VERSION").is_file(),
                "could not put the PostgreSQL template at {}",
                template.display()
            );
        }
        template
    })
}

/// `target/test-backends`: the test executable is `target/<profile>/deps/<name>`. Elsewhere
/// (a binary outside target/), the system temp dir.
fn cache_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(std::env::temp_dir)
        .join("test-backends")
}

/// `cp -a`: owners, modes and links kept (the server checks its data directory's mode).
fn copy_dir(from: &Path, to: &Path) {
    let output = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap_or_else(|e| panic!("running cp -a: {e}"));
    assert!(
        output.status.success(),
        "cp -a {} {}: {}",
        from.display(),
        to.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {} to the postgres user: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_that_does_not_answer_is_named_without_the_password() {
        let port = crate::backends::free_port();
        let url = format!("postgres://gw:hunter2secret@127.0.0.1:{port}/db");
        let Err(message) = try_connect(&url, "the test server").await else {
            panic!("connected to a closed port");
        };
        assert!(
            message.contains(&format!("the test server at 127.0.0.1:{port}")),
            "{message}"
        );
        assert!(!message.contains("hunter2secret"), "{message}");
    }

    #[test]
    fn with_database_replaces_only_the_database() {
        let check = |url: &str, expected: &str| {
            assert_eq!(with_database(url, "gw_t_1"), expected, "{url}");
        };
        check(
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://postgres@127.0.0.1:5432/gw_t_1",
        );
        check("postgresql://h:1", "postgresql://h:1/gw_t_1");
        check("postgres://h:1/", "postgres://h:1/gw_t_1");
        check(
            "postgres://u:p%2F@h:1/db?sslmode=disable&connect_timeout=5",
            "postgres://u:p%2F@h:1/gw_t_1?sslmode=disable&connect_timeout=5",
        );
        check("postgres://u:a/b@h:1/db", "postgres://u:a/b@h:1/gw_t_1");
    }
}
