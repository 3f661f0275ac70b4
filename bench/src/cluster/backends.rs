//! The cluster gatewayd's backends for one run: a fresh PostgreSQL database, a Redis
//! (the given server, or a private `redis-server`), the URL files gatewayd reads them from,
//! and what is left behind removed at the end.
//!
//! The database is created on the server `--postgres-url` names (`gw_bench_<pid>_<random>`)
//! and dropped `WITH (FORCE)` when the run ends, failed or not. On a shared Redis the
//! daemon's keys live under `gw:<cluster id>:`, the cluster id being the fresh database's:
//! they are deleted with SCAN + UNLINK. URLs are never printed (they may carry passwords):
//! only host and port.

use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_postgres::NoTls;

use crate::process::Proc;

/// A database of its own on a PostgreSQL server; dropped with this value.
pub struct Database {
    pub name: String,
    /// The database's URL (the server's, with the path replaced).
    pub url: String,
    server_url: String,
}

impl Database {
    pub async fn create(server_url: &str) -> anyhow::Result<Database> {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let name = format!("gw_bench_{}_{:08x}", std::process::id(), random as u32);
        let (client, connection) = tokio_postgres::connect(server_url, NoTls)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {}", authority(server_url)))?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| {
                format!(
                    "creating database {name} on PostgreSQL at {} (the role must be allowed to CREATE DATABASE)",
                    authority(server_url)
                )
            })?;
        Ok(Database {
            url: with_path(server_url, &name),
            name,
            server_url: server_url.to_owned(),
        })
    }
}

impl Drop for Database {
    /// On a thread of its own with its own runtime: drop may run inside the benchmark's.
    fn drop(&mut self) {
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        let outcome = blocking(async move {
            let (client, connection) = tokio_postgres::connect(&server_url, NoTls).await?;
            tokio::spawn(connection);
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await?;
            anyhow::Ok(())
        });
        if let Err(err) = outcome {
            eprintln!("gateway-bench: dropping database {}: {err:#}", self.name);
        }
    }
}

/// The Redis the cluster gatewayd uses.
pub struct Redis {
    /// Its URL (the real server's, not the relay's).
    pub url: String,
    pub addr: SocketAddr,
    /// A private server, stopped (and its keys with it) on drop.
    pub private: Option<(Proc, tempfile::TempDir)>,
}

impl Redis {
    pub fn shared(url: &str) -> anyhow::Result<Redis> {
        if !url.starts_with("redis://") {
            bail!("--redis-url must be a redis:// URL (the relay passes plain TCP)");
        }
        Ok(Redis {
            url: url.to_owned(),
            addr: socket_addr(url, 6379)?,
            private: None,
        })
    }

    /// `redis-server` from PATH on a free loopback port, no persistence, in a temp dir.
    pub fn private() -> anyhow::Result<Redis> {
        let dir = tempfile::Builder::new()
            .prefix("gateway-bench-redis-")
            .tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path());
        let proc = Proc::spawn(
            "redis-server",
            command,
            "Ready to accept connections",
            Duration::from_secs(10),
        )
        .context("starting a private redis-server (is it on PATH?)")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Ok(Redis {
            url: format!("redis://{addr}"),
            addr,
            private: Some((proc, dir)),
        })
    }

    /// Deletes every key matching `pattern` (SCAN + UNLINK); how many.
    pub async fn delete_matching(&self, pattern: &str) -> anyhow::Result<u64> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut connection)
                    .await?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

/// Writes `url` to `path`, readable by its owner only, as gatewayd requires of URL files.
pub fn write_url_file(path: &Path, url: &str) -> anyhow::Result<()> {
    std::fs::write(path, format!("{url}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))
}

/// A glob pattern matching `text` literally, for SCAN MATCH.
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Runs `work` to the end on a new thread with its own runtime.
pub fn blocking<T: Send + 'static>(
    work: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), work)
                .await
                .context("timed out after 30 s")?
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread panicked"))?
}

/// `scheme://[user[:password]@]host[:port]`'s parts: everything up to the authority, the
/// authority without user info, and the rest (path and query).
fn split(url: &str) -> (&str, &str, &str) {
    let Some(at) = url.find("://").map(|i| i + 3) else {
        return ("", url, "");
    };
    let rest = &url[at..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host_from = authority.rfind('@').map_or(0, |i| i + 1);
    (&url[..at + host_from], &authority[host_from..], tail)
}

/// Host and port only (no user, no password): what errors and reports may show.
pub fn authority(url: &str) -> &str {
    split(url).1
}

/// `url` with its path set to `/path`, its query kept.
pub fn with_path(url: &str, path: &str) -> String {
    let (head, host, tail) = split(url);
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{head}{host}/{path}{query}")
}

/// `url` pointing at `addr` instead, user info, path and query kept.
pub fn with_addr(url: &str, addr: SocketAddr) -> String {
    let (head, _, tail) = split(url);
    format!("{head}{addr}{tail}")
}

fn socket_addr(url: &str, default_port: u16) -> anyhow::Result<SocketAddr> {
    let host = authority(url);
    let with_port = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_what_they_should() {
        let pg = "postgres://u:secret@127.0.0.1:5432/postgres?sslmode=disable";
        assert_eq!(authority(pg), "127.0.0.1:5432");
        assert_eq!(
            with_path(pg, "gw_bench_1"),
            "postgres://u:secret@127.0.0.1:5432/gw_bench_1?sslmode=disable"
        );
        assert_eq!(
            with_path("postgres://postgres@localhost", "db"),
            "postgres://postgres@localhost/db"
        );
        let addr: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
        assert_eq!(
            with_addr("redis://:pw@127.0.0.1:6379/2", addr),
            "redis://:pw@127.0.0.1:4000/2"
        );
        assert_eq!(
            with_addr("redis://localhost", addr),
            "redis://127.0.0.1:4000"
        );
        assert_eq!(
            socket_addr("redis://127.0.0.1", 6379).expect("addr"),
            "127.0.0.1:6379".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }
}
