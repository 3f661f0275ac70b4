//! Real PostgreSQL and Redis servers for tests: a database or key prefix of one's own on the
//! shared servers, or a private server that a test may stop, restart, kill or flush.
//!
//! The shared servers are the ones `./scripts/test` found or started: `GATEWAY_TEST_POSTGRES_URL`
//! (a server where tests may `CREATE DATABASE`; default [`DEFAULT_POSTGRES_URL`]) and
//! `GATEWAY_TEST_REDIS_URL` (default [`DEFAULT_REDIS_URL`]). Tests run in parallel on them, so
//! each takes a database ([`shared_postgres_database`]) or a key prefix
//! ([`shared_redis_prefix`]) that no other test uses, and gives it back on drop. A test that
//! takes a server away (stop, kill, restart, FLUSHALL) must not do it to a server other tests
//! are using: it starts a [`PrivatePostgres`] or [`PrivateRedis`] of its own, on a free port in
//! a temporary directory, killed and removed on drop.
//!
//! Nothing here skips: a server that does not answer, or a binary that is not installed, is a
//! panic that says what is missing (and shows the server's log tail), because CI must run
//! these tests. Connection strings can carry passwords, so messages name host and port only.

mod postgres;
mod process;
mod redis;

pub use postgres::{PgDatabase, PrivatePostgres, shared_postgres_database};
pub use redis::{
    PrivateRedis, RedisPrefix, delete_matching as delete_redis_keys_matching,
    keys_matching as redis_keys_matching, shared_redis_prefix,
};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The shared PostgreSQL server when `GATEWAY_TEST_POSTGRES_URL` is unset: the local one.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The shared Redis server when `GATEWAY_TEST_REDIS_URL` is unset: the local one.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// `GATEWAY_TEST_POSTGRES_URL`, or [`DEFAULT_POSTGRES_URL`] when unset or empty.
pub fn shared_postgres_url() -> String {
    env_or("GATEWAY_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
}

/// `GATEWAY_TEST_REDIS_URL`, or [`DEFAULT_REDIS_URL`] when unset or empty.
pub fn shared_redis_url() -> String {
    env_or("GATEWAY_TEST_REDIS_URL", DEFAULT_REDIS_URL)
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// `gw_t_<pid>_<counter>_<random>`: unique across the tests of this process (the counter),
/// across processes running now (the pid) and across runs whose leftovers a killed process
/// left behind (the random part). Lowercase ASCII, digits and `_` only, so it is a PostgreSQL
/// identifier without case folding surprises and a Redis glob pattern without special
/// characters.
pub fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).unwrap_or_else(|e| panic!("reading random bytes: {e}"));
    let random: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("gw_t_{}_{counter}_{random}", std::process::id())
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|e| panic!("finding a free port on 127.0.0.1: {e}"))
}

/// Waits until nothing accepts connections on `127.0.0.1:port` (a stopped server's port).
async fn wait_until_refused(what: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "{what} still accepts connections on port {port} 30 s after it exited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `host:port` of a `scheme://[user[:password]@]host[:port][/…]` URL, for messages: the rest of
/// a URL may be a password.
fn url_host_port(url: &str) -> &str {
    let Some((_, rest)) = url.split_once("://") else {
        return "(not a URL)";
    };
    // After the last `@` first: a password may hold a `/` or `?` its writer did not encode.
    let after_user = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    after_user.split(['/', '?']).next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_are_plain_identifiers() {
        let first = unique_name();
        let second = unique_name();
        assert_ne!(first, second);
        for name in [&first, &second] {
            assert!(name.starts_with(&format!("gw_t_{}_", std::process::id())));
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
        }
    }

    #[test]
    fn host_port_hides_user_password_and_path() {
        let check = |url: &str, expected: &str| assert_eq!(url_host_port(url), expected, "{url}");
        check(
            "postgres://postgres@127.0.0.1:5432/postgres",
            "127.0.0.1:5432",
        );
        check(
            "postgres://u:s3cr%40t@db.example:6432/x?sslmode=require",
            "db.example:6432",
        );
        check("redis://:pw@127.0.0.1:6379/2", "127.0.0.1:6379");
        check("redis://127.0.0.1", "127.0.0.1");
        check("postgres://u:pa/ss@127.0.0.1:5432/db", "127.0.0.1:5432");
        check("host=localhost password=x", "(not a URL)");
    }
}
