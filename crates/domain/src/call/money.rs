//! Prices, as Vonage writes them, held exactly.

use std::fmt;

/// An amount of money as Vonage writes it (`"0.00052500"` or `0.000525`), held exactly in units
/// of 10^-10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Money(i128);

const MONEY_SCALE_DIGITS: usize = 10;

impl Money {
    /// Parses a non-negative decimal with at most ten fractional digits.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty() && frac.is_empty()
            || int.len() > 18
            || frac.len() > MONEY_SCALE_DIGITS
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let int: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut frac_units: i128 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        for _ in frac.len()..MONEY_SCALE_DIGITS {
            frac_units *= 10;
        }
        Some(Self(
            int * 10i128.pow(MONEY_SCALE_DIGITS as u32) + frac_units,
        ))
    }

    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }
}

impl fmt::Display for Money {
    /// Shortest exact decimal: `0.000525`, `2`, `0.1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scale = 10i128.pow(MONEY_SCALE_DIGITS as u32);
        let int = self.0 / scale;
        let frac = self.0 % scale;
        if frac == 0 {
            return write!(f, "{int}");
        }
        let frac = format!("{frac:0width$}", width = MONEY_SCALE_DIGITS);
        write!(f, "{int}.{}", frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn money_parses_exact_decimals() {
        assert_eq!(Money::parse("2").unwrap().to_string(), "2");
        assert_eq!(Money::parse(".5").unwrap().to_string(), "0.5");
        assert_eq!(Money::parse("0.00052500").unwrap().to_string(), "0.000525");
        assert_eq!(Money::parse("0.12345678901"), None, "too many digits");
        assert_eq!(Money::parse("1e-3"), None);
        assert_eq!(Money::parse(""), None);
        assert_eq!(Money::parse("."), None);
    }

    proptest! {
        #[test]
        fn money_round_trips(units in 0i128..10i128.pow(20)) {
            let m = Money(units);
            prop_assert_eq!(Money::parse(&m.to_string()), Some(m));
        }
    }
}
