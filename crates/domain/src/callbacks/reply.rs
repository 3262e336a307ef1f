//! What the marketplace answers when it is asked about a call: the intercept (connect or not)
//! and the out-of-session request (a message, or a pairing to make and connect).

use serde_json::{Map, Value};

use crate::text;

/// The longest message we let the marketplace have spoken to a caller (Vonage's limit for a
/// `talk` action's text is 1,500 characters).
pub const MAX_SPOKEN_CHARS: usize = 1500;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("the reply is not a JSON object")]
    NotAnObject,
    #[error("the reply's action is missing or not one of {0}")]
    UnknownAction(&'static str),
    #[error(
        "the reply's {0} must be 1 to {MAX_SPOKEN_CHARS} characters without control or \
         invisible characters"
    )]
    BadText(&'static str),
    #[error("the reply's pairing must be a JSON object (a pairing create body)")]
    BadPairing,
}

/// The intercept's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterceptDecision {
    /// `{"action": "allow"}`: connect the call.
    Allow,
    /// `{"action": "deny", "message": "..."}`: do not; speak the message (or, without one, the
    /// no-route message).
    Deny { message: Option<String> },
}

impl InterceptDecision {
    pub fn parse(body: &[u8]) -> Result<Self, ReplyError> {
        let reply = object(body)?;
        match reply.get("action").and_then(Value::as_str) {
            Some("allow") => Ok(Self::Allow),
            Some("deny") => Ok(Self::Deny {
                message: spoken(&reply, "message")?,
            }),
            _ => Err(ReplyError::UnknownAction("allow, deny")),
        }
    }
}

/// The out-of-session request's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum OutOfSessionReply {
    /// `{"action": "message", "text": "..."}`: speak it to the caller.
    Message { text: String },
    /// `{"action": "connect", "pairing": {...}}`: make this pairing (a create body, in which
    /// the caller keeps the number they dialled) and connect the call.
    Connect { pairing: Value },
}

impl OutOfSessionReply {
    pub fn parse(body: &[u8]) -> Result<Self, ReplyError> {
        let reply = object(body)?;
        match reply.get("action").and_then(Value::as_str) {
            Some("message") => Ok(Self::Message {
                text: spoken(&reply, "text")?.ok_or(ReplyError::BadText("text"))?,
            }),
            Some("connect") => match reply.get("pairing") {
                Some(p @ Value::Object(_)) => Ok(Self::Connect { pairing: p.clone() }),
                _ => Err(ReplyError::BadPairing),
            },
            _ => Err(ReplyError::UnknownAction("message, connect")),
        }
    }
}

fn object(body: &[u8]) -> Result<Map<String, Value>, ReplyError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ReplyError::NotAnObject),
    }
}

/// A text to speak, if the reply has the field; an error if it is there but not clean text.
fn spoken(reply: &Map<String, Value>, field: &'static str) -> Result<Option<String>, ReplyError> {
    match reply.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if text::is_clean(s, MAX_SPOKEN_CHARS) => Ok(Some(s.clone())),
        Some(_) => Err(ReplyError::BadText(field)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intercept_replies_are_read_and_anything_else_is_an_error() {
        assert_eq!(
            InterceptDecision::parse(br#"{"action":"allow","extra":1}"#),
            Ok(InterceptDecision::Allow)
        );
        assert_eq!(
            InterceptDecision::parse(br#"{"action":"deny","message":"Not now."}"#),
            Ok(InterceptDecision::Deny {
                message: Some("Not now.".into())
            })
        );
        assert_eq!(
            InterceptDecision::parse(br#"{"action":"deny"}"#),
            Ok(InterceptDecision::Deny { message: None })
        );
        for bad in [
            &br#"{"action":"maybe"}"#[..],
            br#"{}"#,
            br#"[]"#,
            b"allow",
            br#"{"action":"deny","message":""}"#,
            br#"{"action":"deny","message":"a\u202eb"}"#,
            br#"{"action":"deny","message":7}"#,
        ] {
            assert!(
                InterceptDecision::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!(
            r#"{{"action":"deny","message":"{}"}}"#,
            "x".repeat(MAX_SPOKEN_CHARS + 1)
        );
        assert!(InterceptDecision::parse(long.as_bytes()).is_err());
    }

    #[test]
    fn out_of_session_replies_are_read_and_anything_else_is_an_error() {
        assert_eq!(
            OutOfSessionReply::parse(br#"{"action":"message","text":"Your trip is over."}"#),
            Ok(OutOfSessionReply::Message {
                text: "Your trip is over.".into()
            })
        );
        let connect =
            OutOfSessionReply::parse(br#"{"action":"connect","pairing":{"participants":[]}}"#);
        assert_eq!(
            connect,
            Ok(OutOfSessionReply::Connect {
                pairing: serde_json::json!({"participants": []})
            })
        );
        for bad in [
            &br#"{"action":"message"}"#[..],
            br#"{"action":"connect"}"#,
            br#"{"action":"connect","pairing":[1]}"#,
            br#"{"action":"allow"}"#,
            b"null",
        ] {
            assert!(
                OutOfSessionReply::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
