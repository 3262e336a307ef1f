//! Routing: what an inbound call to a proxy number does.

use crate::id::PairingId;
use crate::phone::PhoneNumber;

/// What an inbound call from `caller` to `proxy_number` should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Connect to `callee`, showing `callee_proxy`.
    Connect {
        pairing_id: PairingId,
        callee: PhoneNumber,
        callee_proxy: PhoneNumber,
    },
    /// The caller's pairing on this number has ended (closed or expired).
    Ended { pairing_id: PairingId },
    /// The caller has no pairing on this number.
    None,
}

impl Route {
    /// The pairing the route came from, if any.
    pub fn pairing_id(&self) -> Option<PairingId> {
        match self {
            Self::Connect { pairing_id, .. } | Self::Ended { pairing_id } => Some(*pairing_id),
            Self::None => None,
        }
    }
}
