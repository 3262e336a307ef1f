//! Ids as the service issues them: UUIDs written in lowercase hexadecimal with hyphens.

use uuid::Uuid;

/// Reads an id only in the one form ids are issued and shown in. Other spellings of the same
/// UUID (upper case, braces, no hyphens, a `urn:uuid:` prefix) are refused, so that one record
/// has one name in URLs, logs and audits.
pub fn parse_issued(s: &str) -> Option<Uuid> {
    Uuid::try_parse(s)
        .ok()
        .filter(|id| id.hyphenated().to_string() == s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_issued_spelling_is_read() {
        let id = Uuid::now_v7();
        assert_eq!(parse_issued(&id.to_string()), Some(id));
        for other in [
            id.simple().to_string(),
            id.braced().to_string(),
            id.urn().to_string(),
            id.to_string().to_uppercase(),
            format!(" {id}"),
        ] {
            assert_eq!(parse_issued(&other), None, "{other}");
        }
    }
}
