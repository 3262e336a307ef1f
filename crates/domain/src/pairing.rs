//! Pairings: two participants who may call each other through their proxy numbers.

use chrono::{DateTime, Duration, Utc};
use thiserror::Error;

use crate::call_options::CallOptionsOverrides;
use crate::id::PairingId;
use crate::phone::PhoneNumber;
use crate::text;

/// The longest label and reference we accept.
pub const MAX_LABEL_LEN: usize = 64;
pub const MAX_REFERENCE_LEN: usize = 128;
/// Bounds of a pairing's time to live.
pub const MIN_TTL_SECONDS: i64 = 1;
pub const MAX_TTL_SECONDS: i64 = 90 * 24 * 3600;

/// What a pairing is now. `Expired` is derived from the clock, so a pairing reads as expired the
/// instant its TTL passes, whether or not anything has swept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairingStatus {
    Active,
    Closed,
    Expired,
}

impl PairingStatus {
    /// A pairing closed before it expired is `Closed`; one whose expiry passed first is `Expired`.
    pub fn at(
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        closed_at: Option<DateTime<Utc>>,
    ) -> Self {
        match closed_at {
            Some(closed) if closed < expires_at => Self::Closed,
            _ if now >= expires_at => Self::Expired,
            _ => Self::Active,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Closed => "closed",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "closed" => Some(Self::Closed),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub number: PhoneNumber,
    pub label: Option<String>,
    /// The pool number this participant dials to reach the other one.
    pub proxy_number: PhoneNumber,
    /// With PIN access: what this participant types, calling their proxy number from another
    /// phone, to be connected as if from their own.
    pub pin: Option<Pin>,
}

/// A participant's PIN: digits only. Shown only through [`Pin::expose`], so that it cannot reach a
/// log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(String);

/// The shortest and longest PIN a service may be configured for.
pub const MIN_PIN_LENGTH: usize = 4;
pub const MAX_PIN_LENGTH: usize = 10;

impl Pin {
    /// A PIN as stored or typed: `None` unless it is 4 to 10 digits.
    pub fn parse(digits: &str) -> Option<Self> {
        ((MIN_PIN_LENGTH..=MAX_PIN_LENGTH).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| Self(digits.to_owned()))
    }

    /// A PIN of `length` digits from `random`: one byte source per digit, each read by rejection
    /// so that every digit is equally likely.
    pub fn generate(length: usize, mut random_byte: impl FnMut() -> u8) -> Self {
        let mut digits = String::with_capacity(length);
        while digits.len() < length {
            let b = random_byte();
            if b < 250 {
                digits.push(char::from(b'0' + b % 10));
            }
        }
        Self(digits)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(****)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pairing {
    pub id: PairingId,
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub participants: [Participant; 2],
    /// The call options this pairing sets; the rest follow the service's defaults.
    pub call_options: CallOptionsOverrides,
    /// Whether each participant has a PIN to call from another phone.
    pub pin_access: bool,
    /// The database's clock when the row was read: the status is judged by it.
    pub read_at: DateTime<Utc>,
}

impl Pairing {
    pub fn status(&self) -> PairingStatus {
        PairingStatus::at(self.read_at, self.expires_at, self.closed_at)
    }
}

/// A participant as the client asked for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantRequest {
    pub number: PhoneNumber,
    pub label: Option<String>,
    /// A pool number the client wants this participant to get, instead of an automatic choice.
    pub proxy_number: Option<PhoneNumber>,
}

/// A validated request for a new pairing: exactly two different people, a bounded TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPairing {
    pub participants: [ParticipantRequest; 2],
    pub ttl: Duration,
    pub reference: Option<String>,
    /// Checked by the caller ([`CallOptionsOverrides::validate`]); none by default.
    pub call_options: CallOptionsOverrides,
    /// With PIN access, how many digits each participant's PIN has; `None` without.
    pub pin_digits: Option<usize>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NewPairingError {
    #[error("a pairing has exactly two participants, {0} were given")]
    WrongParticipantCount(usize),
    #[error("the two participants have the same number")]
    SameParticipant,
    #[error("ttl_seconds must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS}")]
    TtlOutOfRange,
    #[error(
        "label must be 1 to {MAX_LABEL_LEN} characters, without control or invisible formatting \
         characters (such as bidirectional overrides or zero-width spaces)"
    )]
    BadLabel,
    #[error(
        "reference must be 1 to {MAX_REFERENCE_LEN} characters, without control or invisible \
         formatting characters (such as bidirectional overrides or zero-width spaces)"
    )]
    BadReference,
}

