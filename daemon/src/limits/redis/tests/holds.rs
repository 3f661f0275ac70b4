//! Holds as leases: settle idempotent by id, a retried admission answered again, the
//! sweeper charging estimates of holds past their lease, renewals keeping live ones.

use std::time::Duration;

use super::*;

fn spending(seq: u64, worst: u64, estimate: u64, lease: Duration) -> Admission<'static> {
    Admission {
        what: "",
        spend: spend(10_000, worst, None),
        estimate,
        lease,
        rate_limit: Some(100),
        ..ask("k", hold(seq))
    }
}

#[tokio::test]
async fn a_retried_admission_is_the_same_admission() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    seeded(&limits, "k").await;
    let admission = spending(1, 300, 300, Duration::from_secs(60));
    let first = limits.admit(&admission).await.expect("admit");
    let again = limits.admit(&admission).await.expect("admit again");
    let (
        Outcome::Admitted {
            held,
            rate,
            lease_expires_ms,
            repeated: false,
        },
        Outcome::Admitted {
            held: held_again,
            rate: rate_again,
            lease_expires_ms: lease_again,
            repeated: true,
        },
    ) = (first, again)
    else {
        panic!("{first:?} then {again:?}");
    };
    assert_eq!(
        (held, rate, lease_expires_ms),
        (held_again, rate_again, lease_again)
    );
    let peek = limits.peek("k", "k", Some(100), None).await.expect("peek");
    assert_eq!(peek.held, 300, "held once");
    assert_eq!(peek.rate.expect("rate").remaining, 99, "counted once");
    assert_eq!(peek.open_holds, 1);
}

#[tokio::test]
async fn settling_twice_bills_once() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    seeded(&limits, "k").await;
    limits
        .admit(&spending(1, 300, 300, Duration::from_secs(60)))
        .await
        .expect("admit");
    let settlement = Settlement {
        admitted_ms: 0,
        owner: "k",
        hold: hold(1),
        actual: 120,
    };
    assert_eq!(
        limits.settle(&[settlement]).await.expect("settle"),
        vec![SettleResult::Settled]
    );
    assert_eq!(
        limits
            .settle(&[settlement, settlement])
            .await
            .expect("again"),
        vec![SettleResult::AlreadyFinished(Finished::Settled); 2]
    );
    let peek = limits.peek("k", "k", None, None).await.expect("peek");
    assert_eq!((peek.spent, peek.held, peek.open_holds), (120, 0, 0));
    // An admission retried after its settlement is not admitted again.
    assert_eq!(
        limits
            .admit(&spending(1, 300, 300, Duration::from_secs(60)))
            .await
            .expect("admit"),
        Outcome::AlreadyFinished
    );
    // A hold never admitted is unknown.
    let unknown = Settlement {
        admitted_ms: 0,
        hold: hold(99),
        ..settlement
    };
    assert_eq!(
        limits.settle(&[unknown]).await.expect("settle"),
        vec![SettleResult::Unknown]
    );
    // The finished mark expires, after a few leases (at least ten minutes).
    let mut raw = harness.raw().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}:{{k}}:d:{}", harness.prefix, hold(1)))
        .query_async(&mut raw)
        .await
        .expect("PTTL");
    assert!((590_000..=600_000).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn the_sweeper_charges_the_estimate_of_a_lapsed_hold_once() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    seeded(&limits, "k").await;
    seeded(&limits, "other").await;
    // Two holds on a one-second lease, one on a minute's; another owner's on a second.
    for (seq, lease) in [(1, 1), (2, 1), (3, 60)] {
        limits
            .admit(&spending(seq, 500, 200 + seq, Duration::from_secs(lease)))
            .await
            .expect("admit");
    }
    limits
        .admit(&Admission {
            what: "",
            estimate: 7,
            lease: Duration::from_secs(1),
            ..ask("other", hold(4))
        })
        .await
        .expect("admit");
    assert!(
        limits.sweep(100).await.expect("sweep").is_empty(),
        "all alive"
    );
    let later = limits.with_offset(2_000);
    let mut swept = later.sweep(100).await.expect("sweep");
    swept.sort_by_key(|s| s.hold);
    let expected = |owner: &str, seq: u64, estimate: u64| Swept {
        owner: owner.into(),
        key_id: owner.into(),
        hold: hold(seq),
        estimate,
        what: String::new(),
    };
    assert_eq!(
        swept,
        vec![
            expected("k", 1, 201),
            expected("k", 2, 202),
            expected("other", 4, 7)
        ]
    );
    let peek = limits.peek("k", "k", None, None).await.expect("peek");
    assert_eq!((peek.spent, peek.held, peek.open_holds), (403, 500, 1));
    // Sweeping again charges nothing more; a settlement arriving late bills nothing.
    assert!(later.sweep(100).await.expect("sweep").is_empty());
    let late = limits
        .settle(&[Settlement {
            admitted_ms: 0,
            owner: "k",
            hold: hold(1),
            actual: 999,
        }])
        .await
        .expect("settle");
    assert_eq!(late, vec![SettleResult::AlreadyFinished(Finished::Swept)]);
    let peek = limits.peek("k", "k", None, None).await.expect("peek");
    assert_eq!(peek.spent, 403);
    // The live hold is swept when its own lease passes; then no owner is left to look at.
    let much_later = limits.with_offset(61_000);
    let swept = much_later.sweep(100).await.expect("sweep");
    assert_eq!(swept, vec![expected("k", 3, 203)]);
    assert!(harness.keys(":{sweep}:owners").is_empty(), "index emptied");
}

