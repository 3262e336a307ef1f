//! Free text we accept from clients (labels, references, key names) and then show and log.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Whether `s` holds a character that is invisible or changes how the text around it is shown:
/// a control character, a Unicode format character (general category Cf: bidirectional
/// overrides and isolates, zero-width spaces and joiners, the byte order mark, ...), a line or
/// paragraph separator, or another default-ignorable character (Hangul fillers, the combining
/// grapheme joiner, Mongolian selectors). Such text could make a log line or an admin screen show
/// something other than what is stored. Variation selectors, which only pick the look of the
/// character before them (an emoji's), are allowed.
pub fn has_hidden_characters(s: &str) -> bool {
    s.chars().any(|c| {
        c.is_control()
            || matches!(
                c.general_category(),
                GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            )
            || is_ignorable(c)
    })
}

/// Default-ignorable code points (Unicode's `Default_Ignorable_Code_Point`) that are not of
/// category Cf, but for the variation selectors: characters that render as nothing.
fn is_ignorable(c: char) -> bool {
    matches!(c,
        '\u{034F}'                     // combining grapheme joiner
        | '\u{115F}' | '\u{1160}'      // Hangul choseong and jungseong fillers
        | '\u{17B4}' | '\u{17B5}'      // Khmer inherent vowels
        | '\u{180B}'..='\u{180D}'      // Mongolian free variation selectors
        | '\u{180F}'
        | '\u{3164}'                    // Hangul filler
        | '\u{FFA0}'                    // halfwidth Hangul filler
        | '\u{FFF0}'..='\u{FFF8}'
        | '\u{E0000}'..='\u{E0FFF}') // tags and the reserved rest of their block
}

/// Text of 1 to `max_chars` characters with no hidden characters and something visible: not only
/// spaces or blank-looking characters (the Braille blank, U+2800).
pub fn is_clean(s: &str, max_chars: usize) -> bool {
    let n = s.chars().count();
    n > 0
        && n <= max_chars
        && !has_hidden_characters(s)
        && s.chars().any(|c| !c.is_whitespace() && c != '\u{2800}')
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
            "ride\u{2028}INFO fake log line",
            "para\u{2029}graph",
            "\u{3164}",
            "a\u{115F}b",
            "cgj\u{034F}",
            "half\u{FFA0}width",
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
        assert!(!is_clean("\u{2800}\u{2800}", 64), "Braille blanks only");
        assert!(!is_clean("\u{00A0}", 64), "a no-break space only");
        assert!(
            is_clean("❤\u{FE0F} driver", 64),
            "an emoji's variation selector"
        );
        assert!(!is_clean("", 64));
        assert!(!is_clean("abc", 2));
    }
}
