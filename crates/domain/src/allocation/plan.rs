//! Planning the search for one participant's proxy number, and picking among candidates.

use std::collections::HashSet;

use chrono::Duration;

use super::{AllocationPolicy, CoolOffMode, GeoMatch, Stickiness};
use crate::phone::{CountryCode, PhoneNumber};

/// What the database told us about one participant before choosing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonHistory {
    /// Proxy numbers this person holds in pairings that are active now: never given again.
    pub held: HashSet<PhoneNumber>,
    /// Proxy numbers of this person's pairings with someone else that ended within the cool-off.
    pub cooling: HashSet<PhoneNumber>,
    /// The proxy number this person had in their latest pairing with the same counterpart.
    pub sticky: Option<PhoneNumber>,
}

/// One lookup for candidate numbers: active, not reserved, in `country` (any when `None`), none
/// of `exclude`, least loaded first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    pub country: Option<CountryCode>,
    pub exclude: Vec<PhoneNumber>,
}

/// A free pool number as a search returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub number: PhoneNumber,
    /// Active pairings using this number.
    pub load: i64,
}

/// The ordered plan for one participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Take this number first if it is still an active, unreserved pool number and allowed by
    /// the country rule (the sticky number).
    pub preferred: Option<PhoneNumber>,
    /// Then run these searches in order until one finds candidates.
    pub searches: Vec<Search>,
    /// The country a refusal names, when the plan is restricted to one.
    pub country: Option<CountryCode>,
}

impl AllocationPolicy {
    pub fn plan(&self, person_country: Option<&CountryCode>, history: &PersonHistory) -> Plan {
        let country_tiers: Vec<Option<CountryCode>> = match (self.geo, person_country) {
            (GeoMatch::Strict, Some(c)) => vec![Some(c.clone())],
            (GeoMatch::Prefer, Some(c)) => vec![Some(c.clone()), None],
            _ => vec![None],
        };
        let cool_off_on = self.cool_off > Duration::zero();
        let held: Vec<PhoneNumber> = sorted(history.held.iter());
        let cooling: Vec<PhoneNumber> = if cool_off_on {
            sorted(history.cooling.difference(&history.held))
        } else {
            Vec::new()
        };
        // The number last used with this counterpart, unless it is held now or has since been
        // used with someone else within the cool-off.
        let sticky = history
            .sticky
            .as_ref()
            .filter(|s| !history.held.contains(*s) && !cooling.contains(*s));
        let preferred = match self.stickiness {
            Stickiness::PreferSticky => sticky.cloned(),
            Stickiness::AvoidSticky => None,
        };
        let avoid: Vec<PhoneNumber> = match self.stickiness {
            Stickiness::AvoidSticky => sticky.into_iter().cloned().collect(),
            Stickiness::PreferSticky => Vec::new(),
        };

        // Exclusion sets from strictest to loosest: held numbers are never given; cooling and
        // avoided numbers are given only when nothing else is free (cooling not at all in strict
        // cool-off mode).
        let mut exclusion_tiers: Vec<Vec<PhoneNumber>> = Vec::new();
        let all = concat(&[&held, &cooling, &avoid]);
        exclusion_tiers.push(all);
        if !avoid.is_empty() {
            exclusion_tiers.push(concat(&[&held, &cooling]));
        }
        if !cooling.is_empty() && self.cool_off_mode == CoolOffMode::Soft {
            exclusion_tiers.push(held.clone());
        }
        exclusion_tiers.dedup();

        let mut searches = Vec::new();
        for country in &country_tiers {
            for exclude in &exclusion_tiers {
                searches.push(Search {
                    country: country.clone(),
                    exclude: exclude.clone(),
                });
            }
        }
        Plan {
            preferred,
            searches,
            country: match self.geo {
                GeoMatch::Strict => person_country.cloned(),
                _ => None,
            },
        }
    }
}

