//! Routing: what an inbound call to a proxy number does.

use std::sync::Arc;

use crate::call_options::CallOptionsOverrides;
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
        /// The pairing's call options and what a whisper may name; `None` when the pairing sets
        /// no option and nothing needs its names.
        details: Option<Arc<RouteDetails>>,
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

/// What a route knows of its pairing beyond the numbers: the call options the pairing sets, and
/// the caller's label and the pairing's reference, which a whisper may name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDetails {
    pub options: CallOptionsOverrides,
    pub caller_label: Option<String>,
    pub reference: Option<String>,
}
