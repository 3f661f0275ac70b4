//! The limits seam's tests: one server's engine as the pipeline had it, and a cluster
//! replica whose Redis does not answer, which refuses limited keys and serves the others,
//! and one whose Redis stopped answering, where no call waits for it once that is known.
//! (The shared engine itself is tested against a real Redis in `cluster/tests` and
//! `redis/tests`, and end to end in `tests/e2e/cluster_limits*.rs`.)

use std::cell::Cell;
use std::sync::Arc;

use gateway_shared::Nanodollars;
use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::keys::{KeyCache, KeyRecord};

struct Setup {
    clock: Arc<ManualClock>,
    cache: Arc<KeyCache>,
}

fn setup(records: Vec<KeyRecord>) -> Setup {
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_second(1_700_000_000).expect("ts"),
    ));
    let cache = Arc::new(KeyCache::new(records, Arc::clone(&clock) as Arc<dyn Clock>));
    Setup { clock, cache }
}

fn record(id: &str, rpm: Option<u32>, spend_limit_dollars: Option<u64>) -> KeyRecord {
    KeyRecord {
        rate_limit_rpm: rpm,
        spend_limit: spend_limit_dollars.and_then(Nanodollars::from_dollars),
        ..KeyRecord::plain(id, Timestamp::from_second(1_600_000_000).expect("ts"))
    }
}

/// A request that costs at most `dollars`: one million input tokens at that price.
fn ask(dollars: u64) -> SpendAsk {
    let per_million = Nanodollars::from_dollars(dollars).expect("price");
    let price = Price {
        input: per_million,
        output: Nanodollars::ZERO,
        cache_read: per_million,
        cache_write: per_million,
        max_output_tokens: 1,
    };
    SpendAsk {
        price: Some(price),
        ask: Ask {
            price,
            input_tokens_bound: 1_000_000,
            output_tokens: 1,
            answers: 1,
            min_output_tokens: 1,
            clamp: false,
        },
    }
}

impl Setup {
    fn memory(&self) -> Limits {
        Limits::Memory(memory::MemoryLimits::new(self.dyn_clock()))
    }

    /// A replica whose Redis refuses connections, on a SQLite store of its own.
    fn cluster(&self, dir: &std::path::Path) -> Limits {
        self.cluster_on(dir, "redis://127.0.0.1:1")
    }

    /// A replica of the Redis at `redis_url`, on a SQLite store of its own.
    fn cluster_on(&self, dir: &std::path::Path, redis_url: &str) -> Limits {
        let store = crate::store::Store::open(&dir.join("gateway.db")).expect("store");
        let (usage, _) = crate::store::writer::UsageWriter::detached();
        Limits::Cluster(cluster::ClusterLimits::start(
            cluster::ClusterParts {
                redis_url: crate::config::SecretUrl::redis(redis_url).expect("url"),
                prefix: "gw:test".into(),
                lease: crate::config::DEFAULT_HOLD_LEASE,
                store,
                cache: Arc::clone(&self.cache),
                usage,
                health: Arc::new(crate::health::Health::new()),
                metrics: Arc::new(crate::metrics::Metrics::new()),
                clock: self.dyn_clock(),
            },
            tokio_util::sync::CancellationToken::new(),
        ))
    }