impl Plan {
    /// Whether the preferred (sticky) number may be given, as the pool describes it now: an
    /// active, unreserved pool number, of the plan's country when the plan is restricted to one.
    pub fn accepts_preferred(&self, pool_state: &PoolNumberState) -> bool {
        pool_state.active
            && !pool_state.reserved
            && self
                .country
                .as_ref()
                .is_none_or(|c| c == &pool_state.country)
    }
}

/// What the pool says about one number, as far as allocation cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolNumberState {
    /// Not retired.
    pub active: bool,
    pub reserved: bool,
    pub country: CountryCode,
}

/// Picks among candidates of one search: the least loaded, ties broken by `seed` so that
/// concurrent requests spread over equally good numbers instead of all taking the first.
pub fn pick(candidates: &[Candidate], seed: u64) -> Option<&Candidate> {
    let min = candidates.iter().map(|c| c.load).min()?;
    let best: Vec<&Candidate> = candidates.iter().filter(|c| c.load == min).collect();
    let index = usize::try_from(seed % best.len() as u64).unwrap_or(0);
    best.get(index).copied()
}

fn sorted<'a>(numbers: impl Iterator<Item = &'a PhoneNumber>) -> Vec<PhoneNumber> {
    let mut v: Vec<PhoneNumber> = numbers.cloned().collect();
    v.sort();
    v
}

