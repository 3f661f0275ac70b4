//! Money as integer nano-dollars.
//!
//! Spend is accumulated across millions of requests, so floating point would drift; a
//! nano-dollar (1e-9 USD) is fine enough for per-token prices like $0.0375 per million
//! tokens to be exact per million. On the wire, amounts are JSON numbers in dollars
//! (`"spend_limit_usd": 12.5`): they are parsed from their decimal text, never through
//! arithmetic on a float, and printed with at most nine decimals, which `f64` renders exactly
//! for any amount under about four million dollars (2^22, where floats are still closer together
//! than a nano-dollar).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of US dollars in units of 1e-9.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanodollars(pub u64);

pub const NANOS_PER_DOLLAR: u64 = 1_000_000_000;

/// Why a dollar amount did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("must be a plain decimal number of dollars, like 50 or 12.50")]
    Syntax,
    #[error("has more than nine decimal places")]
    TooPrecise,
    #[error("is too large")]
    TooLarge,
}

impl Nanodollars {
    pub const ZERO: Self = Self(0);

    pub fn from_dollars(dollars: u64) -> Option<Self> {
        dollars.checked_mul(NANOS_PER_DOLLAR).map(Self)
    }

    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    pub fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }

    /// Dollars as a float, for display and JSON only; never accumulate these.
    pub fn as_dollars_f64(self) -> f64 {
        // Parsing the exact decimal text rounds once, correctly, to the nearest float.
        let text = format!(
            "{}.{:09}",
            self.0 / NANOS_PER_DOLLAR,
            self.0 % NANOS_PER_DOLLAR
        );
        text.parse().unwrap_or(f64::MAX)
    }
}

impl FromStr for Nanodollars {
    type Err = MoneyError;

    /// Parses `50`, `12.5`, `0.000000001`, optionally with a leading `$`, and the exponent
    /// form JSON writers use for small and large numbers (`2.1e-6`, `1E2`): always from the
    /// decimal text, exactly, never through a float.
    fn from_str(text: &str) -> Result<Self, MoneyError> {
        let text = text.trim();
        let text = text.strip_prefix('$').unwrap_or(text);
        let (mantissa, exponent) = match text.find(['e', 'E']) {
            Some(at) => (&text[..at], exponent(&text[at + 1..])?),
            None => (text, 0),
        };
        let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(MoneyError::Syntax);
        }
        if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MoneyError::Syntax);
        }
        // The amount is the digits of whole and frac times 10^(exponent - frac's length)
        // dollars: in nano-dollars, times 10^scale.
        let scale = 9 + exponent - i64::try_from(frac.len()).map_err(|_| MoneyError::TooPrecise)?;
        let digits = format!("{whole}{frac}");
        let digits = digits.trim_start_matches('0');
        let digits = if scale < 0 {
            let dropped = usize::try_from(-scale).map_err(|_| MoneyError::TooPrecise)?;
            let kept = digits.len().saturating_sub(dropped);
            if !digits[kept..].bytes().all(|b| b == b'0') {
                return Err(MoneyError::TooPrecise);
            }
            &digits[..kept]
        } else {
            digits
        };
        if digits.is_empty() {
            return Ok(Self::ZERO);
        }
        let value: u64 = digits.parse().map_err(|_| MoneyError::TooLarge)?;
        let scale = u32::try_from(scale.max(0)).map_err(|_| MoneyError::TooLarge)?;
        10u64
            .checked_pow(scale)
            .and_then(|factor| value.checked_mul(factor))
            .map(Self)
            .ok_or(MoneyError::TooLarge)
    }
}

/// The exponent after `e`: an optional sign and at most four digits.
fn exponent(text: &str) -> Result<i64, MoneyError> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MoneyError::Syntax);
    }
    text.parse().map_err(|_| MoneyError::Syntax)
}

impl fmt::Display for Nanodollars {
    /// `$12.50`, `$0.000375`: at least cents, more digits only when they are not zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / NANOS_PER_DOLLAR;
        let frac = format!("{:09}", self.0 % NANOS_PER_DOLLAR);
        let trimmed = frac.trim_end_matches('0');
        let shown = if trimmed.len() < 2 {
            &frac[..2]
        } else {
            trimmed
        };
        write!(f, "${whole}.{shown}")
    }
}

