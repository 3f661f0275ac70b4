//! The wait between two tries of a background call to Redis that failed (the settler's
//! batches and renewals, the sweeper): doubling from `first` up to `longest`, back to
//! `first` after a success. Eleven lines do not need a crate.

use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    first: Duration,
    longest: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, longest: Duration) -> Backoff {
        Backoff {
            first,
            longest: longest.max(first),
            next: first,
        }
    }

    /// The wait after one more failure.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.longest);
        wait
    }

    pub fn succeeded(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_longest_and_restarts_after_a_success() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let waits: Vec<u64> = (0..5)
            .map(|_| backoff.failed().as_millis() as u64)
            .collect();
        assert_eq!(waits, [50, 100, 200, 300, 300]);
        backoff.succeeded();
        assert_eq!(backoff.failed(), Duration::from_millis(50));
    }
}
