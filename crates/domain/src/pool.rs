//! The pool: the Vonage virtual numbers proxy numbers are given from.

use chrono::{DateTime, Utc};

use crate::phone::{CountryCode, PhoneNumber};

/// A number of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolNumber {
    pub number: PhoneNumber,
    pub country: CountryCode,
    pub state: NumberState,
    /// Given only to a pairing that asks for it by number.
    pub reserved: bool,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

/// Whether a pool number may still be given: a retired one never is again (its pairings route
/// until they end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberState {
    Active,
    Retired,
}

impl NumberState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "retired" => Some(Self::Retired),
            _ => None,
        }
    }
}