    fn dyn_clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock) as Arc<dyn Clock>
    }

    fn key(&self, id: &str) -> Arc<KeyEntry> {
        self.cache.get(id).expect("key")
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// Admits one request costing at most `dollars`; whether the pricing step ran.
async fn admit(
    limits: &Limits,
    key: &KeyEntry,
    now: Timestamp,
    dollars: u64,
) -> (Result<Admitted, GatewayError>, bool) {
    let priced = Cell::new(false);
    let result = limits
        .admit(key, now, (gateway_shared::Provider::Openai, "m"), || {
            priced.set(true);
            Ok(ask(dollars))
        })
        .await
        .map_err(|denied| match denied {
            Denied::Refused(err) => err,
            Denied::Reloaded(_) => panic!("reloaded"),
        });
    (result, priced.get())
}

/// Admits a request the pricing step refuses (an unpriced model): the refusal's code.
async fn unpriced(limits: &Limits, key: &KeyEntry, now: Timestamp) -> ErrorCode {
    let refused = limits
        .admit(key, now, (gateway_shared::Provider::Openai, "m"), || {
            Err(GatewayError::new(ErrorCode::ModelNotPriced, "no price"))
        })
        .await;
    match refused {
        Err(Denied::Refused(err)) => err.code,
        Err(Denied::Reloaded(_)) => panic!("reloaded"),
        Ok(_) => panic!("admitted without a price"),
    }
}

fn code(result: Result<Admitted, GatewayError>) -> ErrorCode {
    match result {
        Ok(_) => panic!("admitted"),
        Err(err) => err.code,
    }
}

#[tokio::test]
async fn one_server_admits_up_to_the_rate_and_says_when_a_slot_frees() {
    let setup = setup(vec![record("k", Some(2), None)]);
    let limits = setup.memory();
    let key = setup.key("k");
    let mut held = Vec::new();
    for remaining in [1, 0] {
        let (admitted, priced) = admit(&limits, &key, setup.now(), 1).await;
        let admitted = admitted.expect("under the rate");
        assert!(priced);
        let rate = admitted.rate.expect("a rate decision");
        assert_eq!((rate.limit, rate.remaining), (2, remaining));
        held.push(admitted.reservation);
    }
    let (refused, priced) = admit(&limits, &key, setup.now(), 1).await;
    let err = refused.err().expect("over the rate");
    assert_eq!(err.code, ErrorCode::RateLimitExceeded);
    assert!(!priced, "the rate is checked before the price (SPEC §3)");
    let headers = err.headers.expect("429 headers");
    assert_eq!(headers[http::header::RETRY_AFTER], "60");
    assert_eq!(headers[RATE_REMAINING], "0");
    let headroom = limits
        .standing(&key)
        .await
        .expect("one server")
        .rate
        .expect("rpm");
    assert_eq!(headroom.remaining, 0);
    setup.clock.advance(SignedDuration::from_secs(61));
    assert!(
        admit(&limits, &key, setup.now(), 1).await.0.is_ok(),
        "a slot freed"
    );
}

#[tokio::test]
async fn one_server_gives_the_rate_slot_back_when_the_spend_step_refuses() {
    let setup = setup(vec![record("k", Some(1), Some(10))]);
    let limits = setup.memory();
    let key = setup.key("k");
    // Over the cap: 402, and the window's only slot is given back.
    assert_eq!(
        code(admit(&limits, &key, setup.now(), 11).await.0),
        ErrorCode::SpendLimitExceeded
    );
    // Unpriced: refused by the pricing step, slot given back too.
    assert_eq!(
        unpriced(&limits, &key, setup.now()).await,
        ErrorCode::ModelNotPriced
    );
    let (admitted, _) = admit(&limits, &key, setup.now(), 3).await;
    let admitted = admitted.expect("the slot was free again");
    assert_eq!(key.spend().open_reservations, 1);
    // A refusal after admission (a body that cannot be rewritten) gives it back as well.
    limits
        .revert(&key, admitted.rate.as_ref(), Some(&admitted.reservation))
        .await;
    drop(admitted.reservation);
    assert!(admit(&limits, &key, setup.now(), 3).await.0.is_ok());
}

#[tokio::test]
async fn a_cluster_without_redis_refuses_limited_keys_and_serves_the_others() {
    let setup = setup(vec![
        record("rate", Some(100), None),
        record("spend", None, Some(100)),
        record("both", Some(100), Some(100)),
        record("free", None, None),
    ]);
    let dir = tempfile::tempdir().expect("temp dir");
    let limits = setup.cluster(dir.path());
    assert_eq!(limits.status(), LimitsStatus::Unavailable);
    for id in ["rate", "spend", "both"] {
        let key = setup.key(id);
        let (refused, _) = admit(&limits, &key, setup.now(), 1).await;
        let err = refused.err().expect(id);
        assert_eq!(err.code, ErrorCode::LimitsUnavailable, "{id}");
        assert_eq!(err.code.status(), 503);
        assert_eq!(key.spend().open_reservations, 0, "{id}: nothing reserved");
        // Never counted in this replica's memory: the window stays empty.
        if let Some(limit) = key.rate_limit_rpm {
            let window = key
                .runtime
                .rate
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .peek(setup.clock.monotonic(), limit);
            assert_eq!(window.remaining, limit, "{id}");
        }
        let standing = limits.standing(&key).await.expect_err(id);
        assert_eq!(standing.code, ErrorCode::LimitsUnavailable, "{id}");
    }
    let free = setup.key("free");
    let (admitted, priced) = admit(&limits, &free, setup.now(), 1_000).await;
    let admitted = admitted.expect("a key without limits is served");
    assert!(priced);
    assert!(admitted.rate.is_none());
    assert_eq!(
        free.spend().open_reservations,
        1,
        "metered as on one server"
    );
    drop(admitted.reservation);
    assert_eq!(free.spend().open_reservations, 0);
    assert!(limits.standing(&free).await.expect("served").rate.is_none());
}

#[tokio::test]
async fn once_redis_is_known_away_no_view_or_refusal_waits_for_it() {
    let redis = cluster::tests::PrivateRedis::start().await;
    let setup = setup(vec![record("k", Some(100), Some(100))]);
    let dir = tempfile::tempdir().expect("temp dir");
    let limits = setup.cluster_on(dir.path(), &redis.url());
    let key = setup.key("k");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while admit(&limits, &key, setup.now(), 1).await.0.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never connected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        limits.standing(&key).await.is_ok(),
        "a view while Redis answers"
    );

    // Paused: it accepts and never answers. The first call finds out (its timeout), and
    // from then on views and the rate-first look refuse at once instead of each waiting.
    redis.pause(true);
    assert_eq!(
        code(admit(&limits, &key, setup.now(), 1).await.0),
        ErrorCode::LimitsUnavailable
    );
    let started = std::time::Instant::now();
    let view = limits
        .standing(&key)
        .await
        .expect_err("a limited key's view");
    assert_eq!(view.code, ErrorCode::LimitsUnavailable);
    assert_eq!(
        unpriced(&limits, &key, setup.now()).await,
        ErrorCode::ModelNotPriced,
        "the pricing refusal as it is"
    );
    assert_eq!(
        code(admit(&limits, &key, setup.now(), 1).await.0),
        ErrorCode::LimitsUnavailable
    );
    // Each of the three would take the whole timeout if it asked Redis.
    assert!(
        started.elapsed() < cluster::REDIS_TIMEOUT,
        "{:?}: a call waited for a Redis known to be away",
        started.elapsed()
    );
    redis.pause(false);
}
