//! Pairings: two participants who may call each other through their proxy numbers.

use chrono::{DateTime, Duration, Utc};
use thiserror::Error;

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pairing {
    pub id: PairingId,
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub participants: [Participant; 2],
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
        })
    }

    /// Whether an existing pairing is this same request again (a client retry): the same people
    /// in the same order with the same labels.
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
