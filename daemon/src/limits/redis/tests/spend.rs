//! The spend cap: concurrent admissions never hold past it, the clamp rule and the two
//! refusals exactly as `spend/ledger.rs`, amounts past 2^53 nd saturated.

use std::sync::Arc;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_admissions_never_hold_past_the_cap() {
    let harness = Harness::new();
    let a = harness.limits().await;
    let b = harness.limits().await;
    seeded(&a, "k").await;
    // Cap 1,000 nd, worst case 30, clamp floor 10: 33 fit whole (990), then one is clamped
    // to the last 10, and the other 16 are refused with no headroom.
    let replicas = Arc::new([a, b]);
    let mut tasks = Vec::new();
    for seq in 0..50_u64 {
        let replicas = Arc::clone(&replicas);
        tasks.push(tokio::spawn(async move {
            let limits = &replicas[usize::from(seq % 2 == 0)];
            let admission = Admission {
                what: "",
                spend: spend(1000, 30, Some(10)),
                estimate: 30,
                ..ask("k", hold(seq))
            };
            limits.admit(&admission).await.expect("admit")
        }));
    }
    let (mut whole, mut clamped, mut refused, mut held) = (0, 0, 0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Outcome::Admitted { held: amount, .. } => {
                assert_eq!(amount, 30);
                whole += 1;
                held += amount;
            }
            Outcome::Clamped { headroom, .. } => {
                assert_eq!(headroom, 10);
                clamped += 1;
                held += headroom;
            }
            Outcome::SpendWouldExceed { headroom, .. } => {
                assert_eq!(headroom, 0);
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((whole, clamped, refused), (33, 1, 16));
    assert_eq!(held, 1000);
    let peek = replicas[0].peek("k", "k", None, None).await.expect("peek");
    assert_eq!((peek.spent, peek.held, peek.open_holds), (0, 1000, 34));
    // Settling at what they really cost frees the rest.
    let settlements: Vec<Settlement<'_>> = (0..50)
        .map(|seq| Settlement {
            admitted_ms: 0,
            owner: "k",
            hold: hold(seq),
            actual: 20,
        })
        .collect();
    let results = replicas[1].settle(&settlements).await.expect("settle");
    let settled = results
        .iter()
        .filter(|r| **r == SettleResult::Settled)
        .count();
    assert_eq!(settled, 34);
    assert_eq!(
        results
            .iter()
            .filter(|r| **r == SettleResult::Unknown)
            .count(),
        16,
        "refused admissions hold nothing"
    );
    let peek = replicas[0].peek("k", "k", None, None).await.expect("peek");
    assert_eq!((peek.spent, peek.held, peek.open_holds), (680, 0, 0));
}

#[tokio::test]
async fn exhausted_and_would_exceed_as_on_one_server() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    seeded_with(&limits, "k", None, 995).await;
    let admission = |seq, worst, min| Admission {
        what: "",
        spend: spend(1000, worst, min),
        ..ask("k", hold(seq))
    };
    // 5 of headroom: a worst case of 10 does not fit, and without a clamp it is refused.
    assert_eq!(
        limits.admit(&admission(1, 10, None)).await.expect("admit"),
        Outcome::SpendWouldExceed {
            headroom: 5,
            resets_at_ms: None
        }
    );
    // A floor above the headroom: refused too.
    assert_eq!(
        limits
            .admit(&admission(2, 10, Some(6)))
            .await
            .expect("admit"),
        Outcome::SpendWouldExceed {
            headroom: 5,
            resets_at_ms: None
        }
    );
    // The floor fits: the whole headroom is held.
    let clamped = limits
        .admit(&admission(3, 10, Some(5)))
        .await
        .expect("admit");
    assert!(
        matches!(clamped, Outcome::Clamped { headroom: 5, .. }),
        "{clamped:?}"
    );
    // Nothing left: a request that costs nothing fits, anything else does not.
    assert!(matches!(
        limits.admit(&admission(4, 0, None)).await.expect("admit"),
        Outcome::Admitted { held: 0, .. }
    ));
    assert_eq!(
        limits
            .admit(&admission(5, 1, Some(1)))
            .await
            .expect("admit"),
        Outcome::SpendWouldExceed {
            headroom: 0,
            resets_at_ms: None
        }
    );
    // Settled at its whole 5: the period reached the limit, exhausted.
    let settled = limits
        .settle(&[Settlement {
            admitted_ms: 0,
            owner: "k",
            hold: hold(3),
            actual: 5,
        }])
        .await
        .expect("settle");
    assert_eq!(settled, vec![SettleResult::Settled]);
    assert_eq!(
        limits.admit(&admission(6, 0, None)).await.expect("admit"),
        Outcome::SpendExhausted { resets_at_ms: None }
    );
}

#[tokio::test]
async fn amounts_past_two_to_the_53_saturate() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    // A limit of u64::MAX nd acts as 2^53 − 1; spend seeded past it is saturated too.
    seeded_with(&limits, "k", None, MAX_EXACT - 10).await;
    let admission = |seq, worst| Admission {
        what: "",
        spend: spend(u64::MAX, worst, None),
        estimate: worst,
        ..ask("k", hold(seq))
    };
    assert!(matches!(
        limits.admit(&admission(1, 6)).await.expect("admit"),
        Outcome::Admitted { held: 6, .. }
    ));
    assert_eq!(
        limits.admit(&admission(2, u64::MAX)).await.expect("admit"),
        Outcome::SpendWouldExceed {
            headroom: 4,
            resets_at_ms: None
        }
    );
    // Settled at an absurd cost: the spend stops at 2^53 − 1, exactly.
    limits
        .settle(&[Settlement {
            admitted_ms: 0,
            owner: "k",
            hold: hold(1),
            actual: u64::MAX,
        }])
        .await
        .expect("settle");
    let peek = limits.peek("k", "k", None, None).await.expect("peek");
    assert_eq!((peek.spent, peek.held), (MAX_EXACT, 0));
    assert_eq!(
        limits.admit(&admission(3, 0)).await.expect("admit"),
        Outcome::SpendExhausted { resets_at_ms: None }
    );
    // What Redis stores is the exact integer, not a rounded double.
    let mut raw = harness.raw().await;
    let stored: String = redis::cmd("HGET")
        .arg(format!("{}:{{k}}:led", harness.prefix))
        .arg("spent")
        .query_async(&mut raw)
        .await
        .expect("HGET");
    assert_eq!(stored, MAX_EXACT.to_string());
}
