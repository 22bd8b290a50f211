//! Recipient pseudonyms: personal data is referred to by a keyed hash everywhere
//! outside the dispatch job that needs the address.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The keyed hash of an address: `rcp:` and 32 hex digits of HMAC-SHA256.
///
/// Addresses are compared in their normalised form (E.164 phone numbers, lower-case
/// email addresses), so the same person gets the same reference everywhere.
pub fn recipient_ref(key: &[u8], address: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(address.trim().to_lowercase().as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("rcp:{}", hex::encode(&digest[..16]))
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
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
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
    fn masks_hide_the_middle() {
        assert_eq!(mask("+46701234567"), "+467******67");
        assert_eq!(mask("anna@example.se"), "a***@example.se");
    }
}
