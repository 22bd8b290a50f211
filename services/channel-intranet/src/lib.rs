//! channel-intranet: publishes each intranet dispatch job as an
//! `IntranetArticle` to a signed webhook or the outbox, and reports the outcome
//! (recipient `intranet`) as a `DeliveryReported` event.
//!
//! A job is acknowledged only after its outcome event is stored; a transient
//! failure of the webhook retries the job with a growing delay.

pub mod publish;

use std::time::Duration;

use krisbud_kit::bus::Expect;
use krisbud_kit::consumer::{self, Ack, ConsumerSpec, Delivery};
use krisbud_kit::{Bus, CancellationToken, Runtime, Secret, Started};
use krisbud_proto::event::{DeliveryReported, DeliveryState, RecipientOutcome};
use krisbud_proto::job::{ChannelMessage, DispatchJob};
use krisbud_proto::publish::IntranetArticle;
use krisbud_proto::template::IntranetMessage;
use krisbud_proto::{Actor, Channel, Envelope, Event, spec, subject};
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::publish::{Published, Publisher};

/// The service's name: its actor, health component and log target.
pub const SERVICE: &str = "channel-intranet";
/// The durable consumer shared by every instance.
pub const DURABLE: &str = "channel-intranet";
/// The recipient named in outcomes: the intranet is one target, not a person.
pub const RECIPIENT: &str = "intranet";

/// Where articles go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `<data_dir>/outbox/intranet.jsonl`.
    #[default]
    Outbox,
    /// An HMAC-signed webhook.
    Webhook,
}

/// `[intranet]`: the intranet channel's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `outbox` (default) or `webhook`.
    pub mode: Mode,
    /// The intranet's endpoint for articles.
    pub webhook_url: String,
    /// The key of the body signature; required with `webhook`.
    pub webhook_secret: Secret,
    /// Seconds one webhook request may take. Default 15.
    pub timeout_secs: u64,
    /// Jobs handled at once by this instance. Default 4.
    pub concurrency: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Outbox,
            webhook_url: String::new(),
            webhook_secret: Secret::default(),
            timeout_secs: 15,
            concurrency: 4,
        }
    }
}

impl Config {
    /// Checks the configuration; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.concurrency == 0 {
            anyhow::bail!("intranet.concurrency must be at least 1");
        }
        if self.timeout_secs == 0 {
            anyhow::bail!("intranet.timeout_secs must be at least 1");
        }
        if self.mode == Mode::Webhook {
            if !(self.webhook_url.starts_with("http://")
                || self.webhook_url.starts_with("https://"))
            {
                anyhow::bail!(
                    "intranet.webhook_url must be an http or https url with mode webhook"
                );
            }
            if self.webhook_secret.is_empty() {
                anyhow::bail!("intranet.webhook_secret is required with mode webhook");
            }
        }
        Ok(())
    }

    fn publisher(&self, rt: &Runtime) -> anyhow::Result<Publisher> {
        match self.mode {
            Mode::Outbox => Publisher::outbox(&rt.data_dir),
            Mode::Webhook => Publisher::webhook(
                &self.webhook_url,
                self.webhook_secret.clone(),
                Duration::from_secs(self.timeout_secs),
            ),
        }
    }
}

/// The article a job publishes. `published_at` is the declaration time the job
/// carries, so a retried webhook sends the same bytes and the same signature.
pub fn article(job: &DispatchJob, message: &IntranetMessage) -> IntranetArticle {
    IntranetArticle {
        crisis_id: job.crisis_id.clone(),
        revision: job.revision,
        language: job.language.clone(),
        status: job.status,
        severity: job.cap.severity,
        title: message.title.clone(),
        body: message.body.clone(),
        published_at: job.declared_at,
    }
}

/// Starts consuming intranet jobs. Returns once the durable consumer exists, so a
/// job dispatched afterwards is handled; the task ends after a graceful shutdown.
pub async fn start(
    config: Config,
    rt: Runtime,
    shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    config.validate()?;
    let publisher = config.publisher(&rt)?;
    let mode = publisher.name();
    let mut spec = ConsumerSpec::new(
        spec::DISPATCH.name,
        DURABLE,
        &subject::dispatch_filter(Channel::Intranet),
    );
    spec.concurrency = config.concurrency;
    let channel = std::sync::Arc::new(IntranetChannel {
        bus: rt.bus.clone(),
        publisher,
    });
    let handler = move |delivery: Delivery| {
        let channel = channel.clone();
        async move { channel.handle(delivery).await }
    };
    let consuming = consumer::spawn(&rt.bus.js, spec, shutdown.clone(), handler).await?;
    let ready = rt.health.component(SERVICE);
    ready.set(true);
    tracing::info!(mode, "intranet channel consuming");
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
            tracing::warn!("intranet jobs in hand did not finish within the grace period; they will be delivered again");
            Ok(())
        }
    }
}

