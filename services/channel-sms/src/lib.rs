//! channel-sms: sends the SMS dispatch jobs through a provider (46elks, Sinch,
//! Twilio, or the outbox file; optionally failing over to a second one), reports
//! each recipient's outcome as a `DeliveryReported` event, and turns the providers'
//! delivery-report callbacks into further `DeliveryReported` events.
//!
//! Jobs come from the durable consumer `channel-sms` on KRISBUD_DISPATCH. A job is
//! acknowledged only after its outcome event is stored; when some recipients could
//! not be reached for a transient reason the job is retried with a growing delay
//! (at least a provider's Retry-After), and the recipients already settled are
//! remembered so the retry does not text them again. Each batch of a job is
//! claimed before it goes out (`claims`), so an instance dying mid-job costs at
//! most its batches in flight, reported as possible duplicates. Requests are paced
//! per provider (`provider::Pacer`), and recipients still pending at the crisis's
//! deadline (`max_age_secs` after the declaration, or the job's `expires_at`)
//! fail with the reason `expired`.

// A service never panics on what it is handed: no unchecked indexing, no unwrap
// or expect outside tests (an expect that cannot fail says why, where it is).
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)
)]

pub mod callbacks;
pub mod claims;
pub mod elks;
pub mod failover;
pub mod outbox;
pub mod provider;
pub mod sinch;
pub mod twilio;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use krisbud_kit::channel::{self, JobHandler, Jobs};
use krisbud_kit::consumer::{Ack, Delivery};
use krisbud_kit::{CancellationToken, Runtime, Secret, Started};
use krisbud_proto::Channel;
use krisbud_proto::job::{ChannelMessage, DispatchJob, Recipient};
use serde::Deserialize;

use crate::callbacks::{CallbackState, CallbackUrls};
use crate::claims::Claims;
use crate::elks::{Elks46, ElksSettings};
use crate::failover::Failover;
use crate::outbox::Outbox;
use crate::provider::{Pacer, Pacing, SmsProvider, is_alphanumeric_sender, is_e164};
use crate::sinch::{Sinch, SinchSettings};
use crate::twilio::{Twilio, TwilioSettings};

/// The service's name: its actor, health component and log target.
pub const SERVICE: &str = "channel-sms";
/// The durable consumer shared by every instance, named after the service (see
/// `krisbud_kit::channel::consume`).
pub const DURABLE: &str = SERVICE;

/// The failure reason of recipients still pending when their crisis's deadline
/// has passed.
pub const EXPIRED: &str = "expired";

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
    /// The Sinch SMS REST API (batches of up to 1,000).
    #[serde(rename = "sinch")]
    Sinch,
    /// The Twilio Messages API.
    #[serde(rename = "twilio")]
    Twilio,
}

