//! Handling one banner dispatch job: store the banner, append the outcome event,
//! then acknowledge, following the kit's ack rules.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use krisbud_kit::Bus;
use krisbud_kit::channel::{self, Jobs};
use krisbud_kit::consumer::{Ack, Delivery};
use krisbud_proto::event::RecipientOutcome;
use krisbud_proto::job::{ChannelMessage, DispatchJob, MsgType};
use krisbud_proto::model::ResponseType;
use krisbud_proto::publish::PublicBanner;
use krisbud_proto::{Channel, Envelope, Event};

use crate::SERVICE;
use crate::store::{self, Stored};

/// The `provider` and `recipient` of every banner outcome.
const TARGET: &str = "banner";

/// The delay before a failed banner job is first tried again.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Handles banner jobs; cheap to clone, one per message.
#[derive(Clone)]
pub struct Handler {
    jobs: Arc<Jobs>,
    kv: kv::Store,
    /// How long an all-clear banner is shown after it was issued.
    all_clear_display: chrono::TimeDelta,
}

impl Handler {
    /// A handler writing to `kv` and appending outcomes on `bus`.
    pub fn new(bus: Bus, kv: kv::Store, all_clear_display: Duration) -> Handler {
        Handler {
            jobs: Arc::new(Jobs::new(bus, Channel::Banner, SERVICE)),
            kv,
            all_clear_display: chrono::TimeDelta::from_std(all_clear_display)
                .unwrap_or(chrono::TimeDelta::MAX),
        }
    }

    /// Stores the job's banner and records the outcome; see the module docs.
    pub async fn handle(&self, delivery: Delivery) -> Ack {
        let job: DispatchJob = match serde_json::from_slice(&delivery.payload) {
            Ok(job) => job,
            Err(e) => {
                // Without a readable job there is no crisis to record an outcome
                // for; the log line (without the body, which may hold anything)
                // is the record.
                tracing::error!(seq = delivery.stream_sequence, error = %e, "unreadable banner job");
                return Ack::Reject(format!("unreadable banner job: {e}"));
            }
        };
        let banner = match to_banner(&job) {
            Ok(banner) => banner,
            Err(reason) => {
                let outcome = channel::failed(TARGET, &reason);
                return match self.report(&job, outcome, &delivery).await {
                    Ok(()) => Ack::Reject(reason),
                    Err(e) => retry(&delivery, &e),
                };
            }
        };
        // A cancellation takes the banner down (up to its revision); the all-clear
        // is shown until `all_clear_display` after it was issued, a time kept in
        // the stored banner so a restart does not lose it.
        let stored = if job.msg_type == MsgType::Cancel {
            store::withdraw(
                &self.kv,
                &job.crisis_id,
                &job.language,
                job.revision,
                "cancelled",
            )
            .await
        } else {
            let mut banner = banner;
            if job.cap.response_type == ResponseType::AllClear {
                let issued = job.issued_at.unwrap_or(job.declared_at);
                let clear_at = issued
                    .checked_add_signed(self.all_clear_display)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                banner.expires_at = Some(banner.expires_at.map_or(clear_at, |e| e.min(clear_at)));
            }
            store::store(&self.kv, &banner).await
        };
        let outcome = match stored {
            Ok(Stored::Written | Stored::AlreadyThere) => channel::delivered(TARGET, None),
            Ok(Stored::Superseded { shown }) => {
                tracing::info!(job = %job.job_id, shown, "older banner revision left out");
                channel::delivered(TARGET, Some(format!("superseded by revision {shown}")))
            }
            Err(e) => return retry(&delivery, &e.to_string()),
        };
        match self.report(&job, outcome, &delivery).await {
            Ok(()) => Ack::Done,
            Err(e) => retry(&delivery, &e),
        }
    }