impl NewPairing {
    pub fn new(
        participants: Vec<ParticipantRequest>,
        ttl_seconds: i64,
        reference: Option<String>,
    ) -> Result<Self, NewPairingError> {
        let count = participants.len();
        let [a, b]: [ParticipantRequest; 2] = participants
            .try_into()
            .map_err(|_| NewPairingError::WrongParticipantCount(count))?;
        if a.number == b.number {
            return Err(NewPairingError::SameParticipant);
        }
        for p in [&a, &b] {
            if p.label
                .as_ref()
                .is_some_and(|l| !text::is_clean(l, MAX_LABEL_LEN))
            {
                return Err(NewPairingError::BadLabel);
            }
        }
        if reference
            .as_ref()
            .is_some_and(|r| !text::is_clean(r, MAX_REFERENCE_LEN))
        {
            return Err(NewPairingError::BadReference);
        }
        let ttl = ttl_from_seconds(ttl_seconds).ok_or(NewPairingError::TtlOutOfRange)?;
        Ok(Self {
            participants: [a, b],
            ttl,
            reference,
            call_options: CallOptionsOverrides::default(),
            pin_digits: None,
        })
    }

    /// Whether an existing pairing is this same request again (a client retry): the same people
    /// in the same order with the same labels. (The call options and PIN access are not
    /// compared: a retry gets the pairing as it is.)
    pub fn is_same_request_as(&self, existing: &[(PhoneNumber, Option<String>); 2]) -> bool {
        self.participants
            .iter()
            .zip(existing.iter())
            .all(|(want, (number, label))| &want.number == number && &want.label == label)
    }
}

/// A TTL within bounds, as a duration.
pub fn ttl_from_seconds(seconds: i64) -> Option<Duration> {
    (MIN_TTL_SECONDS..=MAX_TTL_SECONDS)
        .contains(&seconds)
        .then(|| Duration::seconds(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: &str) -> ParticipantRequest {
        ParticipantRequest {
            number: PhoneNumber::parse(n).unwrap(),
            label: Some("driver".into()),
            proxy_number: None,
        }
    }

    #[test]
    fn pins_are_digits_of_a_bounded_length_and_never_shown_by_debug() {
        assert!(Pin::parse("0123").is_some());
        assert!(Pin::parse("123").is_none());
        assert!(Pin::parse("12345678901").is_none());
        assert!(Pin::parse("12a4").is_none());
        let mut bytes = [255u8, 3, 17, 250, 9, 0].into_iter().cycle();
        let pin = Pin::generate(4, || bytes.next().unwrap());
        assert_eq!(pin.expose(), "3790", "bytes of 250 and above are skipped");
        assert_eq!(format!("{pin:?}"), "Pin(****)");
    }

    #[test]
    fn status_follows_close_and_expiry() {
        let t0 = Utc::now();
        let exp = t0 + Duration::seconds(60);
        assert_eq!(PairingStatus::at(t0, exp, None), PairingStatus::Active);
        assert_eq!(PairingStatus::at(exp, exp, None), PairingStatus::Expired);
        assert_eq!(
            PairingStatus::at(t0, exp, Some(t0)),
            PairingStatus::Closed,
            "closed before expiry"
        );
        assert_eq!(
            PairingStatus::at(exp + Duration::seconds(5), exp, Some(t0)),
            PairingStatus::Closed,
            "a closed pairing stays closed after its expiry"
        );
    }

    #[test]
    fn a_pairing_needs_exactly_two_different_people() {
        assert_eq!(
            NewPairing::new(vec![p("16465550101")], 60, None),
            Err(NewPairingError::WrongParticipantCount(1))
        );
        assert_eq!(
            NewPairing::new(
                vec![p("16465550101"), p("16465550102"), p("16465550103")],
                60,
                None
            ),
            Err(NewPairingError::WrongParticipantCount(3))
        );
        assert_eq!(
            NewPairing::new(vec![p("16465550101"), p("+1 646 555 0101")], 60, None),
            Err(NewPairingError::SameParticipant)
        );
        assert!(NewPairing::new(vec![p("16465550101"), p("16465550102")], 60, None).is_ok());
    }

    #[test]
    fn ttl_label_and_reference_are_bounded() {
        let two = || vec![p("16465550101"), p("16465550102")];
        assert_eq!(
            NewPairing::new(two(), 0, None),
            Err(NewPairingError::TtlOutOfRange)
        );
        assert_eq!(
            NewPairing::new(two(), MAX_TTL_SECONDS + 1, None),
            Err(NewPairingError::TtlOutOfRange)
        );
        assert_eq!(
            NewPairing::new(two(), 60, Some(String::new())),
            Err(NewPairingError::BadReference)
        );
        assert_eq!(
            NewPairing::new(two(), 60, Some("r".repeat(MAX_REFERENCE_LEN + 1))),
            Err(NewPairingError::BadReference)
        );
        let mut long_label = two();
        long_label[0].label = Some("x".repeat(MAX_LABEL_LEN + 1));
        assert_eq!(
            NewPairing::new(long_label, 60, None),
            Err(NewPairingError::BadLabel)
        );
    }
}
