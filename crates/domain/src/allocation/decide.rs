//! The decision for one create: from what the database knows, which proxy number each participant
//! gets now (the one asked for, or the sticky one) and which must be searched for, and how.

use std::collections::HashMap;

use thiserror::Error;

use super::{AllocationPolicy, PersonHistory, Plan, PoolNumberState};
use crate::pairing::NewPairing;
use crate::phone::PhoneNumber;

/// One of a person's pairings that is active, or ended within the cool-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastPairing {
    /// The proxy number the person had in it.
    pub proxy_number: PhoneNumber,
    /// The other participant.
    pub counterpart: PhoneNumber,
    /// Whether it is active now.
    pub active: bool,
}

/// What the database knows of one participant of a create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonState {
    /// Their pairings that are active, or ended within the cool-off.
    pub recent: Vec<PastPairing>,
    /// The proxy number they had in their latest pairing with the other participant, with the
    /// pool's word on it now (none if it is no pool number any more).
    pub sticky: Option<(PhoneNumber, Option<PoolNumberState>)>,
}

/// What the database knows of a create, read in one statement before choosing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateState {
    /// The pool's word on the participants' numbers and the proxy numbers asked for, for those
    /// that are pool numbers.
    pub pool: HashMap<PhoneNumber, PoolNumberState>,
    /// The participants, in the request's order.
    pub people: [PersonState; 2],
}

impl PersonHistory {
    /// A person's history as allocation sees it: the proxy numbers of their active pairings are
    /// held (never given again while active); those of pairings with someone other than
    /// `counterpart` that ended within the cool-off are cooling; the one they had with
    /// `counterpart` last time is sticky.
    pub fn of(person: &PersonState, counterpart: &PhoneNumber) -> Self {
        let mut history = Self::default();
        for past in &person.recent {
            if past.active {
                history.held.insert(past.proxy_number.clone());
            } else if &past.counterpart != counterpart {
                history.cooling.insert(past.proxy_number.clone());
            }
        }
        history.sticky = person.sticky.as_ref().map(|(n, _)| n.clone());
        history
    }
}

/// How one participant's proxy number is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// This one: asked for by the client, or the sticky one.
    Given(PhoneNumber),
    /// The least loaded found by this plan's searches, run in order.
    Search(Plan),
}

/// Why a create is refused before any search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("participant {position} has a number of the pool")]
    ParticipantIsPoolNumber { position: usize },
    #[error("the proxy number asked for participant {position} is not in the pool")]
    ProxyNotInPool { position: usize },
    #[error(
        "the proxy number asked for participant {position} is retired or already routes this participant"
    )]
    ProxyUnavailable { position: usize },
}

