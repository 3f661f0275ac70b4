//! The limits seam's tests: one server's engine as the pipeline had it, and a cluster
//! replica without its shared engine, which refuses limited keys and serves the others.

use std::cell::Cell;
use std::sync::Arc;

use gateway_shared::Nanodollars;
use gateway_shared::key::KeyHash;
use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::clock::ManualClock;
use crate::keys::{KeyCache, KeyRecord};

struct Setup {
    clock: Arc<ManualClock>,
    cache: KeyCache,
}

fn setup(records: Vec<KeyRecord>) -> Setup {
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_second(1_700_000_000).expect("ts"),
    ));
    let cache = KeyCache::new(records, Arc::clone(&clock) as Arc<dyn Clock>);
    Setup { clock, cache }
}

fn record(id: &str, rpm: Option<u32>, spend_limit_dollars: Option<u64>) -> KeyRecord {
    let at = Timestamp::from_second(1_600_000_000).expect("ts");
    KeyRecord {
        id: id.into(),
        hash: KeyHash::of(id),
        prefix: "sk-proxy-abcd".into(),
        name: id.into(),
        allowed_providers: vec![],
        allowed_models: vec![],
        allowed_ips: vec![],
        rate_limit_rpm: rpm,
        spend_limit: spend_limit_dollars.and_then(Nanodollars::from_dollars),
        spend_reset: None,
        expires_at: None,
        created_at: at,
        updated_at: at,
        revoked_at: None,
        last_used_at: None,
        spend_total: Nanodollars::ZERO,
        spend_period: Nanodollars::ZERO,
        period_resets_at: None,
        request_count: 0,
        version: 1,
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

    fn cluster(&self) -> Limits {
        Limits::Cluster(cluster::ClusterLimits::without_engine(self.dyn_clock()))
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
        .admit(key, now, || {
            priced.set(true);
            Ok(ask(dollars))
        })
        .await;
    (result, priced.get())
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
        .rate_headroom(&key)
        .expect("one server")
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
    let unpriced = limits
        .admit(&key, setup.now(), || {
            Err(GatewayError::new(ErrorCode::ModelNotPriced, "no price"))
        })
        .await;
    assert_eq!(code(unpriced), ErrorCode::ModelNotPriced);
    let (admitted, _) = admit(&limits, &key, setup.now(), 3).await;
    let admitted = admitted.expect("the slot was free again");
    assert_eq!(key.spend().open_reservations, 1);
    // A refusal after admission (a body that cannot be rewritten) gives it back as well.
    limits.revert(&key, admitted.rate.as_ref());
    drop(admitted.reservation);
    assert!(admit(&limits, &key, setup.now(), 3).await.0.is_ok());
}

#[tokio::test]
async fn a_cluster_without_its_engine_refuses_limited_keys_and_serves_the_others() {
    let setup = setup(vec![
        record("rate", Some(100), None),
        record("spend", None, Some(100)),
        record("both", Some(100), Some(100)),
        record("free", None, None),
    ]);
    let limits = setup.cluster();
    assert_eq!(limits.status(), LimitsStatus::None);
    for id in ["rate", "spend", "both"] {
        let key = setup.key(id);
        let (refused, priced) = admit(&limits, &key, setup.now(), 1).await;
        let err = refused.err().expect(id);
        assert_eq!(err.code, ErrorCode::LimitsUnavailable, "{id}");
        assert_eq!(err.code.status(), 503);
        assert!(!priced, "{id}: nothing is priced or reserved");
        assert_eq!(key.spend().open_reservations, 0, "{id}");
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
        let headroom = limits.rate_headroom(&key).expect_err(id);
        assert_eq!(headroom.code, ErrorCode::LimitsUnavailable, "{id}");
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
    assert!(limits.rate_headroom(&free).expect("served").is_none());
}

#[tokio::test]
async fn the_config_chooses_the_engine() {
    let setup = setup(vec![]);
    let mut config = Config::resolve(crate::config::FileConfig::default()).expect("defaults");
    let one = Limits::for_config(&config, setup.dyn_clock());
    assert!(matches!(one, Limits::Memory(_)));
    assert_eq!(one.status(), LimitsStatus::Ok);
    config.cluster = Some(crate::config::ClusterConfig {
        postgres_url: crate::config::SecretUrl::postgres("postgres://db/gw").expect("url"),
        redis_url: crate::config::SecretUrl::redis("redis://cache").expect("url"),
        hold_lease: crate::config::DEFAULT_HOLD_LEASE,
    });
    let cluster = Limits::for_config(&config, setup.dyn_clock());
    assert!(matches!(cluster, Limits::Cluster(_)));
}
