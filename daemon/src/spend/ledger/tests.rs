//! The ledger's tests: reservations, clamps, periods, settlement.

use super::*;
use crate::clock::ManualClock;

fn ts(s: &str) -> Timestamp {
    s.parse().expect("ts")
}

/// $100 per million output tokens, free input: 1000 output tokens cost exactly $0.10.
fn ask(output_tokens: u64) -> Ask {
    Ask {
        price: Price {
            input: Nanodollars::ZERO,
            output: Nanodollars(100_000_000_000),
            cache_read: Nanodollars::ZERO,
            cache_write: Nanodollars::ZERO,
            max_output_tokens: 100_000,
        },
        input_tokens_bound: 500,
        output_tokens,
        answers: 1,
        min_output_tokens: 100,
        clamp: true,
    }
}

fn ledger(now: &str) -> (Arc<Ledger>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(ts(now)));
    (
        Arc::new(Ledger::new(SpendState::default(), clock.clone())),
        clock,
    )
}

const DOLLAR: Nanodollars = Nanodollars(1_000_000_000);

#[test]
fn concurrent_reservations_cannot_overshoot() {
    let (ledger, _) = ledger("2026-11-26T12:00:00Z");
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..50 {
        match ledger.reserve(
            Some(DOLLAR),
            None,
            &Ask {
                clamp: false,
                ..ask(1000)
            },
        ) {
            Ok(r) => admitted.push(r),
            Err(_) => refused += 1,
        }
    }
    assert_eq!((admitted.len(), refused), (10, 40));
    for reservation in admitted {
        let amount = reservation.amount();
        reservation.settle(amount);
    }
    let state = ledger.snapshot();
    assert_eq!(state.total, DOLLAR);
    assert_eq!(state.reserved, Nanodollars::ZERO);
    assert_eq!(state.open_reservations, 0);
    assert!(matches!(
        ledger.reserve(Some(DOLLAR), None, &ask(1)),
        Err(SpendRefusal::Exhausted { resets_at: None })
    ));
}

#[test]
fn near_the_cap_the_output_is_clamped_instead_of_refused() {
    let (ledger, _) = ledger("2026-11-26T12:00:00Z");
    ledger
        .reserve(Some(DOLLAR), None, &ask(9500))
        .expect("fits")
        .settle(Nanodollars(950_000_000));
    // $0.05 left; the worst case of 16384 tokens is $1.64: clamp to 500 tokens.
    let clamped = ledger
        .reserve(Some(DOLLAR), None, &ask(16384))
        .expect("clamped, not refused");
    assert_eq!(clamped.clamped_output(), Some(500));
    assert_eq!(clamped.amount(), Nanodollars(50_000_000));
    clamped.settle(Nanodollars::ZERO);
    // Refuse-instead-of-clamp refuses the same request.
    let refused = ledger.reserve(
        Some(DOLLAR),
        None,
        &Ask {
            clamp: false,
            ..ask(16384)
        },
    );
    assert!(matches!(refused, Err(SpendRefusal::WouldExceed { .. })));
}

#[test]
fn every_answer_a_request_asks_for_is_reserved_and_clamped() {
    let (ledger, _) = ledger("2026-11-26T12:00:00Z");
    // Four answers of 2500 tokens each: $1.00 of output, the whole limit.
    let four = Ask {
        answers: 4,
        ..ask(2500)
    };
    let whole = ledger.reserve(Some(DOLLAR), None, &four).expect("fits");
    assert_eq!(whole.clamped_output(), None);
    assert_eq!(whole.amount(), DOLLAR);
    whole.settle(Nanodollars(950_000_000));
    // $0.05 left pays 500 tokens in all: 125 for each of the four answers.
    let clamped = ledger.reserve(Some(DOLLAR), None, &four).expect("clamped");
    assert_eq!(clamped.clamped_output(), Some(125));
    assert_eq!(clamped.output_tokens(), 500, "every answer's output");
    assert_eq!(clamped.amount(), Nanodollars(50_000_000));
    clamped.settle(Nanodollars::ZERO);
    // Ten answers would get fewer than the minimum of 100 each: refused, though one
    // answer would still be clamped.
    let ten = Ask {
        answers: 10,
        ..ask(2500)
    };
    assert!(matches!(
        ledger.reserve(Some(DOLLAR), None, &ten),
        Err(SpendRefusal::WouldExceed { .. })
    ));
    assert!(ledger.reserve(Some(DOLLAR), None, &ask(2500)).is_ok());
}

