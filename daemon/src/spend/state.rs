//! A key's spend as a ledger keeps it, how its reset periods roll, and how a request a crash
//! left in flight is charged at the next start.

use gateway_shared::{Nanodollars, SpendReset};
use jiff::Timestamp;

/// A key's spend as the ledger knows it. Persisted by the usage writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpendState {
    pub total: Nanodollars,
    /// Spend in the period that ends at `period_resets_at` (for a lifetime cap: all spend).
    pub period: Nanodollars,
    pub period_resets_at: Option<Timestamp>,
    /// The reset period `period_resets_at` was computed for.
    pub period_kind: Option<SpendReset>,
    /// Sum of open reservations.
    pub reserved: Nanodollars,
    pub open_reservations: u32,
    pub request_count: u64,
    pub last_used_at: Option<Timestamp>,
}

impl SpendState {
    /// Starts a new period if the recorded one has ended or the reset period changed.
    /// Spend already counted in a period that is still running carries over a change of
    /// period kind (until the key service recounts it from the database:
    /// [`Ledger::restart_period`]); a lifetime cap counts all spend.
    pub fn roll(&mut self, reset: Option<SpendReset>, now: Timestamp) {
        match reset {
            None => {
                self.period = self.total;
                self.period_resets_at = None;
            }
            Some(kind) => {
                let ended = self.period_resets_at.is_none_or(|at| now >= at);
                if ended && self.period_kind.is_some() {
                    self.period = Nanodollars::ZERO;
                }
                if ended || self.period_kind != Some(kind) {
                    self.period_resets_at = Some(kind.next_reset(now));
                }
            }
        }
        self.period_kind = reset;
    }

    /// Charges `cost` for a request that was in flight at `at` when its daemon died, settled
    /// only now, at the next start (SPEC §9.4: an open hold is charged its estimate). It
    /// counts in the period `at` falls in: the recorded one; a later one, which it starts;
    /// or an earlier one, whose spend is history (the total only).
    pub fn charge_at(&mut self, cost: Nanodollars, at: Timestamp) {
        self.total = self.total.saturating_add(cost);
        self.request_count += 1;
        self.last_used_at = self.last_used_at.max(Some(at));
        let kind = self.period_kind;
        let earlier = kind
            .zip(self.period_resets_at)
            .is_some_and(|(kind, resets_at)| kind.next_reset(at) < resets_at);
        if earlier {
            return;
        }
        self.roll(kind, at);
        if kind.is_some() {
            self.period = self.period.saturating_add(cost);
        }
    }
}

/// A key's spend as the database has counted it (`Store::counted_spend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountedSpend {
    /// On the days of the period that has just been set.
    pub since: Nanodollars,
    /// In all, as persisted together with those days' rows.
    pub total: Nanodollars,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("ts")
    }

    #[test]
    fn a_crashed_request_is_charged_in_the_period_it_was_in_flight() {
        let cents = |n: u64| Nanodollars(n * 10_000_000);
        // A daily key whose recorded period is the 27th ($0.50 spent, $2 in all).
        let day_27 = SpendState {
            total: cents(200),
            period: cents(50),
            period_resets_at: Some(ts("2026-11-28T00:00:00Z")),
            period_kind: Some(SpendReset::Daily),
            request_count: 9,
            last_used_at: Some(ts("2026-11-27T10:00:00Z")),
            ..SpendState::default()
        };
        // In flight on the 27th: this period.
        let mut state = day_27;
        state.charge_at(cents(10), ts("2026-11-27T23:59:59Z"));
        assert_eq!((state.total, state.period), (cents(210), cents(60)));
        assert_eq!(state.period_resets_at, Some(ts("2026-11-28T00:00:00Z")));
        assert_eq!(state.request_count, 10);
        assert_eq!(state.last_used_at, Some(ts("2026-11-27T23:59:59Z")));
        // On the 26th (a period that had already ended): history, the total only.
        let mut state = day_27;
        state.charge_at(cents(10), ts("2026-11-26T23:00:00Z"));
        assert_eq!((state.total, state.period), (cents(210), cents(50)));
        assert_eq!(state.last_used_at, day_27.last_used_at, "not older");
        // On the 28th, after the recorded period: it starts the 28th's.
        let mut state = day_27;
        state.charge_at(cents(10), ts("2026-11-28T00:00:01Z"));
        assert_eq!((state.total, state.period), (cents(210), cents(10)));
        assert_eq!(state.period_resets_at, Some(ts("2026-11-29T00:00:00Z")));
        // A lifetime cap counts everything.
        let mut state = SpendState {
            period_kind: None,
            period_resets_at: None,
            period: day_27.total,
            ..day_27
        };
        state.charge_at(cents(10), ts("2026-11-26T23:00:00Z"));
        assert_eq!((state.total, state.period), (cents(210), cents(210)));
        // A key with a reset period that never spent: its first period starts.
        let mut state = SpendState {
            period_kind: Some(SpendReset::Monthly),
            ..SpendState::default()
        };
        state.charge_at(cents(10), ts("2026-11-27T12:00:00Z"));
        assert_eq!((state.total, state.period), (cents(10), cents(10)));
        assert_eq!(state.period_resets_at, Some(ts("2026-12-01T00:00:00Z")));
    }
}
