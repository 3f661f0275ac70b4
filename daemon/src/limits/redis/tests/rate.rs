//! The rolling window: exact across replicas, retry-after from the oldest admission,
//! refused requests not counted, reverts.

use std::sync::Arc;
use std::time::Duration;

use super::*;

fn rated(owner: &str, seq: u64, limit: u32) -> Admission<'_> {
    Admission {
        what: "",
        rate_limit: Some(limit),
        ..ask(owner, hold(seq))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_n_are_admitted_by_two_replicas_racing() {
    let harness = Harness::new();
    let a = harness.limits().await;
    let b = harness.limits().await;
    seeded(&a, "k").await;
    const N: u32 = 25;
    let replicas = Arc::new([a, b]);
    let mut tasks = Vec::new();
    for seq in 0..200_u64 {
        let replicas = Arc::clone(&replicas);
        tasks.push(tokio::spawn(async move {
            let limits = &replicas[usize::from(seq % 2 == 1)];
            limits.admit(&rated("k", seq, N)).await.expect("admit")
        }));
    }
    let mut admitted = 0;
    let mut remaining = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Outcome::Admitted { rate, .. } => {
                admitted += 1;
                remaining.push(rate.expect("rate answer").remaining);
            }
            Outcome::RateLimited { limit, retry_after } => {
                assert_eq!(limit, N);
                // An admission counts from its next whole millisecond: at most 1 ms late.
                assert!(
                    retry_after <= Duration::from_millis(60_001),
                    "{retry_after:?}"
                );
                assert!(retry_after > Duration::from_secs(50), "{retry_after:?}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(admitted, N);
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        (0..N).collect::<Vec<_>>(),
        "each admission saw its slot"
    );
    let peek = replicas[0]
        .peek("k", "k", Some(N), None)
        .await
        .expect("peek");
    assert_eq!(peek.rate.expect("rate").remaining, 0);
    // A minute later, the window is empty again (the scripts' clock moved, no sleep).
    let later = replicas[1].with_offset(60_002);
    assert!(matches!(
        later.admit(&rated("k", 1000, N)).await.expect("admit"),
        Outcome::Admitted { .. }
    ));
}

#[tokio::test]
async fn retry_after_is_when_the_oldest_admission_leaves() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    seeded(&limits, "k").await;
    let first = limits.admit(&rated("k", 1, 2)).await.expect("admit");
    let Outcome::Admitted {
        rate: Some(rate), ..
    } = first
    else {
        panic!("{first:?}");
    };
    assert_eq!((rate.limit, rate.remaining), (2, 1));
    assert!(rate.reset_after > Duration::from_millis(59_900), "{rate:?}");
    // 20 s later, the second; 10 s after that, the third is refused until the first leaves
    // (about 30 s on). Lower bounds leave a second for the real time between the calls.
    let at_20 = limits.with_offset(20_000);
    let second = at_20.admit(&rated("k", 2, 2)).await.expect("admit");
    let Outcome::Admitted {
        rate: Some(rate), ..
    } = second
    else {
        panic!("{second:?}");
    };
    assert_eq!(rate.remaining, 0);
    assert!(
        rate.reset_after <= Duration::from_millis(40_001),
        "{rate:?}"
    );
    assert!(rate.reset_after > Duration::from_millis(39_000), "{rate:?}");
    let at_30 = limits.with_offset(30_000);
    let refused = at_30.admit(&rated("k", 3, 2)).await.expect("admit");
    let Outcome::RateLimited { retry_after, .. } = refused else {
        panic!("{refused:?}");
    };
    assert!(
        retry_after <= Duration::from_millis(30_001),
        "{retry_after:?}"
    );
    assert!(
        retry_after > Duration::from_millis(29_000),
        "{retry_after:?}"
    );
    // Refused requests are not counted: once the first left, exactly one slot is free.
    let at_61 = limits.with_offset(61_000);
    assert!(matches!(
        at_61.admit(&rated("k", 4, 2)).await.expect("admit"),
        Outcome::Admitted { .. }
    ));
    assert!(matches!(
        at_61.admit(&rated("k", 5, 2)).await.expect("admit"),
        Outcome::RateLimited { .. }
    ));
}

#[tokio::test]
async fn a_reverted_admission_frees_its_slot_and_refusals_never_count() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    seeded(&limits, "k").await;
    for seq in 1..=3 {
        assert!(matches!(
            limits.admit(&rated("k", seq, 3)).await.expect("admit"),
            Outcome::Admitted { .. }
        ));
    }
    for seq in 10..20 {
        assert!(matches!(
            limits.admit(&rated("k", seq, 3)).await.expect("admit"),
            Outcome::RateLimited { .. }
        ));
    }
    // The second admission's request was refused later (a body that could not be rewritten).
    assert!(
        limits
            .revert("k", hold(2), Duration::from_secs(60))
            .await
            .expect("revert")
    );
    assert!(
        !limits
            .revert("k", hold(2), Duration::from_secs(60))
            .await
            .expect("revert twice")
    );
    assert_eq!(
        limits.admit(&rated("k", 2, 3)).await.expect("admit"),
        Outcome::AlreadyFinished,
        "a reverted hold id is finished"
    );
    assert!(matches!(
        limits.admit(&rated("k", 4, 3)).await.expect("admit"),
        Outcome::Admitted { .. }
    ));
    assert!(matches!(
        limits.admit(&rated("k", 5, 3)).await.expect("admit"),
        Outcome::RateLimited { .. }
    ));
    let peek = limits.peek("k", "k", Some(3), None).await.expect("peek");
    assert_eq!(peek.rate.expect("rate").remaining, 0);
    assert_eq!(peek.open_holds, 3);
}

