//! Send claims: a batch of a job is claimed in the KRISBUD_SEND_CLAIMS bucket
//! before it goes to the provider, and its outcomes are recorded there after.
//!
//! Batch `n` of a job is `recipients[n*size..(n+1)*size]` of the job as planned,
//! under the key `<job>.b<n>`, so every delivery of the job, on any instance,
//! finds the same batches. Another delivery of the job then:
//! - takes the recorded outcomes instead of sending again (a crash after the
//!   batch went out but before the job's outcome was stored costs nothing);
//! - re-sends a batch found claimed without outcomes (it was in flight when an
//!   instance died): its recipients may get the message twice, so their outcomes
//!   carry `possible_duplicate` (the provider's own reason stays as it is), the
//!   status counts them per channel and the channel logs how many;
//! - sends a batch it finds unclaimed as usual.
//!
//! A claim that cannot be written leaves the batch unsent (transient), never sent
//! unclaimed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_nats::jetstream::kv;
use futures::StreamExt as _;
use krisbud_kit::channel::Attempt;
use krisbud_proto::event::RecipientOutcome;
use krisbud_proto::job::{DispatchJob, Recipient};
use krisbud_proto::spec;
use krisbud_proto::template::SmsMessage;
use serde::{Deserialize, Serialize};

use crate::provider::SmsProvider;

/// How long the claims of a reported job are kept: well past the ack wait, so a
/// repeated delivery of the job finds them.
const RELEASE_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// Batches claimed and sent at once within one job.
const BATCHES_IN_FLIGHT: usize = 8;

/// One batch's claim as stored.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Claim {
    /// Handed to the provider and not yet recorded: in flight, or lost in a crash.
    claimed: bool,
    /// The outcomes recorded so far, one per settled recipient of the batch,
    /// grouped as in the events.
    #[serde(default, with = "krisbud_proto::event::outcome_groups")]
    outcomes: Vec<RecipientOutcome>,
}

/// The send claims of one channel instance.
pub struct Claims {
    store: kv::Store,
    batch_size: usize,
}

impl Claims {
    /// Claims in `store`, in batches of `batch_size` recipients.
    pub fn new(store: kv::Store, batch_size: usize) -> Claims {
        Claims {
            store,
            batch_size: batch_size.max(1),
        }
    }

    /// Opens the claims bucket of `js`.
    pub async fn open(
        js: &async_nats::jetstream::Context,
        batch_size: usize,
    ) -> anyhow::Result<Claims> {
        let store = js
            .get_key_value(spec::SEND_CLAIMS.name)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open bucket {}: {e}", spec::SEND_CLAIMS.name))?;
        Ok(Claims::new(store, batch_size))
    }

    /// Sends `open` recipients of `job` through `provider` batch by batch, each
    /// under its claim; returns one attempt per recipient, in the order given.
    pub async fn send(
        &self,
        provider: &dyn SmsProvider,
        job: &DispatchJob,
        message: &SmsMessage,
        open: Vec<Recipient>,
    ) -> Vec<(Recipient, Attempt)> {
        let position: HashMap<&str, usize> = job
            .recipients
            .iter()
            .enumerate()
            .map(|(i, r)| (r.reference.as_str(), i))
            .collect();
        let mut batches: BTreeMap<usize, Vec<Recipient>> = BTreeMap::new();
        for recipient in &open {
            let n = position
                .get(recipient.reference.as_str())
                .copied()
                .unwrap_or(0)
                / self.batch_size;
            batches.entry(n).or_default().push(recipient.clone());
        }
        let answered: Vec<(Recipient, Attempt)> = futures::stream::iter(batches)
            .map(|(n, recipients)| self.send_batch(provider, job, message, n, recipients))
            .buffer_unordered(BATCHES_IN_FLIGHT)
            .flat_map(futures::stream::iter)
            .collect()
            .await;
        let mut by_reference: HashMap<String, Attempt> = answered
            .into_iter()
            .map(|(r, a)| (r.reference, a))
            .collect();
        open.into_iter()
            .map(|r| {
                let attempt = by_reference
                    .remove(&r.reference)
                    .unwrap_or_else(|| Attempt::Transient("the batch gave no answer".into()));
                (r, attempt)
            })
            .collect()
    }

