//! Phone numbers: parsed once at the edge, then trusted.
//!
//! A [`PhoneNumber`] holds an E.164 number as digits without the leading `+`, which is what
//! Vonage sends and expects. Its `Debug` and `Display` show only the last digits, so a number
//! cannot reach a log line or an error message by accident; [`PhoneNumber::expose`] gives the
//! full value where it is really needed (the NCCO, the database).

use std::fmt;

use thiserror::Error;

/// How many trailing digits the masked form shows.
const VISIBLE_DIGITS: usize = 4;
/// The longest input we try to parse; anything longer is refused before parsing.
const MAX_INPUT_LEN: usize = 64;

#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum PhoneNumberError {
    #[error("the phone number is empty")]
    Empty,
    #[error("the phone number is longer than {MAX_INPUT_LEN} characters")]
    TooLong,
    #[error(
        "the phone number may hold only digits, spaces, '-', '.', '(' and ')', with an optional leading '+'"
    )]
    InvalidCharacters,
    #[error("the phone number could not be parsed as an international number")]
    Unparseable,
    #[error("the phone number is not a valid number in any numbering plan")]
    NotValid,
    #[error("the phone number has more than 15 digits, the most E.164 allows")]
    TooManyDigits,
}

/// An ISO 3166-1 alpha-2 country code, as derived from a phone number.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode(String);

impl CountryCode {
    /// Accepts exactly two ASCII letters, upper-cased.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()))
            .then(|| Self(s.to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A valid phone number in E.164 form, stored as digits without `+`. Equality, order and hash
/// are those of the digits.
#[derive(Clone)]
pub struct PhoneNumber {
    digits: String,
    /// The country, when the number was parsed here (finding it parses the number again).
    country: Option<Option<CountryCode>>,
}

impl PartialEq for PhoneNumber {
    fn eq(&self, other: &Self) -> bool {
        self.digits == other.digits
    }
}

impl Eq for PhoneNumber {}

impl std::hash::Hash for PhoneNumber {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.digits.hash(state);
    }
}

impl PartialOrd for PhoneNumber {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PhoneNumber {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.digits.cmp(&other.digits)
    }
}

impl PhoneNumber {
    /// Parses a number in any common human form: `+1 (646) 555-0101`, `+16465550101`,
    /// `16465550101`, `0044 20 7946 0018`. A number without `+` or `00` is read as E.164 digits
    /// (country code first), since that is how Vonage writes them. The result must be a valid
    /// number of some numbering plan.
    pub fn parse(input: &str) -> Result<Self, PhoneNumberError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(PhoneNumberError::Empty);
        }
        if input.len() > MAX_INPUT_LEN {
            return Err(PhoneNumberError::TooLong);
        }
        let (rest, had_prefix) = match input.strip_prefix('+') {
            Some(rest) => (rest, true),
            None => (input, false),
        };
        if !rest
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'))
        {
            return Err(PhoneNumberError::InvalidCharacters);
        }
        let mut digits: String = rest.chars().filter(char::is_ascii_digit).collect();
        if !had_prefix && digits.starts_with("00") {
            digits.drain(..2);
        }
        if digits.is_empty() {
            return Err(PhoneNumberError::Empty);
        }
        let parsed = phonenumber::parse(None, format!("+{digits}"))
            .map_err(|_| PhoneNumberError::Unparseable)?;
        if !phonenumber::is_valid(&parsed) {
            return Err(PhoneNumberError::NotValid);
        }
        let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
        let digits = e164.trim_start_matches('+').to_owned();
        // Some numbering plans (Germany's, for one) hold numbers longer than E.164 allows;
        // Vonage and our schema take at most 15 digits.
        if digits.len() > 15 {
            return Err(PhoneNumberError::TooManyDigits);
        }
        let country = country_of(&parsed);
        Ok(Self {
            digits,
            country: Some(country),
        })
    }

    /// Wraps digits that were validated before (read back from our own database).
    pub fn from_trusted_digits(digits: String) -> Self {
        Self {
            digits,
            country: None,
        }
    }

    /// The full number as E.164 digits without `+`. Only for the NCCO, the database and the
    /// number's owner: never for logs.
    pub fn expose(&self) -> &str {
        &self.digits
    }