#[tokio::test]
async fn a_changed_limit_keeps_the_newest_admissions() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    seeded(&limits, "k").await;
    for seq in 0..5 {
        let at = limits.with_offset(i64::try_from(seq).expect("small") * 1000);
        assert!(matches!(
            at.admit(&rated("k", seq, 5)).await.expect("admit"),
            Outcome::Admitted { .. }
        ));
    }
    // Lowered to 3: full (five in the window), until the third newest (at 2 s) leaves.
    let at_10 = limits.with_offset(10_000);
    let Outcome::RateLimited { retry_after, .. } =
        at_10.admit(&rated("k", 10, 3)).await.expect("admit")
    else {
        panic!("lowered limit must refuse");
    };
    assert!(
        retry_after > Duration::from_millis(51_000),
        "{retry_after:?}"
    );
    assert!(
        retry_after <= Duration::from_millis(52_001),
        "{retry_after:?}"
    );
    // Raised to 8: three more.
    for seq in 20..23 {
        assert!(matches!(
            at_10.admit(&rated("k", seq, 8)).await.expect("admit"),
            Outcome::Admitted { .. }
        ));
    }
    assert!(matches!(
        at_10.admit(&rated("k", 23, 8)).await.expect("admit"),
        Outcome::RateLimited { .. }
    ));
}

/// Admission instants (ms, Redis's clock) of a long run with random gaps, for `window`:
/// `steps` admissions, bursts up to `burst_gap` ms apart, one gap in `pause_in` a pause of up
/// to 20 s.
async fn long_run(
    limits: &RedisLimits,
    owner: &str,
    limit: u32,
    (steps, burst_gap, pause_in): (u64, u64, u64),
) -> (Vec<u64>, u32) {
    seeded(limits, owner).await;
    let lease = Duration::from_secs(600);
    let mut admitted = Vec::new();
    let mut refused = 0;
    let mut offset = 0_i64;
    // A fixed linear congruential sequence: the same gaps for both windows, every run.
    let mut state = 0x2545_f491_u64;
    for seq in 0..steps {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let gap = if (state >> 54) < 1024 / pause_in {
            (state >> 33) % 20_000
        } else {
            (state >> 33) % burst_gap
        };
        offset += i64::try_from(gap).expect("small");
        let admission = Admission {
            what: "",
            rate_limit: Some(limit),
            lease,
            ..ask(owner, hold(seq))
        };
        match limits
            .with_offset(offset)
            .admit(&admission)
            .await
            .expect("admit")
        {
            Outcome::Admitted {
                lease_expires_ms, ..
            } => admitted.push(lease_expires_ms - 600_000),
            Outcome::RateLimited { .. } => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    (admitted, refused)
}

#[tokio::test]
async fn over_a_long_run_never_more_than_n_in_any_rolling_minute() {
    // N = 7: one block of the ring; N = 150: three blocks, wrapped around many times, with
    // many times leaving the queue at once after the pauses (the gallop). Both refused often.
    for (n, run) in [(7_u32, (400, 700, 8)), (150, (1500, 60, 64))] {
        let ring_harness = Harness::new();
        let set_harness = Harness::new();
        let ring = ring_harness.limits().await;
        let set = set_harness.limits_with(Window::SortedSet).await;
        let (ring_times, ring_refused) = long_run(&ring, "k", n, run).await;
        let (set_times, set_refused) = long_run(&set, "k", n, run).await;
        for (what, times) in [("ring", &ring_times), ("sorted set", &set_times)] {
            // The (i + N)-th admission comes a full minute after the i-th: at most N in any
            // rolling 60 s (instants read to the millisecond below, hence 59,999).
            for pair in times.windows(usize::try_from(n).expect("small") + 1) {
                let span = pair[pair.len() - 1] - pair[0];
                assert!(
                    span >= 59_999,
                    "{what} N={n}: {} admitted within {span} ms",
                    n + 1
                );
            }
        }
        assert!(
            ring_refused > 100,
            "N={n}: the run must hit the limit often: {ring_refused} refused"
        );
        // The two windows are the same rule: the same admissions, give or take one whose
        // slot freed within the few milliseconds between the two runs' calls.
        let difference = ring_times.len().abs_diff(set_times.len());
        assert!(
            difference <= 2,
            "N={n}: ring {} vs sorted set {} admitted ({ring_refused} vs {set_refused} refused)",
            ring_times.len(),
            set_times.len()
        );
    }
}
