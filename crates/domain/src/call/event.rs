//! Reading an event webhook's payload: what it is about, and the fields folded into its call.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::{CallStatus, Money};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::test_events::{INBOUND, OUTBOUND, ev};
    use serde_json::json;

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
}