impl Serialize for Nanodollars {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_dollars_f64())
    }
}

impl<'de> Deserialize<'de> for Nanodollars {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        parse_json(&value).map_err(serde::de::Error::custom)
    }
}

/// A dollar amount from a JSON number or string, parsed from its decimal text.
pub fn parse_json(value: &serde_json::Value) -> Result<Nanodollars, MoneyError> {
    match value {
        // serde_json prints a float as the shortest text that reads back to it, which is the
        // text the client wrote for any amount with up to 15 significant digits.
        // Small and large amounts come as `2.1e-6` or `1e20`: read from that text too.
        serde_json::Value::Number(n) if !n.to_string().starts_with('-') => n.to_string().parse(),
        serde_json::Value::String(s) => s.parse(),
        _ => Err(MoneyError::Syntax),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(text: &str, expected: Result<u64, MoneyError>) {
        assert_eq!(text.parse::<Nanodollars>().map(|n| n.0), expected, "{text}");
    }

    #[test]
    fn parses_decimal_text_exactly() {
        check("50", Ok(50_000_000_000));
        check("12.5", Ok(12_500_000_000));
        check("$0.10", Ok(100_000_000));
        check(".5", Ok(500_000_000));
        check("0.000000001", Ok(1));
        check("0.0000000001", Err(MoneyError::TooPrecise));
        check("-1", Err(MoneyError::Syntax));
        check("1e3", Ok(1_000_000_000_000));
        check("1E2", Ok(100_000_000_000));
        check("2.1e-6", Ok(2_100));
        check("1e-9", Ok(1));
        check("1.5e-9", Err(MoneyError::TooPrecise));
        check("100e-11", Ok(1));
        check("120e-11", Err(MoneyError::TooPrecise));
        check("0.0e-20", Ok(0));
        check("1e+2", Ok(100_000_000_000));
        check("1e", Err(MoneyError::Syntax));
        check("1e-", Err(MoneyError::Syntax));
        check("1e99999", Err(MoneyError::Syntax));
        check("1e400", Err(MoneyError::TooLarge));
        check("e5", Err(MoneyError::Syntax));
        check("-1e2", Err(MoneyError::Syntax));
        check("", Err(MoneyError::Syntax));
        check(".", Err(MoneyError::Syntax));
        check("99999999999999999999", Err(MoneyError::TooLarge));
    }

    #[test]
    fn displays_cents_at_least() {
        assert_eq!(Nanodollars(50_000_000_000).to_string(), "$50.00");
        assert_eq!(Nanodollars(12_500_000_000).to_string(), "$12.50");
        assert_eq!(Nanodollars(375_000).to_string(), "$0.000375");
        assert_eq!(Nanodollars(0).to_string(), "$0.00");
    }

    #[test]
    fn json_numbers_and_strings_parse_exactly() {
        let value: serde_json::Value = serde_json::from_str("0.1").expect("json");
        assert_eq!(parse_json(&value), Ok(Nanodollars(100_000_000)));
        let value: serde_json::Value = serde_json::from_str("\"7.25\"").expect("json");
        assert_eq!(parse_json(&value), Ok(Nanodollars(7_250_000_000)));
        let value: serde_json::Value = serde_json::from_str("-3").expect("json");
        assert_eq!(parse_json(&value), Err(MoneyError::Syntax));
        // What serde_json writes for a small amount reads back.
        for nanos in [1, 9, 2_100, 10_000, 99_999] {
            let json = serde_json::to_string(&Nanodollars(nanos)).expect("serialise");
            let back: Nanodollars = serde_json::from_str(&json).expect(&json);
            assert_eq!(back, Nanodollars(nanos), "{json}");
        }
    }

    proptest! {
        #[test]
        fn json_round_trip_is_exact(nanos in prop_oneof![0u64..100_000, 0u64..4_000_000_000_000_000]) {
            let amount = Nanodollars(nanos);
            let json = serde_json::to_string(&amount).expect("serialise");
            let back: Nanodollars = serde_json::from_str(&json).expect("parse");
            prop_assert_eq!(back, amount);
        }

        #[test]
        fn display_parses_back(nanos in any::<u64>()) {
            let amount = Nanodollars(nanos);
            prop_assert_eq!(amount.to_string().parse::<Nanodollars>(), Ok(amount));
        }
    }
}
