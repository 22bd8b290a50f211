//! channel-sms: sends the SMS dispatch jobs through a provider (46elks, or the
//! outbox file) and reports each recipient's outcome as a `DeliveryReported` event.
//!
//! Jobs come from the durable consumer `channel-sms` on KRISBUD_DISPATCH. A job is
//! acknowledged only after its outcome event is stored; when some recipients could
//! not be reached for a transient reason the job is retried with a growing delay,
//! and the recipients already settled are remembered so the retry does not text
//! them again.

pub mod elks;
pub mod outbox;
pub mod provider;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use krisbud_kit::bus::Expect;
use krisbud_kit::consumer::{self, Ack, ConsumerSpec, Delivery};
use krisbud_kit::{Bus, CancellationToken, Runtime, Secret, Started};
use krisbud_proto::event::{DeliveryReported, DeliveryState, RecipientOutcome};
use krisbud_proto::job::{ChannelMessage, DispatchJob, Recipient};
use krisbud_proto::template::SmsMessage;
use krisbud_proto::{Actor, Channel, Envelope, Event, spec, subject};
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::elks::{Elks46, ElksSettings};
use crate::outbox::Outbox;
use crate::provider::{Attempt, SmsProvider, is_alphanumeric_sender, is_e164};

/// The service's name: its actor, health component and log target.
pub const SERVICE: &str = "channel-sms";
/// The durable consumer shared by every instance.
pub const DURABLE: &str = "channel-sms";

/// Which provider carries the messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ProviderKind {
    /// Append to `<data_dir>/outbox/sms.jsonl` instead of sending.
    #[default]
    #[serde(rename = "outbox")]
    Outbox,
    /// The 46elks SMS API.
    #[serde(rename = "46elks")]
    Elks46,
}

/// `[sms]`: the SMS channel's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `outbox` (default) or `46elks`.
    pub provider: ProviderKind,
    /// The sender shown to recipients: at most 11 letters and digits, or an E.164
    /// number. Default `Stockholm`.
    pub from: String,
    /// 46elks's API address. Default `https://api.46elks.com`.
    pub elks_base_url: String,
    /// 46elks API username.
    pub elks_username: String,
    /// 46elks API password.
    pub elks_password: Secret,
    /// Where 46elks posts delivery reports (`whendelivered`); none by default.
    #[serde(deserialize_with = "krisbud_kit::config::empty_as_none")]
    pub delivery_callback_url: Option<String>,
    /// Jobs handled at once by this instance. Default 4.
    pub concurrency: usize,
    /// Provider requests in flight at once within one job. Default 8.
    pub parallel_requests: usize,
    /// Seconds one provider request may take. Default 15.
    pub request_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            provider: ProviderKind::Outbox,
            from: "Stockholm".into(),
            elks_base_url: "https://api.46elks.com".into(),
            elks_username: String::new(),
            elks_password: Secret::default(),
            delivery_callback_url: None,
            concurrency: 4,
            parallel_requests: 8,
            request_timeout_secs: 15,
        }
    }
}

impl Config {
    /// Checks what can be checked before anything is sent; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(is_e164(&self.from) || is_alphanumeric_sender(&self.from)) {
            anyhow::bail!(
                "sms.from must be an e.164 number or at most 11 letters and digits, not {:?}",
                self.from
            );
        }
        if self.concurrency == 0 || self.parallel_requests == 0 {
            anyhow::bail!("sms.concurrency and sms.parallel_requests must be at least 1");
        }
        if self.request_timeout_secs == 0 {
            anyhow::bail!("sms.request_timeout_secs must be at least 1");
        }
        if let Some(url) = &self.delivery_callback_url
            && !is_http_url(url)
        {
            anyhow::bail!("sms.delivery_callback_url must be an http or https url");
        }
        if self.provider == ProviderKind::Elks46 {
            if !is_http_url(&self.elks_base_url) {
                anyhow::bail!("sms.elks_base_url must be an http or https url");
            }
            if self.elks_username.is_empty() {
                anyhow::bail!("sms.elks_username is required with provider 46elks");
            }
            if self.elks_password.is_empty() {
                anyhow::bail!("sms.elks_password is required with provider 46elks");
            }
        }
        Ok(())
    }

    fn provider(&self, rt: &Runtime) -> anyhow::Result<Arc<dyn SmsProvider>> {
        Ok(match self.provider {
            ProviderKind::Outbox => Arc::new(Outbox::new(&rt.data_dir, &self.from)?),
            ProviderKind::Elks46 => Arc::new(Elks46::new(ElksSettings {
                base_url: self.elks_base_url.clone(),
                username: self.elks_username.clone(),
                password: self.elks_password.clone(),
                from: self.from.clone(),
                delivery_callback_url: self.delivery_callback_url.clone(),
                parallel_requests: self.parallel_requests,
                timeout: Duration::from_secs(self.request_timeout_secs),
            })?),
        })
    }
}

fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// Starts consuming SMS jobs. Returns once the durable consumer exists, so a job
/// dispatched afterwards is handled; the task ends after a graceful shutdown.
pub async fn start(
    config: Config,
    rt: Runtime,
    shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    config.validate()?;
    let provider = config.provider(&rt)?;
    let name = provider.name();
    let mut spec = ConsumerSpec::new(
        spec::DISPATCH.name,
        DURABLE,
        &subject::dispatch_filter(Channel::Sms),
    );
    spec.concurrency = config.concurrency;
    let channel = Arc::new(SmsChannel {
        bus: rt.bus.clone(),
        provider,
        settled: Settled::default(),
    });
    let handler = move |delivery: Delivery| {
        let channel = channel.clone();
        async move { channel.handle(delivery).await }
    };
    let consuming = consumer::spawn(&rt.bus.js, spec, shutdown.clone(), handler).await?;
    let ready = rt.health.component(SERVICE);
    ready.set(true);
    tracing::info!(provider = name, "sms channel consuming");
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
            tracing::warn!("sms jobs in hand did not finish within the grace period; they will be delivered again");
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

struct SmsChannel {
    bus: Bus,
    provider: Arc<dyn SmsProvider>,
    settled: Settled,
}

impl SmsChannel {
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
        let message = match (&job.channel, &job.message) {
            (Channel::Sms, ChannelMessage::Sms(message)) => message.clone(),
            _ => return self.refuse(&job, "the job carries no sms message").await,
        };
        let mut settled = self.settled.take(&job.job_id);
        let mut open: Vec<Recipient> = Vec::new();
        for recipient in &job.recipients {
            if settled.contains_key(&recipient.reference)
                || open.iter().any(|r| r.reference == recipient.reference)
            {
                continue;
            }
            if is_e164(&recipient.address) {
                open.push(recipient.clone());
            } else {
                settled.insert(
                    recipient.reference.clone(),
                    failed(recipient, "the address is not an e.164 phone number"),
                );
            }
        }
        let transient = self.send(&job, &message, &open, &mut settled).await;
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
                "sms job not finished; trying again later"
            );
            self.settled.keep(&job.job_id, settled);
            return Ack::Retry(retry_delay(delivery.delivered));
        }
        let outcomes: Vec<RecipientOutcome> = job
            .recipients
            .iter()
            .filter_map(|r| settled.get(&r.reference).cloned())
            .collect();
        match report(&self.bus, &job, self.provider.name(), outcomes).await {
            Ok(()) => {
                let count = |state| outcomes_count(&settled, &job, state);
                tracing::info!(
                    job = %job.job_id,
                    sent = count(DeliveryState::Sent),
                    delivered = count(DeliveryState::Delivered),
                    failed = count(DeliveryState::Failed),
                    "sms job reported"
                );
                Ack::Done
            }
            Err(e) => {
                tracing::warn!(job = %job.job_id, error = %e, "cannot store the sms outcome; trying again later");
                self.settled.keep(&job.job_id, settled);
                Ack::Retry(retry_delay(delivery.delivered))
            }
        }
    }

    /// Hands the open recipients to the provider and settles what it settled.
    /// Returns why some recipients are still open, if they are.
    async fn send(
        &self,
        job: &DispatchJob,
        message: &SmsMessage,
        open: &[Recipient],
        settled: &mut Outcomes,
    ) -> Option<String> {
        if open.is_empty() {
            return None;
        }
        let attempts = self.provider.send(job, message, open).await;
        let mut transient = None;
        if attempts.len() != open.len() {
            transient = Some(format!(
                "the provider answered for {} of {} recipients",
                attempts.len(),
                open.len()
            ));
        }
        for (recipient, attempt) in open.iter().zip(attempts) {
            match attempt {
                Attempt::Settled(outcome) => {
                    settled.insert(recipient.reference.clone(), outcome);
                }
                Attempt::Transient(reason) => transient = Some(reason),
            }
        }
        transient
    }

    /// Records that a job can never be sent, then rejects it for good.
    async fn refuse(&self, job: &DispatchJob, reason: &str) -> Ack {
        let outcomes = job.recipients.iter().map(|r| failed(r, reason)).collect();
        match report(&self.bus, job, self.provider.name(), outcomes).await {
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
        channel: Channel::Sms,
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
    fn retry_delays_grow_and_stop_at_a_minute() {
        assert_eq!(retry_delay(1), Duration::from_millis(500));
        assert_eq!(retry_delay(2), Duration::from_secs(1));
        assert_eq!(retry_delay(4), Duration::from_secs(4));
        assert_eq!(retry_delay(100), Duration::from_secs(60));
        assert_eq!(retry_delay(0), Duration::from_millis(500));
    }

    #[test]
    fn config_is_checked() {
        assert!(Config::default().validate().is_ok());
        let long_sender = Config {
            from: "Stockholms stad".into(),
            ..Config::default()
        };
        assert!(long_sender.validate().is_err());
        let elks_without_password = Config {
            provider: ProviderKind::Elks46,
            elks_username: "u".into(),
            ..Config::default()
        };
        let err = elks_without_password.validate().unwrap_err().to_string();
        assert!(err.contains("sms.elks_password"), "{err}");
    }
}
