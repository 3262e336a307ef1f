//! Free text we accept from clients (labels, references, key names) and then show and log.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Whether `s` holds a character that is invisible or changes how the text around it is shown:
/// a control character, or a Unicode format character (general category Cf: bidirectional
/// overrides and isolates, zero-width spaces and joiners, the byte order mark, ...). Such text
/// could make a log line or an admin screen show something other than what is stored.
pub fn has_hidden_characters(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_control() || c.general_category() == GeneralCategory::Format)
}

/// Text of 1 to `max_chars` characters, not only spaces, with no hidden characters.
pub fn is_clean(s: &str, max_chars: usize) -> bool {
    let n = s.chars().count();
    n > 0 && n <= max_chars && !s.trim().is_empty() && !has_hidden_characters(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_overrides_zero_width_and_control_characters_are_hidden_characters() {
        for bad in [
            "driver\u{202E}reviR",
            "a\u{200B}b",
            "zero\u{200D}joiner",
            "\u{FEFF}bom",
            "isolate\u{2066}x\u{2069}",
            "soft\u{00AD}hyphen",
            "line\nbreak",
            "nul\u{0}",
        ] {
            assert!(has_hidden_characters(bad), "{bad:?}");
            assert!(!is_clean(bad, 64), "{bad:?}");
        }
        for good in [
            "driver",
            "Fahrer Jürgen",
            "乗客",
            "ride #42 – pickup",
            "🚕 taxi",
        ] {
            assert!(is_clean(good, 64), "{good:?}");
        }
        assert!(!is_clean("   ", 64));
        assert!(!is_clean("", 64));
        assert!(!is_clean("abc", 2));
    }
}