    /// Forgets the claims of `job` a while after its outcome is stored, in the
    /// background: by then the outcome event is the record, and the job has left
    /// the work queue. Until then a delivery of the job that JetStream repeats
    /// (an acknowledgement lost) still finds the recorded outcomes and sends
    /// nothing. An instance that stops before leaves the keys behind.
    pub fn release_later(self: &Arc<Self>, job: &DispatchJob) {
        let claims = self.clone();
        let job_id = job.job_id.clone();
        let batches = job.recipients.len().div_ceil(self.batch_size);
        tokio::spawn(async move {
            tokio::time::sleep(RELEASE_AFTER).await;
            for n in 0..batches {
                let key = format!("{job_id}.b{n}");
                if let Err(e) = claims.store.purge(&key).await {
                    tracing::debug!(job = %job_id, batch = n, error = %e, "cannot purge a send claim");
                }
            }
        });
    }

    async fn send_batch(
        &self,
        provider: &dyn SmsProvider,
        job: &DispatchJob,
        message: &SmsMessage,
        n: usize,
        recipients: Vec<Recipient>,
    ) -> Vec<(Recipient, Attempt)> {
        let key = format!("{}.b{n}", job.job_id);
        let unclaimable = |recipients: Vec<Recipient>, why: String| {
            tracing::warn!(job = %job.job_id, batch = n, error = %why, "cannot claim a batch; trying again later");
            recipients
                .into_iter()
                .map(|r| {
                    (
                        r,
                        Attempt::Transient(format!("cannot claim the batch: {why}")),
                    )
                })
                .collect::<Vec<_>>()
        };
        let (mut claim, revision) = match self.store.entry(&key).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => (
                serde_json::from_slice::<Claim>(&entry.value).unwrap_or_default(),
                Some(entry.revision),
            ),
            Ok(_) => (Claim::default(), None),
            Err(e) => return unclaimable(recipients, e.to_string()),
        };
        let recorded: HashMap<&str, &RecipientOutcome> = claim
            .outcomes
            .iter()
            .map(|o| (o.recipient.as_str(), o))
            .collect();
        let mut answered = Vec::with_capacity(recipients.len());
        let mut rest = Vec::new();
        for recipient in recipients {
            match recorded.get(recipient.reference.as_str()) {
                Some(outcome) => {
                    let attempt = Attempt::Settled((*outcome).clone());
                    answered.push((recipient, attempt));
                }
                None => rest.push(recipient),
            }
        }
        if rest.is_empty() {
            return answered;
        }
        // Found claimed without these recipients' outcomes: an instance died with
        // the batch in flight, so they may have the message already.
        let possible_duplicates = claim.claimed;
        claim.claimed = true;
        #[allow(clippy::expect_used, reason = "a claim is strings and numbers only")]
        let body = serde_json::to_vec(&claim).expect("a claim serializes");
        let written = match revision {
            None => self
                .store
                .create(&key, body.into())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Some(revision) => self
                .store
                .update(&key, body.into(), revision)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = written {
            // Someone else claimed it since we looked: another delivery of the job
            // is sending it. Try again later rather than send it twice.
            answered.extend(unclaimable(rest, e));
            return answered;
        }
        if possible_duplicates {
            tracing::warn!(
                job = %job.job_id,
                batch = n,
                recipients = rest.len(),
                "re-sending a batch that was in flight when an instance stopped; its recipients may get the message twice"
            );
        }
        let attempts = provider.send(job, message, &rest).await;
        let mut settled = Vec::new();
        for (recipient, attempt) in rest.into_iter().zip(attempts) {
            let attempt = match attempt {
                Attempt::Settled(mut outcome) => {
                    outcome.possible_duplicate |= possible_duplicates;
                    settled.push(outcome.clone());
                    Attempt::Settled(outcome)
                }
                transient => transient,
            };
            answered.push((recipient, attempt));
        }
        claim.claimed = false;
        claim.outcomes.extend(settled);
        #[allow(clippy::expect_used, reason = "a claim is strings and numbers only")]
        let body = serde_json::to_vec(&claim).expect("a claim serializes");
        if let Err(e) = self.store.put(&key, body.into()).await {
            // The batch went out; only a crash before the job's outcome is stored
            // would now count it as a possible duplicate.
            tracing::warn!(job = %job.job_id, batch = n, error = %e, "cannot record a batch's outcomes");
        }
        answered
    }
}
