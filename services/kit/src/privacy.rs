//! Recipient pseudonyms: personal data is referred to by a keyed hash everywhere
//! outside the dispatch job that needs the address.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The keyed hash of an address: `rcp:` and 32 hex digits of HMAC-SHA256.
///
/// Addresses are compared in their normalised form (E.164 phone numbers, lower-case
/// email addresses), so the same person gets the same reference everywhere.
pub fn recipient_ref(key: &[u8], address: &str) -> String {
    #[allow(clippy::expect_used, reason = "HMAC takes a key of any length")]
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(address.trim().to_lowercase().as_bytes());
    let digest = mac.finalize().into_bytes();
    let half: Vec<u8> = digest.iter().take(16).copied().collect();
    format!("rcp:{}", hex::encode(half))
}

/// Which kind of address a normalised address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    Phone,
    Email,
}

/// A phone number in E.164 (`070-123 45 67` → `+46701234567`). Numbers without a
/// country code are read as Swedish; `00` is read as the international prefix.
/// The error says what is wrong without repeating the number.
pub fn normalise_phone(raw: &str) -> Result<String, &'static str> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("the phone number is empty");
    }
    if raw.chars().any(|c| {
        !(c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.' | '/' | '\u{a0}'))
    }) {
        return Err(
            "a phone number may hold only digits, spaces, dashes, parentheses and a leading +",
        );
    }
    let compact: String = raw
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    if compact.is_empty() {
        return Err("the phone number has no digits");
    }
    if compact.chars().skip(1).any(|c| c == '+') {
        return Err("a + may only begin the phone number");
    }
    let international = match compact.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => compact,
    };
    if let Some(e164) = swedish_mobile(&international) {
        return Ok(e164);
    }
    if !international.starts_with('+') && !international.starts_with('0') {
        return Err(
            "write the phone number with its leading 0 (070-123 45 67) or with + and the country code",
        );
    }
    let number = phonenumber::parse(Some(phonenumber::country::Id::SE), &international)
        .map_err(|_| "not a phone number")?;
    if !number.is_valid() {
        return Err("not a valid phone number: check the number of digits and the area code");
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// The E.164 form of a Swedish mobile number (`07X XXX XX XX`, national pattern
/// `7[02369]\d{7}` in libphonenumber's metadata), without the library: it takes
/// about 40 µs a number, which is most of a million-member import, and nearly
/// every member of a Swedish audience has such a number. A test checks that this
/// agrees with the library.
fn swedish_mobile(compact: &str) -> Option<String> {
    let national = compact
        .strip_prefix("+46")
        .or_else(|| compact.strip_prefix('0'))?;
    let b = national.as_bytes();
    let mobile = b.len() == 9
        && matches!(b, [b'7', b'0' | b'2' | b'3' | b'6' | b'9', ..])
        && b.iter().all(u8::is_ascii_digit);
    mobile.then(|| format!("+46{national}"))
}

/// An email address in the form references are computed from: trimmed and in
/// lower case. The error says what is wrong without repeating the address.
pub fn normalise_email(raw: &str) -> Result<String, &'static str> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err("the email address is empty");
    }
    let parsed = email_address::EmailAddress::parse_with_options(
        &email,
        email_address::Options::default()
            .without_display_text()
            .without_domain_literal(),
    )
    .map_err(|_| "the email address is not of the form namn@exempel.se")?;
    if !parsed.domain().contains('.') {
        return Err("the email address's domain has no dot (namn@exempel.se)");
    }
    Ok(email)
}

/// A phone number or an email address (told apart by the `@`), normalised.
pub fn normalise_address(raw: &str) -> Result<(String, AddressKind), &'static str> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("give a phone number or an email address");
    }
    if raw.contains('@') {
        normalise_email(raw).map(|e| (e, AddressKind::Email))
    } else {
        normalise_phone(raw).map(|p| (p, AddressKind::Phone))
    }
}

/// A form of an address safe to show: `+4670*****67`, `a***@example.se`.
pub fn mask(address: &str) -> String {
    if let Some((local, domain)) = address.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = address.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    let head: String = chars.iter().take(4).collect();
    let tail: String = chars.iter().skip(chars.len() - 2).collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_keyed_and_stable() {
        let a = recipient_ref(b"k1", "+46701234567");
        assert_eq!(a, recipient_ref(b"k1", " +46701234567 "));
        assert_ne!(a, recipient_ref(b"k2", "+46701234567"));
        assert!(!a.contains("46701234567"));
        assert_eq!(a.len(), 4 + 32);
    }

    #[test]
    fn swedish_numbers_become_e164() {
        for raw in [
            "070-123 45 67",
            "0701234567",
            "+46 70 123 45 67",
            "+46701234567",
            "0046701234567",
            "(070) 123 45 67",
        ] {
            assert_eq!(normalise_phone(raw).as_deref(), Ok("+46701234567"), "{raw}");
        }
        assert_eq!(
            normalise_phone("08-508 000 00").as_deref(),
            Ok("+46850800000")
        );
        assert_eq!(
            normalise_phone("+47 412 34 567").as_deref(),
            Ok("+4741234567")
        );
    }

    #[test]
    fn the_mobile_short_cut_agrees_with_the_library() {
        for national in
            (0..20_000u32).map(|i| format!("07{:08}", i.wrapping_mul(2_654_435_761) % 100_000_000))
        {
            let library = phonenumber::parse(Some(phonenumber::country::Id::SE), &national)
                .ok()
                .filter(|n| n.is_valid())
                .map(|n| n.format().mode(phonenumber::Mode::E164).to_string());
            if let Some(short) = swedish_mobile(&national) {
                assert_eq!(Some(short), library, "{national}");
            }
        }
    }

    #[test]
    fn bad_numbers_are_refused_without_echoing_them() {
        for raw in [
            "070-12",
            "abc",
            "0701234567890123",
            "70 123 45 67",
            "+46+70",
            "",
            "-",
            "()",
            "+",
            " - ( ) ",
        ] {
            let err = normalise_phone(raw).expect_err(raw);
            assert!(raw.is_empty() || !err.contains(raw), "{err}");
        }
    }

    #[test]
    fn emails_are_checked_and_lower_cased() {
        assert_eq!(
            normalise_email(" Anna.Lind@Farsta.Example ").as_deref(),
            Ok("anna.lind@farsta.example")
        );
        for raw in [
            "anna",
            "anna@",
            "@farsta.se",
            "anna lind@farsta.se",
            "anna@farsta",
        ] {
            assert!(normalise_email(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn masks_hide_the_middle() {
        assert_eq!(mask("+46701234567"), "+467******67");
        assert_eq!(mask("anna@example.se"), "a***@example.se");
    }

    proptest::proptest! {
        /// Whatever a CSV cell or a lookup form holds, the normalisers answer
        /// with a value or a reason; they never panic.
        #[test]
        fn normalisers_never_panic(raw in ".{0,40}") {
            let _ = normalise_phone(&raw);
            let _ = normalise_email(&raw);
            let _ = normalise_address(&raw);
            let _ = mask(&raw);
        }

        /// The same, over strings made of the characters a phone number may hold,
        /// where the interesting cases (lone signs, brackets, `+` in the middle) are.
        #[test]
        fn phone_normaliser_never_panics_on_phone_characters(raw in "[0-9+ ()./\\-]{0,24}") {
            if let Ok(e164) = normalise_phone(&raw) {
                proptest::prop_assert!(e164.starts_with('+'));
            }
        }
    }
}
