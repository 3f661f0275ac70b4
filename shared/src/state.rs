//! Lifecycle states (SPEC §2) as a pure function of a key's record and an instant.
//!
//! State is never stored: storing it would need a job to flip `active` to `expired` at the
//! right moment, and a job can be late. Computing it from the record on every read cannot be.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::money::Nanodollars;
use crate::period::SpendReset;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Active,
    Exhausted,
    Expired,
    Revoked,
}

impl KeyState {
    pub const ALL: [KeyState; 4] = [Self::Active, Self::Exhausted, Self::Expired, Self::Revoked];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Exhausted => "exhausted",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown state {s:?} (expected active, exhausted, expired or revoked)")
            })
    }
}

/// The parts of a key record that decide its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    /// When the key is (or was) revoked. A future instant is a rotation's grace period.
    pub revoked_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub spend: SpendSnapshot,
}

/// Spend against a limit, as last recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpendSnapshot {
    pub limit: Option<Nanodollars>,
    pub reset: Option<SpendReset>,
    /// Spend recorded in the period that ends at `period_resets_at`.
    pub period: Nanodollars,
    /// When `period` stops counting; `None` without a reset period.
    pub period_resets_at: Option<Timestamp>,
    pub total: Nanodollars,
}

impl SpendSnapshot {
    /// Spend that counts against the limit at `now`: lifetime spend without a reset period,
    /// otherwise this period's, which is zero once the recorded period has ended.
    pub fn counted_at(&self, now: Timestamp) -> Nanodollars {
        match (self.reset, self.period_resets_at) {
            (None, _) => self.total,
            (Some(_), Some(resets_at)) if now < resets_at => self.period,
            (Some(_), _) => Nanodollars::ZERO,
        }
    }

    /// When the spend counted at `now` resets; `None` for a lifetime cap.
    pub fn resets_at(&self, now: Timestamp) -> Option<Timestamp> {
        self.reset.map(|reset| reset.next_reset(now))
    }

    pub fn is_exhausted_at(&self, now: Timestamp) -> bool {
        self.limit
            .is_some_and(|limit| self.counted_at(now) >= limit)
    }
}

/// SPEC §2: revoked > expired > exhausted > active.
pub fn state_at(key: &Lifecycle, now: Timestamp) -> KeyState {
    if key.revoked_at.is_some_and(|at| at <= now) {
        KeyState::Revoked
    } else if key.expires_at.is_some_and(|at| at <= now) {
        KeyState::Expired
    } else if key.spend.is_exhausted_at(now) {
        KeyState::Exhausted
    } else {
        KeyState::Active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    const NOW: &str = "2026-11-26T12:00:00Z";

    fn key(revoked: bool, expired: bool, exhausted: bool) -> Lifecycle {
        let past = Some(ts("2026-11-26T11:00:00Z"));
        Lifecycle {
            revoked_at: if revoked { past } else { None },
            expires_at: if expired {
                past
            } else {
                Some(ts("2027-01-01T00:00:00Z"))
            },
            spend: SpendSnapshot {
                limit: Some(Nanodollars(100)),
                reset: Some(SpendReset::Daily),
                period: Nanodollars(if exhausted { 100 } else { 99 }),
                period_resets_at: Some(ts("2026-11-27T00:00:00Z")),
                total: Nanodollars(500),
            },
        }
    }

    #[test]
    fn precedence_over_every_combination() {
        for bits in 0..8u8 {
            let (revoked, expired, exhausted) = (bits & 4 != 0, bits & 2 != 0, bits & 1 != 0);
            let expected = if revoked {
                KeyState::Revoked
            } else if expired {
                KeyState::Expired
            } else if exhausted {
                KeyState::Exhausted
            } else {
                KeyState::Active
            };
            assert_eq!(
                state_at(&key(revoked, expired, exhausted), ts(NOW)),
                expected,
                "{bits:03b}"
            );
        }
    }

    #[test]
    fn expiry_is_exact_to_the_instant() {
        let mut k = key(false, false, false);
        k.expires_at = Some(ts(NOW));
        assert_eq!(
            state_at(&k, ts("2026-11-26T11:59:59.999Z")),
            KeyState::Active
        );
        assert_eq!(state_at(&k, ts(NOW)), KeyState::Expired);
    }

    #[test]
    fn a_future_revocation_is_a_grace_period() {
        let mut k = key(false, false, false);
        k.revoked_at = Some(ts("2026-11-26T13:00:00Z"));
        assert_eq!(state_at(&k, ts(NOW)), KeyState::Active);
        assert_eq!(state_at(&k, ts("2026-11-26T13:00:00Z")), KeyState::Revoked);
    }

    #[test]
    fn exhausted_returns_to_active_at_the_reset() {
        let k = key(false, false, true);
        assert_eq!(
            state_at(&k, ts("2026-11-26T23:59:59Z")),
            KeyState::Exhausted
        );
        assert_eq!(state_at(&k, ts("2026-11-27T00:00:00Z")), KeyState::Active);
    }

    #[test]
    fn without_a_reset_the_cap_is_for_life() {
        let mut k = key(false, false, false);
        k.spend.reset = None;
        k.spend.period_resets_at = None;
        // Total spend (500) is over the limit (100) forever.
        assert_eq!(
            state_at(&k, ts("2026-12-31T00:00:00Z")),
            KeyState::Exhausted
        );
    }
}