fn concat(parts: &[&Vec<PhoneNumber>]) -> Vec<PhoneNumber> {
    let mut v: Vec<PhoneNumber> = parts.iter().flat_map(|p| p.iter().cloned()).collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An in-memory pool that runs a plan the way the database does.
    #[derive(Debug, Clone)]
    struct PoolEntry {
        number: PhoneNumber,
        country: CountryCode,
        reserved: bool,
        load: i64,
    }

    fn run_plan(plan: &Plan, pool: &[PoolEntry], seed: u64) -> Option<PhoneNumber> {
        if let Some(p) = &plan.preferred {
            let usable = pool.iter().any(|e| {
                &e.number == p
                    && plan.accepts_preferred(&PoolNumberState {
                        active: true,
                        reserved: e.reserved,
                        country: e.country.clone(),
                    })
            });
            if usable {
                return Some(p.clone());
            }
        }
        for s in &plan.searches {
            let candidates: Vec<Candidate> = pool
                .iter()
                .filter(|e| !e.reserved)
                .filter(|e| s.country.as_ref().is_none_or(|c| &e.country == c))
                .filter(|e| !s.exclude.contains(&e.number))
                .map(|e| Candidate {
                    number: e.number.clone(),
                    load: e.load,
                })
                .collect();
            if let Some(c) = pick(&candidates, seed) {
                return Some(c.number.clone());
            }
        }
        None
    }

    fn us(i: u32) -> PhoneNumber {
        PhoneNumber::parse(&format!("1212555{:04}", 1000 + i)).unwrap()
    }
    fn gb(i: u32) -> PhoneNumber {
        PhoneNumber::parse(&format!("4474001{:05}", 10000 + i)).unwrap()
    }
    fn country(s: &str) -> CountryCode {
        CountryCode::parse(s).unwrap()
    }

    fn pool_strategy() -> impl Strategy<Value = Vec<PoolEntry>> {
        proptest::collection::vec((0u32..40, any::<bool>(), any::<bool>(), 0i64..5), 1..30)
            .prop_map(|entries| {
                let mut seen = HashSet::new();
                entries
                    .into_iter()
                    .filter(|(i, is_us, _, _)| seen.insert((*i, *is_us)))
                    .map(|(i, is_us, reserved, load)| PoolEntry {
                        number: if is_us { us(i) } else { gb(i) },
                        country: country(if is_us { "US" } else { "GB" }),
                        reserved: reserved && i % 3 == 0,
                        load,
                    })
                    .collect()
            })
    }

    fn policy_strategy() -> impl Strategy<Value = AllocationPolicy> {
        (0..3u8, any::<bool>(), 0..2i64, any::<bool>()).prop_map(|(g, s, c, strict)| {
            AllocationPolicy {
                geo: [GeoMatch::Strict, GeoMatch::Prefer, GeoMatch::Off][g as usize],
                stickiness: if s {
                    Stickiness::PreferSticky
                } else {
                    Stickiness::AvoidSticky
                },
                cool_off: Duration::hours(24 * c),
                cool_off_mode: if strict {
                    CoolOffMode::Strict
                } else {
                    CoolOffMode::Soft
                },
            }
        })
    }

    /// Picks a subset of the pool numbers by a bit mask.
    fn subset(pool: &[PoolEntry], mask: u64) -> HashSet<PhoneNumber> {
        pool.iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << (i % 64)) != 0)
            .map(|(_, e)| e.number.clone())
            .collect()
    }

    proptest! {
        #[test]
        fn never_gives_a_held_number_and_refuses_only_when_nothing_is_free(
            pool in pool_strategy(),
            policy in policy_strategy(),
            held_mask in any::<u64>(),
            cooling_mask in any::<u64>(),
            sticky_index in proptest::option::of(0usize..30),
            person_is_us in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let history = PersonHistory {
                held: subset(&pool, held_mask),
                cooling: subset(&pool, cooling_mask),
                sticky: sticky_index.and_then(|i| pool.get(i)).map(|e| e.number.clone()),
            };
            let person_country = country(if person_is_us { "US" } else { "GB" });
            let plan = policy.plan(Some(&person_country), &history);
            let chosen = run_plan(&plan, &pool, seed);

            let allowed = |e: &PoolEntry| {
                !e.reserved
                    && !history.held.contains(&e.number)
                    && (policy.geo != GeoMatch::Strict || e.country == person_country)
            };
            let strict_cooling = policy.cool_off_mode == CoolOffMode::Strict
                && policy.cool_off > Duration::zero();
            let eligible: Vec<&PoolEntry> = pool
                .iter()
                .filter(|e| allowed(e))
                .filter(|e| !strict_cooling || !history.cooling.contains(&e.number))
                .collect();

            match &chosen {
                Some(n) => {
                    let entry = pool.iter().find(|e| &e.number == n).unwrap();
                    prop_assert!(allowed(entry), "chose a number that is not allowed: {:?}", entry);
                    prop_assert!(eligible.iter().any(|e| &e.number == n));
                }
                None => prop_assert!(eligible.is_empty(), "refused while {:?} were free", eligible),
            }
        }

        #[test]
        fn same_country_first_when_geo_match_prefers_it(
            pool in pool_strategy(), seed in any::<u64>(),
        ) {
            let policy = AllocationPolicy { geo: GeoMatch::Prefer, ..Default::default() };
            let plan = policy.plan(Some(&country("US")), &PersonHistory::default());
            let chosen = run_plan(&plan, &pool, seed);
            let any_us_free = pool.iter().any(|e| !e.reserved && e.country == country("US"));
            if any_us_free {
                let n = chosen.unwrap();
                prop_assert!(pool.iter().any(|e| e.number == n && e.country == country("US")));
            }
        }

        #[test]
        fn picks_a_least_loaded_candidate(
            loads in proptest::collection::vec(0i64..10, 1..20), seed in any::<u64>(),
        ) {
            let candidates: Vec<Candidate> = loads.iter().enumerate()
                .map(|(i, l)| Candidate { number: us(i as u32), load: *l }).collect();
            let chosen = pick(&candidates, seed).unwrap();
            prop_assert_eq!(chosen.load, *loads.iter().min().unwrap());
        }
    }

    #[test]
    fn cooling_numbers_are_a_last_resort_in_soft_mode() {
        let pool = vec![
            PoolEntry {
                number: us(1),
                country: country("US"),
                reserved: false,
                load: 0,
            },
            PoolEntry {
                number: us(2),
                country: country("US"),
                reserved: false,
                load: 5,
            },
        ];
        let history = PersonHistory {
            cooling: [us(1)].into(),
            ..Default::default()
        };
        let policy = AllocationPolicy::default();
        let plan = policy.plan(Some(&country("US")), &history);
        assert_eq!(
            run_plan(&plan, &pool, 0),
            Some(us(2)),
            "the cooling number is skipped although less loaded"
        );

        let only_cooling = &pool[..1];
        assert_eq!(
            run_plan(&plan, only_cooling, 0),
            Some(us(1)),
            "soft: given when nothing else is free"
        );

        let strict = AllocationPolicy {
            cool_off_mode: CoolOffMode::Strict,
            ..policy
        };
        let plan = strict.plan(Some(&country("US")), &history);
        assert_eq!(run_plan(&plan, only_cooling, 0), None, "strict: refused");

        let disabled = AllocationPolicy {
            cool_off: Duration::zero(),
            ..policy
        };
        let plan = disabled.plan(Some(&country("US")), &history);
        assert_eq!(
            run_plan(&plan, &pool, 0),
            Some(us(1)),
            "cool-off 0: the least loaded wins"
        );
    }

    #[test]
    fn the_same_counterpart_gets_the_same_number_again() {
        let pool: Vec<PoolEntry> = (1..5)
            .map(|i| PoolEntry {
                number: us(i),
                country: country("US"),
                reserved: false,
                load: 0,
            })
            .collect();
        let history = PersonHistory {
            sticky: Some(us(3)),
            ..Default::default()
        };
        let plan = AllocationPolicy::default().plan(Some(&country("US")), &history);
        for seed in 0..8 {
            assert_eq!(run_plan(&plan, &pool, seed), Some(us(3)));
        }
        let avoid = AllocationPolicy {
            stickiness: Stickiness::AvoidSticky,
            ..Default::default()
        };
        let plan = avoid.plan(Some(&country("US")), &history);
        for seed in 0..8 {
            assert_ne!(run_plan(&plan, &pool, seed), Some(us(3)));
        }
    }

    #[test]
    fn a_sticky_number_is_given_again_only_while_usable() {
        let history = PersonHistory {
            sticky: Some(us(3)),
            ..Default::default()
        };
        let plan = AllocationPolicy::default().plan(Some(&country("US")), &history);
        assert_eq!(plan.preferred, Some(us(3)));
        let state = |active, reserved, c: &str| PoolNumberState {
            active,
            reserved,
            country: country(c),
        };
        assert!(plan.accepts_preferred(&state(true, false, "US")));
        assert!(
            !plan.accepts_preferred(&state(false, false, "US")),
            "retired"
        );
        assert!(
            !plan.accepts_preferred(&state(true, true, "US")),
            "reserved"
        );
        assert!(
            !plan.accepts_preferred(&state(true, false, "GB")),
            "strict geo-match, other country"
        );
        let off = AllocationPolicy {
            geo: GeoMatch::Off,
            ..Default::default()
        };
        let plan = off.plan(Some(&country("US")), &history);
        assert!(plan.accepts_preferred(&state(true, false, "GB")));
    }

    #[test]
    fn strict_geo_match_refuses_and_names_the_country() {
        let pool = vec![PoolEntry {
            number: gb(1),
            country: country("GB"),
            reserved: false,
            load: 0,
        }];
        let plan =
            AllocationPolicy::default().plan(Some(&country("US")), &PersonHistory::default());
        assert_eq!(run_plan(&plan, &pool, 0), None);
        assert_eq!(plan.country, Some(country("US")));
        let off = AllocationPolicy {
            geo: GeoMatch::Off,
            ..Default::default()
        };
        let plan = off.plan(Some(&country("US")), &PersonHistory::default());
        assert_eq!(run_plan(&plan, &pool, 0), Some(gb(1)));
    }
}
