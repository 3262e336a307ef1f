//! Calls: what happened to one inbound call, folded from the events Vonage reports.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::id::{CallId, PairingId};
use thiserror::Error;

/// What the answer webhook did with an inbound call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// We returned a `connect` to the other participant.
    Routed,
    /// The caller has never been paired with the dialled number.
    NoPairing,
    /// The caller had a pairing on the dialled number, but it is closed or expired.
    PairingEnded,
    /// The caller id was withheld or empty.
    Anonymous,
    /// The caller is not a phone number: an in-app user (`from_user`) or a SIP URI.
    UnsupportedCaller,
    /// The request lacked what Vonage always sends (`uuid`, `conversation_uuid`, `to`).
    InvalidRequest,
}

impl CallOutcome {
    pub const ALL: [Self; 6] = [
        Self::Routed,
        Self::NoPairing,
        Self::PairingEnded,
        Self::Anonymous,
        Self::UnsupportedCaller,
        Self::InvalidRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Routed => "routed",
            Self::NoPairing => "no_pairing",
            Self::PairingEnded => "pairing_ended",
            Self::Anonymous => "anonymous",
            Self::UnsupportedCaller => "unsupported_caller",
            Self::InvalidRequest => "invalid_request",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// Written as its name (`routed`, `no_pairing`, ...), as the spool and the database hold it.
impl serde::Serialize for CallOutcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for CallOutcome {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown call outcome {name:?}")))
    }
}

/// A call as the answer webhook recorded it: what it decided, before any event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallRecord {
    pub id: CallId,
    pub conversation_uuid: Option<String>,
    /// The caller's leg.
    pub uuid: Option<String>,
    pub pairing_id: Option<PairingId>,
    /// The caller's number (E.164 digits); none when withheld or not a number.
    pub caller: Option<String>,
    pub proxy_number: Option<String>,
    /// The number the call was connected to.
    pub callee: Option<String>,
    pub outcome: CallOutcome,
    pub started_at: DateTime<Utc>,
    /// What kind of endpoint the caller is, as Vonage reported it (`phone`, `sip`, `app`, ...).
    /// Absent from records spooled by earlier versions.
    #[serde(default)]
    pub endpoint_type: Option<String>,
}

/// An event webhook payload as received.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventRecord {
    pub payload: Value,
    pub received_at: DateTime<Utc>,
}

/// How far a call leg has got. Statuses Vonage may add later are kept as `Other` and never move
/// a call's status.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallStatus {
    Started,
    Ringing,
    Answered,
    Completed,
    Busy,
    Cancelled,
    Unanswered,
    Rejected,
    Failed,
    Timeout,
    Disconnected,
    Other(String),
}

impl CallStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "started" => Self::Started,
            "ringing" => Self::Ringing,
            "answered" => Self::Answered,
            "completed" => Self::Completed,
            "busy" => Self::Busy,
            "cancelled" => Self::Cancelled,
            "unanswered" => Self::Unanswered,
            "rejected" => Self::Rejected,
            "failed" => Self::Failed,
            "timeout" => Self::Timeout,
            "disconnected" => Self::Disconnected,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Started => "started",
            Self::Ringing => "ringing",
            Self::Answered => "answered",
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::Cancelled => "cancelled",
            Self::Unanswered => "unanswered",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Disconnected => "disconnected",
            Self::Other(s) => s,
        }
    }

    /// Progress order: a status of a lower rank never replaces one of a higher rank. `0` means
    /// the status is not a step of the call's progress (machine detection, unknown values).
    pub fn rank(&self) -> u8 {
        match self {
            Self::Started => 1,
            Self::Ringing => 2,
            Self::Answered => 3,
            Self::Completed
            | Self::Busy
            | Self::Cancelled
            | Self::Unanswered
            | Self::Rejected
            | Self::Failed
            | Self::Timeout
            | Self::Disconnected => 4,
            Self::Other(_) => 0,
        }
    }

    pub fn is_final(&self) -> bool {
        self.rank() == 4
    }

    /// The leg ended without being answered: the callee was busy, did not answer in time,
    /// could not be reached or refused, or the caller hung up while it rang.
    pub fn ended_unanswered(&self) -> bool {
        matches!(
            self,
            Self::Busy
                | Self::Timeout
                | Self::Unanswered
                | Self::Cancelled
                | Self::Rejected
                | Self::Failed
        )
    }

    /// The callee could not be reached or would not take the call: the caller is told so
    /// (`cancelled` is the caller hanging up, so there is nobody left to tell).
    pub fn callee_unavailable(&self) -> bool {
        self.ended_unanswered() && *self != Self::Cancelled
    }

    /// Every status Vonage documents (`Other` aside).
    pub const KNOWN: [&'static str; 11] = [
        "started",
        "ringing",
        "answered",
        "completed",
        "busy",
        "cancelled",
        "unanswered",
        "rejected",
        "failed",
        "timeout",
        "disconnected",
    ];
}

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