/// Decides, for each participant of `request`, the proxy number or how to search for it.
///
/// - A participant's own number may not be a pool number.
/// - A proxy number asked for is given if it is an active pool number (reserved ones included:
///   reserving a number keeps it for such requests) that the person does not hold already.
/// - Otherwise, under `PreferSticky`, the number the person had with the same counterpart last
///   time is given if the policy's plan still prefers it (not held, not cooling) and the pool
///   still allows it (active, unreserved, of the right country).
/// - Otherwise the plan's searches decide.
pub fn choose(
    request: &NewPairing,
    policy: &AllocationPolicy,
    state: &CreateState,
) -> Result<[Choice; 2], Refusal> {
    let [a, b] = &request.participants;
    if let Some(position) = [a, b]
        .iter()
        .position(|p| state.pool.contains_key(&p.number))
    {
        return Err(Refusal::ParticipantIsPoolNumber { position });
    }
    let decide = |position: usize| -> Result<Choice, Refusal> {
        let me = &request.participants[position];
        let other = &request.participants[1 - position];
        let person = &state.people[position];
        let history = PersonHistory::of(person, &other.number);
        if let Some(wanted) = &me.proxy_number {
            return match state.pool.get(wanted) {
                None => Err(Refusal::ProxyNotInPool { position }),
                Some(pool) if pool.active && !history.held.contains(wanted) => {
                    Ok(Choice::Given(wanted.clone()))
                }
                Some(_) => Err(Refusal::ProxyUnavailable { position }),
            };
        }
        let plan = policy.plan(me.number.country().as_ref(), &history);
        let sticky_usable = person
            .sticky
            .as_ref()
            .and_then(|(_, pool)| pool.as_ref())
            .is_some_and(|pool| plan.accepts_preferred(pool));
        Ok(match &plan.preferred {
            Some(preferred) if sticky_usable => Choice::Given(preferred.clone()),
            _ => Choice::Search(plan),
        })
    };
    Ok([decide(0)?, decide(1)?])
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use proptest::prelude::*;

    use super::*;
    use crate::allocation::{CoolOffMode, GeoMatch, Stickiness};
    use crate::pairing::ParticipantRequest;
    use crate::phone::CountryCode;

    fn pool_number(i: u32) -> PhoneNumber {
        PhoneNumber::parse(&format!("1212555{:04}", 1000 + i)).unwrap()
    }

    fn person(i: u32) -> PhoneNumber {
        PhoneNumber::parse(&format!("1646555{:04}", 2000 + i)).unwrap()
    }

    fn us() -> CountryCode {
        CountryCode::parse("US").unwrap()
    }

    fn state(active: bool, reserved: bool) -> PoolNumberState {
        PoolNumberState {
            active,
            reserved,
            country: us(),
        }
    }

    fn request(asked: [Option<u32>; 2]) -> NewPairing {
        let p = |i: usize| ParticipantRequest {
            number: person(i as u32),
            label: None,
            proxy_number: asked[i].map(pool_number),
        };
        NewPairing::new(vec![p(0), p(1)], 60, None).unwrap()
    }

    /// Random create states over a handful of pool numbers and two people.
    fn state_strategy() -> impl Strategy<Value = CreateState> {
        let pool_entry = (0u32..6, any::<bool>(), any::<bool>());
        let past = (0u32..6, 0u32..4, any::<bool>()).prop_map(|(n, c, active)| PastPairing {
            proxy_number: pool_number(n),
            counterpart: person(c),
            active,
        });
        let sticky = proptest::option::of((
            0u32..6,
            proptest::option::of((any::<bool>(), any::<bool>())),
        ));
        let person_state =
            (proptest::collection::vec(past, 0..5), sticky).prop_map(|(recent, sticky)| {
                PersonState {
                    recent,
                    sticky: sticky.map(|(n, s)| (pool_number(n), s.map(|(a, r)| state(a, r)))),
                }
            });
        (
            proptest::collection::vec(pool_entry, 0..6),
            person_state.clone(),
            person_state,
        )
            .prop_map(|(entries, a, b)| CreateState {
                pool: entries
                    .into_iter()
                    .map(|(n, active, reserved)| (pool_number(n), state(active, reserved)))
                    .collect(),
                people: [a, b],
            })
    }

    fn policy_strategy() -> impl Strategy<Value = AllocationPolicy> {
        (0..3u8, any::<bool>(), 0..2i64, any::<bool>()).prop_map(|(g, sticky, days, strict)| {
            AllocationPolicy {
                geo: [GeoMatch::Strict, GeoMatch::Prefer, GeoMatch::Off][g as usize],
                stickiness: if sticky {
                    Stickiness::PreferSticky
                } else {
                    Stickiness::AvoidSticky
                },
                cool_off: Duration::days(days),
                cool_off_mode: if strict {
                    CoolOffMode::Strict
                } else {
                    CoolOffMode::Soft
                },
            }
        })
    }

    proptest! {
        #[test]
        fn a_choice_never_gives_a_held_number_and_follows_each_rule(
            state in state_strategy(),
            policy in policy_strategy(),
            asked in proptest::array::uniform2(proptest::option::of(0u32..6)),
        ) {
            let request = request(asked);
            let chosen = choose(&request, &policy, &state);
            let Ok(choices) = chosen else {
                // Refused: for the first rule broken, in the participants' order.
                let position = match chosen.unwrap_err() {
                    Refusal::ProxyNotInPool { position } => {
                        let wanted = pool_number(asked[position].unwrap());
                        prop_assert!(!state.pool.contains_key(&wanted));
                        position
                    }
                    Refusal::ProxyUnavailable { position } => {
                        let wanted = pool_number(asked[position].unwrap());
                        let held = PersonHistory::of(&state.people[position], &person(1 - position as u32)).held;
                        prop_assert!(!state.pool[&wanted].active || held.contains(&wanted));
                        position
                    }
                    Refusal::ParticipantIsPoolNumber { .. } => unreachable!("people are never pool numbers here"),
                };
                // The other participant, if before it, was fine.
                let first_fine = asked[0].is_none_or(|n| {
                    let held = PersonHistory::of(&state.people[0], &person(1)).held;
                    state
                        .pool
                        .get(&pool_number(n))
                        .is_some_and(|s| s.active && !held.contains(&pool_number(n)))
                });
                prop_assert!(position == 0 || first_fine);
                return Ok(());
            };
            for (i, choice) in choices.iter().enumerate() {
                let history = PersonHistory::of(&state.people[i], &person(1 - i as u32));
                match (choice, asked[i]) {
                    (Choice::Given(n), Some(wanted)) => {
                        prop_assert_eq!(n, &pool_number(wanted), "the number asked for");
                        prop_assert!(state.pool[n].active);
                        prop_assert!(!history.held.contains(n));
                    }
                    (Choice::Search(_), Some(_)) => prop_assert!(false, "a number asked for is given or refused"),
                    (Choice::Given(n), None) => {
                        // The sticky number, wanted by the policy and still usable.
                        prop_assert_eq!(policy.stickiness, Stickiness::PreferSticky);
                        let (sticky, pool) = state.people[i].sticky.clone().unwrap();
                        prop_assert_eq!(n, &sticky);
                        prop_assert!(!history.held.contains(n));
                        let pool = pool.unwrap();
                        prop_assert!(pool.active && !pool.reserved);
                    }
                    (Choice::Search(plan), None) => {
                        for search in &plan.searches {
                            for held in &history.held {
                                prop_assert!(search.exclude.contains(held), "every search excludes held numbers");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_participant_who_is_a_pool_number_is_refused() {
        let mut s = CreateState::default();
        s.pool.insert(person(1), state(true, false));
        assert_eq!(
            choose(&request([None, None]), &AllocationPolicy::default(), &s),
            Err(Refusal::ParticipantIsPoolNumber { position: 1 })
        );
    }

    #[test]
    fn held_and_cooling_numbers_come_from_the_recent_pairings() {
        let recent = vec![
            PastPairing {
                proxy_number: pool_number(1),
                counterpart: person(7),
                active: true,
            },
            PastPairing {
                proxy_number: pool_number(2),
                counterpart: person(8),
                active: false,
            },
            PastPairing {
                proxy_number: pool_number(3),
                counterpart: person(1),
                active: false,
            },
        ];
        let history = PersonHistory::of(
            &PersonState {
                recent,
                sticky: Some((pool_number(3), None)),
            },
            &person(1),
        );
        assert_eq!(history.held, [pool_number(1)].into());
        assert_eq!(
            history.cooling,
            [pool_number(2)].into(),
            "an ended pairing with the same counterpart does not cool its number"
        );
        assert_eq!(history.sticky, Some(pool_number(3)));
    }

    #[test]
    fn a_reserved_number_is_given_when_asked_for_and_a_held_one_is_not() {
        let mut s = CreateState::default();
        s.pool.insert(pool_number(1), state(true, true));
        let chosen = choose(&request([Some(1), None]), &AllocationPolicy::default(), &s);
        assert!(
            matches!(chosen, Ok([Choice::Given(ref n), Choice::Search(_)]) if *n == pool_number(1))
        );
        s.people[0].recent.push(PastPairing {
            proxy_number: pool_number(1),
            counterpart: person(9),
            active: true,
        });
        assert_eq!(
            choose(&request([Some(1), None]), &AllocationPolicy::default(), &s),
            Err(Refusal::ProxyUnavailable { position: 0 })
        );
        assert_eq!(
            choose(&request([None, Some(4)]), &AllocationPolicy::default(), &s),
            Err(Refusal::ProxyNotInPool { position: 1 })
        );
    }
}
