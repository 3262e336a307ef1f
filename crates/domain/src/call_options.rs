//! Call options: what a routed call does besides connecting the two people. An announcement
//! played to the caller, a whisper played to the callee before the legs are bridged, recording,
//! a limit on the call's length and how long the callee's phone rings.
//!
//! A pairing stores only the options its creator set ([`CallOptionsOverrides`]); every other
//! option follows the service's defaults ([`CallOptions`], from the configuration) at the time
//! of the call.

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::text;

/// Vonage's maximum call length (the `limit` of a `connect`), and ours.
pub const MAX_CALL_SECONDS: u32 = 7200;
/// Bounds of the ring timeout (the `timeout` of a `connect`), as Vonage's SDKs check them.
pub const MIN_RING_TIMEOUT_SECONDS: u32 = 3;
pub const MAX_RING_TIMEOUT_SECONDS: u32 = 7200;
/// The longest announcement: Vonage's limit on a `talk`.
pub const MAX_ANNOUNCEMENT_CHARS: usize = 1500;
/// The longest whisper template. The whisper travels, rendered, in the query string of the
/// callee's `onAnswer` URL, so it is kept short (a whisper is one sentence).
pub const MAX_WHISPER_CHARS: usize = 300;
/// A run of this many digits in an announcement or whisper looks like a phone number, and is
/// refused: a number is never spoken.
const PHONE_LIKE_DIGITS: usize = 7;

/// The options of one call, every one decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOptions {
    /// Played to the caller before the call is connected.
    pub announcement: Option<String>,
    /// Played to the callee when they pick up, before the legs are bridged; may name the
    /// caller's label and the pairing's reference (`{label}`, `{reference}`).
    pub whisper: Option<String>,
    pub record: bool,
    pub max_call_seconds: u32,
    pub ring_timeout_seconds: u32,
}

impl CallOptions {
    /// The first option that needs Vonage to call us back (so a public URL of ours), if any.
    pub fn needs_callback(&self) -> Option<&'static str> {
        if self.whisper.is_some() {
            Some("whisper")
        } else if self.record {
            Some("record")
        } else {
            None
        }
    }

    /// Checks options given as the service's defaults.
    pub fn validate(&self) -> Result<(), CallOptionsError> {
        CallOptionsOverrides {
            announcement: Some(self.announcement.clone()),
            whisper: Some(self.whisper.clone()),
            record: Some(self.record),
            max_call_seconds: Some(self.max_call_seconds),
            ring_timeout_seconds: Some(self.ring_timeout_seconds),
        }
        .validate()
    }
}

