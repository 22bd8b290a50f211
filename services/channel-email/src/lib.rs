//! channel-email: sends the email dispatch jobs over SMTP or to an `.eml` outbox and
//! reports each recipient's outcome as a `DeliveryReported` event.
//!
//! Every recipient gets their own message (their address alone in `To`) with a
//! Message-ID derived from the job and their keyed reference. A job is acknowledged
//! only after its outcome event is stored; when some recipients hit a transient
//! failure the job is retried with a growing delay, and recipients already settled
//! are remembered so the retry does not mail them again.

pub mod message;
pub mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use krisbud_kit::bus::Expect;
use krisbud_kit::consumer::{self, Ack, ConsumerSpec, Delivery};
use krisbud_kit::{Bus, CancellationToken, Runtime, Secret, Started};
use krisbud_proto::event::{DeliveryReported, DeliveryState, RecipientOutcome};
use krisbud_proto::job::{ChannelMessage, DispatchJob, Recipient};
use krisbud_proto::template::EmailMessage;
use krisbud_proto::{Actor, Channel, Envelope, Event, spec, subject};
use lettre::Address;
use lettre::message::Mailbox;
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::transport::{Attempt, Mailer, SmtpSettings, SmtpTls};

/// The service's name: its actor, health component and log target.
pub const SERVICE: &str = "channel-email";
/// The durable consumer shared by every instance.
pub const DURABLE: &str = "channel-email";

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
    /// Messages in flight at once within one job (and SMTP connections kept).
    /// Default 4.
    pub parallel_sends: usize,
    /// Seconds an SMTP command may take. Default 30.
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
            parallel_sends: 4,
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
        if self.concurrency == 0 || self.parallel_sends == 0 {
            anyhow::bail!("email.concurrency and email.parallel_sends must be at least 1");
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
                    connections: u32::try_from(self.parallel_sends).unwrap_or(u32::MAX),
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
    let mut spec = ConsumerSpec::new(
        spec::DISPATCH.name,
        DURABLE,
        &subject::dispatch_filter(Channel::Email),
    );
    spec.concurrency = config.concurrency;
    let channel = Arc::new(EmailChannel {
        bus: rt.bus.clone(),
        mailer,
        from,
        parallel_sends: config.parallel_sends,
        settled: Settled::default(),
    });
    let handler = move |delivery: Delivery| {
        let channel = channel.clone();
        async move { channel.handle(delivery).await }
    };
    let consuming = consumer::spawn(&rt.bus.js, spec, shutdown.clone(), handler).await?;
    let ready = rt.health.component(SERVICE);
    ready.set(true);
    tracing::info!(transport, "email channel consuming");
    let task = tokio::spawn(async move {
        let result = drain(consuming, &shutdown).await;
        ready.set(false);
        result
    });
    Ok(Started { addr: None, task })
}

/// Waits for the consumer to drain after shutdown, at most the grace period: jobs
/// still in hand then are abandoned and JetStream delivers them again later.
async fn drain(
    mut consuming: JoinHandle<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    tokio::select! {
        result = &mut consuming => result?,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(krisbud_kit::shutdown::GRACE).await;
        } => {
            consuming.abort();
            tracing::warn!("email jobs in hand did not finish within the grace period; they will be delivered again");
            Ok(())
        }
    }
}

/// The delay before a job with transient failures is tried again: 0.5 s, doubling
/// with every delivery, at most one minute.
pub fn retry_delay(delivered: i64) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1).clamp(0, 7)).unwrap_or(7);
    Duration::from_millis(500 * 2u64.pow(doublings)).min(Duration::from_secs(60))
}

/// How long the outcomes of a job being retried are remembered. A job that moved to
/// another instance is never finished here, so its entry must not stay forever.
const SETTLED_TTL: Duration = Duration::from_secs(3600);

/// The settled outcomes of one job, by recipient reference.
type Outcomes = HashMap<String, RecipientOutcome>;

/// Outcomes already settled for jobs that are being retried, by job id, with when
/// they were kept.
#[derive(Default)]
struct Settled {
    jobs: Mutex<HashMap<String, (Instant, Outcomes)>>,
}

impl Settled {
    fn take(&self, job_id: &str) -> Outcomes {
        self.jobs
            .lock()
            .expect("settled lock")
            .remove(job_id)
            .map(|(_, outcomes)| outcomes)
            .unwrap_or_default()
    }

    fn keep(&self, job_id: &str, outcomes: Outcomes) {
        let mut jobs = self.jobs.lock().expect("settled lock");
        jobs.retain(|_, (at, _)| at.elapsed() < SETTLED_TTL);
        jobs.insert(job_id.to_owned(), (Instant::now(), outcomes));
    }
}

struct EmailChannel {
    bus: Bus,
    mailer: Mailer,
    from: Mailbox,
    parallel_sends: usize,
    settled: Settled,
}