#[tokio::test]
async fn a_renewed_hold_outlives_its_first_lease_with_its_raised_estimate() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    seeded(&limits, "k").await;
    limits
        .admit(&spending(1, 500, 100, Duration::from_secs(1)))
        .await
        .expect("admit");
    let renewed = limits
        .renew(
            &[
                Renewal {
                    owner: "k",
                    hold: hold(1),
                    estimate: 350,
                },
                Renewal {
                    owner: "k",
                    hold: hold(2),
                    estimate: 1,
                },
            ],
            Duration::from_secs(10),
        )
        .await
        .expect("renew");
    let now = u64::try_from(redis_now_ms(&limits).await).expect("positive");
    let expiry = renewed[0].expect("open hold renewed");
    assert!(
        (now + 9_000..=now + 10_000).contains(&expiry),
        "{expiry} vs {now}"
    );
    assert_eq!(renewed[1], None, "no such hold");
    assert!(
        limits
            .with_offset(2_000)
            .sweep(100)
            .await
            .expect("sweep")
            .is_empty(),
        "renewed: not swept at its first lease's end"
    );
    let swept = limits.with_offset(11_000).sweep(100).await.expect("sweep");
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].estimate, 350);
    // A renewal after the sweep says the hold is gone.
    let renewed = limits
        .renew(
            &[Renewal {
                owner: "k",
                hold: hold(1),
                estimate: 400,
            }],
            Duration::from_secs(10),
        )
        .await
        .expect("renew");
    assert_eq!(renewed, vec![None]);
}

#[tokio::test]
async fn the_sweeper_is_bounded_and_resumes() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    seeded(&limits, "k").await;
    for seq in 0..5 {
        limits
            .admit(&spending(seq, 10, 10, Duration::from_secs(1)))
            .await
            .expect("admit");
    }
    let later = limits.with_offset(2_000);
    assert_eq!(later.sweep(2).await.expect("sweep").len(), 2);
    assert_eq!(later.sweep(2).await.expect("sweep").len(), 2);
    assert_eq!(later.sweep(2).await.expect("sweep").len(), 1);
    assert!(later.sweep(2).await.expect("sweep").is_empty());
    let peek = limits.peek("k", "k", None, None).await.expect("peek");
    assert_eq!((peek.spent, peek.held), (50, 0));
}

