//! Turning a rendered email of a job into one MIME message per recipient:
//! multipart/alternative with plain text and HTML, the job's language in
//! `Content-Language`, and a Message-ID that is the same on every retry.

use krisbud_proto::job::{DispatchJob, Recipient};
use krisbud_proto::language;
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

/// The Message-ID of one recipient's copy of a crisis revision:
/// `<crisis.r<revision>.hash@krisbud>`, where `hash` is the hex part of the
/// recipient's keyed reference (never the address). It does not depend on the job,
/// so it stays the same on a retry and whichever batch the planner puts the
/// recipient in, and receiving systems can drop a duplicate; the next revision (an
/// update, the all-clear) is a new message.
pub fn message_id(crisis_id: &str, revision: u32, recipient: &Recipient) -> String {
    let hash: String = recipient
        .reference
        .strip_prefix("rcp:")
        .unwrap_or(&recipient.reference)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let crisis: String = crisis_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    format!("<{crisis}.r{revision}.{hash}@krisbud>")
}

/// The Message-ID of one recipient's copy of `job`: [`message_id`] of the crisis
/// revision, except that an escalation notice names its channel and level too, so
/// each level's notice to the same officer is a message of its own.
pub fn job_message_id(job: &DispatchJob, recipient: &Recipient) -> String {
    match krisbud_proto::event::notice_job(&job.job_id) {
        Some(notice) => message_id(
            &format!(
                "{}.{}.escalation.{}",
                job.crisis_id, notice.channel, notice.level
            ),
            job.revision,
            recipient,
        ),
        None => message_id(&job.crisis_id, job.revision, recipient),
    }
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
        .message_id(Some(job_message_id(job, recipient)))
        .header(AutoSubmitted);
    if language::is_normalised(&job.language) {
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

    fn anna() -> Recipient {
        Recipient {
            reference: "rcp:0123456789abcdef0123456789abcdef".into(),
            address: "anna@example.se".into(),
        }
    }

    #[test]
    fn message_ids_are_per_crisis_revision_and_recipient_and_carry_no_address() {
        let id = message_id("vattenlacka-farsta", 1, &anna());
        assert_eq!(
            id,
            "<vattenlacka-farsta.r1.0123456789abcdef0123456789abcdef@krisbud>"
        );
        assert!(!id.contains("anna"));
        assert_ne!(id, message_id("vattenlacka-farsta", 2, &anna()));
        let notice = |job_id: &str| DispatchJob {
            job_id: job_id.into(),
            crisis_id: "vattenlacka-farsta".into(),
            revision: 1,
            ..serde_json::from_value(serde_json::json!({
                "job_id": "x", "crisis_id": "x", "revision": 1, "channel": "email",
                "status": "Actual", "language": "sv", "declared_at": "2026-11-26T08:00:00Z",
                "cap": {"category": "Infra", "event": "e", "urgency": "Immediate",
                        "severity": "Severe", "certainty": "Observed", "response_type": "Prepare"},
                "message": {"channel": "email", "subject": "s", "text": "t", "html": "h"}
            }))
            .unwrap()
        };
        let alert = notice("vattenlacka-farsta.r1.email.sv.0");
        let level1 = notice("vattenlacka-farsta.r1.sms.escalation.1.email.0");
        let level2 = notice("vattenlacka-farsta.r1.sms.escalation.2.email.0");
        assert_eq!(job_message_id(&alert, &anna()), id);
        assert_ne!(job_message_id(&level1, &anna()), id);
        assert_ne!(
            job_message_id(&level1, &anna()),
            job_message_id(&level2, &anna())
        );
        assert_ne!(id, message_id("vattenlacka-kista", 1, &anna()));
        // Nothing from the crisis id can break out of the header.
        assert_eq!(
            message_id("x>\r\nBcc: y@z", 1, &anna()),
            "<xBccyz.r1.0123456789abcdef0123456789abcdef@krisbud>"
        );
    }

    #[test]
    fn a_recipient_gets_the_same_message_id_in_whichever_batch() {
        let email = EmailMessage {
            subject: "Vattenläcka".into(),
            text: "Koka vattnet.".into(),
            html: "<p>Koka vattnet.</p>".into(),
        };
        let from: Mailbox = "Stockholms stad <krisinformation@stockholm.se>"
            .parse()
            .unwrap();
        let to: Mailbox = "anna@example.se".parse().unwrap();
        let header = |job_id: &str, revision: u32| {
            let job = DispatchJob {
                job_id: job_id.into(),
                revision,
                ..krisbud_tests::service::dispatch_job(
                    krisbud_proto::Channel::Email,
                    "vattenlacka-farsta",
                    revision,
                    "sv",
                    krisbud_proto::job::ChannelMessage::Email(email.clone()),
                )
            };
            let message = build(&from, to.clone(), &job, &email, &anna()).unwrap();
            message
                .headers()
                .get_raw("Message-ID")
                .expect("a Message-ID")
                .to_owned()
        };
        let first = header("vattenlacka-farsta.r1.email.sv.0", 1);
        assert_eq!(
            first,
            "<vattenlacka-farsta.r1.0123456789abcdef0123456789abcdef@krisbud>"
        );
        assert_eq!(header("vattenlacka-farsta.r1.email.sv.7", 1), first);
        assert_eq!(header("vattenlacka-farsta.r1.email.en.0", 1), first);
        assert_ne!(header("vattenlacka-farsta.r2.email.sv.0", 2), first);
    }
}