/// The longest identifier (conversation, leg or recording uuid) an event may carry. Vonage's are
/// under 50 characters; longer ones are refused before they reach the database.
pub const MAX_ID_CHARS: usize = 100;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EventError {
    #[error("the event is not a JSON object")]
    NotAnObject,
    #[error(
        "the event names no conversation (conversation_uuid, or conversation_uuid_from and \
         conversation_uuid_to for a transfer)"
    )]
    NoConversation,
    #[error("field `{0}` is longer than {MAX_ID_CHARS} characters")]
    TooLong(&'static str),
    #[error("the event holds a NUL character, which no field may contain")]
    NulCharacter,
}

/// Whether any key or string in a JSON value holds U+0000 (Postgres cannot store it).
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// One event webhook payload, with the fields we fold into a call. The whole payload is kept as
/// received, so nothing Vonage sends is lost, whatever fields it adds; a field we use but cannot
/// read (a wrong type, a date that is not one) is left out of the fold and named in `unreadable`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEvent {
    /// The conversation the event belongs to; for a transfer, the one the leg left
    /// (`conversation_uuid_from`).
    pub conversation_uuid: String,
    /// For a transfer, the conversation the leg joined (`conversation_uuid_to`): the event
    /// belongs to that call too.
    pub linked_conversation_uuid: Option<String>,
    /// The leg this event is about (`uuid`, or `call_uuid` on machine-detection events).
    pub leg_uuid: Option<String>,
    pub status: Option<CallStatus>,
    pub direction: Option<String>,
    pub timestamp: Option<DateTime<Utc>>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub duration_seconds: Option<i64>,
    pub price: Option<Money>,
    pub rate: Option<Money>,
    /// Fields present that could not be read, and so play no part in the call record.
    pub unreadable: Vec<&'static str>,
    pub payload: Value,
}

/// Reads the fields of an event, noting those it cannot read.
struct Reader<'a> {
    obj: &'a Map<String, Value>,
    unreadable: Vec<&'static str>,
}

impl Reader<'_> {
    /// A uuid Vonage sends as a string (a number is taken as its digits). Longer than
    /// [`MAX_ID_CHARS`]: an error, as no genuine event has one.
    fn id(&mut self, key: &'static str) -> Result<Option<String>, EventError> {
        let value = match self.obj.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => {
                self.unreadable.push(key);
                return Ok(None);
            }
        };
        if value.chars().count() > MAX_ID_CHARS {
            return Err(EventError::TooLong(key));
        }
        Ok((!value.is_empty()).then_some(value))
    }

    /// A short word such as a status or a direction.
    fn word(&mut self, key: &'static str) -> Option<String> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) if s.chars().count() <= MAX_ID_CHARS => Some(s.clone()),
            Some(_) => {
                self.unreadable.push(key);
                None
            }
        }
    }

    /// A number Vonage may send as a JSON number or as a numeric string.
    fn money(&mut self, key: &'static str) -> Option<Money> {
        let parsed = match self.obj.get(key) {
            None | Some(Value::Null) => return None,
            Some(Value::String(s)) if s.trim().is_empty() => return None,
            Some(Value::String(s)) => Money::parse(s),
            Some(Value::Number(n)) => Money::parse(&n.to_string()),
            Some(_) => None,
        };
        if parsed.is_none() {
            self.unreadable.push(key);
        }
        parsed
    }

    fn seconds(&mut self, key: &'static str) -> Option<i64> {
        let money = self.money(key)?;
        let whole = money.to_string().parse::<i64>().ok();
        if whole.is_none() {
            self.unreadable.push(key);
        }
        whole
    }

    fn time(&mut self, key: &'static str) -> Option<DateTime<Utc>> {
        let raw = self.word(key)?;
        let parsed = parse_timestamp(&raw);
        if parsed.is_none() {
            self.unreadable.push(key);
        }
        parsed
    }
}

