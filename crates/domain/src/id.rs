//! Ids: UUIDs (version 7, so they sort by creation), each kind its own type, all defined by
//! [`define_id!`] and written in one form, lowercase with hyphens, which is also the only form
//! read back ([`parse_issued`]).

use uuid::Uuid;

/// Reads an id only in the one form ids are issued and shown in. Other spellings of the same
/// UUID (upper case, braces, no hyphens, a `urn:uuid:` prefix) are refused, so that one record
/// has one name in URLs, logs and audits.
pub fn parse_issued(s: &str) -> Option<Uuid> {
    Uuid::try_parse(s)
        .ok()
        .filter(|id| id.hyphenated().to_string() == s)
}

/// A string that is not an id in the form ids are issued in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an id in the form ids are issued in (a UUID in lowercase with hyphens)")]
pub struct InvalidId;

/// Defines an id type: a newtype over a UUID, new ones time-ordered (v7), shown and read in the
/// issued form.
macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(::uuid::Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(::uuid::Uuid::now_v7())
            }

            pub fn from_uuid(id: ::uuid::Uuid) -> Self {
                Self(id)
            }

            pub fn as_uuid(&self) -> ::uuid::Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        /// Written as the UUID (hyphenated), as the spool and the JSON API carry it.
        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                ::uuid::Uuid::deserialize(d).map(Self)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::id::InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::id::parse_issued(s)
                    .map(Self)
                    .ok_or($crate::id::InvalidId)
            }
        }
    };
}

define_id!(
    /// A pairing.
    PairingId
);
define_id!(
    /// A call record: one inbound call.
    CallId
);
define_id!(
    /// An admin API key.
    ApiKeyId
);
define_id!(
    /// A marketplace's callback endpoint.
    EndpointId
);
define_id!(
    /// A callback message: the same on every attempt to send it (`webhook-id`).
    MessageId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_issued_spelling_is_read() {
        let id = PairingId::new();
        let shown = id.to_string();
        assert_eq!(shown.parse(), Ok(id));
        let uuid = id.as_uuid();
        for other in [
            uuid.simple().to_string(),
            uuid.braced().to_string(),
            uuid.urn().to_string(),
            shown.to_uppercase(),
            format!(" {shown}"),
        ] {
            assert_eq!(other.parse::<PairingId>(), Err(InvalidId), "{other}");
            assert_eq!(parse_issued(&other), None, "{other}");
        }
        assert_eq!(
            format!("{:?}", CallId::from_uuid(uuid)),
            format!("CallId({uuid})")
        );
    }
}
