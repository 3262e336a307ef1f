//! Callbacks to the marketplace: what happened (pairings made, re-timed, closed and expired;
//! calls started, answered and ended; the pool running out), as messages in the Standard
//! Webhooks shape, and the rules of their delivery.
//!
//! A message's body is `{"type": "...", "timestamp": "<RFC 3339>", "data": {...}}`. The data
//! carries ids, references, labels, proxy numbers and statuses, never a participant's real
//! number: the marketplace knows its people by reference and label. The types here are built
//! from the model's types by the functions below and nothing else, so that a real number cannot
//! reach a payload by accident.

mod reply;
mod retry;
mod url;

pub use reply::{InterceptDecision, OutOfSessionReply, ReplyError};
pub use retry::{AfterAttempt, Attempt, DeliveryState, RetrySchedule, RetryScheduleError};
pub use url::{CallbackUrl, CallbackUrlError, MAX_URL_LEN};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::call::{CallOutcome, CallStatus, Money};
use crate::id::{CallId, MessageId, PairingId};
use crate::pairing::{Pairing, PairingStatus};
use crate::phone::{CountryCode, PhoneNumber};

/// What a message tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    PairingCreated,
    /// The pairing's expiry changed.
    PairingUpdated,
    PairingClosed,
    PairingExpired,
    /// The answer webhook decided what to do with an inbound call.
    CallStarted,
    /// The callee picked up.
    CallAnswered,
    /// The call is over: its final status, talk time and price.
    CallEnded,
    /// A pairing was refused for want of a free pool number.
    PoolExhausted,
}

impl EventType {
    pub const ALL: [Self; 8] = [
        Self::PairingCreated,
        Self::PairingUpdated,
        Self::PairingClosed,
        Self::PairingExpired,
        Self::CallStarted,
        Self::CallAnswered,
        Self::CallEnded,
        Self::PoolExhausted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PairingCreated => "pairing.created",
            Self::PairingUpdated => "pairing.updated",
            Self::PairingClosed => "pairing.closed",
            Self::PairingExpired => "pairing.expired",
            Self::CallStarted => "call.started",
            Self::CallAnswered => "call.answered",
            Self::CallEnded => "call.ended",
            Self::PoolExhausted => "pool.exhausted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// This type's bit in a set of types ([`EventTypes::bits`]).
    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// The event types an endpoint subscribes to: every type, or the ones listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTypes {
    All,
    Only(Vec<EventType>),
}

impl EventTypes {
    /// Reads a list of type names. An empty list, an unknown name or a name given twice is an
    /// error naming it.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        if names.is_empty() {
            return Err("event_types must name at least one type (leave it out for all)".into());
        }
        let mut types = Vec::with_capacity(names.len());
        for name in names {
            let name = name.as_ref();
            let t = EventType::parse(name).ok_or_else(|| {
                format!(
                    "unknown event type {name:?}; the types are {}",
                    EventType::ALL.map(EventType::as_str).join(", ")
                )
            })?;
            if types.contains(&t) {
                return Err(format!("event type {name:?} is listed twice"));
            }
            types.push(t);
        }
        Ok(Self::Only(types))
    }

    pub fn contains(&self, t: EventType) -> bool {
        match self {
            Self::All => true,
            Self::Only(types) => types.contains(&t),
        }
    }

    /// The set as bits ([`EventType::bit`]).
    pub fn bits(&self) -> u16 {
        EventType::ALL
            .into_iter()
            .filter(|t| self.contains(*t))
            .fold(0, |bits, t| bits | t.bit())
    }

    /// The names, or none for every type.
    pub fn names(&self) -> Option<Vec<&'static str>> {
        match self {
            Self::All => None,
            Self::Only(types) => Some(types.iter().map(|t| t.as_str()).collect()),
        }
    }
}

/// A message to the marketplace, ready to be stored and sent: its body is fixed once made, so
/// that every attempt sends (and signs) the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    pub event_type: EventType,
    /// When what it tells happened.
    pub occurred_at: DateTime<Utc>,
    /// Messages with the same key reach an endpoint in the order they were made: the pairing
    /// they are about (or, for a call without one, its conversation). None: no order to keep.
    pub ordering_key: Option<String>,
    /// The JSON body, as sent.
    pub body: String,
}

impl Message {
    fn new(
        event_type: EventType,
        occurred_at: DateTime<Utc>,
        ordering_key: Option<String>,
        data: Value,
    ) -> Self {
        let body = json!({
            "type": event_type.as_str(),
            "timestamp": rfc3339(occurred_at),
            "data": data,
        });
        Self {
            id: MessageId::new(),
            event_type,
            occurred_at,
            ordering_key,
            body: body.to_string(),
        }
    }

    /// `pairing.created`, `pairing.updated`, `pairing.closed` or `pairing.expired`, with the
    /// pairing as it is after the change.
    pub fn pairing(event_type: EventType, pairing: &Pairing, occurred_at: DateTime<Utc>) -> Self {
        let status = match event_type {
            // Told by the sweeper, which may read the row a moment after the expiry.
            EventType::PairingExpired => PairingStatus::Expired,
            _ => pairing.status(),
        };
        let participants = pairing
            .participants
            .each_ref()
            .map(|p| json!({"label": p.label, "proxy_number": p.proxy_number.expose()}));
        let data = json!({
            "pairing_id": pairing.id,
            "reference": pairing.reference,
            "status": status.as_str(),
            "created_at": rfc3339(pairing.created_at),
            "expires_at": rfc3339(pairing.expires_at),
            "closed_at": pairing.closed_at.map(rfc3339),
            "participants": participants,
        });
        Self::new(
            event_type,
            occurred_at,
            Some(format!("pairing:{}", pairing.id)),
            data,
        )
    }

