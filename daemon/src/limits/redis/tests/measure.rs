//! The measurement behind the choice of the ring over the sorted-set log (ARCHITECTURE.md):
//! run by hand, `cargo test -p gatewayd --lib limits::redis::tests::measure -- --ignored
//! --nocapture`, on a private server so that its command statistics are this test's only.

use std::time::Instant;

use super::private::PrivateRedis;
use super::*;

async fn usec_per_evalsha(raw: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(raw)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:"))
        .and_then(|stats| {
            stats
                .split(',')
                .find_map(|field| field.strip_prefix("usec_per_call="))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn measure(window: Window, n: u32, redis: &PrivateRedis, round: u32) {
    let url = SecretUrl::redis(&redis.url()).expect("url");
    let limits = RedisLimits::connect_with(&url, "gwm", TIMEOUT, window)
        .await
        .expect("connect");
    let owner = format!("{window:?}{n}r{round}");
    let mut raw = redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw");
    limits
        .seed(&owner, None, None, 0, &[(&owner, 1)])
        .await
        .expect("seed");
    let admit = |limits: &RedisLimits, seq: u64, rate_limit: Option<u32>| {
        let owner = owner.clone();
        let limits = limits.clone();
        async move {
            limits
                .admit(&Admission {
                    rate_limit,
                    ..ask(&owner, hold(seq))
                })
                .await
                .expect("admit")
        }
    };
    let mut phases = Vec::new();
    // 0. No window at all (the version check and the script's overhead). 1. Filling the
    // window: N admissions. 2. Full: N refusals. 3. A minute later, each admission replaces
    // one that left (the steady state of a busy key).
    let mut seq = 0;
    for (phase, offset) in [
        ("version only", 0),
        ("fill", 0),
        ("refused", 0),
        ("steady", 61_000),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut raw)
            .await
            .expect("RESETSTAT");
        let at = limits.with_offset(offset);
        let started = Instant::now();
        for _ in 0..n {
            seq += 1;
            let rate_limit = (phase != "version only").then_some(n);
            let outcome = admit(&at, seq, rate_limit).await;
            let admitted = matches!(outcome, Outcome::Admitted { .. });
            assert_eq!(admitted, phase != "refused", "{phase}: {outcome:?}");
        }
        let round_trip = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        phases.push((phase, usec_per_evalsha(&mut raw).await, round_trip));
    }
    let window_key = format!("gwm:{{{owner}}}:win");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut raw)
        .await
        .expect("RESETSTAT");
    let bytes: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&window_key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut raw)
        .await
        .expect("MEMORY USAGE");
    for (phase, server, round_trip) in phases {
        eprintln!(
            "{window:?} N={n} {phase}: {server:.1} µs/EVALSHA in Redis, {round_trip:.1} µs a \
             round trip from Rust"
        );
    }
    eprintln!(
        "{window:?} N={n}: window key {bytes} B ({} B an admission)",
        bytes / i64::from(n)
    );
}

#[tokio::test]
#[ignore = "a measurement, run by hand"]
async fn measure_ring_against_sorted_set() {
    let redis = PrivateRedis::start("measure").await;
    for round in 0..3 {
        for n in [60, 10_000] {
            for window in [Window::Ring, Window::SortedSet] {
                measure(window, n, &redis, round).await;
            }
        }
    }
}
