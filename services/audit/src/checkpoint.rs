//! The checkpointer: every `checkpoint_every` records, or `checkpoint_interval`
//! after the last checkpoint when records were added since, it signs the chain's
//! head with the audit signing key and appends the checkpoint to
//! KRISBUD_AUDIT_CHECKPOINTS.
//!
//! It signs a head only when its own key is the one the chain names for that
//! record: the last `AuditKeyRotated` must already be recorded at or before the
//! head, and must be this key. So a verifier can always tell, from the chain
//! alone, which key a checkpoint must carry. Several instances may run: the
//! checkpoint's `Nats-Msg-Id` is its sequence, so a head is signed once.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, RawMessageErrorKind};
use chrono::Utc;
use ed25519_dalek::SigningKey;
use krisbud_kit::bus::Expect;
use krisbud_kit::{Bus, CancellationToken};
use krisbud_proto::audit::{AuditRecord, Checkpoint};
use krisbud_proto::{HEADER_KIND, spec, subject};

use crate::{keys, recorder, signing};

/// How often the checkpointer looks at the head.
const POLL: Duration = Duration::from_millis(250);

/// Signs checkpoints until `stop`.
pub struct Checkpointer {
    pub bus: Bus,
    pub key: SigningKey,
    /// Sign after this many new records.
    pub every: u64,
    /// Sign at least this often while records are added.
    pub interval: Duration,
    /// Where each signed checkpoint is handed, outside the NATS store.
    pub witnesses: crate::witness::Witnesses,
}

impl Checkpointer {
    /// Runs until `stop`; errors are logged and retried at the next poll, since a
    /// missed checkpoint only delays the next one.
    pub async fn run(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        let key_id = signing::key_id(&self.key.verifying_key());
        let mut warned_about_key = false;
        let mut ticks = tokio::time::interval(POLL.min(self.interval));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                _ = ticks.tick() => {}
            }
            match self.step(&key_id).await {
                Ok(Step::Signed(checkpoint)) => {
                    warned_about_key = false;
                    tracing::info!(sequence = checkpoint.sequence, key_id = %key_id, "audit checkpoint signed");
                    self.witnesses.hand(&checkpoint).await;
                }
                Ok(Step::NotOurKey(active)) => {
                    if !warned_about_key {
                        tracing::warn!(key_id = %key_id, active = %active, "the chain names another signing key; not signing checkpoints");
                        warned_about_key = true;
                    }
                }
                Ok(Step::Nothing) => {}
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot sign an audit checkpoint now"
                ),
            }
        }
    }

    async fn step(&self, key_id: &str) -> anyhow::Result<Step> {
        let head = recorder::load_head(&self.bus).await?;
        if head.sequence == 0 {
            return Ok(Step::Nothing);
        }
        let last = last_checkpoint(&self.bus).await?;
        let signed = last.as_ref().map_or(0, |c| c.sequence);
        if head.sequence <= signed {
            return Ok(Step::Nothing);
        }
        let waited = last.as_ref().is_none_or(|c| {
            (Utc::now() - c.signed_at)
                .to_std()
                .is_ok_and(|age| age >= self.interval)
        });
        if head.sequence - signed < self.every && !waited {
            return Ok(Step::Nothing);
        }
        let Some(registered) = keys::last_registered(&self.bus).await? else {
            return Ok(Step::Nothing);
        };
        if registered.event_sequence > head.event_sequence {
            // A key change is not recorded yet; the head after it is signed instead.
            return Ok(Step::Nothing);
        }
        if registered.rotation.key_id != key_id {
            return Ok(Step::NotOurKey(registered.rotation.key_id));
        }
        let chain = chain_id(&self.bus).await?;
        let checkpoint = signing::sign_checkpoint(
            &self.key,
            head.sequence,
            &head.hash,
            Utc::now(),
            chain.as_deref(),
        );
        publish(&self.bus, &checkpoint).await?;
        Ok(Step::Signed(checkpoint))
    }
}

enum Step {
    Nothing,
    Signed(Checkpoint),
    NotOurKey(String),
}

/// Appends a checkpoint; one per covered sequence, whoever signs it.
pub async fn publish(bus: &Bus, checkpoint: &Checkpoint) -> anyhow::Result<()> {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_KIND, "AuditCheckpoint");
    bus.publish(
        subject::AUDIT_CHECKPOINTS.to_owned(),
        &format!("checkpoint-{}", checkpoint.sequence),
        headers,
        serde_json::to_vec(checkpoint).expect("a checkpoint serializes"),
        Expect::Any,
    )
    .await?;
    Ok(())
}

/// The chain's id, once there is a record 1: the random id it carries (the hash
/// of record 1 for a chain begun before records carried one).
pub async fn chain_id(bus: &Bus) -> anyhow::Result<Option<String>> {
    let stream = bus.js.get_stream(spec::AUDIT.name).await?;
    match stream.get_raw_message(1).await {
        Ok(message) => Ok(serde_json::from_slice::<AuditRecord>(&message.payload)
            .ok()
            .map(|record| record.chain_id.unwrap_or(record.hash))),
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read the chain's first record: {e}")),
    }
}

/// The newest checkpoint, if any.
pub async fn last_checkpoint(bus: &Bus) -> anyhow::Result<Option<Checkpoint>> {
    let stream = bus.js.get_stream(spec::AUDIT_CHECKPOINTS.name).await?;
    match stream
        .get_last_raw_message_by_subject(subject::AUDIT_CHECKPOINTS)
        .await
    {
        Ok(message) => Ok(serde_json::from_slice(&message.payload).ok()),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!(
            "cannot read the last audit checkpoint: {e}"
        )),
    }
}
