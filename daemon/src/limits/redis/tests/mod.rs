//! The engine against a real Redis: `GATEWAY_TEST_REDIS_URL` (default
//! redis://127.0.0.1:6379) under a random prefix of each test's own, whose keys are deleted
//! when the test ends (never FLUSHALL: the server is shared). Tests that stop a server start
//! a private one (`private.rs`). Windows and periods are tested by moving the scripts' clock
//! (`RedisLimits::with_offset`), never by sleeping.

mod failures;
mod holds;
mod measure;
mod periods;
mod private;
mod rate;
mod spend;
mod versions;

use std::time::Duration;

use gateway_shared::SpendReset;

use super::scripts::Window;
use super::*;
use crate::config::SecretUrl;

pub(crate) const TIMEOUT: Duration = Duration::from_secs(2);

/// A prefix of this test's own on the shared Redis.
pub(crate) struct Harness {
    pub prefix: String,
    url: String,
}

impl Harness {
    pub fn new() -> Harness {
        let url = std::env::var("GATEWAY_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let random = getrandom::u64().expect("random");
        Harness {
            prefix: format!("gwlt_{}_{random:016x}", std::process::id()),
            url,
        }
    }

    pub async fn limits(&self) -> RedisLimits {
        self.limits_with(Window::Ring).await
    }

    pub(super) async fn limits_with(&self, window: Window) -> RedisLimits {
        let url = SecretUrl::redis(&self.url).expect("GATEWAY_TEST_REDIS_URL");
        RedisLimits::connect_with(&url, &self.prefix, TIMEOUT, window)
            .await
            .unwrap_or_else(|e| panic!("the shared Redis (GATEWAY_TEST_REDIS_URL): {e}"))
    }

    /// A raw connection, to look at or delete keys behind the engine's back.
    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection")
    }

    /// The keys under this test's prefix (SCAN, never KEYS).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let client = redis::Client::open(self.url.as_str()).expect("url");
        let mut connection = client.get_connection().expect("connection");
        let mut keys = Vec::new();
        let mut cursor = 0_u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}{pattern}", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query(&mut connection)
                .expect("SCAN");
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }

    /// Deletes every key under the prefix, as FLUSHALL would have.
    pub fn forget_all(&self) {
        let keys = self.keys("*");
        if keys.is_empty() {
            return;
        }
        let client = redis::Client::open(self.url.as_str()).expect("url");
        let mut connection = client.get_connection().expect("connection");
        redis::cmd("DEL")
            .arg(&keys)
            .query::<()>(&mut connection)
            .expect("DEL");
    }

    /// Deletes the keys of one owner, as a Redis that lost its data would have them.
    pub fn forget(&self, owner: &str) {
        let keys = self.keys(&format!(":{{{owner}}}:*"));
        if keys.is_empty() {
            return;
        }
        let client = redis::Client::open(self.url.as_str()).expect("url");
        let mut connection = client.get_connection().expect("connection");
        redis::cmd("DEL")
            .arg(&keys)
            .query::<()>(&mut connection)
            .expect("DEL");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let keys = self.keys("*");
        if keys.is_empty() {
            return;
        }
        let deleted = redis::Client::open(self.url.as_str())
            .and_then(|client| client.get_connection())
            .and_then(|mut connection| {
                redis::cmd("UNLINK").arg(&keys).query::<()>(&mut connection)
            });
        if let Err(e) = deleted {
            eprintln!("deleting the test keys under {}: {e}", self.prefix);
        }
    }
}

pub(super) fn hold(seq: u64) -> HoldId {
    HoldId { instance: 1, seq }
}

/// An admission of `owner`'s key (the owner itself), version 1, a minute's lease.
pub(super) fn ask(owner: &str, hold: HoldId) -> Admission<'_> {
    Admission {
        what: "",
        owner,
        key_id: owner,
        version: 1,
        hold,
        rate_limit: None,
        spend: None,
        estimate: 0,
        lease: Duration::from_secs(60),
    }
}

pub(super) fn spend(limit: u64, worst: u64, min: Option<u64>) -> Option<SpendAsk> {
    Some(SpendAsk {
        limit,
        reset: None,
        worst,
        min,
    })
}

/// Seeds an empty ledger for `owner` (what a replica does after `NeedRebuild` for a key
/// that never spent).
pub(crate) async fn seeded(limits: &RedisLimits, owner: &str) {
    limits
        .seed(owner, None, None, 0, &[(owner, 1)])
        .await
        .expect("seed");
}

pub(super) async fn seeded_with(
    limits: &RedisLimits,
    owner: &str,
    reset: Option<SpendReset>,
    spent: u64,
) {
    let Outcome::NeedRebuild {
        period_start_ms, ..
    } = limits
        .admit(&Admission {
            what: "",
            spend: Some(SpendAsk {
                limit: 1,
                reset,
                worst: 0,
                min: None,
            }),
            ..ask(owner, hold(u64::MAX))
        })
        .await
        .expect("admit")
    else {
        panic!("{owner}: a fresh ledger must need a rebuild");
    };
    assert!(
        limits
            .seed(owner, reset, period_start_ms, spent, &[(owner, 1)])
            .await
            .expect("seed")
    );
}

/// Redis's clock now (ms).
pub(super) async fn redis_now_ms(limits: &RedisLimits) -> i64 {
    limits.redis_now_ms().await.expect("TIME")
}

/// An offset that puts the scripts' clock at `at` (RFC 3339).
pub(super) async fn offset_to(limits: &RedisLimits, at: &str) -> i64 {
    let target: jiff::Timestamp = at.parse().expect("timestamp");
    target.as_millisecond() - redis_now_ms(&limits.with_offset(0)).await
}

pub(super) fn ms(at: &str) -> u64 {
    let target: jiff::Timestamp = at.parse().expect("timestamp");
    u64::try_from(target.as_millisecond()).expect("after 1970")
}