    /// `call.started`: what the answer webhook decided.
    pub fn call_started(call: &CallContext) -> Self {
        Self::new(
            EventType::CallStarted,
            call.started_at,
            Some(call.ordering_key()),
            call.data(),
        )
    }

    /// `call.answered`: the callee picked up at `answered_at`.
    pub fn call_answered(call: &CallContext, answered_at: DateTime<Utc>) -> Self {
        let mut data = call.data();
        data["answered_at"] = json!(rfc3339(answered_at));
        Self::new(
            EventType::CallAnswered,
            answered_at,
            Some(call.ordering_key()),
            data,
        )
    }

    /// `call.ended`: how the call ended, its talk time and price.
    pub fn call_ended(call: &CallContext, end: &CallEnd) -> Self {
        let mut data = call.data();
        data["status"] = json!(end.status.as_ref().map(CallStatus::as_str));
        data["answered_at"] = json!(end.answered_at.map(rfc3339));
        data["ended_at"] = json!(rfc3339(end.ended_at));
        data["talk_seconds"] = json!(end.talk_seconds);
        data["price"] = json!(end.price.as_ref().map(Money::to_string));
        Self::new(
            EventType::CallEnded,
            end.ended_at,
            Some(call.ordering_key()),
            data,
        )
    }

    /// `pool.exhausted`: a create refused for want of a number of `country` (none: of any
    /// country). Names the request's reference, never a person's number.
    pub fn pool_exhausted(
        country: Option<&CountryCode>,
        reference: Option<&str>,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        Self::new(
            EventType::PoolExhausted,
            occurred_at,
            None,
            json!({"country": country.map(CountryCode::as_str), "reference": reference}),
        )
    }
}

/// The body of the intercept request: `call.intercept` with the data `call.started` would carry.
pub fn intercept_body(call: &CallContext, at: DateTime<Utc>) -> String {
    json!({"type": "call.intercept", "timestamp": rfc3339(at), "data": call.data()}).to_string()
}

/// What the out-of-session request tells about the caller: their number masked, and, when they
/// were a participant of the most recent pairing on the dialled number, which one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfSessionCall {
    pub call_id: CallId,
    pub conversation_uuid: String,
    pub caller: PhoneNumber,
    pub dialled: PhoneNumber,
    pub recent: Option<RecentPairing>,
}

/// The caller's most recent pairing on the dialled number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentPairing {
    pub pairing_id: PairingId,
    pub reference: Option<String>,
    pub status: PairingStatus,
    /// The caller's position (0 or 1) in it, and their label.
    pub position: usize,
    pub label: Option<String>,
}

/// The body of the out-of-session request. The caller's number is masked: the marketplace
/// knows who called from the recent pairing (its reference and the caller's position in it).
pub fn out_of_session_body(call: &OutOfSessionCall, at: DateTime<Utc>) -> String {
    let recent = call.recent.as_ref().map(|r| {
        json!({
            "pairing_id": r.pairing_id,
            "reference": r.reference,
            "status": r.status.as_str(),
            "caller_position": r.position,
            "caller_label": r.label,
        })
    });
    json!({
        "type": "call.out_of_session",
        "timestamp": rfc3339(at),
        "data": {
            "call_id": call.call_id,
            "conversation_uuid": call.conversation_uuid,
            "caller_masked": call.caller.masked(),
            "dialled_number": call.dialled.expose(),
            "recent_pairing": recent,
        },
    })
    .to_string()
}

/// A call as its messages tell it: what the answer decided, with the pairing's reference and
/// the two people's labels (read from the pairing, never their numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    pub call_id: CallId,
    pub conversation_uuid: Option<String>,
    pub outcome: CallOutcome,
    pub pairing_id: Option<PairingId>,
    pub reference: Option<String>,
    pub caller_label: Option<String>,
    pub callee_label: Option<String>,
    /// The proxy number dialled (one of ours).
    pub proxy_number: Option<String>,
    pub started_at: DateTime<Utc>,
}

impl CallContext {
    /// The pairing the call was about, or else its conversation (or else the call itself).
    fn ordering_key(&self) -> String {
        match (&self.pairing_id, &self.conversation_uuid) {
            (Some(p), _) => format!("pairing:{p}"),
            (None, Some(c)) => format!("conversation:{c}"),
            (None, None) => format!("call:{}", self.call_id),
        }
    }

    fn data(&self) -> Value {
        json!({
            "call_id": self.call_id,
            "conversation_uuid": self.conversation_uuid,
            "outcome": self.outcome.as_str(),
            "pairing_id": self.pairing_id,
            "reference": self.reference,
            "caller_label": self.caller_label,
            "callee_label": self.callee_label,
            "proxy_number": self.proxy_number,
            "started_at": rfc3339(self.started_at),
        })
    }
}

/// How a call ended, as its events were folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEnd {
    pub status: Option<CallStatus>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: DateTime<Utc>,
    pub talk_seconds: Option<i64>,
    pub price: Option<Money>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests;
