//! Folding a conversation's events into its call: how it ended (or how far it has got), when it
//! was answered, its talk time and its price, whatever order the events arrived in.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{CallEvent, CallStatus, Money};

/// A call record's fields that come from its events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallProgress {
    /// How the call ended, or how far it has got: the callee's leg where there is one, else the
    /// caller's. A callee leg that ended without being answered keeps that status (`busy`,
    /// `timeout`, `unanswered`, `cancelled`, `rejected`, `failed`) even though Vonage reports
    /// `completed` for it afterwards; `completed` means the leg was answered.
    pub status: Option<CallStatus>,
    /// When the deciding leg was answered; none if it never was.
    pub answered_at: Option<DateTime<Utc>>,
    /// When a callee's leg was answered (the callee picked up); none while only the caller's
    /// leg has reported.
    pub callee_answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Every leg that has reported has ended, the caller's among them: the call is over and its
    /// status, talk time and price will not change (`ended_at` is set at the first leg's end).
    pub over: bool,
    /// Talk time: the answered deciding leg's duration.
    pub duration_seconds: Option<i64>,
    /// The sum of every leg's price.
    pub price: Option<Money>,
}

/// What one leg's events say about it.
#[derive(Debug)]
struct LegSummary {
    status: Option<CallStatus>,
    /// When the status was reported (ties between legs go to the latest).
    at: Option<DateTime<Utc>>,
    answered_at: Option<DateTime<Utc>>,
    answered: bool,
    duration_seconds: Option<i64>,
}

impl LegSummary {
    fn of(events: &[&CallEvent]) -> Self {
        let latest = |candidates: &mut dyn Iterator<Item = &&CallEvent>| {
            candidates
                .filter_map(|e| Some((e.status.as_ref()?, e.timestamp)))
                .max_by(|(a, ta), (b, tb)| {
                    a.rank()
                        .cmp(&b.rank())
                        .then(ta.cmp(tb))
                        .then_with(|| a.as_str().cmp(b.as_str()))
                })
                .map(|(s, t)| (s.clone(), t))
        };
        // A leg that ended unanswered: that is its status, whatever `completed` followed.
        if let Some((status, at)) = latest(
            &mut events
                .iter()
                .filter(|e| e.status.as_ref().is_some_and(CallStatus::ended_unanswered)),
        ) {
            return Self {
                status: Some(status),
                at,
                answered_at: None,
                answered: false,
                duration_seconds: None,
            };
        }
        let (status, at) = latest(
            &mut events
                .iter()
                .filter(|e| e.status.as_ref().is_some_and(|s| s.rank() > 0)),
        )
        .unzip();
        let completed = || {
            events
                .iter()
                .filter(|e| e.status == Some(CallStatus::Completed))
        };
        let answered = events
            .iter()
            .any(|e| e.status == Some(CallStatus::Answered))
            || completed().any(|e| e.duration_seconds.is_some_and(|d| d > 0));
        let answered_at = answered
            .then(|| {
                events
                    .iter()
                    .filter(|e| e.status == Some(CallStatus::Answered))
                    .filter_map(|e| e.timestamp)
                    .chain(completed().filter_map(|e| e.start_time))
                    .min()
            })
            .flatten();
        Self {
            status,
            at: at.flatten(),
            answered_at,
            answered,
            duration_seconds: answered
                .then(|| completed().filter_map(|e| e.duration_seconds).max())
                .flatten(),
        }
    }
}