#[tokio::test]
async fn a_lost_admission_reverted_by_id_is_never_admitted_late() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    seeded(&limits, "k").await;
    // The replica's admission timed out and it answered 503; it reverts the id before the
    // admission (delayed in the network) reaches Redis.
    assert!(
        !limits
            .revert("k", hold(1), Duration::from_secs(60))
            .await
            .expect("revert")
    );
    let late = spending(1, 300, 300, Duration::from_secs(60));
    assert_eq!(
        limits.admit(&late).await.expect("admit"),
        Outcome::AlreadyFinished
    );
    let peek = limits.peek("k", "k", Some(100), None).await.expect("peek");
    assert_eq!((peek.held, peek.open_holds), (0, 0));
    assert_eq!(peek.rate.expect("rate").remaining, 100);
    // A settled id keeps its own mark: a revert does not turn it into "reverted".
    limits
        .admit(&spending(2, 300, 300, Duration::from_secs(60)))
        .await
        .expect("admit");
    let settlement = Settlement {
        admitted_ms: 0,
        owner: "k",
        hold: hold(2),
        actual: 5,
    };
    limits.settle(&[settlement]).await.expect("settle");
    assert!(
        !limits
            .revert("k", hold(2), Duration::from_secs(60))
            .await
            .expect("revert")
    );
    assert_eq!(
        limits.settle(&[settlement]).await.expect("settle"),
        vec![SettleResult::AlreadyFinished(Finished::Settled)]
    );
    // What a finished mark costs in Redis's memory.
    let mut raw = harness.raw().await;
    let bytes: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(format!("{}:{{k}}:d:{}", harness.prefix, hold(2)))
        .query_async(&mut raw)
        .await
        .expect("MEMORY USAGE");
    eprintln!("a finished-hold mark: {bytes} B");
    assert!(bytes < 200, "{bytes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_while_sweeping_charges_each_hold_once() {
    let harness = Harness::new();
    let settler = harness.limits().await;
    let sweeper = harness.limits().await.with_offset(2_000);
    seeded(&settler, "k").await;
    for seq in 0..200 {
        let admission = Admission {
            what: "",
            rate_limit: None,
            ..spending(seq, 40, 30, Duration::from_secs(1))
        };
        assert!(matches!(
            settler.admit(&admission).await.expect("admit"),
            Outcome::Admitted { held: 40, .. }
        ));
    }
    // Settled at 7 each, in batches of 10, while another replica sweeps them (estimate 30).
    let settling = tokio::spawn(async move {
        let mut settled = Vec::new();
        for batch in 0..20_u64 {
            let settlements: Vec<Settlement<'_>> = (batch * 10..batch * 10 + 10)
                .map(|seq| Settlement {
                    admitted_ms: 0,
                    owner: "k",
                    hold: hold(seq),
                    actual: 7,
                })
                .collect();
            let results = settler.settle(&settlements).await.expect("settle");
            for (settlement, result) in settlements.iter().zip(results) {
                if result == SettleResult::Settled {
                    settled.push(settlement.hold);
                }
            }
        }
        (settled, settler)
    });
    let mut swept = Vec::new();
    loop {
        let round = sweeper.sweep(7).await.expect("sweep");
        if round.is_empty() && settling.is_finished() {
            break;
        }
        swept.extend(round.into_iter().map(|s| s.hold));
    }
    let (settled, settler) = settling.await.expect("settler");
    swept.extend(
        sweeper
            .sweep(1000)
            .await
            .expect("sweep")
            .into_iter()
            .map(|s| s.hold),
    );
    let mut all: Vec<HoldId> = settled.iter().chain(&swept).copied().collect();
    all.sort_unstable();
    all.dedup();
    eprintln!("settled {}, swept {}", settled.len(), swept.len());
    assert_eq!(all.len(), 200, "every hold finished");
    assert_eq!(settled.len() + swept.len(), 200, "none finished twice");
    let peek = settler.peek("k", "k", None, None).await.expect("peek");
    let expected = u64::try_from(settled.len() * 7 + swept.len() * 30).expect("small");
    assert_eq!((peek.spent, peek.held, peek.open_holds), (expected, 0, 0));
}
