//! The exact rolling-window rate limit: at most N admitted requests in any 60 seconds.
//!
//! Hand-written rather than `governor`: GCRA admits a burst of N *and* refills one slot every
//! 60/N s, so a client that hammers gets up to 2N−1 in a rolling minute (measured in
//! `research/reliability.md` §0.1), which breaks SPEC §4. A sliding log keeps the admissions
//! of the last 60 s: a request is admitted when fewer than N fall in them. Rejected requests
//! are not recorded, so hammering does not push the next slot further out.
//!
//! The log is kept as runs of admissions per millisecond, because a list of instants costs
//! 16 B per admission: a key allowed a million requests a minute held megabytes. An
//! admission's instant is rounded *up* to its millisecond, so it leaves the window no earlier
//! than it really would: the limit is never exceeded, and a slot frees at most 1 ms late.
//! Memory is then bounded by the window's 60,000 milliseconds (8 B each, about 480 KB)
//! whatever N, and is usually a few runs; a key with nothing in its window holds no log at
//! all, which matters with 100,000 mostly idle keys.

use std::collections::VecDeque;
use std::time::Duration;

pub const WINDOW: Duration = Duration::from_secs(60);

/// The admissions of one key inside the current window.
#[derive(Debug, Default)]
pub struct RateWindow {
    /// `None` while the window is empty.
    log: Option<Box<Log>>,
}

#[derive(Debug)]
struct Log {
    /// The monotonic millisecond that run offsets count from: at most the oldest run's.
    base_ms: u64,
    /// The sum of the runs' counts: admissions in the window.
    total: u32,
    /// Oldest first, one per millisecond, offsets strictly increasing.
    runs: VecDeque<Run>,
}

#[derive(Clone, Copy, Debug)]
struct Run {
    offset_ms: u32,
    count: u32,
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
        let admitted = self.used() < limit;
        if admitted {
            let ms = ceil_ms(now);
            self.log
                .get_or_insert_with(|| Box::new(Log::new(ms)))
                .record(ms);
        }
        self.decision(now, limit, admitted)
    }

    /// Takes back the admission made at `at`: the request was refused by a later check, and
    /// refused requests do not count (SPEC §4).
    pub fn revert(&mut self, at: Duration) {
        if let Some(log) = &mut self.log {
            log.remove(ceil_ms(at));
            if log.total == 0 {
                self.log = None;
            }
        }
    }

    /// The admissions still in the window at `now`, oldest first, as (age in milliseconds,
    /// count): what a restart carries over (`restore`).
    pub fn snapshot(&mut self, now: Duration) -> Vec<(u64, u32)> {
        self.expire(now);
        let Some(log) = &self.log else {
            return Vec::new();
        };
        let now_ms = ceil_ms(now);
        log.runs
            .iter()
            .map(|run| (now_ms.saturating_sub(log.ms(run)), run.count))
            .collect()
    }

    /// Puts back the admissions of a `snapshot` taken `since` before `now` (on another
    /// process's clock): those still inside the window count again, so a restart does not
    /// open a fresh window (SPEC §4: any rolling 60 s). An admission older than this clock's
    /// start cannot be placed and is left out.
    pub fn restore(&mut self, now: Duration, snapshot: &[(u64, u32)], since: Duration) {
        let now_ms = ceil_ms(now);
        let since_ms = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
        let window_ms = u64::try_from(WINDOW.as_millis()).unwrap_or(u64::MAX);
        for &(age_ms, count) in snapshot {
            let age_ms = age_ms.saturating_add(since_ms);
            if age_ms >= window_ms || age_ms > now_ms || count == 0 {
                continue;
            }
            let ms = now_ms - age_ms;
            self.log
                .get_or_insert_with(|| Box::new(Log::new(ms)))
                .record_many(ms, count);
        }
    }

    /// The current headroom without admitting anything (for self-service).
    pub fn peek(&mut self, now: Duration, limit: u32) -> RateDecision {
        self.expire(now);
        let admitted = self.used() < limit;
        self.decision(now, limit, admitted)
    }

    fn used(&self) -> u32 {
        self.log.as_ref().map_or(0, |log| log.total)
    }

    fn expire(&mut self, now: Duration) {
        if let Some(log) = &mut self.log {
            log.expire(now);
            if log.total == 0 {
                self.log = None;
            }
        }
    }

    fn decision(&self, now: Duration, limit: u32, admitted: bool) -> RateDecision {
        let used = self.used();
        // A lowered limit can leave more admissions in the window than it allows: the slot
        // frees when enough of them have left, i.e. the (used - limit + 1)-th oldest.
        let freeing = if admitted {
            1
        } else {
            used.saturating_add(1).saturating_sub(limit.max(1)).max(1)
        };
        let reset_after = self
            .log
            .as_ref()
            .and_then(|log| log.nth_oldest(freeing))
            .map_or(Duration::ZERO, |at| (at + WINDOW).saturating_sub(now));
        RateDecision {
            admitted,
            limit,
            remaining: limit.saturating_sub(used),
            reset_after,
            at: now,
        }
    }
}

