//! The ways an email leaves: SMTP through lettre (no TLS, STARTTLS or implicit TLS,
//! optional authentication) or lettre's file transport writing `.eml` files to
//! `<data_dir>/outbox/email/`.
//!
//! SMTP 250 means the relay took the message (`Sent`); a 5xx is final (`Failed`);
//! a 4xx, a lost connection or a timeout is transient and the job is tried again.
//! A written `.eml` is where it is read, so it is `Delivered`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use krisbud_kit::Secret;
pub use krisbud_kit::channel::Attempt;
use krisbud_kit::channel::error_chain;
use krisbud_kit::privacy::mask;
use krisbud_proto::event::{DeliveryState, RecipientOutcome};
use krisbud_proto::job::Recipient;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
};

/// How much of an SMTP reply goes into a failure reason.
const REASON_LIMIT: usize = 300;

/// TLS towards the SMTP relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text; only for a relay on the same host or a test server.
    None,
    /// STARTTLS, required.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

impl SmtpTls {
    /// The usual port: 25 without TLS, 587 for STARTTLS, 465 for implicit TLS.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        }
    }
}

/// How to reach the SMTP relay.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// The relay's host name.
    pub host: String,
    /// The relay's port.
    pub port: u16,
    /// TLS towards the relay.
    pub tls: SmtpTls,
    /// Authenticate only when set.
    pub username: Option<String>,
    /// The password, used with `username`.
    pub password: Secret,
    /// How long one SMTP command may take.
    pub timeout: Duration,
    /// Connections kept open to the relay.
    pub connections: u32,
}

/// Where emails go.
#[derive(Clone)]
pub enum Mailer {
    /// An SMTP relay.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in a directory.
    Outbox {
        /// lettre's file transport, naming each file after a fresh id.
        transport: AsyncFileTransport<Tokio1Executor>,
        /// The directory it writes to.
        dir: PathBuf,
    },
}

impl Mailer {
    /// An SMTP mailer; connections are opened when the first message goes.
    pub fn smtp(settings: &SmtpSettings) -> anyhow::Result<Mailer> {
        type Smtp = AsyncSmtpTransport<Tokio1Executor>;
        let builder = match settings.tls {
            SmtpTls::None => Smtp::builder_dangerous(&settings.host),
            SmtpTls::Starttls => Smtp::starttls_relay(&settings.host)?,
            SmtpTls::Tls => Smtp::relay(&settings.host)?,
        };
        let mut builder = builder
            .port(settings.port)
            .timeout(Some(settings.timeout))
            .pool_config(PoolConfig::new().max_size(settings.connections.max(1)));
        if let Some(username) = &settings.username {
            builder = builder.credentials(Credentials::new(
                username.clone(),
                settings.password.expose().to_owned(),
            ));
        }
        Ok(Mailer::Smtp(builder.build()))
    }

    /// An outbox in `<data_dir>/outbox/email`, creating the directory readable by
    /// its owner only (the files hold addresses).
    pub fn outbox(data_dir: &Path) -> anyhow::Result<Mailer> {
        let dir = data_dir.join("outbox").join("email");
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            builder.mode(0o700);
        }
        builder.create(&dir).map_err(|e| {
            anyhow::anyhow!("cannot create the email outbox {}: {e}", dir.display())
        })?;
        Ok(Mailer::Outbox {
            transport: AsyncFileTransport::new(&dir),
            dir,
        })
    }

    /// The name reported as the job's provider.
    pub fn name(&self) -> &'static str {
        match self {
            Mailer::Smtp(_) => "smtp",
            Mailer::Outbox { .. } => "outbox",
        }
    }

    /// Sends one recipient's message.
    pub async fn send(&self, message: Message, recipient: &Recipient, message_id: &str) -> Attempt {
        match self {
            Mailer::Smtp(smtp) => match smtp.send(message).await {
                Ok(_) => settled(recipient, DeliveryState::Sent, Some(message_id), None),
                Err(e) if e.is_permanent() => {
                    let reason = scrub(&format!("smtp {}", error_chain(&e)), &recipient.address);
                    settled(recipient, DeliveryState::Failed, None, Some(reason))
                }
                Err(e) => Attempt::Transient(scrub(
                    &format!("smtp {}", error_chain(&e)),
                    &recipient.address,
                )),
            },
            Mailer::Outbox { transport, dir } => match transport.send(message).await {
                Ok(id) => match sync(&dir.join(format!("{id}.eml"))).await {
                    Ok(()) => settled(recipient, DeliveryState::Delivered, Some(&id), None),
                    Err(e) => Attempt::Transient(format!("cannot sync the email outbox: {e}")),
                },
                Err(e) => Attempt::Transient(format!(
                    "cannot write the email outbox: {}",
                    error_chain(&e)
                )),
            },
        }
    }
}

/// Flushes a written file to disk, so the job is acknowledged only once the mail
/// survives a crash (lettre's file transport does not sync).
async fn sync(path: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(path).await?.sync_all().await
}

fn settled(
    recipient: &Recipient,
    state: DeliveryState,
    provider_ref: Option<&str>,
    reason: Option<String>,
) -> Attempt {
    Attempt::Settled(RecipientOutcome {
        recipient: recipient.reference.clone(),
        state,
        provider_ref: provider_ref.map(str::to_owned),
        reason,
    })
}

/// A reason fit for an event: one line, bounded, and with the recipient's address
/// masked, because relays like to quote it (`550 <anna@x.se>: unknown user`).
pub(crate) fn scrub(text: &str, address: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let masked = if address.is_empty() {
        one_line
    } else {
        replace_ignoring_case(&one_line, address, &mask(address))
    };
    let mut out: String = masked.chars().take(REASON_LIMIT).collect();
    if masked.chars().count() > REASON_LIMIT {
        out.push('…');
    }
    out
}

fn replace_ignoring_case(text: &str, needle: &str, with: &str) -> String {
    let lower_text = text.to_lowercase();
    let lower_needle = needle.to_lowercase();
    // Lower-casing can change byte lengths outside ASCII; then fall back to an
    // exact replacement rather than cut a character in half.
    if lower_text.len() != text.len() || lower_needle.len() != needle.len() {
        return text.replace(needle, with);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (at, _) in lower_text.match_indices(&lower_needle) {
        out.push_str(&text[rest..at]);
        out.push_str(with);
        rest = at + needle.len();
    }
    out.push_str(&text[rest..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_hide_the_address() {
        let reason = scrub(
            "smtp permanent error (550): 5.1.1 <Anna.Lind@Example.se>: Recipient address rejected",
            "anna.lind@example.se",
        );
        assert!(!reason.to_lowercase().contains("anna.lind"), "{reason}");
        assert!(reason.contains("a***@example.se"), "{reason}");
        assert!(reason.starts_with("smtp permanent error (550)"), "{reason}");
    }
}
