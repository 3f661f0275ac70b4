//! The ring against the sorted-set log, at N = 60 and N = 10,000, on a private server (its
//! statistics are this test's only): both admit exactly N, refuse the next N and, a minute
//! later, admit N again (the ring wrapped, the log trimmed); the ring's window key holds an
//! admission in 8 to 16 bytes where the log needs about 105, and an admission reads the
//! header and one block of 64 slots. Redis's own time per EVALSHA (`INFO commandstats`) is
//! printed, not asserted: ARCHITECTURE.md keeps the figures.

use std::sync::Arc;

use super::private::PrivateRedis;
use super::*;

/// `field` of `cmdstat_<command>` in `INFO commandstats`.
async fn command_stat(
    raw: &mut redis::aio::MultiplexedConnection,
    command: &str,
    field: &str,
) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(raw)
        .await
        .expect("INFO");
    let prefix = format!("cmdstat_{command}:");
    let field = format!("{field}=");
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|stats| {
            stats
                .split(',')
                .find_map(|item| item.strip_prefix(field.as_str()))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn reset_stats(raw: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(raw)
        .await
        .expect("RESETSTAT");
}

/// What one window costs: bytes per admission, and GETRANGEs per steady admission.
struct Cost {
    bytes_per_admission: f64,
    getrange_per_admission: f64,
}

async fn measure(window: Window, n: u32, redis: &PrivateRedis) -> Cost {
    let url = SecretUrl::redis(&redis.url()).expect("url");
    let limits = RedisLimits::connect_with(&url, "gwm", TIMEOUT, window)
        .await
        .expect("connect");
    let owner: Arc<str> = format!("{window:?}{n}").into();
    let mut raw = redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw");
    limits
        .seed(&owner, None, None, 0, &[(&owner, 1)])
        .await
        .expect("seed");
    let mut seq = 0_u64;
    let mut report = Vec::new();
    let mut getrange_per_admission = 0.0;
    for (phase, offset, admitted) in [
        ("version only", 0, true),
        ("filling", 0, true),
        ("refused", 0, false),
        ("steady", 61_000, true),
    ] {
        reset_stats(&mut raw).await;
        let at = limits.with_offset(offset);
        let rate_limit = (phase != "version only").then_some(n);
        let mut outcomes = Vec::new();
        // In chunks of concurrent admissions: one multiplexed connection pipelines them.
        for _ in 0..n.div_ceil(500) {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..500.min(n) {
                seq += 1;
                let (at, owner, hold) = (at.clone(), Arc::clone(&owner), hold(seq));
                tasks.spawn(async move {
                    at.admit(&Admission {
                        what: "",
                        rate_limit,
                        ..ask(&owner, hold)
                    })
                    .await
                    .expect("admit")
                });
            }
            outcomes.extend(tasks.join_all().await);
        }
        outcomes.truncate(usize::try_from(n).expect("small"));
        let wrong = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Admitted { .. }) != admitted)
            .count();
        assert_eq!(wrong, 0, "{window:?} N={n} {phase}: {wrong} wrong answers");
        let usec = command_stat(&mut raw, "evalsha", "usec_per_call").await;
        report.push(format!("{phase} {usec:.1} µs"));
        if phase == "steady" {
            let calls = command_stat(&mut raw, "evalsha", "calls").await;
            getrange_per_admission = command_stat(&mut raw, "getrange", "calls").await / calls;
        }
    }
    let bytes: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(format!("gwm:{{{owner}}}:rw"))
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut raw)
        .await
        .expect("MEMORY USAGE");
    let bytes_per_admission = f64::from(i32::try_from(bytes).expect("small")) / f64::from(n);
    eprintln!(
        "{window:?} N={n}: Redis time per EVALSHA: {}; window key {bytes} B \
         ({bytes_per_admission:.1} B an admission); {getrange_per_admission:.1} GETRANGE an \
         admission",
        report.join(", ")
    );
    Cost {
        bytes_per_admission,
        getrange_per_admission,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_holds_the_window_in_a_sixth_of_the_sorted_sets_memory() {
    let redis = PrivateRedis::start("measure").await;
    for n in [60, 10_000] {
        let ring = measure(Window::Ring, n, &redis).await;
        let set = measure(Window::SortedSet, n, &redis).await;
        // 8 bytes a slot, in a string grown by SETRANGE, whose allocation Redis doubles as it
        // grows: 8 to 16 bytes an admission, depending on where the last doubling fell.
        assert!(
            ring.bytes_per_admission < 17.0,
            "N={n}: {}",
            ring.bytes_per_admission
        );
        assert!(set.bytes_per_admission > ring.bytes_per_admission);
        // The header, then the block of 64 slots holding the oldest time: the queue drops
        // the times that left from its front, so an admission reads two blocks whatever N
        // (the first admission after the quiet minute gallops past all N, O(log N) blocks).
        assert!(
            ring.getrange_per_admission <= 2.1,
            "N={n}: {} GETRANGE an admission",
            ring.getrange_per_admission
        );
        if n == 10_000 {
            assert!(
                set.bytes_per_admission > 6.0 * ring.bytes_per_admission,
                "{} vs {}",
                set.bytes_per_admission,
                ring.bytes_per_admission
            );
        }
    }
}