impl Log {
    fn new(base_ms: u64) -> Log {
        Log {
            base_ms,
            total: 0,
            runs: VecDeque::new(),
        }
    }

    fn record(&mut self, ms: u64) {
        self.record_many(ms, 1);
    }

    fn record_many(&mut self, ms: u64, count: u32) {
        let offset = self.offset(ms);
        match self.runs.back_mut() {
            Some(last) if last.offset_ms == offset => last.count += count,
            Some(last) if last.offset_ms > offset => self.insert_earlier(offset, count),
            _ => self.runs.push_back(Run {
                offset_ms: offset,
                count,
            }),
        }
        self.total = self.total.saturating_add(count);
    }

    /// An admission older than the newest run: only a clock that stepped back does this.
    fn insert_earlier(&mut self, offset_ms: u32, count: u32) {
        let i = self.runs.partition_point(|run| run.offset_ms < offset_ms);
        match self.runs.get_mut(i) {
            Some(run) if run.offset_ms == offset_ms => run.count += count,
            _ => self.runs.insert(i, Run { offset_ms, count }),
        }
    }

    fn remove(&mut self, ms: u64) {
        let Some(offset_ms) = ms
            .checked_sub(self.base_ms)
            .and_then(|o| u32::try_from(o).ok())
        else {
            return;
        };
        let Ok(i) = self
            .runs
            .binary_search_by_key(&offset_ms, |run| run.offset_ms)
        else {
            return;
        };
        self.total -= 1;
        if self.runs[i].count == 1 {
            self.runs.remove(i);
        } else {
            self.runs[i].count -= 1;
        }
    }

    fn expire(&mut self, now: Duration) {
        // An admission at t counts in (t - 60 s, t]; at exactly t + 60 s it has left.
        while let Some(run) = self.runs.front() {
            if self.instant(run) + WINDOW > now {
                break;
            }
            self.total -= run.count;
            self.runs.pop_front();
        }
    }

    /// The instant of the `n`-th oldest admission (from 1).
    fn nth_oldest(&self, n: u32) -> Option<Duration> {
        let mut seen = 0u32;
        self.runs.iter().find_map(|run| {
            seen += run.count;
            (seen >= n).then(|| self.instant(run))
        })
    }

    fn instant(&self, run: &Run) -> Duration {
        Duration::from_millis(self.ms(run))
    }

    /// `ms` as an offset from the base, moving the base when `ms` is too far after it (a
    /// window that never emptied for 49 days) or before it (a clock that stepped back).
    fn offset(&mut self, ms: u64) -> u32 {
        if ms < self.base_ms {
            self.rebase(ms);
        } else if ms - self.base_ms > u64::from(u32::MAX) {
            let oldest = self.runs.front().map_or(ms, |run| self.ms(run));
            self.rebase(oldest);
        }
        // Saturates only if the clock stepped back by more than 49 days; the admission then
        // counts later than it happened, which is never too lenient.
        u32::try_from(ms.saturating_sub(self.base_ms)).unwrap_or(u32::MAX)
    }

