//! The exact rolling-window rate limit: at most N admitted requests in any 60 seconds.
//!
//! Hand-written rather than `governor`: GCRA admits a burst of N *and* refills one slot every
//! 60/N s, so a client that hammers gets up to 2N−1 in a rolling minute (measured in
//! `research/reliability.md` §0.1), which breaks SPEC §4. A sliding log keeps the instants of
//! the last N admissions: a request is admitted when fewer than N fall in the last 60 s.
//! Rejected requests are not recorded, so hammering does not push the next slot further out.
//! Memory is at most N instants per key.

use std::collections::VecDeque;
use std::time::Duration;

pub const WINDOW: Duration = Duration::from_secs(60);

/// The admissions of one key inside the current window, oldest first, as monotonic offsets.
#[derive(Debug, Default)]
pub struct RateWindow {
    admitted: VecDeque<Duration>,
}

/// What the limiter says about one request; enough for the `x-ratelimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateDecision {
    pub admitted: bool,
    pub limit: u32,
    /// Slots left in the window after this request.
    pub remaining: u32,
    /// Until the oldest admission in the window leaves it (a slot frees); zero if none.
    pub reset_after: Duration,
    /// When this decision was made (the admission's instant, for `revert`).
    pub at: Duration,
}

impl RateWindow {
    /// Admits and records a request at `now` if fewer than `limit` were admitted in the 60 s
    /// before it.
    pub fn admit(&mut self, now: Duration, limit: u32) -> RateDecision {
        self.expire(now);
        let admitted = self.admitted.len() < limit as usize;
        if admitted {
            self.admitted.push_back(now);
        }
        self.decision(now, limit, admitted)
    }

    /// Takes back the admission made at `at`: the request was refused by a later check, and
    /// refused requests do not count (SPEC §4).
    pub fn revert(&mut self, at: Duration) {
        if let Some(i) = self.admitted.iter().rposition(|&t| t == at) {
            self.admitted.remove(i);
        }
    }

    /// The current headroom without admitting anything (for self-service).
    pub fn peek(&mut self, now: Duration, limit: u32) -> RateDecision {
        self.expire(now);
        let admitted = self.admitted.len() < limit as usize;
        self.decision(now, limit, admitted)
    }

    fn expire(&mut self, now: Duration) {
        // An admission at t counts in (t - 60 s, t]; at exactly t + 60 s it has left.
        while self.admitted.front().is_some_and(|&at| at + WINDOW <= now) {
            self.admitted.pop_front();
        }
    }

    fn decision(&self, now: Duration, limit: u32, admitted: bool) -> RateDecision {
        let used = u32::try_from(self.admitted.len()).unwrap_or(u32::MAX);
        // A lowered limit can leave more admissions in the window than it allows: the slot
        // frees when enough of them have left, i.e. the (used - limit + 1)-th oldest.
        let freeing = (used + 1).saturating_sub(limit.max(1)) as usize;
        let reset_after = match freeing.checked_sub(1).and_then(|i| self.admitted.get(i)) {
            Some(&at) if !admitted => (at + WINDOW).saturating_sub(now),
            _ => self
                .admitted
                .front()
                .map_or(Duration::ZERO, |&at| (at + WINDOW).saturating_sub(now)),
        };
        RateDecision {
            admitted,
            limit,
            remaining: limit.saturating_sub(used),
            reset_after,
            at: now,
        }
    }
}

/// Whole seconds for `Retry-After`, rounded up so that waiting them always suffices.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs();
    if wait.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs.max(1)
    }
}

/// OpenAI's reset format: `250ms`, `1.5s`, `1m0s`.
pub fn format_reset(wait: Duration) -> String {
    let ms = wait.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let tenths = ms / 100;
        if tenths.is_multiple_of(10) {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn admits_n_then_refuses_until_the_oldest_leaves() {
        let mut window = RateWindow::default();
        for i in 0..3 {
            let d = window.admit(at(i * 1000), 3);
            assert!(d.admitted);
            assert_eq!(d.remaining, 2 - i as u32);
        }
        let refused = window.admit(at(10_000), 3);
        assert!(!refused.admitted);
        assert_eq!(
            refused.reset_after,
            at(50_000),
            "the admission at t=0 leaves at t=60 s"
        );
        assert_eq!(retry_after_secs(refused.reset_after), 50);
        assert!(!window.admit(at(59_999), 3).admitted);
        assert!(window.admit(at(60_000), 3).admitted);
    }

    #[test]
    fn rejected_requests_do_not_count() {
        let mut window = RateWindow::default();
        assert!(window.admit(at(0), 1).admitted);
        for t in (1..60_000).step_by(997) {
            assert!(!window.admit(at(t), 1).admitted);
        }
        assert!(
            window.admit(at(60_000), 1).admitted,
            "hammering did not move the slot"
        );
    }

    #[test]
    fn a_reverted_admission_frees_its_slot() {
        let mut window = RateWindow::default();
        assert!(window.admit(at(0), 1).admitted);
        window.revert(at(0));
        assert!(window.admit(at(1), 1).admitted);
        assert!(!window.admit(at(2), 1).admitted);
    }

    #[test]
    fn a_lowered_limit_waits_for_enough_admissions_to_leave() {
        let mut window = RateWindow::default();
        for t in [0, 10_000, 20_000] {
            assert!(window.admit(at(t), 10).admitted);
        }
        let refused = window.admit(at(30_000), 1);
        assert!(!refused.admitted);
        assert_eq!(
            refused.reset_after,
            at(50_000),
            "all three must leave; the last at t=80 s"
        );
    }

    #[test]
    fn reset_formats() {
        assert_eq!(format_reset(at(250)), "250ms");
        assert_eq!(format_reset(at(1500)), "1.5s");
        assert_eq!(format_reset(at(2000)), "2s");
        assert_eq!(format_reset(at(61_000)), "1m1s");
        assert_eq!(retry_after_secs(at(1)), 1);
        assert_eq!(retry_after_secs(at(0)), 1);
    }

    proptest! {
        /// SPEC §4 for N in {1, 10, 60}: a client polling at random intervals for 3 minutes
        /// never gets more than N admissions in any 60 s window.
        #[test]
        fn never_more_than_n_in_any_window(
            limit in prop::sample::select(vec![1u32, 10, 60]),
            gaps in prop::collection::vec(1u64..3000, 100..600),
        ) {
            let mut window = RateWindow::default();
            let mut now = 0u64;
            let mut admitted = Vec::new();
            for gap in gaps {
                now += gap;
                if window.admit(at(now), limit).admitted {
                    admitted.push(now);
                }
            }
            for (i, &start) in admitted.iter().enumerate() {
                let in_window = admitted[i..].iter().take_while(|&&t| t < start + 60_000).count();
                prop_assert!(in_window <= limit as usize, "{in_window} admitted in the window from {start}");
            }
        }
    }
}
