//! SMS encoding and segment accounting after GSM 03.38.
//!
//! A text that fits the GSM 7-bit default alphabet (basic table, plus the extension
//! table whose characters cost two septets) is sent as GSM-7: 160 septets in one
//! segment, 153 per segment when concatenated. One character outside it switches
//! the whole text to UCS-2: 70 UTF-16 units in one segment, 67 when concatenated.

/// The GSM 03.38 basic table (without ESC, which only introduces the extension table).
const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// The GSM 03.38 extension table: each costs an escape plus the character.
const EXTENSION: &str = "\u{0c}^{}\\[~]|€";

/// How an SMS text is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    /// The name used on the wire (`gsm7`, `ucs2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "gsm7",
            Encoding::Ucs2 => "ucs2",
        }
    }
}

/// The encoding, length in units (septets or UTF-16 units) and segment count of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsCost {
    pub encoding: Encoding,
    pub units: usize,
    pub segments: u32,
}

/// The first character that forces UCS-2, if any.
pub fn first_non_gsm(text: &str) -> Option<char> {
    text.chars()
        .find(|c| !BASIC.contains(*c) && !EXTENSION.contains(*c))
}

/// Counts what sending `text` costs.
pub fn cost(text: &str) -> SmsCost {
    if first_non_gsm(text).is_none() {
        let widths = text
            .chars()
            .map(|c| if EXTENSION.contains(c) { 2 } else { 1 });
        let (units, segments) = segments(widths, 160, 153);
        SmsCost {
            encoding: Encoding::Gsm7,
            units,
            segments,
        }
    } else {
        let (units, segments) = segments(text.chars().map(char::len_utf16), 70, 67);
        SmsCost {
            encoding: Encoding::Ucs2,
            units,
            segments,
        }
    }
}

/// What a person calls a character that forces UCS-2, to name it in a warning.
pub fn describe(c: char) -> String {
    let kind = match c {
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{201C}' | '\u{201D}'
        | '\u{201E}' | '\u{201F}' | '\u{00AB}' | '\u{00BB}' | '\u{2039}' | '\u{203A}' => {
            "typographic quote"
        }
        '\u{2010}'..='\u{2015}' | '\u{2212}' => "typographic dash",
        '\u{2026}' => "ellipsis",
        '\u{00A0}' | '\u{2007}' | '\u{202F}' | '\u{2009}' => "special space",
        c if (c as u32) >= 0x1F000 || ('\u{2600}'..='\u{27BF}').contains(&c) => "emoji",
        _ => "character",
    };
    format!("{kind} {c} (U+{:04X})", c as u32)
}