impl CallEvent {
    /// Reads an event. Refused only when it cannot be stored or filed: not a JSON object, no
    /// conversation named, an identifier too long, a NUL character. Any other field that cannot
    /// be read is kept in the payload and named in `unreadable`.
    pub fn parse(payload: Value) -> Result<Self, EventError> {
        let obj = payload.as_object().ok_or(EventError::NotAnObject)?;
        if holds_nul(&payload) {
            return Err(EventError::NulCharacter);
        }
        let mut r = Reader {
            obj,
            unreadable: Vec::new(),
        };
        let conversation = r.id("conversation_uuid")?;
        let moved_from = r.id("conversation_uuid_from")?;
        let moved_to = r.id("conversation_uuid_to")?;
        let leg_uuid = match r.id("uuid")? {
            Some(u) => Some(u),
            None => r.id("call_uuid")?,
        };
        r.id("recording_uuid")?;
        let conversation_uuid = conversation
            .clone()
            .or_else(|| moved_from.clone())
            .or_else(|| moved_to.clone())
            .ok_or(EventError::NoConversation)?;
        let linked_conversation_uuid = [moved_to, moved_from]
            .into_iter()
            .flatten()
            .find(|c| *c != conversation_uuid);
        let status = r.word("status").map(|s| CallStatus::parse(&s));
        let direction = r.word("direction");
        let timestamp = r.time("timestamp");
        let start_time = r.time("start_time");
        let end_time = r.time("end_time");
        let duration_seconds = r.seconds("duration");
        let price = r.money("price");
        let rate = r.money("rate");
        let unreadable = r.unreadable;
        Ok(Self {
            conversation_uuid,
            linked_conversation_uuid,
            leg_uuid,
            status,
            direction,
            timestamp,
            start_time,
            end_time,
            duration_seconds,
            price,
            rate,
            unreadable,
            payload,
        })
    }

    /// Every conversation the event belongs to (two for a transfer).
    pub fn conversations(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.conversation_uuid.as_str())
            .chain(self.linked_conversation_uuid.as_deref())
    }

    /// The key under which a retried delivery of this event is recognised as the same event:
    /// leg, status and timestamp for call-state events, else a hash of the whole payload with its
    /// keys in a fixed order.
    pub fn dedup_key(&self) -> String {
        match (&self.leg_uuid, &self.status, &self.timestamp) {
            (Some(leg), Some(status), Some(ts)) => {
                format!("status:{leg}:{}:{}", status.as_str(), ts.timestamp_micros())
            }
            _ => {
                // serde_json's map keeps keys sorted, so equal payloads serialise equally.
                let canonical = self.payload.to_string();
                let digest = Sha256::digest(canonical.as_bytes());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                format!("payload:{hex}")
            }
        }
    }
}

/// The earliest and latest instants Postgres's `timestamptz` and every part of this service can
/// hold: years 1 to 9999.
pub fn timestamp_in_range(t: &DateTime<Utc>) -> bool {
    (1..=9999).contains(&chrono::Datelike::year(t))
}