/// The delay before a job with a transient failure is tried again: 0.5 s,
/// doubling with every delivery, at most one minute.
pub fn retry_delay(delivered: i64) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1).clamp(0, 7)).unwrap_or(7);
    Duration::from_millis(500 * 2u64.pow(doublings)).min(Duration::from_secs(60))
}

struct IntranetChannel {
    bus: Bus,
    publisher: Publisher,
}

impl IntranetChannel {
    async fn handle(&self, delivery: Delivery) -> Ack {
        let job: DispatchJob = match serde_json::from_slice(&delivery.payload) {
            Ok(job) => job,
            Err(e) => {
                return Ack::Reject(format!(
                    "not a dispatch job ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ));
            }
        };
        let message = match (&job.channel, &job.message) {
            (Channel::Intranet, ChannelMessage::Intranet(message)) => message,
            _ => {
                let reason = "the job carries no intranet message";
                return match self
                    .report(&job, outcome(DeliveryState::Failed, Some(reason)))
                    .await
                {
                    Ok(()) => Ack::Reject(reason.to_owned()),
                    Err(e) => {
                        tracing::warn!(job = %job.job_id, error = %e, "cannot store why a job is refused; trying again later");
                        Ack::Retry(retry_delay(delivery.delivered))
                    }
                };
            }
        };
        let outcome = match self
            .publisher
            .publish(&job.job_id, &article(&job, message))
            .await
        {
            Published::Delivered => outcome(DeliveryState::Delivered, None),
            Published::Failed(reason) => outcome(DeliveryState::Failed, Some(&reason)),
            Published::Transient(reason) => {
                tracing::warn!(job = %job.job_id, %reason, "intranet article not published; trying again later");
                return Ack::Retry(retry_delay(delivery.delivered));
            }
        };
        let state = outcome.state;
        match self.report(&job, outcome).await {
            Ok(()) => {
                tracing::info!(job = %job.job_id, ?state, "intranet job reported");
                Ack::Done
            }
            Err(e) => {
                // Publishing again is harmless: the webhook gets the same
                // delivery id and bytes, the outbox one more identical line.
                tracing::warn!(job = %job.job_id, error = %e, "cannot store the intranet outcome; trying again later");
                Ack::Retry(retry_delay(delivery.delivered))
            }
        }
    }

    /// Appends the job's `DeliveryReported` with the deterministic id
    /// `<job>.outcome`, so reporting the same job twice stores it once.
    async fn report(
        &self,
        job: &DispatchJob,
        outcome: RecipientOutcome,
    ) -> Result<(), krisbud_kit::bus::AppendError> {
        let event = Event::DeliveryReported(DeliveryReported {
            crisis_id: job.crisis_id.clone(),
            revision: job.revision,
            channel: Channel::Intranet,
            job_id: job.job_id.clone(),
            provider: self.publisher.name().to_owned(),
            outcomes: vec![outcome],
        });
        let mut envelope = Envelope::with_id(
            format!("{}.outcome", job.job_id),
            Actor::service(SERVICE),
            event,
        );
        envelope.causation_id = Some(job.job_id.clone());
        self.bus.append(&envelope, Expect::Any).await?;
        Ok(())
    }
}

fn outcome(state: DeliveryState, reason: Option<&str>) -> RecipientOutcome {
    RecipientOutcome {
        recipient: RECIPIENT.to_owned(),
        state,
        provider_ref: None,
        reason: reason.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_needs_url_and_secret() {
        assert!(Config::default().validate().is_ok());
        let no_secret = Config {
            mode: Mode::Webhook,
            webhook_url: "https://intranat.example/api".into(),
            ..Config::default()
        };
        let err = no_secret.validate().unwrap_err().to_string();
        assert!(err.contains("intranet.webhook_secret"), "{err}");
        let no_url = Config {
            mode: Mode::Webhook,
            webhook_secret: Secret::new("s"),
            ..Config::default()
        };
        let err = no_url.validate().unwrap_err().to_string();
        assert!(err.contains("intranet.webhook_url"), "{err}");
    }
}
