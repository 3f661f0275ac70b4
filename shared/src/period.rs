//! Spend reset periods: calendar-aligned UTC boundaries (SPEC §5).
//!
//! Periods are computed from an instant, never by a timer, so a daemon that was down over
//! midnight still resets correctly the moment it looks. The boundary instant itself
//! (`00:00:00.000`) belongs to the new period.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpendReset {
    Daily,
    Weekly,
    Monthly,
}

impl SpendReset {
    pub const ALL: [SpendReset; 3] = [Self::Daily, Self::Weekly, Self::Monthly];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }

    /// The first instant of the period that contains `at`.
    pub fn period_start(self, at: Timestamp) -> Timestamp {
        let date = utc_date(at);
        let start = match self {
            Self::Daily => date,
            Self::Weekly => {
                let back = i64::from(date.weekday().to_monday_zero_offset());
                date.checked_sub(back.days()).unwrap_or(date)
            }
            Self::Monthly => date.first_of_month(),
        };
        // Only the first day jiff can represent (year -9999) starts before its first instant.
        midnight(start).unwrap_or(Timestamp::MIN)
    }

    /// The first instant of the next period: when spend counted at `at` resets.
    pub fn next_reset(self, at: Timestamp) -> Timestamp {
        let date = utc_date(at);
        let next = match self {
            Self::Daily => date.tomorrow().ok(),
            Self::Weekly => date.nth_weekday(1, Weekday::Monday).ok(),
            Self::Monthly => date.first_of_month().checked_add(1.month()).ok(),
        };
        // Only the last day jiff can represent (year 9999) has no successor.
        next.and_then(midnight).unwrap_or(Timestamp::MAX)
    }
}

impl fmt::Display for SpendReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SpendReset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("must be one of daily, weekly, monthly (got {s:?})"))
    }
}

fn utc_date(at: Timestamp) -> Date {
    TimeZone::UTC.to_datetime(at).date()
}

fn midnight(date: Date) -> Option<Timestamp> {
    TimeZone::UTC.to_timestamp(date.at(0, 0, 0, 0)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn check(reset: SpendReset, at: &str, start: &str, next: &str) {
        assert_eq!(
            reset.period_start(ts(at)),
            ts(start),
            "start of {reset} at {at}"
        );
        assert_eq!(
            reset.next_reset(ts(at)),
            ts(next),
            "next {reset} after {at}"
        );
    }

    #[test]
    fn calendar_boundaries() {
        use SpendReset::*;
        check(
            Daily,
            "2026-11-26T23:59:59.999Z",
            "2026-11-26T00:00:00Z",
            "2026-11-27T00:00:00Z",
        );
        check(
            Daily,
            "2026-11-27T00:00:00Z",
            "2026-11-27T00:00:00Z",
            "2026-11-28T00:00:00Z",
        );
        // 2026-11-26 is a Thursday; 2026-11-30 a Monday.
        check(
            Weekly,
            "2026-11-26T12:00:00Z",
            "2026-11-23T00:00:00Z",
            "2026-11-30T00:00:00Z",
        );
        check(
            Weekly,
            "2026-11-30T00:00:00Z",
            "2026-11-30T00:00:00Z",
            "2026-12-07T00:00:00Z",
        );
        check(
            Weekly,
            "2026-11-29T23:59:59Z",
            "2026-11-23T00:00:00Z",
            "2026-11-30T00:00:00Z",
        );
        check(
            Monthly,
            "2026-12-31T23:00:00Z",
            "2026-12-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
        );
        check(
            Monthly,
            "2028-02-29T10:00:00Z",
            "2028-02-01T00:00:00Z",
            "2028-03-01T00:00:00Z",
        );
        check(
            Monthly,
            "2027-01-31T10:00:00Z",
            "2027-01-01T00:00:00Z",
            "2027-02-01T00:00:00Z",
        );
        // Offsets other than Z name the same instant.
        check(
            Daily,
            "2026-11-27T01:30:00+02:00",
            "2026-11-26T00:00:00Z",
            "2026-11-27T00:00:00Z",
        );
    }

    /// Found by fuzzing (`fuzz/corpus/period/seed-epoch`): on the first day jiff represents,
    /// that day's midnight is not representable, and the period started at the end of time.
    #[test]
    fn the_first_day_s_period_starts_no_later_than_the_instant() {
        for reset in SpendReset::ALL {
            let at = Timestamp::MIN;
            assert!(reset.period_start(at) <= at, "{reset}");
            assert!(reset.next_reset(at) > at, "{reset}");
        }
    }

    proptest! {
        #[test]
        fn every_instant_lies_in_its_period(
            secs in 0i64..4_102_444_800, // 1970 to 2100
            reset in prop::sample::select(SpendReset::ALL.to_vec()),
        ) {
            let at = Timestamp::from_second(secs).expect("in range");
            let start = reset.period_start(at);
            let next = reset.next_reset(at);
            prop_assert!(start <= at && at < next);
            // The next period starts exactly where this one ends.
            prop_assert_eq!(reset.period_start(next), next);
            let start_z = TimeZone::UTC.to_datetime(start);
            prop_assert_eq!(start_z.time(), jiff::civil::Time::midnight());
            match reset {
                SpendReset::Daily => {}
                SpendReset::Weekly => prop_assert_eq!(start_z.weekday(), Weekday::Monday),
                SpendReset::Monthly => prop_assert_eq!(start_z.day(), 1),
            }
        }
    }
}
