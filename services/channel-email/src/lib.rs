//! channel-email: sends the email dispatch jobs over SMTP or to an `.eml` outbox and
//! reports each recipient's outcome as a `DeliveryReported` event.
//!
//! Every recipient gets their own message (their address alone in `To`) with a
//! Message-ID derived from the crisis, its revision and their keyed reference, so it
//! is the same whichever job (batch) carries them and however often it is tried.
//! At most `connections` SMTP sessions are open at once, shared by all the jobs in
//! hand. A job is acknowledged only after its outcome event is stored; when some
//! recipients hit a transient failure the job is retried with a growing delay, and
//! recipients already settled are remembered so the retry does not mail them again.

// A service never panics on what it is handed: no unchecked indexing, no unwrap
// or expect outside tests (an expect that cannot fail says why, where it is).
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)
)]

pub mod message;
pub mod transport;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use krisbud_kit::channel::{self, JobHandler, Jobs};
use krisbud_kit::consumer::{Ack, Delivery};
use krisbud_kit::{CancellationToken, Runtime, Secret, Started};
use krisbud_proto::Channel;
use krisbud_proto::job::{ChannelMessage, DispatchJob, Recipient};
use krisbud_proto::template::EmailMessage;
use lettre::Address;
use lettre::message::Mailbox;
use serde::Deserialize;

use crate::transport::{Attempt, Mailer, SmtpSettings, SmtpTls};

/// The service's name: its actor, health component and log target.
pub const SERVICE: &str = "channel-email";
/// The durable consumer shared by every instance, named after the service (see
/// `krisbud_kit::channel::consume`).
pub const DURABLE: &str = SERVICE;

/// How emails leave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// `.eml` files in `<data_dir>/outbox/email/`.
    #[default]
    Outbox,
    /// An SMTP relay.
    Smtp,
}

/// TLS towards the SMTP relay, as configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text (a relay on the same host, a test server).
    None,
    /// STARTTLS, required (the default).
    #[default]
    Starttls,
    /// Implicit TLS (SMTPS).
    Tls,
}