    /// The number's country, derived from its numbering plan; `None` for numbers that belong to
    /// no single country (international freephone, satellite).
    pub fn country(&self) -> Option<CountryCode> {
        if let Some(known) = &self.country {
            return known.clone();
        }
        let parsed = phonenumber::parse(None, format!("+{}", self.digits)).ok()?;
        country_of(&parsed)
    }

    /// The number with all but its last digits hidden, e.g. `***0101`.
    pub fn masked(&self) -> String {
        mask_digits(&self.digits)
    }
}

fn country_of(parsed: &phonenumber::PhoneNumber) -> Option<CountryCode> {
    let id = parsed.country().id()?;
    CountryCode::parse(id.as_ref())
}

/// Masks any string of digits the way [`PhoneNumber`] displays itself: `***` and the last four
/// characters. Shorter inputs are hidden completely.
pub fn mask_digits(digits: &str) -> String {
    let chars: Vec<char> = digits.chars().collect();
    if chars.len() <= VISIBLE_DIGITS {
        return "***".to_owned();
    }
    let tail: String = chars[chars.len() - VISIBLE_DIGITS..].iter().collect();
    format!("***{tail}")
}

/// Masks every run of five or more digits in free text (an error message that may quote input),
/// keeping the last four digits of each run.
pub fn mask_digit_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 5 {
            out.push_str(&mask_digits(run));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

/// The caller id of an inbound call as Vonage reports it in `from` (and `from_user`). Vonage sends
/// E.164 digits for phone callers, but withheld numbers arrive empty, missing or as words such as
/// `Restricted`, in-app callers as a user name in `from_user`, and SIP callers as a URI. Only a
/// plausible number is used for routing; it is not checked against numbering plans, because a
/// participant's number was validated when the pairing was made and lookup is by exact match.
#[derive(Clone, PartialEq, Eq)]
pub enum CallerId {
    Number(String),
    Withheld,
    /// An in-app user or a SIP URI: not a phone number, so never a participant.
    Unsupported,
}

impl CallerId {
    /// Reads the caller from the answer webhook's `from`, `from_user` and `endpoint_type`.
    pub fn from_webhook(
        from: Option<&str>,
        from_user: Option<&str>,
        endpoint_type: Option<&str>,
    ) -> Self {
        if from_user.is_some_and(|u| !u.trim().is_empty()) {
            return Self::Unsupported;
        }
        let not_a_phone = endpoint_type.is_some_and(|t| t != "phone");
        let Some(raw) = from.map(str::trim).filter(|f| !f.is_empty()) else {
            return if not_a_phone {
                Self::Unsupported
            } else {
                Self::Withheld
            };
        };
        // A `tel:` URI is a phone number written as a URI.
        let raw = raw
            .get(..4)
            .filter(|scheme| scheme.eq_ignore_ascii_case("tel:"))
            .map_or(raw, |_| &raw[4..]);
        let digits = raw.strip_prefix('+').unwrap_or(raw);
        if (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
            Self::Number(digits.to_owned())
        } else if not_a_phone || has_uri_scheme(raw) || raw.contains('@') {
            Self::Unsupported
        } else {
            Self::Withheld
        }
    }
}

/// Whether `s` starts like a URI (`sip:`, `sips:`, `wss:`, ...): letters, then letters, digits,
/// `+`, `-` or `.`, then a colon.
fn has_uri_scheme(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once(':') else {
        return false;
    };
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

impl fmt::Debug for CallerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(d) => write!(f, "CallerId({})", mask_digits(d)),
            Self::Withheld => f.write_str("CallerId(withheld)"),
            Self::Unsupported => f.write_str("CallerId(unsupported)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_human_forms_to_the_same_digits() {
        for input in [
            "+1 (646) 555-0101",
            "16465550101",
            "+16465550101",
            "1-646-555-0101",
            "001 646 555 0101",
            "  +1.646.555.0101 ",
        ] {
            let n = PhoneNumber::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(n.expose(), "16465550101", "{input}");
        }
    }

    #[test]
    fn derives_the_country_from_the_number() {
        assert_eq!(
            PhoneNumber::parse("16465550101").unwrap().country(),
            CountryCode::parse("US")
        );
        assert_eq!(
            PhoneNumber::parse("+44 7400 123456").unwrap().country(),
            CountryCode::parse("GB")
        );
    }

    #[test]
    fn a_number_read_back_from_the_database_has_the_country_and_equality_of_a_parsed_one() {
        for input in [
            "16465550101",
            "447400123456",
            "4930901820",
            "8613912345678",
            "80012345678",
        ] {
            let parsed = PhoneNumber::parse(&format!("+{input}")).unwrap();
            let trusted = PhoneNumber::from_trusted_digits(parsed.expose().to_owned());
            assert_eq!(parsed.country(), trusted.country(), "{input}");
            assert_eq!(parsed, trusted);
            assert_eq!(parsed.cmp(&trusted), std::cmp::Ordering::Equal);
        }
    }

    #[test]
    fn refuses_what_is_not_a_phone_number() {
        assert_eq!(PhoneNumber::parse(""), Err(PhoneNumberError::Empty));
        assert_eq!(PhoneNumber::parse("   "), Err(PhoneNumberError::Empty));
        assert_eq!(
            PhoneNumber::parse("1-800-FLOWERS"),
            Err(PhoneNumberError::InvalidCharacters)
        );
        assert_eq!(
            PhoneNumber::parse("+1 646 555 0101; drop table"),
            Err(PhoneNumberError::InvalidCharacters)
        );
        assert!(PhoneNumber::parse("12").is_err());
        assert_eq!(
            PhoneNumber::parse("447700900123"),
            Err(PhoneNumberError::NotValid),
            "a range reserved for drama is not a real number"
        );
        assert!(PhoneNumber::parse("999999999999999").is_err());
        // Found by fuzzing: valid in the German plan, but longer than E.164 allows.
        assert_eq!(
            PhoneNumber::parse("4920818202081820"),
            Err(PhoneNumberError::TooManyDigits)
        );
        assert_eq!(
            PhoneNumber::parse(&"1".repeat(65)),
            Err(PhoneNumberError::TooLong)
        );
    }

    #[test]
    fn display_and_debug_hide_all_but_the_last_four_digits() {
        let n = PhoneNumber::parse("+16465550101").unwrap();
        assert_eq!(n.to_string(), "***0101");
        assert_eq!(format!("{n:?}"), "PhoneNumber(***0101)");
        assert!(!format!("{n} {n:?}").contains("646555"));
    }

    #[test]
    fn digit_runs_in_free_text_are_masked() {
        assert_eq!(
            mask_digit_runs("invalid type: string \"16465550101\", at line 1 column 12"),
            "invalid type: string \"***0101\", at line 1 column 12"
        );
    }

    #[test]
    fn caller_id_treats_words_and_empty_values_as_withheld() {
        assert_eq!(
            CallerId::from_webhook(Some("447700900456"), None, None),
            CallerId::Number("447700900456".into())
        );
        assert_eq!(
            CallerId::from_webhook(Some("+447700900456"), None, None),
            CallerId::Number("447700900456".into())
        );
        for withheld in [
            None,
            Some(""),
            Some("Restricted"),
            Some("anonymous"),
            Some("12"),
        ] {
            assert_eq!(
                CallerId::from_webhook(withheld, None, Some("phone")),
                CallerId::Withheld
            );
        }
    }

    #[test]
    fn in_app_sip_and_websocket_callers_are_not_phone_numbers() {
        assert_eq!(
            CallerId::from_webhook(None, Some("alice"), Some("app")),
            CallerId::Unsupported
        );
        for (from, endpoint) in [
            ("sip:alice@example.com", None),
            (
                "SIPS:+447700900456@sip.example.com;transport=tls",
                Some("sip"),
            ),
            ("alice@example.com", None),
            ("wss://media.example.com/socket", Some("websocket")),
            ("wss://media.example.com/socket", None),
            ("someone", Some("vbc")),
        ] {
            assert_eq!(
                CallerId::from_webhook(Some(from), None, endpoint),
                CallerId::Unsupported,
                "{from}"
            );
        }
        assert_eq!(
            CallerId::from_webhook(None, None, Some("websocket")),
            CallerId::Unsupported
        );
        assert_eq!(
            CallerId::from_webhook(Some("tel:+16465550101"), None, None),
            CallerId::Number("16465550101".into()),
            "a tel: URI is a number"
        );
    }
}