/// `[sms]`: the SMS channel's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `outbox` (default), `46elks`, `sinch` or `twilio`.
    pub provider: ProviderKind,
    /// Where the rest of a job goes when `provider` keeps failing transiently
    /// (`failover_after` times in a row); none by default.
    pub secondary_provider: Option<ProviderKind>,
    /// Transient failures of the primary in a row (requests that still failed
    /// after their retries) before the secondary takes over. Default 3.
    pub failover_after: u32,
    /// The sender shown to recipients: at most 11 letters and digits, or an E.164
    /// number. Default `Stockholm`.
    pub from: String,
    /// 46elks's API address. Default `https://api.46elks.com`.
    pub elks_base_url: String,
    /// 46elks API username.
    pub elks_username: String,
    /// 46elks API password.
    pub elks_password: Secret,
    /// Where 46elks posts delivery reports (`whendelivered`) when the channel
    /// serves no callbacks itself (`callback_listen` unset); none by default.
    #[serde(deserialize_with = "krisbud_kit::config::empty_as_none")]
    pub delivery_callback_url: Option<String>,
    /// Sinch's API address. Default `https://eu.sms.api.sinch.com`.
    pub sinch_base_url: String,
    /// Sinch service plan id.
    pub sinch_service_plan_id: String,
    /// Sinch API token (Bearer).
    pub sinch_api_token: Secret,
    /// Recipients per Sinch batch request, at most 1,000. Default 1,000.
    pub sinch_batch_size: usize,
    /// Twilio's API address. Default `https://api.twilio.com`.
    pub twilio_base_url: String,
    /// Twilio account SID.
    pub twilio_account_sid: String,
    /// Twilio auth token; also checks the signature of Twilio's callbacks.
    pub twilio_auth_token: Secret,
    /// Where the channel serves the providers' delivery-report callbacks, e.g.
    /// `0.0.0.0:8087`; none by default (then no reports are asked for, except
    /// 46elks's `delivery_callback_url`).
    #[serde(deserialize_with = "krisbud_kit::config::empty_as_none")]
    pub callback_listen: Option<String>,
    /// The public URL of that listener as the providers reach it, e.g.
    /// `https://krisbud.stockholm.se`; default `http://<bound address>`.
    #[serde(deserialize_with = "krisbud_kit::config::empty_as_none")]
    pub callback_base_url: Option<String>,
    /// The secret in every callback path; required with `callback_listen`.
    pub callback_secret: Secret,
    /// Jobs handled at once by this instance. Default 4.
    pub concurrency: usize,
    /// Provider requests in flight at once, per provider, across all jobs of this
    /// instance. Default 8.
    pub parallel_requests: usize,
    /// Messages per second per provider for this instance; 0 (default) is no limit.
    pub messages_per_second: u32,
    /// Tries of one provider request within one delivery of a job. Default 3.
    pub request_attempts: u32,
    /// Milliseconds before the first retry of a request; doubles, with jitter.
    /// Default 200.
    pub retry_backoff_ms: u64,
    /// Seconds one provider request may take. Default 15.
    pub request_timeout_secs: u64,
    /// Recipients per send claim (see `claims`): at most this many can get a
    /// message twice when an instance dies with their batch in flight. Default
    /// 0: `sinch_batch_size` with Sinch as the primary, 100 otherwise.
    pub claim_batch_size: usize,
    /// Seconds after a crisis's declaration when its recipients still pending
    /// fail with the reason `expired`; 0 (default) is no limit. A job's own
    /// `expires_at`, when earlier, is the deadline too.
    pub max_age_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            provider: ProviderKind::Outbox,
            secondary_provider: None,
            failover_after: 3,
            from: "Stockholm".into(),
            elks_base_url: "https://api.46elks.com".into(),
            elks_username: String::new(),
            elks_password: Secret::default(),
            delivery_callback_url: None,
            sinch_base_url: "https://eu.sms.api.sinch.com".into(),
            sinch_service_plan_id: String::new(),
            sinch_api_token: Secret::default(),
            sinch_batch_size: sinch::MAX_BATCH,
            twilio_base_url: "https://api.twilio.com".into(),
            twilio_account_sid: String::new(),
            twilio_auth_token: Secret::default(),
            callback_listen: None,
            callback_base_url: None,
            callback_secret: Secret::default(),
            concurrency: 4,
            parallel_requests: 8,
            messages_per_second: 0,
            request_attempts: 3,
            retry_backoff_ms: 200,
            request_timeout_secs: 15,
            claim_batch_size: 0,
            max_age_secs: 0,
        }
    }
}

