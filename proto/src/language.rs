//! Language tags (BCP 47), normalised once, on the way in.
//!
//! Members, templates and jobs carry tags in their canonical case (RFC 5646
//! 2.1.1: `sv`, `en`, `fa-IR`, `sr-Latn`, `sv-x-lattlast`), so everything after
//! the way in may compare tags as plain strings: a member imported with `EN`
//! gets the English wording. [`normalise`] is the one place that decides what a
//! tag is; the parsing is oxilangtag's.

use oxilangtag::LanguageTag;

/// The longest tag krisbud keeps (RFC 5646 4.4.1 asks for at least 35).
pub const MAX_LEN: usize = 35;

/// `tag` in canonical case, or why it is not a language tag krisbud takes: a
/// well-formed BCP 47 tag of at most [`MAX_LEN`] characters whose primary
/// language is two or three letters (no bare private-use or grandfathered tags).
pub fn normalise(tag: &str) -> Result<String, &'static str> {
    if tag.len() > MAX_LEN {
        return Err("longer than 35 characters");
    }
    let parsed = LanguageTag::parse_and_normalize(tag)
        .map_err(|_| "not a language tag such as sv, en, fa-IR or sv-x-lattlast")?;
    if !(2..=3).contains(&parsed.primary_language().len())
        || !parsed
            .primary_language()
            .bytes()
            .all(|b| b.is_ascii_alphabetic())
    {
        return Err("the language must be two or three letters, such as sv or en");
    }
    Ok(parsed.into_inner())
}

/// Whether `tag` is a language tag krisbud takes, written in canonical case.
pub fn is_normalised(tag: &str) -> bool {
    normalise(tag).is_ok_and(|n| n == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_put_in_canonical_case() {
        for (given, canonical) in [
            ("sv", "sv"),
            ("EN", "en"),
            ("Sv", "sv"),
            ("fa-ir", "fa-IR"),
            ("SR-latn-rs", "sr-Latn-RS"),
            ("sv-X-LattLast", "sv-x-lattlast"),
            ("ar", "ar"),
            ("so", "so"),
        ] {
            assert_eq!(normalise(given).as_deref(), Ok(canonical), "{given}");
            assert!(is_normalised(canonical));
        }
        assert!(!is_normalised("EN"));
    }

    #[test]
    fn what_is_not_a_tag_is_refused_with_a_reason() {
        for bad in [
            "",
            "svenska",
            "sv_SE",
            "sv-",
            "sv-x-lättläst",
            "sv\r\nBcc: x@y",
            "x-private",
            "i-ami",
            "sv-abcdefghi",
            "sv-x-aaaaaaaa-bbbbbbbb-cccccccc-dddd",
        ] {
            let err = normalise(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
    }
}