#[test]
fn a_dropped_reservation_settles_its_estimate() {
    let (ledger, _) = ledger("2026-11-26T12:00:00Z");
    let mut reservation = ledger
        .reserve(Some(DOLLAR), None, &ask(1000))
        .expect("fits");
    reservation.set_estimate(Nanodollars(123));
    assert_eq!(ledger.snapshot().open_reservations, 1);
    drop(reservation);
    let state = ledger.snapshot();
    assert_eq!(
        (state.total, state.reserved, state.open_reservations),
        (Nanodollars(123), Nanodollars::ZERO, 0)
    );
}

#[test]
fn periods_reset_exactly_at_midnight_monday_and_the_first() {
    for (reset, before, boundary) in [
        (
            SpendReset::Daily,
            "2026-11-26T23:59:59Z",
            "2026-11-27T00:00:00Z",
        ),
        (
            SpendReset::Weekly,
            "2026-11-29T23:59:59Z",
            "2026-11-30T00:00:00Z",
        ),
        (
            SpendReset::Monthly,
            "2026-11-30T23:59:59Z",
            "2026-12-01T00:00:00Z",
        ),
    ] {
        let (ledger, clock) = ledger(before);
        ledger
            .reserve(Some(DOLLAR), Some(reset), &ask(10_000))
            .expect("fits")
            .settle(DOLLAR);
        assert!(
            matches!(
                ledger.reserve(Some(DOLLAR), Some(reset), &ask(1)),
                Err(SpendRefusal::Exhausted { resets_at: Some(at) }) if at == ts(boundary)
            ),
            "{reset} exhausted before {boundary}"
        );
        clock.set(ts(boundary));
        let again = ledger.reserve(Some(DOLLAR), Some(reset), &ask(1000));
        assert!(again.is_ok(), "{reset} resets at {boundary}");
        drop(again);
        assert_eq!(
            ledger.snapshot().total.0,
            DOLLAR.0 + 100_000_000,
            "lifetime total keeps counting"
        );
    }
}

#[test]
fn without_a_reset_the_cap_is_for_life() {
    let (ledger, clock) = ledger("2026-11-26T12:00:00Z");
    ledger
        .reserve(Some(DOLLAR), None, &ask(10_000))
        .expect("fits")
        .settle(DOLLAR);
    clock.set(ts("2030-01-01T00:00:00Z"));
    assert!(ledger.reserve(Some(DOLLAR), None, &ask(1)).is_err());
    // Raising the limit applies at once.
    assert!(
        ledger
            .reserve(Some(Nanodollars(2 * DOLLAR.0)), None, &ask(1))
            .is_ok()
    );
}

#[test]
fn a_restarted_period_counts_the_database_and_what_it_has_not_written_yet() {
    let (ledger, _) = ledger("2026-12-02T10:00:00Z");
    // A lifetime key that has spent $3, of which the usage writer has persisted $2.50.
    for _ in 0..3 {
        ledger
            .reserve(None, None, &ask(1))
            .expect("no limit")
            .settle(DOLLAR);
    }
    let counted = CountedSpend {
        since: Nanodollars(DOLLAR.0 / 4),
        total: Nanodollars(DOLLAR.0 * 5 / 2),
    };
    let state = ledger.restart_period(SpendReset::Monthly, ts("2026-12-02T10:00:00Z"), counted);
    assert_eq!(
        state.period,
        Nanodollars(DOLLAR.0 * 3 / 4),
        "this month's $0.25 in the rollup plus the $0.50 not yet written, not $3"
    );
    assert_eq!(state.total, Nanodollars(3 * DOLLAR.0));
    assert_eq!(state.period_kind, Some(SpendReset::Monthly));
    assert_eq!(state.period_resets_at, Some(ts("2027-01-01T00:00:00Z")));
    assert_eq!(ledger.snapshot(), state, "kept, not only returned");
    // The restarted period is what admission reads.
    assert!(matches!(
        ledger.reserve(
            Some(Nanodollars(DOLLAR.0 * 3 / 4)),
            Some(SpendReset::Monthly),
            &ask(1)
        ),
        Err(SpendRefusal::Exhausted { .. })
    ));
    assert!(
        ledger
            .reserve(Some(DOLLAR), Some(SpendReset::Monthly), &ask(1))
            .is_ok()
    );
}