/// The options a pairing sets; `None` follows the default. For the two texts, `Some(None)` is
/// "none" (no announcement even if the service has a default one).
///
/// Stored as JSON; a field this version does not know (written by a newer one) is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallOptionsOverrides {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub announcement: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub whisper: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_call_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_timeout_seconds: Option<u32>,
}

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<Option<T>>`: a field that
/// is present, even as `null`, is `Some` (`null` there means "none"); an absent one is `None`.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl CallOptionsOverrides {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// The options of a call: these, and the defaults for the rest.
    pub fn resolve(&self, defaults: &CallOptions) -> CallOptions {
        CallOptions {
            announcement: self
                .announcement
                .clone()
                .unwrap_or_else(|| defaults.announcement.clone()),
            whisper: self
                .whisper
                .clone()
                .unwrap_or_else(|| defaults.whisper.clone()),
            record: self.record.unwrap_or(defaults.record),
            max_call_seconds: self.max_call_seconds.unwrap_or(defaults.max_call_seconds),
            ring_timeout_seconds: self
                .ring_timeout_seconds
                .unwrap_or(defaults.ring_timeout_seconds),
        }
    }

    /// These overrides with the fields `change` sets replaced.
    pub fn merged(&self, change: &Self) -> Self {
        Self {
            announcement: change
                .announcement
                .clone()
                .or_else(|| self.announcement.clone()),
            whisper: change.whisper.clone().or_else(|| self.whisper.clone()),
            record: change.record.or(self.record),
            max_call_seconds: change.max_call_seconds.or(self.max_call_seconds),
            ring_timeout_seconds: change.ring_timeout_seconds.or(self.ring_timeout_seconds),
        }
    }

    /// Checks every field that is set.
    pub fn validate(&self) -> Result<(), CallOptionsError> {
        if let Some(Some(text)) = &self.announcement {
            check_text("announcement", text, MAX_ANNOUNCEMENT_CHARS)?;
        }
        if let Some(Some(template)) = &self.whisper {
            check_text("whisper", template, MAX_WHISPER_CHARS)?;
            check_placeholders(template)?;
        }
        if self
            .max_call_seconds
            .is_some_and(|s| !(1..=MAX_CALL_SECONDS).contains(&s))
        {
            return Err(CallOptionsError::MaxCallSeconds);
        }
        if self
            .ring_timeout_seconds
            .is_some_and(|s| !(MIN_RING_TIMEOUT_SECONDS..=MAX_RING_TIMEOUT_SECONDS).contains(&s))
        {
            return Err(CallOptionsError::RingTimeout);
        }
        Ok(())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CallOptionsError {
    #[error(
        "call_options.{field} must be 1 to {max} characters, without control or invisible \
         formatting characters"
    )]
    BadText { field: &'static str, max: usize },
    #[error(
        "call_options.{0} contains a run of {PHONE_LIKE_DIGITS} or more digits, which looks like \
         a phone number; a number is never spoken"
    )]
    LooksLikeNumber(&'static str),
    #[error(
        "call_options.whisper may use only the placeholders {{label}} and {{reference}}; found \
         {0:?} (write no other braces)"
    )]
    UnknownPlaceholder(String),
    #[error("call_options.max_call_seconds must be between 1 and {MAX_CALL_SECONDS}")]
    MaxCallSeconds,
    #[error(
        "call_options.ring_timeout_seconds must be between {MIN_RING_TIMEOUT_SECONDS} and \
         {MAX_RING_TIMEOUT_SECONDS}"
    )]
    RingTimeout,
}

fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), CallOptionsError> {
    if !text::is_clean(text, max) {
        return Err(CallOptionsError::BadText { field, max });
    }
    let mut run = 0;
    for c in text.chars() {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        if run >= PHONE_LIKE_DIGITS {
            return Err(CallOptionsError::LooksLikeNumber(field));
        }
    }
    Ok(())
}

/// The pieces of a whisper template: text, and the two placeholders.
enum Piece<'a> {
    Text(&'a str),
    Label,
    Reference,
}

fn pieces(template: &str) -> Result<Vec<Piece<'_>>, CallOptionsError> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(CallOptionsError::UnknownPlaceholder("}".into()));
        }
        out.push(Piece::Text(&rest[..open]));
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| {
            CallOptionsError::UnknownPlaceholder(after.chars().take(20).collect())
        })?;
        match &after[..close] {
            "label" => out.push(Piece::Label),
            "reference" => out.push(Piece::Reference),
            other => {
                return Err(CallOptionsError::UnknownPlaceholder(format!(
                    "{{{}}}",
                    other.chars().take(20).collect::<String>()
                )));
            }
        }
        rest = &after[close + 1..];
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

fn check_placeholders(template: &str) -> Result<(), CallOptionsError> {
    pieces(template).map(|_| ())
}

/// The whisper the callee hears: the template with the caller's label and the pairing's
/// reference put in (an absent one as nothing), spaces tidied.
pub fn render_whisper(template: &str, label: Option<&str>, reference: Option<&str>) -> String {
    let Ok(pieces) = pieces(template) else {
        // Templates are checked when they are set; one that does not parse is spoken as is.
        return template.to_owned();
    };
    let mut out = String::with_capacity(template.len() + 64);
    for piece in pieces {
        out.push_str(match piece {
            Piece::Text(t) => t,
            Piece::Label => label.unwrap_or(""),
            Piece::Reference => reference.unwrap_or(""),
        });
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> CallOptions {
        CallOptions {
            announcement: Some("This call may be recorded.".into()),
            whisper: None,
            record: false,
            max_call_seconds: 3600,
            ring_timeout_seconds: 45,
        }
    }

    #[test]
    fn unset_options_follow_the_defaults_and_null_texts_turn_them_off() {
        let none = CallOptionsOverrides::default();
        assert_eq!(none.resolve(&defaults()), defaults());
        let set: CallOptionsOverrides = serde_json::from_value(serde_json::json!({
            "announcement": null, "whisper": "Your {label}", "record": true,
            "max_call_seconds": 60
        }))
        .unwrap();
        let o = set.resolve(&defaults());
        assert_eq!(o.announcement, None);
        assert_eq!(o.whisper.as_deref(), Some("Your {label}"));
        assert!(o.record);
        assert_eq!(o.max_call_seconds, 60);
        assert_eq!(o.ring_timeout_seconds, 45);
        assert_eq!(o.needs_callback(), Some("whisper"));
        // Stored and read back unchanged, null included.
        let stored = serde_json::to_value(&set).unwrap();
        assert_eq!(stored["announcement"], serde_json::Value::Null);
        assert!(stored.get("ring_timeout_seconds").is_none());
        assert_eq!(
            serde_json::from_value::<CallOptionsOverrides>(stored).unwrap(),
            set
        );
    }

    #[test]
    fn a_change_replaces_only_the_fields_it_sets() {
        let old = CallOptionsOverrides {
            record: Some(true),
            max_call_seconds: Some(60),
            ..Default::default()
        };
        let change = CallOptionsOverrides {
            max_call_seconds: Some(120),
            announcement: Some(None),
            ..Default::default()
        };
        let new = old.merged(&change);
        assert_eq!(new.record, Some(true));
        assert_eq!(new.max_call_seconds, Some(120));
        assert_eq!(new.announcement, Some(None));
    }

    #[test]
    fn bounds_texts_and_placeholders_are_checked() {
        let with = |v: serde_json::Value| {
            serde_json::from_value::<CallOptionsOverrides>(v)
                .unwrap()
                .validate()
        };
        use serde_json::json;
        assert_eq!(
            with(json!({"max_call_seconds": 7201})),
            Err(CallOptionsError::MaxCallSeconds)
        );
        assert_eq!(
            with(json!({"max_call_seconds": 0})),
            Err(CallOptionsError::MaxCallSeconds)
        );
        assert!(with(json!({"max_call_seconds": 7200})).is_ok());
        assert_eq!(
            with(json!({"ring_timeout_seconds": 2})),
            Err(CallOptionsError::RingTimeout)
        );
        assert!(matches!(
            with(json!({"announcement": ""})),
            Err(CallOptionsError::BadText { .. })
        ));
        assert!(matches!(
            with(json!({"whisper": "x".repeat(MAX_WHISPER_CHARS + 1)})),
            Err(CallOptionsError::BadText { .. })
        ));
        assert_eq!(
            with(json!({"whisper": "call 4155550100 back"})),
            Err(CallOptionsError::LooksLikeNumber("whisper"))
        );
        assert!(matches!(
            with(json!({"whisper": "for {number}"})),
            Err(CallOptionsError::UnknownPlaceholder(_))
        ));
        assert!(matches!(
            with(json!({"whisper": "for {label"})),
            Err(CallOptionsError::UnknownPlaceholder(_))
        ));
        assert!(matches!(
            with(json!({"whisper": "a } b"})),
            Err(CallOptionsError::UnknownPlaceholder(_))
        ));
        assert!(with(json!({"whisper": "Your {label} for ride {reference}"})).is_ok());
    }

    #[test]
    fn whispers_name_the_label_and_reference_and_drop_absent_ones() {
        let t = "Your {label} for ride {reference}, connecting";
        assert_eq!(
            render_whisper(t, Some("passenger"), Some("42")),
            "Your passenger for ride 42, connecting"
        );
        assert_eq!(
            render_whisper(t, None, Some("42")),
            "Your for ride 42, connecting"
        );
        assert_eq!(render_whisper("Hello", None, None), "Hello");
    }
}
