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

pub mod message;
pub mod transport;

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
        Ok(from)
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
                Mailer::smtp(&SmtpSettings {
                    host: self.smtp_host.clone(),
                    port: self.smtp_port.unwrap_or(tls.default_port()),
                    tls,
                    username: (!self.smtp_username.is_empty()).then(|| self.smtp_username.clone()),
                    password: self.smtp_password.clone(),
                    timeout: Duration::from_secs(self.timeout_secs),
                    connections: self.connections,
                })
                .context("email smtp transport")
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
            .deliver(delivery, &job, transport, address, send)
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
    fn ports_follow_tls() {
        assert_eq!(SmtpTls::None.default_port(), 25);
        assert_eq!(SmtpTls::Starttls.default_port(), 587);
        assert_eq!(SmtpTls::Tls.default_port(), 465);
    }
}
