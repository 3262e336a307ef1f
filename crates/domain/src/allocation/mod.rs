//! Choosing proxy numbers: which pool number a participant gets.
//!
//! The whole decision lives here, in pure steps, so that the database only ever runs the index
//! lookups it is told to:
//! 1. [`choose`] reads what the database knows of the create (the pool's word on the numbers
//!    involved, each person's recent pairings, the number they had with the other one last time)
//!    and decides, per participant: the proxy number asked for (if the pool allows it), the
//!    sticky number (if the policy wants it and it is still usable), or a search;
//! 2. for a search, [`AllocationPolicy::plan`] turns the policy and the person's history (the
//!    numbers they hold, the ones cooling off, the sticky one) into an ordered list of
//!    [`Search`]es, best first;
//! 3. the storage layer runs each search in turn ("the least loaded free numbers of this country,
//!    not these") until one finds candidates, and [`pick`] chooses among them.
//!
//! The database still has the last word: a unique constraint refuses a second active pairing of
//! the same (person, proxy number), so a race lost here is retried, never committed.

mod decide;
mod plan;

pub use decide::{Choice, CreateState, PastPairing, PersonState, Refusal, choose};
pub use plan::{Candidate, PersonHistory, Plan, PoolNumberState, Search, pick};

use chrono::Duration;

/// Whether a participant must get a proxy number of their own country.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GeoMatch {
    /// Only numbers of the participant's country; refuse when none is free.
    #[default]
    Strict,
    /// Numbers of the participant's country first, then any country.
    Prefer,
    /// Country plays no part.
    Off,
}

impl GeoMatch {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "strict" => Some(Self::Strict),
            "prefer" => Some(Self::Prefer),
            "off" => Some(Self::Off),
            _ => None,
        }
    }
}

/// What to do when the same two people are paired again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stickiness {
    /// Give each the proxy number they had with this counterpart last time, if still possible.
    #[default]
    PreferSticky,
    /// Give a different number than last time where another is free.
    AvoidSticky,
}

impl Stickiness {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "prefer-sticky" => Some(Self::PreferSticky),
            "avoid-sticky" => Some(Self::AvoidSticky),
            _ => None,
        }
    }
}

/// Whether a number in cool-off may still be given when nothing else is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CoolOffMode {
    /// Cooling numbers are a last resort.
    #[default]
    Soft,
    /// Cooling numbers are never given to a different counterpart; refuse instead.
    Strict,
}

impl CoolOffMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "soft" => Some(Self::Soft),
            "strict" => Some(Self::Strict),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocationPolicy {
    pub geo: GeoMatch,
    pub stickiness: Stickiness,
    /// How long after a pairing ends its proxy number is kept from the participant for a
    /// different counterpart. Zero disables cool-off.
    pub cool_off: Duration,
    pub cool_off_mode: CoolOffMode,
}

impl Default for AllocationPolicy {
    fn default() -> Self {
        Self {
            geo: GeoMatch::Strict,
            stickiness: Stickiness::PreferSticky,
            cool_off: Duration::hours(24),
            cool_off_mode: CoolOffMode::Soft,
        }
    }
}
