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
        let units = text
            .chars()
            .map(|c| if EXTENSION.contains(c) { 2 } else { 1 })
            .sum();
        SmsCost {
            encoding: Encoding::Gsm7,
            units,
            segments: segments(units, 160, 153),
        }
    } else {
        let units = text.encode_utf16().count();
        SmsCost {
            encoding: Encoding::Ucs2,
            units,
            segments: segments(units, 70, 67),
        }
    }
}

fn segments(units: usize, single: usize, multi: usize) -> u32 {
    if units == 0 {
        0
    } else if units <= single {
        1
    } else {
        units.div_ceil(multi) as u32
    }
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
    }
}