impl CallProgress {
    /// Folds a conversation's events into its call record. The result depends only on the set of
    /// events, not on the order they arrived in, so a late `ringing` never undoes a `completed`.
    /// `inbound_leg` is the caller's leg (from the answer webhook); every other leg of the
    /// conversation is a callee's.
    pub fn fold(inbound_leg: Option<&str>, events: &[CallEvent]) -> Self {
        let is_callee_leg = |e: &CallEvent| match (&e.leg_uuid, inbound_leg) {
            (Some(leg), Some(inbound)) => leg != inbound,
            (Some(_), None) => e.direction.as_deref() == Some("outbound"),
            (None, _) => false,
        };
        let mut callee_legs: BTreeMap<&str, Vec<&CallEvent>> = BTreeMap::new();
        let mut caller_legs: BTreeMap<&str, Vec<&CallEvent>> = BTreeMap::new();
        for e in events {
            let Some(leg) = e.leg_uuid.as_deref() else {
                continue;
            };
            let legs = if is_callee_leg(e) {
                &mut callee_legs
            } else {
                &mut caller_legs
            };
            legs.entry(leg).or_default().push(e);
        }
        let has_status = |legs: &BTreeMap<&str, Vec<&CallEvent>>| {
            legs.values().flatten().any(|e| e.status.is_some())
        };
        let leg_ended = |events: &Vec<&CallEvent>| {
            events
                .iter()
                .any(|e| e.status.as_ref().is_some_and(CallStatus::is_final))
        };
        let caller_reported = match inbound_leg {
            Some(leg) => caller_legs.contains_key(leg),
            None => !caller_legs.is_empty(),
        };
        let over = caller_reported
            && caller_legs
                .values()
                .chain(callee_legs.values())
                .all(leg_ended);
        let callee_decides = has_status(&callee_legs);
        let deciding = if callee_decides {
            callee_legs
        } else {
            caller_legs
        };
        // One leg decides (the connect action dials one endpoint): an answered leg before one
        // that was not, then the furthest, then the latest.
        let chosen = deciding
            .values()
            .map(|events| LegSummary::of(events))
            .max_by(|a, b| {
                a.answered
                    .cmp(&b.answered)
                    .then_with(|| {
                        let rank = |l: &LegSummary| l.status.as_ref().map_or(0, CallStatus::rank);
                        rank(a).cmp(&rank(b))
                    })
                    .then(a.at.cmp(&b.at))
                    .then_with(|| {
                        let name =
                            |l: &LegSummary| l.status.as_ref().map(|s| s.as_str().to_owned());
                        name(a).cmp(&name(b))
                    })
            });
        let (status, answered_at, duration_seconds) = match chosen {
            Some(leg) => (leg.status, leg.answered_at, leg.duration_seconds),
            None => (None, None, None),
        };
        let ended_at = events
            .iter()
            .filter(|e| e.status.as_ref().is_some_and(CallStatus::is_final))
            .filter_map(|e| e.end_time.or(e.timestamp))
            .max();
        // One price per leg: the leg's final event carries it; count each leg once.
        let mut priced_legs: Vec<(&str, Money)> = Vec::new();
        for e in events {
            if let (Some(leg), Some(price)) = (e.leg_uuid.as_deref(), e.price) {
                match priced_legs.iter_mut().find(|(l, _)| *l == leg) {
                    Some(entry) => entry.1 = entry.1.max(price),
                    None => priced_legs.push((leg, price)),
                }
            }
        }
        let price = priced_legs
            .iter()
            .try_fold(None::<Money>, |acc, (_, p)| {
                Some(Some(acc.unwrap_or_default().checked_add(*p)?))
            })
            .flatten();
        Self {
            status,
            answered_at,
            callee_answered_at: answered_at.filter(|_| callee_decides),
            ended_at,
            over,
            duration_seconds,
            price,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::parse_timestamp;
    use crate::call::test_events::{INBOUND, OUTBOUND, completed_call, ev};
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_completed_call_has_talk_time_of_the_connected_leg_and_the_price_of_both() {
        let p = CallProgress::fold(Some(INBOUND), &completed_call());
        assert_eq!(p.status, Some(CallStatus::Completed));
        assert_eq!(p.duration_seconds, Some(132));
        assert_eq!(p.price.unwrap().to_string(), "0.0269");
        assert_eq!(
            p.answered_at,
            parse_timestamp("2024-05-01T10:00:05.000Z"),
            "answered when the callee answered"
        );
        assert_eq!(p.ended_at, parse_timestamp("2024-05-01T10:02:17.500Z"));
        assert!(p.over);
    }

    #[test]
    fn a_call_is_over_once_every_leg_has_ended_the_callers_among_them() {
        let events = completed_call();
        let callee_done: Vec<CallEvent> = events
            .iter()
            .filter(|e| {
                !(e.leg_uuid.as_deref() == Some(INBOUND) && e.status == Some(CallStatus::Completed))
            })
            .cloned()
            .collect();
        let p = CallProgress::fold(Some(INBOUND), &callee_done);
        assert!(p.ended_at.is_some(), "the callee's leg has ended");
        assert!(!p.over, "the caller's leg has not");
        let callee_only: Vec<CallEvent> = events
            .iter()
            .filter(|e| e.leg_uuid.as_deref() == Some(OUTBOUND))
            .cloned()
            .collect();
        assert!(!CallProgress::fold(Some(INBOUND), &callee_only).over);
    }

    #[test]
    fn a_late_ringing_does_not_move_the_status_backwards() {
        let mut events = completed_call();
        events.push(ev(
            OUTBOUND,
            "ringing",
            "2024-05-01T10:00:02.000Z",
            json!({}),
        ));
        assert_eq!(
            CallProgress::fold(Some(INBOUND), &events).status,
            Some(CallStatus::Completed)
        );
    }

    #[test]
    fn an_unrouted_call_takes_the_status_of_the_inbound_leg() {
        let events = vec![
            ev(INBOUND, "started", "2024-05-01T10:00:00Z", json!({})),
            ev(INBOUND, "answered", "2024-05-01T10:00:01Z", json!({})),
        ];
        let p = CallProgress::fold(Some(INBOUND), &events);
        assert_eq!(p.status, Some(CallStatus::Answered));
        assert_eq!(p.duration_seconds, None, "no connected leg, no talk time");
        assert_eq!(p.callee_answered_at, None, "only the caller's leg answered");
    }

    #[test]
    fn the_callee_picked_up_when_their_leg_answered() {
        let p = CallProgress::fold(Some(INBOUND), &completed_call());
        assert_eq!(
            p.callee_answered_at,
            parse_timestamp("2024-05-01T10:00:05.000Z")
        );
        for status in UNANSWERED {
            let p = CallProgress::fold(Some(INBOUND), &unconnected_call(status));
            assert_eq!(p.callee_answered_at, None, "{status}");
        }
    }

    #[test]
    fn unknown_statuses_and_fields_are_kept_but_do_not_move_the_status() {
        let events = vec![
            ev(INBOUND, "answered", "2024-05-01T10:00:01Z", json!({})),
            ev(
                INBOUND,
                "teleported",
                "2024-05-01T10:00:02Z",
                json!({"brand_new_field": {"x": 1}}),
            ),
        ];
        assert_eq!(
            events[1].status,
            Some(CallStatus::Other("teleported".into()))
        );
        assert_eq!(events[1].payload["brand_new_field"]["x"], 1);
        assert_eq!(
            CallProgress::fold(Some(INBOUND), &events).status,
            Some(CallStatus::Answered)
        );
    }

    #[test]
    fn a_callee_who_did_not_answer_keeps_that_status_after_completed() {
        for status in UNANSWERED {
            let p = CallProgress::fold(Some(INBOUND), &unconnected_call(status));
            assert_eq!(p.status, Some(CallStatus::parse(status)), "{status}");
            assert_eq!(p.answered_at, None, "{status}: never answered");
            assert_eq!(p.duration_seconds, None, "{status}: no talk time");
            assert_eq!(p.price.unwrap().to_string(), "0.0012", "{status}");
            assert_eq!(p.ended_at, parse_timestamp("2024-05-01T10:00:31.000Z"));
        }
    }

    #[test]
    fn without_a_callee_leg_the_callers_leg_decides_the_same_way() {
        let events = vec![
            ev(INBOUND, "started", "2024-05-01T10:00:00Z", json!({})),
            ev(INBOUND, "answered", "2024-05-01T10:00:01Z", json!({})),
            ev(
                INBOUND,
                "completed",
                "2024-05-01T10:00:06Z",
                json!({"duration": "5", "start_time": "2024-05-01T10:00:01Z"}),
            ),
        ];
        let p = CallProgress::fold(Some(INBOUND), &events);
        assert_eq!(p.status, Some(CallStatus::Completed));
        assert_eq!(p.answered_at, parse_timestamp("2024-05-01T10:00:01Z"));
        assert_eq!(p.duration_seconds, Some(5));
        let hung_up_while_ringing = vec![
            ev(INBOUND, "started", "2024-05-01T10:00:00Z", json!({})),
            ev(INBOUND, "cancelled", "2024-05-01T10:00:03Z", json!({})),
            ev(
                INBOUND,
                "completed",
                "2024-05-01T10:00:03Z",
                json!({"duration": "0"}),
            ),
        ];
        let p = CallProgress::fold(Some(INBOUND), &hung_up_while_ringing);
        assert_eq!(p.status, Some(CallStatus::Cancelled));
        assert_eq!((p.answered_at, p.duration_seconds), (None, None));
    }

    /// A call whose callee leg ended `status` without being answered: Vonage reports that
    /// status, then `completed` for the same leg. The caller's leg was answered by Vonage (to
    /// connect it) and completed too.
    fn unconnected_call(status: &str) -> Vec<CallEvent> {
        vec![
            ev(INBOUND, "started", "2024-05-01T10:00:00.000Z", json!({})),
            ev(INBOUND, "answered", "2024-05-01T10:00:01.000Z", json!({})),
            ev(OUTBOUND, "started", "2024-05-01T10:00:01.500Z", json!({})),
            ev(OUTBOUND, "ringing", "2024-05-01T10:00:02.000Z", json!({})),
            ev(OUTBOUND, status, "2024-05-01T10:00:30.000Z", json!({})),
            ev(
                OUTBOUND,
                "completed",
                "2024-05-01T10:00:30.100Z",
                json!({"duration": "0", "price": "0"}),
            ),
            ev(
                INBOUND,
                "completed",
                "2024-05-01T10:00:31.000Z",
                json!({"duration": "30", "price": "0.0012",
                       "start_time": "2024-05-01T10:00:01.000Z"}),
            ),
        ]
    }

    const UNANSWERED: [&str; 6] = [
        "busy",
        "timeout",
        "unanswered",
        "cancelled",
        "rejected",
        "failed",
    ];

    /// Events, and the status, answered time and talk time they must fold to.
    type Scenario = (
        Vec<CallEvent>,
        CallStatus,
        Option<DateTime<Utc>>,
        Option<i64>,
    );

    /// Every scenario with its expected status, answered time and talk time.
    fn scenarios() -> Vec<Scenario> {
        let mut all = vec![(
            completed_call(),
            CallStatus::Completed,
            parse_timestamp("2024-05-01T10:00:05.000Z"),
            Some(132),
        )];
        for status in UNANSWERED {
            all.push((
                unconnected_call(status),
                CallStatus::parse(status),
                None,
                None,
            ));
        }
        all
    }

    proptest! {
        #[test]
        fn the_fold_does_not_depend_on_arrival_order_or_repeats(
            (index, events, repeats) in (0..7usize).prop_flat_map(|i| {
                let events = scenarios().swap_remove(i).0;
                let n = events.len();
                (Just(i), Just(events).prop_shuffle(), proptest::collection::vec(0..n, 0..4))
            })
        ) {
            let (original, status, answered_at, duration) = scenarios().swap_remove(index);
            let mut arrived = events.clone();
            arrived.extend(repeats.into_iter().map(|r| events[r].clone()));
            let folded = CallProgress::fold(Some(INBOUND), &arrived);
            prop_assert_eq!(&folded, &CallProgress::fold(Some(INBOUND), &original));
            prop_assert_eq!(folded.status, Some(status));
            prop_assert_eq!(folded.answered_at, answered_at);
            prop_assert_eq!(folded.duration_seconds, duration);
        }
    }
}
