//! Turning a rendered email of a job into one MIME message per recipient:
//! multipart/alternative with plain text and HTML, the job's language in
//! `Content-Language`, and a Message-ID that is the same on every retry.

use krisbud_proto::job::{DispatchJob, Recipient};
use krisbud_proto::template::EmailMessage;
use lettre::Message;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

/// `Content-Language` (RFC 3282): the language the message is written in, so mail
/// clients and screen readers pick the right voice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentLanguage(pub String);

impl Header for ContentLanguage {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Content-Language")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ContentLanguage(s.trim().to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834): no vacation replies, please.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// The Message-ID of one recipient's copy: `<job_id.hash@krisbud>`, where `hash` is
/// the hex part of the recipient's keyed reference. A retried job sends the same
/// id, so receiving systems can drop the duplicate, and no address shows in it.
pub fn message_id(job_id: &str, recipient: &Recipient) -> String {
    let hash: String = recipient
        .reference
        .strip_prefix("rcp:")
        .unwrap_or(&recipient.reference)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let job: String = job_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    format!("<{job}.{hash}@krisbud>")
}

/// Whether `tag` looks like a BCP 47 language tag (`sv`, `en`, `sv-x-lattlast`).
fn is_language_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 35
        && tag.split('-').all(|part| {
            (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// One recipient's message.
pub fn build(
    from: &Mailbox,
    to: Mailbox,
    job: &DispatchJob,
    email: &EmailMessage,
    recipient: &Recipient,
) -> Result<Message, lettre::error::Error> {
    let mut builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject.clone())
        .date_now()
        .message_id(Some(message_id(&job.job_id, recipient)))
        .header(AutoSubmitted);
    if is_language_tag(&job.language) {
        builder = builder.header(ContentLanguage(job.language.clone()));
    }
    builder.multipart(MultiPart::alternative_plain_html(
        email.text.clone(),
        email.html.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_and_carry_no_address() {
        let recipient = Recipient {
            reference: "rcp:0123456789abcdef0123456789abcdef".into(),
            address: "anna@example.se".into(),
        };
        let id = message_id("farsta.r1.email.sv.0", &recipient);
        assert_eq!(
            id,
            "<farsta.r1.email.sv.0.0123456789abcdef0123456789abcdef@krisbud>"
        );
        assert!(!id.contains("anna"));
    }

    #[test]
    fn language_tags() {
        assert!(is_language_tag("sv"));
        assert!(is_language_tag("sv-x-lattlast"));
        assert!(!is_language_tag("sv\r\nBcc: x@y"));
        assert!(!is_language_tag(""));
    }
}
