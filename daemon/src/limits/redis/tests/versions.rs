//! Key versions (zero-lag edits and revocations) and rebuilding a ledger Redis lost.

use super::*;

#[tokio::test]
async fn an_older_copy_is_stale_and_a_newer_one_advances_the_version() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    seeded(&limits, "k").await;
    // The management API committed version 5 and published it.
    assert_eq!(
        limits.publish_version("k", "k", 5).await.expect("publish"),
        5
    );
    assert_eq!(
        limits.publish_version("k", "k", 3).await.expect("publish"),
        5,
        "set only if greater"
    );
    // A key without any limit gets the same check: a revocation holds with no lag.
    let unlimited = |version| Admission {
        what: "",
        version,
        ..ask("k", hold(version))
    };
    assert_eq!(
        limits.admit(&unlimited(4)).await.expect("admit"),
        Outcome::Stale { version: 5 }
    );
    // A limited key's refusal is decided before anything is counted.
    let limited = Admission {
        what: "",
        rate_limit: Some(1),
        spend: spend(10, 5, None),
        ..unlimited(4)
    };
    assert_eq!(
        limits.admit(&limited).await.expect("admit"),
        Outcome::Stale { version: 5 }
    );
    let peek = limits.peek("k", "k", Some(1), None).await.expect("peek");
    assert_eq!((peek.held, peek.open_holds), (0, 0));
    assert_eq!(peek.rate.expect("rate").remaining, 1);
    // A replica that already reloaded version 6 stores it; the others are then stale.
    assert!(matches!(
        limits.admit(&unlimited(6)).await.expect("admit"),
        Outcome::Admitted { held: 0, .. }
    ));
    assert_eq!(
        limits
            .peek("k", "k", None, None)
            .await
            .expect("peek")
            .version,
        6
    );
    assert_eq!(
        limits.admit(&unlimited(5)).await.expect("admit"),
        Outcome::Stale { version: 6 }
    );
    // A rotated pair shares the owner's ledger, each key with its own version.
    let successor = Admission {
        what: "",
        key_id: "k2",
        version: 1,
        ..unlimited(7)
    };
    assert!(matches!(
        limits.admit(&successor).await.expect("admit"),
        Outcome::Admitted { .. }
    ));
    assert_eq!(
        limits
            .peek("k", "k2", None, None)
            .await
            .expect("peek")
            .version,
        1
    );
}

#[tokio::test]
async fn a_lost_ledger_is_rebuilt_before_the_key_is_admitted_again() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    let admission = Admission {
        what: "",
        spend: Some(SpendAsk {
            limit: 1000,
            reset: Some(SpendReset::Daily),
            worst: 100,
            min: None,
        }),
        rate_limit: Some(10),
        version: 3,
        ..ask("k", hold(1))
    };
    // First use: Redis has nothing; the replica sums the day's spend from the durable store.
    let Outcome::NeedRebuild {
        now_ms,
        period_start_ms: Some(start),
    } = limits.admit(&admission).await.expect("admit")
    else {
        panic!("a ledger Redis never had must be rebuilt");
    };
    assert_eq!(start % 86_400_000, 0);
    assert!(now_ms >= start && now_ms - start < 86_400_000);
    assert!(
        limits
            .seed("k", Some(SpendReset::Daily), Some(start), 950, &[("k", 3)])
            .await
            .expect("seed")
    );
    // Another replica seeding the same ledger changes nothing (set if absent).
    assert!(
        !limits
            .seed("k", Some(SpendReset::Daily), Some(start), 0, &[("k", 2)])
            .await
            .expect("seed")
    );
    assert_eq!(
        limits.admit(&admission).await.expect("admit"),
        Outcome::SpendWouldExceed {
            headroom: 50,
            resets_at_ms: Some(start + 86_400_000)
        }
    );
    // Redis loses everything (a restart without persistence, a flush): rebuilt again, and
    // the versions come back with it (a stale replica cannot slip through meanwhile).
    harness.forget("k");
    assert!(matches!(
        limits.admit(&admission).await.expect("admit"),
        Outcome::NeedRebuild { .. }
    ));
    limits
        .seed("k", Some(SpendReset::Daily), Some(start), 950, &[("k", 4)])
        .await
        .expect("seed");
    assert_eq!(
        limits.admit(&admission).await.expect("admit"),
        Outcome::Stale { version: 4 }
    );
    // A key that never had a limit needs its version seeded only.
    let unlimited = ask("u", hold(2));
    assert!(matches!(
        limits.admit(&unlimited).await.expect("admit"),
        Outcome::NeedRebuild {
            period_start_ms: None,
            ..
        }
    ));
    limits
        .seed("u", None, None, 0, &[("u", 1)])
        .await
        .expect("seed");
    assert!(matches!(
        limits.admit(&unlimited).await.expect("admit"),
        Outcome::Admitted { .. }
    ));
}

#[tokio::test]
async fn an_edit_restarts_the_period_at_what_the_key_really_spent() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    seeded_with(&limits, "k", None, 5000).await;
    let monthly = |seq, worst| Admission {
        what: "",
        spend: Some(SpendAsk {
            limit: 1000,
            reset: Some(SpendReset::Monthly),
            worst,
            min: None,
        }),
        ..ask("k", hold(seq))
    };
    assert!(matches!(
        limits.admit(&monthly(9, 0)).await.expect("admit"),
        Outcome::SpendExhausted { .. }
    ));
    let held = Admission {
        what: "",
        spend: spend(100_000, 40, None),
        ..ask("k", hold(1))
    };
    assert!(matches!(
        limits.admit(&held).await.expect("admit"),
        Outcome::Admitted { held: 40, .. }
    ));
    // A monthly limit of 1,000 set on the 6th: the month so far cost 300 (the durable
    // store's sum), not the lifetime's 5,000.
    let Outcome::NeedRebuild {
        period_start_ms, ..
    } = limits
        .admit(&Admission {
            what: "",
            owner: "fresh",
            key_id: "fresh",
            ..monthly(2, 0)
        })
        .await
        .expect("admit")
    else {
        panic!("a fresh owner needs a rebuild");
    };
    limits
        .restart_period("k", Some(SpendReset::Monthly), period_start_ms, 300)
        .await
        .expect("restart");
    let peek = limits
        .peek("k", "k", None, Some(SpendReset::Monthly))
        .await
        .expect("peek");
    assert_eq!((peek.spent, peek.held), (300, 40), "holds stay");
    assert_eq!(
        limits.admit(&monthly(3, 700)).await.expect("admit"),
        Outcome::SpendWouldExceed {
            headroom: 660,
            resets_at_ms: peek.resets_at_ms
        }
    );
}
