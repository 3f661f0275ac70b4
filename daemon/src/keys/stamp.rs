//! `Stamp`: an optional instant in 12 bytes, for state held once per key.
//!
//! jiff's `Option<Timestamp>` takes 24 bytes, and a key's entry and ledger hold six of them:
//! 72 of about 400 bytes per key, with 100,000 keys in memory. Whole seconds split in two
//! words and the nanoseconds in a third keep the same precision and range in half the room,
//! at 4-byte alignment so that they pack with the fields around them.

use jiff::Timestamp;

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    seconds_high: u32,
    seconds_low: u32,
    /// `Timestamp`'s signed nanoseconds as bits; `NONE_NANOS` for none.
    nanos: u32,
}

/// Not a nanosecond count that a `Timestamp` has (they are within ±999,999,999).
const NONE_NANOS: u32 = i32::MIN as u32;

impl Stamp {
    pub const NONE: Stamp = Stamp {
        seconds_high: 0,
        seconds_low: 0,
        nanos: NONE_NANOS,
    };

    pub fn new(at: Option<Timestamp>) -> Stamp {
        let Some(at) = at else {
            return Stamp::NONE;
        };
        let seconds = at.as_second();
        Stamp {
            seconds_high: (seconds >> 32) as u32,
            seconds_low: seconds as u32,
            nanos: at.subsec_nanosecond() as u32,
        }
    }

    pub fn get(self) -> Option<Timestamp> {
        if self.nanos == NONE_NANOS {
            return None;
        }
        let seconds = (i64::from(self.seconds_high as i32) << 32) | i64::from(self.seconds_low);
        Timestamp::new(seconds, self.nanos as i32).ok()
    }

    /// For instants that are always set (stored from a `Timestamp`, never from `None`).
    pub fn at(self) -> Timestamp {
        self.get().unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

/// Ordered as `Option<Timestamp>` is: none first, then by instant.
impl Ord for Stamp {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

impl PartialOrd for Stamp {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Stamp {
    fn order(self) -> (bool, i32, u32, i32) {
        (
            self.nanos != NONE_NANOS,
            self.seconds_high as i32,
            self.seconds_low,
            self.nanos as i32,
        )
    }
}

impl From<Timestamp> for Stamp {
    fn from(at: Timestamp) -> Stamp {
        Stamp::new(Some(at))
    }
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn none_and_the_extremes_round_trip() {
        assert_eq!(Stamp::NONE.get(), None);
        assert_eq!(std::mem::size_of::<Stamp>(), 12);
        for at in [
            Timestamp::MIN,
            Timestamp::MAX,
            Timestamp::UNIX_EPOCH,
            "1969-12-31T23:59:59.999999999Z".parse().expect("ts"),
            "2026-11-26T12:00:00.123456789Z".parse().expect("ts"),
        ] {
            assert_eq!(Stamp::from(at).get(), Some(at), "{at}");
            assert_eq!(Stamp::from(at).at(), at);
        }
    }

    #[test]
    fn orders_as_the_instants_do() {
        let at = |s: &str| Stamp::from(s.parse::<Timestamp>().expect("ts"));
        let mut stamps = [
            at("2026-11-26T12:00:00.5Z"),
            at("1969-12-31T23:59:59.5Z"),
            Stamp::NONE,
            at("2026-11-26T12:00:00Z"),
            at("1960-01-01T00:00:00Z"),
        ];
        stamps.sort();
        let sorted: Vec<_> = stamps.iter().map(|s| s.get()).collect();
        let mut expected = sorted.clone();
        expected.sort();
        assert_eq!(sorted, expected);
        assert_eq!(sorted[0], None);
    }

    proptest! {
        #[test]
        fn every_instant_round_trips(
            seconds in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            nanos in 0i32..1_000_000_000,
        ) {
            let at = Timestamp::new(seconds, 0).expect("in range");
            let at = at.checked_add(jiff::SignedDuration::new(0, nanos)).unwrap_or(at);
            prop_assert_eq!(Stamp::from(at).get(), Some(at));
        }
    }
}