/// The units of characters `widths` wide, and the segments they take: one when
/// they fit `single`, else as many `multi`-unit parts as a phone fills in order,
/// never cutting a character (an escape and its extension character, a UTF-16
/// surrogate pair) across two parts, which can take one more than the units
/// divided by `multi`.
fn segments(widths: impl Iterator<Item = usize>, single: usize, multi: usize) -> (usize, u32) {
    let widths: Vec<usize> = widths.collect();
    let units: usize = widths.iter().sum();
    if units == 0 {
        return (0, 0);
    }
    if units <= single {
        return (units, 1);
    }
    let mut parts = 1u32;
    let mut filled = 0;
    for width in widths {
        if filled + width > multi {
            parts += 1;
            filled = 0;
        }
        filled += width;
    }
    (units, parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_by_hand() {
        let a160 = "a".repeat(160);
        assert_eq!(
            cost(&a160),
            SmsCost {
                encoding: Encoding::Gsm7,
                units: 160,
                segments: 1
            }
        );
        let a161 = "a".repeat(161);
        assert_eq!(cost(&a161).segments, 2);
        assert_eq!(cost(&"a".repeat(306)).segments, 2);
        assert_eq!(cost(&"a".repeat(307)).segments, 3);
        // € is in the extension table: two septets each.
        let euro = "€".repeat(80);
        assert_eq!(
            cost(&euro),
            SmsCost {
                encoding: Encoding::Gsm7,
                units: 160,
                segments: 1
            }
        );
        assert_eq!(cost(&format!("{euro}a")).segments, 2);
        // Swedish letters are in the basic table.
        let sv = "Vattnet är avstängt på Åsögatan i Farsta, ö och é";
        assert_eq!(cost(sv).encoding, Encoding::Gsm7);
        assert_eq!(cost(sv).units, sv.chars().count());
        // An emoji forces UCS-2 and counts as two UTF-16 units.
        let emoji = format!("{}😀", "a".repeat(68));
        assert_eq!(
            cost(&emoji),
            SmsCost {
                encoding: Encoding::Ucs2,
                units: 70,
                segments: 1
            }
        );
        assert_eq!(cost(&format!("{emoji}a")).segments, 2);
        // Arabic is outside GSM-7.
        let arabic = "انقطاع المياه في فارستا";
        assert_eq!(cost(arabic).encoding, Encoding::Ucs2);
        assert_eq!(cost(&"ب".repeat(134)).segments, 2);
        assert_eq!(cost(&"ب".repeat(135)).segments, 3);
        // Typographic quotes are outside GSM-7.
        assert_eq!(first_non_gsm("”Hej”"), Some('”'));
        assert_eq!(cost("Det är ”viktigt”").encoding, Encoding::Ucs2);
    }

    #[test]
    fn the_table_of_the_issue() {
        // (text, encoding, units, segments), each counted by hand.
        let cases: Vec<(String, Encoding, usize, u32)> = vec![
            ("a".repeat(160), Encoding::Gsm7, 160, 1),
            ("a".repeat(161), Encoding::Gsm7, 161, 2),
            // "Pris: 5 €" is 9 characters, € costs two septets.
            ("Pris: 5 €".to_owned(), Encoding::Gsm7, 10, 1),
            // 159 a and one € make 161 septets: two segments.
            (format!("{}€", "a".repeat(159)), Encoding::Gsm7, 161, 2),
            // One emoji: two UTF-16 units, and the whole text becomes UCS-2.
            ("Hej 👋".to_owned(), Encoding::Ucs2, 6, 1),
            (format!("{}👋", "a".repeat(69)), Encoding::Ucs2, 71, 2),
            // Arabic: 23 characters, one UTF-16 unit each.
            ("انقطاع المياه في فارستا".to_owned(), Encoding::Ucs2, 23, 1),
            // Swedish letters stay in GSM-7: 160 of them fit one segment.
            ("åäöÅÄÖéÉ".repeat(20), Encoding::Gsm7, 160, 1),
            ("åäöÅÄÖéÉ".repeat(20) + "å", Encoding::Gsm7, 161, 2),
            // 3 × 153 = 459 septets fit three segments; 460 need four.
            ("ö".repeat(459), Encoding::Gsm7, 459, 3),
            ("ö".repeat(460), Encoding::Gsm7, 460, 4),
            // 3 × 67 = 201 UTF-16 units fit three UCS-2 segments.
            ("”".repeat(201), Encoding::Ucs2, 201, 3),
            ("”".repeat(202), Encoding::Ucs2, 202, 4),
        ];
        for (text, encoding, units, segments) in cases {
            assert_eq!(
                cost(&text),
                SmsCost {
                    encoding,
                    units,
                    segments
                },
                "{text}"
            );
        }
    }

    #[test]
    fn every_extension_character_costs_two_septets() {
        for c in ['[', ']', '{', '}', '\\', '^', '~', '|', '€'] {
            let eighty = c.to_string().repeat(80);
            assert_eq!(
                cost(&eighty),
                SmsCost {
                    encoding: Encoding::Gsm7,
                    units: 160,
                    segments: 1
                },
                "80 × {c}"
            );
            let eighty_one = format!("{eighty}{c}");
            assert_eq!(
                cost(&eighty_one),
                SmsCost {
                    encoding: Encoding::Gsm7,
                    units: 162,
                    segments: 2
                },
                "81 × {c}"
            );
            // Mixed with basic characters: 158 + 2 fits, 159 + 2 does not.
            assert_eq!(cost(&format!("{}{c}", "a".repeat(158))).segments, 1, "{c}");
            assert_eq!(cost(&format!("{}{c}", "a".repeat(159))).segments, 2, "{c}");
            assert_eq!(first_non_gsm(&eighty_one), None, "{c}");
        }
        // Their look-alikes in the basic table cost one septet each.
        assert_eq!(cost("()<>/$").units, 6);
    }

    #[test]
    fn a_character_outside_both_tables_makes_the_whole_text_ucs2() {
        for c in [
            'ç', 'á', 'ô', 'ł', 'ı', '`', '\u{a0}', '’', '–', '…', '😀', 'ب', 'Ж', '中',
        ] {
            assert_eq!(first_non_gsm(&format!("Hej {c}")), Some(c), "{c:?}");
            // 150 septets of GSM-7 text (€ counts twice) and that one character:
            // in UCS-2 each character is one unit (an emoji two), so 141 or 142
            // units, three segments.
            let text = format!("{}{}{c}", "€".repeat(10), "a".repeat(130));
            let units = 140 + c.len_utf16();
            assert_eq!(
                cost(&text),
                SmsCost {
                    encoding: Encoding::Ucs2,
                    units,
                    segments: units.div_ceil(67) as u32
                },
                "{c:?}"
            );
        }
        // In GSM-7 the same text without it costs 150 septets: one segment.
        assert_eq!(
            cost(&format!("{}{}", "€".repeat(10), "a".repeat(130))).segments,
            1
        );
    }

    #[test]
    fn characters_that_force_ucs2_are_named() {
        assert_eq!(describe('”'), "typographic quote ” (U+201D)");
        assert_eq!(describe('–'), "typographic dash – (U+2013)");
        assert_eq!(describe('😀'), "emoji 😀 (U+1F600)");
        assert_eq!(describe('ب'), "character ب (U+0628)");
    }

    /// A phone's own cut of encoded units into parts of `multi`: cut every
    /// `multi` units, one unit earlier when the cut would fall between an escape
    /// and its character or inside a surrogate pair.
    fn split_as_a_phone_does(text: &str) -> usize {
        let gsm = first_non_gsm(text).is_none();
        // Each unit, and whether a cut may fall before it.
        let mut units: Vec<bool> = Vec::new();
        for c in text.chars() {
            let width = if gsm {
                if EXTENSION.contains(c) { 2 } else { 1 }
            } else {
                c.len_utf16()
            };
            units.push(true);
            units.extend(std::iter::repeat_n(false, width - 1));
        }
        let (single, multi) = if gsm { (160, 153) } else { (70, 67) };
        if units.is_empty() {
            return 0;
        }
        if units.len() <= single {
            return 1;
        }
        let mut parts = 0;
        let mut start = 0;
        while start < units.len() {
            let mut end = (start + multi).min(units.len());
            while end < units.len() && !units[end] {
                end -= 1;
            }
            parts += 1;
            start = end;
        }
        parts
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// Segments never undercount what a phone sends, and the units are the
        /// encoded length, for texts of GSM-7 letters, extension characters,
        /// Swedish and emoji around the segment limits.
        #[test]
        fn segments_match_a_phone_s_split(
            text in proptest::string::string_regex(
                "[a-zåäöÅÄÖ €\\[\\]{}^~|😀é]{0,420}"
            ).unwrap()
        ) {
            let counted = cost(&text);
            proptest::prop_assert_eq!(
                counted.segments as usize,
                split_as_a_phone_does(&text),
                "{:?}", counted
            );
            let units = match counted.encoding {
                Encoding::Gsm7 => text
                    .chars()
                    .map(|c| if EXTENSION.contains(c) { 2 } else { 1 })
                    .sum::<usize>(),
                Encoding::Ucs2 => text.encode_utf16().count(),
            };
            proptest::prop_assert_eq!(counted.units, units);
        }
    }

    #[test]
    fn an_extension_character_is_never_cut_across_two_parts() {
        // 152 letters, then € (escape + €) would straddle the 153-septet cut.
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        let counted = cost(&text);
        assert_eq!(counted.units, 306);
        assert_eq!(counted.segments, 3, "306 septets, but € cannot be cut");
        // The same in UCS-2 with an emoji across the 67-unit cut.
        let text = format!("{}😀{}ж", "a".repeat(66), "a".repeat(65));
        assert_eq!(cost(&text).units, 134);
        assert_eq!(cost(&text).segments, 3);
    }
}
