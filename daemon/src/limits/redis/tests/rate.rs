//! The rolling window: exact across replicas, retry-after from the oldest admission,
//! refused requests not counted, reverts.

use std::sync::Arc;
use std::time::Duration;

use super::*;

fn rated(owner: &str, seq: u64, limit: u32) -> Admission<'_> {
    Admission {
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
                assert!(retry_after <= Duration::from_secs(60), "{retry_after:?}");
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
    // (about 30 s on).
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
    assert!(rate.reset_after > Duration::from_millis(39_900), "{rate:?}");
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
        retry_after > Duration::from_millis(29_900),
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
    assert!(limits.revert("k", hold(2)).await.expect("revert"));
    assert!(!limits.revert("k", hold(2)).await.expect("revert twice"));
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
        retry_after > Duration::from_millis(51_900),
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
