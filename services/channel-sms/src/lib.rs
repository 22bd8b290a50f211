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

use std::sync::Arc;
use std::time::Duration;

use krisbud_kit::channel::{self, JobHandler, Jobs};
use krisbud_kit::consumer::{Ack, Delivery};
use krisbud_kit::{CancellationToken, Runtime, Secret, Started};
use krisbud_proto::Channel;
use krisbud_proto::job::{ChannelMessage, DispatchJob, Recipient};
use serde::Deserialize;

use crate::elks::{Elks46, ElksSettings};
use crate::outbox::Outbox;
use crate::provider::{SmsProvider, is_alphanumeric_sender, is_e164};

/// The service's name: its actor, health component and log target.
pub const SERVICE: &str = "channel-sms";
/// The durable consumer shared by every instance, named after the service (see
/// `krisbud_kit::channel::consume`).
pub const DURABLE: &str = SERVICE;

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
    let sms = SmsChannel {
        jobs: Jobs::new(rt.bus.clone(), Channel::Sms, SERVICE),
        provider,
    };
    let started = channel::consume(
        &rt,
        SERVICE,
        Channel::Sms,
        config.concurrency,
        shutdown,
        sms,
    )
    .await?;
    tracing::info!(provider = name, "sms channel consuming");
    Ok(started)
}

struct SmsChannel {
    jobs: Jobs,
    provider: Arc<dyn SmsProvider>,
}

impl JobHandler for SmsChannel {
    async fn handle(&self, delivery: &Delivery, job: DispatchJob) -> Ack {
        let provider = self.provider.name();
        let (Channel::Sms, ChannelMessage::Sms(message)) = (&job.channel, &job.message) else {
            let reason = "the job carries no sms message";
            let outcomes = channel::all_failed(&job, reason);
            return self
                .jobs
                .refuse(delivery, &job, provider, outcomes, reason)
                .await;
        };
        let address = |recipient: &Recipient| {
            if is_e164(&recipient.address) {
                Ok(())
            } else {
                Err("the address is not an e.164 phone number")
            }
        };
        let send = async |open: Vec<(Recipient, ())>| {
            let recipients: Vec<Recipient> = open.into_iter().map(|(r, ())| r).collect();
            let attempts = self.provider.send(&job, message, &recipients).await;
            recipients.into_iter().zip(attempts).collect()
        };
        self.jobs
            .deliver(delivery, &job, provider, address, send)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
