//! channel-intranet: publishes each intranet dispatch job as an
//! `IntranetArticle` to a signed webhook or the outbox, and reports the outcome
//! (recipient `intranet`) as a `DeliveryReported` event.
//!
//! A job is acknowledged only after its outcome event is stored; a transient
//! failure of the webhook retries the job with a growing delay.

// A service never panics on what it is handed: no unchecked indexing, no unwrap
// or expect outside tests (an expect that cannot fail says why, where it is).
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)
)]

pub mod publish;

use std::time::Duration;

use krisbud_kit::channel::{self, JobHandler, Jobs};
use krisbud_kit::consumer::{Ack, Delivery};
use krisbud_kit::{CancellationToken, Runtime, Secret, Started};
use krisbud_proto::Channel;
use krisbud_proto::job::{ChannelMessage, DispatchJob};
use krisbud_proto::publish::IntranetArticle;
use krisbud_proto::template::IntranetMessage;
use serde::Deserialize;

use crate::publish::{Published, Publisher};

/// The service's name: its actor, health component and log target.
pub const SERVICE: &str = "channel-intranet";
/// The durable consumer shared by every instance, named after the service (see
/// `krisbud_kit::channel::consume`).
pub const DURABLE: &str = SERVICE;
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

/// The article a job publishes. `published_at` is the time the job's revision was
/// issued (the declaration time for the first), so a retried webhook sends the same
/// bytes and the same signature; every revision has the same `article_id`.
pub fn article(job: &DispatchJob, message: &IntranetMessage) -> IntranetArticle {
    IntranetArticle {
        crisis_id: job.crisis_id.clone(),
        revision: job.revision,
        language: job.language.clone(),
        status: job.status,
        severity: job.cap.severity,
        title: message.title.clone(),
        body: message.body.clone(),
        published_at: job.issued_at.unwrap_or(job.declared_at),
        article_id: format!("{}.{}", job.crisis_id, job.language),
        msg_type: job.msg_type,
        references: job.references.clone(),
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
    let intranet = IntranetChannel {
        jobs: Jobs::new(rt.bus.clone(), Channel::Intranet, SERVICE),
        publisher,
    };
    let started = channel::consume(
        &rt,
        SERVICE,
        Channel::Intranet,
        config.concurrency,
        shutdown,
        intranet,
    )
    .await?;
    tracing::info!(mode, "intranet channel consuming");
    Ok(started)
}

struct IntranetChannel {
    jobs: Jobs,
    publisher: Publisher,
}

impl JobHandler for IntranetChannel {
    async fn handle(&self, delivery: &Delivery, job: DispatchJob) -> Ack {
        let mode = self.publisher.name();
        let (Channel::Intranet, ChannelMessage::Intranet(message)) = (&job.channel, &job.message)
        else {
            let reason = "the job carries no intranet message";
            let outcomes = vec![channel::failed(RECIPIENT, reason)];
            return self
                .jobs
                .refuse(delivery, &job, mode, outcomes, reason)
                .await;
        };
        let outcome = match self
            .publisher
            .publish(&job.job_id, &article(&job, message))
            .await
        {
            Published::Delivered => channel::delivered(RECIPIENT, None),
            Published::Failed(reason) => channel::failed(RECIPIENT, &reason),
            Published::Transient(reason) => {
                tracing::warn!(job = %job.job_id, %reason, "intranet article not published; trying again later");
                return Ack::Retry(channel::retry_delay(delivery.delivered));
            }
        };
        // Should the outcome not be stored, publishing again is harmless: the
        // webhook gets the same delivery id and bytes, the outbox one more
        // identical line.
        self.jobs.finish(delivery, &job, mode, vec![outcome]).await
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
