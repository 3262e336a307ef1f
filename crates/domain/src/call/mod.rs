//! Calls: what happened to one inbound call, as the answer webhook decided it and as the events
//! Vonage reports tell it.
//!
//! - this module: the call record the answer webhook writes ([`CallRecord`], its
//!   [`CallOutcome`]), the events as received ([`EventRecord`]), and a leg's [`CallStatus`];
//! - [`event`]: reading an event webhook's payload ([`CallEvent`]);
//! - [`progress`]: folding a conversation's events into its call ([`CallProgress`]);
//! - [`money`]: prices, exactly.

pub mod event;
pub mod money;
pub mod progress;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::id::{CallId, PairingId};

pub use event::{CallEvent, EventError, MAX_ID_CHARS, parse_timestamp, timestamp_in_range};
pub use money::Money;
pub use progress::CallProgress;

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
    /// The marketplace's intercept said not to connect it (or failed, under
    /// `INTERCEPT_ON_FAILURE=deny`).
    Intercepted,
    /// No active pairing; the marketplace's out-of-session answer was a message.
    OutOfSessionMessage,
    /// No active pairing; the marketplace had one made, and the call was connected through it.
    OutOfSessionConnected,
    /// No active pairing; the marketplace asked for one, but it could not be made with the
    /// caller keeping the number they dialled.
    OutOfSessionRefused,
    /// Not a participant of the dialled number, which has PIN access: asked for a PIN, and not
    /// (yet) connected or refused; the caller may have hung up.
    PinPrompted,
    /// Connected by a participant's PIN, as that participant.
    PinRouted,
    /// Asked for a PIN and refused: every attempt wrong, or the caller is throttled.
    PinRefused,
}

impl CallOutcome {
    pub const ALL: [Self; 13] = [
        Self::Routed,
        Self::NoPairing,
        Self::PairingEnded,
        Self::Anonymous,
        Self::UnsupportedCaller,
        Self::InvalidRequest,
        Self::Intercepted,
        Self::OutOfSessionMessage,
        Self::OutOfSessionConnected,
        Self::OutOfSessionRefused,
        Self::PinPrompted,
        Self::PinRouted,
        Self::PinRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Routed => "routed",
            Self::NoPairing => "no_pairing",
            Self::PairingEnded => "pairing_ended",
            Self::Anonymous => "anonymous",
            Self::UnsupportedCaller => "unsupported_caller",
            Self::InvalidRequest => "invalid_request",
            Self::Intercepted => "intercepted",
            Self::OutOfSessionMessage => "out_of_session_message",
            Self::OutOfSessionConnected => "out_of_session_connected",
            Self::OutOfSessionRefused => "out_of_session_refused",
            Self::PinPrompted => "pin_prompted",
            Self::PinRouted => "pin_routed",
            Self::PinRefused => "pin_refused",
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

#[cfg(test)]
pub(crate) mod test_events {
    //! Events of a call, as the tests of the event and the fold build them.

    use serde_json::{Value, json};

    use super::CallEvent;

    pub const INBOUND: &str = "leg-in";
    pub const OUTBOUND: &str = "leg-out";

    pub fn ev(leg: &str, status: &str, ts: &str, extra: Value) -> CallEvent {
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

    pub fn completed_call() -> Vec<CallEvent> {
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
}
