//! What an SMS provider is to the channel: something that takes one job's
//! recipients and says, per recipient, what became of the message.
//!
//! Providers (46elks and the outbox today; Sinch, Twilio and failover later) differ
//! only behind [`SmsProvider`]; the channel decides about retries and reporting.

use futures::future::BoxFuture;
pub use krisbud_kit::channel::Attempt;
use krisbud_proto::job::{DispatchJob, Recipient};
use krisbud_proto::template::SmsMessage;

/// An SMS provider.
pub trait SmsProvider: Send + Sync {
    /// The provider's name as reported in `DeliveryReported::provider`.
    fn name(&self) -> &'static str;

    /// Sends `message` of `job` to each of `recipients` and returns one attempt per
    /// recipient, in the same order.
    fn send<'a>(
        &'a self,
        job: &'a DispatchJob,
        message: &'a SmsMessage,
        recipients: &'a [Recipient],
    ) -> BoxFuture<'a, Vec<Attempt>>;
}

/// Whether `s` is an E.164 phone number: `+` and 7 to 15 digits, not starting
/// with 0.
pub fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|digits| {
        (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// Whether `s` can be an alphanumeric sender id: 1 to 11 ASCII letters or digits.
pub fn is_alphanumeric_sender(s: &str) -> bool {
    (1..=11).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_and_senders() {
        assert!(is_e164("+46701234567"));
        assert!(!is_e164("+4670"));
        assert!(!is_e164("0701234567"));
        assert!(!is_e164("+46 70 123 45 67"));
        assert!(is_alphanumeric_sender("Stockholm"));
        assert!(!is_alphanumeric_sender("Stockholms stad"));
        assert!(!is_alphanumeric_sender(""));
    }
}