    /// Moves the base to `base_ms`, or as near to it as keeps every run's offset exact.
    fn rebase(&mut self, base_ms: u64) {
        let newest = self.runs.back().map_or(base_ms, |run| self.ms(run));
        let oldest = self.runs.front().map_or(base_ms, |run| self.ms(run));
        let base_ms = base_ms
            .max(newest.saturating_sub(u64::from(u32::MAX)))
            .min(oldest);
        let old = self.base_ms;
        for run in &mut self.runs {
            let ms = old + u64::from(run.offset_ms);
            run.offset_ms = u32::try_from(ms - base_ms).unwrap_or(u32::MAX);
        }
        self.base_ms = base_ms;
    }

    fn ms(&self, run: &Run) -> u64 {
        self.base_ms + u64::from(run.offset_ms)
    }
}

/// `at` rounded up to a whole millisecond.
fn ceil_ms(at: Duration) -> u64 {
    u64::try_from(at.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
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

/// OpenAI's reset format: `250ms`, `1.5s`, `1m0s`. Written into a buffer of its own (it is
/// a header of every rate-limited response: no `format!`, no allocation).
pub fn format_reset(wait: Duration) -> ResetText {
    let ms = wait.as_millis();
    let mut text = ResetText::default();
    if ms < 1000 {
        text.number(ms).push(b"ms");
    } else if ms < 60_000 {
        let tenths = ms / 100;
        text.number(tenths / 10);
        if !tenths.is_multiple_of(10) {
            text.push(b".").number(tenths % 10);
        }
        text.push(b"s");
    } else {
        text.number(ms / 60_000)
            .push(b"m")
            .number((ms % 60_000) / 1000)
            .push(b"s");
    }
    text
}

/// The text of [`format_reset`]: at most two numbers of 39 digits and three letters.
#[derive(Clone, Copy)]
pub struct ResetText {
    bytes: [u8; 96],
    len: usize,
}

impl Default for ResetText {
    fn default() -> Self {
        ResetText {
            bytes: [0; 96],
            len: 0,
        }
    }
}

impl ResetText {
    fn push(&mut self, text: &[u8]) -> &mut Self {
        self.bytes[self.len..self.len + text.len()].copy_from_slice(text);
        self.len += text.len();
        self
    }

    fn number(&mut self, n: u128) -> &mut Self {
        self.push(itoa::Buffer::new().format(n).as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and letters are ever pushed.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
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
    fn a_snapshot_restored_on_another_clock_keeps_the_window() {
        let mut before = RateWindow::default();
        for t in [1_000, 1_000, 20_000] {
            assert!(before.admit(at(t), 3).admitted);
        }
        let snapshot = before.snapshot(at(30_000));
        assert_eq!(snapshot, [(29_000, 2), (10_000, 1)]);
        // Restored 5 s later on a clock that reads 70 s: ages 34 s and 15 s.
        let mut after = RateWindow::default();
        after.restore(at(70_000), &snapshot, Duration::from_secs(5));
        let refused = after.admit(at(70_000), 3);
        assert!(
            !refused.admitted,
            "three admissions are still in the window"
        );
        assert_eq!(
            refused.reset_after,
            at(26_000),
            "the two oldest leave at 96 s"
        );
        assert!(after.admit(at(96_000), 3).admitted);
        // Too old to count, or older than the new clock: left out.
        let mut late = RateWindow::default();
        late.restore(at(70_000), &snapshot, Duration::from_secs(40));
        assert_eq!(late.snapshot(at(70_000)), [(50_000, 1)]);
        let mut young_clock = RateWindow::default();
        young_clock.restore(at(12_000), &snapshot, Duration::ZERO);
        assert_eq!(young_clock.snapshot(at(12_000)), [(10_000, 1)]);
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
        assert_eq!(format_reset(at(250)).as_str(), "250ms");
        assert_eq!(format_reset(at(1500)).as_str(), "1.5s");
        assert_eq!(format_reset(at(2000)).as_str(), "2s");
        assert_eq!(format_reset(at(61_000)).as_str(), "1m1s");
        assert_eq!(format_reset(at(0)).as_str(), "0ms");
        assert_eq!(format_reset(at(59_999)).as_str(), "59.9s");
        assert_eq!(
            format_reset(Duration::MAX).as_str(),
            "307445734561825860m15s"
        );
        assert_eq!(retry_after_secs(at(1)), 1);
        assert_eq!(retry_after_secs(at(0)), 1);
    }

    #[test]
    fn a_sub_millisecond_admission_leaves_at_its_next_millisecond() {
        let mut window = RateWindow::default();
        let t = Duration::from_micros(400);
        assert!(window.admit(t, 1).admitted);
        let refused = window.admit(t + WINDOW, 1);
        assert!(!refused.admitted, "never early: the slot frees at 60.001 s");
        assert_eq!(refused.reset_after, Duration::from_micros(600));
        assert!(window.admit(at(60_001), 1).admitted);
    }

    #[test]
    fn a_sub_millisecond_admission_reverts() {
        let mut window = RateWindow::default();
        let first = window.admit(Duration::from_micros(100), 2);
        let second = window.admit(Duration::from_micros(700), 2);
        assert!(first.admitted && second.admitted);
        window.revert(second.at);
        assert_eq!(window.peek(Duration::from_micros(800), 2).remaining, 1);
        window.revert(first.at);
        assert!(window.log.is_none(), "an empty window holds nothing");
    }

    #[test]
    fn admissions_in_one_millisecond_share_a_run() {
        let mut window = RateWindow::default();
        for i in 0..10_000u64 {
            let now = Duration::from_millis(i / 100) + Duration::from_nanos(1 + i % 100);
            assert!(window.admit(now, 1_000_000).admitted);
        }
        let log = window.log.as_ref().expect("log");
        assert_eq!((log.total, log.runs.len()), (10_000, 100));
        assert!(window.peek(at(60_100), 1_000_000).remaining == 1_000_000);
        assert!(
            window.log.is_none(),
            "the window emptied and let its log go"
        );
    }

    #[test]
    fn a_window_that_never_empties_outlives_the_offset_range() {
        let mut window = RateWindow::default();
        let mut now = 0u64;
        // One admission every 30 s for 60 days: offsets from the first would overflow u32 ms.
        while now < 60 * 86_400_000 {
            let decision = window.admit(at(now), 2);
            assert!(decision.admitted, "at {now} ms");
            if now > 0 {
                assert_eq!(decision.remaining, 0, "two in the window at {now} ms");
            }
            now += 30_000;
        }
        assert!(!window.admit(at(now - 29_999), 2).admitted);
    }

    #[test]
    fn a_clock_that_steps_back_counts_the_admission_when_it_happened() {
        let mut window = RateWindow::default();
        assert!(window.admit(at(10_000), 2).admitted);
        let early = window.admit(at(5_000), 2);
        assert!(early.admitted);
        assert!(!window.admit(at(64_999), 2).admitted);
        window.revert(early.at);
        assert!(
            window.admit(at(64_999), 2).admitted,
            "the reverted slot is free"
        );
        assert!(!window.admit(at(69_999), 2).admitted);
        assert!(window.admit(at(70_000), 2).admitted);
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

        /// The same with sub-millisecond instants and some admissions reverted (refused by a
        /// later check): the admissions that stand never exceed N in any 60 s window.
        #[test]
        fn never_more_than_n_with_nanosecond_instants_and_reverts(
            limit in prop::sample::select(vec![1u32, 3, 10]),
            steps in prop::collection::vec(
                (prop_oneof![1u64..2_000_000, 1_000_000u64..3_000_000_000], prop::bool::weighted(0.2)),
                50..400,
            ),
        ) {
            let mut window = RateWindow::default();
            let mut now = Duration::ZERO;
            let mut standing: Vec<Duration> = Vec::new();
            for (gap_ns, revert) in steps {
                now += Duration::from_nanos(gap_ns);
                let decision = window.admit(now, limit);
                if !decision.admitted {
                    continue;
                }
                if revert {
                    window.revert(decision.at);
                } else {
                    standing.push(now);
                }
            }
            for (i, &start) in standing.iter().enumerate() {
                let in_window = standing[i..].iter().take_while(|&&t| t < start + WINDOW).count();
                prop_assert!(in_window <= limit as usize, "{in_window} admitted in the window from {start:?}");
            }
        }
    }
}
