//! The one source of wall-clock time.
//!
//! Expiry, spend periods and audit timestamps all depend on "now"; passing a `Clock` instead
//! of calling the system clock lets tests cross midnight, a Monday or a month end without
//! sleeping. **Invariant:** nothing outside this file reads the system clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time: expiry, spend periods, audit and usage timestamps.
    fn now(&self) -> Timestamp;

    /// Time since the clock was made, never going backwards: rate-limit windows, so that a
    /// wall-clock step (NTP) can neither open nor close a window.
    fn monotonic(&self) -> Duration;
}

/// The real clock.
#[derive(Clone, Copy, Debug)]
pub struct SystemClock {
    started: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn monotonic(&self) -> Duration {
        self.started.elapsed() + MONOTONIC_START
    }
}

/// Where the real clock's monotonic time starts: an hour, not zero, so that what happened in
/// the minute before a restart (the rate windows a shutdown saved) has a place on the new
/// process's clock.
const MONOTONIC_START: Duration = Duration::from_secs(3600);

/// A clock that moves only when told to. Its monotonic time is the distance from `start`;
/// tests move it forward only.
#[derive(Debug)]
pub struct ManualClock {
    start: Timestamp,
    // Std mutex: held for a copy, never across `.await`.
    now: Mutex<Timestamp>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self {
            start,
            now: Mutex::new(start),
        }
    }

    pub fn set(&self, to: Timestamp) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }

    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now = now.checked_add(by).unwrap_or(Timestamp::MAX);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn monotonic(&self) -> Duration {
        let since = self.now().duration_since(self.start);
        Duration::try_from(since).unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start: Timestamp = "2026-11-30T23:59:59Z".parse().expect("ts");
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(SignedDuration::from_secs(1));
        assert_eq!(
            clock.now(),
            "2026-12-01T00:00:00Z".parse::<Timestamp>().expect("ts")
        );
    }
}