    /// Appends the job's `DeliveryReported`; its id `<job>.outcome` makes a repeat
    /// a duplicate that JetStream drops.
    async fn report(
        &self,
        job: &DispatchJob,
        outcome: RecipientOutcome,
        delivery: &Delivery,
    ) -> Result<(), String> {
        self.jobs
            .report(job, TARGET, vec![outcome], channel::retries(delivery))
            .await
            .map_err(|e| e.to_string())
    }
}

/// Takes every banner of a closed or expired crisis down (`CrisisClosed` or
/// `CrisisExpired` on the crisis's events, up to their revision); other events
/// need nothing.
pub async fn on_crisis_event(kv: &kv::Store, delivery: Delivery) -> Ack {
    let Ok(envelope) = Envelope::read_on(&delivery.subject, &delivery.payload) else {
        return Ack::Done;
    };
    let closed = match &envelope.event {
        Event::CrisisClosed(e) => Down {
            crisis_id: &e.crisis_id,
            revision: e.revision,
            languages: &e.languages,
            why: "closed",
        },
        Event::CrisisExpired(e) => Down {
            crisis_id: &e.crisis_id,
            revision: e.revision,
            languages: &e.languages,
            why: "expired",
        },
        _ => return Ack::Done,
    };
    let prefix = format!("{}.", closed.crisis_id);
    let keys = match kv.keys().await {
        Ok(keys) => keys,
        Err(e) => return retry(&delivery, &e.to_string()),
    };
    let mut languages: Vec<String> = keys
        .filter_map(|k| async move { k.ok() })
        .filter(|k| std::future::ready(k.starts_with(&prefix)))
        .map(|k| k[prefix.len()..].to_owned())
        .collect()
        .await;
    // The crisis's languages too, so a banner job still on its way cannot put a
    // banner up after the close.
    languages.extend(closed.languages.iter().cloned());
    languages.sort();
    languages.dedup();
    for language in &languages {
        if !store::is_valid_key(&store::key(closed.crisis_id, language)) {
            continue;
        }
        if let Err(e) =
            store::withdraw(kv, closed.crisis_id, language, closed.revision, closed.why).await
        {
            return retry(&delivery, &e.to_string());
        }
    }
    tracing::info!(crisis = %closed.crisis_id, why = closed.why, "crisis's banners taken down");
    Ack::Done
}

/// What taking a crisis's banners down needs from `CrisisClosed` or `CrisisExpired`.
struct Down<'a> {
    crisis_id: &'a str,
    revision: u32,
    languages: &'a [String],
    why: &'static str,
}

/// The banner a job publishes, or why the job can never be published.
fn to_banner(job: &DispatchJob) -> Result<PublicBanner, String> {
    let ChannelMessage::Banner(message) = &job.message else {
        return Err("the job carries no banner message".into());
    };
    if job.channel != Channel::Banner {
        return Err(format!(
            "the job is for channel {}, not banner",
            job.channel
        ));
    }
    let key = store::key(&job.crisis_id, &job.language);
    if !store::is_valid_key(&key) {
        return Err(format!(
            "crisis id and language do not form a valid banner key: {key:?}"
        ));
    }
    Ok(PublicBanner {
        crisis_id: job.crisis_id.clone(),
        revision: job.revision,
        language: job.language.clone(),
        status: job.status,
        severity: job.cap.severity,
        level: message.level,
        headline: message.headline.clone(),
        body: message.body.clone(),
        link_text: message.link_text.clone(),
        link_url: message.link_url.clone(),
        published_at: Utc::now(),
        expires_at: job.expires_at,
    })
}

/// Retry with a delay that doubles per delivery: 1 s, 2 s, 4 s ... up to a minute.
fn retry(delivery: &Delivery, error: &str) -> Ack {
    let delay = channel::backoff(FIRST_RETRY, delivery.delivered);
    tracing::warn!(seq = delivery.stream_sequence, delivered = delivery.delivered, ?delay, %error, "banner job will be retried");
    Ack::Retry(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let backoff = |delivered| channel::backoff(FIRST_RETRY, delivered);
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(100), Duration::from_secs(60));
        assert_eq!(backoff(0), Duration::from_secs(1));
    }
}