/// `[email]`: the email channel's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `outbox` (default) or `smtp`.
    pub transport: TransportKind,
    /// The sender. Default `Stockholms stad <krisinformation@stockholm.se>`.
    pub from: String,
    /// The SMTP relay's host name. Default `localhost`.
    pub smtp_host: String,
    /// The relay's port; by default 25, 587 or 465 according to `smtp_tls`.
    pub smtp_port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`.
    pub smtp_tls: TlsMode,
    /// A PEM file of certificates to trust for the relay besides the system's
    /// roots: a private CA's, or the relay's own self-signed one. With `starttls`
    /// or `tls` only. (No setting turns certificate checks off.)
    pub smtp_tls_ca_file: Option<PathBuf>,
    /// Authenticate with this user name; no authentication when empty.
    pub smtp_username: String,
    /// The SMTP password.
    pub smtp_password: Secret,
    /// Jobs handled at once by this instance. Default 4.
    pub concurrency: usize,
    /// SMTP sessions open at once by this instance, at most, shared by the jobs in
    /// hand (and kept open between messages); with the outbox, messages written at
    /// once per job. Default 4. (`parallel_sends` is its former name.)
    #[serde(alias = "parallel_sends")]
    pub connections: usize,
    /// Seconds opening an SMTP session, or one message's transaction, may take.
    /// Default 30.
    pub timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            transport: TransportKind::Outbox,
            from: "Stockholms stad <krisinformation@stockholm.se>".into(),
            smtp_host: "localhost".into(),
            smtp_port: None,
            smtp_tls: TlsMode::Starttls,
            smtp_tls_ca_file: None,
            smtp_username: String::new(),
            smtp_password: Secret::default(),
            concurrency: 4,
            connections: 4,
            timeout_secs: 30,
        }
    }
}

impl Config {
    /// Checks the configuration; errors name the key.
    pub fn validate(&self) -> anyhow::Result<Mailbox> {
        let from: Mailbox = self
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("email.from is not a mailbox ({e}): {:?}", self.from))?;
        if self.concurrency == 0 {
            anyhow::bail!("email.concurrency must be at least 1");
        }
        if self.connections == 0 {
            anyhow::bail!("email.connections must be at least 1");
        }
        if self.timeout_secs == 0 {
            anyhow::bail!("email.timeout_secs must be at least 1");
        }
        if self.transport == TransportKind::Smtp && self.smtp_host.trim().is_empty() {
            anyhow::bail!("email.smtp_host is required with transport smtp");
        }
        if self.smtp_port == Some(0) {
            anyhow::bail!("email.smtp_port must not be 0");
        }
        if self.smtp_tls_ca_file.is_some() && self.smtp_tls == TlsMode::None {
            anyhow::bail!("email.smtp_tls_ca_file needs email.smtp_tls starttls or tls");
        }
        Ok(from)
    }

    /// The certificates of `smtp_tls_ca_file`, when it is set, checked to hold at
    /// least one.
    fn ca_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(path) = &self.smtp_tls_ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|e| {
            anyhow::anyhow!(
                "email.smtp_tls_ca_file cannot be read ({e}): {}",
                path.display()
            )
        })?;
        // lettre reads only the CERTIFICATE blocks and would take a file without
        // any (a key, a DER file) as trusting nothing more.
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            anyhow::bail!(
                "email.smtp_tls_ca_file holds no PEM certificate: {}",
                path.display()
            );
        }
        Ok(Some(pem))
    }

    fn mailer(&self, rt: &Runtime) -> anyhow::Result<Mailer> {
        match self.transport {
            TransportKind::Outbox => Mailer::outbox(&rt.data_dir),
            TransportKind::Smtp => {
                let tls = match self.smtp_tls {
                    TlsMode::None => SmtpTls::None,
                    TlsMode::Starttls => SmtpTls::Starttls,
                    TlsMode::Tls => SmtpTls::Tls,
                };
                let ca_pem = self.ca_pem()?;
                let context = if ca_pem.is_some() {
                    "email smtp transport with the certificates of email.smtp_tls_ca_file"
                } else {
                    "email smtp transport"
                };
                Mailer::smtp(&SmtpSettings {
                    host: self.smtp_host.clone(),
                    port: self.smtp_port.unwrap_or(tls.default_port()),
                    tls,
                    username: (!self.smtp_username.is_empty()).then(|| self.smtp_username.clone()),
                    password: self.smtp_password.clone(),
                    timeout: Duration::from_secs(self.timeout_secs),
                    connections: self.connections,
                    ca_pem,
                })
                .context(context)
            }
        }
    }
}

/// Starts consuming email jobs. Returns once the durable consumer exists, so a job
/// dispatched afterwards is handled; the task ends after a graceful shutdown.
pub async fn start(
    config: Config,
    rt: Runtime,
    shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    let from = config.validate()?;
    let mailer = config.mailer(&rt)?;
    let transport = mailer.name();
    let email = EmailChannel {
        jobs: Jobs::new(rt.bus.clone(), Channel::Email, SERVICE),
        mailer,
        from,
        connections: config.connections,
    };
    let started = channel::consume(
        &rt,
        SERVICE,
        Channel::Email,
        config.concurrency,
        shutdown,
        email,
    )
    .await?;
    tracing::info!(transport, "email channel consuming");
    Ok(started)
}

struct EmailChannel {
    jobs: Jobs,
    mailer: Mailer,
    from: Mailbox,
    connections: usize,
}

impl JobHandler for EmailChannel {
    async fn handle(&self, delivery: &Delivery, job: DispatchJob) -> Ack {
        let transport = self.mailer.name();
        let (Channel::Email, ChannelMessage::Email(email)) = (&job.channel, &job.message) else {
            let reason = "the job carries no email message";
            let outcomes = channel::all_failed(&job, reason);
            return self
                .jobs
                .refuse(delivery, &job, transport, outcomes, reason)
                .await;
        };
        let address = |recipient: &Recipient| match recipient.address.trim().parse::<Address>() {
            Ok(address) => Ok(Mailbox::new(None, address)),
            Err(_) => Err("the address is not a valid email address"),
        };
        // Every recipient gets their own message, a few at a time; with SMTP the
        // pool's permits bound the sends of all jobs in hand together.
        let send = async |open: Vec<(Recipient, Mailbox)>| {
            let job = &job;
            futures::stream::iter(open)
                .map(|(recipient, to)| async move {
                    let attempt = self.send_one(job, email, &recipient, to).await;
                    (recipient, attempt)
                })
                .buffer_unordered(self.connections.max(1))
                .collect()
                .await
        };
        self.jobs
            .deliver(delivery, &job, || transport.to_owned(), address, send)
            .await
    }
}

impl EmailChannel {
    /// Builds and sends one recipient's own message.
    async fn send_one(
        &self,
        job: &DispatchJob,
        email: &EmailMessage,
        recipient: &Recipient,
        to: Mailbox,
    ) -> Attempt {
        let id = message::job_message_id(job, recipient);
        match message::build(&self.from, to, job, email, recipient) {
            Ok(message) => self.mailer.send(message, recipient, &id).await,
            // Building fails the same way every time, so it is final.
            Err(e) => Attempt::Settled(channel::failed(
                &recipient.reference,
                &transport::scrub(
                    &format!("cannot build the email: {}", channel::error_chain(&e)),
                    &recipient.address,
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked() {
        assert!(Config::default().validate().is_ok());
        let bad_from = Config {
            from: "krisinformation".into(),
            ..Config::default()
        };
        let err = bad_from.validate().unwrap_err().to_string();
        assert!(err.contains("email.from"), "{err}");
    }

    #[test]
    fn connections_are_checked_and_keep_their_former_name() {
        let none = Config {
            connections: 0,
            ..Config::default()
        };
        let err = none.validate().unwrap_err().to_string();
        assert!(err.contains("email.connections"), "{err}");
        let config: Config = serde_json::from_value(serde_json::json!({"connections": 8})).unwrap();
        assert_eq!(config.connections, 8);
        let config: Config =
            serde_json::from_value(serde_json::json!({"parallel_sends": 6})).unwrap();
        assert_eq!(config.connections, 6);
    }

    #[test]
    fn a_ca_file_must_hold_certificates_and_needs_tls() {
        let dir = std::env::temp_dir().join(format!("krisbud-email-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = Config {
            smtp_tls_ca_file: Some(dir.join("saknas.pem")),
            ..Config::default()
        };
        let err = missing.ca_pem().unwrap_err().to_string();
        assert!(err.contains("email.smtp_tls_ca_file"), "{err}");

        let key_only = dir.join("nyckel.pem");
        std::fs::write(
            &key_only,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let no_certificate = Config {
            smtp_tls_ca_file: Some(key_only.clone()),
            ..Config::default()
        };
        let err = no_certificate.ca_pem().unwrap_err().to_string();
        assert!(
            err.contains("email.smtp_tls_ca_file holds no PEM certificate"),
            "{err}"
        );

        let in_clear = Config {
            smtp_tls: TlsMode::None,
            smtp_tls_ca_file: Some(key_only),
            ..Config::default()
        };
        let err = in_clear.validate().unwrap_err().to_string();
        assert!(err.contains("email.smtp_tls_ca_file"), "{err}");

        let config: Config = serde_json::from_value(
            serde_json::json!({"smtp_tls_ca_file": "/etc/krisbud/relay-ca.pem"}),
        )
        .unwrap();
        assert_eq!(
            config.smtp_tls_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/krisbud/relay-ca.pem"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ports_follow_tls() {
        assert_eq!(SmtpTls::None.default_port(), 25);
        assert_eq!(SmtpTls::Starttls.default_port(), 587);
        assert_eq!(SmtpTls::Tls.default_port(), 465);
    }
}