impl Config {
    /// Checks what can be checked before anything is sent; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(is_e164(&self.from) || is_alphanumeric_sender(&self.from)) {
            anyhow::bail!(
                "sms.from must be an e.164 number or at most 11 letters, digits and spaces with at least one letter, not {:?}",
                self.from
            );
        }
        if self.concurrency == 0 || self.parallel_requests == 0 {
            anyhow::bail!("sms.concurrency and sms.parallel_requests must be at least 1");
        }
        if self.request_timeout_secs == 0 {
            anyhow::bail!("sms.request_timeout_secs must be at least 1");
        }
        if self.request_attempts == 0 {
            anyhow::bail!("sms.request_attempts must be at least 1");
        }
        if !(1..=sinch::MAX_BATCH).contains(&self.sinch_batch_size) {
            anyhow::bail!("sms.sinch_batch_size must be from 1 to 1000");
        }
        if let Some(url) = &self.delivery_callback_url
            && !is_http_url(url)
        {
            anyhow::bail!("sms.delivery_callback_url must be an http or https url");
        }
        if let Some(url) = &self.callback_base_url
            && !is_http_url(url)
        {
            anyhow::bail!("sms.callback_base_url must be an http or https url");
        }
        if self.callback_listen.is_some() {
            let secret = self.callback_secret.expose();
            // Letters, digits and '-' only: Twilio refuses a StatusCallback URL
            // with an underscore, and the secret is part of that URL.
            if secret.len() < 16
                || !secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                anyhow::bail!(
                    "sms.callback_secret must be at least 16 letters, digits or '-' with callback_listen (no '_': Twilio refuses such a callback URL)"
                );
            }
        }
        if self.secondary_provider == Some(self.provider) {
            anyhow::bail!("sms.secondary_provider must differ from sms.provider");
        }
        for kind in std::iter::once(self.provider).chain(self.secondary_provider) {
            self.validate_provider(kind)?;
        }
        Ok(())
    }

    fn validate_provider(&self, kind: ProviderKind) -> anyhow::Result<()> {
        match kind {
            ProviderKind::Outbox => {}
            ProviderKind::Elks46 => {
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
            ProviderKind::Sinch => {
                if !is_http_url(&self.sinch_base_url) {
                    anyhow::bail!("sms.sinch_base_url must be an http or https url");
                }
                if !is_path_token(&self.sinch_service_plan_id) {
                    anyhow::bail!(
                        "sms.sinch_service_plan_id is required with provider sinch (letters and digits)"
                    );
                }
                if self.sinch_api_token.is_empty() {
                    anyhow::bail!("sms.sinch_api_token is required with provider sinch");
                }
            }
            ProviderKind::Twilio => {
                if !is_http_url(&self.twilio_base_url) {
                    anyhow::bail!("sms.twilio_base_url must be an http or https url");
                }
                if !is_path_token(&self.twilio_account_sid) {
                    anyhow::bail!(
                        "sms.twilio_account_sid is required with provider twilio (letters and digits)"
                    );
                }
                if self.twilio_auth_token.is_empty() {
                    anyhow::bail!("sms.twilio_auth_token is required with provider twilio");
                }
            }
        }
        Ok(())
    }

    fn pacing(&self) -> Pacing {
        Pacing {
            messages_per_second: NonZeroU32::new(self.messages_per_second),
            concurrent_requests: self.parallel_requests,
            attempts: self.request_attempts,
            first_backoff: Duration::from_millis(self.retry_backoff_ms),
        }
    }

    fn build(
        &self,
        kind: ProviderKind,
        rt: &Runtime,
        callbacks: Option<&CallbackUrls>,
    ) -> anyhow::Result<(Arc<dyn SmsProvider>, Arc<Pacer>)> {
        let timeout = Duration::from_secs(self.request_timeout_secs);
        let pacer = Arc::new(Pacer::new(self.pacing()));
        let callbacks = callbacks.cloned();
        let provider: Arc<dyn SmsProvider> = match kind {
            ProviderKind::Outbox => Arc::new(Outbox::new(&rt.data_dir, &self.from)?),
            ProviderKind::Elks46 => Arc::new(Elks46::new(
                ElksSettings {
                    base_url: self.elks_base_url.clone(),
                    username: self.elks_username.clone(),
                    password: self.elks_password.clone(),
                    from: self.from.clone(),
                    delivery_callback_url: self.delivery_callback_url.clone(),
                    timeout,
                },
                pacer.clone(),
                callbacks,
            )?),
            ProviderKind::Sinch => Arc::new(Sinch::new(
                SinchSettings {
                    base_url: self.sinch_base_url.clone(),
                    service_plan_id: self.sinch_service_plan_id.clone(),
                    api_token: self.sinch_api_token.clone(),
                    from: self.from.clone(),
                    batch_size: self.sinch_batch_size,
                    timeout,
                },
                pacer.clone(),
                callbacks,
            )?),
            ProviderKind::Twilio => Arc::new(Twilio::new(
                TwilioSettings {
                    base_url: self.twilio_base_url.clone(),
                    account_sid: self.twilio_account_sid.clone(),
                    auth_token: self.twilio_auth_token.clone(),
                    from: self.from.clone(),
                    timeout,
                },
                pacer.clone(),
                callbacks,
            )?),
        };
        Ok((provider, pacer))
    }

    /// The deadline of `job`'s recipients: its `expires_at`, or `max_age_secs`
    /// after the declaration, whichever is first.
    fn deadline(&self, job: &DispatchJob) -> Option<DateTime<Utc>> {
        let by_age = (self.max_age_secs > 0).then(|| {
            job.declared_at
                + chrono::Duration::seconds(
                    i64::try_from(self.max_age_secs).unwrap_or(i64::MAX / 1000),
                )
        });
        match (job.expires_at, by_age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// Whether `s` can go into a URL path as it is.
fn is_path_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The HTTP client of a provider.
pub(crate) fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("krisbud-channel-sms/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Starts consuming SMS jobs, and the callback listener when configured (its
/// address is `Started::addr`). Returns once the durable consumer exists, so a job
/// dispatched afterwards is handled; the task ends after a graceful shutdown.
pub async fn start(
    config: Config,
    rt: Runtime,
    shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    config.validate()?;
    let mut listener = None;
    let mut callbacks = None;
    if let Some(addr) = &config.callback_listen {
        let (bound, local) = callbacks::bind(addr).await?;
        let base = config
            .callback_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"));
        callbacks = Some(CallbackUrls::new(&base, config.callback_secret.clone()));
        listener = Some((bound, local, base));
    }
    let (primary, primary_pacer) = config.build(config.provider, &rt, callbacks.as_ref())?;
    let secondary = match config.secondary_provider {
        Some(kind) => Some(config.build(kind, &rt, callbacks.as_ref())?),
        None => None,
    };
    let name = primary.name();
    let mut pacers = vec![primary_pacer];
    let provider: Arc<dyn SmsProvider> = match secondary {
        Some((secondary, pacer)) => {
            pacers.push(pacer);
            Arc::new(Failover::new(primary, secondary, config.failover_after))
        }
        None => primary,
    };
    let claim_batch = match (config.claim_batch_size, config.provider) {
        (0, ProviderKind::Sinch) => config.sinch_batch_size,
        (0, _) => 100,
        (n, _) => n,
    };
    let sms = SmsChannel {
        jobs: Jobs::new(rt.bus.clone(), Channel::Sms, SERVICE),
        claims: Arc::new(Claims::open(&rt.bus.js, claim_batch).await?),
        provider,
        pacers,
        config: config.clone(),
    };
    let mut started = channel::consume(
        &rt,
        SERVICE,
        Channel::Sms,
        config.concurrency,
        shutdown.clone(),
        sms,
    )
    .await?;
    if let Some((bound, local, base)) = listener {
        let state = CallbackState {
            bus: rt.bus.clone(),
            recipient_key: rt.recipient_key.clone(),
            secret: config.callback_secret.clone(),
            public_base: base,
            twilio_auth_token: (config.provider == ProviderKind::Twilio
                || config.secondary_provider == Some(ProviderKind::Twilio))
            .then(|| config.twilio_auth_token.clone()),
        };
        let serving = callbacks::serve(bound, state, shutdown);
        let consuming = started.task;
        started = Started {
            addr: Some(local),
            task: tokio::spawn(async move {
                let consumed = consuming.await;
                serving.await??;
                consumed?
            }),
        };
        tracing::info!(addr = %local, "sms delivery reports listening");
    }
    tracing::info!(provider = name, "sms channel consuming");
    Ok(started)
}

struct SmsChannel {
    jobs: Jobs,
    claims: Arc<Claims>,
    provider: Arc<dyn SmsProvider>,
    pacers: Vec<Arc<Pacer>>,
    config: Config,
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
        let expired = self.config.deadline(&job).is_some_and(|d| d <= Utc::now());
        let address = |recipient: &Recipient| {
            if expired {
                Err(EXPIRED)
            } else if is_e164(&recipient.address) {
                Ok(())
            } else {
                Err("the address is not an e.164 phone number")
            }
        };
        let send = async |open: Vec<(Recipient, ())>| {
            let recipients: Vec<Recipient> = open.into_iter().map(|(r, ())| r).collect();
            self.claims
                .send(&*self.provider, &job, message, recipients)
                .await
        };
        let ack = self
            .jobs
            .deliver(
                delivery,
                &job,
                || self.provider.name().to_owned(),
                address,
                send,
            )
            .await;
        match ack {
            Ack::Done => {
                self.claims.release_later(&job);
                Ack::Done
            }
            // A provider's Retry-After holds for the job's next delivery too.
            Ack::Retry(delay) => {
                let pause = self.pacers.iter().filter_map(|p| p.pause_left()).max();
                Ack::Retry(pause.map_or(delay, |p| p.max(delay)))
            }
            other => other,
        }
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
        let sinch_without_token = Config {
            provider: ProviderKind::Sinch,
            sinch_service_plan_id: "plan".into(),
            ..Config::default()
        };
        let err = sinch_without_token.validate().unwrap_err().to_string();
        assert!(err.contains("sms.sinch_api_token"), "{err}");
        let twilio_secondary_without_account = Config {
            secondary_provider: Some(ProviderKind::Twilio),
            ..Config::default()
        };
        let err = twilio_secondary_without_account
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("sms.twilio_account_sid"), "{err}");
        let weak_callback_secret = Config {
            callback_listen: Some("127.0.0.1:0".into()),
            callback_secret: Secret::new("short"),
            ..Config::default()
        };
        let err = weak_callback_secret.validate().unwrap_err().to_string();
        assert!(err.contains("sms.callback_secret"), "{err}");
        let underscored = Config {
            callback_secret: Secret::new("long_enough_but_underscored"),
            ..weak_callback_secret.clone()
        };
        let err = underscored.validate().unwrap_err().to_string();
        assert!(err.contains("no '_'"), "{err}");
        let fine = Config {
            callback_secret: Secret::new("long-enough-and-dashed"),
            ..weak_callback_secret
        };
        fine.validate().unwrap();
    }

    #[test]
    fn the_deadline_is_the_earlier_of_expiry_and_max_age() {
        let config = Config {
            max_age_secs: 60,
            ..Config::default()
        };
        let declared = Utc::now();
        let mut job: DispatchJob = serde_json::from_value(serde_json::json!({
            "job_id": "c.r1.sms.sv.0", "crisis_id": "c", "revision": 1, "channel": "sms",
            "status": "Actual", "language": "sv",
            "cap": {"category": "Infra", "event": "x", "urgency": "Immediate",
                    "severity": "Severe", "certainty": "Observed", "response_type": "Prepare"},
            "message": {"channel": "sms", "text": "t", "encoding": "gsm7", "segments": 1},
            "declared_at": declared,
        }))
        .unwrap();
        assert_eq!(
            config.deadline(&job),
            Some(declared + chrono::Duration::seconds(60))
        );
        job.expires_at = Some(declared + chrono::Duration::seconds(10));
        assert_eq!(config.deadline(&job), job.expires_at);
        assert_eq!(Config::default().deadline(&job), job.expires_at);
        job.expires_at = None;
        assert_eq!(Config::default().deadline(&job), None);
    }
}