/// Accepts RFC 3339 (with or without fractional seconds) and `YYYY-MM-DD HH:MM:SS` in UTC, in
/// the years 1 to 9999.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|n| n.and_utc())
        })
        .filter(timestamp_in_range)
}

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
    pub ended_at: Option<DateTime<Utc>>,
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
        let deciding = if has_status(&callee_legs) {
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
            ended_at,
            duration_seconds,
            price,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const INBOUND: &str = "leg-in";
    const OUTBOUND: &str = "leg-out";

    fn ev(leg: &str, status: &str, ts: &str, extra: Value) -> CallEvent {
        let mut v = json!({
            "uuid": leg,
            "conversation_uuid": "CON-1",
            "status": status,
            "direction": if leg == INBOUND { "inbound" } else { "outbound" },
            "timestamp": ts,
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        CallEvent::parse(v).unwrap()
    }

    fn completed_call() -> Vec<CallEvent> {
        vec![
            ev(INBOUND, "started", "2024-05-01T10:00:00.000Z", json!({})),
            ev(INBOUND, "answered", "2024-05-01T10:00:01.000Z", json!({})),
            ev(OUTBOUND, "started", "2024-05-01T10:00:01.500Z", json!({})),
            ev(OUTBOUND, "ringing", "2024-05-01T10:00:02.000Z", json!({})),
            ev(OUTBOUND, "answered", "2024-05-01T10:00:05.000Z", json!({})),
            ev(
                OUTBOUND,
                "completed",
                "2024-05-01T10:02:17.412Z",
                json!({"duration": "132", "price": "0.02640000", "rate": "0.012",
                       "start_time": "2024-05-01T10:00:05.000Z", "end_time": "2024-05-01T10:02:17.000Z"}),
            ),
            ev(
                INBOUND,
                "completed",
                "2024-05-01T10:02:17.500Z",
                json!({"duration": 137, "price": 0.0005}),
            ),
        ]
    }

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
    fn duration_rate_and_price_are_read_from_strings_or_numbers() {
        let a = ev(
            OUTBOUND,
            "completed",
            "2024-05-01T10:00:01Z",
            json!({"duration": "7", "price": "0.00052500", "rate": "0.00450000"}),
        );
        let b = ev(
            OUTBOUND,
            "completed",
            "2024-05-01T10:00:01Z",
            json!({"duration": 7, "price": 0.000525, "rate": 0.0045}),
        );
        assert_eq!(a.duration_seconds, Some(7));
        assert_eq!(a.price, b.price);
        assert_eq!(a.rate, b.rate);
        assert_eq!(a.price.unwrap().to_string(), "0.000525");
    }

    #[test]
    fn only_events_that_cannot_be_stored_or_filed_are_refused() {
        assert_eq!(
            CallEvent::parse(json!([1, 2])),
            Err(EventError::NotAnObject)
        );
        assert_eq!(
            CallEvent::parse(json!({"uuid": "a", "status": "answered"})),
            Err(EventError::NoConversation)
        );
        assert_eq!(
            CallEvent::parse(json!({"conversation_uuid": "x".repeat(101)})),
            Err(EventError::TooLong("conversation_uuid"))
        );
        assert_eq!(
            CallEvent::parse(json!({"conversation_uuid": "CON-1", "uuid": "y".repeat(60_000)})),
            Err(EventError::TooLong("uuid"))
        );
        assert_eq!(
            CallEvent::parse(json!({"conversation_uuid": "CON-1", "extra": {"deep": ["x\u{0}y"]}})),
            Err(EventError::NulCharacter)
        );
        assert!(CallEvent::parse(json!({"conversation_uuid": "x".repeat(100)})).is_ok());
    }

    #[test]
    fn fields_that_do_not_parse_are_kept_but_left_out_of_the_fold() {
        let payload = json!({"uuid": "a", "conversation_uuid": "CON-1", "status": 5,
            "timestamp": "yesterday", "price": "-1", "duration": "1.5",
            "start_time": "-5000-01-01T00:00:00Z", "direction": {"x": 1}});
        let e = CallEvent::parse(payload.clone()).unwrap();
        assert_eq!(e.status, None);
        assert_eq!(e.timestamp, None);
        assert_eq!(e.price, None);
        assert_eq!(e.duration_seconds, None);
        assert_eq!(e.start_time, None);
        assert_eq!(e.direction, None);
        let mut unreadable = e.unreadable.clone();
        unreadable.sort();
        assert_eq!(
            unreadable,
            [
                "direction",
                "duration",
                "price",
                "start_time",
                "status",
                "timestamp"
            ]
        );
        assert_eq!(e.payload, payload, "kept as received");
    }

    #[test]
    fn a_transfer_belongs_to_both_conversations() {
        let e = CallEvent::parse(json!({"uuid": "leg", "type": "transfer",
            "conversation_uuid_from": "CON-a", "conversation_uuid_to": "CON-b",
            "timestamp": "2020-07-01T20:45:34.796Z"}))
        .unwrap();
        assert_eq!(e.conversations().collect::<Vec<_>>(), ["CON-a", "CON-b"]);
        let error = CallEvent::parse(json!({"reason": "Syntax error in NCCO",
            "conversation_uuid": "CON-a", "timestamp": "2020-07-01T20:45:34.796Z"}))
        .unwrap();
        assert_eq!(error.conversations().collect::<Vec<_>>(), ["CON-a"]);
    }

    #[test]
    fn timestamps_outside_what_postgres_holds_are_not_timestamps() {
        assert!(parse_timestamp("2024-05-01T10:00:00Z").is_some());
        assert!(parse_timestamp("0001-01-01T00:00:00Z").is_some());
        assert!(parse_timestamp("9999-12-31T23:59:59Z").is_some());
        assert_eq!(parse_timestamp("-5000-01-01T00:00:00Z"), None);
        assert_eq!(parse_timestamp("0000-01-01T00:00:00Z"), None);
        assert_eq!(parse_timestamp("+10000-01-01T00:00:00Z"), None);
    }

    #[test]
    fn machine_detection_events_name_the_leg_in_call_uuid() {
        let e = CallEvent::parse(json!({"call_uuid": "leg-out", "conversation_uuid": "CON-1",
            "status": "human", "timestamp": "2024-05-01T10:00:01Z"}))
        .unwrap();
        assert_eq!(e.leg_uuid.as_deref(), Some("leg-out"));
    }

    #[test]
    fn a_retried_event_has_the_same_dedup_key() {
        let a = ev(INBOUND, "answered", "2024-05-01T10:00:01.000Z", json!({}));
        let b = ev(INBOUND, "answered", "2024-05-01T10:00:01Z", json!({}));
        let c = ev(INBOUND, "answered", "2024-05-01T10:00:02Z", json!({}));
        assert_eq!(a.dedup_key(), b.dedup_key());
        assert_ne!(a.dedup_key(), c.dedup_key());
        let rec1 = CallEvent::parse(json!({"conversation_uuid": "CON-1", "recording_url": "u", "timestamp": "2024-05-01T10:00:01Z"})).unwrap();
        let rec2 = CallEvent::parse(json!({"timestamp": "2024-05-01T10:00:01Z", "recording_url": "u", "conversation_uuid": "CON-1"})).unwrap();
        assert_eq!(rec1.dedup_key(), rec2.dedup_key());
        // Found by fuzzing: a payload read back from the spool must hash as it did first.
        let odd = CallEvent::parse(
            serde_json::from_str(
                r#"{"uuid":"a","conversation_uuid":"CON-1","n":222222222222222222222245,"":""}"#,
            )
            .unwrap(),
        )
        .unwrap();
        let again =
            CallEvent::parse(serde_json::from_str(&odd.payload.to_string()).unwrap()).unwrap();
        assert_eq!(odd.dedup_key(), again.dedup_key());
    }

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

        #[test]
        fn money_round_trips(units in 0i128..10i128.pow(20)) {
            let m = Money(units);
            prop_assert_eq!(Money::parse(&m.to_string()), Some(m));
        }
    }
}
