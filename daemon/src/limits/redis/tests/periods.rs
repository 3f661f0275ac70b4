//! Reset periods on Redis's clock (moved by the tests' offset): UTC days, weeks from Monday,
//! months across December and a leap February; a period that ends starts again at zero.

use super::*;

fn capped(seq: u64, reset: SpendReset, worst: u64) -> Admission<'static> {
    Admission {
        what: "",
        spend: Some(SpendAsk {
            limit: 1000,
            reset: Some(reset),
            worst,
            min: None,
        }),
        ..ask("k", hold(seq))
    }
}

/// The period `NeedRebuild` names at `at`, and when an exhausted ledger says it resets.
async fn period_at(harness: &Harness, reset: SpendReset, at: &str) -> (u64, u64) {
    let limits = harness.limits().await;
    let limits = limits.with_offset(offset_to(&limits, at).await);
    harness.forget("k");
    let Outcome::NeedRebuild {
        period_start_ms: Some(start),
        ..
    } = limits.admit(&capped(1, reset, 1)).await.expect("admit")
    else {
        panic!("{reset:?} at {at}: a fresh ledger needs a rebuild");
    };
    limits
        .seed("k", Some(reset), Some(start), 1000, &[("k", 1)])
        .await
        .expect("seed");
    let Outcome::SpendExhausted {
        resets_at_ms: Some(resets_at),
    } = limits.admit(&capped(2, reset, 1)).await.expect("admit")
    else {
        panic!("{reset:?} at {at}: a spent period is exhausted");
    };
    (start, resets_at)
}

#[tokio::test]
async fn periods_are_utc_days_weeks_from_monday_and_months() {
    let harness = Harness::new();
    let cases = [
        (
            SpendReset::Daily,
            "2026-12-06T13:00:00Z",
            "2026-12-06T00:00:00Z",
            "2026-12-07T00:00:00Z",
        ),
        (
            SpendReset::Daily,
            "2026-12-31T23:59:59Z",
            "2026-12-31T00:00:00Z",
            "2027-01-01T00:00:00Z",
        ),
        // 2026-12-06 is a Sunday: the week began on Monday the 30th of November.
        (
            SpendReset::Weekly,
            "2026-12-06T23:00:00Z",
            "2026-11-30T00:00:00Z",
            "2026-12-07T00:00:00Z",
        ),
        (
            SpendReset::Weekly,
            "2026-12-07T00:00:01Z",
            "2026-12-07T00:00:00Z",
            "2026-12-14T00:00:00Z",
        ),
        (
            SpendReset::Weekly,
            "2027-01-01T12:00:00Z",
            "2026-12-28T00:00:00Z",
            "2027-01-04T00:00:00Z",
        ),
        (
            SpendReset::Monthly,
            "2026-12-31T23:59:59Z",
            "2026-12-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
        ),
        (
            SpendReset::Monthly,
            "2027-01-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
            "2027-02-01T00:00:00Z",
        ),
        (
            SpendReset::Monthly,
            "2028-02-29T12:00:00Z",
            "2028-02-01T00:00:00Z",
            "2028-03-01T00:00:00Z",
        ),
        (
            SpendReset::Monthly,
            "2027-02-28T12:00:00Z",
            "2027-02-01T00:00:00Z",
            "2027-03-01T00:00:00Z",
        ),
        (
            SpendReset::Monthly,
            "2100-02-28T12:00:00Z",
            "2100-02-01T00:00:00Z",
            "2100-03-01T00:00:00Z",
        ),
    ];
    for (reset, at, start, resets_at) in cases {
        assert_eq!(
            period_at(&harness, reset, at).await,
            (ms(start), ms(resets_at)),
            "{reset:?} at {at}"
        );
    }
}

#[tokio::test]
async fn a_period_that_ends_starts_again_at_zero() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    // Spent out on New Year's Eve, a monthly cap.
    let eve = limits.with_offset(offset_to(&limits, "2026-12-31T23:59:58Z").await);
    let Outcome::NeedRebuild {
        period_start_ms, ..
    } = eve
        .admit(&capped(1, SpendReset::Monthly, 10))
        .await
        .expect("admit")
    else {
        panic!("fresh ledger");
    };
    eve.seed(
        "k",
        Some(SpendReset::Monthly),
        period_start_ms,
        990,
        &[("k", 1)],
    )
    .await
    .expect("seed");
    // A hold open across midnight settles into the new period.
    assert!(matches!(
        eve.admit(&capped(2, SpendReset::Monthly, 10))
            .await
            .expect("admit"),
        Outcome::Admitted { held: 10, .. }
    ));
    assert_eq!(
        eve.admit(&capped(3, SpendReset::Monthly, 10))
            .await
            .expect("admit"),
        Outcome::SpendWouldExceed {
            headroom: 0,
            resets_at_ms: Some(ms("2027-01-01T00:00:00Z"))
        }
    );
    let new_year = limits.with_offset(offset_to(&limits, "2027-01-01T00:00:01Z").await);
    let peek = new_year
        .peek("k", "k", None, Some(SpendReset::Monthly))
        .await
        .expect("peek");
    assert_eq!(
        (peek.spent, peek.held),
        (0, 10),
        "the new month starts at zero"
    );
    assert_eq!(peek.period_start_ms, Some(ms("2027-01-01T00:00:00Z")));
    assert!(matches!(
        new_year
            .admit(&capped(4, SpendReset::Monthly, 990))
            .await
            .expect("admit"),
        Outcome::Admitted { held: 990, .. }
    ));
    new_year
        .settle(&[Settlement {
            admitted_ms: 0,
            owner: "k",
            hold: hold(2),
            actual: 7,
        }])
        .await
        .expect("settle");
    let peek = new_year
        .peek("k", "k", None, Some(SpendReset::Monthly))
        .await
        .expect("peek");
    assert_eq!((peek.spent, peek.held), (7, 990));
    // A daily reset set on the key mid-period keeps the spend counted so far (the key
    // service recounts it from the durable store), and then rolls daily.
    let daily = |seq| capped(seq, SpendReset::Daily, 1);
    assert!(matches!(
        new_year.admit(&daily(5)).await.expect("admit"),
        Outcome::Admitted { held: 1, .. }
    ));
    let peek = new_year
        .peek("k", "k", None, Some(SpendReset::Daily))
        .await
        .expect("peek");
    assert_eq!(peek.spent, 7, "carried into the running day");
    assert_eq!(peek.resets_at_ms, Some(ms("2027-01-02T00:00:00Z")));
    let next_day = limits.with_offset(offset_to(&limits, "2027-01-02T00:00:01Z").await);
    let peek = next_day
        .peek("k", "k", None, Some(SpendReset::Daily))
        .await
        .expect("peek");
    assert_eq!(peek.spent, 0);
}