impl EmailChannel {
    async fn handle(&self, delivery: Delivery) -> Ack {
        let job: DispatchJob = match serde_json::from_slice(&delivery.payload) {
            Ok(job) => job,
            // serde's message could quote the payload, addresses included; the
            // position is enough to find the fault.
            Err(e) => {
                return Ack::Reject(format!(
                    "not a dispatch job ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ));
            }
        };
        let email = match (&job.channel, &job.message) {
            (Channel::Email, ChannelMessage::Email(email)) => email.clone(),
            _ => return self.refuse(&job, "the job carries no email message").await,
        };
        let mut settled = self.settled.take(&job.job_id);
        let mut open: Vec<(Recipient, Mailbox)> = Vec::new();
        for recipient in &job.recipients {
            if settled.contains_key(&recipient.reference)
                || open.iter().any(|(r, _)| r.reference == recipient.reference)
            {
                continue;
            }
            match recipient.address.trim().parse::<Address>() {
                Ok(address) => open.push((recipient.clone(), Mailbox::new(None, address))),
                Err(_) => {
                    settled.insert(
                        recipient.reference.clone(),
                        failed(recipient, "the address is not a valid email address"),
                    );
                }
            }
        }
        let transient = self.send(&job, &email, open, &mut settled).await;
        if let Some(reason) = transient {
            let unsettled = job
                .recipients
                .iter()
                .filter(|r| !settled.contains_key(&r.reference))
                .count();
            tracing::warn!(
                job = %job.job_id,
                unsettled,
                %reason,
                "email job not finished; trying again later"
            );
            self.settled.keep(&job.job_id, settled);
            return Ack::Retry(retry_delay(delivery.delivered));
        }
        let outcomes: Vec<RecipientOutcome> = job
            .recipients
            .iter()
            .filter_map(|r| settled.get(&r.reference).cloned())
            .collect();
        match report(&self.bus, &job, self.mailer.name(), outcomes).await {
            Ok(()) => {
                let count = |state| outcomes_count(&settled, &job, state);
                tracing::info!(
                    job = %job.job_id,
                    sent = count(DeliveryState::Sent),
                    delivered = count(DeliveryState::Delivered),
                    failed = count(DeliveryState::Failed),
                    "email job reported"
                );
                Ack::Done
            }
            Err(e) => {
                tracing::warn!(job = %job.job_id, error = %e, "cannot store the email outcome; trying again later");
                self.settled.keep(&job.job_id, settled);
                Ack::Retry(retry_delay(delivery.delivered))
            }
        }
    }

    /// Sends to the open recipients, a few at a time, and settles what it can.
    /// Returns why some recipients are still open, if they are.
    async fn send(
        &self,
        job: &DispatchJob,
        email: &EmailMessage,
        open: Vec<(Recipient, Mailbox)>,
        settled: &mut Outcomes,
    ) -> Option<String> {
        let attempts: Vec<(Recipient, Attempt)> = futures::stream::iter(open)
            .map(|(recipient, to)| async move {
                let attempt = self.send_one(job, email, &recipient, to).await;
                (recipient, attempt)
            })
            .buffer_unordered(self.parallel_sends.max(1))
            .collect()
            .await;
        let mut transient = None;
        for (recipient, attempt) in attempts {
            match attempt {
                Attempt::Settled(outcome) => {
                    settled.insert(recipient.reference, outcome);
                }
                Attempt::Transient(reason) => transient = Some(reason),
            }
        }
        transient
    }

    async fn send_one(
        &self,
        job: &DispatchJob,
        email: &EmailMessage,
        recipient: &Recipient,
        to: Mailbox,
    ) -> Attempt {
        let id = message::message_id(&job.job_id, recipient);
        match message::build(&self.from, to, job, email, recipient) {
            Ok(message) => self.mailer.send(message, recipient, &id).await,
            // Building fails the same way every time, so it is final.
            Err(e) => Attempt::Settled(failed(
                recipient,
                &transport::scrub(
                    &format!("cannot build the email: {}", transport::error_chain(&e)),
                    &recipient.address,
                ),
            )),
        }
    }

    /// Records that a job can never be sent, then rejects it for good.
    async fn refuse(&self, job: &DispatchJob, reason: &str) -> Ack {
        let outcomes = job.recipients.iter().map(|r| failed(r, reason)).collect();
        match report(&self.bus, job, self.mailer.name(), outcomes).await {
            Ok(()) => Ack::Reject(reason.to_owned()),
            Err(e) => {
                tracing::warn!(job = %job.job_id, error = %e, "cannot store why a job is refused; trying again later");
                Ack::Retry(retry_delay(1))
            }
        }
    }
}

/// How many of the job's recipients ended in `state`.
fn outcomes_count(settled: &Outcomes, job: &DispatchJob, state: DeliveryState) -> usize {
    job.recipients
        .iter()
        .filter(|r| settled.get(&r.reference).is_some_and(|o| o.state == state))
        .count()
}

fn failed(recipient: &Recipient, reason: &str) -> RecipientOutcome {
    RecipientOutcome {
        recipient: recipient.reference.clone(),
        state: DeliveryState::Failed,
        provider_ref: None,
        reason: Some(reason.to_owned()),
    }
}

/// Appends the job's `DeliveryReported` with the deterministic id `<job>.outcome`,
/// so reporting the same job twice stores it once.
async fn report(
    bus: &Bus,
    job: &DispatchJob,
    provider: &str,
    outcomes: Vec<RecipientOutcome>,
) -> Result<(), krisbud_kit::bus::AppendError> {
    let event = Event::DeliveryReported(DeliveryReported {
        crisis_id: job.crisis_id.clone(),
        revision: job.revision,
        channel: Channel::Email,
        job_id: job.job_id.clone(),
        provider: provider.to_owned(),
        outcomes,
    });
    let mut envelope = Envelope::with_id(
        format!("{}.outcome", job.job_id),
        Actor::service(SERVICE),
        event,
    );
    envelope.causation_id = Some(job.job_id.clone());
    bus.append(&envelope, Expect::Any).await?;
    Ok(())
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
    fn ports_follow_tls() {
        assert_eq!(SmtpTls::None.default_port(), 25);
        assert_eq!(SmtpTls::Starttls.default_port(), 587);
        assert_eq!(SmtpTls::Tls.default_port(), 465);
    }
}
